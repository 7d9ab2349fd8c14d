"""Fidelity figures: how well predicted activations match a neuron's real ones.

Following the paper (Foote et al. 2023, section 4.1), a token *fires* when its normalised
activation is at least 0.5, and precision, recall and F1 are those of the firing class only:
neurons fire on few tokens, so counting correct non-firings would flatter any predictor.
Correlation is the Pearson correlation of predicted and true normalised activations over all
tokens, as OpenAI's and delphi's simulation scorers report it.

An undefined ratio is None, not 0, and layer averages skip it: precision where nothing is
predicted to fire, recall and F1 where nothing fires. A predictor that predicts nothing where the
neuron fires gets F1 0. Counting undefined precision as 0 would give the paper's precision-first
5-gram baseline a precision near 0.5 instead of its reported 0.97, so the paper cannot have.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, BaseModel, Field, FiniteFloat, model_validator

FIRING_THRESHOLD = 0.5
"""Normalised activation at which a token counts as firing (the paper's value)."""
MIN_FIRING = 5
"""Fewest firing tokens on a text (the held-out documents) for a neuron to be scored there in
layer means: below it recall and F1 rest on one or two tokens."""
DECIMALS = 4
"""Decimals every number of a result keeps, in a tool's answer and in a store line: enough to
read, few enough to keep results short (full-precision floats were a twelfth of a compressed
store line); a ratio over at most a few thousand tokens needs no more."""


def _rounded(value: float) -> float:
    return round(value, DECIMALS)


Rounded = Annotated[float, AfterValidator(_rounded)]
"""A float of a result, rounded once, where the result is made (to :data:`DECIMALS`)."""
_Figure = Annotated[FiniteFloat, AfterValidator(_rounded)] | None


class Figures(BaseModel):
    """Agreement between predicted and real activations on firing tokens (normalised >= 0.5)."""

    precision: _Figure = Field(description="of the tokens predicted to fire, the share that fire")
    recall: _Figure = Field(description="of the tokens that fire, the share predicted to fire")
    f1: _Figure = Field(description="harmonic mean of precision and recall")
    correlation: _Figure = Field(
        description="Pearson correlation of predicted and true normalised activations, over all tokens")


class Scores(Figures):
    """The figures and the counts they come from: precision, recall and F1 on firing tokens, and
    correlation over all tokens."""

    firing: int = Field(description="tokens that truly fire")
    predicted: int = Field(description="tokens predicted to fire")
    tokens: int = Field(description="tokens scored")

    @model_validator(mode="before")
    @classmethod
    def _correlation_optional(cls, data: Any) -> Any:
        """A stored line may leave out the correlation: it reads as undefined."""
        if isinstance(data, dict) and "correlation" not in data:
            data = {**data, "correlation": None}
        return data


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation, or None where either side is constant (correlation undefined)."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def score(true: Sequence[float], predicted: Sequence[float],
          threshold: float = FIRING_THRESHOLD) -> Scores:
    """Score predicted against true normalised activations, token by token.

    >>> s = score([0.9, 0.1, 0.7, 0.0], [0.8, 0.6, 0.0, 0.0])
    >>> s.precision, s.recall, s.f1
    (0.5, 0.5, 0.5)
    """
    t = np.asarray(true, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    if t.shape != p.shape:
        raise ValueError(f"{t.size} true values but {p.size} predictions")
    fires, predicted_fires = t >= threshold, p >= threshold
    hits = int(np.sum(fires & predicted_fires))
    n_fires, n_predicted = int(fires.sum()), int(predicted_fires.sum())
    precision, recall = _ratio(hits, n_predicted), _ratio(hits, n_fires)
    if recall is None:
        f1 = None
    elif hits == 0:
        f1 = 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall)
    return Scores(precision=precision, recall=recall, f1=f1, correlation=pearson(t, p),
                  firing=n_fires, predicted=n_predicted, tokens=int(t.size))


def mean_defined(values: Iterable[float | None]) -> float | None:
    """Mean of the defined values (None where there are none): the per-layer averages."""
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None

"""What the whole-model probes return: typed, torch-free results.

The probes themselves run the model (``builder.firing``, ``builder.induction``,
``builder.ablate``, ``builder.hypothesis``); their results are defined here, outside the
builder, so that the server's interface to the live model (``n2g_mcp.live.LiveBackend``), the
builder that implements it and the test doubles share one typed contract and the server never
imports torch to read them.

Layer and neuron indices are plain ``int`` whatever the producer passed (numpy indices from an
``argsort`` included): they are used as SQL parameters and JSON values, where a numpy integer
silently matches nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from store.metrics import Scores

PatternKind = Literal["regex", "tokens"]
"""How test_hypothesis reads a pattern: a regular expression over the text, or ``|``-separated tokens."""
AblationMode = Literal["zero", "mean"]
"""How a neuron is ablated: set to 0, or to its mean over random corpus windows."""
Neuron = tuple[int, int]
"""``(layer, neuron)``."""


def _neurons(pairs: list[tuple[int, int]]) -> list[Neuron]:
    return [(int(layer), int(neuron)) for layer, neuron in pairs]


@dataclass(frozen=True)
class _Located:
    """A result about one neuron; its indices are coerced to ``int``."""

    layer: int
    neuron: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer", int(self.layer))
        object.__setattr__(self, "neuron", int(self.neuron))


@dataclass(frozen=True)
class FiringHit(_Located):
    """A neuron active at the chosen token of a text (find_neurons)."""

    activation: float
    """Raw activation at the token."""
    normalized: float
    """Activation / the neuron's largest corpus activation."""


@dataclass(frozen=True)
class InductionScore(_Located):
    """One neuron's behaviour on the repeated-sequence probe."""

    score: float
    """Firing rate on the second copy minus the rate on the first."""
    first: float
    """Share of first-copy tokens at which the neuron fires."""
    second: float
    """Share of second-copy tokens at which the neuron fires."""


@dataclass(frozen=True)
class TokenChange:
    """A token whose prediction changed most under an ablation."""

    position: int
    token: str
    loss_clean: float
    loss_ablated: float


@dataclass(frozen=True)
class Ablation:
    """What ablating the neurons did to the model's loss."""

    neurons: list[Neuron]
    loss_clean: float
    loss_ablated: float
    delta: float
    control_neurons: list[Neuron]
    control_delta: float | None
    """The same for as many random neurons of the same layers (None: no control asked)."""
    tokens_measured: int
    top_changes: list[TokenChange]

    def __post_init__(self) -> None:
        object.__setattr__(self, "neurons", _neurons(self.neurons))
        object.__setattr__(self, "control_neurons", _neurons(self.control_neurons))


@dataclass(frozen=True)
class MarkedWindow:
    """A mistake of a claim: the token marked ``[[like this]]`` in its context."""

    set: str
    text: str
    token: str
    activation: float
    """Normalised activation at the marked token."""
    claimed: bool


@dataclass(frozen=True)
class SetScores:
    """A claim scored on one set of windows."""

    set: str
    windows: int
    scores: Scores


@dataclass(frozen=True)
class HypothesisResult(_Located):
    """How well a pattern explains a neuron (test_hypothesis)."""

    pattern: str
    kind: PatternKind
    max_activation: float
    sets: list[SetScores]
    overall: Scores
    corpus_windows_matched: int
    """Corpus windows in which the pattern claims at least one token."""
    false_positives: list[MarkedWindow]
    false_negatives: list[MarkedWindow]

"""A behavioural probe for induction-like neurons, the standard way: random tokens, repeated once.

In: a model, layers, the probe's size and a list of seeds. Out: every neuron of those layers
ranked by how much more active it is on the second copy of a random sequence than on the first,
and the model's own next-token loss on each copy (:class:`store.probes.InductionProbe`).

The protocol is the one induction heads are measured with (Olsson et al. 2022, "In-context
Learning and Induction Heads", and TransformerLens' induction demo, which repeats
``torch.randint(100, 20000, ...)`` token ids): ``sequences`` rows of ``length`` token ids drawn
uniformly from the ordinary middle of the vocabulary (:data:`ORDINARY_RANGE`: on SmolLM2's 49,152
tokens, ids 983-39,321, skipping the byte and most frequent merges at the start and the rarest
merges at the end), special tokens excluded, each row followed by an exact copy. Nothing about
the tokens predicts the next one, so the first copy costs about log(vocabulary) nats a token; a
model that copies predicts the second copy from the first (SmolLM2, 16 x 40: 14.1 nats first,
2.4-2.5 second). Both losses are reported, so a ranking is read knowing whether the model copies
at these settings.

The score is the neuron's *rise*: its mean activation on the second copy minus on the first,
each token's activation in units of the neuron's corpus max (the unit of every graph's END) and
clipped to [0, 1] of it, with the first token of each copy left out (the first copy's follows
BOS; the second copy's cannot be predicted yet), pooled over every seed. The difference is
standardised by the neuron's own corpus max rather than by the probe's spread, so it says how
much of the neuron's firing range a repeat adds: it needs no firing threshold (a neuron whose
response to a repeat stays below half its corpus max still scores its rise), it does not count
a gated MLP's negative swing becoming less negative as activity, and one outlier above the
corpus max counts as the max. Measured on SmolLM2 against the alternatives (docs/probes.md):
zeroing the top 20 by rise raises the copy loss on fresh sequences as much as the firing-rate difference does and more than Cohen's d, whose top 20 favour neurons
whose response is large against their own spread but rarely reaches their firing level, so
that no graph can predict them firing on repeated text. Cohen's d (pooled standard deviation)
and the firing rates (>= 0.5 of the neuron's corpus max from the scan; without one, of its max
on the first seed's sequences) stay as fields.

One full pass a seed serves every neuron and both losses; the same seed list gives the same
sequences and the same ranking.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from builder.forward import layers_and_losses
from builder.models import LoadedModel
from store.errors import Cancelled
from store.metrics import FIRING_THRESHOLD
from store.probes import (
    PROBE_LENGTH,
    PROBE_SEEDS,
    PROBE_SEQUENCES,
    InductionProbe,
    InductionScore,
)

ORDINARY_RANGE = (0.02, 0.8)
"""The share of the vocabulary, from its start, between which the probe's token ids are drawn."""
SEQUENCES, LENGTH, SEEDS = PROBE_SEQUENCES, PROBE_LENGTH, PROBE_SEEDS


def ordinary_tokens(model: LoadedModel) -> np.ndarray:
    """Ids of the probe's alphabet: the vocabulary's :data:`ORDINARY_RANGE`, special tokens excluded."""
    size = len(model.vocab)
    low, high = (round(share * size) for share in ORDINARY_RANGE)
    ids = [i for i in range(low, high) if i not in model.special_ids]
    if len(ids) < 2:
        raise ValueError(f"{model.name} has too few ordinary tokens for the induction probe")
    return np.asarray(ids, dtype=np.int64)


def repeated_sequences(model: LoadedModel, sequences: int = SEQUENCES, length: int = LENGTH,
                       seed: int = 0) -> np.ndarray:
    """``(sequences, 2 * length)`` token ids: random ordinary tokens, then the same again."""
    rng = np.random.default_rng(seed)
    first = rng.choice(ordinary_tokens(model), size=(sequences, length))
    return np.concatenate([first, first], axis=1)


def copy_positions(length: int) -> tuple[slice, slice]:
    """The measured positions of each copy: all but its first token."""
    return slice(1, length), slice(length + 1, 2 * length)


class Moments:
    """Running per-neuron sums over one copy's normalised activations: count, sum, sum of
    squares, sum clipped to [0, 1], firing count."""

    def __init__(self, d_mlp: int) -> None:
        self.n = 0
        self.total = np.zeros(d_mlp)
        self.squares = np.zeros(d_mlp)
        self.clipped = np.zeros(d_mlp)
        self.firing = np.zeros(d_mlp)

    def add(self, acts: np.ndarray, threshold: np.ndarray) -> None:
        flat = acts.reshape(-1, acts.shape[-1]).astype(np.float64)  # (tokens, d_mlp)
        self.n += flat.shape[0]
        self.total += flat.sum(axis=0)
        self.squares += (flat ** 2).sum(axis=0)
        self.clipped += np.clip(flat, 0.0, 1.0).sum(axis=0)
        self.firing += (flat >= threshold).sum(axis=0)

    def mean(self) -> np.ndarray:
        return self.total / self.n

    def var(self) -> np.ndarray:
        return np.maximum(self.squares / self.n - self.mean() ** 2, 0.0)


def rise(first: Moments, second: Moments) -> np.ndarray:
    """Mean clipped normalised activation on the second copy minus on the first: the score."""
    return second.clipped / second.n - first.clipped / first.n


def standardised_difference(first: Moments, second: Moments) -> np.ndarray:
    """Cohen's d of the second copy against the first; 0 where neither copy varies."""
    pooled = np.sqrt((first.var() + second.var()) / 2)
    diff = second.mean() - first.mean()
    return np.divide(diff, pooled, out=np.zeros_like(diff), where=pooled > 1e-12)


def induction_probe(model: LoadedModel, layers: Sequence[int], sequences: int = SEQUENCES,
                    length: int = LENGTH, seeds: Sequence[int] = SEEDS,
                    max_activation: dict[int, np.ndarray] | None = None,
                    cancel: threading.Event | None = None) -> InductionProbe:
    """Every neuron of ``layers`` ranked on the repeated-sequence probe (see the module docstring).

    Args:
        model: the loaded model.
        layers: layers to probe.
        sequences, length: random sequences per seed, and tokens in each (before its copy).
        seeds: one set of sequences each, merged.
        max_activation: per layer, ``(d_mlp,)`` each neuron's largest corpus activation (the
            firing threshold's base, and the unit of ``mean_first``/``mean_second``); missing
            layers use the maxima of the first seed's pass.
        cancel: checked between seeds and at every layer of a seed's pass.

    Raises:
        store.errors.Cancelled: when ``cancel`` is set.
    """
    layers = sorted(set(layers))
    for layer in layers:
        model.check_layer(layer)
    if not seeds:
        raise ValueError("the induction probe needs at least one seed")
    first_at, second_at = copy_positions(length)
    moments = {layer: (Moments(model.d_mlp), Moments(model.d_mlp)) for layer in layers}
    base: dict[int, np.ndarray] = {}
    losses_first, losses_second = [], []
    for seed in seeds:
        if cancel is not None and cancel.is_set():
            raise Cancelled("the induction probe was cancelled")
        rows = repeated_sequences(model, sequences, length, seed)
        acts, losses = layers_and_losses(model, rows.tolist(), layers, cancel)  # losses: (sequences, 2 * length)
        losses_first.append(losses[:, first_at])
        losses_second.append(losses[:, second_at])
        for layer in layers:
            a = acts.pop(layer).cpu().numpy()  # (sequences, 2 * length, d_mlp)
            if layer not in base:
                given = (max_activation or {}).get(layer)
                top = np.asarray(given if given is not None else a.max(axis=(0, 1)), dtype=np.float64)
                base[layer] = np.where(top > 0, top, np.inf)  # a neuron that never fires never fires here
            a = a / base[layer]  # normalised: 1.0 = the neuron's corpus max
            first, second = moments[layer]
            first.add(a[:, first_at], FIRING_THRESHOLD)
            second.add(a[:, second_at], FIRING_THRESHOLD)
    rows = []
    for layer in layers:
        first, second = moments[layer]
        score, d = rise(first, second), standardised_difference(first, second)
        rate_first, rate_second = first.firing / first.n, second.firing / second.n
        mean_first, mean_second = first.mean(), second.mean()
        rows += [dict(layer=layer, neuron=n, score=float(score[n]), first=float(rate_first[n]),
                      second=float(rate_second[n]), mean_first=float(mean_first[n]),
                      mean_second=float(mean_second[n]), cohens_d=float(d[n]))
                 for n in range(model.d_mlp)]
    # Ranked at full precision, before the scores are rounded. Ties (neurons silent on both
    # copies rise 0) fall back to d, then a fixed order, so a seed list gives one ranking.
    rows.sort(key=lambda r: (-r["score"], -r["cohens_d"], r["layer"], r["neuron"]))
    return InductionProbe(scores=[InductionScore(**r) for r in rows], loss_first=float(np.mean(losses_first)),
                          loss_second=float(np.mean(losses_second)), seeds=list(seeds),
                          tokens=sequences * (length - 1) * len(seeds))

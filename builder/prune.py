"""Pruning: the shortest context before the pivot that keeps the neuron firing.

In: top examples (a window, its pivot = the argmax token, the activation there). Out: one
:class:`Snippet` per example, the window cut to ``window[s : pivot + 1]`` for the largest start
``s`` whose pivot activation is at least ``keep`` (0.5) of the full window's (paper, eq. 2).

The paper adds one token at a time; we try ``step`` prefix lengths per round, for every still
unresolved example of every neuron in the same forward passes, and take the shortest that
passes, which is the same answer in a fraction of the passes. The whole window always passes, so
every example resolves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from builder.config import PruneConfig
from builder.forward import pivot_activations
from builder.models import LoadedModel


@dataclass(frozen=True)
class TopExample:
    """A top-activating corpus window of one neuron."""

    neuron: int
    window: Sequence[int]
    pivot: int
    """Index of the window's most activating token."""
    activation: float
    """The neuron's activation on the pivot, in the whole window."""


@dataclass(frozen=True)
class Snippet:
    """A token sequence ending at its pivot (the activating token), and the activation there."""

    neuron: int
    tokens: tuple[int, ...]
    activation: float
    parent: int = -1
    """For an augmented snippet, the index of the snippet it was made from."""
    scale: float = 1.0
    """Factor from this text's pivot activation to the level of the full example it was cut from
    (full activation / pruned activation; 1 for an unpruned text). Pruning keeps as little as half
    the activation; the fit multiplies by this so that a pruned path predicts the full example's
    level, as the reference code does."""

    @property
    def full_activation(self) -> float:
        """The activation of the full example this text stands for."""
        return self.activation * self.scale


def _scale(full: float, pruned: float) -> float:
    """full / pruned, or 1 where the pruned text does not fire (nothing to rescale)."""
    return full / pruned if pruned > 0 and full > 0 else 1.0


def prune(model: LoadedModel, layer: int, examples: Sequence[TopExample], config: PruneConfig,
          max_batch_tokens: int = 8192) -> list[Snippet]:
    """The shortest prefix of each example that keeps ``config.keep`` of its pivot activation."""
    full = [Snippet(e.neuron, tuple(e.window[: e.pivot + 1]), e.activation) for e in examples]
    if not config.enabled:
        return full
    result: list[Snippet | None] = [None] * len(examples)
    pending = list(range(len(examples)))
    length = 1
    while pending:
        rows, owners, lengths = [], [], []
        for i in pending:
            e = examples[i]
            for n in range(length, min(length + config.step, e.pivot + 1)):
                rows.append(e.window[e.pivot + 1 - n: e.pivot + 1])
                owners.append(i)
                lengths.append(n)
        acts = pivot_activations(model, layer, rows, [examples[i].neuron for i in owners],
                                 max_batch_tokens) if rows else []
        for i, n, act in zip(owners, lengths, acts, strict=True):
            e = examples[i]
            if result[i] is None and act >= config.keep * e.activation:
                result[i] = Snippet(e.neuron, tuple(e.window[e.pivot + 1 - n: e.pivot + 1]), float(act),
                                    scale=_scale(e.activation, float(act)))
        length += config.step
        still = []
        for i in pending:
            if result[i] is None and length > examples[i].pivot:
                result[i] = full[i]  # only the whole window keeps the neuron firing
            elif result[i] is None:
                still.append(i)
        pending = still
    return [r for r in result if r is not None]

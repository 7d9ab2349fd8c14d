"""Pruning: the shortest context before the pivot that keeps the neuron firing.

In: top examples (``builder.stages.examples.TopExample``: a window, its pivot token, the
activation there). Out: one :class:`Snippet` per example, the window cut to
``window[s : pivot + 1]`` for the largest start ``s`` whose pivot activation is at least ``keep``
(0.5) of the full window's (paper, eq. 2). The snippet is the record the later stages pass on:
saliency adds its importances, augmentation makes variants of it, the fit reads it.

The paper adds one token at a time. We try a ladder of lengths (``PruneConfig``): every length
up to ``exact`` in one forward pass, then lengths growing by ``growth``, ``per_pass`` to a pass,
for every still unresolved example of every neuron in the same passes, and take the shortest
rung that passes. With ``growth=None`` the ladder is every length and the answer is the paper's.
The whole window always passes, so every example resolves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from builder.config import PruneConfig
from builder.forward import pivot_activations
from builder.models import LoadedModel
from builder.stages.examples import TopExample

if TYPE_CHECKING:
    from builder.stages.saliency import Saliency


@dataclass(frozen=True)
class Snippet:
    """A token sequence ending at its pivot (the activating token), and the activation there:
    one example of one neuron, from pruning to the fit."""

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
    importances: np.ndarray | None = field(default=None, compare=False, repr=False)
    """``(len(tokens),)`` each token's importance for the pivot's activation, the pivot's own last
    (set by the saliency stage, or inherited from the snippet an augmented one was made from);
    None until measured."""

    @property
    def full_activation(self) -> float:
        """The activation of the full example this text stands for."""
        return self.activation * self.scale

    def measured(self, saliency: Saliency) -> Snippet:
        """This snippet with its saliency: the importances and the exact pivot activation."""
        return replace(self, activation=float(saliency.activation), importances=saliency.importances)


def distinct(snippets: Sequence[Snippet]) -> list[Snippet]:
    """One snippet per (neuron, text): pivots whose pruned texts coincide are measured once, and
    the one standing for the strongest full example is kept.

    >>> kept = distinct([Snippet(0, (5, 6), 1.0), Snippet(0, (5, 6), 2.0), Snippet(1, (5, 6), 1.0)])
    >>> [(s.neuron, s.activation) for s in kept]
    [(0, 2.0), (1, 1.0)]
    """
    best: dict[tuple[int, tuple[int, ...]], Snippet] = {}
    for s in snippets:
        key = (s.neuron, s.tokens)
        if key not in best or s.full_activation > best[key].full_activation:
            best[key] = s
    return list(best.values())


def _scale(full: float, pruned: float) -> float:
    """full / pruned, or 1 where the pruned text does not fire (nothing to rescale)."""
    return full / pruned if pruned > 0 and full > 0 else 1.0


def ladder(limit: int, config: PruneConfig) -> list[list[int]]:
    """The prefix lengths tried, pass by pass, for a pivot with ``limit`` tokens up to it. The
    whole window (``limit``) is never tried: it is the answer when nothing shorter passes.

    >>> ladder(40, PruneConfig())
    [[1, 2, 3, 4, 5, 6, 7, 8], [10, 13], [17, 22], [28, 35]]
    >>> ladder(12, PruneConfig(growth=None, per_pass=3))
    [[1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11]]
    >>> ladder(1, PruneConfig())
    []
    """
    lengths = list(range(1, min(config.exact + 1, limit)))
    rungs, n = [], config.exact
    while True:
        n = n + 1 if config.growth is None else max(n + 1, math.ceil(n * config.growth))
        if n >= limit:
            break
        rungs.append(n)
    passes = [lengths] + [rungs[i:i + config.per_pass] for i in range(0, len(rungs), config.per_pass)]
    return [p for p in passes if p]


def prune(model: LoadedModel, layer: int, examples: Sequence[TopExample], config: PruneConfig,
          max_batch_tokens: int = 8192) -> list[Snippet]:
    """The shortest prefix on the length ladder of each example that keeps ``config.keep`` of its
    pivot activation (see :func:`ladder`)."""
    full = [Snippet(e.neuron, tuple(e.window[: e.pivot + 1]), e.activation) for e in examples]
    if not config.enabled:
        return full
    result: list[Snippet | None] = [None] * len(examples)
    ladders = [ladder(e.pivot + 1, config) for e in examples]
    for i in range(len(examples)):
        if not ladders[i]:  # the pivot is the window's first token: nothing to cut
            result[i] = full[i]
    pending = [i for i in range(len(examples)) if ladders[i]]
    step = 0
    while pending:
        rows, owners, lengths = [], [], []
        for i in pending:
            e = examples[i]
            for n in ladders[i][step]:
                rows.append(e.window[e.pivot + 1 - n: e.pivot + 1])
                owners.append(i)
                lengths.append(n)
        acts = pivot_activations(model, layer, rows, [examples[i].neuron for i in owners],
                                 max_batch_tokens)
        for i, n, act in zip(owners, lengths, acts, strict=True):
            e = examples[i]
            if result[i] is None and act >= config.keep * e.activation:
                result[i] = Snippet(e.neuron, tuple(e.window[e.pivot + 1 - n: e.pivot + 1]), float(act),
                                    scale=_scale(e.activation, float(act)))
        step += 1
        still = []
        for i in pending:
            if result[i] is None and step == len(ladders[i]):
                result[i] = full[i]  # only the whole window keeps the neuron firing
            elif result[i] is None:
                still.append(i)
        pending = still
    return [r for r in result if r is not None]

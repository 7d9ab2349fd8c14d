"""Examples from every activation interval: paths learned from ordinary firing, not only the top.

The builder learns paths from a neuron's top 50 windows, so a graph never sees how the neuron
behaves below its peak (issue 28). Here pivots are sampled from a sample of build-split windows
across the neuron's activation range (Anthropic's intervals, delphi's quantiles): the range
``[low, 1]`` of normalised activation is cut into ``intervals`` equal bins and up to ``per_bin``
tokens are drawn from each. Each pivot then goes through the paper's stages (pruning, saliency)
and becomes a path (``builder.stages.fit.snippet_path``); the paths join the graph's candidates, and
the corpus calibration (``builder.stages.corpus_calibration``) sets their ENDs.

In: the sample's windows ``(W, P)`` and a layer's normalised activations ``(W, P, N)``. Out: per
neuron, the paths ``(token strings, pivot last)`` with their importances.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from builder.stages.examples import TopExample


def interval_pivots(acts: np.ndarray, intervals: int = 6, per_bin: int = 2, low: float = 0.1,
                    seed: int = 0, exclude: np.ndarray | None = None) -> list[tuple[int, int]]:
    """``(window, position)`` of up to ``per_bin`` tokens from each of ``intervals`` equal bins of
    normalised activation between ``low`` and the neuron's largest value in ``acts`` (``(W, P)``),
    strongest bin first; ``exclude`` (``(W,)`` bool) marks windows not to draw from.

    >>> a = np.array([[0.0, 0.15, 0.9], [0.5, 0.55, 0.0]])
    >>> interval_pivots(a, intervals=3, per_bin=1, low=0.1, seed=0)
    [(0, 2), (1, 1), (0, 1)]
    """
    rng = np.random.default_rng(seed)
    values = np.array(acts, dtype=np.float64)
    if exclude is not None:
        values[exclude] = -np.inf
    top = float(values.max())
    if top <= low:
        return []
    edges = np.linspace(low, top, intervals + 1)
    out: list[tuple[int, int]] = []
    for b in range(intervals - 1, -1, -1):
        upper = values <= edges[b + 1] if b < intervals - 1 else np.isfinite(values)
        inside = np.argwhere((values > edges[b]) & upper)  # (m, 2)
        if len(inside):
            pick = rng.choice(len(inside), min(per_bin, len(inside)), replace=False)
            out += [tuple(map(int, inside[i])) for i in sorted(pick)]
    return out


def interval_examples(windows: np.ndarray, raw: np.ndarray, neuron: int,
                      pivots: Sequence[tuple[int, int]]) -> list[TopExample]:
    """The pivots as examples for ``builder.stages.prune.prune``: the window up to the pivot, with the
    neuron's raw activation there (``raw``: ``(W, P)`` raw, not normalised)."""
    return [TopExample(neuron, windows[w].tolist(), p, float(raw[w, p])) for w, p in pivots]

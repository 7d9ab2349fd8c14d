"""Held-out fidelity: graphs scored on every token of documents no build reads (issue 28).

The paper's protocol (``builder.stages.evaluate``) scores a graph on its neuron's own top-activating
test windows: the top of the neuron's range, where it fires far more often than in ordinary
text. This module scores it where an agent uses it: on every token of the held-out documents
(``builder.corpus``, ``part="heldout"``), windows of the scan's length with BOS before each, as
the builds forward them.

In: token windows ``(W, P)``, a neuron's true activations on them ``(W, P)`` normalised by its
corpus max, and its graph (a :class:`store.trie.NeuronTrie`). Out: per neuron a
:class:`store.metrics.Scores` (P/R/F1 of firing tokens at normalised >= 0.5, Pearson r over all
tokens), and layer means over the neurons that fire there at least ``MIN_FIRING`` times.

Everything but :func:`layer_activations` is numpy over arrays: graphs predict through
:func:`predict_windows`, a vectorised form of ``NeuronTrie.predict`` (rule "all": the largest
END of the paths matching each token; the two agree exactly, and a test says so), because a
graph's Python walk over the 67k held-out tokens of one neuron takes seconds, and a layer's
sample needs hundreds.

The floors (baselines a graph must beat):

- :func:`mean_lookup`: each token maps to the neuron's *mean* normalised activation on it over
  build-split text (a context-free lookup calibrated on ordinary text; unseen tokens get the
  neuron's mean over that text). The issue's floor.
- the paper's token lookup (``builder.stages.evaluate.ngram_lookup(train, 1)``): each token maps to its
  *largest* activation in the neuron's train top windows.

    python benchmarks/heldout.py --layers 1,8,15,22,29 --neurons 64
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from store.errors import Cancelled
from store.metrics import FIRING_THRESHOLD, MIN_FIRING, Scores, mean_defined, score
from store.progress import Progress
from store.tokens import normalize, repeat_lengths
from store.trie import IGNORE, REPEAT, MatchRule, NeuronTrie, Token


MISSING = -1
"""The class of a token string that no vocabulary id spells: it matches nothing."""


# --------------------------------------------------------------------------- token classes
@dataclass(frozen=True)
class TokenClasses:
    """Vocabulary ids grouped by the string a graph matches them as.

    SmolLM2's vocabulary spells some strings with more than one id (49,152 ids, 48,843
    strings), and a trie matches strings, so windows are compared as classes: ids with the same
    string (folded with ``normalize`` where the graph matches folded) share a class.
    """

    of_id: np.ndarray
    """``(vocab,)`` int32: the class of each token id."""
    index: dict[str, int]
    """string (or folded key) -> class."""

    @classmethod
    def of(cls, vocab: Sequence[str], normalized: bool = False) -> TokenClasses:
        key = normalize if normalized else str
        index: dict[str, int] = {}
        of_id = np.array([index.setdefault(key(t), len(index)) for t in vocab], dtype=np.int32)
        return cls(of_id, index)

    def code(self, token: str, normalized: bool = False) -> int:
        return self.index.get(normalize(token) if normalized else token, MISSING)

    def __len__(self) -> int:
        return len(self.index)


def repeat_runs(codes: np.ndarray, cap: int) -> np.ndarray:
    """``(W, P)`` int: per window, how many tokens ending at each position repeat earlier text of
    the window (``store.tokens.repeat_lengths``, up to ``cap``)."""
    return np.array([repeat_lengths(row.tolist(), cap) for row in codes], dtype=np.int16).reshape(codes.shape)


# --------------------------------------------------------------------------- prediction
Code = int | None | object
"""A compiled path node: a token class, IGNORE (None) or REPEAT."""


def compile_path(path: Sequence[Token], classes: TokenClasses, normalized: bool) -> tuple[Code, ...]:
    """A trie path with its tokens as classes (IGNORE and REPEAT kept)."""
    return tuple(t if t is IGNORE or t is REPEAT else classes.code(t, normalized) for t in path)


def path_mask(codes: np.ndarray, path: Sequence[Code], runs: np.ndarray | None = None) -> np.ndarray:
    """``(W, P)`` bool: where the path matches (its activating token at the position, its
    context before it, inside the same window).

    >>> codes = np.array([[1, 2, 3, 2]])
    >>> path_mask(codes, (2,)).astype(int).tolist(), path_mask(codes, (3, 2)).astype(int).tolist()
    ([[0, 1, 0, 1]], [[0, 0, 1, 0]])
    >>> path_mask(codes, (2, None, 2)).astype(int).tolist()
    [[0, 0, 0, 1]]
    """
    w, p = codes.shape
    depth = len(path)
    mask = np.zeros((w, p), dtype=bool)
    if depth > p or any(c == MISSING for c in path if c is not IGNORE and c is not REPEAT):
        return mask
    span = np.ones((w, p - depth + 1), dtype=bool)  # positions depth-1 .. p-1
    for k, c in enumerate(path):
        if c is IGNORE:
            continue
        if c is REPEAT:
            if runs is None:
                raise ValueError("a path with REPEAT nodes needs the windows' repeat runs")
            span &= runs[:, depth - 1:] > k
        else:
            span &= codes[:, depth - 1 - k: p - k] == c
    mask[:, depth - 1:] = span
    return mask


@dataclass(frozen=True)
class CompiledGraph:
    """A trie's paths as class tuples with their ENDs, ready for :func:`predict_windows`."""

    paths: list[tuple[Code, ...]]
    ends: np.ndarray
    """``(paths,)`` float64."""
    reach: int
    """How far the paths' REPEAT nodes reach (0: none)."""

    @classmethod
    def of(cls, trie: NeuronTrie, classes: TokenClasses) -> CompiledGraph:
        paths, ends, reach = [], [], 0
        for path, node in trie.walk():
            if node.end is None:
                continue
            paths.append(compile_path(path, classes, trie.normalized))
            ends.append(node.end)
            reach = max([reach] + [k + 1 for k, t in enumerate(path) if t is REPEAT])
        return cls(paths, np.asarray(ends, dtype=np.float64), reach)


def _apply(out: np.ndarray, best: np.ndarray, mask: np.ndarray, end: float | np.ndarray, weight: int,
           rule: MatchRule | str) -> None:
    """Where ``mask``, a path of ``weight`` literal tokens ending at ``end`` (one value, or one a
    position) into the predictions ``out`` (in place; ``best``: the weight that set each)."""
    value = np.broadcast_to(end, out.shape)
    if rule == "specific":
        better = mask & (weight > best)
        tie = mask & (weight == best)
        out[better] = value[better]
        out[tie] = np.maximum(out[tie], value[tie])
        best[better] = weight
    else:
        np.maximum(out, np.where(mask, value, -np.inf), out=out)


def predict_windows(graph: CompiledGraph, codes: np.ndarray, runs: np.ndarray | None = None,
                    rule: MatchRule | str = "all", default: float | np.ndarray = 0.0) -> np.ndarray:
    """``(W, P)`` predicted normalised activation of every token.

    ``rule="all"`` is ``NeuronTrie.predict``'s: the largest END among the matching paths,
    ``default`` (``NeuronTrie.predict``: 0; or per token class, ``(classes,)``) where none
    matches. ``rule="specific"`` (an alternative for graded ENDs) takes the END of
    the matching path with the most literal or REPEAT nodes (ties: the largest), so a context
    that lowers a token's activation can say so.
    """
    out = np.full(codes.shape, -np.inf)
    best = np.full(codes.shape, -1)
    # Paths of one literal token need no walk: one table lookup serves all of them.
    single = [(path[0], end) for path, end in zip(graph.paths, graph.ends, strict=True)
              if len(path) == 1 and isinstance(path[0], int) and path[0] != MISSING]
    if single:
        table = np.full(max(int(codes.max()), max(c for c, _ in single)) + 1, -np.inf)
        for c, end in single:
            table[c] = max(table[c], end)
        out = table[codes]
        best[np.isfinite(out)] = 1
    # So do (token, previous token) paths (a calibrated graph holds hundreds): one sorted lookup.
    paired = {i for i, path in enumerate(graph.paths) if codes.shape[1] > 1 and len(path) == 2
              and all(isinstance(c, int) and c != MISSING for c in path)}
    pairs = [(graph.paths[i], graph.ends[i]) for i in sorted(paired)]
    if pairs:
        n = max(int(codes.max()), *(max(path) for path, _ in pairs)) + 1
        keys = np.array([path[0] * n + path[1] for path, _ in pairs], dtype=np.int64)
        order = np.argsort(keys)
        keys, values = keys[order], np.array([end for _, end in pairs])[order]
        seen = codes[:, 1:].astype(np.int64) * n + codes[:, :-1]
        at = np.minimum(np.searchsorted(keys, seen), len(keys) - 1)
        _apply(out[:, 1:], best[:, 1:], keys[at] == seen, values[at], 2, rule)
    for i, (path, end) in enumerate(zip(graph.paths, graph.ends, strict=True)):
        if len(path) == 1 and isinstance(path[0], int) or i in paired:
            continue
        _apply(out, best, path_mask(codes, path, runs), end, sum(c is not IGNORE for c in path), rule)
    unmatched = np.isneginf(out)
    out[unmatched] = default if np.isscalar(default) else np.asarray(default)[codes[unmatched]]
    return out


def runs_for(graphs: Iterable[CompiledGraph], codes: np.ndarray) -> np.ndarray | None:
    """The repeat runs these graphs need on these windows (None where none has REPEAT nodes)."""
    reach = max((g.reach for g in graphs), default=0)
    return repeat_runs(codes, reach) if reach else None


# --------------------------------------------------------------------------- floors
def mean_lookup(codes: np.ndarray, acts: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n_classes, N)``: each token class's mean normalised activation per neuron over these
    windows ``codes (W, P)``, ``acts (W, P, N)``; classes never seen get the neuron's mean."""
    flat = codes.reshape(-1)
    values = acts.reshape(len(flat), -1).astype(np.float64)  # (T, N)
    counts = np.bincount(flat, minlength=n_classes).astype(np.float64)  # (C,)
    order = np.argsort(flat, kind="stable")
    seen, starts = np.unique(flat[order], return_index=True)
    sums = np.zeros((n_classes, values.shape[1]))  # (C, N)
    sums[seen] = np.add.reduceat(values[order], starts, axis=0)
    table = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], values.mean(axis=0))
    return table


def max_lookup(codes: np.ndarray, acts: np.ndarray) -> dict[int, float]:
    """The paper's token lookup for one neuron: class -> largest normalised activation seen on
    it in these windows (``codes (W, P)``, ``acts (W, P)``); unseen classes predict 0."""
    table: dict[int, float] = {}
    for c, a in zip(codes.reshape(-1).tolist(), acts.reshape(-1).tolist(), strict=True):
        if a > table.get(c, -np.inf):
            table[c] = a
    return table


def apply_lookup(table: dict[int, float], codes: np.ndarray) -> np.ndarray:
    """``(W, P)`` predictions of a :func:`max_lookup` table."""
    return np.vectorize(lambda c: table.get(c, 0.0), otypes=[np.float64])(codes)


# --------------------------------------------------------------------------- scoring
def fires_enough(true: np.ndarray, minimum: int = MIN_FIRING) -> bool:
    """Whether a neuron fires on at least ``minimum`` tokens of this text."""
    return int(np.sum(true >= FIRING_THRESHOLD)) >= minimum


def score_windows(true: np.ndarray, predicted: np.ndarray) -> Scores:
    """A neuron's scores on every token of the windows (``true``, ``predicted``: ``(W, P)``)."""
    return score(true.reshape(-1), predicted.reshape(-1))


def interval_windows(true: np.ndarray, top: int = 6, intervals: int = 12, per_interval: int = 2,
                     random: int = 10, seed: int = 0) -> np.ndarray:
    """Window indices of the interval protocol (Anthropic's scoring set, drawn from held-out
    text): the ``top`` windows with the largest activation, ``per_interval`` windows whose
    largest activation falls in each of ``intervals`` equal bins of (0, top value) (windows
    already chosen excluded), and ``random`` windows at random from the rest. ``true``:
    ``(W, P)``; the correlation pooled over these windows' tokens is the OpenAI/Anthropic score.

    >>> true = np.array([[0.0, 1.0], [0.0, 0.5], [0.0, 0.2], [0.0, 0.0], [0.0, 0.0]])
    >>> interval_windows(true, top=1, intervals=2, per_interval=1, random=1, seed=0).tolist()
    [0, 2, 3]
    """
    rng = np.random.default_rng(seed)
    peak = true.max(axis=1)  # (W,)
    chosen = list(np.argsort(-peak, kind="stable")[:top])
    edges = np.linspace(0.0, float(peak.max()), intervals + 1)
    for b in range(intervals - 1, -1, -1):
        inside = np.flatnonzero((peak > edges[b]) & (peak <= edges[b + 1]))
        inside = np.setdiff1d(inside, chosen)
        if len(inside):
            chosen += list(rng.choice(inside, min(per_interval, len(inside)), replace=False))
    rest = np.setdiff1d(np.arange(len(true)), chosen)
    if len(rest):
        chosen += list(rng.choice(rest, min(random, len(rest)), replace=False))
    return np.array(sorted(int(c) for c in chosen), dtype=np.int64)


@dataclass(frozen=True)
class LayerMeans:
    """Means over the scored neurons of a layer (undefined values skipped, as ``n2g eval``)."""

    neurons: int
    precision: float | None
    recall: float | None
    f1: float | None
    correlation: float | None

    @classmethod
    def of(cls, scores: Sequence[Scores]) -> LayerMeans:
        return cls(len(scores), mean_defined(s.precision for s in scores),
                   mean_defined(s.recall for s in scores), mean_defined(s.f1 for s in scores),
                   mean_defined(s.correlation for s in scores))

    def row(self) -> str:
        """``P / R / F1 | r`` to two decimals, '-' where undefined."""
        def f(v: float | None) -> str:
            return "-" if v is None else f"{v:.2f}"
        return f"{f(self.precision)} / {f(self.recall)} / {f(self.f1)} | {f(self.correlation)}"


# --------------------------------------------------------------------------- the model pass
def layer_activations(model, windows: np.ndarray, layers: Sequence[int],
                      neurons: dict[int, np.ndarray] | None = None,
                      batch: int = 32, dtype: type = np.float16, progress: Progress | None = None,
                      cancel: threading.Event | None = None) -> dict[int, np.ndarray]:
    """Every window's activations at the given layers in one pass per batch (BOS before each,
    stopping inside the deepest layer): ``{layer: (W, P, N)}``, ``N`` the neurons asked for at
    that layer (``neurons[layer]``; all where None). Raw activations, not normalised.
    ``progress(done, total, message)`` replaces the tqdm bar; ``cancel`` is checked between batches.

    Raises:
        store.errors.Cancelled: when ``cancel`` is set.
    """
    import torch
    from tqdm import tqdm

    from builder.forward import run_layers

    layers = sorted(set(layers))
    out: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
    desc = f"{len(windows)} windows to layer {max(layers)}"
    for start in tqdm(range(0, len(windows), batch), desc=desc, unit="batch", leave=False,
                      disable=progress is not None):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"cancelled during the pass over {desc}")
        if progress is not None:
            progress(start, len(windows), f"ordinary text: {desc}")
        acts = run_layers(model, windows[start:start + batch].tolist(), layers)
        for layer in layers:
            a = acts[layer]  # (batch, pos, d_mlp)
            if neurons is not None:
                a = a[:, :, torch.as_tensor(neurons[layer], dtype=torch.long)]
            out[layer].append(a.cpu().numpy().astype(dtype))
    return {layer: np.concatenate(parts) for layer, parts in out.items()}

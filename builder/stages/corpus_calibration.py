"""Corpus calibration: each path's END from what the neuron does at its matches in ordinary text.

The fit (``builder.stages.fit``) sets a path's END from the neuron's 40 train top windows and 32 random
windows pooled unweighted: a 0.4% slice of the corpus where the neuron fires far more often
than anywhere else, so a path that fires on 20% of its matches there may fire on 1% of them in
ordinary text, and its END says "fires" where the neuron rarely does (issue 28). Here a path's
END is the neuron's *mean* normalised activation over every match of the path in a sample of
build-split windows drawn uniformly from the corpus (a value, not a verdict: the expected
activation there, so predictions are graded). Matches where the neuron stays silent (hard
negatives: the path's tokens in contexts it does not fire in) enter the mean at their weight in
ordinary text.

One forward pass over the sample serves every neuron of a layer: the activations ``(W, P, N)``
are read once, and each neuron's paths are matched on the sample's token classes
(:func:`builder.stages.heldout.path_mask`, numpy).

In: a neuron's trie, the sample's token classes ``(W, P)`` and the neuron's normalised
activations on it ``(W, P)``. Out: a new trie (the same paths, new ENDs; optionally paths with
too few matches dropped, and context-free paths for the tokens the neuron is active on in the
sample, and one-token-context paths where the token before changes the mean). Nothing here runs
the model.

Estimator. With ``prior`` > 0 an END is shrunk toward its backoff value, the mean of the path's
activating token over the sample (the neuron's mean where the token is unseen):
``END = (sum + prior * backoff) / (matches + prior)``, so a path seen once or twice does not
stake the whole prediction on one token's activation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from builder.stages.heldout import MISSING, REPEAT, CompiledGraph, TokenClasses, path_mask
from store.trie import NeuronTrie


@dataclass(frozen=True)
class CalibrationConfig:
    """How ENDs are set from the corpus sample, and which paths are added or dropped."""

    prior: float = 0.0
    """Pseudo-matches at the backoff value (0: the plain mean of the matches)."""
    unmatched: Literal["keep", "drop", "backoff"] = "keep"
    """A path that matches nothing in the sample keeps its END from the top windows ('keep'),
    is dropped ('drop'), or ends at its backoff value ('backoff')."""
    min_matches: int = 1
    """A path with fewer matches than this in the sample counts as unmatched (``unmatched``
    decides its END): a few ordinary-text matches say little against the top windows' evidence."""
    min_end: float = 0.0
    """Drop calibrated paths whose END falls below this (they predict almost nothing, and a
    smaller graph reads better)."""
    token_paths: bool = False
    """Add a context-free path for every token seen at least ``token_min`` times in the sample
    whose mean departs from the graph's default (:func:`default_value`: the neuron's mean over
    the sample with ``default``, else 0) by at least ``token_delta`` (where the graph has no
    path for it alone)."""
    token_min: int = 3
    token_delta: float = 0.05
    token_budget: int | None = None
    """At most this many token paths, those that explain the most of the neuron's variance over
    the sample first (count x (END - default)^2; None: every token that departs enough)."""
    default: bool = False
    """The graph predicts the neuron's mean over the sample (not 0) where no path matches; the
    ENDs may then be negative (a token on which the neuron dips below its mean)."""
    bigram_paths: bool = False
    """Add a one-token-context path ``(token, previous)`` for pairs seen at least ``bigram_min``
    times whose mean differs from the token's own by at least ``bigram_delta`` (needs the rule
    "specific" to lower a prediction; under "all" only rises count)."""
    bigram_min: int = 3
    bigram_delta: float = 0.15
    bigram_budget: int | None = None
    """At most this many bigram paths, by count x (pair mean - token mean)^2."""
    share: float | None = None
    """Within the budgets, only the fewest token (and bigram) paths that explain this share of
    the variance all candidates explain (None: up to the budgets): a neuron whose sample activity
    sits on a few tokens gets a small graph."""


@dataclass(frozen=True)
class Sample:
    """The calibration windows as token classes, with the repeat runs of REPEAT paths."""

    codes: np.ndarray
    """``(W, P)`` token classes."""
    classes: TokenClasses
    runs: np.ndarray | None = None
    """``(W, P)`` repeat runs (``builder.stages.heldout.repeat_runs``), where graphs have REPEAT nodes."""
    strings: tuple[str, ...] = ()
    """The string of each class (for the paths added), as :meth:`of` sets it."""
    pairs: tuple[np.ndarray, np.ndarray] | None = None
    """The (token, previous token) pairs, where found once for many neurons (:meth:`with_pairs`):
    their sorted keys, and ``(W, P - 1)`` each position's index into them."""

    @classmethod
    def of(cls, codes: np.ndarray, classes: TokenClasses, runs: np.ndarray | None = None) -> Sample:
        strings = [""] * len(classes)
        for s, c in classes.index.items():
            strings[c] = s
        return cls(codes, classes, runs, tuple(strings))

    def with_pairs(self) -> Sample:
        """This sample with its pairs found (for a sample many neurons calibrate on)."""
        pair = self.codes[:, 1:].astype(np.int64) * len(self.classes) + self.codes[:, :-1]
        keys, inverse = np.unique(pair, return_inverse=True)
        return replace(self, pairs=(keys, inverse.reshape(pair.shape)))

    def rows(self, keep: np.ndarray) -> Sample:
        """The windows where ``keep`` (``(W,)`` bool), sharing the pairs found."""
        return replace(self, codes=self.codes[keep], runs=None if self.runs is None else self.runs[keep],
                       pairs=None if self.pairs is None else (self.pairs[0], self.pairs[1][keep]))


def token_means(sample: Sample, acts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per token class, its count in the sample and the neuron's mean on it (``acts (W, P)``;
    the neuron's overall mean where the class is unseen)."""
    flat = sample.codes.reshape(-1)
    counts = np.bincount(flat, minlength=len(sample.classes)).astype(np.float64)
    sums = np.bincount(flat, weights=acts.reshape(-1).astype(np.float64), minlength=len(sample.classes))
    means = np.where(counts > 0, sums / np.maximum(counts, 1), float(acts.mean()))
    return counts, means


def _bigram_paths(sample: Sample, acts: np.ndarray, means: np.ndarray,
                  config: CalibrationConfig) -> list[tuple[tuple[str, str], float]]:
    """``((token, previous), mean)`` of the pairs whose mean departs from the token's."""
    n = len(sample.classes)
    values = acts[:, 1:].reshape(-1).astype(np.float64)
    uniq, inverse = sample.pairs if sample.pairs is not None else sample.with_pairs().pairs
    inverse = inverse.reshape(-1)
    counts = np.bincount(inverse, minlength=len(uniq))
    sums = np.bincount(inverse, weights=values, minlength=len(uniq))
    mean = sums / np.maximum(counts, 1)
    token = uniq // n
    keep = (counts >= config.bigram_min) & (np.abs(mean - means[token]) >= config.bigram_delta)
    if config.bigram_budget is not None:
        gain = np.where(keep, counts * (mean - means[token]) ** 2, -1.0)
        top = _largest(gain, config.bigram_budget)
        keep = np.zeros_like(keep)
        top = top[:_enough(gain[top], config.share)]
        keep[top] = gain[top] >= 0
    return [((sample.strings[t], sample.strings[p]), float(m))
            for t, p, m in zip(token[keep], (uniq % n)[keep], mean[keep], strict=True)]


def _largest(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest values, largest first (ties: the lower index first)."""
    if 0 < k < len(values):  # a partition first: sorting ~60k pairs for each neuron cost more
        cut = values[np.argpartition(-values, k - 1)[k - 1]]  # the k-th largest
        above = np.flatnonzero(values > cut)
        chosen = np.concatenate([above, np.flatnonzero(values == cut)[:k - len(above)]])
        return chosen[np.lexsort((chosen, -values[chosen]))]
    return np.argsort(-values, kind="stable")[:max(k, 0)]


def _enough(gains: np.ndarray, share: float | None) -> int:
    """How many of ``gains`` (sorted largest first) reach ``share`` of their positive total (all
    of them where ``share`` is None)."""
    if share is None:
        return len(gains)
    cumulative = np.cumsum(np.maximum(gains, 0.0))
    if not len(cumulative) or cumulative[-1] <= 0:
        return 0
    return int(np.searchsorted(cumulative, share * cumulative[-1]) + 1)


def default_value(acts: np.ndarray, config: CalibrationConfig) -> float:
    """What the calibrated graph predicts where no path matches: the neuron's mean over the
    sample (``config.default``), else 0 (``NeuronTrie.predict``'s)."""
    return float(np.mean(acts)) if config.default else 0.0


def calibrate(trie: NeuronTrie, sample: Sample, acts: np.ndarray,
              config: CalibrationConfig = CalibrationConfig(),
              baseline: np.ndarray | None = None) -> NeuronTrie:
    """The trie with every END set from the corpus sample (see the module docstring).

    Args:
        trie: the neuron's graph (its ENDs are replaced, never read, except for paths that
            match nothing with ``unmatched="keep"``).
        sample: the calibration windows.
        acts: ``(W, P)`` the neuron's normalised activations on them.
        config: estimator and the paths to add or drop.
        baseline: ``(classes,)`` what the graph predicts for each token class where no path
            matches, if not one default for all (e.g. a map from token embeddings); token paths
            are then added where a token's mean departs from its own baseline.

    Returns:
        A new trie (the input is unchanged).
    """
    acts = np.asarray(acts, dtype=np.float64)
    counts, means = token_means(sample, acts)
    compiled = CompiledGraph.of(trie, sample.classes)
    ends: dict[tuple, float | None] = {}
    for (path, node), codes in zip(((p, n) for p, n in trie.walk() if n.end is not None),
                                   compiled.paths, strict=True):
        mask = path_mask(sample.codes, codes, sample.runs)
        matches = int(mask.sum())
        first = codes[0]
        backoff = float(means[first]) if first is not REPEAT and first != MISSING else float(acts.mean())
        if matches < max(1, config.min_matches):
            ends[path] = {"keep": node.end, "drop": None, "backoff": backoff}[config.unmatched]
            continue
        total = float(acts[mask].sum())
        end = (total + config.prior * backoff) / (matches + config.prior)
        ends[path] = None if end < config.min_end else (end if config.default else max(0.0, end))
    out = trie.filtered(lambda path, _: ends.get(path) is not None)
    for path, node in out.walk():
        if node.end is not None:
            node.end = ends[path]
    if config.token_paths:
        base = default_value(acts, config) if baseline is None else baseline
        departs = means - base
        far = departs >= config.token_delta
        if config.default:  # a dip below the default says something too
            far |= departs <= -config.token_delta
        chosen = np.flatnonzero((counts >= config.token_min) & far)
        base_c = base if baseline is None else baseline[chosen]
        shrunk = (means[chosen] * counts[chosen] + config.prior * base_c) / (counts[chosen] + config.prior)
        if config.token_budget is not None:
            gain = counts[chosen] * (shrunk - base_c) ** 2
            keep = _largest(gain, len(gain))
            keep = keep[:min(config.token_budget, _enough(gain[keep], config.share))]
            chosen, shrunk = chosen[keep], shrunk[keep]
        for c, value in zip(chosen, shrunk, strict=True):
            token = sample.strings[c]
            if (token,) not in out:
                out.insert((token,), float(value))
    if config.bigram_paths:
        for path, mean in _bigram_paths(sample, acts, means, config):
            if path not in out:
                # The context's importance as saliency measures it: the share of the pair's mean
                # that goes without it (back to the token's own mean); none where it lowers it.
                alone = float(means[sample.classes.index[path[0]]])
                out.insert(path, mean, [max(0.0, (mean - alone) / mean) if mean > 0 else 0.0])
    # An activating token's importance is its largest activation; here, the largest END of a path
    # through it (never below 0), so the graph's activating tokens are those it expects to fire.
    best: dict = {}
    for path, node in out.walk():
        if node.end is not None:
            best[path[0]] = max(best.get(path[0], 0.0), node.end)
    for token, value in best.items():
        out.node((token,)).importance = value
    return out


__all__ = ["CalibrationConfig", "Sample", "calibrate", "default_value", "token_means"]

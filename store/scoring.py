"""Scoring an explanation by simulation: a scoring set drawn from the scan, then predictions
scored against the real activations, as OpenAI, Anthropic and delphi score explanations.

In: a model's :class:`store.scanfile.ScanFile`, a neuron, a seed, and ``measure``: a function
that runs rows of token ids through the model and returns the neuron's raw activation at every
token (the live model's; tests pass a rule). Out: a :class:`ScoringSet` (:func:`draw_set`), and,
for predictions of its tokens' activations, a :class:`SetScore` (:func:`score_set`).

The set follows Anthropic's protocol ("Towards Monosemanticity": 6 top windows, 2 from each of
12 activation intervals, 10 random, 20 top-activating tokens out of context), smaller:

- ``top``: :data:`TOP` of the neuron's top :data:`TOP_RANKS` scan windows (chosen by the seed),
  leaving out the windows its graph was built on where they are known (``exclude``);
- ``interval``: :data:`PER_INTERVAL` windows whose peak lies in each of :data:`INTERVALS` equal
  intervals of the neuron's max between 0.1 and 0.9, found among a pool of windows measured once
  (the rest of its top windows, :data:`POOL` random windows and the out-of-context candidates);
  an interval with no window is reported empty;
- ``random``: :data:`RANDOM` corpus windows chosen by the seed (mostly silent: the negatives a
  score needs, as OpenAI's "top-and-random" and delphi's random examples);
- ``out_of_context``: :data:`OUT_OF_CONTEXT` corpus windows, outside the top windows, that hold
  one of the tokens the neuron fires on most (the pivots of its top windows): the same tokens in
  other contexts, so an explanation that names only the token is caught out.

Every window is cut to :data:`SHOWN` tokens (:data:`AFTER` after its peak, or after the top
token, the rest before it) and measured again on exactly the tokens shown, so the truth is what
the neuron does on the text the predictor sees. The windows are shuffled (by the seed) so their
kinds are not told by their order. Everything is deterministic for a seed, a scan file and a
deterministic ``measure``.

Scoring (:func:`score_set`): predictions on the 0-1 scale of normalised activations (an agent's
0-10 divided by 10) are scored with :func:`store.metrics.score` against the real activations
normalised by the neuron's max: the Pearson correlation over all tokens (the peers' score), and
precision, recall and F1 on firing tokens; overall, per kind, and over top and random windows
alone (OpenAI's "top-and-random"). The windows predicted worst (largest squared error) are named
with the token missed most.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from store.metrics import Scores, score
from store.scanfile import ScanFile

Kind = Literal["top", "interval", "random", "out_of_context"]
KINDS: tuple[Kind, ...] = get_args(Kind)

TOP = 6
"""Top windows in a set (Anthropic's 6)."""
TOP_RANKS = 20
"""The top windows they are chosen from (the paper's top 20)."""
INTERVALS = 8
"""Equal intervals of the neuron's max, from 0.1 to 0.9, that windows are drawn from."""
LOWEST, HIGHEST = 0.1, 0.9
"""Where the intervals start and end, as a share of the neuron's max."""
PER_INTERVAL = 2
"""Windows from each interval (Anthropic's 2)."""
RANDOM = 10
"""Random corpus windows (Anthropic's 10)."""
OUT_OF_CONTEXT = 10
"""Windows holding a top-activating token in another context."""
TOP_TOKENS = 5
"""How many of the neuron's top tokens (its top windows' pivots, most frequent first) are looked
for out of context."""
POOL = 48
"""Random corpus windows measured to find interval windows below the top windows' peaks."""
CONTEXT_POOL = 48
"""Windows holding a top token measured (out-of-context candidates, and interval candidates)."""
SHOWN = 32
"""Tokens shown of each window."""
AFTER = 8
"""Tokens shown after a window's peak (or its top token)."""
WORST = 5
"""Worst-predicted windows named."""

Measure = Callable[[list[list[int]]], list[Sequence[float]]]
"""Rows of token ids -> the neuron's raw activation at every token of each row."""


class NothingToScore(ValueError):
    """A neuron that never fires in the scan, or a scan too small to draw a set from."""


@dataclass(frozen=True)
class SetWindow:
    """One window of a scoring set."""

    kind: Kind
    window: int
    """Index of the window in the scan's windows."""
    start: int
    """First position of the window that is shown."""
    ids: tuple[int, ...]
    tokens: tuple[str, ...]
    activations: tuple[float, ...]
    """The neuron's raw activation on each token shown, measured on the tokens shown alone."""
    interval: tuple[float, float] | None = None
    """For an interval window, the interval its peak fell in (share of the max, whole window)."""


@dataclass(frozen=True)
class ScoringSet:
    """A neuron's scoring set: windows in the order shown, and what could not be drawn."""

    layer: int
    neuron: int
    seed: int
    max_activation: float
    """The scan's largest activation of the neuron: the normaliser."""
    windows: tuple[SetWindow, ...]
    empty_intervals: tuple[tuple[float, float], ...]

    @property
    def id(self) -> str:
        """A short fingerprint of what was drawn: the same seed over another scan file, or a
        changed model, gives another id."""
        drawn = [[w.kind, w.window, w.start, list(w.ids)] for w in self.windows]
        text = json.dumps([self.layer, self.neuron, self.seed, drawn])
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def counts(self) -> dict[str, int]:
        """Windows of each kind."""
        found = Counter(w.kind for w in self.windows)
        return {kind: found[kind] for kind in KINDS}

    def actual(self) -> list[list[float]]:
        """The real activations of every window, normalised by the neuron's max."""
        return [[a / self.max_activation for a in w.activations] for w in self.windows]


# --------------------------------------------------------------------- drawing
def _cut(width: int, pivot: int) -> int:
    """Where a shown cut of a window starts: :data:`AFTER` tokens after ``pivot``, the rest before."""
    if width <= SHOWN:
        return 0
    return int(min(max(pivot + AFTER + 1 - SHOWN, 0), width - SHOWN))


def intervals() -> list[tuple[float, float]]:
    """The activation intervals, as shares of the neuron's max.

    >>> intervals()[:2], len(intervals())
    ([(0.1, 0.2), (0.2, 0.3)], 8)
    """
    edges = np.linspace(LOWEST, HIGHEST, INTERVALS + 1)
    return [(round(float(a), 4), round(float(b), 4)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _top_tokens(windows: np.ndarray, top: list[tuple[int, int]]) -> list[int]:
    """The token ids the neuron fires on in its top windows, most frequent first (ties: by rank)."""
    ids = [int(windows[w, p]) for w, p in top]
    counts = Counter(ids)
    first = {t: i for i, t in reversed(list(enumerate(ids)))}
    return sorted(counts, key=lambda t: (-counts[t], first[t]))[:TOP_TOKENS]


def draw_set(scan: ScanFile, layer: int, neuron: int, seed: int, measure: Measure,
             exclude: Sequence[int] = ()) -> ScoringSet:
    """A neuron's scoring set; see the module docstring.

    Args:
        scan: the model's scan file (top windows, corpus windows, max activation).
        layer, neuron: the neuron.
        seed: chooses the windows; the same seed draws the same set.
        measure: runs token-id rows through the model (called twice: the candidate pool, then
            the windows shown).
        exclude: scan windows to leave out of the top windows (the graph's training windows).

    Raises:
        NothingToScore: where the neuron never fires in the scan (max <= 0) or has no top window.
    """
    max_activation = float(scan.max_activation[layer, neuron])
    top = scan.top(layer, neuron)
    if not max_activation > 0 or not top:
        raise NothingToScore(f"the neuron's largest activation in the scan is {max_activation:.3g}: it "
                             "never fires there, so there is nothing to explain")
    rng = np.random.default_rng([seed, layer, neuron])
    windows = scan.windows.astype(np.int64)  # (n, width)
    n, width = windows.shape
    excluded = set(int(w) for w in exclude)
    top_rows = {w.window for w in top}

    # top windows, by rank, the graph's own left out where others remain
    eligible = [w for w in top[:TOP_RANKS] if w.window not in excluded] or top[:TOP_RANKS]
    picked = sorted(rng.choice(len(eligible), size=min(TOP, len(eligible)), replace=False))
    # (kind, window, first position shown, interval)
    chosen: list[tuple[Kind, int, int, tuple[float, float] | None]] = [
        ("top", eligible[i].window, _cut(width, eligible[i].pivot), None) for i in picked]
    used = {w for _, w, _, _ in chosen}

    # random windows and the random pool, outside the top windows
    order = [int(w) for w in rng.permutation(n) if int(w) not in top_rows and int(w) not in excluded]
    random_rows, pool = order[:RANDOM], order[RANDOM:RANDOM + POOL]
    starts = rng.integers(0, max(width - SHOWN, 0) + 1, size=len(random_rows))
    chosen += [("random", w, int(s), None) for w, s in zip(random_rows, starts, strict=True)]
    used |= set(random_rows)

    # windows holding a top token elsewhere: candidates for out of context
    tokens = _top_tokens(windows, [(w.window, w.pivot) for w in top])
    holds = np.isin(windows, tokens)  # (n, width)
    taken = top_rows | used | excluded
    rows = [int(w) for w in np.flatnonzero(holds.any(axis=1)) if int(w) not in taken]
    context_rows = [rows[i] for i in rng.permutation(len(rows))[:CONTEXT_POOL]]

    # measure the pool once: the peaks place windows in intervals (the top windows' too: the
    # scan keeps their peaks in float16, which can tip a peak over an interval's edge)
    rest_of_top = {w.window for w in top} - used - excluded
    measured_rows = sorted(set(pool) | set(context_rows) | rest_of_top)
    peaks: dict[int, tuple[float, int]] = {}
    for w, acts in zip(measured_rows, measure([windows[w].tolist() for w in measured_rows]), strict=True):
        values = np.asarray(acts, dtype=np.float64)
        peaks[w] = (float(values.max()) / max_activation, int(values.argmax()))
    for w in context_rows[:OUT_OF_CONTEXT]:
        position = int(np.flatnonzero(holds[w])[0])
        chosen.append(("out_of_context", w, _cut(width, position), None))
        used.add(w)

    empty = []
    candidates = sorted((w, share, pivot) for w, (share, pivot) in peaks.items() if w not in used)
    for low, high in intervals():
        inside = [c for c in candidates if low <= c[1] < high]
        if not inside:
            empty.append((low, high))
        for i in sorted(rng.permutation(len(inside))[:PER_INTERVAL]):
            w, _, pivot = inside[i]
            chosen.append(("interval", w, _cut(width, pivot), (low, high)))

    # measure what is shown, shuffle
    shown = [windows[w, s:s + SHOWN].tolist() for _, w, s, _ in chosen]
    measured = measure(shown)
    drawn = [SetWindow(kind=kind, window=w, start=s, ids=tuple(ids),
                       tokens=tuple(scan.vocab[i] for i in ids),
                       activations=tuple(float(a) for a in acts), interval=interval)
             for (kind, w, s, interval), ids, acts in zip(chosen, shown, measured, strict=True)]
    shuffled = tuple(drawn[i] for i in rng.permutation(len(drawn)))
    return ScoringSet(layer=layer, neuron=neuron, seed=seed, max_activation=max_activation,
                      windows=shuffled, empty_intervals=tuple(empty))


# --------------------------------------------------------------------- scoring
@dataclass(frozen=True)
class Miss:
    """A window predicted badly, and the token missed most in it."""

    number: int
    """The window's place in the set, from 0."""
    kind: Kind
    position: int
    """The token missed most, in the window."""
    predicted: float
    actual: float
    graph: float | None
    error: float
    """Sum of squared errors over the window's tokens (predictions and truth on the 0-1 scale)."""


@dataclass(frozen=True)
class KindScore:
    kind: Kind | Literal["all", "top_and_random"]
    windows: int
    scores: Scores
    graph: Scores | None


@dataclass(frozen=True)
class SetScore:
    """Predictions scored on a set: overall first, then OpenAI's top-and-random, then per kind."""

    kinds: list[KindScore]
    worst: list[Miss]


def _scored(name: str, picked: list[int], truth: list[list[float]], predicted: list[list[float]],
            graph: list[list[float]] | None) -> KindScore:
    def flat(values: list[list[float]]) -> list[float]:
        return [v for i in picked for v in values[i]]

    return KindScore(kind=name, windows=len(picked),  # type: ignore[arg-type]
                     scores=score(flat(truth), flat(predicted)),
                     graph=None if graph is None else score(flat(truth), flat(graph)))


def score_set(scoring: ScoringSet, predicted: Sequence[Sequence[float]],
              graph: Sequence[Sequence[float]] | None = None) -> SetScore:
    """Score predictions of a set's activations (and the graph's, beside them).

    Args:
        scoring: the set.
        predicted: per window, per token, the predicted normalised activation (0-1).
        graph: the graph's predictions on the same tokens, or None.

    Raises:
        ValueError: where the predictions do not have one value per token of each window.

    >>> w = SetWindow("top", 0, 0, (1, 2), ("a", "b"), (0.0, 2.0))
    >>> r = SetWindow("random", 1, 0, (1, 1), ("a", "a"), (0.0, 0.0))
    >>> s = ScoringSet(0, 0, 0, 2.0, (w, r), ())
    >>> result = score_set(s, [[0.0, 1.0], [0.0, 0.1]])
    >>> [(k.kind, k.scores.correlation) for k in result.kinds]
    [('all', 0.9953), ('top_and_random', 0.9953), ('top', 1.0), ('random', None)]
    >>> result.worst[0].number, result.worst[0].position
    (1, 1)
    """
    truth = scoring.actual()
    rows = [list(map(float, p)) for p in predicted]
    graph_rows = None if graph is None else [list(map(float, g)) for g in graph]
    for name, values in (("predictions", rows), ("graph predictions", graph_rows)):
        if values is None:
            continue
        if len(values) != len(truth) or any(len(v) != len(t) for v, t in zip(values, truth, strict=True)):
            raise ValueError(f"{name} must give one value per token of each of the {len(truth)} windows")
    everything = list(range(len(truth)))
    kinds = [_scored("all", everything, truth, rows, graph_rows),
             _scored("top_and_random", [i for i, w in enumerate(scoring.windows) if w.kind in ("top", "random")],
                     truth, rows, graph_rows)]
    for kind in KINDS:
        picked = [i for i, w in enumerate(scoring.windows) if w.kind == kind]
        if picked:
            kinds.append(_scored(kind, picked, truth, rows, graph_rows))
    misses = []
    for i, (t, p) in enumerate(zip(truth, rows, strict=True)):
        errors = (np.asarray(p) - np.asarray(t)) ** 2
        at = int(errors.argmax())
        misses.append(Miss(number=i, kind=scoring.windows[i].kind, position=at, predicted=p[at], actual=t[at],
                           graph=None if graph_rows is None else graph_rows[i][at], error=float(errors.sum())))
    worst = sorted(misses, key=lambda m: (-m.error, m.number))[:WORST]
    return SetScore(kinds=kinds, worst=[m for m in worst if m.error > 0])

r"""Testing an explanation at corpus scale: "the neuron fires on the tokens this pattern matches".

In: a neuron, a pattern (a regular expression over the text, or a list of tokens), the neuron's
layer scan and the corpus windows. Out: how well the claim predicts the real activations, scored
as N2G scores a graph (precision, recall and F1 on firing tokens, correlation) on three sets of
windows, and the worst mistakes as marked windows:

- ``top``: the neuron's top corpus windows (does the claim cover what it fires on most?);
- ``random``: the scan's random windows (does it fire where the claim says it should not?);
- ``matches``: corpus windows where the pattern matches, outside the other two sets (does the
  neuron really fire wherever the claim holds?), measured with a forward pass.

A regex claims every token that overlaps one of its matches (zero-width matches claim nothing):
context that must be present but not claimed goes in a look-around, e.g.
``(?<=everyone(?:\s\w+){0,2}) except`` (the ``regex`` package allows variable-length ones);
``tokens`` claims the tokens equal to one of ``|``-separated tokens, case- and space-folded.

A regex runs over the corpus in chunks of whole windows with a limit of CPU time, the thread's own
(``time.thread_time``), not the wall clock: a pattern is refused for the work it takes, never
because the machine is busy (``.`` takes about 3 s of CPU over SmolLM2's corpus, and was refused
at 5 s of wall time on a loaded machine). Within a chunk the ``regex`` package's wall-clock
``timeout`` stops a pathological pattern; where it fires before the thread has used its CPU
time, the chunk is run again with twice the time, so only the CPU spent decides.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from time import thread_time

import numpy as np
import regex

from builder.forward import neuron_activations
from builder.models import LoadedModel
from builder.stages.scan import LayerScan
from store.errors import BadArgument, Cancelled
from store.metrics import FIRING_THRESHOLD, score
from store.probes import REGEX_CPU_S, HypothesisResult, MarkedWindow, PatternKind, SetScores
from store.tokens import normalize

TOP_WINDOWS = 20
"""Top windows the claim is scored on (the paper's top 20)."""
CONTEXT = 12
"""Tokens shown on each side of a marked token."""
CHUNK_WINDOWS = 256
"""Windows of the corpus a regex searches at a time (tens of milliseconds for ``.``)."""


class BadPattern(BadArgument, ValueError):
    """A pattern that does not compile, runs too long, or claims nothing anywhere."""


@dataclass(frozen=True)
class CorpusText:
    """The corpus windows as one searchable text, with every token's character offset."""

    text: str
    starts: np.ndarray
    """``(n_windows * window,)`` offset of each token in ``text``."""
    window: int

    @classmethod
    def from_windows(cls, windows: np.ndarray, vocab: Sequence[str]) -> CorpusText:
        """Join windows with a NUL between them, so no match spans two windows by accident."""
        parts, starts, at = [], [], 0
        for row in windows:
            for t in row:
                piece = vocab[t]
                starts.append(at)
                parts.append(piece)
                at += len(piece)
            parts.append("\0")
            at += 1
        return cls("".join(parts), np.asarray(starts, dtype=np.int64), windows.shape[1])


def compile_pattern(pattern: str) -> regex.Pattern:
    """A regex, compiled.

    Raises:
        BadPattern: where it does not compile.
    """
    try:
        return regex.compile(pattern)
    except regex.error as e:
        raise BadPattern(f"the regex does not compile: {e}") from None


def _too_slow(cpu_limit: float) -> BadPattern:
    return BadPattern(f"the regex ran longer than {cpu_limit:g} s of CPU time over the corpus; make it more "
                      "specific (anchor it, avoid nested quantifiers such as (a+)+)")


def _spans(compiled: regex.Pattern, text: str, start: int, end: int, cpu_left: float,
           cpu_limit: float) -> tuple[list[tuple[int, int]], float]:
    """The non-empty matches in ``text[start:end]`` (look-behinds see before ``start``), and the
    CPU seconds of this thread they took, failed runs included.

    Raises:
        BadPattern: where they take more than ``cpu_left``.
    """
    spent, wall = 0.0, max(cpu_left, 0.05)
    while True:
        began = thread_time()
        try:
            spans = [m.span() for m in compiled.finditer(text, start, end, timeout=wall) if m.end() > m.start()]
            return spans, spent + thread_time() - began
        except TimeoutError:
            spent += thread_time() - began
            if spent >= cpu_left:
                raise _too_slow(cpu_limit) from None
            wall *= 2  # the wall clock ran out first: the machine is busy, not the pattern slow


def claims(corpus: CorpusText, vocab: Sequence[str], windows: np.ndarray, pattern: str,
           kind: PatternKind, cpu_limit: float = REGEX_CPU_S, cancel: threading.Event | None = None) -> np.ndarray:
    """``(n_windows, window)`` True where the pattern claims the token.

    Raises:
        BadPattern: the regex does not compile or takes more than ``cpu_limit`` seconds of this
            thread's CPU time.
        store.errors.Cancelled: when ``cancel`` is set (checked between chunks).
    """
    if kind == "tokens":
        wanted = {normalize(t) for t in pattern.split("|") if t}
        keys = np.array([normalize(v) in wanted for v in vocab])
        return keys[windows]
    compiled = compile_pattern(pattern)
    n = corpus.starts.size
    diff = np.zeros(n + 1, dtype=np.int64)
    # Chunks of whole windows, split where a window begins (its NUL separator ends the one before).
    bounds = [int(b) for b in corpus.starts[::corpus.window * CHUNK_WINDOWS]] + [len(corpus.text)]
    spent = 0.0
    for start, end in pairwise(bounds):
        if cancel is not None and cancel.is_set():
            raise Cancelled("scoring the pattern was cancelled")
        spans, cost = _spans(compiled, corpus.text, start, end, cpu_limit - spent, cpu_limit)
        spent += cost
        if spent > cpu_limit:
            raise _too_slow(cpu_limit)
        if not spans:
            continue
        begin, stop = np.asarray(spans, dtype=np.int64).T
        first = np.searchsorted(corpus.starts, begin, side="right") - 1
        last = np.searchsorted(corpus.starts, stop - 1, side="right") - 1
        np.add.at(diff, np.maximum(first, 0), 1)
        np.add.at(diff, last + 1, -1)
    return (np.cumsum(diff[:-1]) > 0).reshape(windows.shape)


def _marked(vocab: Sequence[str], tokens: np.ndarray, position: int) -> str:
    left = "".join(vocab[t] for t in tokens[max(0, position - CONTEXT):position])
    right = "".join(vocab[t] for t in tokens[position + 1:position + 1 + CONTEXT])
    return f"{left}[[{vocab[tokens[position]]}]]{right}"


def score_hypothesis(model: LoadedModel, layer: int, neuron: int, pattern: str, kind: PatternKind,
                    layer_scan: LayerScan, windows: np.ndarray, corpus: CorpusText,
                    max_matches: int = 20, seed: int = 0, cpu_limit: float = REGEX_CPU_S,
                    examples: int = 5, cancel: threading.Event | None = None) -> HypothesisResult:
    """Score a pattern as an explanation of a neuron (see the module docstring).

    Args:
        model: the loaded model (runs the matching windows).
        layer, neuron: the neuron.
        pattern, kind: the claim.
        layer_scan: the layer's scan, with this neuron's traces.
        windows: ``(n_windows, window)`` the scanned corpus windows.
        corpus: the same windows as text (:meth:`CorpusText.from_windows`).
        max_matches: matching windows measured (a seeded sample when there are more).
        cpu_limit: CPU seconds (of this thread) the regex may take over the whole corpus.
        examples: false positives and false negatives listed.
        cancel: checked between chunks of the regex search and before the matching windows' pass.

    Raises:
        BadPattern: a bad or slow regex, or a pattern that claims no token of the corpus.
        store.errors.Cancelled: when ``cancel`` is set.
    """
    model.check_layer(layer)
    model.check_neuron(neuron)
    if not pattern:
        raise BadPattern("the pattern is empty")
    claimed = claims(corpus, model.vocab, windows, pattern, kind, cpu_limit, cancel)  # (n_windows, window)
    matched = np.flatnonzero(claimed.any(axis=1))
    if matched.size == 0:
        raise BadPattern(f"the pattern claims no token of the corpus ({len(windows):,} windows); "
                         "check it against the tokens, e.g. with predict_activations")
    max_act = float(layer_scan.max_activation[neuron])
    scale = max_act if max_act > 0 else 1.0
    top_ids = layer_scan.windows[:TOP_WINDOWS, neuron].astype(np.int64)
    top_traces = layer_scan.traces[:TOP_WINDOWS, neuron] / scale  # (k, window)
    random_ids = layer_scan.random_windows.astype(np.int64)
    random_traces = layer_scan.random_traces[:, :, neuron] / scale  # (r, window)
    others = np.setdiff1d(matched, np.concatenate([top_ids, random_ids]))
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(others, size=min(max_matches, others.size), replace=False))
    if cancel is not None and cancel.is_set():
        raise Cancelled("scoring the pattern was cancelled")
    match_traces = np.asarray(neuron_activations(model, layer, windows[sample].tolist(),
                                                 [neuron] * len(sample))) / scale
    match_traces = match_traces.reshape(len(sample), windows.shape[1])

    sets = [("top", top_ids, top_traces), ("random", random_ids, random_traces),
            ("matches", sample, match_traces)]
    results, pooled_true, pooled_claim = [], [], []
    fps: list[tuple[float, MarkedWindow]] = []
    fns: list[tuple[float, MarkedWindow]] = []
    for name, ids, traces in sets:
        claim = claimed[ids].astype(np.float64)  # (w, window)
        results.append(SetScores.of(name, len(ids), score(traces.ravel(), claim.ravel())))
        pooled_true.append(traces.ravel())
        pooled_claim.append(claim.ravel())
        for w, row in enumerate(ids):
            for p in range(windows.shape[1]):
                act, is_claimed = float(traces[w, p]), bool(claim[w, p])
                if is_claimed and act < FIRING_THRESHOLD:
                    fps.append((act, MarkedWindow(set=name, text=_marked(model.vocab, windows[row], p),
                                                  token=model.vocab[windows[row, p]], activation=act)))
                elif not is_claimed and act >= FIRING_THRESHOLD:
                    fns.append((-act, MarkedWindow(set=name, text=_marked(model.vocab, windows[row], p),
                                                   token=model.vocab[windows[row, p]], activation=act)))
    fps.sort(key=lambda x: x[0])
    fns.sort(key=lambda x: x[0])
    return HypothesisResult(
        layer=layer, neuron=neuron, pattern=pattern, kind=kind, max_activation=max_act,
        sets=results, overall=score(np.concatenate(pooled_true), np.concatenate(pooled_claim)),
        corpus_windows_matched=int(matched.size),
        false_positives=[m for _, m in fps[:examples]],
        false_negatives=[m for _, m in fns[:examples]])

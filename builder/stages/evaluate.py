"""Fidelity: a graph and the paper's two baselines scored on the same held-out windows.

In: the train windows (tokens and normalised activations), the test windows, random windows,
the test windows cut short and measured again (:func:`short_texts`, one batched pass for a batch
of neurons), and the graph. Out: a
:class:`store.graph.Fidelity`, per predictor three protocols: the paper's (test top examples
only; Table 1), the same with random corpus windows added as negatives, where correlation is
meaningful, and short texts: each test window cut to a few tokens around its pivot and the
neuron measured again on the cut text (an agent's texts are short; far context is gone).

Baselines (paper, section 4.1), built from every token of the train windows:

- token lookup: each token maps to the largest normalised activation seen on it;
- n-gram lookup: each n-gram ending at a token (the token and the n-1 before it, n = 5) maps to
  the largest activation seen on its last token. Near a window's start the n-gram is shorter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from builder.config import BuildConfig
from builder.forward import neuron_activations
from builder.models import LoadedModel
from builder.stages.examples import neuron_split
from builder.stages.scan import LayerScan
from store.graph import Fidelity, MethodFidelity
from store.metrics import score


@dataclass(frozen=True)
class Window:
    """A window of text: its token strings and the neuron's normalised activation on each."""

    tokens: Sequence[str]
    activations: np.ndarray


Predictor = Callable[[Sequence[str]], list[float]]


def _grams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[max(0, i - n + 1): i + 1]) for i in range(len(tokens))]


def ngram_lookup(train: Sequence[Window], n: int) -> Predictor:
    """The n-gram lookup baseline (``n = 1`` is the token lookup)."""
    table: dict[tuple[str, ...], float] = {}
    for w in train:
        for gram, act in zip(_grams(w.tokens, n), w.activations, strict=True):
            table[gram] = max(table.get(gram, -np.inf), float(act))
    return lambda tokens: [table.get(g, 0.0) for g in _grams(tokens, n)]


def short_rows(window: Sequence[int], pivot: int, before: int, after: int) -> Sequence[int]:
    """A window cut to ``before`` tokens before the pivot and ``after`` after it (the short-text
    protocol's text; its activations are measured again on it).

    >>> list(short_rows(range(10), 5, 2, 1))
    [3, 4, 5, 6]
    """
    return window[max(0, pivot - before): pivot + after + 1]


@dataclass(frozen=True)
class ShortText:
    """A test window cut short around its pivot, and the neuron's raw activations measured on it."""

    ids: list[int]
    activations: np.ndarray


def short_texts(model: LoadedModel, layer: int, neurons: Sequence[int], layer_scan: LayerScan,
                windows: np.ndarray, config: BuildConfig) -> dict[int, list[ShortText]]:
    """Per neuron, its test windows cut short around their pivots (``EvalConfig.short_before`` /
    ``short_after``) with its raw activations measured again on each cut text; one batched pass
    for all the neurons. Empty where the protocol is off."""
    ev = config.eval
    if ev.short_before == 0 and ev.short_after == 0:
        return {}
    rows, owners = [], []
    for n in neurons:
        for j in neuron_split(layer_scan, config, layer, n).test:
            trace = layer_scan.traces[j, n]  # (pos,)
            window = windows[layer_scan.windows[j, n]].tolist()
            rows.append(short_rows(window, int(np.argmax(trace)), ev.short_before, ev.short_after))
            owners.append(n)
    acts = neuron_activations(model, layer, rows, owners, config.max_batch_tokens)
    out: dict[int, list[ShortText]] = {n: [] for n in neurons}
    for n, row, a in zip(owners, rows, acts, strict=True):
        out[n].append(ShortText(list(row), a))
    return out


def _method(predict: Predictor, test: Sequence[Window], negatives: Sequence[Window],
            short: Sequence[Window] | None) -> MethodFidelity:
    def pooled(windows: Sequence[Window]) -> tuple[np.ndarray, np.ndarray]:
        if not windows:
            return np.zeros(0), np.zeros(0)
        true = np.concatenate([w.activations for w in windows])
        pred = np.concatenate([np.asarray(predict(w.tokens), dtype=np.float64) for w in windows])
        return true, pred

    true_top, pred_top = pooled(test)
    true_neg, pred_neg = pooled(negatives)
    return MethodFidelity(
        top=score(true_top, pred_top),
        random=score(np.concatenate([true_top, true_neg]), np.concatenate([pred_top, pred_neg])),
        short=None if short is None else score(*pooled(short)),
    )


def evaluate(graph_predict: Predictor, train: Sequence[Window], test: Sequence[Window],
             negatives: Sequence[Window], ngram: int = 5, short: Sequence[Window] | None = None) -> Fidelity:
    """Score the graph and both baselines on the test windows, with negatives added, and (where
    ``short`` is given) on the test windows cut short and measured again."""
    return Fidelity(
        n2g=_method(graph_predict, test, negatives, short),
        token_lookup=_method(ngram_lookup(train, 1), test, negatives, short),
        ngram_lookup=_method(ngram_lookup(train, ngram), test, negatives, short),
    )

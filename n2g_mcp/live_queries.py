"""The queries that run the live model on one neuron: predict (and compare), build.

Both are slow (a first call loads the model): the server calls them from a worker thread.
"""

from __future__ import annotations

import threading

from collections.abc import Sequence

from n2g_mcp import text
from n2g_mcp.limits import MAX_COMPARE_TOKENS, MAX_FIRING_ROWS, MAX_TEXT_CHARS, MAX_TEXTS
from n2g_mcp.outputs import Expectation, GraphSummary, PredictOutput, TextPrediction, TokenRow
from n2g_mcp.resolve import Resolver
from store.errors import BadArgument, Cancelled, Unavailable
from store.graph import NeuronGraph
from store.metrics import FIRING_THRESHOLD, score
from store.models import ModelSpec
from store.pending import pending
from store.probes import BuildMethod
from store.progress import Progress
from store.trie import Path, label


def _row(index: int, token: str, predicted: float, actual: float | None, path: Path | None) -> TokenRow:
    """A firing row; the matched path turned to text order, as the agent reads a text."""
    shown = None if path is None else [label(t) for t in reversed(path)]
    return TokenRow(index=index, token=token, predicted=predicted, actual=actual, path=shown)


class LiveQueries(Resolver):
    """predict_activations and build_graph."""

    def check_texts(self, value: str | Sequence[str]) -> list[str]:
        """The texts of a predict call, as a list, each checked (:meth:`check_text`).

        Raises:
            BadArgument: for no texts, more than ``MAX_TEXTS``, or more than ``MAX_TEXT_CHARS``
                together, saying how to split them.
        """
        texts = [value] if isinstance(value, str) else list(value)
        if not texts:
            raise BadArgument(text.empty_text())
        if len(texts) > MAX_TEXTS:
            raise BadArgument(text.too_many_texts(len(texts), MAX_TEXTS))
        for one in texts:
            self.check_text(one)
        total = sum(len(t) for t in texts)
        if len(texts) > 1 and total > MAX_TEXT_CHARS:
            raise BadArgument(text.texts_too_long(total, MAX_TEXT_CHARS))
        return texts

    def predict(self, model: str | None, layer: int, neuron: int, value: str | Sequence[str],
                compare: bool = False, expect: Expectation | None = None) -> PredictOutput:
        """The graph's prediction per token (and with ``compare`` the real neuron's), and the
        graph path behind each firing token; a list of texts gets one result each. With
        ``expect``, whether the neuron (the real one where compared, else the graph) did so on
        each text."""
        model = self.model(model)
        graph, _ = self.graph(model, layer, neuron)
        texts = self.check_texts(value)
        if compare:
            spec = self.spec(model, "run the real neuron", text.INSTEAD_OF_COMPARE)
            counts = [len(self.live.tokens(spec, one)) for one in texts]
            if sum(counts) > MAX_COMPARE_TOKENS:
                raise BadArgument(text.too_many_tokens(sum(counts), MAX_COMPARE_TOKENS))
        else:
            spec = self.spec(model, "tokenise text", text.INSTEAD_OF_TOKENISING)
        results = [self._predict_one(spec, graph, layer, neuron, one, compare, expect) for one in texts]
        if len(results) == 1:
            return PredictOutput(id=graph.id, model=model, **dict(results[0]))
        agreement = None
        if compare:
            agreement = score([a for r in results for a in r.actual or []], [p for r in results for p in r.predicted])
        as_expected = None if expect is None else all(r.as_expected for r in results)
        return PredictOutput(id=graph.id, model=model, agreement=agreement, results=results,
                             firing_total=sum(r.firing_total for r in results), expect=expect,
                             as_expected=as_expected)

    def _predict_one(self, spec: ModelSpec, graph: NeuronGraph, layer: int, neuron: int, value: str,
                     compare: bool, expect: Expectation | None) -> TextPrediction:
        actual: list[float] | None = None
        if compare:
            tokens, raw = self.live.activations(spec, layer, neuron, value)
            scale = graph.max_activation if graph.max_activation > 0 else 1.0
            actual = [a / scale for a in raw]
        else:
            tokens = self.live.tokens(spec, value)
        if not tokens:
            raise BadArgument(text.NO_TOKENS)
        explained = graph.explain(tokens)
        predicted = [p for p, _ in explained]
        agreement = score(actual, predicted) if actual is not None else None
        rows = [_row(i, t, predicted[i], None if actual is None else actual[i], explained[i][1])
                for i, t in enumerate(tokens)
                if predicted[i] >= FIRING_THRESHOLD or (actual is not None and actual[i] >= FIRING_THRESHOLD)]
        fired = max(actual if actual is not None else predicted) >= FIRING_THRESHOLD
        return TextPrediction(tokens=tokens, predicted=predicted, actual=actual, agreement=agreement,
                              firing=rows[:MAX_FIRING_ROWS], firing_total=len(rows), expect=expect,
                              as_expected=None if expect is None else fired == (expect == "fire"))

    def build(self, model: str | None, layer: int, neuron: int, rebuild: bool = False,
              method: BuildMethod = "ordinary", *, progress: Progress | None = None,
              cancel: threading.Event | None = None) -> GraphSummary:
        """Build one neuron's graph by ``method``, or return the stored one (``store.pending``'s
        rule over every store of the model, so a shipped graph is not built again)."""
        model = self.model(model)
        self.check_range(model, layer, neuron)
        stored = self.stored(model, layer, neuron)
        if stored is None and not rebuild and self.catalog.index.indexing:
            # The stores may hold it beyond what is indexed so far: finishing the index takes a
            # minute at most, building it again takes minutes of model time.
            self.catalog.index.wait()
            stored = self.stored(model, layer, neuron)
        if not pending([layer], [neuron], set() if stored is None else {(layer, neuron)}, rebuild):
            assert stored is not None
            return GraphSummary.of(stored, viewer_url=self.link(model, layer, neuron))
        spec = self.spec(model, "build graphs", text.INSTEAD_OF_BUILDING)
        try:
            graphs = self.live.build(spec, layer, [neuron], self.catalog.writable_path(model),
                                     progress=progress, cancel=cancel, scan_file=self.scan_file(model),
                                     method=method)
        except Cancelled as exc:
            raise Cancelled(text.build_cancelled(layer, neuron, str(exc))) from exc
        graph = next((g for g in graphs if (g.layer, g.neuron) == (layer, neuron)), None)
        if graph is None:
            raise Unavailable(text.no_graph_built(layer, neuron))
        return GraphSummary.of(graph, built=True, viewer_url=self.link(model, layer, neuron))

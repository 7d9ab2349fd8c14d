"""The queries that run the live model on one neuron: predict (and compare), build.

Both are slow (a first call loads the model): the server calls them from a worker thread.
"""

from __future__ import annotations

import threading

from n2g_mcp import text
from n2g_mcp.limits import MAX_COMPARE_TOKENS, MAX_FIRING_ROWS
from n2g_mcp.outputs import Expectation, GraphSummary, PredictOutput, TokenRow
from n2g_mcp.resolve import Resolver
from store.errors import BadArgument, Cancelled, Unavailable
from store.metrics import FIRING_THRESHOLD, score
from store.pending import pending
from store.progress import Progress


class LiveQueries(Resolver):
    """predict_activations and build_graph."""

    def predict(self, model: str | None, layer: int, neuron: int, value: str, compare: bool = False,
                expect: Expectation | None = None) -> PredictOutput:
        """The graph's prediction per token (and with ``compare`` the real neuron's); with
        ``expect``, whether the neuron (the real one where compared, else the graph) did so."""
        model = self.model(model)
        graph, _ = self.graph(model, layer, neuron)
        self.check_text(value)
        actual: list[float] | None = None
        if compare:
            spec = self.spec(model, "run the real neuron", text.INSTEAD_OF_COMPARE)
            tokens = self.live.tokens(spec, value)
            if len(tokens) > MAX_COMPARE_TOKENS:
                raise BadArgument(text.too_many_tokens(len(tokens), MAX_COMPARE_TOKENS))
            tokens, raw = self.live.activations(spec, layer, neuron, value)
            scale = graph.max_activation if graph.max_activation > 0 else 1.0
            actual = [a / scale for a in raw]
        else:
            spec = self.spec(model, "tokenise text", text.INSTEAD_OF_TOKENISING)
            tokens = self.live.tokens(spec, value)
        if not tokens:
            raise BadArgument(text.NO_TOKENS)
        predicted = graph.predict(tokens)
        agreement = score(actual, predicted) if actual is not None else None
        rows = [TokenRow(index=i, token=t, predicted=predicted[i], actual=None if actual is None else actual[i])
                for i, t in enumerate(tokens)
                if predicted[i] >= FIRING_THRESHOLD or (actual is not None and actual[i] >= FIRING_THRESHOLD)]
        fired = max(actual if actual is not None else predicted) >= FIRING_THRESHOLD
        return PredictOutput(id=graph.id, model=model, tokens=tokens, predicted=predicted, actual=actual,
                             agreement=agreement, firing=rows[:MAX_FIRING_ROWS], firing_total=len(rows),
                             expect=expect, as_expected=None if expect is None else fired == (expect == "fire"))

    def build(self, model: str | None, layer: int, neuron: int, rebuild: bool = False, *,
              progress: Progress | None = None, cancel: threading.Event | None = None) -> GraphSummary:
        """Build one neuron's graph, or return the stored one (``store.pending``'s rule over every
        store of the model, so a shipped graph is not built again)."""
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
            return GraphSummary.of(stored)
        spec = self.spec(model, "build graphs", text.INSTEAD_OF_BUILDING)
        try:
            graphs = self.live.build(spec, layer, [neuron], self.catalog.writable_path(model),
                                     progress=progress, cancel=cancel, scan_file=self.scan_file(model))
        except Cancelled as exc:
            raise Cancelled(text.build_cancelled(layer, neuron, str(exc))) from exc
        graph = next((g for g in graphs if (g.layer, g.neuron) == (layer, neuron)), None)
        if graph is None:
            raise Unavailable(text.no_graph_built(layer, neuron))
        return GraphSummary.of(graph, built=True)

"""The queries answered from the stores alone: list, read, search, compare, draw.

Nothing here imports torch; a server over a prebuilt stores directory answers all of these
(find_similar_neurons' co-activation runs the model where it can, through the live backend, and
answers from the scan file where it cannot: ``n2g_mcp.coactivation_queries``). Each method
answers one tool and returns its result model (``n2g_mcp.outputs``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Literal

from n2g_mcp import text
from n2g_mcp.limits import EXAMPLES_PAGE, MAX_DOT_CHARS, MAX_PAIR_VISITS, SEARCH_PAGE
from n2g_mcp.outputs import (
    DictionaryInfo,
    ExampleView,
    GraphDescription,
    GraphSummary,
    ListModelsOutput,
    ModelInfo,
    RenderOutput,
    SearchHit,
    SearchOutput,
    By,
    SimilarItem,
    SimilarOutput,
    TopActivationsOutput,
)
from n2g_mcp.coactivation_queries import CoactivationQueries
from store.catalog import StoreView
from store.errors import BadArgument, NotFound
from store.graph import Example
from store.names import keyed_id, neuron_id, parse_neuron_id, split_units_key
from store.png import to_png
from store.progress import Progress
from store.render import NODES_DRAWN, render_summary, to_dot
from store.scanfile import ScanFile
from store.similarity import PAPER_THRESHOLD, SIMILAR_LIMIT, Mode, PairBudget
from store.svg import to_svg


def split_words(words: Sequence[str]) -> list[str]:
    """Search words, each item split at spaces (``"from import"`` is two words); an item made only
    of whitespace (a newline token) is kept as it is.

    >>> split_words(["from import", " flask", "\\n"])
    ['from', 'import', 'flask', '\\n']
    """
    return [w for item in words for w in (item.split() if item.strip() else [item])]


class StoreQueries(CoactivationQueries):
    """list_models, get_graph, top_activations, search_graphs, find_similar_neurons, render_graph_dot."""

    def list_models(self) -> ListModelsOutput:
        views = {v.model: v for v in self.catalog.models()}
        keys = set(views) | set(self.models.names()) | set(self.models.unit_keys())
        bases = sorted({split_units_key(k)[0] for k in keys}, key=lambda m: (m != self.default_model, m))
        infos = []
        for base in bases:
            dictionaries = []
            for key in sorted(k for k in keys if split_units_key(k)[0] == base and k != base):
                served = self.models.dictionaries.get(key)
                quality = served.quality.get("layers") if served and served.quality else None
                dictionaries.append(DictionaryInfo(units=split_units_key(key)[1], quality=quality,
                                                   **self._stored(key, views.get(key))))
            infos.append(ModelInfo(model=base, default=base == self.default_model, dictionaries=dictionaries,
                                   **self._stored(base, views.get(base))))
        return ListModelsOutput(stores_dir=str(self.catalog.directory) if self.show_paths else None, models=infos,
                                problems=self.catalog.problems)

    def _stored(self, key: str, view: StoreView | None) -> dict[str, Any]:
        """What list_models says of one units key's stores and whether it can be built here."""
        spec, shape = self.models.spec(key), self.models.shape(key)
        note = text.NOT_RUN_HERE if spec is None else self.live.availability(spec)
        return {"graphs": len(view) if view else 0, "layers": view.layers() if view else [],
                "partial": bool(view and view.indexing),
                "n_layers": shape[0] if shape else None, "d_mlp": shape[1] if shape else None,
                "files": view.files if view else [], "corrupt_lines": view.corrupt_lines if view else 0,
                "corrupt": view.corrupt_reports() if view else [], "can_build": note is None, "build_note": note}

    def get_graph(self, model: str | None, layer: int, neuron: int) -> GraphDescription:
        model = self.model(model)
        graph, view = self.graph(model, layer, neuron)
        fid = graph.fidelity
        trie = graph.graph
        pruned, unresolved = self.examples(graph, graph.pruned)
        output, unusable = self.output_tokens(model, layer, neuron)
        return GraphDescription(
            **GraphSummary.of(graph, viewer_url=self.link(model, layer, neuron)).model_dump(),
            hook=graph.hook, max_activation=graph.max_activation,
            paths=len(trie), depth=trie.depth(),
            matching=text.matching(graph.matching.rule, graph.matching.normalized),
            baselines_f1={} if fid is None else {
                "token_lookup": fid.token_lookup.top.f1, "ngram_lookup": fid.ngram_lookup.top.f1},
            examples=ExampleView.distinct([ExampleView.of(e, graph.max_activation, before=20, after=0)
                                           for e in pruned])[:3],
            output=output, warnings=view.corrupt_reports() + unresolved + unusable,
        )

    def top_activations(self, model: str | None, layer: int, neuron: int, limit: int = EXAMPLES_PAGE,
                        cursor: str | None = None) -> TopActivationsOutput:
        model = self.model(model)
        self.check_range(model, layer, neuron)
        query = ["top_activations", model, layer, neuron, limit]
        offset = self.pager.decode(cursor, query, "top_activations")
        scan = self.scan_file(model)
        if scan is not None:
            return self._top_from_scan(model, scan, layer, neuron, limit, offset)
        graph, view = self.graph(model, layer, neuron)
        stored, unresolved = self.examples(graph, graph.examples)
        examples = sorted(stored, key=lambda e: -e.activation)
        page = examples[offset:offset + limit]
        end = offset + len(page)
        output, unusable = self.output_tokens(model, layer, neuron)
        return TopActivationsOutput(
            id=graph.id, model=model, max_activation=graph.max_activation,
            examples=[ExampleView.of(e, graph.max_activation) for e in page], total=len(examples), offset=offset,
            next_cursor=self.pager.encode(end, query) if end < len(examples) else None,
            output=output, warnings=view.corrupt_reports() + unresolved + unusable,
        )

    def _top_from_scan(self, model: str, scan: ScanFile, layer: int, neuron: int, limit: int,
                       offset: int) -> TopActivationsOutput:
        stats = scan.stats(layer, neuron)
        top = float(scan.max_activation[layer, neuron])  # full precision: the examples are divided by it
        scale = top if top > 0 else 1.0
        page = scan.top(layer, neuron, limit=limit, offset=offset)
        total = len(scan.top(layer, neuron))
        examples = [ExampleView.of(Example(tokens=w.tokens, pivot=w.pivot, activation=w.activation, split=None),
                                   scale) for w in page]
        end = offset + len(page)
        query = ["top_activations", model, layer, neuron, limit]
        output, unusable = self.output_tokens(model, layer, neuron)
        return TopActivationsOutput(
            id=keyed_id(model, layer, neuron), model=model, max_activation=stats.max_activation,
            examples=examples, total=total, source="scan",
            stats=stats, output=output,
            offset=offset, next_cursor=self.pager.encode(end, query) if end < total else None,
            warnings=self.warnings(model) + unusable)

    def search(self, activating: Sequence[str] = (), context: Sequence[str] = (), *, model: str | None = None,
               words: Sequence[str] = (), exact: bool = False, layer: int | None = None,
               min_f1: float | None = None, repeated: bool = False, limit: int = SEARCH_PAGE,
               cursor: str | None = None, min_ordinary_f1: float | None = None) -> SearchOutput:
        model = self.model(model)
        activating, context, words = list(activating), list(context), split_words(words)
        self.check_range(model, layer)
        view = self.view(model)
        query = ["search", model, activating, context, exact, layer, min_f1, repeated, limit]
        if words:  # a cursor of a search without words stays valid as it was
            query.append(words)
        if min_ordinary_f1 is not None:  # so does one without this filter
            query.append(["min_ordinary_f1", min_ordinary_f1])
        offset = self.pager.decode(cursor, query, "search_graphs")
        total, page = view.search(activating, context, words=words, exact=exact, layer=layer, min_f1=min_f1,
                                  min_ordinary_f1=min_ordinary_f1, repeated=repeated, limit=limit, offset=offset)
        end = offset + len(page)
        partial = self.partial(view)
        hits = [SearchHit.of(h, repeated, exact, activating).model_copy(update={"id": keyed_id(model, h.layer, h.neuron)})
                for h in page]  # the index's ids say N; a dictionary's latents read F
        for hit in hits:
            hit.viewer_url = self.link(model, hit.layer, hit.neuron)
        return SearchOutput(model=model, results=hits, total=total,
                            offset=offset, searched=len(view),
                            next_cursor=self.pager.encode(end, query) if end < total else None,
                            warnings=view.corrupt_reports() + partial, partial=bool(partial))

    def similar(self, model: str | None = None, layer: int | None = None, neuron: int | None = None, *,
                threshold: float = PAPER_THRESHOLD, mode: Mode = "similar", limit: int = SIMILAR_LIMIT,
                by: By = "tokens", layers: list[int] | None = None, run_model: bool = True,
                progress: Progress | None = None, cancel: threading.Event | None = None) -> SimilarOutput:
        """Neurons like one target, or without one the most similar pairs; a pair search visits at
        most :data:`MAX_PAIR_VISITS` candidates (then answers partial, saying how to narrow it) and
        stops when ``cancel`` is set.

        ``by``: ``"tokens"``, token-set overlap of the graphs (the paper's); ``"coactivation"``, the
        neurons that fire with the target (``n2g_mcp.coactivation_queries``: on the model unless
        ``run_model`` is false or it cannot run here, else from the scan), over ``layers`` (None:
        all); ``"both"``, each beside the other, and where one cannot be measured the other alone
        with a warning saying why. Pairs (no target) are by tokens only."""
        model = self.model(model)
        if neuron is not None and layer is None:
            raise BadArgument(text.NEURON_WITHOUT_LAYER)
        if neuron is None and by == "coactivation":
            raise BadArgument(text.COACTIVATION_NEEDS_TARGET)
        shape = self.models.shape(model)
        neurons = None if shape is None else shape[0] * shape[1]
        if neuron is not None:
            assert layer is not None
            warnings: list[str] = []
            coactivation = None
            if by != "tokens":
                try:
                    coactivation = self.coactivated(model, layer, neuron, layers=layers, limit=limit,
                                                    run_model=run_model, progress=progress, cancel=cancel)
                except NotFound as exc:  # no scan file: "both" still answers by tokens
                    if by == "coactivation":
                        raise
                    warnings.append(text.coactivation_skipped(str(exc)))
            try:
                if by != "coactivation":
                    out = self._similar_to(model, layer, neuron, threshold, mode, limit, neurons)
                    return out.model_copy(update={"by": "both" if coactivation is not None else "tokens",
                                                  "coactivation": coactivation, "warnings": out.warnings + warnings})
            except NotFound:  # no graph: "both" still answers by co-activation
                if coactivation is None:
                    raise
                warnings.append(text.no_graph_for_tokens(neuron_id(layer, neuron)))
            return SimilarOutput(model=model, target=neuron_id(layer, neuron), mode=mode, threshold=threshold,
                                 neurons=neurons, by="coactivation", results=[], coactivation=coactivation,
                                 warnings=self.warnings(model) + warnings)
        if mode == "subset":
            raise BadArgument(text.SUBSET_NEEDS_TARGET)
        self.check_range(model, layer)
        view = self.view(model)
        items = []
        budget = PairBudget(MAX_PAIR_VISITS, cancel)
        for p in view.similar_pairs(threshold=threshold, limit=limit, layer=layer, budget=budget):
            layer_b, neuron_b = parse_neuron_id(p.b)
            items.append(SimilarItem(id=keyed_id(model, layer_b, neuron_b), layer=layer_b, neuron=neuron_b,
                                     similar_to=keyed_id(model, *parse_neuron_id(p.a)),
                                     activating_overlap=p.activating_overlap, context_overlap=p.context_overlap))
        partial = self.partial(view)
        if budget.stopped:
            partial.append(text.pairs_stopped(budget.spent, budget.complete_to, threshold, layer))
        return SimilarOutput(model=model, target=None, layer=layer, mode=mode, threshold=threshold,
                             compared=len(view), neurons=neurons, results=items,
                             warnings=view.corrupt_reports() + partial,
                             partial=bool(partial))

    def _similar_to(self, model: str, layer: int, neuron: int, threshold: float, mode: Mode, limit: int,
                    neurons: int | None) -> SimilarOutput:
        """The neurons whose graphs' token sets overlap the target's (the paper's similarity)."""
        target, view = self.graph(model, layer, neuron)
        matches = view.similar_to(target, threshold=threshold, mode=mode, limit=limit)
        # Nothing reaches the threshold: the closest candidate, so the answer says how far off it is.
        nearest = None if matches or threshold <= 0 else next(
            iter(view.similar_to(target, threshold=0.0, mode=mode, limit=1)), None)
        items = [SimilarItem(id=keyed_id(model, m.layer, m.neuron), layer=m.layer, neuron=m.neuron, similar_to=target.id,
                             activating_overlap=m.activating_overlap, context_overlap=m.context_overlap)
                 for m in [*matches, *([nearest] if nearest else [])]]
        partial = self.partial(view)
        return SimilarOutput(model=model, target=target.id, mode=mode, threshold=threshold, compared=len(view),
                             neurons=neurons, results=items[:len(matches)],
                             nearest=items[-1] if nearest else None,
                             warnings=view.corrupt_reports() + partial, partial=bool(partial))

    def render(self, model: str | None, layer: int, neuron: int, max_nodes: int = NODES_DRAWN) -> RenderOutput:
        model = self.model(model)
        graph, view = self.graph(model, layer, neuron)
        output, _ = self.output_tokens(model, layer, neuron)
        nodes = max_nodes
        dot = to_dot(graph, max_nodes=nodes, output=output)
        while len(dot) > MAX_DOT_CHARS and nodes > 1:
            # Too big to hand an agent: redraw with fewer nodes (strongest paths kept).
            nodes = max(1, nodes * 2 // 3)
            dot = to_dot(graph, max_nodes=nodes, output=output)
        counts = render_summary(graph, max_nodes=nodes)
        return RenderOutput(id=graph.id, model=model, dot=dot, nodes=counts["nodes"],
                            shown_nodes=counts["shown_nodes"], paths=counts["paths"],
                            shown_paths=counts["shown_paths"], max_nodes=nodes, requested_max_nodes=max_nodes,
                            warnings=view.corrupt_reports())

    def picture(self, model: str | None, layer: int, neuron: int, fmt: Literal["svg", "png"],
                max_nodes: int = NODES_DRAWN) -> bytes:
        """The graph drawn as SVG or PNG (``store.svg``, ``store.png``: no Graphviz), with what the
        DOT of :meth:`render` holds, up to ``max_nodes`` nodes."""
        model = self.model(model)
        graph, _ = self.graph(model, layer, neuron)
        output, _ = self.output_tokens(model, layer, neuron)
        if fmt == "png":
            return to_png(graph, max_nodes=max_nodes, output=output)
        return to_svg(graph, max_nodes=max_nodes, output=output).encode()

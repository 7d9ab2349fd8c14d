"""The neuron queries behind the MCP tools, as a plain library: arguments in, result models out.

:class:`Queries` holds the stores (:class:`store.catalog.Catalog`), the models this server may
run (:class:`n2g_mcp.registry.ServedModels`), the model side (:class:`n2g_mcp.live.LiveBackend`)
and the cursor signer (:class:`n2g_mcp.paging.Pager`). Each public method answers one tool and
returns its result model (``n2g_mcp.outputs``); a request it cannot answer raises an
:mod:`n2g_mcp.errors` error whose message (worded in ``n2g_mcp.text``) says what to call next.
Nothing here knows about MCP, so the command line and scripts can use it as it is::

    queries = Queries(Path("stores"))
    queries.search(activating=[" except"], context=[" everyone"]).results

Nothing here imports torch: reading, searching, comparing and rendering work from the stores
alone; only :meth:`Queries.build` and :meth:`Queries.predict` reach the live backend, and both
are slow (call them from a worker thread).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from n2g_mcp import text
from n2g_mcp.errors import BadArgument, Cancelled, NotFound, Unavailable
from n2g_mcp.live import BuilderBackend, LiveBackend
from n2g_mcp.outputs import (
    AblationOutput,
    ExampleView,
    Figures,
    FindHit,
    FindNeuronsOutput,
    GraphDescription,
    GraphSummary,
    HypothesisOutput,
    HypothesisSetView,
    InductionHit,
    InductionOutput,
    ListModelsOutput,
    MarkedView,
    ModelInfo,
    PredictOutput,
    RenderOutput,
    SearchHit,
    SearchOutput,
    SimilarItem,
    NeuronStatsView,
    SimilarOutput,
    TokenChangeView,
    TokenRow,
    TopActivationsOutput,
)
from n2g_mcp.paging import Pager
from n2g_mcp.registry import ServedModels, looks_like_path
from store.catalog import Catalog, CorruptGraph, Hit, StoreView
from store.graph import Example, NeuronGraph
from store.index import repeated_tokens
from store.metrics import FIRING_THRESHOLD, score
from store.models import ModelSpec
from store.names import OutOfRange, check_range, neuron_id, parse_neuron_id
from store.progress import Progress
from store.render import render_summary, to_dot
from store.scanfile import ScanFile, ScanFileError, scan_filename
from store.tokens import normalize

MAX_TEXT_CHARS = 20_000
"""Longest text predict_activations takes; longer texts are split by the agent."""
MAX_COMPARE_TOKENS = 4_096
"""Most tokens predict_activations(compare=true) runs through the real model in one call."""
MAX_LIMIT = 100
"""Most results one call returns."""
MAX_DOT_CHARS = 40_000
"""Largest DOT text returned; a bigger drawing is redrawn with fewer nodes."""
MAX_NODES = 500
"""Largest node cap an agent may ask render_graph_dot for."""
TOKENS_SHOWN = 25
"""Activating and context tokens shown per graph by build_graph and get_graph."""
HIT_TOKENS = 8
"""Activating and context tokens shown per search hit."""
MAX_FIRING_ROWS = 100
"""Most rows of the firing list predict_activations returns (the per-token arrays have all)."""
MAX_ABLATE = 256
"""Most neurons ablate_neurons takes in one call."""
MAX_PATTERN_CHARS = 500
"""Longest pattern test_hypothesis takes."""


# --------------------------------------------------------------------- result pieces
def _top(mapping: dict[str, float], n: int) -> dict[str, float]:
    return {k: round(v, 4) for k, v in list(mapping.items())[:n]}


def example_view(example: Example, max_activation: float, before: int = 40, after: int = 10) -> ExampleView:
    """An example as text with the pivot wrapped in [[ ]], cut to ``before``/``after`` tokens."""
    tokens, p = example.tokens, example.pivot
    start, end = max(0, p - before), min(len(tokens), p + 1 + after)
    shown = ("…" if start else "") + "".join(tokens[start:p]) + "[[" + tokens[p] + "]]" \
        + "".join(tokens[p + 1:end]) + ("…" if end < len(tokens) else "")
    important: list[str] = []
    if example.importances:
        ranked = sorted(((w, i) for i, w in enumerate(example.importances) if i != p and w > 0), reverse=True)
        important = [tokens[i] for w, i in ranked[:5] if i < len(tokens)]
    norm = example.activation / max_activation if max_activation > 0 else 0.0
    return ExampleView(text=shown, pivot_token=tokens[p], activation=round(norm, 4),
                       raw_activation=round(example.activation, 4), split=example.split,
                       important_tokens=important)


def _distinct(views: list[ExampleView]) -> list[ExampleView]:
    """Examples with different texts, first of each kept (pruning often leaves the same few tokens)."""
    seen: set[str] = set()
    return [v for v in views if not (v.text in seen or seen.add(v.text))]


def _hit(hit: Hit, repeated: bool, exact: bool) -> SearchHit:
    return SearchHit(
        id=hit.id, layer=hit.layer, neuron=hit.neuron,
        activating_tokens=hit.activating_tokens[:HIT_TOKENS], context_tokens=hit.context_tokens[:HIT_TOKENS],
        f1=None if hit.f1 is None else round(hit.f1, 4),
        repeated_tokens=repeated_tokens(hit, exact=exact)[:HIT_TOKENS] if repeated else [],
    )


def summarize(graph: NeuronGraph, built: bool = False) -> GraphSummary:
    """The compact summary of a graph that build_graph returns."""
    fid = graph.fidelity
    return GraphSummary(
        id=graph.id, model=graph.model, layer=graph.layer, neuron=graph.neuron,
        activating_tokens=_top(graph.activating_tokens, TOKENS_SHOWN),
        context_tokens=_top(graph.context_tokens, TOKENS_SHOWN),
        activating_total=len(graph.activating_tokens), context_total=len(graph.context_tokens),
        fidelity=None if fid is None else Figures.of(fid.n2g.top),
        fidelity_with_negatives=None if fid is None else Figures.of(fid.n2g.random),
        built=built,
    )


# --------------------------------------------------------------------- the queries
class Queries:
    """The tools' queries over a stores directory; see the module docstring.

    Args:
        stores_dir: where the stores are (created by the first build if missing).
        live: the model side; the real builder by default (loaded on first use).
        models: the models this server may run; the embedded default alone by default.
        pager: signs cursors; a fresh random key by default.
    """

    def __init__(self, stores_dir: Path, live: LiveBackend | None = None, models: ServedModels | None = None,
                 pager: Pager | None = None) -> None:
        self.models = models if models is not None else ServedModels()
        # Lines of a store whose header lacks the shape are checked against the served models'.
        self.catalog = Catalog(Path(stores_dir), shapes=self.models.shape)
        self.live: LiveBackend = live if live is not None else BuilderBackend()
        self.pager = pager if pager is not None else Pager()
        self._scans: dict[str, tuple[float, ScanFile]] = {}

    # ----------------------------------------------------------------- checks
    @property
    def default_model(self) -> str:
        return self.models.default_name

    def model(self, name: str | None) -> str:
        """The model a call is about: the named one, else the default.

        Raises:
            BadArgument: for a name shaped like a path that names no store (without touching the
                disk, and without repeating the name).
        """
        if name is None or not name.strip():
            return self.default_model
        name = name.strip()
        if self.models.spec(name) is None and looks_like_path(name) and self.catalog.get(name) is None:
            raise BadArgument(text.model_is_a_path())
        return name

    def _build_call(self, model: str, layer: int, neuron: int) -> str:
        return text.call("build_graph", model, self.default_model, layer=layer, neuron=neuron)

    def check_range(self, model: str, layer: int | None = None, neuron: int | None = None) -> None:
        """Refuse a layer or neuron the model does not have (where its shape is known).

        Raises:
            BadArgument: in ``store.names.check_range``'s words.
        """
        shape = self.models.shape(model)
        if shape is not None:
            try:
                check_range(model, shape, layer, neuron)
            except OutOfRange as exc:
                raise BadArgument(str(exc)) from None

    def view(self, model: str) -> StoreView:
        """A model's merged stores.

        Raises:
            NotFound: where no store holds the model, saying whether it is unknown or just empty.
        """
        found = self.catalog.get(model)
        if found is not None:
            return found
        if self.models.spec(model) is not None:
            raise NotFound(text.no_store_yet(model, str(self.catalog.directory), self._build_call(model, 0, 0)))
        stored = [(v.model, len(v)) for v in self.catalog.models()]
        raise NotFound(text.unknown_model(model, stored, str(self.catalog.directory)))

    def graph(self, model: str, layer: int, neuron: int) -> tuple[NeuronGraph, StoreView]:
        """One neuron's stored graph.

        Raises:
            BadArgument: for a layer or neuron out of range.
            NotFound: for an unknown model, or no graph yet.
        """
        self.check_range(model, layer, neuron)
        view = self.view(model)
        try:
            graph = view.get(layer, neuron)
        except CorruptGraph as exc:
            raise NotFound(str(exc)) from exc
        if graph is None:
            layers = view.layers()
            hint = layers if self.models.shape(model) is None and layer not in layers else None
            raise NotFound(text.no_graph(model, layer, neuron, self._build_call(model, layer, neuron), hint))
        return graph, view

    def spec(self, model: str, doing: str, instead: str) -> ModelSpec:
        """The model to run, where this server can run it.

        Raises:
            Unavailable: for a model this server does not run, or cannot run here.
        """
        spec = self.models.spec(model)
        if spec is None:
            reason = (f"this server does not run {model} (its operator can add a model with "
                      "--model NAME=PATH)")
            raise Unavailable(text.cannot(doing, model, reason, instead))
        reason = self.live.availability(spec)
        if reason is not None:
            raise Unavailable(text.cannot(doing, model, reason, instead))
        return spec

    @staticmethod
    def check_text(value: str) -> None:
        """Refuse an empty or over-long text.

        Raises:
            BadArgument: saying how to split it.
        """
        if not value or not value.strip():
            raise BadArgument(text.empty_text())
        if len(value) > MAX_TEXT_CHARS:
            raise BadArgument(text.text_too_long(len(value), MAX_TEXT_CHARS))

    # ----------------------------------------------------------------- list_models
    def list_models(self) -> ListModelsOutput:
        views = {v.model: v for v in self.catalog.models()}
        names = sorted(set(views) | set(self.models.names()), key=lambda m: (m != self.default_model, m))
        infos = []
        for name in names:
            view, spec = views.get(name), self.models.spec(name)
            shape = self.models.shape(name)
            note = "this server does not run it" if spec is None else self.live.availability(spec)
            infos.append(ModelInfo(
                model=name, default=name == self.default_model,
                graphs=len(view) if view else 0, layers=view.layers() if view else [],
                n_layers=shape[0] if shape else None, d_mlp=shape[1] if shape else None,
                files=view.files if view else [],
                corrupt_lines=view.corrupt_lines if view else 0,
                corrupt=view.corrupt_reports() if view else [],
                can_build=note is None, build_note=note,
            ))
        return ListModelsOutput(stores_dir=str(self.catalog.directory), models=infos, problems=self.catalog.problems)

    # ----------------------------------------------------------------- reading
    def get_graph(self, model: str | None, layer: int, neuron: int) -> GraphDescription:
        model = self.model(model)
        graph, view = self.graph(model, layer, neuron)
        fid = graph.fidelity
        trie = graph.graph
        return GraphDescription(
            **summarize(graph).model_dump(),
            hook=graph.hook, max_activation=round(graph.max_activation, 4),
            paths=len(trie), depth=trie.depth(),
            matching=f"{graph.matching.rule}, {'normalised' if graph.matching.normalized else 'exact'} tokens",
            baselines_f1={} if fid is None else {
                "token_lookup": fid.token_lookup.top.f1, "ngram_lookup": fid.ngram_lookup.top.f1},
            examples=_distinct([example_view(e, graph.max_activation, before=20, after=0) for e in graph.pruned])[:3],
            warnings=view.corrupt_reports(),
        )

    def top_activations(self, model: str | None, layer: int, neuron: int, limit: int = 10,
                        cursor: str | None = None) -> TopActivationsOutput:
        model = self.model(model)
        self.check_range(model, layer, neuron)
        scan = self.scan_file(model)
        if scan is not None:
            return self._top_from_scan(model, scan, layer, neuron, limit, cursor)
        graph, view = self.graph(model, layer, neuron)
        query = ["top_activations", model, layer, neuron, limit]
        offset = self.pager.decode(cursor, query, "top_activations")
        examples = sorted(graph.examples, key=lambda e: -e.activation)
        page = examples[offset:offset + limit]
        end = offset + len(page)
        return TopActivationsOutput(
            id=graph.id, model=model, max_activation=round(graph.max_activation, 4),
            examples=[example_view(e, graph.max_activation) for e in page], total=len(examples), offset=offset,
            next_cursor=self.pager.encode(end, query) if end < len(examples) else None,
            warnings=view.corrupt_reports(),
        )

    def search(self, activating: Sequence[str] = (), context: Sequence[str] = (), *, model: str | None = None,
               exact: bool = False, layer: int | None = None, min_f1: float | None = None,
               repeated: bool = False, limit: int = 20, cursor: str | None = None) -> SearchOutput:
        model = self.model(model)
        activating, context = list(activating), list(context)
        self.check_range(model, layer)
        view = self.view(model)
        query = ["search", model, activating, context, exact, layer, min_f1, repeated, limit]
        offset = self.pager.decode(cursor, query, "search_graphs")
        total, page = view.search(activating, context, exact=exact, layer=layer, min_f1=min_f1, repeated=repeated,
                                  limit=limit, offset=offset)
        end = offset + len(page)
        return SearchOutput(model=model, results=[_hit(h, repeated, exact) for h in page], total=total,
                            offset=offset, searched=len(view),
                            next_cursor=self.pager.encode(end, query) if end < total else None,
                            warnings=view.corrupt_reports())

    def similar(self, model: str | None = None, layer: int | None = None, neuron: int | None = None, *,
                threshold: float = 0.9, mode: Literal["similar", "subset"] = "similar",
                limit: int = 20) -> SimilarOutput:
        model = self.model(model)
        if neuron is not None and layer is None:
            raise BadArgument(text.NEURON_WITHOUT_LAYER)
        if neuron is not None:
            target, view = self.graph(model, layer, neuron)
            matches = view.similar_to(target, threshold=threshold, mode=mode, limit=limit)
            items = [SimilarItem(id=m.id, layer=m.layer, neuron=m.neuron, similar_to=target.id,
                                 activating_overlap=round(m.activating_overlap, 4),
                                 context_overlap=round(m.context_overlap, 4)) for m in matches]
            return SimilarOutput(model=model, target=target.id, mode=mode, threshold=threshold, compared=len(view),
                                 results=items, warnings=view.corrupt_reports())
        if mode == "subset":
            raise BadArgument(text.SUBSET_NEEDS_TARGET)
        self.check_range(model, layer)
        view = self.view(model)
        items = []
        for p in view.similar_pairs(threshold=threshold, limit=limit, layer=layer):
            layer_b, neuron_b = parse_neuron_id(p.b)
            items.append(SimilarItem(id=p.b, layer=layer_b, neuron=neuron_b, similar_to=p.a,
                                     activating_overlap=round(p.activating_overlap, 4),
                                     context_overlap=round(p.context_overlap, 4)))
        return SimilarOutput(model=model, target=None, layer=layer, mode=mode, threshold=threshold,
                             compared=len(view), results=items, warnings=view.corrupt_reports())

    def render(self, model: str | None, layer: int, neuron: int, max_nodes: int = 150) -> RenderOutput:
        model = self.model(model)
        graph, view = self.graph(model, layer, neuron)
        nodes = max_nodes
        dot = to_dot(graph, max_nodes=nodes)
        while len(dot) > MAX_DOT_CHARS and nodes > 1:
            # Too big to hand an agent: redraw with fewer nodes (strongest paths kept).
            nodes = max(1, nodes * 2 // 3)
            dot = to_dot(graph, max_nodes=nodes)
        counts = render_summary(graph, max_nodes=nodes)
        return RenderOutput(id=graph.id, model=model, dot=dot, nodes=counts["nodes"],
                            shown_nodes=counts["shown_nodes"], paths=counts["paths"],
                            shown_paths=counts["shown_paths"], max_nodes=nodes, requested_max_nodes=max_nodes,
                            warnings=view.corrupt_reports())

    # ----------------------------------------------------------------- live
    def predict(self, model: str | None, layer: int, neuron: int, value: str, compare: bool = False) -> PredictOutput:
        """The graph's prediction per token (and with ``compare`` the real neuron's); slow."""
        model = self.model(model)
        graph, _ = self.graph(model, layer, neuron)
        self.check_text(value)
        instead = "Call predict_activations with compare=false to see the graph's prediction alone."
        actual: list[float] | None = None
        if compare:
            spec = self.spec(model, "run the real neuron", instead)
            tokens = self.live.tokens(spec, value)
            if len(tokens) > MAX_COMPARE_TOKENS:
                raise BadArgument(text.too_many_tokens(len(tokens), MAX_COMPARE_TOKENS))
            tokens, raw = self.live.activations(spec, layer, neuron, value)
            scale = graph.max_activation if graph.max_activation > 0 else 1.0
            actual = [round(a / scale, 4) for a in raw]
        else:
            spec = self.spec(model, "tokenise text", "Search and read the stored graphs instead.")
            tokens = self.live.tokens(spec, value)
        if not tokens:
            raise BadArgument(text.NO_TOKENS)
        predicted = [round(p, 4) for p in graph.predict(tokens)]
        agreement = Figures.of(score(actual, predicted)) if actual is not None else None
        rows = [TokenRow(index=i, token=t, predicted=predicted[i], actual=None if actual is None else actual[i])
                for i, t in enumerate(tokens)
                if predicted[i] >= FIRING_THRESHOLD or (actual is not None and actual[i] >= FIRING_THRESHOLD)]
        return PredictOutput(id=graph.id, model=model, tokens=tokens, predicted=predicted, actual=actual,
                             agreement=agreement, firing=rows[:MAX_FIRING_ROWS], firing_total=len(rows))

    def build(self, model: str | None, layer: int, neuron: int, rebuild: bool = False, *,
              progress: Progress | None = None, cancel: threading.Event | None = None) -> GraphSummary:
        """Build (or fetch) one neuron's graph; slow."""
        model = self.model(model)
        self.check_range(model, layer, neuron)
        view = self.catalog.get(model)
        try:
            stored = None if view is None else view.get(layer, neuron)
        except CorruptGraph:
            stored = None  # build it again
        if stored is not None and not rebuild:
            return summarize(stored)
        spec = self.spec(model, "build graphs", "Search the stored graphs with search_graphs instead, or run "
                         "the server where the builder extra is installed.")
        try:
            graphs = self.live.build(spec, layer, [neuron], self.catalog.writable_path(model),
                                     progress=progress, cancel=cancel, scan_file=self.scan_file(model))
        except Cancelled as exc:
            raise Cancelled(text.build_cancelled(layer, neuron, str(exc))) from exc
        graph = next((g for g in graphs if (g.layer, g.neuron) == (layer, neuron)), None)
        if graph is None:
            raise Unavailable(f"the builder returned no graph for L{layer}/N{neuron}; check the server log, "
                              "then call build_graph again")
        return summarize(graph, built=True)

    # ----------------------------------------------------------------- the whole-model scan
    def scan_file(self, model: str) -> ScanFile | None:
        """The model's scan file in the stores directory, read once (again if it changes)."""
        path = self.catalog.directory / scan_filename(model)
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        cached = self._scans.get(model)
        if cached is None or cached[0] != mtime:
            try:
                cached = (mtime, ScanFile(path))
            except ScanFileError as exc:
                raise Unavailable(f"{exc}. Tools that need the scan are unavailable until it is fixed.") from None
            self._scans[model] = cached
        return cached[1]

    def _need_scan(self, model: str, tool: str) -> ScanFile:
        scan = self.scan_file(model)
        if scan is None:
            raise NotFound(text.no_scan(model, str(self.catalog.directory), tool))
        return scan

    def _top_from_scan(self, model: str, scan: ScanFile, layer: int, neuron: int, limit: int,
                       cursor: str | None) -> TopActivationsOutput:
        query = ["top_activations", model, layer, neuron, limit]
        offset = self.pager.decode(cursor, query, "top_activations")
        stats = scan.stats(layer, neuron)
        scale = stats.max_activation if stats.max_activation > 0 else 1.0
        page = scan.top(layer, neuron, limit=limit, offset=offset)
        total = len(scan.top(layer, neuron))
        examples = [example_view(Example(tokens=w.tokens, pivot=w.pivot, activation=w.activation, split=None),
                                 scale) for w in page]
        end = offset + len(page)
        view = self.catalog.get(model)
        return TopActivationsOutput(
            id=neuron_id(layer, neuron), model=model, max_activation=round(stats.max_activation, 4),
            examples=examples, total=total, source="scan",
            stats=NeuronStatsView(max_activation=round(stats.max_activation, 4), density=round(stats.density, 6),
                                  quantiles={k: round(v, 4) for k, v in stats.quantiles.items()}),
            offset=offset, next_cursor=self.pager.encode(end, query) if end < total else None,
            warnings=view.corrupt_reports() if view else [])

    def _layers(self, model: str, layers: list[int] | None) -> list[int]:
        shape = self.models.shape(model)
        if layers is None or not layers:
            if shape is None:
                raise BadArgument("pass layers: this model's shape is not known before it loads")
            return list(range(shape[0]))
        for layer in layers:
            self.check_range(model, layer)
        return sorted(set(layers))

    def _graph_info(self, model: str, layer: int, neuron: int) -> tuple[bool, list[str], float | None]:
        """Whether a graph is stored for the neuron, its activating tokens and F1 (from the index)."""
        view = self.catalog.get(model)
        hit = None if view is None else view.hit(layer, neuron)
        if hit is None:
            return False, [], None
        return True, hit.activating_tokens[:HIT_TOKENS], None if hit.f1 is None else round(hit.f1, 4)

    def _probe_spec(self, model: str, doing: str) -> ModelSpec:
        return self.spec(model, doing, "Search the stored graphs with search_graphs instead.")

    def find_neurons(self, model: str | None, value: str, token: str | None = None, position: int | None = None,
                     layers: list[int] | None = None, limit: int = 20) -> FindNeuronsOutput:
        """The neurons that fire most at one token of a text, over all requested layers; slow."""
        model = self.model(model)
        self.check_text(value)
        layers = self._layers(model, layers)
        scan = self._need_scan(model, "find_neurons")
        spec = self._probe_spec(model, "run the model")
        ids, strings = self.live.encode(spec, value)
        if not ids:
            raise BadArgument(text.NO_TOKENS)
        if len(ids) > MAX_COMPARE_TOKENS:
            raise BadArgument(text.too_many_tokens(len(ids), MAX_COMPARE_TOKENS))
        if token is not None:
            matches = [i for i, t in enumerate(strings) if t == token] or \
                      [i for i, t in enumerate(strings) if normalize(t) == normalize(token)]
            if not matches:
                raise BadArgument(text.no_such_token(token, strings))
            at = matches[-1]
        else:
            at = -1 if position is None else position
            if not -len(ids) <= at < len(ids):
                raise BadArgument(text.position_outside(at, len(ids)))
            at %= len(ids)
        maxes = {layer: scan.max_activation[layer] for layer in layers}
        hits = self.live.neurons_at(spec, ids, at, layers, maxes, limit)
        results = []
        for h in hits:
            has, acts, f1 = self._graph_info(model, h.layer, h.neuron)
            results.append(FindHit(id=neuron_id(h.layer, h.neuron), layer=h.layer, neuron=h.neuron,
                                   activation=round(h.normalized, 4), raw_activation=round(h.activation, 4),
                                   has_graph=has, activating_tokens=acts, f1=f1))
        return FindNeuronsOutput(model=model, token=strings[at], position=at, tokens=len(ids), layers=layers,
                                 results=results)

    def find_induction(self, model: str | None, layers: list[int] | None = None, limit: int = 50,
                       sequences: int = 24, length: int = 48, seed: int = 0) -> InductionOutput:
        """Neurons that fire more on the second copy of repeated random sequences; slow."""
        model = self.model(model)
        layers = self._layers(model, layers)
        spec = self._probe_spec(model, "run the induction probe")
        scan = self.scan_file(model)
        maxes = None if scan is None else {layer: scan.max_activation[layer] for layer in layers}
        started = time.perf_counter()
        scores = self.live.induction(spec, layers, sequences, length, seed, maxes)
        seconds = time.perf_counter() - started
        results = [InductionHit(id=neuron_id(r.layer, r.neuron), layer=r.layer, neuron=r.neuron,
                                score=round(r.score, 4), first=round(r.first, 4), second=round(r.second, 4),
                                has_graph=self._graph_info(model, r.layer, r.neuron)[0])
                   for r in scores[:limit]]
        return InductionOutput(model=model, layers=layers, sequences=sequences, length=length, seed=seed,
                               threshold_source="corpus scan max" if scan is not None else "probe max",
                               results=results, seconds=round(seconds, 2))

    def ablate(self, model: str | None, neurons: list[str], value: str | None = None,
               mode: Literal["zero", "mean"] = "zero", control: bool = True) -> AblationOutput:
        """The model's next-token loss with neurons ablated, against a random control; slow."""
        model = self.model(model)
        if not neurons:
            raise BadArgument("pass at least one neuron id, e.g. ['L17/N938']")
        if len(neurons) > MAX_ABLATE:
            raise BadArgument(text.too_many_neurons(len(neurons), MAX_ABLATE))
        pairs, bad = [], []
        for item in neurons:
            try:
                pairs.append(parse_neuron_id(item))
            except ValueError:
                bad.append(item)
        if bad:
            raise BadArgument(text.bad_neuron_ids(bad))
        for layer, n in pairs:
            self.check_range(model, layer, n)
        pairs = sorted(set(pairs))
        if value is not None:
            self.check_text(value)
        means = None
        if mode == "mean":
            scan = self.scan_file(model)
            means = None if scan is None else {layer: scan.mean[layer] for layer, _ in pairs}
        spec = self._probe_spec(model, "ablate neurons")
        if value is not None:
            n_tokens = len(self.live.encode(spec, value)[0])
            if n_tokens > MAX_COMPARE_TOKENS:
                raise BadArgument(text.too_many_tokens(n_tokens, MAX_COMPARE_TOKENS))
        r = self.live.ablate(spec, pairs, value, mode, control, means)
        return AblationOutput(
            model=model, neurons=[neuron_id(*p) for p in r.neurons], mode=mode,
            measured_on="repeated-sequence probe (second copies)" if value is None else "the given text",
            tokens_measured=r.tokens_measured, loss_clean=round(r.loss_clean, 4),
            loss_ablated=round(r.loss_ablated, 4), delta=round(r.delta, 4),
            control_neurons=[neuron_id(*p) for p in r.control_neurons],
            control_delta=None if r.control_delta is None else round(r.control_delta, 4),
            top_changes=[TokenChangeView(position=c.position, token=c.token, loss_clean=round(c.loss_clean, 4),
                                         loss_ablated=round(c.loss_ablated, 4)) for c in r.top_changes])

    def hypothesis(self, model: str | None, layer: int, neuron: int, pattern: str,
                   kind: Literal["regex", "tokens"] = "regex") -> HypothesisOutput:
        """A pattern scored as the neuron's explanation on its top, random and matching windows; slow."""
        model = self.model(model)
        self.check_range(model, layer, neuron)
        if not pattern:
            raise BadArgument(text.bad_pattern("the pattern is empty"))
        if len(pattern) > MAX_PATTERN_CHARS:
            raise BadArgument(text.bad_pattern(f"the pattern has {len(pattern)} characters, over {MAX_PATTERN_CHARS}"))
        scan = self._need_scan(model, "test_hypothesis")
        spec = self._probe_spec(model, "test a hypothesis")
        try:
            r = self.live.hypothesis(spec, layer, neuron, pattern, kind, scan)
        except BadArgument as exc:
            raise BadArgument(text.bad_pattern(str(exc))) from None

        def marked(m: Any) -> MarkedView:  # a builder.hypothesis.MarkedWindow
            return MarkedView(set=m.set, text=m.text, token=m.token, activation=round(m.activation, 4))

        return HypothesisOutput(
            id=neuron_id(layer, neuron), model=model, pattern=pattern, kind=kind, overall=Figures.of(r.overall),
            sets=[HypothesisSetView(set=s.set, windows=s.windows, tokens=s.scores.tokens, firing=s.scores.firing,
                                    claimed=s.scores.predicted, figures=Figures.of(s.scores)) for s in r.sets],
            corpus_windows_matched=r.corpus_windows_matched,
            false_positives=[marked(m) for m in r.false_positives],
            false_negatives=[marked(m) for m in r.false_negatives])

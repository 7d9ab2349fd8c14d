"""What the MCP tools do, as plain methods: stores in, a text summary and a result model out.

:class:`Service` holds a :class:`store.catalog.Catalog` (the stores, read and indexed) and a
:class:`n2g_mcp.live.LiveBackend` (the model side). Each public method answers one tool and
returns ``(summary, result)``: a few lines an agent can read, and the structured result
(``n2g_mcp.outputs``). Bad input raises :class:`ToolError` with a message that says what to call
next; ``n2g_mcp.server`` only adapts these methods to MCP (threads, progress, cancelling).

Nothing here imports torch: reading, searching, comparing and rendering work from the stores
alone; only :meth:`Service.build` and :meth:`Service.predict` reach the live backend.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import orjson
from mcp.server.mcpserver.exceptions import ToolError

from n2g_mcp.live import BuildCancelled, LiveBackend, LiveError, Progress
from n2g_mcp.outputs import (
    ExampleView,
    Figures,
    GraphDescription,
    GraphSummary,
    ListModelsOutput,
    ModelInfo,
    PredictOutput,
    RenderOutput,
    SearchHit,
    SearchOutput,
    SimilarItem,
    SimilarOutput,
    TokenRow,
    TopActivationsOutput,
)
from store.catalog import Catalog, ModelStores
from store.graph import Example, NeuronGraph
from store.index import repeated_tokens, top_f1
from store.metrics import FIRING_THRESHOLD, score
from store.names import neuron_id, parse_neuron_id
from store.render import render_summary, to_dot
from store.similarity import similar_pairs, similar_to

MAX_TEXT_CHARS = 20_000
"""Longest text predict_activations takes; longer texts are split by the agent."""
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
_MODEL_NAME = re.compile(r"^[\w./~:-]{1,200}$")


# --------------------------------------------------------------------- helpers
def _tok(token: str) -> str:
    """A token as the text summaries show it: quoted, so leading spaces and newlines are visible."""
    return repr(token)


def _tokens(tokens: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(_tok(t) for t in list(tokens)[:limit])
    more = len(tokens) - limit
    return shown + (f" (+{more} more)" if more > 0 else "") if tokens else "none"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _figures_line(figures: Figures | None) -> str:
    if figures is None:
        return "not scored"
    return (f"precision {_fmt(figures.precision)}, recall {_fmt(figures.recall)}, "
            f"F1 {_fmt(figures.f1)}, correlation {_fmt(figures.correlation)}")


def _top(mapping: dict[str, float], n: int) -> dict[str, float]:
    return {k: round(v, 4) for k, v in list(mapping.items())[:n]}


def _cursor_key(query: object) -> str:
    return hashlib.sha256(orjson.dumps(query, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def encode_cursor(offset: int, query: object) -> str:
    """An opaque cursor: the next offset, bound to the query it pages through."""
    raw = orjson.dumps({"o": offset, "q": _cursor_key(query)})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, query: object, tool: str) -> int:
    """The offset a cursor points at (0 for no cursor).

    Raises:
        ToolError: for a cursor that is malformed or was made by a different query.
    """
    if not cursor:
        return 0
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        offset, key = int(raw["o"]), raw["q"]
    except (ValueError, TypeError, KeyError, orjson.JSONDecodeError) as exc:
        raise ToolError(f"cursor {cursor[:40]!r} is not one this server made; call {tool} "
                        "again without cursor to start from the first page") from exc
    if key != _cursor_key(query) or offset < 0:
        raise ToolError(f"this cursor belongs to a different {tool} query; repeat the same "
                        f"arguments with it, or call {tool} without cursor to start over")
    return offset


def example_view(example: Example, max_activation: float, before: int = 40, after: int = 10) -> ExampleView:
    """An example as text with the pivot wrapped in [[ ]], cut to ``before``/``after`` tokens."""
    tokens, p = example.tokens, example.pivot
    start, end = max(0, p - before), min(len(tokens), p + 1 + after)
    text = ("…" if start else "") + "".join(tokens[start:p]) + "[[" + tokens[p] + "]]" \
        + "".join(tokens[p + 1:end]) + ("…" if end < len(tokens) else "")
    important: list[str] = []
    if example.importances:
        ranked = sorted(((w, i) for i, w in enumerate(example.importances) if i != p and w > 0), reverse=True)
        important = [tokens[i] for w, i in ranked[:5] if i < len(tokens)]
    norm = example.activation / max_activation if max_activation > 0 else 0.0
    return ExampleView(text=text, pivot_token=tokens[p], activation=round(norm, 4),
                       raw_activation=round(example.activation, 4), split=example.split,
                       important_tokens=important)


def _hit(graph: NeuronGraph, repeated: bool, exact: bool) -> SearchHit:
    return SearchHit(
        id=graph.id, layer=graph.layer, neuron=graph.neuron,
        activating_tokens=list(graph.activating_tokens)[:HIT_TOKENS],
        context_tokens=list(graph.context_tokens)[:HIT_TOKENS],
        f1=None if (f1 := top_f1(graph)) is None else round(f1, 4),
        repeated_tokens=repeated_tokens(graph, exact=exact)[:HIT_TOKENS] if repeated else [],
    )


def _distinct(views: list[ExampleView]) -> list[ExampleView]:
    """Examples with different texts, first of each kept (pruning often leaves the same few tokens)."""
    seen: set[str] = set()
    return [v for v in views if not (v.text in seen or seen.add(v.text))]


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


def summary_text(s: GraphSummary) -> str:
    """Text lines for a graph summary."""
    acts = ", ".join(f"{_tok(t)} {v:.2f}" for t, v in list(s.activating_tokens.items())[:10])
    ctx = ", ".join(f"{_tok(t)} {v:.2f}" for t, v in list(s.context_tokens.items())[:10])
    return "\n".join([
        f"Activating tokens ({s.activating_total}): {acts or 'none'}",
        f"Context tokens ({s.context_total}): {ctx or 'none'}",
        f"Fidelity on held-out top examples: {_figures_line(s.fidelity)}",
        f"Fidelity with random negatives: {_figures_line(s.fidelity_with_negatives)}",
    ])


# --------------------------------------------------------------------- the service
class Service:
    """The tools' logic over a stores directory and a live backend.

    Args:
        stores_dir: where the stores are (created by the first build if missing).
        live: the model side; its ``default_model`` is the tools' default.
    """

    def __init__(self, stores_dir: Path, live: LiveBackend) -> None:
        self.catalog = Catalog(stores_dir, shapes=live.shape)  # lines outside the model are skipped
        self.live = live

    # ----------------------------------------------------------------- checks
    @property
    def default_model(self) -> str:
        return self.live.default_model

    def model(self, model: str | None) -> str:
        """The model a call is about: the named one, else the default."""
        if model is None or not model.strip():
            return self.default_model
        model = model.strip()
        if not _MODEL_NAME.match(model):
            raise ToolError(f"model {model[:60]!r} is not a model name; call list_models to see the models")
        return model

    def _call(self, tool: str, model: str, **args: object) -> str:
        """How to write a call to a tool, naming the model only where it is not the default."""
        parts = [f"{k}={v!r}" for k, v in args.items()]
        if model != self.default_model:
            parts.append(f"model={model!r}")
        return f"{tool}({', '.join(parts)})"

    def check_range(self, model: str, layer: int | None = None, neuron: int | None = None) -> None:
        """Reject a layer or neuron the model does not have (where its shape is known)."""
        shape = self.live.shape(model)
        if shape is None:
            return
        n_layers, d_mlp = shape
        if layer is not None and not 0 <= layer < n_layers:
            raise ToolError(f"layer {layer} is out of range: {model} has {n_layers} layers, "
                            f"0 to {n_layers - 1}")
        if neuron is not None and not 0 <= neuron < d_mlp:
            raise ToolError(f"neuron {neuron} is out of range: {model} has {d_mlp} neurons per layer, "
                            f"0 to {d_mlp - 1}")

    def _known_models(self) -> str:
        views = self.catalog.models()
        if not views:
            return f"no store in {self.catalog.directory} holds any graphs yet"
        return "stores here hold " + ", ".join(f"{v.model} ({_count(len(v), 'graph')})" for v in views)

    def view(self, model: str) -> ModelStores:
        """A model's merged stores.

        Raises:
            ToolError: where no store holds the model, saying whether it is unknown or just empty.
        """
        found = self.catalog.get(model)
        if found is not None:
            return found
        if model == self.default_model or self.live.shape(model) is not None:
            raise ToolError(f"No graphs of {model} in {self.catalog.directory} yet; call "
                            f"{self._call('build_graph', model, layer=0, neuron=0)} to build one "
                            "(any layer and neuron), or list_models to see what is stored.")
        raise ToolError(f"Unknown model or store {model!r}: {self._known_models()}. Call list_models, "
                        "or omit model to use the default.")

    def graph(self, model: str, layer: int, neuron: int) -> tuple[NeuronGraph, ModelStores]:
        """One neuron's stored graph.

        Raises:
            ToolError: for a layer or neuron out of range, an unknown model, or no graph yet.
        """
        self.check_range(model, layer, neuron)
        view = self.view(model)
        graph = view.get(layer, neuron)
        if graph is None:
            message = (f"No graph for {neuron_id(layer, neuron)} in store {model}; call "
                       f"{self._call('build_graph', model, layer=layer, neuron=neuron)} or search_graphs first.")
            layers = view.layers()
            if self.live.shape(model) is None and layer not in layers:
                # The model's shape is unknown here, so the store is the only guide to its range.
                message += f" (The store has graphs in layers {layers[0]}-{layers[-1]} only.)"
            raise ToolError(message)
        return graph, view

    @staticmethod
    def warnings(view: ModelStores) -> list[str]:
        return view.corrupt_reports()

    @staticmethod
    def _with_warnings(text: str, warnings: list[str]) -> str:
        return text + "".join(f"\nWarning: {w}" for w in warnings)

    # ----------------------------------------------------------------- list_models
    def list_models(self) -> tuple[str, ListModelsOutput]:
        views = {v.model: v for v in self.catalog.models()}
        names = sorted(set(views) | {self.default_model}, key=lambda m: (m != self.default_model, m))
        infos = []
        for name in names:
            view = views.get(name)
            shape = self.live.shape(name)
            note = self.live.availability(name)
            infos.append(ModelInfo(
                model=name, default=name == self.default_model,
                graphs=len(view) if view else 0, layers=view.layers() if view else [],
                n_layers=shape[0] if shape else None, d_mlp=shape[1] if shape else None,
                files=view.files if view else [],
                corrupt_lines=view.corrupt_lines if view else 0,
                corrupt=view.corrupt_reports() if view else [],
                can_build=note is None, build_note=note,
            ))
        out = ListModelsOutput(stores_dir=str(self.catalog.directory), models=infos,
                               problems=self.catalog.problems)
        lines = [f"Stores in {out.stores_dir}:"]
        for info in infos:
            shape = f"{info.n_layers} layers x {info.d_mlp} neurons" if info.n_layers else "shape unknown"
            layers = f"layers {info.layers[0]}-{info.layers[-1]}" if info.layers else "no graphs yet"
            build = "can build" if info.can_build else f"cannot build ({info.build_note})"
            lines.append(f"- {info.model}{' (default)' if info.default else ''}: {info.graphs} graphs, "
                         f"{layers}; {shape}; {build}")
            lines += [f"  Warning: {c}" for c in info.corrupt]
        lines += [f"Unreadable file: {p}" for p in out.problems]
        return "\n".join(lines), out

    # ----------------------------------------------------------------- reading
    def get_graph(self, model: str | None, layer: int, neuron: int) -> tuple[str, GraphDescription]:
        model = self.model(model)
        graph, view = self.graph(model, layer, neuron)
        base = summarize(graph)
        fid = graph.fidelity
        trie = graph.graph
        desc = GraphDescription(
            **base.model_dump(),
            hook=graph.hook, max_activation=round(graph.max_activation, 4),
            paths=len(trie), depth=trie.depth(),
            matching=f"{graph.matching.rule}, {'normalised' if graph.matching.normalized else 'exact'} tokens",
            baselines_f1={} if fid is None else {
                "token_lookup": fid.token_lookup.top.f1, "ngram_lookup": fid.ngram_lookup.top.f1},
            examples=_distinct([example_view(e, graph.max_activation, before=20, after=0) for e in graph.pruned])[:3],
        )
        lines = [f"{graph.id} of {model}: {desc.paths} paths, depth {desc.depth}, "
                 f"max activation {graph.max_activation:.3g} ({graph.hook})", summary_text(desc)]
        if desc.baselines_f1:
            lines.append("Baselines F1: " + ", ".join(f"{k} {_fmt(v)}" for k, v in desc.baselines_f1.items()))
        if desc.examples:
            lines.append("Pruned examples (activating token in [[ ]]):")
            lines += [f"- {e.text!r} -> {e.activation:.2f}" for e in desc.examples]
        lines.append("Next: top_activations for the full examples, predict_activations to test a "
                     "hypothesis, render_graph_dot to draw it.")
        return self._with_warnings("\n".join(lines), self.warnings(view)), desc

    def top_activations(self, model: str | None, layer: int, neuron: int, limit: int,
                        cursor: str | None) -> tuple[str, TopActivationsOutput]:
        model = self.model(model)
        graph, view = self.graph(model, layer, neuron)
        query = ["top_activations", model, layer, neuron, limit]
        offset = decode_cursor(cursor, query, "top_activations")
        examples = sorted(graph.examples, key=lambda e: -e.activation)
        page = examples[offset:offset + limit]
        end = offset + len(page)
        out = TopActivationsOutput(
            id=graph.id, model=model, max_activation=round(graph.max_activation, 4),
            examples=[example_view(e, graph.max_activation) for e in page], total=len(examples),
            next_cursor=encode_cursor(end, query) if end < len(examples) else None,
        )
        lines = [f"{graph.id} of {model}: examples {offset + 1}-{end} of {len(examples)} "
                 "(activating token in [[ ]], normalised activation):" if page else
                 f"{graph.id} of {model}: no stored examples on this page ({len(examples)} in all)."]
        lines += [f"{offset + i + 1}. {e.activation:.2f} [{e.split or '-'}] {e.text!r}"
                  for i, e in enumerate(out.examples)]
        if out.next_cursor:
            lines.append(f"More: call top_activations with cursor={out.next_cursor!r}.")
        return self._with_warnings("\n".join(lines), self.warnings(view)), out

    def search(self, model: str | None, activating: list[str], context: list[str], *, exact: bool,
               layer: int | None, min_f1: float | None, repeated: bool, limit: int,
               cursor: str | None) -> tuple[str, SearchOutput]:
        model = self.model(model)
        self.check_range(model, layer)
        view = self.view(model)
        query = ["search", model, activating, context, exact, layer, min_f1, repeated, limit]
        offset = decode_cursor(cursor, query, "search_graphs")
        found = view.index.search(activating, context, exact=exact, layer=layer, min_f1=min_f1,
                                  repeated=repeated)
        page = found[offset:offset + limit]
        end = offset + len(page)
        out = SearchOutput(model=model, results=[_hit(g, repeated, exact) for g in page], total=len(found),
                           next_cursor=encode_cursor(end, query) if end < len(found) else None,
                           warnings=self.warnings(view))
        asked = []
        if activating:
            asked.append(f"activating {_tokens(activating)}")
        if context:
            asked.append(f"context {_tokens(context)}")
        if repeated:
            asked.append("a token both activating and context")
        if layer is not None:
            asked.append(f"layer {layer}")
        if min_f1 is not None:
            asked.append(f"F1 >= {min_f1}")
        what = "; ".join(asked) or "all graphs"
        if not found:
            lines = [f"No graph of {model} matches ({what}) among {_count(len(view), 'graph')}. Try fewer tokens, "
                     "other spellings, no min_f1, or build_graph for neurons not yet in the store."]
        else:
            lines = [f"{_count(len(found), 'graph')} of {model} match ({what}); showing {offset + 1}-{end}, best F1 first:"]
            for hit in out.results:
                rep = f"; repeated {_tokens(hit.repeated_tokens, 4)}" if hit.repeated_tokens else ""
                lines.append(f"- {hit.id} F1 {_fmt(hit.f1)}: fires on {_tokens(hit.activating_tokens, 5)}; "
                             f"context {_tokens(hit.context_tokens, 5)}{rep}")
            if out.next_cursor:
                lines.append(f"More: call search_graphs with the same arguments and cursor={out.next_cursor!r}.")
        return self._with_warnings("\n".join(lines), out.warnings), out

    def similar(self, model: str | None, layer: int | None, neuron: int | None, *, threshold: float,
                mode: Literal["similar", "subset"], limit: int) -> tuple[str, SimilarOutput]:
        model = self.model(model)
        if neuron is not None and layer is None:
            raise ToolError("pass layer with neuron (or neither, to list the most similar pairs)")
        if neuron is not None:
            target, view = self.graph(model, layer, neuron)
            matches = similar_to(view.index, target, threshold=threshold, mode=mode, limit=limit)
            items = [SimilarItem(id=m.id, layer=m.layer, neuron=m.neuron, similar_to=target.id,
                                 activating_overlap=round(m.activating_overlap, 4),
                                 context_overlap=round(m.context_overlap, 4)) for m in matches]
            head = (f"Neurons of {model} whose behaviour {'contains' if mode == 'subset' else 'matches'} "
                    f"{target.id}'s (both overlaps >= {threshold}):")
            none = (f"No neuron among {_count(len(view), 'graph')} of {model} reaches overlap {threshold} with "
                    f"{target.id}; lower threshold (the paper uses 0.9) or build more graphs.")
            out_target: str | None = target.id
        else:
            if mode == "subset":
                raise ToolError("mode='subset' asks whether one neuron's behaviour is contained in "
                                "others': pass both layer and neuron")
            self.check_range(model, layer)
            view = self.view(model)
            pairs = similar_pairs(view.index, threshold=threshold, limit=limit, layer=layer)
            items = []
            for p in pairs:
                layer_b, neuron_b = parse_neuron_id(p.b)
                items.append(SimilarItem(id=p.b, layer=layer_b, neuron=neuron_b, similar_to=p.a,
                                         activating_overlap=round(p.activating_overlap, 4),
                                         context_overlap=round(p.context_overlap, 4)))
            scope = f"layer {layer}" if layer is not None else "the store"
            head = f"Most similar pairs of neurons in {scope} of {model} (both overlaps >= {threshold}):"
            none = (f"No two of the {_count(len(view), 'graph')} of {model} in {scope} reach overlap {threshold}; "
                    "lower threshold to see the closest pairs.")
            out_target = None
        out = SimilarOutput(model=model, target=out_target, mode=mode, threshold=threshold, results=items,
                            warnings=self.warnings(view))
        lines = [head] + [f"- {i.id} ~ {i.similar_to}: activating {i.activating_overlap:.2f}, "
                          f"context {i.context_overlap:.2f}" for i in items] if items else [none]
        return self._with_warnings("\n".join(lines), out.warnings), out

    def render(self, model: str | None, layer: int, neuron: int, max_nodes: int) -> tuple[str, RenderOutput]:
        model = self.model(model)
        graph, view = self.graph(model, layer, neuron)
        nodes = max_nodes
        dot = to_dot(graph, max_nodes=nodes)
        while len(dot) > MAX_DOT_CHARS and nodes > 1:
            # Too big to hand an agent: redraw with fewer nodes (strongest paths kept).
            nodes = max(1, nodes * 2 // 3)
            dot = to_dot(graph, max_nodes=nodes)
        counts = render_summary(graph, max_nodes=nodes)
        out = RenderOutput(id=graph.id, model=model, dot=dot, nodes=counts["nodes"],
                           shown_nodes=counts["shown_nodes"], paths=counts["paths"],
                           shown_paths=counts["shown_paths"], max_nodes=nodes)
        head = (f"Graphviz DOT for {graph.id} of {model}: {out.shown_nodes} of {out.nodes} nodes, "
                f"{out.shown_paths} of {out.paths} paths. Red: activating tokens; blue: context, "
                "darker = stronger; bold outline: a path ends there. Render with `dot -Tsvg`.")
        if nodes < max_nodes:
            head += f" Drawn with max_nodes={nodes} to stay under {MAX_DOT_CHARS} characters."
        elif out.shown_nodes < out.nodes:
            head += f" Pass a larger max_nodes (up to {MAX_NODES}) to draw more."
        return self._with_warnings(head + "\n\n" + dot, self.warnings(view)), out

    # ----------------------------------------------------------------- live
    def check_text(self, text: str) -> None:
        if not text or not text.strip():
            raise ToolError("text is empty; pass the text to run the neuron on, e.g. a sentence that "
                            "should make it fire and one that should not (one call each)")
        if len(text) > MAX_TEXT_CHARS:
            raise ToolError(f"text has {len(text)} characters, over the limit of {MAX_TEXT_CHARS}; "
                            "split it and call predict_activations once per part")

    def check_live(self, model: str, doing: str, instead: str) -> None:
        reason = self.live.availability(model)
        if reason is not None:
            raise ToolError(f"Cannot {doing} for {model} here: {reason}. {instead}")

    def predict(self, model: str, layer: int, neuron: int, text: str, compare: bool) -> tuple[str, PredictOutput]:
        """Predict (and with ``compare`` run the real neuron); slow, call from a worker thread."""
        graph, _ = self.graph(model, layer, neuron)
        self.check_text(text)
        actual: list[float] | None = None
        try:
            if compare:
                self.check_live(model, "run the real neuron", "Call predict_activations with compare=false "
                                "to see the graph's prediction alone.")
                tokens, raw = self.live.activations(model, layer, neuron, text)
                scale = graph.max_activation if graph.max_activation > 0 else 1.0
                actual = [round(a / scale, 4) for a in raw]
            else:
                tokens = self.live.tokens(model, text)
        except LiveError as exc:
            raise ToolError(f"Cannot run {model} on this text: {exc}") from exc
        if not tokens:
            raise ToolError("the text has no tokens; pass some words")
        predicted = [round(p, 4) for p in graph.predict(tokens)]
        agreement = Figures.of(score(actual, predicted)) if actual is not None else None
        rows = [TokenRow(index=i, token=t, predicted=predicted[i], actual=None if actual is None else actual[i])
                for i, t in enumerate(tokens)
                if predicted[i] >= FIRING_THRESHOLD or (actual is not None and actual[i] >= FIRING_THRESHOLD)]
        out = PredictOutput(id=graph.id, model=model, tokens=tokens, predicted=predicted, actual=actual,
                            agreement=agreement, firing=rows[:MAX_FIRING_ROWS])
        fires = [r for r in rows if r.predicted >= FIRING_THRESHOLD]
        lines = [f"{graph.id} on {len(tokens)} tokens: the graph predicts it fires (>= {FIRING_THRESHOLD}) on "
                 f"{len(fires)}" + (": " + ", ".join(f"{_tok(r.token)}@{r.index} {r.predicted:.2f}"
                                                     for r in fires[:20]) if fires else ".")]
        if actual is not None:
            real = [r for r in rows if r.actual is not None and r.actual >= FIRING_THRESHOLD]
            lines.append(f"The real neuron fires on {len(real)}" + (": " + ", ".join(
                f"{_tok(r.token)}@{r.index} {r.actual:.2f}" for r in real[:20]) if real else "."))
            peak = max(range(len(actual)), key=actual.__getitem__)
            lines.append(f"Strongest real activation: {_tok(tokens[peak])}@{peak} {actual[peak]:.2f}.")
            lines.append(f"Agreement: {_figures_line(agreement)}.")
            if agreement is not None and agreement.recall is None and not fires:
                lines.append("Neither fires: a good negative test. Try a text that should make it fire.")
        else:
            lines.append("Call again with compare=true to check this against the real neuron.")
        if len(rows) > MAX_FIRING_ROWS:
            lines.append(f"({len(rows)} firing tokens; the firing list keeps the first {MAX_FIRING_ROWS}, "
                         "the per-token arrays have all.)")
        return "\n".join(lines), out

    def existing(self, model: str, layer: int, neuron: int) -> NeuronGraph | None:
        view = self.catalog.get(model)
        return None if view is None else view.get(layer, neuron)

    def build(self, model: str, layer: int, neuron: int, rebuild: bool, *,
              progress: Progress | None = None, cancel: threading.Event | None = None) -> tuple[str, GraphSummary]:
        """Build (or fetch) one neuron's graph; slow, call from a worker thread."""
        self.check_range(model, layer, neuron)
        if not rebuild and (stored := self.existing(model, layer, neuron)) is not None:
            summary = summarize(stored)
            return (f"{stored.id} of {model} was already in the store (pass rebuild=true to build it again).\n"
                    + summary_text(summary)), summary
        self.check_live(model, "build graphs", "Search the stored graphs with search_graphs instead, or run "
                        "the server where the builder extra is installed.")
        path = self.catalog.writable_path(model)
        try:
            graphs = self.live.build(model, layer, [neuron], path, progress=progress, cancel=cancel)
        except BuildCancelled as exc:
            raise ToolError(f"Build of {neuron_id(layer, neuron)} was cancelled ({exc}); call build_graph "
                            "again to restart it.") from exc
        except LiveError as exc:
            raise ToolError(f"Cannot build {neuron_id(layer, neuron)} of {model}: {exc}") from exc
        graph = next((g for g in graphs if (g.layer, g.neuron) == (layer, neuron)), None)
        if graph is None:
            raise ToolError(f"the builder returned no graph for {neuron_id(layer, neuron)}; "
                            "check the server log, then call build_graph again")
        summary = summarize(graph, built=True)
        return (f"Built {graph.id} of {model} and added it to {path.name}.\n" + summary_text(summary)
                + "\nNext: get_graph or render_graph_dot to read it, predict_activations(compare=true) "
                  "to test it."), summary

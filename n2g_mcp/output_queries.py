"""The queries of the output side: what a neuron writes, which neurons write a token, what a
neuron's firing does when measured, and a unit's record for export.

- a neuron's promoted and suppressed tokens, which get_graph and top_activations add, are read by
  the resolver from the model's output-token file (``Resolver.output_tokens``, ``store/logitfile.py``);
- :meth:`OutputQueries.find_by_output`: the neurons whose lists hold given tokens (no torch);
- :meth:`OutputQueries.output_effects`: one neuron zeroed and raised on its own top windows,
  through the live model (``builder.probes.output`` behind ``n2g_mcp.live.LiveBackend``);
- :meth:`OutputQueries.export_neuron`: the unit's record in a Neuronpedia-like shape.
"""

from __future__ import annotations

from n2g_mcp import text
from n2g_mcp.limits import (
    EFFECT_SCALE,
    EFFECT_WINDOWS,
    EXPORT_WINDOWS,
    MAX_EFFECT_WINDOWS,
    MAX_LIMIT,
    MAX_STEER_SCALE,
    OUTPUT_SHOWN,
    SEARCH_PAGE,
)
from n2g_mcp.output_results import (
    ActivationRecord,
    ExplanationRecord,
    FindByOutputOutput,
    NeuronExport,
    OutputEffectsOutput,
    OutputHit,
    output_fields,
)
from n2g_mcp.resolve import Resolver
from store.errors import BadArgument, NotFound
from store.logitfile import LogitFile, Side, logits_filename
from store.models import hook_name
from store.names import keyed_id

HIT_OUTPUT_TOKENS = 5
"""Promoted and suppressed tokens a find_by_output hit lists."""


class OutputQueries(Resolver):
    """find_by_output, output_effects and export_neuron; see the module docstring."""

    # ----------------------------------------------------------------- find_by_output
    def _matches(self, found: LogitFile, token: str, side: Side, exact: bool,
                 model: str) -> dict[tuple[int, int], tuple[str, int, float]]:
        """Each neuron whose ``side`` list holds a spelling of ``token``: its best (spelling, rank, value)."""
        ids = found.token_ids(token, exact)
        if not ids:
            raise BadArgument(text.not_a_token(token, model, exact))
        best: dict[tuple[int, int], tuple[str, int, float]] = {}
        for layer, neuron, rank, value in found.neurons_with(ids, side):
            key = (layer, neuron)
            if key not in best or rank < best[key][1]:
                best[key] = (found.vocab[int(found.ids[side][layer, neuron, rank])], rank, value)
        return best

    def find_by_output(self, promotes: list[str] | None = None, suppresses: list[str] | None = None, *,
                       model: str | None = None, layer: int | None = None, exact: bool = False,
                       limit: int = SEARCH_PAGE, cursor: str | None = None) -> FindByOutputOutput:
        """The neurons whose output direction promotes all of ``promotes`` and suppresses all of
        ``suppresses`` (each among its top-k), strongest first."""
        model = self.model(model)
        promotes, suppresses = list(promotes or []), list(suppresses or [])
        if not promotes and not suppresses:
            raise BadArgument(text.NO_OUTPUT_TOKENS)
        if not 1 <= limit <= MAX_LIMIT:
            raise BadArgument(text.outside("limit", limit, 1, MAX_LIMIT, "results per page"))
        self.check_range(model, layer)
        found, problem = self.served_logit_file(model)
        if problem is not None:
            raise NotFound(problem)
        if found is None:
            raise NotFound(text.no_logits(model, logits_filename(model), str(self.catalog.directory)))
        query = ["find_by_output", model, promotes, suppresses, layer, exact, limit]
        offset = self.pager.decode(cursor, query, "find_by_output")
        asked = [(t, "promoted") for t in promotes] + [(t, "suppressed") for t in suppresses]
        matches = [self._matches(found, t, side, exact, model) for t, side in asked]  # type: ignore[arg-type]
        keys = set(matches[0]).intersection(*matches[1:])
        if layer is not None:
            keys = {k for k in keys if k[0] == layer}
        scan = self.scan_file(model)
        if scan is not None and scan.max_activation.shape != found.shape:
            scan = None  # a scan of another shape cannot say how strongly these neurons fire
        scored = []
        for key in keys:
            strength = sum(abs(m[key][2]) for m in matches) / len(matches)
            at_max = None if scan is None else strength * float(scan.max_activation[key])
            scored.append((-(at_max if at_max is not None else strength), key, strength, at_max))
        scored.sort()
        page = scored[offset:offset + limit]
        hits = []
        for _, (lay, n), strength, at_max in page:
            stored = self.hit(model, lay, n)
            hits.append(OutputHit(
                id=keyed_id(model, lay, n), layer=lay, neuron=n, matched=[m[(lay, n)][0] for m in matches],
                ranks=[m[(lay, n)][1] for m in matches], strength=strength, at_max=at_max,
                promoted=[t.token for t in found.tokens(lay, n, "promoted", HIT_OUTPUT_TOKENS)],
                suppressed=[t.token for t in found.tokens(lay, n, "suppressed", HIT_OUTPUT_TOKENS)],
                has_graph=stored is not None,
                activating_tokens=[] if stored is None else stored.activating_tokens[:HIT_OUTPUT_TOKENS],
                f1=None if stored is None else stored.f1))
        end = offset + len(page)
        return FindByOutputOutput(model=model, promotes=promotes, suppresses=suppresses, top_k=found.top_k,
                                  ranked_by="strength" if scan is None else "at_max", results=hits,
                                  total=len(scored), offset=offset,
                                  next_cursor=self.pager.encode(end, query) if end < len(scored) else None)

    # ----------------------------------------------------------------- output_effects
    def output_effects(self, model: str | None, layer: int, neuron: int, windows: int = EFFECT_WINDOWS,
                       scale: float = EFFECT_SCALE) -> OutputEffectsOutput:
        """The neuron zeroed and raised (``scale`` x its corpus max) at the pivots of its top
        ``windows`` corpus windows: the next-token change, beside the direct path."""
        model = self.model(model)
        self.check_range(model, layer, neuron)
        if not 1 <= windows <= MAX_EFFECT_WINDOWS:
            raise BadArgument(text.outside("windows", windows, 1, MAX_EFFECT_WINDOWS, "top windows to measure on"))
        if not abs(scale) <= MAX_STEER_SCALE:  # also refuses NaN
            raise BadArgument(text.outside("scale", scale, -MAX_STEER_SCALE, MAX_STEER_SCALE, text.SCALE_MEANING))
        scan = self.need_scan(model, "output_effects")
        spec = self.spec(model, "measure output effects", text.INSTEAD_OF_MEASURING)
        top_value = float(scan.max_activation[layer, neuron])
        top = scan.top(layer, neuron, limit=windows)
        if top_value <= 0 or not top:
            raise BadArgument(text.dead_neuron(keyed_id(model, layer, neuron), model))
        rows = [[int(t) for t in scan.windows[w.window][:w.pivot + 1]] for w in top]
        r = self.live.output_effects(spec, layer, neuron, rows, scale * top_value, OUTPUT_SHOWN)
        return OutputEffectsOutput(**r.model_dump(), id=keyed_id(model, layer, neuron), model=model, scale=scale,
                                   max_activation=top_value)

    # ----------------------------------------------------------------- export_neuron
    def export_neuron(self, model: str | None, layer: int, neuron: int,
                      examples: int = EXPORT_WINDOWS) -> NeuronExport:
        """The unit's record: top windows, output tokens, its graph as an explanation with scores."""
        model = self.model(model)
        self.check_range(model, layer, neuron)
        scan = self.scan_file(model)
        graph = self.stored(model, layer, neuron)
        if scan is None and graph is None:
            raise NotFound(text.nothing_to_export(model, keyed_id(model, layer, neuron),
                                                  self.build_call(model, layer, neuron)))
        output, _ = self.output_tokens(model, layer, neuron)
        if scan is not None:
            windows = [(w.tokens, w.pivot, w.activation) for w in scan.top(layer, neuron, limit=examples)]
            stats = scan.stats(layer, neuron)
            top, density = stats.max_activation, stats.density
            hook = hook_name(str(scan.meta["hook"]), layer)
        else:
            assert graph is not None
            stored, _ = self.examples(graph, graph.examples)
            windows = [(e.tokens, e.pivot, e.activation) for e in sorted(stored, key=lambda e: -e.activation)]
            windows = windows[:examples]
            top, density, hook = graph.max_activation, None, graph.hook
        activations = [ActivationRecord(tokens=tokens, maxValue=value, maxValueTokenIndex=pivot,
                                        values=[value if i == pivot else None for i in range(len(tokens))])
                       for tokens, pivot, value in windows]
        explanations = []
        if graph is not None:
            figures = graph.fidelity.n2g.top if graph.fidelity is not None else None
            explanations.append(ExplanationRecord(
                description=text.graph_explanation(graph.activating_tokens, graph.context_tokens),
                typeName="n2g-graph",
                scores={} if figures is None else {"precision": figures.precision, "recall": figures.recall,
                                                   "f1": figures.f1, "correlation": figures.correlation}))
        logits = logits_filename(model) if output is not None else None
        return NeuronExport(modelId=model, layer=layer, index=neuron, id=keyed_id(model, layer, neuron), hookName=hook,
                            maxActApprox=top, frac_firing=density, **output_fields(output),
                            activations=activations, explanations=explanations,
                            source=text.export_source(scan is not None, logits, graph is not None))

"""The short text summary of each tool's result (the structured result carries the same facts)."""


from __future__ import annotations

from collections.abc import Sequence

from n2g_mcp.outputs import (
    AblationOutput,
    FindNeuronsOutput,
    GraphDescription,
    GraphSummary,
    HypothesisOutput,
    InductionOutput,
    ListModelsOutput,
    PredictOutput,
    RenderOutput,
    SearchOutput,
    SimilarOutput,
    SteerOutput,
    TopActivationsOutput,
)
from n2g_mcp.text.output_side import output_line
from n2g_mcp.text.pieces import count, figures, number, tok, tokens, with_warnings
from n2g_mcp.text.refusals import WEAK_COPY, no_stores
from store.metrics import FIRING_THRESHOLD
from store.similarity import PAPER_THRESHOLD


# --------------------------------------------------------------------- list_models
def list_models(out: ListModelsOutput) -> str:
    lines = [f"Stores in {out.stores_dir}:"]
    for info in out.models:
        shape = f"{info.n_layers} layers x {info.d_mlp} neurons" if info.n_layers else "shape unknown"
        layers = f"layers {info.layers[0]}-{info.layers[-1]}" if info.layers else "no graphs yet"
        build = "can build" if info.can_build else f"cannot build ({info.build_note})"
        so_far = " so far (still indexing: call again in a minute for all)" if info.partial else ""
        lines.append(f"- {info.model}{' (default)' if info.default else ''}: {info.graphs} graphs{so_far}, "
                     f"{layers}; {shape}; {build}")
        lines += [f"  Warning: {c}" for c in info.corrupt]
    lines += [f"Unreadable file: {p}" for p in out.problems]
    if not out.problems and not any(info.graphs or info.files for info in out.models):
        lines.append(no_stores(out.stores_dir))
    return "\n".join(lines)


# --------------------------------------------------------------------- graphs
def graph_summary(s: GraphSummary) -> str:
    """Tokens and fidelity of a graph, four lines."""
    acts = ", ".join(f"{tok(t)} {v:.2f}" for t, v in list(s.activating_tokens.items())[:10])
    ctx = ", ".join(f"{tok(t)} {v:.2f}" for t, v in list(s.context_tokens.items())[:10])
    return "\n".join([
        f"Activating tokens ({s.activating_total}): {acts or 'none'}",
        f"Context tokens ({s.context_total}): {ctx or 'none'}",
        f"Fidelity on held-out top examples: {figures(s.fidelity)}",
        f"Fidelity with random negatives: {figures(s.fidelity_with_negatives)}",
    ])


def get_graph(d: GraphDescription) -> str:
    lines = [f"{d.id} of {d.model}: {d.paths} paths, depth {d.depth}, max activation {d.max_activation:.3g} "
             f"({d.hook})", graph_summary(d)]
    if d.baselines_f1:
        lines.append("Baselines F1: " + ", ".join(f"{k} {number(v)}" for k, v in d.baselines_f1.items()))
    if d.examples:
        lines.append("Pruned examples (activating token in [[ ]]):")
        lines += [f"- {e.text!r} -> {e.activation:.2f}" for e in d.examples]
    if (writes := output_line(d.output)) is not None:
        lines.append(writes)
    lines.append("Next: top_activations for the full examples, predict_activations to test a hypothesis, "
                 "render_graph_dot to draw it.")
    return with_warnings("\n".join(lines), d.warnings)


def top_activations(out: TopActivationsOutput) -> str:
    first, end = out.offset, out.offset + len(out.examples)
    if out.examples:
        lines = [f"{out.id} of {out.model}: examples {first + 1}-{end} of {out.total} "
                 "(activating token in [[ ]], normalised activation):"]
    else:
        lines = [f"{out.id} of {out.model}: no stored examples on this page ({out.total} in all)."]
    if out.stats is not None:
        st = out.stats
        lines.insert(1, f"Fires on {st.density:.3%} of corpus tokens; raw quantiles "
                     + ", ".join(f"{k} {v:.3g}" for k, v in st.quantiles.items())
                     + f"; max {st.max_activation:.3g}.")
    lines += [f"{first + i + 1}. {e.activation:.2f} [{e.split or out.source}] {e.text!r}" for i, e in enumerate(out.examples)]
    if (writes := output_line(out.output)) is not None:
        lines.append(writes)
    if out.next_cursor:
        lines.append(f"More: call top_activations with cursor={out.next_cursor!r}.")
    return with_warnings("\n".join(lines), out.warnings)


def build(out: GraphSummary) -> str:
    if not out.built:
        return (f"{out.id} of {out.model} was already in the store (pass rebuild=true to build it again).\n"
                + graph_summary(out))
    return (f"Built {out.id} of {out.model} and added it to the store.\n" + graph_summary(out)
            + "\nNext: get_graph or render_graph_dot to read it, predict_activations(compare=true) to test it.")


# --------------------------------------------------------------------- search
def search(out: SearchOutput, *, activating: Sequence[str], context: Sequence[str], repeated: bool,
           layer: int | None, min_f1: float | None) -> str:
    asked = []
    if activating:
        asked.append(f"activating {tokens(activating)}")
    if context:
        asked.append(f"context {tokens(context)}")
    if repeated:
        asked.append("a token both activating and context")
    if layer is not None:
        asked.append(f"layer {layer}")
    if min_f1 is not None:
        asked.append(f"F1 >= {min_f1}")
    what = "; ".join(asked) or "all graphs"
    if not out.total:
        lines = [f"No graph of {out.model} matches ({what}) among {count(out.searched, 'graph')}. Try fewer "
                 "tokens, other spellings, no min_f1, or build_graph for neurons not yet in the store."]
    else:
        end = out.offset + len(out.results)
        order = ("those the activating tokens explain most first (their activation / the graph's "
                 "strongest), then best F1" if activating else "best F1 first")
        lines = [f"{count(out.total, 'graph')} of {out.model} match ({what}); showing {out.offset + 1}-{end}, "
                 f"{order}:"]
        for hit in out.results:
            rep = f"; repeated {tokens(hit.repeated_tokens, 4)}" if hit.repeated_tokens else ""
            share = f", query at {hit.explained:.2f} of its peak" if hit.explained is not None else ""
            lines.append(f"- {hit.id} F1 {number(hit.f1)}{share}: fires on {tokens(hit.activating_tokens, 5)}; "
                         f"context {tokens(hit.context_tokens, 5)}{rep}")
        if out.next_cursor:
            lines.append(f"More: call search_graphs with the same arguments and cursor={out.next_cursor!r}.")
    return with_warnings("\n".join(lines), out.warnings)


# --------------------------------------------------------------------- similar
def similar(out: SimilarOutput) -> str:
    graphs = count(out.compared, "graph")
    if out.target is not None:
        verb = "contains" if out.mode == "subset" else "matches"
        head = f"Neurons of {out.model} whose behaviour {verb} {out.target}'s (both overlaps >= {out.threshold}):"
        none = (f"No neuron among {graphs} of {out.model} reaches overlap {out.threshold} with {out.target}; "
                f"lower threshold (the paper uses {PAPER_THRESHOLD}) or build more graphs.")
    else:
        scope = f"layer {out.layer}" if out.layer is not None else "the store"
        head = f"Most similar pairs of neurons in {scope} of {out.model} (both overlaps >= {out.threshold}):"
        none = (f"No two of the {graphs} of {out.model} in {scope} reach overlap {out.threshold}; lower "
                "threshold to see the closest pairs.")
    if not out.results:
        return with_warnings(none, out.warnings)
    lines = [head] + [f"- {i.id} ~ {i.similar_to}: activating {i.activating_overlap:.2f}, "
                      f"context {i.context_overlap:.2f}" for i in out.results]
    return with_warnings("\n".join(lines), out.warnings)


# --------------------------------------------------------------------- render
def render(out: RenderOutput, *, max_dot_chars: int, max_nodes_allowed: int, image_note: str | None) -> str:
    head = (f"Graphviz DOT for {out.id} of {out.model}: {out.shown_nodes} of {out.nodes} nodes, "
            f"{out.shown_paths} of {out.paths} paths. Red: activating tokens; blue: context, darker = "
            "stronger; bold outline: a path ends there. Render with `dot -Tsvg`.")
    if out.max_nodes < out.requested_max_nodes:
        head += f" Drawn with max_nodes={out.max_nodes} to stay under {max_dot_chars} characters."
    elif out.shown_nodes < out.nodes:
        head += f" Pass a larger max_nodes (up to {max_nodes_allowed}) to draw more."
    if image_note:
        head += " " + image_note
    return with_warnings(head + "\n\n" + out.dot, out.warnings)


def image_attached(kind: str) -> str:
    return f"The drawing is attached as {kind.upper()}."


def graphviz_missing(kind: str) -> str:
    return (f"No {kind.upper()} attached: Graphviz `dot` is not installed on the server (install it with "
            "`apt-get install graphviz`, or `brew install graphviz`); render the DOT text yourself instead.")


def graphviz_failed(kind: str, reason: str) -> str:
    return f"No {kind.upper()} attached: Graphviz failed ({reason}); the DOT text is still valid above."


# --------------------------------------------------------------------- predict
def predict(out: PredictOutput, *, max_rows: int) -> str:
    fires = [r for r in out.firing if r.predicted >= FIRING_THRESHOLD]
    lines = [f"{out.id} on {len(out.tokens)} tokens: the graph predicts it fires (>= {FIRING_THRESHOLD}) on "
             f"{len(fires)}" + (": " + ", ".join(f"{tok(r.token)}@{r.index} {r.predicted:.2f}"
                                                 for r in fires[:20]) if fires else ".")]
    if out.actual is not None:
        real = [r for r in out.firing if r.actual is not None and r.actual >= FIRING_THRESHOLD]
        lines.append(f"The real neuron fires on {len(real)}" + (": " + ", ".join(
            f"{tok(r.token)}@{r.index} {r.actual:.2f}" for r in real[:20]) if real else "."))
        peak = max(range(len(out.actual)), key=out.actual.__getitem__)
        lines.append(f"Strongest real activation: {tok(out.tokens[peak])}@{peak} {out.actual[peak]:.2f}.")
        lines.append(f"Agreement: {figures(out.agreement)}.")
        if out.agreement is not None and out.agreement.recall is None and not fires:
            lines.append("Neither fires: a good negative test. Try a text that should make it fire.")
    else:
        lines.append("Call again with compare=true to check this against the real neuron.")
    if out.firing_total > max_rows:
        lines.append(f"({out.firing_total} firing tokens; the firing list keeps the first {max_rows}, "
                     "the per-token arrays have all.)")
    return "\n".join(lines)



# --------------------------------------------------------------------- the probes
def find_neurons(out: FindNeuronsOutput) -> str:
    lines = [f"Neurons of {out.model} most active at token {out.position} {tok(out.token)} "
             f"(layers {out.layers[0]}-{out.layers[-1]}; activation / the neuron's corpus max):"]
    for h in out.results:
        graph = (f"graph: {tokens(h.activating_tokens, 4)}, F1 {number(h.f1)}" if h.has_graph
                 else "no graph (build_graph builds one)")
        lines.append(f"- {h.id} {h.activation:.2f} (raw {h.raw_activation:.3g}); {graph}")
    lines.append("Next: top_activations or get_graph on a hit; test_hypothesis to check what it fires on.")
    return "\n".join(lines)


def induction(out: InductionOutput) -> str:
    seeds = ", ".join(map(str, out.seeds or [out.seed]))
    lines = [f"Induction probe on {out.model}: {out.sequences} random sequences of {out.length} token ids per seed "
             f"(seeds {seeds}), each repeated; layers {out.layers[0]}-{out.layers[-1]}, {out.seconds:.1f} s."]
    if out.loss_first_copy is not None and out.loss_second_copy is not None:
        copies = "the model copies" if out.loss_second_copy < 0.5 * out.loss_first_copy else WEAK_COPY
        lines.append(f"Model's loss: {out.loss_first_copy:.2f} nats on the first copy, {out.loss_second_copy:.2f} "
                     f"on the second ({copies}).")
    lines.append("Score = rise: mean activation (share of corpus max, clipped to [0, 1]) on the second copy "
                 "minus the first; Cohen's d and firing rates (>= 0.5 of corpus max) after:")
    lines += [f"- {h.id} rise {h.score:.2f} (d {h.cohens_d:.2f}; fires first {h.first:.2f}, second "
              f"{h.second:.2f}; mean {h.mean_first:.2f} -> {h.mean_second:.2f})"
              + ("" if h.has_graph else ", no graph")
              for h in out.results[:15]]
    if len(out.results) > 15:
        lines.append(f"... {len(out.results) - 15} more in the structured results.")
    lines.append("Next: ablate_neurons on the top candidates (each=true for each one's own share), "
                 "steer_neurons to see what they write, top_activations to see what each reads.")
    return "\n".join(lines)


def ablation(out: AblationOutput) -> str:
    lines = [f"Ablated {count(len(out.neurons), 'neuron')} of {out.model} ({out.mode}) on {out.measured_on}, "
             f"{out.tokens_measured} tokens: loss {out.loss_clean:.3f} -> {out.loss_ablated:.3f} "
             f"(delta {out.delta:+.3f} nats)."]
    if out.loss_first_copy is not None:
        lines.append(f"Intact, the model's loss is {out.loss_first_copy:.2f} on the first copies and "
                     f"{out.loss_clean:.2f} on the second.")
    if out.control_delta is not None:
        ratio = (f", {out.delta / out.control_delta:.1f}x the control" if out.control_delta > 1e-6
                 else "")
        lines.append(f"Control ({count(len(out.control_neurons), 'random neuron')} of the same layers): "
                     f"delta {out.control_delta:+.3f}{ratio}.")
    if out.each:
        lines.append("Each alone: " + ", ".join(f"{e.id} {e.delta:+.3f}" for e in out.each[:10])
                     + (f" ... ({len(out.each) - 10} more)" if len(out.each) > 10 else ""))
    if out.top_changes:
        lines.append("Most changed: " + "; ".join(
            f"{tok(c.token)} at {c.position} {c.loss_clean:.2f}->{c.loss_ablated:.2f}" for c in out.top_changes[:5]))
    return "\n".join(lines)


def steer(out: SteerOutput) -> str:
    lines = [f"Steered {count(len(out.neurons), 'neuron')} of {out.model} at {out.scale:g} x corpus max, "
             f"prompt of {out.prompt_tokens} tokens, up to {out.max_new_tokens} new tokens (greedy):",
             f"- clean:   {out.clean_text!r}", f"- steered: {out.steered_text!r}",
             "The continuations are the same." if out.first_difference is None
             else f"They differ from generated token {out.first_difference} on."]
    if out.changes:
        lines.append("Predictions changed most: " + "; ".join(
            f"after {tok(c.token)} at {c.position} {tok(c.clean_next)} {c.clean_prob:.2f} -> "
            f"{tok(c.steered_next)} {c.steered_prob:.2f} (KL {c.kl:.2f})" for c in out.changes[:5]))
    return "\n".join(lines)


def hypothesis(out: HypothesisOutput) -> str:
    lines = [f"{out.id} of {out.model}, claim: fires on tokens matched by {out.kind} {out.pattern!r} "
             f"(matches in {out.corpus_windows_matched} corpus windows). Overall: {figures(out.overall)}."]
    lines += [f"- {s.set} ({s.windows} windows, {s.firing} firing, {s.claimed} claimed): {figures(s.figures)}"
              for s in out.sets]
    if out.false_positives:
        lines.append("Claimed but silent: " + "; ".join(f"{m.text!r} ({m.activation:.2f})"
                                                          for m in out.false_positives[:3]))
    if out.false_negatives:
        lines.append("Fires but unclaimed: " + "; ".join(f"{m.text!r} ({m.activation:.2f})"
                                                           for m in out.false_negatives[:3]))
    return "\n".join(lines)

"""The short text summary of each tool's result (the structured result carries the same facts)."""


from __future__ import annotations

import math
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
    TextPrediction,
    TopActivationsOutput,
)
from n2g_mcp.text.explain import via
from n2g_mcp.text.neighbours import coactivation
from n2g_mcp.text.output_side import output_line
from n2g_mcp.text.pieces import count, figures, number, ordinal, tok, tokens, with_warnings
from n2g_mcp.text.refusals import STORES_FOLDER, WEAK_COPY, no_stores
from store.metrics import FIRING_THRESHOLD
from store.probes import NIL_EFFECT
from store.similarity import PAPER_THRESHOLD


# --------------------------------------------------------------------- list_models
def list_models(out: ListModelsOutput) -> str:
    where = out.stores_dir or STORES_FOLDER
    lines = [f"Stores in {where}:"]
    for info in out.models:
        shape = f"{info.n_layers} layers x {info.d_mlp} neurons" if info.n_layers else "shape unknown"
        layers = f"layers {info.layers[0]}-{info.layers[-1]}" if info.layers else "no graphs yet"
        build = "can build" if info.can_build else f"cannot build ({info.build_note})"
        so_far = " so far (still indexing: call again in a minute for all)" if info.partial else ""
        lines.append(f"- {info.model}{' (default)' if info.default else ''}: {info.graphs} graphs{so_far}, "
                     f"{layers}; {shape}; {build}")
        for d in info.dictionaries:
            span = f"layers {', '.join(map(str, d.layers))}" if d.layers else "no graphs yet"
            lines.append(f"  - units={d.units!r} (a dictionary, {d.d_mlp or '?'} latents a layer): {d.graphs} "
                         f"graphs, {span}")
            lines += [f"    L{layer}: FVU {q.get('fvu')}, L0 {q.get('l0')}, dead {q.get('dead')}/{q.get('latents')}, "
                      f"loss {q.get('loss_clean')} clean -> {q.get('loss_spliced')} spliced ({q.get('recovered')} "
                      "of the zeroed loss recovered)" for layer, q in (d.quality or {}).items()]
        lines += [f"  Warning: {c}" for c in info.corrupt]
    lines += [f"Unreadable file: {p}" for p in out.problems]
    if not out.problems and not any(info.graphs or info.files for info in out.models):
        lines.append(no_stores(where))
    return "\n".join(lines)


# --------------------------------------------------------------------- graphs
def graph_summary(s: GraphSummary) -> str:
    """Tokens and fidelity of a graph, five lines (six with ordinary-text figures), the first in words."""
    acts = ", ".join(f"{tok(t)} {v:.2f}" for t, v in list(s.activating_tokens.items())[:10])
    ctx = ", ".join(f"{tok(t)} {v:.2f}" for t, v in list(s.context_tokens.items())[:10])
    return "\n".join([
        f"In words: {s.id} {s.description}." if s.description else f"{s.id}:",
        f"Activating tokens ({s.activating_total}, activation / the neuron's max): {acts or 'none'}",
        f"Context tokens ({s.context_total}, importance: share of the activation lost when the token is "
        f"masked; above 1, masking drives it below zero): {ctx or 'none'}",
        f"Fidelity on held-out top examples: {figures(s.fidelity)}",
        f"Fidelity with random negatives: {figures(s.fidelity_with_negatives)}",
        *([] if (o := s.fidelity_ordinary_text) is None else [
            f"On ordinary text (held-out documents, every token): {figures(o.n2g.tokens)}; "
            f"token-lookup floor: {figures(o.floor.tokens)}"]),
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
    if d.viewer_url:
        lines.append(f"A person can see it at {d.viewer_url} (the viewer: `n2g-mcp view`).")
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
           layer: int | None, min_f1: float | None, words: Sequence[str] = (),
           min_ordinary_f1: float | None = None) -> str:
    asked = []
    if activating:
        asked.append(f"activating {tokens(activating)}")
    if context:
        asked.append(f"context {tokens(context)}")
    if words:
        asked.append(f"words {tokens(words)} in either role")
    if repeated:
        asked.append("a repeat path, or a token both activating and context")
    if layer is not None:
        asked.append(f"layer {layer}")
    if min_f1 is not None:
        asked.append(f"F1 >= {min_f1}")
    if min_ordinary_f1 is not None:
        asked.append(f"F1 on ordinary text >= {min_ordinary_f1}")
    what = "; ".join(asked) or "all graphs"
    if not out.total:
        lines = [f"No graph of {out.model} matches ({what}) among {count(out.searched, 'graph')}. Try fewer "
                 "tokens, other spellings, no min_f1, or build_graph for neurons not yet in the store."]
    else:
        end = out.offset + len(out.results)
        order = ("those the activating tokens explain most first (their activation / the graph's "
                 "strongest), then best F1" if activating else "best F1 first")
        if repeated:
            order = "repeat paths ('<repeat>') first, then " + order
        lines = [f"{count(out.total, 'graph')} of {out.model} match ({what}); showing {out.offset + 1}-{end}, "
                 f"{order}:"]
        for hit in out.results:
            rep = f"; repeated {tokens(hit.repeated_tokens, 4)}" if hit.repeated_tokens else ""
            share = f", query at {hit.explained:.2f} of its peak" if hit.explained is not None else ""
            ordinary = ("" if hit.ordinary_f1 is None and hit.ordinary_r is None else
                        f" (ordinary text: F1 {number(hit.ordinary_f1)}, r {number(hit.ordinary_r)})")
            lines.append(f"- {hit.id} F1 {number(hit.f1)}{ordinary}{share}: fires on "
                         f"{tokens(hit.activating_tokens, 5, hit.activating_total)}; "
                         f"context {tokens(hit.context_tokens, 5, hit.context_total)}{rep}")
        if out.next_cursor:
            lines.append(f"More: call search_graphs with the same arguments and cursor={out.next_cursor!r}.")
    return with_warnings("\n".join(lines), out.warnings)


# --------------------------------------------------------------------- similar
def _overlapping(out: SimilarOutput) -> str:
    """What the results are, in words that follow the threshold: "similar" only at the paper's."""
    if out.mode == "subset":
        if out.threshold >= PAPER_THRESHOLD:
            return f"whose behaviour contains {out.target}'s (its token sets contained >= {out.threshold})"
        return f"containing at least {out.threshold:.2f} of {out.target}'s token sets"
    if out.threshold >= PAPER_THRESHOLD:
        return f"whose behaviour matches {out.target}'s (both overlaps >= {out.threshold})"
    return (f"overlapping {out.target}'s token sets by at least {out.threshold:.2f} (activating and context; "
            f"the paper calls neurons similar from {PAPER_THRESHOLD})")


def _more_graphs(out: SimilarOutput) -> str:
    """Whether building could find more: not where every neuron of the model has a graph."""
    if out.neurons is not None and out.compared >= out.neurons:
        return f"Every neuron of {out.model} has a graph here: no neuron is left out of the comparison."
    built = f" ({out.compared} of {out.neurons} neurons have graphs)" if out.neurons else ""
    return f"build_graph for neurons not yet in the store{built} may find others."


def similar(out: SimilarOutput) -> str:
    coactive = [] if out.coactivation is None or out.target is None else coactivation(out.coactivation, out.target)
    if out.by == "coactivation":
        return with_warnings("\n".join(coactive), out.warnings)
    graphs = count(out.compared, "graph")
    if out.target is not None:
        head = f"Neurons of {out.model} {_overlapping(out)}:"
        none = f"No neuron among {graphs} of {out.model} reaches overlap {out.threshold} with {out.target}."
        if out.nearest is not None:
            n = out.nearest
            floor = math.floor(min(n.activating_overlap, n.context_overlap) * 100) / 100  # a threshold it passes
            none += (f" The nearest is {n.id}: activating overlap {n.activating_overlap:.2f}, context "
                     f"{n.context_overlap:.2f} (threshold={floor:.2f} lists it and any as close).")
        else:
            none += " No graph shares an activating token with it."
        none += " " + _more_graphs(out)
    else:
        scope = f"layer {out.layer}" if out.layer is not None else "the store"
        alike = ("most similar pairs of neurons" if out.threshold >= PAPER_THRESHOLD
                 else f"pairs of neurons overlapping by at least {out.threshold:.2f} (the paper calls "
                 f"{PAPER_THRESHOLD} similar)")
        head = f"The {alike} in {scope} of {out.model} (both overlaps >= {out.threshold}), closest first:"
        none = (f"No two of the {graphs} of {out.model} in {scope} reach overlap {out.threshold}; lower "
                "threshold to see the closest pairs.")
    lines = [head] + [f"- {i.id} ~ {i.similar_to}: activating {i.activating_overlap:.2f}, "
                      f"context {i.context_overlap:.2f}" for i in out.results] if out.results else [none]
    return with_warnings("\n".join(lines + coactive), out.warnings)


# --------------------------------------------------------------------- render
def render(out: RenderOutput, *, max_dot_chars: int, max_nodes_allowed: int, image_note: str | None) -> str:
    head = (f"Graphviz DOT for {out.id} of {out.model}: {out.shown_nodes} of {out.nodes} nodes, "
            f"{out.shown_paths} of {out.paths} paths. Red: activating tokens, numbered by activation (share "
            "of the max); blue: context, numbered by importance (1 - activation with it masked / activation; "
            "above 1, masking drives it below zero); darker = stronger; bold outline: a path ends there; "
            "'␣' is a leading space; the drawing carries this legend. Render with `dot -Tsvg`.")
    if out.max_nodes < out.requested_max_nodes:
        head += f" Drawn with max_nodes={out.max_nodes} to stay under {max_dot_chars} characters."
    elif out.shown_nodes < out.nodes:
        head += f" Pass a larger max_nodes (up to {max_nodes_allowed}) to draw more."
    if image_note:
        head += " " + image_note
    return with_warnings(head + "\n\n" + out.dot, out.warnings)


def image_attached(kind: str) -> str:
    return f"The drawing is attached as {kind.upper()}."


def picture_failed(kind: str, reason: str) -> str:
    return f"No {kind.upper()} attached ({reason}); the DOT text above is still valid (render it with `dot -Tsvg`)."


# --------------------------------------------------------------------- predict
def _verdict(out: TextPrediction, predicted: int, real: int | None) -> str | None:
    """The line that reads the result against what the caller said the text tests (``expect``):
    the real neuron where compared, else the graph. Without ``expect``, only the fact that
    neither fires, with no guess at what the text was for."""
    if out.expect is None:
        return "Neither the graph nor the real neuron fires on this text." if real == 0 == predicted else None
    fired = real if real is not None else predicted
    did = ((f"the real neuron fires on {count(fired, 'token')}" if fired else "the real neuron stays silent")
           if real is not None else
           (f"the graph predicts firing on {count(fired, 'token')}" if fired else "the graph predicts silence"))
    if out.expect == "fire":
        line = f"As expected, {did}." if fired else f"Expected to fire, but {did}: this text does not bear it out."
        if real and not predicted:
            line += " The graph predicts none of it: the graph misses this case."
    else:
        line = f"As expected, {did}: the negative test holds." if not fired else \
            f"Expected silence, but {did}: a counterexample."
        if real == 0 and predicted:
            line += f" The graph predicts firing on {count(predicted, 'token')}: false positives of the graph."
    if real is None:
        line += " compare=true checks the real neuron."
    return line


def predict(out: PredictOutput, *, max_rows: int) -> str:
    if out.results:
        lines = [f"{out.id} on {len(out.results)} texts:"]
        for i, r in enumerate(out.results):
            lines.append(f"Text {i + 1} ({len(r.tokens)} tokens): "
                         + "\n  ".join(_predicted(r, max_rows, hint=False)))
        if out.agreement is not None:
            lines.append(f"Agreement over all texts: {figures(out.agreement)}.")
        elif out.expect is None:
            lines.append("Call again with compare=true to check these against the real neuron.")
        return "\n".join(lines)
    return "\n".join([f"{out.id} on {len(out.tokens)} tokens: " + "\n".join(_predicted(out, max_rows))])


def _predicted(out: TextPrediction, max_rows: int, hint: bool = True) -> list[str]:
    """What the graph predicts on one text, why, (with compare) what the neuron did, and (with
    expect) whether that bears out the test."""
    # Counted on the per-token arrays: the firing list is capped.
    predicted = sum(p >= FIRING_THRESHOLD for p in out.predicted)
    fires = [r for r in out.firing if r.predicted >= FIRING_THRESHOLD]
    lines = [f"the graph predicts it fires (>= {FIRING_THRESHOLD}) on {predicted}"
             + (": " + ", ".join(f"{tok(r.token)}@{r.index} {r.predicted:.2f}{via(r.path)}"
                                 for r in fires[:20]) if fires else ".")]
    real_count = None
    if out.actual is not None:
        real = [r for r in out.firing if r.actual is not None and r.actual >= FIRING_THRESHOLD]
        real_count = sum(a >= FIRING_THRESHOLD for a in out.actual)
        lines.append(f"The real neuron fires on {real_count}" + (": " + ", ".join(
            f"{tok(r.token)}@{r.index} {r.actual:.2f}" for r in real[:20]) if real else "."))
        peak = max(range(len(out.actual)), key=out.actual.__getitem__)
        lines.append(f"Strongest real activation: {tok(out.tokens[peak])}@{peak} {out.actual[peak]:.2f}.")
        lines.append(f"Agreement: {figures(out.agreement)}.")
    verdict = _verdict(out, predicted, real_count)
    if verdict:
        lines.append(verdict)
    if out.actual is None and out.expect is None and hint:
        lines.append("Call again with compare=true to check this against the real neuron.")
    if out.firing_total > max_rows:
        lines.append(f"({out.firing_total} firing tokens; the firing list keeps the first {max_rows}, "
                     "the per-token arrays have all.)")
    return lines


# --------------------------------------------------------------------- the probes
def find_neurons(out: FindNeuronsOutput) -> str:
    lines = [f"Neurons of {out.model} most active at token {out.position} {tok(out.token)} "
             f"(layers {out.layers[0]}-{out.layers[-1]}; activation / the neuron's corpus max):"]
    for h in out.results:
        graph = (f"graph: {tokens(h.activating_tokens, 4, h.activating_total)}, F1 {number(h.f1)}" if h.has_graph
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


def _controls(out: AblationOutput) -> str:
    """The ablation read against its random draws: their mean and spread, and its rank."""
    n = len(out.neurons)
    line = (f"Controls: {count(out.control_draws, 'draw')} of {count(n, 'random neuron')} of the same layers: "
            f"mean delta {out.control_delta:+.3f}")
    if out.control_spread is not None:
        line += (f", sd {out.control_spread:.3f}, from {min(out.control_deltas):+.3f} to "
                 f"{max(out.control_deltas):+.3f}")
    rank = out.rank_among_controls
    if rank == 1:
        line += f". The ablation's delta exceeds every draw's (rank 1 of {out.control_draws + 1})"
    else:
        line += (f". The ablation's delta ranks {ordinal(rank or 0)} of {out.control_draws + 1}: "
                 f"{count((rank or 1) - 1, 'draw')} of random neurons moved the loss as much or more")
    if out.control_spread:
        line += f", {(out.delta - out.control_delta) / out.control_spread:+.1f} sd from their mean"
    return line + "."


def _alone(out: AblationOutput) -> list[str]:
    """Each neuron's own delta, and the candidates that carry nothing alone."""
    lines = ["Each alone: " + ", ".join(f"{e.id} {e.delta:+.3f}" for e in out.each[:10])
             + (f" ... ({len(out.each) - 10} more)" if len(out.each) > 10 else "")]
    if out.no_effect:
        flat = [e for e in out.each if e.id in out.no_effect]
        flat.sort(key=lambda e: e.given)
        best = out.each[0]
        lines.append(f"Nil or negative alone (<= {NIL_EFFECT} nats): " + ", ".join(
            f"{e.id} (given {ordinal(e.given)}) {e.delta:+.3f}" for e in flat[:8])
            + (f" ... ({len(flat) - 8} more)" if len(flat) > 8 else "")
            + (f"; the largest own delta is {best.id}'s (given {ordinal(best.given)}), {best.delta:+.3f}."
               if best.id not in out.no_effect else "; none of them moves the loss alone."))
    return lines


def ablation(out: AblationOutput) -> str:
    lines = [f"Ablated {count(len(out.neurons), 'neuron')} of {out.model} ({out.mode}) on {out.measured_on}, "
             f"{out.tokens_measured} tokens: loss {out.loss_clean:.3f} -> {out.loss_ablated:.3f} "
             f"(delta {out.delta:+.3f} nats), {out.seconds:.1f} s."]
    if out.loss_first_copy is not None:
        lines.append(f"Intact, the model's loss is {out.loss_first_copy:.2f} on the first copies and "
                     f"{out.loss_clean:.2f} on the second.")
    if out.copies is not None:
        c = out.copies
        control = ("" if c.control_delta_second_copy is None
                   else f" (controls' mean {c.control_delta_second_copy:+.3f})")
        lines.append(f"The text holds a {c.span}-token span twice (from tokens {c.first_at} and {c.second_at}): "
                     f"intact, the loss is {c.loss_first_copy:.2f} on its first copy and {c.loss_second_copy:.2f} "
                     f"on the second; ablated, the second copy's changes by {c.delta_second_copy:+.3f}{control}.")
    if out.control_delta is not None:
        lines.append(_controls(out))
    if out.each:
        lines += _alone(out)
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

"""Everything an agent reads: the text summary of each tool's result, and the wording of errors.

In: the result models of ``n2g_mcp.outputs`` (and, where the summary repeats the question, the
query's arguments). Out: a few lines of plain text. Keeping the words here, apart from the
queries, lets them be read and changed in one place; the structured result carries the same
facts for a program.

Conventions: tokens are shown quoted (``' except'``) so leading spaces and newlines are visible;
every message that refuses something says what to call next.
"""

from __future__ import annotations

from collections.abc import Sequence

from n2g_mcp.outputs import (
    AblationOutput,
    Figures,
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
from store.metrics import FIRING_THRESHOLD
from store.names import neuron_id

# --------------------------------------------------------------------- the server's instructions
INSTRUCTIONS = """\
Neuron to Graph (N2G): each neuron of a transformer language model is summarised as a graph of
token paths: the tokens it fires on (activating) and the earlier tokens that make it fire
(context). Neurons are named L{layer}/N{neuron}; activations are normalised to the neuron's
largest activation (1.0), and a token "fires" at >= 0.5.
Start with list_models. Find neurons by behaviour with search_graphs (tokens, or repeated=true for
in-context/induction-like neurons); read one with get_graph and top_activations; build one that is
not stored with build_graph; test a hypothesis with predict_activations(compare=true) on texts
that should and should not fire it, or at corpus scale with test_hypothesis; find duplicates with
find_similar_neurons; draw with render_graph_dot. Without a graph, ask the model itself:
top_activations works for every neuron (from the whole-model scan), find_neurons lists what fires
at a token of any text, find_induction_neurons runs a behavioural probe across all layers,
ablate_neurons checks causally that neurons matter, and steer_neurons shows what the model writes
with neurons clamped on. The prompts walk through these workflows."""
"""What the server tells a client on initialize: the map of the tools."""


# --------------------------------------------------------------------- pieces
def tok(token: str) -> str:
    """A token as the summaries show it: quoted, so leading spaces and newlines are visible."""
    return repr(token)


def tokens(items: Sequence[str], limit: int = 8) -> str:
    """Some quoted tokens, and how many more there are."""
    shown = ", ".join(tok(t) for t in list(items)[:limit])
    more = len(items) - limit
    return shown + (f" (+{more} more)" if more > 0 else "") if items else "none"


def count(n: int, noun: str) -> str:
    """``1 graph``, ``2 graphs``."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def figures(f: Figures | None) -> str:
    """Precision, recall, F1 and correlation on one line."""
    if f is None:
        return "not scored"
    return (f"precision {number(f.precision)}, recall {number(f.recall)}, "
            f"F1 {number(f.f1)}, correlation {number(f.correlation)}")


def call(tool: str, model: str, default_model: str, **args: object) -> str:
    """How to write a call to a tool, naming the model only where it is not the default."""
    parts = [f"{k}={v!r}" for k, v in args.items()]
    if model != default_model:
        parts.append(f"model={model!r}")
    return f"{tool}({', '.join(parts)})"


def with_warnings(text: str, warnings: Sequence[str]) -> str:
    return text + "".join(f"\nWarning: {w}" for w in warnings)


# --------------------------------------------------------------------- errors
def model_is_a_path() -> str:
    # Says nothing of the name it refuses: it may be a path on the server's disk.
    return ("model takes a model name such as 'smollm2-135m', not a path: this server runs only the "
            "models its operator configured. Call list_models to see them.")


def unknown_model(model: str, stored: Sequence[tuple[str, int]], stores_dir: str) -> str:
    if stored:
        known = "stores here hold " + ", ".join(f"{m} ({count(n, 'graph')})" for m, n in stored)
    else:
        known = f"no store in {stores_dir} holds any graphs yet"
    return (f"Unknown model or store {model[:100]!r}: {known}. Call list_models, or omit model to use "
            "the default.")


def no_store_yet(model: str, stores_dir: str, build: str) -> str:
    return (f"No graphs of {model} in {stores_dir} yet; call {build} to build one (any layer and "
            "neuron), or list_models to see what is stored.")


def no_graph(model: str, layer: int, neuron: int, build: str, stored_layers: Sequence[int] | None) -> str:
    message = f"No graph for {neuron_id(layer, neuron)} in store {model}; call {build} or search_graphs first."
    if stored_layers:
        # The model's shape is unknown here, so the store is the only guide to its range.
        message += f" (The store has graphs in layers {stored_layers[0]}-{stored_layers[-1]} only.)"
    return message


def empty_text() -> str:
    return ("text is empty; pass the text to run the neuron on, e.g. a sentence that should make it "
            "fire and one that should not (one call each)")


def text_too_long(chars: int, limit: int) -> str:
    return (f"text has {chars} characters, over the limit of {limit}; split it and call "
            "predict_activations once per part")


def too_many_tokens(n_tokens: int, limit: int) -> str:
    return (f"text has {n_tokens} tokens; compare=true runs the real neuron on at most {limit} tokens "
            "at a time. Split the text and call predict_activations once per part, or pass "
            "compare=false for the graph's prediction alone.")


def cannot(doing: str, model: str, reason: str, instead: str) -> str:
    return f"Cannot {doing} for {model} here: {reason}. {instead}"


def build_cancelled(layer: int, neuron: int, reason: str) -> str:
    return (f"Build of {neuron_id(layer, neuron)} was cancelled ({reason}); call build_graph again to "
            "restart it.")


def bad_arguments(tool: str, errors: Sequence[dict]) -> str:
    """Arguments that do not fit a tool's input schema: which, why, and what was sent (briefly)."""
    problems = []
    for error in errors[:5]:
        where = ".".join(str(part) for part in error.get("loc", ())) or "arguments"
        given = repr(error.get("input"))
        given = given if len(given) <= 40 else given[:37] + "..."
        problems.append(f"{where}: {error.get('msg', 'invalid')} (got {given})")
    more = f" and {len(errors) - 5} more" if len(errors) > 5 else ""
    return (f"{tool} was called with arguments that do not fit its parameters: {'; '.join(problems)}{more}. "
            "Numbers must be JSON numbers and flags true or false; see the tool's input schema.")


def matching(rule: str, normalized: bool) -> str:
    """How a graph matches text, in a phrase."""
    return f"{rule}, {'normalised' if normalized else 'exact'} tokens"


def no_graph_built(layer: int, neuron: int) -> str:
    return (f"the builder returned no graph for {neuron_id(layer, neuron)}; check the server log, then call "
            "build_graph again")


def scan_unreadable(reason: str) -> str:
    return f"{reason}. Tools that need the scan are unavailable until it is fixed."


def still_indexing(graphs: int) -> str:
    """Why an answer is partial: the store index is being built in the background."""
    return (f"the stores are still being indexed ({graphs:,} graphs so far): this answer covers those "
            "only (partial: true). Call again in a minute for all of them.")


def examples_unresolved(neuron: str, reason: str) -> str:
    """Why a graph's stored examples (references into a scan file) are not shown."""
    return (f"the stored examples of {neuron} are references into a scan file, and {reason}, so they "
            "are not shown; its graph, tokens and fidelity are unaffected. Put the scan file it was built "
            "with beside the store, or rebuild the graph with build_graph(rebuild=true).")


def threshold_source(from_scan: bool) -> str:
    """What 'fires' was measured against in an induction probe."""
    return "corpus scan max" if from_scan else "probe max"


def measured_on(text_given: bool) -> str:
    """Which tokens an ablation measured."""
    return "the given text" if text_given else "repeated-sequence probe (second copies)"


def pattern_too_long(chars: int, limit: int) -> str:
    return f"the pattern has {chars} characters, over {limit}"


def not_served(model: str) -> str:
    return f"this server does not run {model} (its operator can add a model with --model NAME=PATH)"


NOT_RUN_HERE = "this server does not run it"
LAYERS_NEEDED = "pass layers: this model's shape is not known before it loads"
NO_NEURONS = "pass at least one neuron id, e.g. ['L17/N938']"
EMPTY_PATTERN = "the pattern is empty"
TOKEN_OR_POSITION = "pass token or position, not both"
INSTEAD_OF_COMPARE = "Call predict_activations with compare=false to see the graph's prediction alone."
INSTEAD_OF_TOKENISING = "Search and read the stored graphs instead."
INSTEAD_OF_BUILDING = ("Search the stored graphs with search_graphs instead, or run the server where the "
                       "builder extra is installed.")
INSTEAD_OF_PROBING = "Search the stored graphs with search_graphs instead."

# Progress messages of the slow tools (the first report an agent sees).
RUNNING_NEURON = "running the real neuron (the model loads on first use)"
TOKENISING = "tokenising"
RUNNING_INDUCTION = "running the induction probe (the model loads on first use)"
RUNNING_ABLATION = "running the model clean and ablated"
RUNNING_STEERING = "generating clean and steered (the model loads on first use)"
PROBE_TOKEN_IDS = ("random ids from the middle of the vocabulary (2%-80% of its ids, special tokens excluded), "
                   "as in Olsson et al. 2022 and TransformerLens' induction demo")
SCORING_PATTERN = "scoring the pattern against the neuron"
FINDING_NEURONS = "running the model (it loads on first use)"


def building(layer: int, neuron: int) -> str:
    return f"building {neuron_id(layer, neuron)}"


NEURON_WITHOUT_LAYER = "pass layer with neuron (or neither, to list the most similar pairs)"
SUBSET_NEEDS_TARGET = ("mode='subset' asks whether one neuron's behaviour is contained in others': pass "
                       "both layer and neuron")
NO_TOKENS = "the text has no tokens; pass some words"


# --------------------------------------------------------------------- list_models
def list_models(out: ListModelsOutput) -> str:
    lines = [f"Stores in {out.stores_dir}:"]
    for info in out.models:
        shape = f"{info.n_layers} layers x {info.d_mlp} neurons" if info.n_layers else "shape unknown"
        layers = f"layers {info.layers[0]}-{info.layers[-1]}" if info.layers else "no graphs yet"
        build = "can build" if info.can_build else f"cannot build ({info.build_note})"
        lines.append(f"- {info.model}{' (default)' if info.default else ''}: {info.graphs} graphs, "
                     f"{layers}; {shape}; {build}")
        lines += [f"  Warning: {c}" for c in info.corrupt]
    lines += [f"Unreadable file: {p}" for p in out.problems]
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
                "lower threshold (the paper uses 0.9) or build more graphs.")
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


# --------------------------------------------------------------------- the scan and the probes
def no_scan(model: str, filename: str, stores_dir: str, tool: str) -> str:
    return (f"{tool} needs the whole-model scan of {model} ({filename} in {stores_dir}), which is "
            f"not there; its operator writes it with `n2g scan --model {model}`. Use search_graphs and "
            "get_graph on the stored graphs meanwhile.")


def no_such_token(token: str, text_tokens: Sequence[str]) -> str:
    return (f"the text has no token {tok(token)}; its tokens are {tokens(text_tokens, 30)}. Pass one of "
            "them as token, or position (an index; -1 is the last).")


def position_outside(position: int, n: int) -> str:
    return f"position {position} is outside the text's {n} tokens; use 0-{n - 1}, or -1 for the last"


def too_many_neurons(n: int, limit: int, tool: str) -> str:
    return f"{n} neurons given; {tool} takes at most {limit}. Pass the strongest candidates first."


def too_many_each(n: int, limit: int) -> str:
    return (f"each=true ablates every neuron alone, one pass each, for at most {limit} neurons; {n} given. "
            f"Pass the {limit} strongest, or call with each=false for the group's effect alone.")


def outside(name: str, value: float, low: float, high: float, meaning: str) -> str:
    return f"{name}={value:g}: pass {low:g} to {high:g} ({meaning})"


WEAK_COPY = "the model barely copies here, so copying neurons may not show"
RUNS_MEANING = "the seeds seed .. seed + runs - 1 are merged"
SCALE_MEANING = "the clamp as a multiple of the corpus max: 0 silences, 1 holds at the strongest corpus level"


def too_many_prompt_tokens(n: int, limit: int) -> str:
    return f"the prompt has {n} tokens; steer_neurons takes at most {limit}. Shorten it."


def bad_neuron_ids(bad: Sequence[str]) -> str:
    return (f"not neuron ids: {', '.join(repr(b[:40]) for b in bad[:5])}; write them as 'L17/N938' "
            "(find_induction_neurons and search_graphs return them in that form)")


def bad_pattern(reason: str) -> str:
    return f"{reason}. Fix the pattern and call test_hypothesis again."


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
    lines.append("Score = Cohen's d of activation, second copy vs first; firing rates (>= 0.5 of corpus max) after:")
    lines += [f"- {h.id} d {h.score:.2f} (fires first {h.first:.2f}, second {h.second:.2f}; mean "
              f"{h.mean_first:.2f} -> {h.mean_second:.2f})" + ("" if h.has_graph else ", no graph")
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

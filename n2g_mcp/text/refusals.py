"""The wording of every refusal and error an agent reads, each saying what to call next, and
the progress words of the slow tools."""


from __future__ import annotations

from collections.abc import Sequence

from n2g_mcp.limits import MAX_STEER_PROMPT_TOKENS
from n2g_mcp.text.pieces import count, tok, tokens
from store.names import neuron_id


# --------------------------------------------------------------------- errors
def model_is_a_path() -> str:
    # Says nothing of the name it refuses: it may be a path on the server's disk.
    return ("model takes a model name such as 'smollm2-135m', not a path: this server runs only the "
            "models its operator configured. Call list_models to see them.")


def unknown_units(model: str, units: str, known: list[str]) -> str:
    """A dictionary this server neither serves nor holds graphs of, for a model: the ones it has."""
    have = (f"its dictionaries here: {', '.join(repr(k) for k in known)}" if known
            else "it has no dictionary here (its operator adds one with n2g-mcp --dictionary NAME=PATH)")
    return (f"units={units!r} is not a dictionary of {model}; {have}. Use units='neurons' (the default) "
            "for the MLP's neurons; list_models lists every model's dictionaries.")


def no_stores(stores_dir: str) -> str:
    """The stores folder holds no store at all (an installed server not pointed at any, say):
    where the server looked, and how its operator points it at stores."""
    return (f"The server found no store files in {stores_dir}. To serve prebuilt graphs, restart "
            "n2g-mcp with --stores DIR (or set N2G_STORES=DIR) naming a folder of stores, such as "
            "stores/ of a clone of the n2g-mcp repository (see its docs/install.md); graphs built "
            f"with build_graph are kept in {stores_dir}.")


def unknown_model(model: str, served: Sequence[str], default: str, stored: Sequence[tuple[str, int]],
                  hub: bool, empty_folder: str | None) -> str:
    """A model this server neither runs nor holds graphs of: the one wording every tool uses
    (``empty_folder``: the stores folder, where it holds no store file at all)."""
    held = ("its stores hold " + ", ".join(f"{m} ({count(n, 'graph')})" for m, n in stored)) if stored \
        else "its stores hold no graphs"
    add = "restarting it with --model NAME=PATH (a local Hugging Face folder or .gguf file)"
    if not hub:
        add += ", or with --allow-hub-models to let clients name models of the Hugging Face hub"
    message = (f"Unknown model or store {model[:100]!r}: this server does not run it and no store holds it. It "
               f"runs {', '.join(served)} (default {default}); {held}. Omit model to use the default, or call "
               f"list_models. The server's operator adds a model by {add}.")
    return message if empty_folder is None else f"{message} {no_stores(empty_folder)}"


def refused_files(problems: Sequence[str]) -> str:
    """Store files the server could not read, named where they might have answered."""
    shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
    return (f"The stores folder holds {count(len(problems), 'file')} this server refused, which may hold it: "
            f"{shown}. list_models lists them; fix them before building what they may hold.")


def no_store_yet(model: str, stores_dir: str, build: str, any_stored: bool = True) -> str:
    message = (f"No graphs of {model} in {stores_dir} yet; call {build} to build one (any layer and "
               "neuron), or list_models to see what is stored.")
    return message if any_stored else f"{message} {no_stores(stores_dir)}"


def no_graph(model: str, layer: int, neuron: int, build: str, stored_layers: Sequence[int] | None) -> str:
    message = f"No graph for {neuron_id(layer, neuron)} in store {model}; call {build} or search_graphs first."
    if stored_layers:
        # The model's shape is unknown here, so the store is the only guide to its range.
        message += f" (The store has graphs in layers {stored_layers[0]}-{stored_layers[-1]} only.)"
    return message


_TEXTS = {
    # tool: (its text parameter, what to pass, how to shorten it)
    "predict_activations": ("text", "the text to run the neuron on, e.g. a sentence that should make it fire "
                            "and one that should not (a list of texts in one call)",
                            "split it and call predict_activations once per part"),
    "find_neurons": ("text", "the text with the token to look at",
                     "pass the part that ends at the token to look at (what fires there depends only on the text "
                     "before it)"),
    "ablate_neurons": ("text", "the text to measure the loss on, or omit text for the induction probe's repeated "
                       "sequences", "split it and call ablate_neurons once per part"),
    "steer_neurons": ("prompt", "the text to continue",
                      f"steer_neurons continues a prompt of at most {MAX_STEER_PROMPT_TOKENS} tokens: pass its "
                      "last part"),
}
"""The tools that take a text, and how each is told to pass a usable one."""


def empty_text(tool: str = "predict_activations") -> str:
    param, what, _ = _TEXTS[tool]
    return f"{param} is empty; pass {what}"


def text_too_long(chars: int, limit: int, tool: str = "predict_activations") -> str:
    param, _, shorten = _TEXTS[tool]
    return f"{param} has {chars} characters, over the limit of {limit}; {shorten}"


def too_many_tokens(n_tokens: int, limit: int, tool: str = "predict_activations") -> str:
    if tool == "predict_activations":
        return (f"text has {n_tokens} tokens; compare=true runs the real neuron on at most {limit} tokens "
                "at a time. Split the text and call predict_activations once per part, or pass "
                "compare=false for the graph's prediction alone.")
    return f"text has {n_tokens} tokens; {tool} runs at most {limit} at a time: {_TEXTS[tool][2]}"


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
STORES_FOLDER = "the server's stores folder"
CACHE_FOLDER = "the server's cache folder"
HOME_FOLDER = "the server's home folder"
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
RUNNING_STEERING = "generating clean and steered (the model loads on first use)"
PROBE_TOKEN_IDS = ("random ids from the middle of the vocabulary (2%-80% of its ids, special tokens excluded), "
                   "as in Olsson et al. 2022 and TransformerLens' induction demo")
SCORING_PATTERN = "scoring the pattern against the neuron"
FINDING_NEURONS = "running the model (it loads on first use)"
COMPARING = "comparing token sets"


def building(layer: int, neuron: int) -> str:
    return f"building {neuron_id(layer, neuron)}"


def pairs_stopped(visited: int, complete_to: float | None, threshold: float, layer: int | None) -> str:
    """Why an all-pairs answer is partial: the search reached its work cap below some overlap."""
    if complete_to is None:
        sure = "none of the pairs listed is sure to be among the most similar"
    else:
        sure = (f"every pair with both overlaps >= {complete_to:g} is listed (or ranks below those listed); "
                f"pairs below {complete_to:g} are the best of those examined, not necessarily of the store")
    narrow = f"a threshold of at least {complete_to:g}" if complete_to is not None else "a higher threshold"
    if layer is None:
        narrow = f"a layer (one layer's pairs), or {narrow}"
    return (f"the search for pairs down to overlap {threshold:g} stopped after {visited:,} candidate pairs, "
            f"its limit per call: {sure} (partial: true). For a complete answer pass {narrow}.")


NEURON_WITHOUT_LAYER = "pass layer with neuron (or neither, to list the most similar pairs)"
SUBSET_NEEDS_TARGET = ("mode='subset' asks whether one neuron's behaviour is contained in others': pass "
                       "both layer and neuron")
NO_TOKENS = "the text has no tokens; pass some words"



# --------------------------------------------------------------------- the scan and the probes
def no_scan(model: str, filename: str, stores_dir: str, tool: str) -> str:
    base, at, units = model.partition("@")
    command = (f"n2g scan --model {base} --dictionary {units}=PATH" if at else f"n2g scan --model {model}")
    return (f"{tool} needs the whole-model scan of {model} ({filename} in {stores_dir}), which is "
            f"not there; its operator writes it with `{command}`. Use search_graphs and "
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
CONTROLS_MEANING = "random draws of as many neurons of the same layers, each one more run of the text"
SEED_MEANING = "the random sequences' seed; the same seed draws the same sequences"
TWO_TOKENS = "the text needs at least two tokens to measure a loss; pass a longer one, or omit text"
SCALE_MEANING = "the clamp as a multiple of the corpus max: 0 silences, 1 holds at the strongest corpus level"


def too_many_prompt_tokens(n: int, limit: int) -> str:
    return f"the prompt has {n} tokens; steer_neurons takes at most {limit}. Shorten it."


def bad_neuron_ids(bad: Sequence[str]) -> str:
    return (f"not neuron ids: {', '.join(repr(b[:40]) for b in bad[:5])}; write them as 'L17/N938' "
            "(find_induction_neurons and search_graphs return them in that form)")


def bad_pattern(reason: str) -> str:
    return f"{reason}. Fix the pattern and call test_hypothesis again."

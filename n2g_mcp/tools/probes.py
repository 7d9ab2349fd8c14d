"""The tools that probe the whole live model: find_neurons, find_induction_neurons,
ablate_neurons, steer_neurons, test_hypothesis.

They answer for any neuron of the model, graph or not, each running its query
(``n2g_mcp.probe_queries``) in a worker thread (``n2g_mcp.worker``). The first argument is the
query library, which the server fills in (``n2g_mcp.tools``).
"""

import threading
from typing import Annotated, Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult
from pydantic import Field, Strict

from n2g_mcp import text as wording
from n2g_mcp.limits import (
    FOUND_NEURONS,
    INDUCTION_NEURONS,
    MAX_ABLATE,
    MAX_COMPARE_TOKENS,
    MAX_CONTROLS,
    MAX_EACH,
    MAX_LIMIT,
    MAX_NEW_TOKENS,
    MAX_PATTERN_CHARS,
    MAX_SEED,
    MAX_SEEDS,
    MAX_STEER,
    MAX_STEER_PROMPT_TOKENS,
    MAX_STEER_SCALE,
    MAX_TEXT_CHARS,
    NEW_TOKENS,
    STEER_SCALE,
)
from n2g_mcp.outputs import AblationOutput, FindNeuronsOutput, HypothesisOutput, InductionOutput, SteerOutput
from n2g_mcp.params import Count, Flag, Layer, Layers, ModelName, UnitsName, unit_model, Neuron, Neurons
from n2g_mcp.queries import Queries
from n2g_mcp.tools.common import describe, result
from n2g_mcp.worker import run_in_worker
from store.probes import CONTROL_DRAWS, PROBE_LENGTH, PROBE_SEEDS, PROBE_SEQUENCES, REGEX_CPU_S, AblationMode, PatternKind


@describe(max_tokens=f"{MAX_COMPARE_TOKENS:,}")
async def find_neurons(
    q: Queries,
    text: Annotated[Annotated[str, Strict()], Field(description=f"The text to run (up to {MAX_TEXT_CHARS} "
                                                    f"characters and {MAX_COMPARE_TOKENS} tokens).")],
    ctx: Context,
    token: Annotated[Annotated[str, Strict()] | None, Field(
        max_length=200, description="The token to look at, e.g. ' import' (its last occurrence); "
        "omit for the last token.")] = None,
    position: Annotated[Count | None, Field(
        description="Index of the token instead of token=; -1 is the last.")] = None,
    layers: Layers = None,
    model: ModelName = None, units: UnitsName = None,
    limit: Annotated[Count, Field(ge=1, le=MAX_LIMIT, description="Neurons to return.")] = FOUND_NEURONS,
) -> Annotated[CallToolResult, FindNeuronsOutput]:
    """Which neurons fire at a token of any text: one forward pass through all requested
    layers, neurons ranked by activation / their corpus max (1.0 = as strongly as anywhere in
    the corpus). Each hit says whether a graph is stored, with its activating tokens and F1.
    Text of at most {max_tokens} tokens."""
    model = unit_model(model, units)
    name = q.model(model)
    q.check_text(text, "find_neurons")
    if token is not None and position is not None:
        raise ToolError(wording.TOKEN_OR_POSITION)

    def work(progress: Any, cancel: threading.Event) -> FindNeuronsOutput:
        return q.find_neurons(name, text, token, position, layers, limit)

    out = await run_in_worker(ctx, work, wording.FINDING_NEURONS)
    return result(wording.find_neurons(out), out)


@describe(seqs=PROBE_SEQUENCES, length=PROBE_LENGTH, runs=len(PROBE_SEEDS))
async def find_induction_neurons(
    q: Queries,
    ctx: Context,
    layers: Layers = None,
    model: ModelName = None, units: UnitsName = None,
    limit: Annotated[Count, Field(ge=1, le=MAX_LIMIT, description="Neurons to return.")] = INDUCTION_NEURONS,
    sequences: Annotated[Count, Field(ge=1, le=64, description="Random sequences per seed.")] = PROBE_SEQUENCES,
    length: Annotated[Count, Field(ge=4, le=128, description="Tokens per sequence (before its copy).")] = PROBE_LENGTH,
    seed: Annotated[Count, Field(ge=0, le=MAX_SEED, description="The first seed; same seeds, same sequences "
                                 "and ranking.")] = PROBE_SEEDS[0],
    runs: Annotated[Count, Field(ge=1, le=MAX_SEEDS, description="How many seeds to merge: seed, seed + 1, "
                                 "...; each draws its own sequences.")] = len(PROBE_SEEDS),
) -> Annotated[CallToolResult, InductionOutput]:
    """Find induction-like neurons by behaviour, the standard way (Olsson et al. 2022): random
    token ids from the ordinary middle of the vocabulary, each sequence followed by an exact
    copy ({seqs} x {length} tokens per seed, {runs} seeds merged by default). Reports the
    model's own loss on the first and second copy (far lower on the second where it copies).
    Every neuron of the requested layers is ranked by score = rise: mean activation on the
    second copy minus on the first, each token's as a share of the neuron's corpus max
    clipped to [0, 1] (no firing threshold needed); Cohen's d and firing rates (>= 0.5 x
    corpus max) are fields. Best first;
    deterministic for a seed list; cancellable; the first progress message says how long it
    should take. Follow up with ablate_neurons (each=true) for causal evidence, steer_neurons,
    and top_activations to read them."""
    model = unit_model(model, units)
    name = q.model(model)

    def work(progress: Any, cancel: threading.Event) -> InductionOutput:
        return q.find_induction(name, layers, limit, sequences, length, seed, runs, cancel)

    out = await run_in_worker(ctx, work, q.induction_estimate(name, sequences, length, runs))
    return result(wording.induction(out), out)


@describe(max_neurons=MAX_ABLATE, max_each=MAX_EACH, controls=CONTROL_DRAWS, max_tokens=f"{MAX_COMPARE_TOKENS:,}")
async def ablate_neurons(
    q: Queries,
    neurons: Annotated[Neurons, Field(max_length=MAX_ABLATE)],
    ctx: Context,
    text: Annotated[Annotated[str, Strict()] | None, Field(
        description="Text to measure the loss on; omit for the induction probe's repeated random "
        "sequences (loss on the second copies, where induction neurons matter).")] = None,
    mode: Annotated[AblationMode, Field(
        description="'zero' sets the activations to 0; 'mean' to their corpus mean.")] = "zero",
    control: Annotated[Flag, Field(description="Also ablate random draws of as many neurons of the same "
                                   "layers, for comparison (controls says how many).")] = True,
    controls: Annotated[Count, Field(ge=1, le=MAX_CONTROLS, description="How many random draws to compare "
                                     "with: their mean, spread and the ablation's rank among them are "
                                     "reported (each one more run of the text).")] = CONTROL_DRAWS,
    each: Annotated[Flag, Field(description=f"Also ablate every neuron alone and report each one's own "
                                f"delta, flagging those that carry nothing alone (at most {MAX_EACH} neurons; "
                                "one more run of the text each).")] = False,
    seed: Annotated[Count, Field(ge=0, le=MAX_SEED, description="Without text: the probe's seed (0 = the "
                                 "sequences find_induction_neurons ran first; another for fresh ones).")] = PROBE_SEEDS[0],
    model: ModelName = None, units: UnitsName = None,
) -> Annotated[CallToolResult, AblationOutput]:
    """A causal check: the model's next-token loss with the neurons ablated versus intact
    (at most {max_neurons} neurons), and, with control=true, the same for {controls} random draws
    of as many neurons of the same layers: their mean and spread, and the ablation's rank among
    them. Without text it measures the induction probe's second copies and also reports the
    intact loss on the first copies (is the model copying here?); a text that holds a span twice
    gets the same split of its copies. each=true adds each neuron's own delta, ablated alone (at
    most {max_each} neurons), and names those that carry nothing alone. A delta that ranks above
    every draw, many spreads beyond their mean, means the neurons carry something the model uses
    here. Also lists the tokens whose prediction changed most. A text is measured up to
    {max_tokens} tokens. The first progress message says how long the call should take;
    cancellable."""
    model = unit_model(model, units)
    name = q.model(model)
    first = q.ablate_estimate(name, neurons, text, control, controls, each)

    def work(progress: Any, cancel: threading.Event) -> AblationOutput:
        return q.ablate(name, neurons, text, mode, control, seed, each, controls, progress=progress, cancel=cancel)

    out = await run_in_worker(ctx, work, first)
    return result(wording.ablation(out), out)


@describe(max_neurons=MAX_STEER, max_prompt=MAX_STEER_PROMPT_TOKENS, max_new=MAX_NEW_TOKENS)
async def steer_neurons(
    q: Queries,
    neurons: Annotated[Neurons, Field(max_length=MAX_STEER)],
    prompt: Annotated[Annotated[str, Strict()], Field(
        min_length=1, description=f"The text to continue (at most {MAX_STEER_PROMPT_TOKENS} tokens).")],
    ctx: Context,
    scale: Annotated[float, Strict(), Field(
        ge=-MAX_STEER_SCALE, le=MAX_STEER_SCALE,
        description="Clamp each neuron to scale x its corpus max at every position: 1 holds it at its "
        "strongest corpus level, 0 silences it, larger or negative pushes beyond.")] = STEER_SCALE,
    max_new_tokens: Annotated[Count, Field(ge=1, le=MAX_NEW_TOKENS, description="Tokens to generate "
                                           "for each continuation.")] = NEW_TOKENS,
    model: ModelName = None, units: UnitsName = None,
) -> Annotated[CallToolResult, SteerOutput]:
    """What does the model write with these neurons on? Greedy generation from the prompt,
    clean and with the listed neurons (at most {max_neurons}) clamped to scale x their corpus
    max (from the whole-model scan) at every position, side by side as clean_text and
    steered_text, with the positions whose next-token prediction changed most (KL, read on
    the clean text). Prompt at most {max_prompt} tokens, at most {max_new} new tokens; stops
    at an end-of-text token. Deterministic; reports progress and can be cancelled."""
    model = unit_model(model, units)
    name = q.model(model)

    def work(progress: Any, cancel: threading.Event) -> SteerOutput:
        return q.steer(name, neurons, prompt, float(scale), max_new_tokens, progress=progress, cancel=cancel)

    out = await run_in_worker(ctx, work, wording.RUNNING_STEERING)
    return result(wording.steer(out), out)


@describe(max_chars=MAX_PATTERN_CHARS, regex_cpu=REGEX_CPU_S)
async def test_hypothesis(
    q: Queries, layer: Layer, neuron: Neuron,
    pattern: Annotated[Annotated[str, Strict()], Field(
        min_length=1, max_length=MAX_PATTERN_CHARS,
        description="kind='regex': a regular expression over the text; every token overlapping a "
        "match is claimed (put required context in a look-behind, e.g. '(?<=from \\w+) import'). "
        "kind='tokens': tokens separated by '|', e.g. ' import| from' (case/space-insensitive).")],
    ctx: Context,
    kind: Annotated[PatternKind, Field(description="How to read pattern.")] = "regex",
    model: ModelName = None, units: UnitsName = None,
) -> Annotated[CallToolResult, HypothesisOutput]:
    """Check an explanation at corpus scale: the claim "the neuron fires on the tokens the
    pattern matches", scored with the real activations (precision, recall, F1 on firing
    tokens, correlation) on the neuron's top windows, on random windows, and on corpus windows
    where the pattern matches; lists the worst false positives and false negatives as marked
    windows. Patterns up to {max_chars} characters; a regex that takes more than {regex_cpu:g} s of
    CPU time over the corpus is refused. Cancellable."""
    model = unit_model(model, units)
    name = q.model(model)

    def work(progress: Any, cancel: threading.Event) -> HypothesisOutput:
        return q.hypothesis(name, layer, neuron, pattern, kind, cancel=cancel)

    out = await run_in_worker(ctx, work, wording.SCORING_PATTERN)
    return result(wording.hypothesis(out), out)

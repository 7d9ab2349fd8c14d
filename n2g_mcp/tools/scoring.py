"""The tool that scores an explanation in words by simulation: score_explanation.

The agent is the simulator: the first call hands it a neuron's scoring set (``store.scoring``),
the second scores the activations it predicts from its explanation against the real ones, with
the stored graph's own prediction scored beside them (``n2g_mcp.scoring_queries``). Slow the first
time (the model loads, two forward passes), so it runs in a worker thread with progress.
"""

import threading
from typing import Annotated, Any

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult
from pydantic import Field, Strict

from n2g_mcp import text as wording
from n2g_mcp.limits import MAX_SEED
from n2g_mcp.params import Count, Layer, ModelName, UnitsName, unit_model, Neuron
from n2g_mcp.queries import Queries
from n2g_mcp.scoring_outputs import ScoreExplanationOutput
from n2g_mcp.scoring_queries import SCALE
from n2g_mcp.text.pieces import call
from n2g_mcp.tools.common import describe, result
from n2g_mcp.worker import run_in_worker
from store.scoring import OUT_OF_CONTEXT, PER_INTERVAL, RANDOM, SHOWN, TOP

Value = Annotated[int, Strict(), Field(ge=0, le=SCALE)]
WindowPrediction = (Annotated[list[Value], Field(max_length=SHOWN)]
                    | Annotated[dict[Annotated[str, Field(pattern=r"^\d{1,4}$")], Value], Field(max_length=SHOWN)])


@describe(top=TOP, per_interval=PER_INTERVAL, random=RANDOM, out_of_context=OUT_OF_CONTEXT, shown=SHOWN)
async def score_explanation(
    q: Queries, layer: Layer, neuron: Neuron, ctx: Context,
    model: ModelName = None, units: UnitsName = None,
    seed: Annotated[Count, Field(ge=0, le=MAX_SEED, description="Draws the set: the same seed, the same "
                                 "windows; another seed, fresh ones.")] = 0,
    predictions: Annotated[list[WindowPrediction] | None, Field(
        max_length=200, description="Your predicted activation of every token, 0 (silent) to 10 (the "
        "neuron's strongest), one entry per window of the set in its order: a list of one integer per "
        "token, or an object {\"token index\": value} naming only the tokens above 0. Omit to get the "
        "set.")] = None,
    set_id: Annotated[Annotated[str, Strict()] | None, Field(
        max_length=40, description="The set_id the set came with, to make sure the predictions are for "
        "that set.")] = None,
    explanation: Annotated[Annotated[str, Strict()] | None, Field(
        max_length=1000, description="The explanation the predictions come from, echoed with the "
        "scores.")] = None,
) -> Annotated[CallToolResult, ScoreExplanationOutput]:
    """Score an explanation in words the way OpenAI and Anthropic score theirs, with you as the
    simulator. Call it first without predictions: it returns a scoring set of the neuron's
    windows as tokens ({top} top windows, {per_interval} from each activation interval, {random}
    random, {out_of_context} with its top tokens in other contexts; {shown} tokens each, shuffled;
    the same for the same seed), never their activations. Predict each token's activation (0-10)
    from your explanation alone, and call again with predictions (and the seed and set_id): it
    returns the correlation with the real activations overall, for top-and-random windows
    (OpenAI's score) and per kind of window, the windows you predicted worst, and the stored
    graph's score on the same tokens, so you see whether your words beat the graph. Needs the
    model's scan file and the live model."""
    model = unit_model(model, units)
    name = q.model(model)
    q.check_range(name, layer, neuron)
    q.need_scan(name, "score_explanation")  # fail fast, before any thread or model

    def work(progress: Any, cancel: threading.Event) -> ScoreExplanationOutput:
        return q.score_explanation(name, layer, neuron, seed, predictions, set_id, explanation, progress=progress)

    out = await run_in_worker(ctx, work, wording.DRAWING_SET)
    if predictions is None:
        again = call("score_explanation", name, q.default_model, layer=layer, neuron=neuron, seed=seed,
                     set_id=out.set_id)
        return result(wording.scoring_set(out, again.removesuffix(")")), out)
    return result(wording.scored(out), out)

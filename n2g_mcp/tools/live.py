"""The tools that run the live model on one neuron: predict_activations, build_graph.

Both are slow (a first call loads the model), so they run the query (``n2g_mcp.live_queries``)
in a worker thread with progress and cancellation (``n2g_mcp.worker``), after the checks that
need no model. The first argument is the query library, which the server fills in
(``n2g_mcp.tools``).
"""

import threading
from typing import Annotated, Any

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult
from pydantic import Field, Strict

from n2g_mcp import text as wording
from n2g_mcp.limits import MAX_COMPARE_TOKENS, MAX_FIRING_ROWS, MAX_TEXT_CHARS, MAX_TEXTS
from n2g_mcp.outputs import Expectation, GraphSummary, PredictOutput
from n2g_mcp.params import Flag, Layer, ModelName, UnitsName, unit_model, Neuron
from n2g_mcp.queries import Queries
from n2g_mcp.tools.common import describe, result
from n2g_mcp.worker import run_in_worker
from store.probes import BuildMethod


@describe(max_tokens=f"{MAX_COMPARE_TOKENS:,}", max_texts=MAX_TEXTS)
async def predict_activations(
    q: Queries, layer: Layer, neuron: Neuron,
    text: Annotated[Annotated[str, Strict()] | Annotated[list[Annotated[str, Strict()]], Field(
        min_length=1, max_length=MAX_TEXTS)], Field(
        description=f"The text to run, up to {MAX_TEXT_CHARS} characters (and up to "
        f"{MAX_COMPARE_TOKENS} tokens with compare=true); or a list of up to {MAX_TEXTS} texts, "
        f"together within the same limits, each answered on its own in results.")],
    ctx: Context,
    model: ModelName = None, units: UnitsName = None,
    compare: Annotated[Flag, Field(
        description="Also run the real neuron on the text and report how well the graph agrees "
        "(needs the model; slower).")] = False,
    expect: Annotated[Expectation | None, Field(
        description="What the text is a test of: 'fire' where you wrote it to make the neuron fire, "
        "'silent' where it should not; the answer then says whether it did (as_expected). Omit for "
        "the facts alone.")] = None,
) -> Annotated[CallToolResult, PredictOutput]:
    """Predict a neuron's activation on each token of a text from its graph, and with
    compare=true also measure the real neuron and the agreement (precision, recall, F1 on
    firing tokens, correlation). Each firing token names the graph path that matched it (why
    it fires). compare=true takes at most {max_tokens} tokens; split longer texts. Test a
    hypothesis with texts that should and should not make the neuron fire: pass up to
    {max_texts} of them as a list in one call, saying with expect which the texts test."""
    model = unit_model(model, units)
    name = q.model(model)
    q.graph(name, layer, neuron)  # fail fast, before any thread or model
    q.check_texts(text)

    def work(progress: Any, cancel: threading.Event) -> PredictOutput:
        return q.predict(name, layer, neuron, text, compare, expect)

    first = wording.RUNNING_NEURON if compare else wording.TOKENISING
    out = await run_in_worker(ctx, work, first)
    return result(wording.predict(out, max_rows=MAX_FIRING_ROWS), out)


async def build_graph(
    q: Queries, layer: Layer, neuron: Neuron, ctx: Context, model: ModelName = None, units: UnitsName = None,
    rebuild: Annotated[Flag, Field(description="Build again even if the store has this neuron.")] = False,
    method: Annotated[BuildMethod, Field(
        description="'ordinary' (default): the served atlas's method, the paths calibrated on ordinary "
        "text so the graph predicts the neuron there, with held-out figures; 'fitted': the paper's, "
        "fitted on the top windows only (faster; describes the top of the neuron's range).")] = "ordinary",
) -> Annotated[CallToolResult, GraphSummary]:
    """Build a neuron's graph with the live model and add it to the store (returns the stored
    graph if there is one, unless rebuild=true). Slow: seconds to minutes, more the first
    time at a layer (the model loads, the corpus is scanned for the layer, and the 'ordinary'
    method's pass over ~200k tokens of ordinary text runs once); reports progress and can be
    cancelled."""
    model = unit_model(model, units)
    name = q.model(model)
    q.check_range(name, layer, neuron)

    def work(progress: Any, cancel: threading.Event) -> GraphSummary:
        return q.build(name, layer, neuron, rebuild, method, progress=progress, cancel=cancel)

    out = await run_in_worker(ctx, work, wording.building(layer, neuron))
    return result(wording.build(out), out)

"""The tools of the output side: find_by_output (which neurons write a token) and output_effects
(what one neuron's firing does to the next token, measured, beside its direct path).

find_by_output reads the model's output-token file only (no torch); output_effects runs the live
model in a worker thread. Both are typed signatures over ``n2g_mcp.output_queries``; the first
argument is the query library, which the server fills in (``n2g_mcp.tools``).
"""

import threading
from typing import Annotated, Any

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult
from pydantic import Field, Strict

from n2g_mcp import text as wording
from n2g_mcp.limits import EFFECT_SCALE, EFFECT_WINDOWS, MAX_EFFECT_WINDOWS, MAX_LIMIT, MAX_STEER_SCALE, SEARCH_PAGE
from n2g_mcp.output_results import FindByOutputOutput, OutputEffectsOutput
from n2g_mcp.params import Count, Cursor, Flag, Layer, ModelName, UnitsName, unit_model, Neuron, Tokens
from n2g_mcp.queries import Queries
from n2g_mcp.tools.common import describe, result
from n2g_mcp.worker import run_in_worker


def find_by_output(
    q: Queries,
    promotes: Annotated[Tokens, Field(
        max_length=20, description="Tokens the neuron's output must promote, all of them, e.g. [' import'] "
        "(one token may be given as a string). Case- and space-insensitive unless exact=true.")] = [],  # noqa: B006
    suppresses: Annotated[Tokens, Field(
        max_length=20, description="Tokens it must suppress, all of them.")] = [],  # noqa: B006 - pydantic copies
    model: ModelName = None, units: UnitsName = None,
    layer: Annotated[Count | None, Field(ge=0, description="Only neurons of this layer.")] = None,
    exact: Annotated[Flag, Field(description="Match token spellings exactly (case and spaces).")] = False,
    limit: Annotated[Count, Field(ge=1, le=MAX_LIMIT, description="Results per page.")] = SEARCH_PAGE,
    cursor: Cursor = None,
) -> Annotated[CallToolResult, FindByOutputOutput]:
    """Find neurons by what they write: those whose output direction promotes all the given tokens
    (or suppresses them) among its top-k, read from the weights through the final norm and the
    unembedding (direct path; no model run), for every neuron of the model, graph or not. Ranked by
    the logit change at the neuron's strongest corpus activation. Each hit lists its other promoted
    tokens and, where a graph is stored, what makes it fire. Pages with cursor."""
    model = unit_model(model, units)
    out = q.find_by_output(promotes, suppresses, model=model, layer=layer, exact=exact, limit=limit, cursor=cursor)
    return result(wording.find_by_output(out), out)


@describe(default=EFFECT_WINDOWS, most=MAX_EFFECT_WINDOWS, scale=EFFECT_SCALE)
async def output_effects(
    q: Queries, layer: Layer, neuron: Neuron, ctx: Context,
    windows: Annotated[Count, Field(ge=1, le=MAX_EFFECT_WINDOWS, description="How many of the neuron's top corpus "
                                    "windows to measure on.")] = EFFECT_WINDOWS,
    scale: Annotated[float, Strict(), Field(
        ge=-MAX_STEER_SCALE, le=MAX_STEER_SCALE,
        description="The raised edit sets the neuron to scale x its corpus max.")] = EFFECT_SCALE,
    model: ModelName = None, units: UnitsName = None,
) -> Annotated[CallToolResult, OutputEffectsOutput]:
    """Measure what a neuron writes: on its own top corpus windows ({default} by default, at most
    {most}), the model's next-token distribution at the token where it fires, intact, with the
    neuron zeroed there, and with it raised to scale x its corpus max ({scale} by default). For
    each edit: the tokens whose probability rose and fell most, the KL divergence, and how well the
    change matches the direct path's prediction from the weights (direct_correlation near 1: the
    promoted/suppressed tokens of get_graph describe it; near 0: it acts through later layers).
    Runs the model; deterministic."""
    model = unit_model(model, units)
    name = q.model(model)

    def work(progress: Any, cancel: threading.Event) -> OutputEffectsOutput:
        return q.output_effects(name, layer, neuron, windows, float(scale))

    out = await run_in_worker(ctx, work, wording.MEASURING_OUTPUT)
    return result(wording.output_effects(out), out)

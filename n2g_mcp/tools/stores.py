"""The tools that read the stores: list_models, search_graphs, get_graph, top_activations,
find_similar_neurons, render_graph_dot, and the ``graph://`` resource.

Each is a typed signature over one query of the library (``n2g_mcp.store_queries``); none runs a
model. The first argument is the query library, which the server fills in (``n2g_mcp.tools``).
"""

import base64
import threading
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, ContentBlock, EmbeddedResource, ImageContent, TextResourceContents
from pydantic import Field, Strict

from n2g_mcp import text as wording
from n2g_mcp.limits import EXAMPLES_PAGE, MAX_DOT_CHARS, MAX_LIMIT, MAX_NODES, MAX_PAIR_VISITS, SEARCH_PAGE
from n2g_mcp.outputs import (
    By,
    GraphDescription,
    ListModelsOutput,
    RenderOutput,
    SearchOutput,
    SimilarOutput,
    TopActivationsOutput,
)
from n2g_mcp.params import Count, Cursor, Flag, Layer, Layers, ModelName, Neuron, Tokens, UnitsName, unit_model
from n2g_mcp.queries import Queries
from n2g_mcp.tools.common import describe, result
from n2g_mcp.worker import run_in_worker
from store.names import parse_neuron_id
from store.render import NODES_DRAWN
from store.similarity import PAPER_THRESHOLD, SIMILAR_LIMIT, Mode


def list_models(q: Queries) -> Annotated[CallToolResult, ListModelsOutput]:
    """List the models with stored neuron graphs: graph counts, layers, corrupt lines skipped,
    the model's shape, and whether graphs can be built here. Call this first."""
    out = q.list_models()
    return result(wording.list_models(out), out)


def search_graphs(
    q: Queries,
    activating: Annotated[Tokens, Field(
        max_length=20, description="Tokens the neuron must fire on, all of them, e.g. [' except'] (one "
        "token may be given as a string). Case- and space-insensitive unless exact=true.")] = [],  # noqa: B006
    context: Annotated[Tokens, Field(
        max_length=20, description="Tokens that must appear in the neuron's context (earlier tokens "
        "that make it fire), all of them.")] = [],  # noqa: B006 - pydantic copies defaults
    model: ModelName = None, units: UnitsName = None,
    words: Annotated[Tokens, Field(
        max_length=20, description="Words the graph must name, each as an activating or a context "
        "token, either role (case- and space-insensitive, whole tokens): the tokens its description "
        "in words names, e.g. ['import', 'from']. Items are split at spaces.")] = [],  # noqa: B006
    layer: Annotated[Count | None, Field(ge=0, description="Only neurons of this layer.")] = None,
    min_f1: Annotated[Annotated[float, Strict()] | None, Field(
        ge=0, le=1, description="Only graphs whose F1 on held-out examples is at least this.")] = None,
    min_ordinary_f1: Annotated[Annotated[float, Strict()] | None, Field(
        ge=0, le=1, description="Only graphs whose F1 on ordinary text (every token of held-out documents) is at "
        "least this; graphs not scored there (n2g eval --heldout scores them) are left out.")] = None,
    repeated: Annotated[Flag, Field(
        description="Only graphs showing in-context (induction-like) behaviour, the paper's search: "
        "first those with a repeat path (the token '<repeat>': fires on whatever continues an earlier "
        "copy in the text; activating=['<repeat>'] or context=['<repeat>'] finds these alone), then those "
        "where a token, spelled exactly alike, is both activating and context.")] = False,
    exact: Annotated[Flag, Field(description="Match token spellings exactly (case and spaces).")] = False,
    limit: Annotated[Count, Field(ge=1, le=MAX_LIMIT, description="Results per page.")] = SEARCH_PAGE,
    cursor: Cursor = None,
) -> Annotated[CallToolResult, SearchOutput]:
    """Find neurons by behaviour: graphs that hold all the given activating tokens and all the
    given context tokens (and all the given words, in either role). With activating tokens, the
    graphs they explain most come first (the tokens' activation relative to the graph's
    strongest: `explained`), then best F1; each hit lists the matched tokens first. Otherwise
    best F1 first; with no tokens, lists graphs (filtered by layer, min_f1, repeated). Pages
    with cursor. Tokens usually carry their leading space (' the')."""
    model = unit_model(model, units)
    out = q.search(activating, context, model=model, words=words, exact=exact, layer=layer, min_f1=min_f1,
                   repeated=repeated, limit=limit, cursor=cursor, min_ordinary_f1=min_ordinary_f1)
    return result(wording.search(out, activating=activating, context=context, repeated=repeated,
                                 layer=layer, min_f1=min_f1, words=words, min_ordinary_f1=min_ordinary_f1), out)


def get_graph(q: Queries, layer: Layer, neuron: Neuron,
              model: ModelName = None, units: UnitsName = None) -> Annotated[CallToolResult, GraphDescription]:
    """Describe one neuron's stored graph: activating tokens with activations, context tokens
    with importances, fidelity (and the paper's baselines), and pruned examples showing the
    least context that fires it."""
    model = unit_model(model, units)
    out = q.get_graph(model, layer, neuron)
    return result(wording.get_graph(out), out)


def top_activations(
    q: Queries, layer: Layer, neuron: Neuron, model: ModelName = None, units: UnitsName = None,
    limit: Annotated[Count, Field(ge=1, le=MAX_LIMIT, description="Examples per page.")] = EXAMPLES_PAGE,
    cursor: Cursor = None,
) -> Annotated[CallToolResult, TopActivationsOutput]:
    """The corpus windows a neuron fires most on, strongest first, with the activating token
    marked [[like this]]: for any neuron of any layer from the model's whole-corpus scan, with
    its firing density and activation quantiles (source 'scan'); where no scan is served, from
    its stored graph, marking whether each window built the graph (train) or scored it (test)."""
    model = unit_model(model, units)
    out = q.top_activations(model, layer, neuron, limit, cursor)
    return result(wording.top_activations(out), out)


@describe(max_visits=f"{MAX_PAIR_VISITS:,}")
async def find_similar_neurons(
    q: Queries,
    ctx: Context,
    layer: Annotated[Count | None, Field(ge=0, description="Target neuron's layer; with no neuron, "
                                         "limits the pair listing to this layer.")] = None,
    neuron: Annotated[Count | None, Field(ge=0, description="Target neuron; omit to list the most "
                                          "similar pairs in the store.")] = None,
    model: ModelName = None, units: UnitsName = None,
    threshold: Annotated[Annotated[float, Strict()], Field(
        ge=0, le=1, description="Least overlap of both the activating and the context token sets "
        f"(the paper uses {PAPER_THRESHOLD}).")] = PAPER_THRESHOLD,
    mode: Annotated[Mode, Field(
        description="'similar': overlap >= threshold both ways; 'subset': the target's tokens are "
        "contained in the other neuron's (it does what the target does, maybe more).")] = "similar",
    limit: Annotated[Count, Field(ge=1, le=MAX_LIMIT, description="Most results.")] = SIMILAR_LIMIT,
    by: Annotated[By, Field(
        description="'tokens': overlap of the graphs' token sets (the paper's; needs the target's graph); "
        "'coactivation': the neurons that fire with the target, whatever their graphs name (Pearson r of "
        "activations on the model, else shared top windows in the scan; needs the scan file, not a graph); "
        "'both': each beside the other. Pairs (no target) are by tokens.")] = "both",
    layers: Annotated[Layers, Field(description="Co-activation: layers to search; omit for every layer.")] = None,
    run_model: Annotated[Flag, Field(
        description="Co-activation: false (default) ranks by the scan's shared top windows (instant); true "
        "measures the Pearson correlation on the model where it runs here, exact but slow on a CPU (seconds "
        "a layer read, a minute or more for every layer; the model loads on first use): pass layers to "
        "narrow it.")] = False,
) -> Annotated[CallToolResult, SimilarOutput]:
    """Find neurons that behave alike. With layer and neuron, its neighbours two ways (by='both'):
    graphs whose activating and context token sets overlap its graph's, and neurons that fire
    with it (co-activation, as Neuronpedia's correlated neurons: found even where their graphs
    name other tokens). Without a target, the most similar pairs of graphs (duplicates) in the
    store or in one layer, from the search index: a pair listing at a low threshold examines at
    most {max_visits} candidate pairs, and where that is not enough answers partial, saying how
    to narrow it (a layer, a higher threshold)."""
    model = unit_model(model, units)

    def work(progress: Any, cancel: threading.Event) -> SimilarOutput:
        return q.similar(model, layer, neuron, threshold=threshold, mode=mode, limit=limit, by=by, layers=layers,
                         run_model=run_model, progress=progress, cancel=cancel)

    first = wording.COACTIVATING if by != "tokens" and neuron is not None and run_model else wording.COMPARING
    out = await run_in_worker(ctx, work, first)
    return result(wording.similar(out), out)


def _drawing(q: Queries, out: RenderOutput, fmt: Literal["png", "svg"]) -> tuple[list[ContentBlock], str]:
    """The drawing as MCP content (PNG as an image, SVG as an embedded resource), and a note."""
    layer, neuron = parse_neuron_id(out.id)
    try:
        picture = q.picture(out.model, layer, neuron, fmt, out.max_nodes)
    except RuntimeError as exc:  # PNG without Pillow
        return [], wording.picture_failed(fmt, str(exc))
    out.image = fmt
    if fmt == "png":
        block: ContentBlock = ImageContent(type="image", data=base64.b64encode(picture).decode(),
                                           mime_type="image/png")
    else:
        uri = f"graph://{out.model}/{layer}/{neuron}/svg"
        block = EmbeddedResource(type="resource", resource=TextResourceContents(
            uri=uri, mime_type="image/svg+xml", text=picture.decode()))
    return [block], wording.image_attached(fmt)


def render_graph_dot(
    q: Queries, layer: Layer, neuron: Neuron, model: ModelName = None, units: UnitsName = None,
    max_nodes: Annotated[Count, Field(ge=1, le=MAX_NODES, description="Most nodes to draw; the "
                                      "strongest paths are kept.")] = NODES_DRAWN,
    image: Annotated[Literal["none", "png", "svg"], Field(
        description="Also attach the drawing: 'png' as an image, 'svg' as an image/svg+xml resource "
        "(drawn by the server itself, no Graphviz needed).")] = "none",
) -> Annotated[CallToolResult, RenderOutput]:
    """Draw a neuron's graph as Graphviz DOT, as in the paper: activating tokens red, context
    tokens blue (darker = stronger), edges from context to the activating token, bold where
    a path ends. Each node shows its number: an activating token its activation (share of the
    neuron's max, 0-1), a context token its importance (1 - activation with the token masked /
    activation; above 1 where masking drives it below zero). A leading space shows as '␣',
    '… n' on an edge means n tokens that do not matter, tokens that fire in any context sit in
    one table, and the title carries a legend. Render the text with `dot -Tsvg`, or pass
    image='png' to get a picture."""
    model = unit_model(model, units)
    out = q.render(model, layer, neuron, max_nodes)
    blocks, note = _drawing(q, out, image) if image != "none" else ([], None)
    summary = wording.render(out, max_dot_chars=MAX_DOT_CHARS, max_nodes_allowed=MAX_NODES, image_note=note)
    return result(summary, out, blocks)


def graph_resource(q: Queries, model: str, layer: int, neuron: int) -> str:
    """A neuron's graph described as get_graph does, e.g. graph://smollm2-135m/3/1024"""
    return q.get_graph(model, layer, neuron).model_dump_json(indent=1)

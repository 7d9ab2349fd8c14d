"""The n2g-mcp MCP server: tools, a resource and prompts over the query library.

In: a :class:`n2g_mcp.queries.Queries` (stores, served models, the model side) and the prompt
files of ``prompts/``. Out: an :class:`MCPServer` with the tools list_models, search_graphs,
get_graph, top_activations, find_similar_neurons, render_graph_dot, predict_activations,
build_graph and the whole-model probes (find_neurons, find_induction_neurons, ablate_neurons,
steer_neurons, test_hypothesis), the resource ``graph://{model}/{layer}/{neuron}``, and the workflow prompts.

Each tool is a typed signature (strict types: no ``true`` for a number, no ``"yes"`` for a flag),
a description written for the agent, and one call into the library; its result is the library's
model plus the text of ``n2g_mcp.text``. :func:`_tool` turns the library's errors into MCP tool
errors, in one place. Slow model work runs through ``n2g_mcp.worker``. Transports and options are
chosen by the entry point (``n2g_mcp.main``), not here.
"""

import base64
import functools
import inspect
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp_types import (
    CallToolResult,
    ContentBlock,
    EmbeddedResource,
    ImageContent,
    TextContent,
    TextResourceContents,
    ToolAnnotations,
)
from pydantic import BaseModel, Field, Strict, ValidationError

from n2g_mcp import text as wording
from n2g_mcp.limits import (
    MAX_ABLATE,
    MAX_COMPARE_TOKENS,
    MAX_DOT_CHARS,
    MAX_EACH,
    MAX_FIRING_ROWS,
    MAX_LIMIT,
    MAX_NEW_TOKENS,
    MAX_NODES,
    MAX_PATTERN_CHARS,
    MAX_SEEDS,
    MAX_STEER,
    MAX_STEER_PROMPT_TOKENS,
    MAX_STEER_SCALE,
    MAX_TEXT_CHARS,
)
from n2g_mcp.live import LiveBackend
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
from n2g_mcp.params import (
    Count,
    Cursor,
    Flag,
    Layer,
    Layers,
    ModelName,
    Neuron,
    Neurons,
    Tokens,
)
from n2g_mcp.paths import prompts_dir as default_prompts_dir
from n2g_mcp.prompts import load_prompts
from n2g_mcp.queries import Queries
from n2g_mcp.registry import ServedModels
from n2g_mcp.worker import run_in_worker
from store.errors import N2GError
from store.names import parse_neuron_id
from store.probes import PROBE_LENGTH, PROBE_SEEDS, PROBE_SEQUENCES
from store.render import GraphvizMissing, draw

READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
BUILDS = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)


def _result(summary: str, output: BaseModel, extra: list[ContentBlock] | None = None) -> CallToolResult:
    """A tool result: the short text an agent reads, and the structured content behind it."""
    return CallToolResult(content=[TextContent(type="text", text=summary), *(extra or [])],
                          structured_content=output.model_dump(mode="json"))


def _tool(server: MCPServer, annotations: ToolAnnotations,
          **values: object) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a function as a tool: its docstring, dedented (and formatted with ``values``), is
    the description, and the library's errors become tool errors whose message the agent reads
    (the one place they do)."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def answer(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await fn(*args, **kwargs)
                except N2GError as exc:
                    raise ToolError(str(exc)) from exc
        else:
            @functools.wraps(fn)
            def answer(*args: Any, **kwargs: Any) -> Any:
                try:
                    return fn(*args, **kwargs)
                except N2GError as exc:
                    raise ToolError(str(exc)) from exc

        description = inspect.cleandoc(fn.__doc__ or "")
        server.tool(annotations=annotations, description=description.format(**values) if values else description)(answer)
        return fn

    return register


def _drawing(out: RenderOutput, fmt: str) -> tuple[list[ContentBlock], str]:
    """The drawing as MCP content (PNG as an image, SVG as an embedded resource), and a note."""
    try:
        picture = draw(out.dot, fmt)
    except GraphvizMissing:
        return [], wording.graphviz_missing(fmt)
    except RuntimeError as exc:
        return [], wording.graphviz_failed(fmt, str(exc))
    out.image = fmt
    if fmt == "png":
        block: ContentBlock = ImageContent(type="image", data=base64.b64encode(picture).decode(),
                                           mime_type="image/png")
    else:
        layer, neuron = parse_neuron_id(out.id)
        uri = f"graph://{out.model}/{layer}/{neuron}/svg"
        block = EmbeddedResource(type="resource", resource=TextResourceContents(
            uri=uri, mime_type="image/svg+xml", text=picture.decode()))
    return [block], wording.image_attached(fmt)


# --------------------------------------------------------------------- the server
class _Server(MCPServer):
    """MCPServer whose argument errors read as sentences for the agent, not validator dumps."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                raise ToolError(wording.bad_arguments(name, cause.errors(include_url=False))) from cause
            raise


def create_server(stores_dir: Path, *, live: LiveBackend | None = None, models: ServedModels | None = None,
                  prompts_dir: Path | None = None, queries: Queries | None = None) -> MCPServer:
    """The MCP server over a stores directory.

    Args:
        stores_dir: where the stores are read from and built graphs appended to.
        live: the model side; the real builder by default (loaded lazily, on the first build or
            comparison). Tests pass a double.
        models: the models clients may name; the embedded default alone by default.
        prompts_dir: the markdown prompt files to serve (default: the repository's ``prompts/``).
        queries: the query library to serve, where the caller made one (then the three
            arguments above are not used).
    """
    q = queries if queries is not None else Queries(Path(stores_dir), live, models)
    server = _Server("n2g-mcp", instructions=wording.INSTRUCTIONS)
    tool = functools.partial(_tool, server)

    # ----------------------------------------------------------------- reading the stores
    @tool(READ_ONLY)
    def list_models() -> Annotated[CallToolResult, ListModelsOutput]:
        """List the models with stored neuron graphs: graph counts, layers, corrupt lines skipped,
        the model's shape, and whether graphs can be built here. Call this first."""
        out = q.list_models()
        return _result(wording.list_models(out), out)

    @tool(READ_ONLY)
    def search_graphs(
        activating: Annotated[Tokens, Field(
            max_length=20, description="Tokens the neuron must fire on, all of them, e.g. [' except'] (one "
            "token may be given as a string). Case- and space-insensitive unless exact=true.")] = [],  # noqa: B006
        context: Annotated[Tokens, Field(
            max_length=20, description="Tokens that must appear in the neuron's context (earlier tokens "
            "that make it fire), all of them.")] = [],  # noqa: B006 - pydantic copies defaults
        model: ModelName = None,
        layer: Annotated[Count | None, Field(ge=0, description="Only neurons of this layer.")] = None,
        min_f1: Annotated[Annotated[float, Strict()] | None, Field(
            ge=0, le=1, description="Only graphs whose F1 on held-out examples is at least this.")] = None,
        repeated: Annotated[Flag, Field(
            description="Only graphs where some token is both activating and context: the paper's "
            "search for in-context (induction-like) neurons.")] = False,
        exact: Annotated[Flag, Field(description="Match token spellings exactly (case and spaces).")] = False,
        limit: Annotated[Count, Field(ge=1, le=MAX_LIMIT, description="Results per page.")] = 20,
        cursor: Cursor = None,
    ) -> Annotated[CallToolResult, SearchOutput]:
        """Find neurons by behaviour: graphs that hold all the given activating tokens and all the
        given context tokens. With activating tokens, the graphs they explain most come first (the
        tokens' activation relative to the graph's strongest: `explained`), then best F1; each hit
        lists the matched tokens first. Otherwise best F1 first; with no tokens, lists graphs
        (filtered by layer, min_f1, repeated). Pages with cursor. Tokens usually carry their
        leading space (' the')."""
        out = q.search(activating, context, model=model, exact=exact, layer=layer, min_f1=min_f1,
                       repeated=repeated, limit=limit, cursor=cursor)
        return _result(wording.search(out, activating=activating, context=context, repeated=repeated,
                                   layer=layer, min_f1=min_f1), out)

    @tool(READ_ONLY)
    def get_graph(layer: Layer, neuron: Neuron, model: ModelName = None) -> Annotated[CallToolResult, GraphDescription]:
        """Describe one neuron's stored graph: activating tokens with activations, context tokens
        with importances, fidelity (and the paper's baselines), and pruned examples showing the
        least context that fires it."""
        out = q.get_graph(model, layer, neuron)
        return _result(wording.get_graph(out), out)

    @tool(READ_ONLY)
    def top_activations(
        layer: Layer, neuron: Neuron, model: ModelName = None,
        limit: Annotated[Count, Field(ge=1, le=MAX_LIMIT, description="Examples per page.")] = 10,
        cursor: Cursor = None,
    ) -> Annotated[CallToolResult, TopActivationsOutput]:
        """The corpus windows a neuron fires most on, strongest first, with the activating token
        marked [[like this]]: for any neuron of any layer from the model's whole-corpus scan, with
        its firing density and activation quantiles (source 'scan'); where no scan is served, from
        its stored graph, marking whether each window built the graph (train) or scored it (test)."""
        out = q.top_activations(model, layer, neuron, limit, cursor)
        return _result(wording.top_activations(out), out)

    @tool(READ_ONLY)
    def find_similar_neurons(
        layer: Annotated[Count | None, Field(ge=0, description="Target neuron's layer; with no neuron, "
                                             "limits the pair listing to this layer.")] = None,
        neuron: Annotated[Count | None, Field(ge=0, description="Target neuron; omit to list the most "
                                              "similar pairs in the store.")] = None,
        model: ModelName = None,
        threshold: Annotated[Annotated[float, Strict()], Field(
            ge=0, le=1, description="Least overlap of both the activating and the context token sets "
            "(the paper uses 0.9).")] = 0.9,
        mode: Annotated[Literal["similar", "subset"], Field(
            description="'similar': overlap >= threshold both ways; 'subset': the target's tokens are "
            "contained in the other neuron's (it does what the target does, maybe more).")] = "similar",
        limit: Annotated[Count, Field(ge=1, le=MAX_LIMIT, description="Most results.")] = 20,
    ) -> Annotated[CallToolResult, SimilarOutput]:
        """Find neurons that behave alike: overlap of their activating and context token sets.
        With layer and neuron, the neurons most like that one; without, the most similar pairs
        (duplicates) in the store or in one layer. Uses the search index, not all pairs."""
        out = q.similar(model, layer, neuron, threshold=threshold, mode=mode, limit=limit)
        return _result(wording.similar(out), out)

    @tool(READ_ONLY)
    def render_graph_dot(
        layer: Layer, neuron: Neuron, model: ModelName = None,
        max_nodes: Annotated[Count, Field(ge=1, le=MAX_NODES, description="Most nodes to draw; the "
                                          "strongest paths are kept.")] = 150,
        image: Annotated[Literal["none", "png", "svg"], Field(
            description="Also attach the drawing: 'png' as an image, 'svg' as an image/svg+xml resource "
            "(needs Graphviz on the server).")] = "none",
    ) -> Annotated[CallToolResult, RenderOutput]:
        """Draw a neuron's graph as Graphviz DOT, as in the paper: activating tokens red, context
        tokens blue (darker = stronger), edges from context to the activating token, bold where
        a path ends. Render the text with `dot -Tsvg`, or pass image='png' to get a picture."""
        out = q.render(model, layer, neuron, max_nodes)
        blocks, note = _drawing(out, image) if image != "none" else ([], None)
        summary = wording.render(out, max_dot_chars=MAX_DOT_CHARS, max_nodes_allowed=MAX_NODES, image_note=note)
        return _result(summary, out, blocks)

    # ----------------------------------------------------------------- the live model
    @tool(READ_ONLY, max_tokens=f"{MAX_COMPARE_TOKENS:,}")
    async def predict_activations(
        layer: Layer, neuron: Neuron,
        text: Annotated[Annotated[str, Strict()], Field(
            description=f"The text to run, up to {MAX_TEXT_CHARS} characters (and up to "
            f"{MAX_COMPARE_TOKENS} tokens with compare=true).")],
        ctx: Context,
        model: ModelName = None,
        compare: Annotated[Flag, Field(
            description="Also run the real neuron on the text and report how well the graph agrees "
            "(needs the model; slower).")] = False,
    ) -> Annotated[CallToolResult, PredictOutput]:
        """Predict a neuron's activation on each token of a text from its graph, and with
        compare=true also measure the real neuron and the agreement (precision, recall, F1 on
        firing tokens, correlation). compare=true takes at most {max_tokens} tokens;
        split longer texts. Test a hypothesis by writing texts that should and should not make
        the neuron fire, one call each."""
        name = q.model(model)
        q.graph(name, layer, neuron)  # fail fast, before any thread or model
        q.check_text(text)

        def work(progress: Any, cancel: threading.Event) -> PredictOutput:
            return q.predict(name, layer, neuron, text, compare)

        first = wording.RUNNING_NEURON if compare else wording.TOKENISING
        out = await run_in_worker(ctx, work, first)
        return _result(wording.predict(out, max_rows=MAX_FIRING_ROWS), out)

    @tool(BUILDS)
    async def build_graph(
        layer: Layer, neuron: Neuron, ctx: Context, model: ModelName = None,
        rebuild: Annotated[Flag, Field(description="Build again even if the store has this neuron.")] = False,
    ) -> Annotated[CallToolResult, GraphSummary]:
        """Build a neuron's graph with the live model and add it to the store (returns the stored
        graph if there is one, unless rebuild=true). Slow: seconds to minutes, more the first
        time (the model loads and the corpus is scanned for the layer); reports progress and can be
        cancelled."""
        name = q.model(model)
        q.check_range(name, layer, neuron)

        def work(progress: Any, cancel: threading.Event) -> GraphSummary:
            return q.build(name, layer, neuron, rebuild, progress=progress, cancel=cancel)

        out = await run_in_worker(ctx, work, wording.building(layer, neuron))
        return _result(wording.build(out), out)

    # ----------------------------------------------------------------- probing the whole model
    @tool(READ_ONLY, max_tokens=f"{MAX_COMPARE_TOKENS:,}")
    async def find_neurons(
        text: Annotated[Annotated[str, Strict()], Field(description=f"The text to run (up to {MAX_TEXT_CHARS} "
                                                        f"characters and {MAX_COMPARE_TOKENS} tokens).")],
        ctx: Context,
        token: Annotated[Annotated[str, Strict()] | None, Field(
            max_length=200, description="The token to look at, e.g. ' import' (its last occurrence); "
            "omit for the last token.")] = None,
        position: Annotated[Count | None, Field(
            description="Index of the token instead of token=; -1 is the last.")] = None,
        layers: Layers = None,
        model: ModelName = None,
        limit: Annotated[Count, Field(ge=1, le=MAX_LIMIT, description="Neurons to return.")] = 20,
    ) -> Annotated[CallToolResult, FindNeuronsOutput]:
        """Which neurons fire at a token of any text: one forward pass through all requested
        layers, neurons ranked by activation / their corpus max (1.0 = as strongly as anywhere in
        the corpus). Each hit says whether a graph is stored, with its activating tokens and F1.
        Text of at most {max_tokens} tokens."""
        name = q.model(model)
        q.check_text(text)
        if token is not None and position is not None:
            raise ToolError(wording.TOKEN_OR_POSITION)

        def work(progress: Any, cancel: threading.Event) -> FindNeuronsOutput:
            return q.find_neurons(name, text, token, position, layers, limit)

        out = await run_in_worker(ctx, work, wording.FINDING_NEURONS)
        return _result(wording.find_neurons(out), out)

    @tool(READ_ONLY, seqs=PROBE_SEQUENCES, length=PROBE_LENGTH, runs=len(PROBE_SEEDS))
    async def find_induction_neurons(
        ctx: Context,
        layers: Layers = None,
        model: ModelName = None,
        limit: Annotated[Count, Field(ge=1, le=MAX_LIMIT, description="Neurons to return.")] = 50,
        sequences: Annotated[Count, Field(ge=1, le=64, description="Random sequences per seed.")] = PROBE_SEQUENCES,
        length: Annotated[Count, Field(ge=4, le=128, description="Tokens per sequence (before its copy).")] = PROBE_LENGTH,
        seed: Annotated[Count, Field(ge=0, description="The first seed; same seeds, same sequences and ranking.")] = 0,
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
        deterministic for a seed list; cancellable. Follow up with ablate_neurons (each=true) for
        causal evidence, steer_neurons, and top_activations to read them."""
        name = q.model(model)

        def work(progress: Any, cancel: threading.Event) -> InductionOutput:
            return q.find_induction(name, layers, limit, sequences, length, seed, runs, cancel)

        out = await run_in_worker(ctx, work, wording.RUNNING_INDUCTION)
        return _result(wording.induction(out), out)

    @tool(READ_ONLY, max_neurons=MAX_ABLATE, max_each=MAX_EACH)
    async def ablate_neurons(
        neurons: Annotated[Neurons, Field(max_length=MAX_ABLATE)],
        ctx: Context,
        text: Annotated[Annotated[str, Strict()] | None, Field(
            description="Text to measure the loss on; omit for the induction probe's repeated random "
            "sequences (loss on the second copies, where induction neurons matter).")] = None,
        mode: Annotated[Literal["zero", "mean"], Field(
            description="'zero' sets the activations to 0; 'mean' to their corpus mean.")] = "zero",
        control: Annotated[Flag, Field(description="Also ablate as many random neurons of the same "
                                       "layers, for comparison.")] = True,
        each: Annotated[Flag, Field(description=f"Also ablate every neuron alone and report each one's own "
                                    f"delta (at most {MAX_EACH} neurons; one more pass each).")] = False,
        seed: Annotated[Count, Field(ge=0, description="Without text: the probe's seed (0 = the sequences "
                                     "find_induction_neurons ran first; another for fresh ones).")] = 0,
        model: ModelName = None,
    ) -> Annotated[CallToolResult, AblationOutput]:
        """A causal check: the model's next-token loss with the neurons ablated versus intact
        (at most {max_neurons} neurons), and, with control=true, the same for as many random neurons
        of the same layers. Without text it measures the induction probe's second copies and also
        reports the intact loss on the first copies (is the model copying here?). each=true adds
        each neuron's own delta, ablated alone (at most {max_each} neurons). A delta well above the
        control's means the neurons carry something the model uses here. Also lists the tokens
        whose prediction changed most."""
        name = q.model(model)

        def work(progress: Any, cancel: threading.Event) -> AblationOutput:
            return q.ablate(name, neurons, text, mode, control, seed, each)

        out = await run_in_worker(ctx, work, wording.RUNNING_ABLATION)
        return _result(wording.ablation(out), out)

    @tool(READ_ONLY, max_neurons=MAX_STEER, max_prompt=MAX_STEER_PROMPT_TOKENS, max_new=MAX_NEW_TOKENS)
    async def steer_neurons(
        neurons: Annotated[Neurons, Field(max_length=MAX_STEER)],
        prompt: Annotated[Annotated[str, Strict()], Field(
            min_length=1, description=f"The text to continue (at most {MAX_STEER_PROMPT_TOKENS} tokens).")],
        ctx: Context,
        scale: Annotated[float, Strict(), Field(
            ge=-MAX_STEER_SCALE, le=MAX_STEER_SCALE,
            description="Clamp each neuron to scale x its corpus max at every position: 1 holds it at its "
            "strongest corpus level, 0 silences it, larger or negative pushes beyond.")] = 2.0,
        max_new_tokens: Annotated[Count, Field(ge=1, le=MAX_NEW_TOKENS, description="Tokens to generate "
                                               "for each continuation.")] = 24,
        model: ModelName = None,
    ) -> Annotated[CallToolResult, SteerOutput]:
        """What does the model write with these neurons on? Greedy generation from the prompt,
        clean and with the listed neurons (at most {max_neurons}) clamped to scale x their corpus
        max (from the whole-model scan) at every position, side by side as clean_text and
        steered_text, with the positions whose next-token prediction changed most (KL, read on
        the clean text). Prompt at most {max_prompt} tokens, at most {max_new} new tokens; stops
        at an end-of-text token. Deterministic; reports progress and can be cancelled."""
        name = q.model(model)

        def work(progress: Any, cancel: threading.Event) -> SteerOutput:
            return q.steer(name, neurons, prompt, float(scale), max_new_tokens, progress=progress, cancel=cancel)

        out = await run_in_worker(ctx, work, wording.RUNNING_STEERING)
        return _result(wording.steer(out), out)

    @tool(READ_ONLY, max_chars=MAX_PATTERN_CHARS)
    async def test_hypothesis(
        layer: Layer, neuron: Neuron,
        pattern: Annotated[Annotated[str, Strict()], Field(
            min_length=1, max_length=MAX_PATTERN_CHARS,
            description="kind='regex': a regular expression over the text; every token overlapping a "
            "match is claimed (put required context in a look-behind, e.g. '(?<=from \\w+) import'). "
            "kind='tokens': tokens separated by '|', e.g. ' import| from' (case/space-insensitive).")],
        ctx: Context,
        kind: Annotated[Literal["regex", "tokens"], Field(description="How to read pattern.")] = "regex",
        model: ModelName = None,
    ) -> Annotated[CallToolResult, HypothesisOutput]:
        """Check an explanation at corpus scale: the claim "the neuron fires on the tokens the
        pattern matches", scored with the real activations (precision, recall, F1 on firing
        tokens, correlation) on the neuron's top windows, on random windows, and on corpus windows
        where the pattern matches; lists the worst false positives and false negatives as marked
        windows. Patterns up to {max_chars} characters; a regex that runs too long is stopped."""
        name = q.model(model)

        def work(progress: Any, cancel: threading.Event) -> HypothesisOutput:
            return q.hypothesis(name, layer, neuron, pattern, kind)

        out = await run_in_worker(ctx, work, wording.SCORING_PATTERN)
        return _result(wording.hypothesis(out), out)

    # ----------------------------------------------------------------- resources and prompts
    @server.resource("graph://{model}/{layer}/{neuron}", mime_type="application/json",
                     description="A neuron's graph described as get_graph does, e.g. graph://smollm2-135m/3/1024")
    def graph_resource(model: str, layer: int, neuron: int) -> str:
        try:
            return q.get_graph(model, layer, neuron).model_dump_json(indent=1)
        except N2GError as exc:
            raise ResourceNotFoundError(str(exc)) from exc

    for prompt in load_prompts(prompts_dir or default_prompts_dir()):
        server.add_prompt(prompt)
    return server


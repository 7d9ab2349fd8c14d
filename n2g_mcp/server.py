"""The n2g-mcp MCP server: neuron graphs served to AI agents, over stdio or Streamable HTTP.

In: a directory of stores (``--stores``, default ``$N2G_STORES`` else the repository's
``stores/``) and, for building and checking against the real neuron, the ``builder`` extra. Out:
tools (list_models, search_graphs, get_graph, top_activations, find_similar_neurons,
render_graph_dot, predict_activations, build_graph), a ``graph://{model}/{layer}/{neuron}``
resource, and the workflow prompts of ``prompts/``.

Run it::

    n2g-mcp                                        # stdio, for Claude Code / Claude Desktop
    n2g-mcp --transport http --port 8000           # Streamable HTTP on http://127.0.0.1:8000/mcp
    N2G_MCP_TOKEN=secret n2g-mcp --transport http --host 0.0.0.0   # other addresses need a token

Each tool is a thin typed wrapper over a :class:`n2g_mcp.service.Service` method, which is where
the work and the error messages are. Nothing here knows which transport is in use except
:func:`main`. Logs go to stderr only (stdout is the protocol under stdio).
"""

import argparse
import functools
import hmac
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from n2g_mcp.live import BuilderBackend, LiveBackend
from n2g_mcp.outputs import (
    GraphDescription,
    GraphSummary,
    ListModelsOutput,
    PredictOutput,
    RenderOutput,
    SearchOutput,
    SimilarOutput,
    TopActivationsOutput,
)
from n2g_mcp.paths import STORES_ENV, default_stores_dir, prompts_dir
from n2g_mcp.prompts import load_prompts
from n2g_mcp.service import MAX_LIMIT, MAX_NODES, MAX_TEXT_CHARS, Service

log = logging.getLogger("n2g_mcp")

PROMPTS_DIR = prompts_dir()
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
TOKEN_ENV = "N2G_MCP_TOKEN"

INSTRUCTIONS = """\
Neuron to Graph (N2G): each neuron of a transformer language model is summarised as a graph of
token paths: the tokens it fires on (activating) and the earlier tokens that make it fire
(context). Neurons are named L{layer}/N{neuron}; activations are normalised to the neuron's
largest activation (1.0), and a token "fires" at >= 0.5.
Start with list_models. Find neurons by behaviour with search_graphs (tokens, or repeated=true for
in-context/induction-like neurons); read one with get_graph and top_activations; build one that is
not stored with build_graph; test a hypothesis with predict_activations(compare=true) on texts
that should and should not fire it; find duplicates with find_similar_neurons; draw with
render_graph_dot. The prompts walk through these workflows."""

Layer = Annotated[int, Field(ge=0, description="Layer index, from 0 (list_models gives the model's layers).")]
Neuron = Annotated[int, Field(ge=0, description="Neuron index within the layer's MLP, from 0.")]
ModelName = Annotated[str | None, Field(
    max_length=200, description="Model name; omit for the server's default model (see list_models).")]
Cursor = Annotated[str | None, Field(
    max_length=200, description="next_cursor from the previous page with the same arguments; omit for the first page.")]

READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)

def _result(summary: str, output: BaseModel) -> CallToolResult:
    """A tool result: the short text an agent reads, and the structured content behind it."""
    return CallToolResult(content=[TextContent(type="text", text=summary)],
                          structured_content=output.model_dump(mode="json"))


class _ProgressSlot:
    """The latest progress of a worker thread, read by the event loop (the worker never waits on it).

    The builder reports ``(done, total, message)`` per phase (scanning the corpus, then building),
    each phase starting again from 0. MCP wants one value that only grows, so each phase fills
    half of what is left of 100% (the first 0-50, the next 50-75, ...), and the message keeps the
    phase's own count.
    """

    HEARTBEAT_S = 10.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: tuple[float, str] | None = None
        self._base = 0.0
        self._percent = 0.0
        self._last_fraction: float | None = None
        self._sent = -1.0
        self._message = ""

    def set(self, done: float, total: float, message: str) -> None:
        fraction = max(0.0, min(1.0, done / total)) if total else 0.0
        with self._lock:
            if self._last_fraction is not None and fraction < self._last_fraction:
                self._base = self._percent  # a new phase
            self._last_fraction = fraction
            self._percent = self._base + (100.0 - self._base) * 0.5 * fraction
            count = f" ({done:g}/{total:g})" if total and total > 1 else ""
            self._pending = (self._percent, message + count)

    def take(self, heartbeat: bool = False) -> tuple[float, str] | None:
        """The progress to report now, or None; ``heartbeat`` repeats the last message.

        Each value is larger than the last (a repeat goes up by a hundredth of a percent), and
        stays below 100 until the work returns.
        """
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            if not heartbeat or self._sent < 0:
                return None
            pending = (self._sent, self._message)
        percent, message = pending
        percent = round(max(percent, self._sent + 0.01), 2)
        if percent >= 100:
            return None
        self._sent, self._message = percent, message
        return percent, message


async def _in_worker(ctx: Context, work: Callable[[Callable[[float, float, str], None], threading.Event], Any],
                     first: str) -> Any:
    """Run slow model work in a worker thread, relaying its progress and stopping it if cancelled.

    ``work(progress, cancel)`` runs in a thread; its progress reaches the client every quarter
    second, and at least every ten seconds while it works (so clients that reset their timeout
    on progress keep waiting). If the call is cancelled, the thread is abandoned and ``cancel``
    is set, which the builder checks between batches.
    """
    slot, cancel = _ProgressSlot(), threading.Event()

    async def relay() -> None:
        quiet = 0.0
        while True:
            update = slot.take(heartbeat=quiet >= slot.HEARTBEAT_S)
            if update is not None:
                quiet = 0.0
                await ctx.report_progress(update[0], 100, update[1])
            await anyio.sleep(0.25)
            quiet += 0.25

    slot.set(0, 1, first)
    failure: Exception | None = None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(relay)
            try:
                result = await anyio.to_thread.run_sync(functools.partial(work, slot.set, cancel),
                                                        abandon_on_cancel=True)
            except Exception as exc:  # re-raised below, unwrapped from the task group's ExceptionGroup
                failure = exc
            finally:
                tg.cancel_scope.cancel()
    finally:
        cancel.set()  # a no-op when the work finished; stops an abandoned build at its next batch
    if failure is not None:
        raise failure
    return result


def create_server(stores_dir: Path, *, live: LiveBackend | None = None,
                  prompts_dir: Path = PROMPTS_DIR) -> MCPServer:
    """The MCP server over a stores directory.

    Args:
        stores_dir: where the stores are read from and built graphs appended to.
        live: the model side; the real builder by default (loaded lazily, on the first build or
            comparison). Tests pass ``n2g_mcp.fake_live.FakeLiveBackend``.
        prompts_dir: the markdown prompt files to serve.
    """
    service = Service(Path(stores_dir), live if live is not None else BuilderBackend())
    server = MCPServer("n2g-mcp", instructions=INSTRUCTIONS)

    # ----------------------------------------------------------------- reading the stores
    @server.tool(annotations=READ_ONLY)
    def list_models() -> Annotated[CallToolResult, ListModelsOutput]:
        """List the models with stored neuron graphs: graph counts, layers, corrupt lines skipped,
        the model's shape, and whether graphs can be built here. Call this first."""
        return _result(*service.list_models())

    @server.tool(annotations=READ_ONLY)
    def search_graphs(
        activating: Annotated[list[str], Field(
            max_length=20, description="Tokens the neuron must fire on, all of them, e.g. [' except']. "
            "Case- and space-insensitive unless exact=true.")] = [],  # noqa: B006 - pydantic copies defaults
        context: Annotated[list[str], Field(
            max_length=20, description="Tokens that must appear in the neuron's context (earlier tokens "
            "that make it fire), all of them.")] = [],  # noqa: B006
        model: ModelName = None,
        layer: Annotated[int | None, Field(ge=0, description="Only neurons of this layer.")] = None,
        min_f1: Annotated[float | None, Field(
            ge=0, le=1, description="Only graphs whose F1 on held-out examples is at least this.")] = None,
        repeated: Annotated[bool, Field(
            description="Only graphs where some token is both activating and context: the paper's "
            "search for in-context (induction-like) neurons.")] = False,
        exact: Annotated[bool, Field(description="Match token spellings exactly (case and spaces).")] = False,
        limit: Annotated[int, Field(ge=1, le=MAX_LIMIT, description="Results per page.")] = 20,
        cursor: Cursor = None,
    ) -> Annotated[CallToolResult, SearchOutput]:
        """Find neurons by behaviour: graphs that hold all the given activating tokens and all the
        given context tokens, best F1 first. With no tokens, lists graphs (filtered by layer,
        min_f1, repeated). Pages with cursor. Tokens usually carry their leading space (' the')."""
        return _result(*service.search(model, activating, context, exact=exact, layer=layer, min_f1=min_f1,
                                       repeated=repeated, limit=limit, cursor=cursor))

    @server.tool(annotations=READ_ONLY)
    def get_graph(layer: Layer, neuron: Neuron, model: ModelName = None) -> Annotated[CallToolResult, GraphDescription]:
        """Describe one neuron's stored graph: activating tokens with activations, context tokens
        with importances, fidelity (and the paper's baselines), and pruned examples showing the
        least context that fires it."""
        return _result(*service.get_graph(model, layer, neuron))

    @server.tool(annotations=READ_ONLY)
    def top_activations(
        layer: Layer, neuron: Neuron, model: ModelName = None,
        limit: Annotated[int, Field(ge=1, le=MAX_LIMIT, description="Examples per page.")] = 10,
        cursor: Cursor = None,
    ) -> Annotated[CallToolResult, TopActivationsOutput]:
        """The corpus windows a neuron fires most on (from its stored graph), strongest first,
        with the activating token marked [[like this]] and whether each was used to build the
        graph (train) or held out to score it (test)."""
        return _result(*service.top_activations(model, layer, neuron, limit, cursor))

    @server.tool(annotations=READ_ONLY)
    def find_similar_neurons(
        layer: Annotated[int | None, Field(ge=0, description="Target neuron's layer; with no neuron, "
                                           "limits the pair listing to this layer.")] = None,
        neuron: Annotated[int | None, Field(ge=0, description="Target neuron; omit to list the most "
                                            "similar pairs in the store.")] = None,
        model: ModelName = None,
        threshold: Annotated[float, Field(ge=0, le=1, description="Least overlap of both the activating and "
                                          "the context token sets (the paper uses 0.9).")] = 0.9,
        mode: Annotated[Literal["similar", "subset"], Field(
            description="'similar': overlap >= threshold both ways; 'subset': the target's tokens are "
            "contained in the other neuron's (it does what the target does, maybe more).")] = "similar",
        limit: Annotated[int, Field(ge=1, le=MAX_LIMIT, description="Most results.")] = 20,
    ) -> Annotated[CallToolResult, SimilarOutput]:
        """Find neurons that behave alike: overlap of their activating and context token sets.
        With layer and neuron, the neurons most like that one; without, the most similar pairs
        (duplicates) in the store or in one layer. Uses the search index, not all pairs."""
        return _result(*service.similar(model, layer, neuron, threshold=threshold, mode=mode, limit=limit))

    @server.tool(annotations=READ_ONLY)
    def render_graph_dot(
        layer: Layer, neuron: Neuron, model: ModelName = None,
        max_nodes: Annotated[int, Field(ge=1, le=MAX_NODES, description="Most nodes to draw; the "
                                        "strongest paths are kept.")] = 150,
    ) -> Annotated[CallToolResult, RenderOutput]:
        """Draw a neuron's graph as Graphviz DOT, as in the paper: activating tokens red, context
        tokens blue (darker = stronger), edges from context to the activating token, bold where
        a path ends. Render the text with `dot -Tsvg`."""
        return _result(*service.render(model, layer, neuron, max_nodes))

    # ----------------------------------------------------------------- the live model
    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    async def predict_activations(
        layer: Layer, neuron: Neuron,
        text: Annotated[str, Field(description=f"The text to run, up to {MAX_TEXT_CHARS} characters.")],
        ctx: Context,
        model: ModelName = None,
        compare: Annotated[bool, Field(
            description="Also run the real neuron on the text and report how well the graph agrees "
            "(needs the model; slower).")] = False,
    ) -> Annotated[CallToolResult, PredictOutput]:
        """Predict a neuron's activation on each token of a text from its graph, and with
        compare=true also measure the real neuron and the agreement (precision, recall, F1 on
        firing tokens, correlation). Test a hypothesis by writing texts that should and should
        not make the neuron fire, one call each."""
        model_name = service.model(model)
        service.graph(model_name, layer, neuron)  # fail fast, before any thread or model
        service.check_text(text)

        def work(progress: Callable[[float, float, str], None], cancel: threading.Event):
            return service.predict(model_name, layer, neuron, text, compare)

        first = "running the real neuron (the model loads on first use)" if compare else "tokenising"
        return _result(*await _in_worker(ctx, work, first))

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False,
                                             idempotent_hint=True, open_world_hint=False))
    async def build_graph(
        layer: Layer, neuron: Neuron, ctx: Context, model: ModelName = None,
        rebuild: Annotated[bool, Field(description="Build again even if the store has this neuron.")] = False,
    ) -> Annotated[CallToolResult, GraphSummary]:
        """Build a neuron's graph with the live model and add it to the store (returns the stored
        graph if there is one, unless rebuild=true). Slow: seconds to minutes, more the first
        time (the model loads and the corpus is scanned for the layer); reports progress and can be
        cancelled."""
        model_name = service.model(model)
        service.check_range(model_name, layer, neuron)

        def work(progress: Callable[[float, float, str], None], cancel: threading.Event):
            return service.build(model_name, layer, neuron, rebuild, progress=progress, cancel=cancel)

        return _result(*await _in_worker(ctx, work, f"building L{layer}/N{neuron}"))

    # ----------------------------------------------------------------- resources and prompts
    @server.resource("graph://{model}/{layer}/{neuron}", mime_type="application/json",
                     description="A neuron's graph described as get_graph does, e.g. graph://smollm2-135m/3/1024")
    def graph_resource(model: str, layer: int, neuron: int) -> str:
        try:
            _, description = service.get_graph(model, layer, neuron)
        except ToolError as exc:
            raise ResourceNotFoundError(str(exc)) from exc
        return description.model_dump_json(indent=1)

    for prompt in load_prompts(prompts_dir):
        server.add_prompt(prompt)
    return server


# --------------------------------------------------------------------- HTTP
class BearerTokenMiddleware:
    """ASGI middleware: every HTTP request must carry ``Authorization: Bearer <token>``.

    A shared static token for a server bound beyond the loopback interface. (The SDK's
    ``token_verifier`` expects an OAuth issuer; a static token needs none.)
    """

    def __init__(self, app: Any, token: str) -> None:
        self.app, self._expected = app, f"Bearer {token}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                body = b'{"error": "missing or wrong bearer token; send Authorization: Bearer <token>"}'
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"www-authenticate", b'Bearer realm="n2g-mcp"')]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def http_app(server: MCPServer, *, host: str = "127.0.0.1", token: str | None = None) -> Any:
    """The Streamable HTTP ASGI app (endpoint ``/mcp``), behind a bearer token when one is given.

    Raises:
        ValueError: for a non-loopback host without a token.
    """
    if host not in LOCAL_HOSTS and not token:
        raise ValueError(f"binding {host} exposes the server beyond this machine; pass --token or set "
                         f"{TOKEN_ENV} (clients then send 'Authorization: Bearer <token>')")
    app = server.streamable_http_app(host=host)
    return BearerTokenMiddleware(app, token) if token else app


# --------------------------------------------------------------------- entry point
def _backend() -> LiveBackend:
    from n2g_mcp import fake_live

    if os.environ.get(fake_live.ENV_VAR) == "1":  # TEST HOOK: see n2g_mcp/fake_live.py
        log.warning("%s=1: serving the FAKE live backend (tests only)", fake_live.ENV_VAR)
        return fake_live.FakeLiveBackend()
    return BuilderBackend()


def main(argv: list[str] | None = None) -> None:
    """The ``n2g-mcp`` command."""
    parser = argparse.ArgumentParser(prog="n2g-mcp", description="Serve neuron graphs to AI agents over MCP.")
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio",
                        help="stdio (default, for Claude Code/Desktop) or Streamable HTTP")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                        help=f"bearer token HTTP clients must send (default ${TOKEN_ENV}); "
                             "required to bind anything but loopback")
    parser.add_argument("--stores", type=Path, default=None,
                        help=f"stores directory (default ${STORES_ENV}, else the repository's stores/)")
    parser.add_argument("--log-level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="stderr log level")
    args = parser.parse_args(argv)

    logging.basicConfig(stream=sys.stderr, level=args.log_level,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stores = (args.stores or default_stores_dir()).expanduser().resolve()
    server = create_server(stores, live=_backend())
    log.info("serving stores from %s over %s", stores, args.transport)
    if args.transport == "stdio":
        server.run("stdio")
        return
    try:
        app = http_app(server, host=args.host, token=args.token)
    except ValueError as exc:
        parser.error(str(exc))
    import uvicorn

    print(f"n2g-mcp: Streamable HTTP on http://{args.host}:{args.port}/mcp"
          + (" (bearer token required)" if args.token else ""), file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower())


if __name__ == "__main__":
    main()

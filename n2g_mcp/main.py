"""The ``n2g-mcp`` command: options, logging and the transport; everything else is below it.

    n2g-mcp                                        # stdio, for Claude Code / Claude Desktop
    n2g-mcp --transport http --port 8000           # Streamable HTTP on http://127.0.0.1:8000/mcp
    N2G_MCP_TOKEN=secret n2g-mcp --transport http --host 0.0.0.0   # other addresses need a token
    n2g-mcp --model tiny=/models/tiny-llama        # also serve a local model, as "tiny"
    n2g-mcp view                                   # the browser viewer alone, on http://127.0.0.1:8000/
    n2g-mcp --dictionary my-sae=/saes/smollm2      # also serve an SAE's latents, as units="my-sae"

Over HTTP the viewer's pages are at ``/`` beside ``/mcp``; tools that answer about one neuron link
to its page (``viewer_url``): over HTTP on this server, over stdio under ``--viewer-url``.

Logs go to stderr only (stdout is the protocol under stdio). Only this module knows which
transport is in use.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from n2g_mcp.auth import TOKEN_ENV, BearerTokenMiddleware, check_exposure, http_app
from n2g_mcp.live import LiveBackend
from n2g_mcp.paths import STORES_ENV, default_stores_dir
from n2g_mcp.registry import ServedModels, parse_model_option
from n2g_mcp.queries import Queries
from n2g_mcp.server import create_server
from n2g_mcp.viewer.app import viewer_app, viewer_routes
from n2g_mcp.viewer.links import DEFAULT_VIEWER_URL, http_base
from store.dictionaries import embedded_dictionaries, parse_dictionary_option
from store.models import DEFAULT_MODEL, EMBEDDED, ModelSpec

log = logging.getLogger("n2g_mcp")


def make_parser() -> argparse.ArgumentParser:
    """The argument parser of ``n2g-mcp``."""
    parser = argparse.ArgumentParser(prog="n2g-mcp", description="Serve neuron graphs to AI agents over MCP.")
    parser.add_argument("command", nargs="?", choices=["serve", "view"], default="serve",
                        help="serve (default): the MCP server; view: the browser viewer alone, over HTTP "
                             "(prints its address; opens nothing)")
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio",
                        help="stdio (default, for Claude Code/Desktop) or Streamable HTTP")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                        help=f"bearer token HTTP clients must send (default ${TOKEN_ENV}); "
                             "required to bind anything but loopback")
    parser.add_argument("--stores", type=Path, default=None,
                        help=f"stores directory (default ${STORES_ENV}, else the repository's stores/ when run from a "
                             "clone, else ~/.local/share/n2g-mcp/stores)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                        help="also serve a local model (Hugging Face folder or .gguf) under NAME; repeatable")
    parser.add_argument("--dictionary", action="append", default=[], metavar="NAME=PATH",
                        help="also serve a dictionary's latents (an SAE or transcoder folder in SAELens, sparsify "
                             "or Gemma Scope 2 format; online a Hugging Face repo or saelens:RELEASE/SAE_ID) as "
                             "units=NAME of the default model, or MODEL@NAME=PATH of another; repeatable")
    parser.add_argument("--default-model", metavar="NAME",
                        help=f"the model tools use when none is named (default: the embedded {DEFAULT_MODEL})")
    parser.add_argument("--allow-hub-models", action="store_true",
                        help="let clients name models on the Hugging Face hub (downloads them)")
    parser.add_argument("--show-paths", action="store_true",
                        help="show the server's folders (stores, cache) in answers and errors to HTTP clients "
                             "too; stdio clients, local users, always see them")
    parser.add_argument("--viewer-url", default=DEFAULT_VIEWER_URL, metavar="URL",
                        help="over stdio, the viewer base the tools' neuron links point to (default "
                             f"{DEFAULT_VIEWER_URL}, where `n2g-mcp view` serves); 'none' for no links. Over "
                             "HTTP the links point to this server")
    parser.add_argument("--log-level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="stderr log level")
    return parser


def _index_now(queries: Queries) -> None:
    """Bring the stores' index in step (a failure is logged; the first call tries again)."""
    try:
        queries.catalog.index.refresh()
    except Exception:
        log.exception("indexing %s at start failed", queries.catalog.directory)


def main(argv: Sequence[str] | None = None, *, live: LiveBackend | None = None,
         models: ServedModels | None = None) -> None:
    """The ``n2g-mcp`` command; ``live`` and ``models`` replace the real model side and the models
    the options name (tests pass doubles)."""
    parser = make_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        configured = [parse_model_option(option) for option in args.model]
    except ValueError as exc:
        parser.error(str(exc))
    by_name = {spec.name: spec for spec in configured} | {name: ModelSpec.embedded(name) for name in EMBEDDED}
    if args.default_model and args.default_model not in by_name:
        parser.error(f"--default-model {args.default_model!r} is neither embedded nor given with --model")
    try:
        dictionaries = [parse_dictionary_option(option, args.default_model or DEFAULT_MODEL)
                        for option in args.dictionary]
    except ValueError as exc:
        parser.error(str(exc))
    if models is None:
        models = ServedModels(default=by_name.get(args.default_model or DEFAULT_MODEL), configured=configured,
                              allow_hub=args.allow_hub_models,
                              dictionaries=[*embedded_dictionaries(), *dictionaries])
    elif dictionaries:
        models.dictionaries.update({d.key: d for d in dictionaries})
    stores = (args.stores or default_stores_dir()).expanduser().resolve()
    if not stores.is_dir():
        # Not an error: the first build_graph makes it. But a server meant to serve prebuilt
        # stores (an installed one, not pointed at them) says so where its operator looks.
        log.warning("no stores folder at %s: serving no graphs until some are built; pass --stores DIR "
                    "or set %s=DIR to serve a folder of stores (docs/install.md)", stores, STORES_ENV)
    # A stdio client is a local user, who may see the folders; an HTTP one may be anyone.
    over_http = args.transport == "http" or args.command == "view"
    links = http_base(args.host, args.port) if over_http else (
        None if args.viewer_url.lower() == "none" else args.viewer_url)
    q = Queries(stores, live, models, show_paths=not over_http or args.show_paths, viewer_url=links)
    try:
        if over_http:
            check_exposure(args.host, args.token)
    except ValueError as exc:
        parser.error(str(exc))
    # The index is brought in step now, not at the first call: a store never seen is indexed (its
    # sidecar copied in) while the client starts its session (or the viewer its first page).
    threading.Thread(target=_index_now, args=(q,), daemon=True, name="n2g-index-start").start()
    if args.command == "view":
        app = viewer_app(q)
        # The address is this command's output: on stdout (no protocol runs there).
        _serve(BearerTokenMiddleware(app, args.token) if args.token else app, args,
               f"n2g-mcp viewer: {links}/" + ("?token=<token> (once; the browser keeps it)" if args.token else ""),
               sys.stdout)
        return
    server = create_server(stores, queries=q)
    log.info("serving stores from %s over %s", stores, args.transport)
    if args.transport == "stdio":
        server.run("stdio")
        return
    app = http_app(server, host=args.host, token=args.token, pages=viewer_routes(q))
    _serve(app, args, f"n2g-mcp: Streamable HTTP on {links}/mcp" + (" (bearer token required)" if args.token else "")
           + f"; viewer on {links}/")


def _serve(app: object, args: argparse.Namespace, banner: str, stream: TextIO = sys.stderr) -> None:
    """Run an ASGI app with uvicorn, saying where (on stderr unless told: stdout may be a protocol)."""
    import uvicorn

    print(banner, file=stream, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower())


if __name__ == "__main__":
    main()

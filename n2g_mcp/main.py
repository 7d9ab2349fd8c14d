"""The ``n2g-mcp`` command: options, logging and the transport; everything else is below it.

    n2g-mcp                                        # stdio, for Claude Code / Claude Desktop
    n2g-mcp --transport http --port 8000           # Streamable HTTP on http://127.0.0.1:8000/mcp
    N2G_MCP_TOKEN=secret n2g-mcp --transport http --host 0.0.0.0   # other addresses need a token
    n2g-mcp --model tiny=/models/tiny-llama        # also serve a local model, as "tiny"
    n2g-mcp --dictionary my-sae=/saes/smollm2      # also serve an SAE's latents, as units="my-sae"

Logs go to stderr only (stdout is the protocol under stdio). Only this module knows which
transport is in use.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from n2g_mcp.auth import TOKEN_ENV, http_app
from n2g_mcp.live import LiveBackend
from n2g_mcp.paths import STORES_ENV, default_stores_dir
from n2g_mcp.registry import ServedModels, parse_model_option
from store.dictionaries import embedded_dictionaries, parse_dictionary_option
from n2g_mcp.server import create_server
from store.models import DEFAULT_MODEL, EMBEDDED, ModelSpec

log = logging.getLogger("n2g_mcp")


def make_parser() -> argparse.ArgumentParser:
    """The argument parser of ``n2g-mcp``."""
    parser = argparse.ArgumentParser(prog="n2g-mcp", description="Serve neuron graphs to AI agents over MCP.")
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
    parser.add_argument("--log-level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="stderr log level")
    return parser


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
    server = create_server(stores, live=live, models=models,
                           show_paths=args.transport == "stdio" or args.show_paths)
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

"""``n2g store compact``: several stores of one model rewritten as one."""

from __future__ import annotations

import argparse
import sys

from n2g_mcp.cli.evaluate import read_checked
from store.errors import BadArgument
from store.graph import NeuronGraph
from store.jsonl import describe_corrupt, write_store


def cmd_compact(args: argparse.Namespace) -> int:
    stores = [read_checked(source) for source in args.sources]
    models = {store.model for store in stores}
    if len(models) > 1:
        raise BadArgument(f"the sources hold different models ({', '.join(sorted(models))}); "
                          "compact each model's stores separately")
    graphs: dict[tuple[int, int], NeuronGraph] = {}
    for store in stores:  # a later source wins for a neuron in several, as in a stores directory
        if report := describe_corrupt(store):
            print(report, file=sys.stderr)
        graphs.update(store.graphs)
    first = stores[0]
    count = write_store(args.target, first.model, graphs.values(), shape=first.shape)
    print(f"wrote {count} graphs of {first.model} to {args.target}")
    return 0


def add_store_command(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``store`` (maintenance sub-commands) to a parser; returns its parser."""
    s = sub.add_parser("store", help="store maintenance")
    ssub = s.add_subparsers(dest="store_command", required=True)
    c = ssub.add_parser("compact", help="rewrite stores as one (last line per neuron wins, and the "
                                        "last source); .gz compresses")
    c.add_argument("sources", nargs="+", help="stores to merge, in order (a later one wins)")
    c.add_argument("target")
    c.set_defaults(func=cmd_compact)
    return s

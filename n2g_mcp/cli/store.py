"""``n2g store compact``: several stores of one model rewritten as one, examples as scan references.

    n2g store compact stores/a.jsonl stores/b.jsonl stores/all.jsonl.gz
    n2g store compact --scan-file stores/smollm2-135m.scan.npz old.jsonl.gz stores/smollm2-135m.jsonl.gz
    n2g store compact --layers 0-4 atlas.jsonl stores/smollm2-135m.ordinary-L00-04.jsonl.gz   # one part

With ``--scan-file`` the target is store format 2: every text example found in the scan's windows
becomes a reference (``store/examples.py``; one that is not found stays text), and the header names
the scan file. Without it, references in the sources are kept, pointing into their one scan file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from n2g_mcp.cli.evaluate import read_checked
from n2g_mcp.cli.ranges import parse_range
from n2g_mcp.registry import ServedModels
from store.errors import BadArgument
from store.examples import Referrer, ScanRef, has_refs, scan_ref
from store.graph import NeuronGraph
from store.jsonl import Store, describe_corrupt, write_store
from store.sidecar import write_sidecar


def _referenced_scan(stores: list[Store]) -> ScanRef | None:
    """The one scan file the sources' references point into (None: they hold none)."""
    refs = {store.header.scan for store in stores
            if any(has_refs(g.examples) or has_refs(g.pruned) for g in store)}
    if len(refs) > 1:
        names = ", ".join(sorted(f"{r.name} ({r.windows_key})" for r in refs if r is not None))
        raise BadArgument(f"the sources refer to different scan files ({names}); compact those of one scan")
    return next(iter(refs), None)


def _to_refs(graphs: list[NeuronGraph], scan_path: Path, model: str) -> tuple[list[NeuronGraph], ScanRef, int]:
    """The graphs with their text examples made references into a scan file; how many stayed text."""
    from store.scanfile import ScanFile

    scan = ScanFile(scan_path)
    if scan.key != model:
        raise BadArgument(f"{scan_path} is a scan of {scan.key}, not {model}")
    referrer = Referrer(scan)
    out, kept = [], 0
    for graph in graphs:
        inside = graph.layer < scan.n_layers and graph.neuron < scan.d_mlp
        candidates = scan.top_window[graph.layer, :, graph.neuron] if inside else None
        examples, pruned, left = referrer.refer(graph.examples, graph.pruned, candidates)
        out.append(graph.model_copy(update={"examples": examples, "pruned": pruned}))
        kept += left
    return out, scan_ref(scan, scan_path.name), kept


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
    scan = _referenced_scan(stores)
    chosen = list(graphs.values())
    if args.layers:  # a part of a store too large for one file (a server reads a model's parts as one)
        wanted = set(parse_range(args.layers))
        chosen = [g for g in chosen if g.layer in wanted]
        if not chosen:
            raise BadArgument(f"the sources hold no graphs of layers {args.layers}")
    note = ""
    if args.scan_file:
        chosen, target_scan, kept = _to_refs(chosen, Path(args.scan_file), first.model)
        if scan is not None and scan != target_scan:
            raise BadArgument(f"the sources refer to the scan file {scan.name} ({scan.windows_key}), not "
                              f"{Path(args.scan_file).name} ({target_scan.windows_key}); compact them with it")
        scan = target_scan
        note = f"; examples as references into {scan.name} ({kept} left as text: not found in its windows)"
    count = write_store(args.target, first.model, chosen, shape=first.shape, scan=scan)
    print(f"wrote {count} graphs of {first.model} to {args.target}{note}")
    sidecar = write_sidecar(Path(args.target), ServedModels().shape)  # a server new to it answers at once
    if sidecar is not None:
        print(f"wrote its sidecar index {sidecar}")
    return 0


def add_store_command(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``store`` (maintenance sub-commands) to a parser; returns its parser."""
    s = sub.add_parser("store", help="store maintenance")
    ssub = s.add_subparsers(dest="store_command", required=True)
    c = ssub.add_parser("compact", help="rewrite stores as one (last line per neuron wins, and the "
                                        "last source); .gz compresses")
    c.add_argument("sources", nargs="+", help="stores to merge, in order (a later one wins)")
    c.add_argument("target")
    c.add_argument("--scan-file", help="the model's scan file (e.g. stores/<model>.scan.npz): store the "
                                       "examples as references into it (format 2), the scan kept beside "
                                       "the target under the same name")
    c.add_argument("--layers", help="only these layers' graphs, e.g. 0-4 (a store shipped in parts)")
    c.set_defaults(func=cmd_compact)
    return s

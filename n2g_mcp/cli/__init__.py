"""The ``n2g`` command: build neuron graphs into a store, scan a model, report fidelity.

    n2g build --model smollm2-135m --layers 0 --neurons 0-63
    n2g scan                      # every layer's top windows and statistics -> stores/<model>.scan.npz
    n2g logits                    # every neuron's promoted/suppressed tokens -> stores/<model>.logits.npz
    n2g eval  --store stores/smollm2-135m.jsonl
    n2g store compact stores/smollm2-135m.jsonl stores/smollm2-135m.jsonl.gz
    n2g index                     # the stores' search index, made before the server needs it

One sub-command a module: ``build.py`` (build and scan), ``logits.py``, ``evaluate.py``, ``store.py``,
``index.py``, ``dictionary.py``;
``ranges.py`` parses the layer and neuron selections. Bad arguments and every
:class:`store.errors.N2GError` end with one line on stderr and exit status 2, never a traceback.
Torch is imported only by the commands that run a model, when they run.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from n2g_mcp.cli.build import add_build_command, add_scan_command
from n2g_mcp.cli.dictionary import add_dictionary_command
from n2g_mcp.cli.evaluate import add_eval_command
from n2g_mcp.cli.index import add_index_command
from n2g_mcp.cli.logits import add_logits_command
from n2g_mcp.cli.store import add_store_command
from n2g_mcp.paths import default_stores_dir
from store.errors import N2GError


def make_parser() -> argparse.ArgumentParser:
    """The argument parser of ``n2g``."""
    parser = argparse.ArgumentParser(prog="n2g", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)
    add_build_command(sub, default_stores_dir())
    add_scan_command(sub, default_stores_dir())
    add_eval_command(sub, default_stores_dir())
    add_logits_command(sub, default_stores_dir())
    add_store_command(sub)
    add_index_command(sub, default_stores_dir())
    add_dictionary_command(sub, default_stores_dir())
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``n2g``."""
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("transformers", "transformer_lens", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("n2g: interrupted; finished batches are in the store, run again to resume", file=sys.stderr)
        return 130
    except (N2GError, FileNotFoundError) as exc:
        print(f"n2g: error: {exc}", file=sys.stderr)
        return 2


"""``n2g index``: make (or bring in step) the search index of a stores directory, before serving it.

    n2g index                    # the repository's stores/ ($N2G_STORES)
    n2g index --stores DIR

The server keeps an SQLite index beside the stores (``store/sqlindex.py``) and makes it itself in
the background for stores it has not seen, its answers waiting for it. ``make setup`` runs this
command so that a fresh clone's first call finds the index made: the index is tied to the files
it indexed (size and modification time, and a hash of their content), so a store changed since is
indexed again, never read from the index as it was. Run it again at any time: where nothing
changed it only compares the files. It also writes, beside each store that lacks a current one,
the store's sidecar index (``store/sidecar.py``), with which a server that has never seen the
store (a copy of it, another folder) answers from its first call instead of reading it whole.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from n2g_mcp.registry import ServedModels
from store.catalog import Catalog
from store.sidecar import current_sidecar, write_sidecar
from store.sqlfiles import is_store_file


def cmd_index(args: argparse.Namespace) -> int:
    stores = Path(args.stores).expanduser().resolve()
    start = time.perf_counter()
    # The shapes the server checks lines against where a store's header has none (the models it
    # serves by default), so that both accept the same lines.
    shapes = ServedModels().shape
    catalog = Catalog(stores, shapes=shapes)
    views = catalog.models()
    seconds = time.perf_counter() - start
    for view in views:
        print(f"{view.model}: {len(view):,} graphs in {', '.join(view.files)}"
              + (f" ({view.corrupt_lines} corrupt lines skipped)" if view.corrupt_lines else ""))
    for problem in catalog.problems:
        print(f"not a store: {problem}")
    print(f"index {catalog.index.path} in step with {stores} ({seconds:.1f} s)")
    catalog.index.close()
    if args.sidecars and os.access(stores, os.W_OK):
        for path in sorted(p for p in stores.iterdir() if is_store_file(p)):
            if current_sidecar(path, shapes) is None:
                start = time.perf_counter()
                written = write_sidecar(path, shapes)
                if written is not None:
                    print(f"wrote {written.name} ({time.perf_counter() - start:.1f} s)")
    return 0


def add_index_command(sub: argparse._SubParsersAction, default_stores: Path) -> argparse.ArgumentParser:
    """Add ``index`` to a parser; returns its parser."""
    p = sub.add_parser("index", help="make the stores directory's search index (the server's first "
                                     "calls then find it made)")
    p.add_argument("--stores", default=str(default_stores),
                   help=f"stores directory (default $N2G_STORES, else {default_stores})")
    p.add_argument("--no-sidecars", dest="sidecars", action="store_false",
                   help="do not write a sidecar index beside each store that lacks a current one "
                        "(store/sidecar.py: a server that has never seen the store then reads it whole)")
    p.set_defaults(func=cmd_index)
    return p

"""``n2g index``: make (or bring in step) the search index of a stores directory, before serving it.

    n2g index                    # the repository's stores/ ($N2G_STORES)
    n2g index --stores DIR

The server keeps an SQLite index beside the stores (``store/sqlindex.py``) and makes it itself in
the background for stores it has not seen, its answers waiting for it. ``make setup`` runs this
command so that a fresh clone's first call finds the index made: the index is tied to the files
it indexed (size and modification time, and a hash of their content), so a store changed since is
indexed again, never read from the index as it was. Run it again at any time: where nothing
changed it only compares the files.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from n2g_mcp.registry import ServedModels
from store.catalog import Catalog


def cmd_index(args: argparse.Namespace) -> int:
    stores = Path(args.stores).expanduser().resolve()
    start = time.perf_counter()
    # The shapes the server checks lines against where a store's header has none (the models it
    # serves by default), so that both accept the same lines.
    catalog = Catalog(stores, shapes=ServedModels().shape)
    views = catalog.models()
    seconds = time.perf_counter() - start
    for view in views:
        print(f"{view.model}: {len(view):,} graphs in {', '.join(view.files)}"
              + (f" ({view.corrupt_lines} corrupt lines skipped)" if view.corrupt_lines else ""))
    for problem in catalog.problems:
        print(f"not a store: {problem}")
    print(f"index {catalog.index.path} in step with {stores} ({seconds:.1f} s)")
    catalog.index.close()
    return 0


def add_index_command(sub: argparse._SubParsersAction, default_stores: Path) -> argparse.ArgumentParser:
    """Add ``index`` to a parser; returns its parser."""
    p = sub.add_parser("index", help="make the stores directory's search index (the server's first "
                                     "calls then find it made)")
    p.add_argument("--stores", default=str(default_stores),
                   help=f"stores directory (default $N2G_STORES, else {default_stores})")
    p.set_defaults(func=cmd_index)
    return p

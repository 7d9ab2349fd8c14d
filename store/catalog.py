"""The stores in a directory, grouped by model, merged and indexed, refreshed when files change.

In: a directory (the server's ``--stores``). Every ``*.jsonl`` and ``*.jsonl.gz`` file in it is a
store; its header names its model. Out: per model, the merged graphs and a
:class:`store.index.GraphIndex` over them, and where new graphs of that model are written::

    catalog = Catalog(Path("stores"))
    catalog.models()                         # [ModelStores(model="smollm2-135m", ...), ...]
    view = catalog.get("smollm2-135m")       # None where no store holds that model
    view.index.search(repeated=True)
    catalog.writable_path("smollm2-135m")    # stores/smollm2-135m.jsonl

Merging: a model's compressed stores (shipped, read-only) are read first and its plain ``.jsonl``
stores (where builds append) after, each group in name order; a neuron in several files keeps
the graph read last, so a graph built here overrides a shipped one.

Refreshing: every call stats the directory's store files (cheap) and re-reads only a file whose
size or modification time changed; a model's merged view and index are rebuilt only when one of
its files changed. Corrupt lines are skipped by :func:`store.jsonl.read_store`, counted here and
described for the user; a file that is not a store at all is listed in :attr:`Catalog.problems`.
Lines are checked against the model's shape: the header's where it records one, else the one
``shapes`` gives (the server passes its registry of known models), so a line with a layer or
neuron the model lacks is skipped like a corrupt one.

No torch, no model: this module only reads files. It is thread-safe (the MCP server reads it from
worker threads).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from store.graph import NeuronGraph
from store.index import GraphIndex
from store.jsonl import Shape, Store, StoreFormatError, describe_corrupt, read_header, read_store
from store.names import file_safe

log = logging.getLogger(__name__)

STORE_SUFFIXES = (".jsonl", ".jsonl.gz")


def store_filename(model: str) -> str:
    """The file name of a model's writable store: the model name with unsafe characters replaced.

    >>> store_filename("smollm2-135m"), store_filename("NeelNanda/SoLU_6L")
    ('smollm2-135m.jsonl', 'NeelNanda_SoLU_6L.jsonl')
    """
    return f"{file_safe(model)}.jsonl"


def _is_store_file(path: Path) -> bool:
    return path.is_file() and path.name.endswith(STORE_SUFFIXES) and not path.name.startswith(".")


def _merge_order(path: Path) -> tuple[bool, str]:
    # Compressed (shipped) stores first, plain (written here) last: the last read wins.
    return (not path.name.endswith(".gz"), path.name)


@dataclass(frozen=True)
class _Signature:
    size: int
    mtime_ns: int


@dataclass
class ModelStores:
    """One model's stores, merged: its graphs, their index, and what was skipped."""

    model: str
    stores: list[Store]
    """The model's store files as read, in merge order."""
    graphs: dict[tuple[int, int], NeuronGraph] = field(default_factory=dict)

    @classmethod
    def merge(cls, model: str, stores: list[Store]) -> ModelStores:
        """Merge stores of one model; later stores win for a neuron in several."""
        view = cls(model=model, stores=stores)
        for store in stores:
            view.graphs.update(store.graphs)
        return view

    @cached_property
    def index(self) -> GraphIndex:
        """The search index over the merged graphs (built on first use)."""
        return GraphIndex(self.graphs.values())

    def get(self, layer: int, neuron: int) -> NeuronGraph | None:
        """The graph of one neuron, or None."""
        return self.graphs.get((layer, neuron))

    def __len__(self) -> int:
        return len(self.graphs)

    def layers(self) -> list[int]:
        """The layers that have at least one graph, ascending."""
        return sorted({layer for layer, _ in self.graphs})

    @property
    def files(self) -> list[str]:
        """The names of the model's store files, in merge order."""
        return [store.path.name for store in self.stores]

    @property
    def corrupt_lines(self) -> int:
        """Lines skipped, over all the model's files."""
        return sum(len(store.corrupt) for store in self.stores)

    def corrupt_reports(self) -> list[str]:
        """One line per file with skipped lines, saying which and why."""
        return [describe_corrupt(store) for store in self.stores if store.corrupt]


class Catalog:
    """The stores of one directory, by model; see the module docstring.

    Args:
        directory: where the stores are; it need not exist yet (a first build creates it).
        shapes: ``(n_layers, d_mlp)`` of a model by name, or None where unknown; used for
            stores whose header does not record the shape.
    """

    def __init__(self, directory: Path, shapes: Callable[[str], Shape | None] | None = None) -> None:
        self.directory = Path(directory)
        self._shapes = shapes
        self._lock = threading.RLock()
        self._files: dict[Path, tuple[_Signature, Store]] = {}
        self._problems: dict[Path, tuple[_Signature, str]] = {}
        self._views: dict[str, tuple[tuple[tuple[Path, _Signature], ...], ModelStores]] = {}

    # ----------------------------------------------------------------- refreshing
    def _scan(self) -> dict[Path, _Signature]:
        if not self.directory.is_dir():
            return {}
        found: dict[Path, _Signature] = {}
        for path in self.directory.iterdir():
            if not _is_store_file(path):
                continue
            try:
                stat = path.stat()
            except OSError:  # removed between listing and stat
                continue
            found[path] = _Signature(stat.st_size, stat.st_mtime_ns)
        return found

    def _read(self, path: Path) -> Store:
        header = read_header(path)
        if header.shape is not None or self._shapes is None:
            return read_store(path)
        return read_store(path, shape=self._shapes(header.model))

    def refresh(self) -> None:
        """Re-read the files that changed since the last call; forget the ones removed."""
        with self._lock:
            current = self._scan()
            for path in list(self._files):
                if path not in current:
                    del self._files[path]
            for path in list(self._problems):
                if path not in current:
                    del self._problems[path]
            for path, signature in current.items():
                cached = self._files.get(path)
                if cached is not None and cached[0] == signature:
                    continue
                problem = self._problems.get(path)
                if problem is not None and problem[0] == signature:
                    continue
                try:
                    store = self._read(path)
                except (StoreFormatError, OSError) as exc:
                    self._files.pop(path, None)
                    self._problems[path] = (signature, f"{path.name}: {exc}")
                    log.warning("skipping %s: %s", path, exc)
                    continue
                self._problems.pop(path, None)
                self._files[path] = (signature, store)
                if store.corrupt:
                    log.warning("%s", describe_corrupt(store))

    def invalidate(self) -> None:
        """Forget every cached file (the next call re-reads them all)."""
        with self._lock:
            self._files.clear()
            self._problems.clear()
            self._views.clear()

    # ----------------------------------------------------------------- views
    def _view(self, model: str) -> ModelStores | None:
        paths = sorted((p for p, (_, s) in self._files.items() if s.model == model), key=_merge_order)
        if not paths:
            self._views.pop(model, None)
            return None
        key = tuple((p, self._files[p][0]) for p in paths)
        cached = self._views.get(model)
        if cached is not None and cached[0] == key:
            return cached[1]
        view = ModelStores.merge(model, [self._files[p][1] for p in paths])
        self._views[model] = (key, view)
        return view

    def models(self) -> list[ModelStores]:
        """Every model with at least one store file, by name (refreshes first)."""
        with self._lock:
            self.refresh()
            names = sorted({store.model for _, store in self._files.values()})
            return [view for name in names if (view := self._view(name)) is not None]

    def get(self, model: str) -> ModelStores | None:
        """One model's merged stores, or None where no file holds that model (refreshes first)."""
        with self._lock:
            self.refresh()
            return self._view(model)

    @property
    def problems(self) -> list[str]:
        """Files in the directory that could not be read as stores, with the reason."""
        with self._lock:
            return [reason for _, reason in sorted(self._problems.values(), key=lambda p: p[1])]

    def writable_path(self, model: str) -> Path:
        """Where new graphs of a model are appended: its existing plain store, else ``<model>.jsonl``."""
        with self._lock:
            self.refresh()
            for path, (_, store) in sorted(self._files.items()):
                if store.model == model and not path.name.endswith(".gz"):
                    return path
            return self.directory / store_filename(model)

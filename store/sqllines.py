"""Reading a graph's stored line back: through the index (a byte range of a plain store, or of
a ``.gz`` store's text kept in compressed blocks or read through its access points), or from the store files themselves for a call
that could not wait for the index.

:class:`LineReader` is a part of :class:`store.sqlindex.StoreIndex`, which holds the connection
(``db``, ``_lock``); the stores ``directory`` and each model's shape come from the file-indexing
steps (``store.sqlfiles.FileIndexer``).
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import zlib

from indexed_gzip import IndexedGzipFile

from store.errors import StoreFormatError
from store.examples import ScanRef
from store.jsonl import read_header
from store.lines import LineError, index_line, iter_lines
from store.sidecar import open_points
from store.sqlfiles import FileIndexer, is_store_file, merge_order

log = logging.getLogger(__name__)

_LOCATED = re.compile(rb'"layer"\s*:\s*(\d+)\s*,\s*"neuron"\s*:\s*(\d+)')
"""Where a line names its neuron, as the writers write it (a line that does not is parsed whole)."""


class LineReader(FileIndexer):
    """The line-reading part of the store index, on top of its file-indexing steps (see the
    module docstring)."""

    _lock: threading.RLock
    _opened: dict[tuple[int, int], IndexedGzipFile]
    """``.gz`` stores opened through their access points, by file id and index generation."""
    generation: int

    @property
    def db(self) -> sqlite3.Connection:
        raise NotImplementedError  # the index's connection (StoreIndex.db)

    def scan(self, graph_id: int) -> ScanRef | None:
        """The scan file its store's header points a graph's example references into, or None."""
        with self._lock:
            row = self.db.execute("SELECT f.scan FROM graphs g JOIN files f ON f.id=g.file WHERE g.id=?",
                                  (graph_id,)).fetchone()
        return None if row is None or row[0] is None else ScanRef.model_validate_json(row[0])

    def line(self, graph_id: int) -> bytes:
        """The stored line of a graph, as written.

        Raises:
            LookupError: where the graph is no longer in the index.
            OSError: where its file cannot be read.
        """
        with self._lock:
            row = self.db.execute("SELECT f.name, g.file, g.offset, g.length FROM graphs g JOIN files f "
                                  "ON f.id=g.file WHERE g.id=?", (graph_id,)).fetchone()
            if row is None:
                raise LookupError(f"graph {graph_id} is not in the index")
            name, file_id, offset, length = row
            if name.endswith(".gz"):
                block = self.db.execute("SELECT start, data FROM blocks WHERE file=? AND start<=? "
                                        "ORDER BY start DESC LIMIT 1", (file_id, offset)).fetchone()
                if block is None:
                    return self._through_points(file_id, name, offset, length)
                start, data = block
        if name.endswith(".gz"):
            text = zlib.decompress(data)
            return text[offset - start:offset - start + length]
        with open(self.directory / name, "rb") as f:
            f.seek(offset)
            return f.read(length)

    def _through_points(self, file_id: int, name: str, offset: int, length: int) -> bytes:
        """A ``.gz`` store's text at ``offset``, read through the access points its sidecar
        brought (``store/sidecar.py``), the store opened once and kept open. Hold the lock."""
        opened = self._opened.get((file_id, self.generation))
        if opened is None:
            self.close_points()  # the stores may have changed since (a file id may be reused)
            row = self.db.execute("SELECT data FROM points WHERE file=?", (file_id,)).fetchone()
            if row is None:
                raise LookupError(f"the text of {name} at {offset} is not in the index")
            opened = self._opened[(file_id, self.generation)] = open_points(self.directory / name, row[0])
        opened.seek(offset)
        return opened.read(length)

    def close_points(self) -> None:
        """Close the ``.gz`` stores opened through their access points. Hold the lock."""
        for opened in self._opened.values():
            opened.close()
        self._opened.clear()

    def find_lines(self, model: str, neurons: set[tuple[int, int]]) -> dict[tuple[int, int], tuple[bytes, ScanRef | None]]:
        """The stored lines of these neurons read from the model's store files themselves, not the
        index (for a call that could not wait for the index): the last line of each in merge
        order, checked as the index checks it, with the scan file its store's header names.
        Costs one pass over the model's files."""
        found: dict[tuple[int, int], tuple[bytes, ScanRef | None]] = {}
        if not neurons or not self.directory.is_dir():
            return found
        paths = sorted((p for p in self.directory.iterdir() if is_store_file(p)), key=lambda p: merge_order(p.name))
        for path in paths:
            try:
                header = read_header(path)
            except (StoreFormatError, OSError, ValueError):
                continue
            if header.key != model:
                continue
            shape = self._shape(header)
            damage: list[str] = []
            try:
                for offset, line, _ in iter_lines(path, damage):
                    if offset == 0:
                        continue  # the header
                    located = _LOCATED.search(line, 0, 400)
                    if located is not None and (int(located[1]), int(located[2])) not in neurons:
                        continue
                    try:
                        entry = index_line(line, model, shape)
                    except LineError:
                        continue
                    if (entry.layer, entry.neuron) in neurons:
                        found[(entry.layer, entry.neuron)] = (line, header.scan)
            except OSError as exc:
                log.warning("cannot read %s: %s", path, exc)
        return found

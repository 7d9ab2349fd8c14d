"""A persistent SQLite index over the JSON-lines stores of a directory, kept in step with them.

In: a directory of stores (every ``*.jsonl`` and ``*.jsonl.gz`` file; the header of each names
its model). Out: an SQLite database (``.n2g-index.sqlite`` beside the stores, or under the cache
directory where that folder is read-only) holding, per stored line, what search and similarity
need (layer, neuron, F1, the token spellings, normalised token postings with each activating
token's share of the graph's strongest activation) and where the full line
lies (its byte offset in a plain ``.jsonl`` file, or the line itself, compressed, for a ``.gz``
one). A full graph is parsed and validated only when asked for (:meth:`StoreIndex.line`).

The JSON-lines files stay the format the builder writes and users exchange; the index is a cache
of them, rebuilt from them at any time:

- :meth:`StoreIndex.sync` compares each file's signature (size, modification time, and a hash of
  its first 64 KiB) with the one indexed. An unchanged file is skipped; a plain file that only grew
  (its first bytes and the bytes before the old end unchanged, as when a build appends) has only
  its new lines indexed; any other change re-indexes the file; a removed file is forgotten.
- **One rule, last line wins**: a neuron's graph is the one on its last line in the last file of
  its model, files in merge order (compressed, shipped stores first, then plain ones, each group
  by name), so a graph built here overrides a shipped one. :meth:`StoreIndex._mark_current` is the
  only place this rule is applied to stores on disk.
- Similar pairs with both overlaps at least :data:`PAIR_FLOOR` are computed when a model's
  graphs change and kept, so listing duplicates is a range query.
- Two processes may open the same index: writes happen in ``BEGIN IMMEDIATE`` transactions (one
  writer at a time, the other waits and then finds the work done), readers see a consistent
  snapshot (write-ahead log).
- With ``first_call`` (the server), changes are indexed by a background thread on its own
  connection, one committed slice at a time, its time shared by the files left to index (so the
  first slice holds graphs of every model); :meth:`StoreIndex.refresh` waits at most
  ``first_call`` seconds (and for the first slice), then readers answer from what is indexed so
  far and :attr:`StoreIndex.indexing` says so. A file a slice stopped in is marked incomplete and
  indexed on from where it stopped, by this process or the next.

How a file's lines become rows (checked lines, last line wins, postings, pairs) is
``store/sqlfiles.py``; this module decides when that runs and holds the connection.

Lines are checked when indexed for what the index relies on (a JSON object of this model, layer
and neuron non-negative integers, token maps of finite numbers, a finite or null F1); a line that
fails is skipped and reported with its line number and reason, like a line that does not parse.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from store.examples import ScanRef
from store.lines import Shape
from store.models import cache_dir
from store.sqlfiles import (
    ACTIVATING,
    CONTEXT,
    PAIR_FLOOR,
    STORE_SUFFIXES,
    FileIndexer,
    FileState,
    head_hash,
    is_store_file,
    merge_order,
    token_sets,
)

__all__ = ["ACTIVATING", "CONTEXT", "INDEX_NAME", "PAIR_FLOOR", "STORE_SUFFIXES", "FileState", "StoreIndex",
           "is_store_file", "merge_order", "token_sets"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
"""Version 2 keeps each file's scan reference (store format 2), each graph's activating tokens
with their activations, on each activating posting its share of the graph's strongest
activation (search ranks by it), and whether a file is indexed to its end (``complete``: indexing
in the background commits a file in slices). Version 3: lines are checked as
``store.lines.check_line`` does now (trie rows, a positive max activation), so an index made by
an older check, which listed such lines, is made again."""
FIRST_SLICE, SLICE = 0.25, 2.0
"""Seconds of indexing per committed slice in the background: a short first one, so that a first
call finds graphs to answer from, then longer ones (each slice re-marks the current graphs)."""
INDEX_NAME = ".n2g-index.sqlite"

_SCHEMA = """
CREATE TABLE files (
    id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, model TEXT, size INTEGER, mtime_ns INTEGER,
    head TEXT, indexed_to INTEGER, tail TEXT, lines INTEGER, problem TEXT, scan TEXT,
    complete INTEGER NOT NULL DEFAULT 1);
CREATE TABLE corrupt (file INTEGER NOT NULL, line INTEGER NOT NULL, reason TEXT NOT NULL);
CREATE INDEX corrupt_file ON corrupt(file, line);
CREATE TABLE graphs (
    id INTEGER PRIMARY KEY, file INTEGER NOT NULL, line INTEGER NOT NULL, model TEXT NOT NULL,
    layer INTEGER NOT NULL, neuron INTEGER NOT NULL, f1 REAL, rank REAL NOT NULL,
    current INTEGER NOT NULL DEFAULT 0, act TEXT NOT NULL, ctx TEXT NOT NULL,
    n_act INTEGER NOT NULL, n_ctx INTEGER NOT NULL, repeated INTEGER NOT NULL, repeated_exact INTEGER NOT NULL,
    offset INTEGER, length INTEGER, blob BLOB);
CREATE INDEX graphs_file ON graphs(file, line);
CREATE INDEX graphs_neuron ON graphs(model, layer, neuron);
CREATE INDEX graphs_rank ON graphs(model, current, rank, layer, neuron);
CREATE TABLE postings (kind INTEGER NOT NULL, key TEXT NOT NULL, graph INTEGER NOT NULL,
    share REAL NOT NULL DEFAULT 0, PRIMARY KEY (kind, key, graph)) WITHOUT ROWID;
CREATE TABLE pairs (model TEXT NOT NULL, a INTEGER NOT NULL, b INTEGER NOT NULL,
    a_layer INTEGER, a_neuron INTEGER, b_layer INTEGER, b_neuron INTEGER,
    act REAL NOT NULL, ctx REAL NOT NULL, score REAL NOT NULL);
CREATE INDEX pairs_score ON pairs(model, score DESC, a_layer, a_neuron, b_layer, b_neuron);
CREATE INDEX pairs_a ON pairs(a);
CREATE INDEX pairs_b ON pairs(b);
CREATE TABLE models (model TEXT PRIMARY KEY, pairs_floor REAL);
"""



class StoreIndex(FileIndexer):
    """The SQLite index of one stores directory; see the module docstring.

    Args:
        directory: the stores directory (need not exist yet).
        path: the database file; default ``directory/.n2g-index.sqlite`` where the directory is
            writable, else a file under ``$N2G_CACHE/indexes/``.
        shapes: ``(n_layers, d_mlp)`` of a model by name, or None where unknown; lines of a store
            whose header records no shape are checked against it (embedded models are known).
    """

    def __init__(self, directory: Path, path: Path | None = None,
                 shapes: Callable[[str], Shape | None] | None = None, first_call: float | None = None) -> None:
        self.directory = Path(directory)
        self.shapes = shapes
        self.first_call = first_call
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._first_slice = threading.Event()
        self.path = path or self._default_path()
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._seen: dict[str, FileState] | None = None
        self.generation = 0
        """Counts the changes this process has seen; caches keyed on it go stale with the stores."""

    def _default_path(self) -> Path:
        if self.directory.is_dir() and os.access(self.directory, os.W_OK):
            return self.directory / INDEX_NAME
        digest = hashlib.blake2b(str(self.directory.resolve()).encode(), digest_size=8).hexdigest()
        return cache_dir() / "indexes" / f"{digest}.sqlite"

    # ----------------------------------------------------------------- connection
    @property
    def db(self) -> sqlite3.Connection:
        """The connection (opened, and the schema made, on first use). Hold :attr:`lock` to use it."""
        if self._db is None:
            db = self._connect()
            db.execute("BEGIN IMMEDIATE")  # another process making the schema waits here
            try:
                if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
                        db.execute(f"DROP TABLE IF EXISTS {name}")
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._db = db
        return self._db

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=120, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=120000")
        return db

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    def close(self) -> None:
        """Stop background indexing (after its slice) and close the connection."""
        worker = self._worker
        if worker is not None:
            self._stop.set()
            worker.join()
            self._stop.clear()
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # ----------------------------------------------------------------- keeping in step
    def _stat(self) -> dict[str, FileState]:
        if not self.directory.is_dir():
            return {}
        found = {}
        for path in self.directory.iterdir():
            if not is_store_file(path):
                continue
            try:
                stat = path.stat()
            except OSError:  # removed between listing and stat
                continue
            found[path.name] = FileState(stat.st_size, stat.st_mtime_ns)
        return found

    def refresh(self) -> bool:
        """Bring the index in step with the directory if any file changed; True if anything did.

        Cheap when nothing changed: one directory listing and a stat per store file. With
        ``first_call`` set, changes are indexed in the background, committed in slices, and this
        waits at most ``first_call`` seconds for them: :attr:`indexing` says whether the answers
        read now cover only the graphs indexed so far.
        """
        with self._lock:
            worker = self._worker
            if worker is None:
                current = self._stat()
                if current == self._seen:
                    return False
                if self.first_call is None:
                    changed = self.sync(current)
                    self._seen = current
                    # Even where another process indexed the change first, what this one cached is stale.
                    self.generation += 1
                    return changed
                self.db  # noqa: B018 - the schema is made here, before the worker's connection opens
                self._first_slice.clear()
                worker = self._worker = threading.Thread(target=self._work, args=(current,), daemon=True,
                                                         name="n2g-index")
                worker.start()
        worker.join(self.first_call)
        # At least the first slice (short by construction), so that a first call finds its model.
        self._first_slice.wait()
        with self._lock:
            self.generation += 1  # slices landed meanwhile: what was cached is stale
        return True

    def wait(self) -> None:
        """Wait until the files being indexed in the background are all indexed."""
        worker = self._worker
        if worker is not None:
            worker.join()

    @property
    def indexing(self) -> bool:
        """Whether files are being indexed in the background (answers cover the graphs so far)."""
        return self._worker is not None

    def _work(self, current: dict[str, FileState]) -> None:
        """Index ``current`` in committed slices on a connection of its own (the worker thread)."""
        finished, new = False, {}
        db = self._connect()
        try:
            deadline = FIRST_SLICE
            while not finished and not self._stop.is_set():
                finished = self._sync_once(db, current, time.monotonic() + deadline, new)[1]
                deadline = SLICE
                with self._lock:
                    self.generation += 1
                self._first_slice.set()
        except Exception:  # a worker must not die silently: the next refresh starts again
            log.exception("indexing %s failed", self.directory)
        finally:
            db.close()
            with self._lock:
                self._seen = current if finished else None
                self._worker = None
            self._first_slice.set()

    def sync(self, current: dict[str, FileState] | None = None) -> bool:
        """Index new and changed files, forget removed ones; True where the index changed."""
        current = self._stat() if current is None else current
        with self._lock:
            return self._sync_once(self.db, current, None, {})[0]

    def _sync_once(self, db: sqlite3.Connection, current: dict[str, FileState], deadline: float | None,
                   new: dict[str, list[int]]) -> tuple[bool, bool]:
        """One transaction of indexing, until ``deadline`` (None: to the end); ``(changed,
        finished)``. ``new`` gathers, across slices, the graphs that became current by model;
        their similar pairs are computed once the last slice is in."""
        db.execute("BEGIN IMMEDIATE")  # one writer at a time, across processes
        try:
            changed_models, finished = self._sync(db, current, deadline)
            for model in sorted(m for m in changed_models if m is not None):
                new.setdefault(model, []).extend(self._mark_current(db, model))
            if finished:
                stale = {m for (m,) in db.execute(
                    "SELECT DISTINCT f.model FROM files f LEFT JOIN models m ON m.model=f.model "
                    "WHERE f.model IS NOT NULL AND (m.pairs_floor IS NULL OR m.pairs_floor<>?)", (PAIR_FLOOR,))}
                for model in sorted(set(new) | stale):
                    self._update_pairs(db, model, new.get(model, []))
                if sum(map(len, new.values())) > 1000 or db.execute(
                        "SELECT count(*) FROM sqlite_master WHERE name='sqlite_stat1'").fetchone()[0] == 0:
                    # Statistics let the planner drive a search from its rarest token's postings
                    # instead of walking every graph in rank order (0.2 ms against 17 ms at 100k).
                    db.execute("ANALYZE")
            else:
                # Pairs are made once every slice is in; a process that stops before leaves the
                # model marked, and the next sync makes them.
                db.executemany("UPDATE models SET pairs_floor=NULL WHERE model=?", [(m,) for m in new])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return bool(changed_models), finished

    def _sync(self, db: sqlite3.Connection, current: dict[str, FileState],
              deadline: float | None = None) -> tuple[set[str | None], bool]:
        """Index what changed, until ``deadline``; the models changed, and whether all is done."""
        known = {row[1]: row for row in db.execute(
            "SELECT id, name, model, size, mtime_ns, head, indexed_to, tail, lines, problem, complete FROM files")}
        changed: set[str | None] = set()
        for name in set(known) - set(current):
            changed.add(known[name][2])
            self._forget(db, known[name][0])
        todo = []
        for name, state in sorted(current.items()):
            row = known.get(name)
            same = row is not None and (row[3], row[4]) == (state.size, state.mtime_ns)
            if not (same and row[10]):  # unchanged, or indexed already by another process
                todo.append((name, state, row, same))
        finished = True
        for i, (name, state, row, same) in enumerate(todo):
            # A bounded slice is shared by the files left in it, so that the first slice of a fresh
            # clone holds graphs of every model, not only of the file that sorts first (each file
            # indexes at least a batch of lines, however short its share).
            share = None if deadline is None else (
                time.monotonic() + max(0.0, deadline - time.monotonic()) / (len(todo) - i))
            path = self.directory / name
            try:
                head = head_hash(path)
                if row is not None and (same or self._appended(path, row[:10], state, head)):
                    # An append, or a file a slice stopped in: go on from where its index ends.
                    changed.add(row[2])
                    done = self._index_file(db, path, state, head, file_id=row[0], start=row[6],
                                            first_line=row[8] + 1, model=row[2], deadline=share)[1]
                else:
                    if row is not None:
                        changed.add(row[2])
                        self._forget(db, row[0])
                    model, done = self._index_file(db, path, state, head, deadline=share)
                    changed.add(model)
                finished = finished and done
            except OSError as exc:  # removed or unreadable while we looked
                log.warning("cannot index %s: %s", path, exc)
        return changed, finished

    # ----------------------------------------------------------------- reading a line
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
            row = self.db.execute("SELECT f.name, g.offset, g.length, g.blob FROM graphs g JOIN files f "
                                  "ON f.id=g.file WHERE g.id=?", (graph_id,)).fetchone()
        if row is None:
            raise LookupError(f"graph {graph_id} is not in the index")
        name, offset, length, blob = row
        if blob is not None:
            return zlib.decompress(blob)
        with open(self.directory / name, "rb") as f:
            f.seek(offset)
            return f.read(length)


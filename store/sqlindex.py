"""A persistent SQLite index over the JSON-lines stores of a directory, kept in step with them.

In: a directory of stores (every ``*.jsonl`` and ``*.jsonl.gz`` file; the header of each names
its model). Out: an SQLite database (``.n2g-index.sqlite`` beside the stores, or under the cache
directory where that folder is read-only) holding, per stored line, what search and similarity
need (layer, neuron, F1, token spellings, normalised token postings with each activating token's
share of the graph's strongest activation) and where the full line lies (a byte offset in a
plain ``.jsonl``; in a ``.gz``, an offset in its text, kept in compressed blocks or read through
access points). A full graph is parsed and validated only when asked for (:meth:`StoreIndex.line`).

The JSON-lines files stay the format the builder writes and users exchange; the index is a cache
of them, rebuilt from them at any time:

- :meth:`StoreIndex.sync` compares each file's signature (size and modification time) with the one
  indexed. An unchanged file is skipped; a file whose bytes are the same (its content hash) keeps
  its rows; a plain file that only grew (a build appended) has only its new lines indexed; any
  other change re-indexes the file; a removed file is forgotten. An index that is not an SQLite
  database (damaged, cut short) is deleted and made again: a stale index is never read.
- A file the index does not hold, beside its sidecar (``store/sidecar.py``: the rows of that file
  alone, tied to its size and content hash), has the sidecar's rows copied in, not its lines read.
- **One rule, last line wins**: a neuron's graph is the one on its last line in the last file of
  its model, files in merge order (compressed, shipped stores first, then plain ones, each group
  by name). :meth:`StoreIndex._mark_current` is the only place this rule is applied.
- Similar pairs with both overlaps at least :data:`PAIR_FLOOR` are kept, so listing duplicates
  is a range query.
- Two processes may open the same index: writes happen in ``BEGIN IMMEDIATE`` transactions (one
  writer at a time), readers see a consistent snapshot (write-ahead log).
- With ``first_call`` (the server), changes are indexed by a background thread on its own
  connection (sidecars first, then one committed slice at a time), and a call waits for what
  its answer needs, up to ``first_call`` seconds: :meth:`StoreIndex.wait_for` a model's files,
  with ``pairs`` its similar pairs too. Only past that wait does a reader answer from the graphs
  indexed so far (:meth:`StoreIndex.pending` says so), :meth:`StoreIndex.find_lines` reading a
  neuron's line from the files themselves.

How a file's lines become rows (checked lines, postings, pairs) is ``store/sqlfiles.py``; this
module decides when that runs and holds the connection. A line that fails the checks the index
relies on is skipped and reported with its line number and reason.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from store.errors import StoreFormatError
from store.jsonl import read_header
from store.lines import Shape
from store.models import cache_dir
from store.sqlfiles import (
    ACTIVATING,
    CONTEXT,
    PAIR_FLOOR,
    STORE_SUFFIXES,
    FileState,
    head_hash,
    is_store_file,
    merge_order,
    token_sets,
)
from store.sidecar import import_sidecar, sidecar_path, usable
from store.sqllines import LineReader
from store.sqlschema import INDEX_NAME, SCHEMA, SCHEMA_VERSION

__all__ = ["ACTIVATING", "CONTEXT", "INDEX_NAME", "PAIR_FLOOR", "STORE_SUFFIXES", "FileState", "StoreIndex",
           "is_store_file", "merge_order", "token_sets"]

log = logging.getLogger(__name__)

FIRST_SLICE, SLICE = 0.25, 4.0
"""Seconds of indexing per committed slice in the background: a short first one, so that every
model is listed at once, then longer ones (each slice re-marks the current graphs)."""


class StoreIndex(LineReader):
    """The SQLite index of one stores directory; see the module docstring.

    Args:
        directory: the stores directory (need not exist yet).
        path: the database file; default ``directory/.n2g-index.sqlite`` where the directory is
            writable, else a file under ``$N2G_CACHE/indexes/``.
        shapes: ``(n_layers, d_mlp)`` of a model by name, or None where unknown; lines of a store
            whose header records no shape are checked against it (embedded models are known).
        first_call: index in the background, a call waiting at most this many seconds for what
            its answer needs; None (the default) indexes in the caller, before answering.
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
        self._state = threading.Condition()
        self._waiting: dict[str, str | None] = {}
        """Files the worker still has to index (or forget), with their model (None: unreadable)."""
        self._pairs_waiting: set[str] = set()
        """Models whose similar pairs the worker still has to compute."""
        self._readers, self._opened = {}, {}
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
            try:
                self._db = self._open()
            except sqlite3.DatabaseError as exc:  # not a database (damaged, cut short): made again
                log.warning("the store index %s cannot be read (%s); making it again", self.path, exc)
                for leftover in self.path.parent.glob(self.path.name + "*"):
                    leftover.unlink(missing_ok=True)
                self._db = self._open()
        return self._db

    def _open(self) -> sqlite3.Connection:
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")  # another process making the schema waits here
            try:
                if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
                        if not name.startswith("sqlite_"):
                            db.execute(f"DROP TABLE IF EXISTS {name}")
                    for statement in SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except BaseException:
            db.close()
            raise
        return db

    def _connect(self, bulk: bool = False) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=120, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        # The index is a cache of the stores: a commit need not wait for the disk (a crash of the
        # machine loses at most the last slices, and the file signatures make them again).
        db.execute("PRAGMA synchronous=OFF" if bulk else "PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=120000")
        if bulk:
            db.execute("PRAGMA cache_size=-65536")
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
            self.close_points()
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
        ``first_call`` set, changes are indexed in the background, committed in slices; this waits
        for the first slice only (every model is listed then), and :meth:`wait_for` waits for the
        rest of what a call needs.
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
                files, stale = self._todo(self.db, current)
                if not files and not stale:  # in step already (made by the set-up, or another process)
                    self._seen = current
                    self.generation += 1
                    return False
                with self._state:
                    self._waiting = files
                    self._pairs_waiting = {m for m in files.values() if m is not None} | stale
                self._first_slice.clear()
                worker = self._worker = threading.Thread(target=self._work, args=(current,), daemon=True,
                                                         name="n2g-index")
                worker.start()
        self._first_slice.wait()  # the worker counts a generation for each slice that lands
        return True

    def _todo(self, db: sqlite3.Connection, current: dict[str, FileState]) -> tuple[dict[str, str | None], set[str]]:
        """The files a sync has to index or forget, with their model (read from the header; None
        where it cannot be read), and the models whose similar pairs are not made yet."""
        with self._lock:
            known = {row[1]: row for row in db.execute(
                "SELECT id, name, model, size, mtime_ns, complete, digest FROM files")}
            stale = {m for (m,) in db.execute(
                "SELECT DISTINCT f.model FROM files f LEFT JOIN models m ON m.model=f.model "
                "WHERE f.model IS NOT NULL AND (m.pairs_floor IS NULL OR m.pairs_floor<>?)", (PAIR_FLOOR,))}
            touched = [(name, state, known[name]) for name, state in current.items() if name in known
                       and (known[name][3], known[name][4]) != (state.size, state.mtime_ns)]
            same = [(name, state, row) for name, state, row in touched if self._same_bytes(name, state, row)]
            if same:  # touched, not changed: the index stays, with the new time
                db.execute("BEGIN IMMEDIATE")
                try:
                    for name, state, row in same:
                        db.execute("UPDATE files SET mtime_ns=? WHERE id=?", (state.mtime_ns, row[0]))
                        known[name] = (*row[:4], state.mtime_ns, *row[5:])
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
        files: dict[str, str | None] = {name: row[2] for name, row in known.items() if name not in current}
        for name, state in current.items():
            row = known.get(name)
            if row is not None and (row[3], row[4]) == (state.size, state.mtime_ns) and row[5]:
                continue
            try:
                files[name] = read_header(self.directory / name).key
            except (StoreFormatError, OSError, ValueError):
                files[name] = None
        return files, stale

    def wait_for(self, model: str | None = None, pairs: bool = False) -> bool:
        """Wait, at most ``first_call`` seconds, until the files of ``model`` (every model: None)
        are indexed, and with ``pairs`` its similar pairs made; True when they are (at once where
        nothing is being indexed)."""
        deadline = time.monotonic() + (self.first_call or 0.0)
        with self._state:
            while self._busy(model, pairs):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._state.wait(left)
        return True

    def _busy(self, model: str | None, pairs: bool) -> bool:
        if self._worker is None:
            return False
        if model is None:
            return bool(self._waiting) or (pairs and bool(self._pairs_waiting))
        return model in self._waiting.values() or (pairs and model in self._pairs_waiting)

    def pending(self, model: str | None = None) -> bool:
        """Whether files of ``model`` (of any: None) are still being indexed, so that what is read
        now covers only the graphs indexed so far."""
        with self._state:
            return self._busy(model, False)

    def wait(self) -> None:
        """Wait until the files being indexed in the background are all indexed."""
        worker = self._worker
        if worker is not None:
            worker.join()

    @property
    def indexing(self) -> bool:
        """Whether the background worker is running (indexing files, or making similar pairs)."""
        return self._worker is not None

    def _work(self, current: dict[str, FileState]) -> None:
        """Index ``current`` in committed slices on a connection of its own (the worker thread),
        then make the similar pairs of the models that changed."""
        finished, new = False, {}
        db = self._connect(bulk=True)
        try:
            imported, paired = self._import_sidecars(db, current)
            if imported:  # the stores with a sidecar answer now, before any slice
                self._landed(imported, False, paired)
                if not self._waiting:  # every model is listed: a call need not wait for a slice
                    self._first_slice.set()
            deadline = FIRST_SLICE
            while not finished and not self._stop.is_set():
                _, finished, done = self._sync_once(db, current, time.monotonic() + deadline, new, pairs=False)
                deadline = SLICE
                self._landed(done, finished)
                self._first_slice.set()
            if finished and not self._stop.is_set():
                self._make_pairs(db, new)
                with self._lock:
                    self.generation += 1
        except Exception:  # a worker must not die silently: the next refresh starts again
            finished = False
            log.exception("indexing %s failed", self.directory)
        finally:
            db.close()
            self._readers.clear()
            with self._lock:
                self._seen = current if finished else None
                self._worker = None
            with self._state:
                if finished:
                    self._waiting.clear()
                    self._pairs_waiting.clear()
                self._state.notify_all()
            self._first_slice.set()

    def _landed(self, done: set[str], finished: bool, paired: set[str] = frozenset()) -> None:
        """Tell the waiting readers that these files are indexed (all, where ``finished``), and
        the similar pairs of the ``paired`` models made."""
        with self._lock:
            self.generation += 1
        with self._state:
            for name in done:
                self._waiting.pop(name, None)
            if finished:
                self._waiting.clear()
            self._pairs_waiting -= paired
            self._state.notify_all()

    def sync(self, current: dict[str, FileState] | None = None) -> bool:
        """Index new and changed files, forget removed ones; True where the index changed."""
        current = self._stat() if current is None else current
        with self._lock:
            self.db  # noqa: B018 - the schema is made (or the damaged index replaced) first
            db = self._connect(bulk=True)
            try:
                imported = bool(self._import_sidecars(db, current)[0])
                return self._sync_once(db, current, None, {})[0] or imported
            finally:
                db.close()

    def _import_sidecars(self, db: sqlite3.Connection, current: dict[str, FileState]) -> tuple[set[str], set[str]]:
        """Import the usable sidecars (``store/sidecar.py``) of the files the index does not hold
        as they are; the files imported whole, and the models whose similar pairs came along."""
        known = {row[1]: row for row in db.execute(
            "SELECT id, name, model, size, mtime_ns, complete, digest FROM files")}
        imported, paired = set(), set()
        for name, state in sorted(current.items(), key=lambda item: merge_order(item[0])):
            path, row = self.directory / name, known.get(name)
            if not sidecar_path(path).is_file() or (row is not None and (
                    (row[3], row[4], row[5]) == (state.size, state.mtime_ns, 1) or self._same_bytes(name, state, row))):
                continue
            try:
                shape = self._shape(read_header(path))
                head = head_hash(path)
                side = usable(path, state, shape, lambda old: self._appended(path, old, state, head))
                found = None if side is None else import_sidecar(self, db, side, path, state)
            except (StoreFormatError, OSError, ValueError, sqlite3.Error) as exc:
                log.warning("not using the sidecar of %s: %s", path, exc)
                continue
            if found is not None and side is not None and side.whole:
                imported.add(name)
                if found[1]:
                    paired.add(found[0])
        return imported, paired

    def _sync_once(self, db: sqlite3.Connection, current: dict[str, FileState], deadline: float | None,
                   new: dict[str, list[int]], pairs: bool = True) -> tuple[bool, bool, set[str]]:
        """One transaction of indexing, until ``deadline`` (None: to the end); ``(changed,
        finished, files done)``. ``new`` gathers, across slices, the graphs that became current by
        model; with ``pairs``, their similar pairs are made in the same transaction once the
        last slice is in (else by :meth:`_make_pairs`)."""
        db.execute("BEGIN IMMEDIATE")  # one writer at a time, across processes
        try:
            changed_models, finished, done = self._sync(db, current, deadline)
            for model in sorted(m for m in changed_models if m is not None):
                new.setdefault(model, []).extend(self._mark_current(db, model))
            # Pairs are made once every slice is in; a process that stops before leaves the model
            # marked, and the next sync makes them.
            db.executemany("UPDATE models SET pairs_floor=NULL WHERE model=?", [(m,) for m in new])
            if finished:
                if sum(map(len, new.values())) > 1000 or db.execute(
                        "SELECT count(*) FROM sqlite_master WHERE name='sqlite_stat1'").fetchone()[0] == 0:
                    # Statistics let the planner drive a search from its rarest token's postings
                    # instead of walking every graph in rank order (0.2 ms against 17 ms at 100k).
                    db.execute("ANALYZE")
                if pairs:
                    self._pairs(db, new)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return bool(changed_models), finished, done

    def _make_pairs(self, db: sqlite3.Connection, new: dict[str, list[int]]) -> None:
        """The similar pairs of the models whose graphs changed (or whose pairs are not made), one
        model a transaction; readers waiting for a model's pairs are told as each lands."""
        with self._state:
            models = sorted(set(new) | self._pairs_waiting)
        for model in models:
            if self._stop.is_set():
                return
            db.execute("BEGIN IMMEDIATE")
            try:
                self._pairs(db, {model: new.get(model, [])}, only=model)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            with self._state:
                self._pairs_waiting.discard(model)
                self._state.notify_all()

    def _pairs(self, db: sqlite3.Connection, new: dict[str, list[int]], only: str | None = None) -> None:
        stale = {m for (m,) in db.execute(
            "SELECT DISTINCT f.model FROM files f LEFT JOIN models m ON m.model=f.model "
            "WHERE f.model IS NOT NULL AND (m.pairs_floor IS NULL OR m.pairs_floor<>?)", (PAIR_FLOOR,))}
        for model in sorted(set(new) | stale):
            if only is None or model == only:
                self._update_pairs(db, model, new.get(model, []))

    def _sync(self, db: sqlite3.Connection, current: dict[str, FileState],
              deadline: float | None = None) -> tuple[set[str | None], bool, set[str]]:
        """Index what changed, until ``deadline``; the models changed, whether all is done, and
        the files done (indexed to their end, or forgotten)."""
        known = {row[1]: row for row in db.execute(
            "SELECT id, name, model, size, mtime_ns, head, indexed_to, tail, lines, problem, complete, digest "
            "FROM files")}
        changed: set[str | None] = set()
        done_files: set[str] = set()
        for name in set(known) - set(current):
            changed.add(known[name][2])
            self._forget(db, known[name][0])
            done_files.add(name)
        todo = []
        for name, state in sorted(current.items(), key=lambda item: item[1].size):
            row = known.get(name)
            same = row is not None and (row[3], row[4]) == (state.size, state.mtime_ns)
            if same and row[10]:
                continue  # unchanged, or indexed already by another process
            if row is not None and not same and self._same_bytes(name, state, (*row[:3], row[3], row[4], row[10],
                                                                                row[11])):
                db.execute("UPDATE files SET mtime_ns=? WHERE id=?", (state.mtime_ns, row[0]))
                done_files.add(name)
                continue
            todo.append((name, state, row, same))
        finished = True
        for i, (name, state, row, same) in enumerate(todo):
            # A bounded slice is shared by the files left in it, so that the first slice of a fresh
            # clone holds graphs of every model, not only of the file that sorts first (each file
            # indexes at least a batch of lines, however short its share). Smaller files go first.
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
                if done:
                    done_files.add(name)
            except OSError as exc:  # removed or unreadable while we looked
                log.warning("cannot index %s: %s", path, exc)
                done_files.add(name)
        return changed, finished, done_files

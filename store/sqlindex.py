"""A persistent SQLite index over the JSON-lines stores of a directory, kept in step with them.

In: a directory of stores (every ``*.jsonl`` and ``*.jsonl.gz`` file; the header of each names
its model). Out: an SQLite database (``.n2g-index.sqlite`` beside the stores, or under the cache
directory where that folder is read-only) holding, per stored line, what search and similarity
need (layer, neuron, F1, the token spellings, normalised token postings) and where the full line
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
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from store.errors import StoreFormatError
from store.jsonl import StoreHeader, read_header
from store.lines import LineError, Shape, check_line, iter_lines
from store.models import EMBEDDED, cache_dir
from store.similarity import Item, TokenSets, pair_rows
from store.tokens import REPEAT_KEY, TokenKeys, normalize

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
INDEX_NAME = ".n2g-index.sqlite"
STORE_SUFFIXES = (".jsonl", ".jsonl.gz")
HEAD_BYTES = 1 << 16
"""Bytes hashed at the start of a file (and before its old end) to tell an append from a rewrite."""
PAIR_FLOOR = 0.7
"""Similar pairs at or above this overlap are kept in the index; lower thresholds are computed on demand."""

_SCHEMA = """
CREATE TABLE files (
    id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, model TEXT, size INTEGER, mtime_ns INTEGER,
    head TEXT, indexed_to INTEGER, tail TEXT, lines INTEGER, problem TEXT);
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
    PRIMARY KEY (kind, key, graph)) WITHOUT ROWID;
CREATE TABLE pairs (model TEXT NOT NULL, a INTEGER NOT NULL, b INTEGER NOT NULL,
    a_layer INTEGER, a_neuron INTEGER, b_layer INTEGER, b_neuron INTEGER,
    act REAL NOT NULL, ctx REAL NOT NULL, score REAL NOT NULL);
CREATE INDEX pairs_score ON pairs(model, score DESC, a_layer, a_neuron, b_layer, b_neuron);
CREATE INDEX pairs_a ON pairs(a);
CREATE INDEX pairs_b ON pairs(b);
CREATE TABLE models (model TEXT PRIMARY KEY, pairs_floor REAL);
"""
ACTIVATING, CONTEXT = 0, 1
"""Posting kinds."""


def is_store_file(path: Path) -> bool:
    """Whether a directory entry is a store file (hidden files and others are not)."""
    return path.name.endswith(STORE_SUFFIXES) and not path.name.startswith(".") and path.is_file()


def merge_order(name: str) -> tuple[bool, str]:
    """Files of one model are read in this order, the later winning: compressed first, then plain."""
    return (not name.endswith(".gz"), name)


def _head_hash(path: Path, start: int = 0, size: int = HEAD_BYTES) -> str:
    with open(path, "rb") as f:
        f.seek(start)
        return hashlib.blake2b(f.read(size), digest_size=16).hexdigest()


# --------------------------------------------------------------------- the index
@dataclass(frozen=True)
class FileState:
    size: int
    mtime_ns: int


class StoreIndex:
    """The SQLite index of one stores directory; see the module docstring.

    Args:
        directory: the stores directory (need not exist yet).
        path: the database file; default ``directory/.n2g-index.sqlite`` where the directory is
            writable, else a file under ``$N2G_CACHE/indexes/``.
        shapes: ``(n_layers, d_mlp)`` of a model by name, or None where unknown; lines of a store
            whose header records no shape are checked against it (embedded models are known).
    """

    def __init__(self, directory: Path, path: Path | None = None,
                 shapes: Callable[[str], Shape | None] | None = None) -> None:
        self.directory = Path(directory)
        self.shapes = shapes
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
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=120, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=120000")
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

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    def close(self) -> None:
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

        Cheap when nothing changed: one directory listing and a stat per store file.
        """
        with self._lock:
            current = self._stat()
            if current == self._seen:
                return False
            changed = self.sync(current)
            self._seen = current
            # Even where another process indexed the change first, what this one cached is stale.
            self.generation += 1
            return changed

    def sync(self, current: dict[str, FileState] | None = None) -> bool:
        """Index new and changed files, forget removed ones; True where the index changed."""
        current = self._stat() if current is None else current
        with self._lock:
            db = self.db
            db.execute("BEGIN IMMEDIATE")  # one writer at a time, across processes
            try:
                changed_models = self._sync(db, current)
                grown = 0
                for model in sorted(m for m in changed_models if m is not None):
                    new = self._mark_current(db, model)
                    self._update_pairs(db, model, new)
                    grown += len(new)
                if grown > 1000 or db.execute("SELECT count(*) FROM sqlite_master WHERE name='sqlite_stat1'"
                                              ).fetchone()[0] == 0:
                    # Statistics let the planner drive a search from its rarest token's postings
                    # instead of walking every graph in rank order (0.2 ms against 17 ms at 100k).
                    db.execute("ANALYZE")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return bool(changed_models)

    def _sync(self, db: sqlite3.Connection, current: dict[str, FileState]) -> set[str | None]:
        known = {row[1]: row for row in db.execute(
            "SELECT id, name, model, size, mtime_ns, head, indexed_to, tail, lines, problem FROM files")}
        changed: set[str | None] = set()
        for name in set(known) - set(current):
            changed.add(known[name][2])
            self._forget(db, known[name][0])
        for name, state in sorted(current.items()):
            row = known.get(name)
            if row is not None and (row[3], row[4]) == (state.size, state.mtime_ns):
                continue  # unchanged, or indexed already by another process
            path = self.directory / name
            try:
                head = _head_hash(path)
                if row is not None and self._appended(path, row, state, head):
                    changed.add(row[2])
                    self._index_file(db, path, state, head, file_id=row[0], start=row[6], first_line=row[8] + 1,
                                     model=row[2])
                    continue
                if row is not None:
                    changed.add(row[2])
                    self._forget(db, row[0])
                changed.add(self._index_file(db, path, state, head))
            except OSError as exc:  # removed or unreadable while we looked
                log.warning("cannot index %s: %s", path, exc)
        return changed

    @staticmethod
    def _appended(path: Path, row: tuple, state: FileState, head: str) -> bool:
        """Whether a plain file only grew since it was indexed (a build appended to it)."""
        _, name, model, size, _, old_head, indexed_to, tail, _, problem = row
        if name.endswith(".gz") or problem is not None or model is None or state.size < size:
            return False
        if head != old_head and size >= HEAD_BYTES:
            return False
        return tail == _head_hash(path, max(0, indexed_to - HEAD_BYTES), min(indexed_to, HEAD_BYTES))

    @staticmethod
    def _forget(db: sqlite3.Connection, file_id: int) -> None:
        db.execute("DELETE FROM postings WHERE graph IN (SELECT id FROM graphs WHERE file=?)", (file_id,))
        db.execute("DELETE FROM graphs WHERE file=?", (file_id,))
        db.execute("DELETE FROM corrupt WHERE file=?", (file_id,))
        db.execute("DELETE FROM files WHERE id=?", (file_id,))

    def _shape(self, header: StoreHeader) -> Shape | None:
        """The shape lines are checked against: the header's, else the caller's, else an embedded model's."""
        if header.shape is not None:
            return header.shape
        known = self.shapes(header.model) if self.shapes is not None else None
        if known is None and header.model in EMBEDDED:
            known = (EMBEDDED[header.model].n_layers, EMBEDDED[header.model].d_mlp)
        return known

    def _index_file(self, db: sqlite3.Connection, path: Path, state: FileState, head: str, *,
                    file_id: int | None = None, start: int = 0, first_line: int = 2,
                    model: str | None = None) -> str | None:
        """Index a file's lines from ``start`` (its whole body for a new file); returns its model."""
        compressed = path.name.endswith(".gz")
        try:
            header = read_header(path)
        except (StoreFormatError, OSError, ValueError) as exc:
            if file_id is not None:
                self._forget(db, file_id)
            reason = str(exc).replace(str(path), path.name)
            db.execute("INSERT INTO files(name, size, mtime_ns, head, problem) VALUES (?,?,?,?,?)",
                       (path.name, state.size, state.mtime_ns, head, reason if reason.startswith(path.name)
                        else f"{path.name}: {reason}"))
            return None
        if file_id is None:
            model = header.model
            file_id = db.execute("INSERT INTO files(name, model, lines) VALUES (?,?,1)",
                                 (path.name, model)).lastrowid
            start = -1  # skip the header line below
        else:
            db.execute("DELETE FROM corrupt WHERE file=? AND line>=?", (file_id, first_line))
        assert model is not None
        shape = self._shape(header)
        number, indexed_to = first_line - 1, max(start, 0)
        graphs, corrupt, damage = [], [], []
        for offset, line, whole in iter_lines(path, damage, max(start, 0)):
            end = offset + len(line) + whole  # past the newline, where there is one
            if start < 0 and offset == 0:
                start, indexed_to = 0, end
                continue  # the header
            number += 1
            if not line.strip():
                indexed_to = end
                continue
            try:
                entry = check_line(line, model, shape)
            except LineError as exc:
                if not whole:  # a last line cut off mid-write: look again when the file changes
                    corrupt.append((file_id, number, "cut off (no newline at the end of the file)"))
                    break
                corrupt.append((file_id, number, str(exc)[:200]))
                indexed_to = end
                continue
            indexed_to = end
            graphs.append((entry, number, offset, len(line), zlib.compress(line, 6) if compressed else None))
            if len(graphs) >= 2000:
                self._insert(db, file_id, model, graphs)
                graphs = []
        self._insert(db, file_id, model, graphs)
        corrupt += [(file_id, number + 1, reason) for reason in damage]
        db.executemany("INSERT INTO corrupt(file, line, reason) VALUES (?,?,?)", corrupt)
        tail = _head_hash(path, max(0, indexed_to - HEAD_BYTES), min(indexed_to, HEAD_BYTES))
        db.execute("UPDATE files SET size=?, mtime_ns=?, head=?, indexed_to=?, tail=?, lines=? WHERE id=?",
                   (state.size, state.mtime_ns, head, indexed_to, tail, number, file_id))
        return model

    @staticmethod
    def _insert(db: sqlite3.Connection, file_id: int, model: str, graphs: list) -> None:
        for entry, number, offset, length, blob in graphs:
            act_keys = {normalize(t) for t in entry.activating}
            ctx_keys = {normalize(t) for t in entry.context}
            # In-context behaviour: a repeat node, or a token both activating and context.
            node = REPEAT_KEY in act_keys or REPEAT_KEY in ctx_keys
            repeated = node or not act_keys.isdisjoint(ctx_keys)
            repeated_exact = node or (repeated and not set(entry.activating).isdisjoint(entry.context))
            rank = 2.0 if entry.f1 is None else -entry.f1
            db.execute(
                "INSERT INTO graphs(file, line, model, layer, neuron, f1, rank, act, ctx, n_act, n_ctx, repeated, "
                "repeated_exact, offset, length, blob) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (file_id, number, model, entry.layer, entry.neuron, entry.f1, rank,
                 orjson.dumps(entry.activating).decode(), orjson.dumps(entry.context).decode(),
                 len(act_keys), len(ctx_keys), repeated, repeated_exact,
                 None if blob is not None else offset, length, blob))

    def _mark_current(self, db: sqlite3.Connection, model: str | None) -> list[int]:
        """Apply "last line wins" to one model's graphs; returns the graphs that became current."""
        if model is None:
            return []
        names = [n for (n,) in db.execute("SELECT name FROM files WHERE model=?", (model,))]
        order = {name: i for i, name in enumerate(sorted(names, key=merge_order))}
        was = {g for (g,) in db.execute("SELECT id FROM graphs WHERE model=? AND current=1", (model,))}
        latest: dict[tuple[int, int], tuple[tuple[int, int], int]] = {}
        rows = db.execute("SELECT g.id, g.layer, g.neuron, f.name, g.line FROM graphs g JOIN files f ON f.id=g.file "
                          "WHERE g.model=?", (model,))
        for graph_id, layer, neuron, name, line in rows:
            rank = (order[name], line)
            best = latest.get((layer, neuron))
            if best is None or rank > best[0]:
                latest[(layer, neuron)] = (rank, graph_id)
        now = {graph_id for _, graph_id in latest.values()}
        gone, new = sorted(was - now), sorted(now - was)
        # Only current graphs have postings and pairs, so searches never meet a superseded line.
        db.executemany("UPDATE graphs SET current=0 WHERE id=?", [(g,) for g in gone])
        db.executemany("DELETE FROM postings WHERE graph=?", [(g,) for g in gone])
        db.executemany("DELETE FROM pairs WHERE a=? OR b=?", [(g, g) for g in gone])
        db.executemany("UPDATE graphs SET current=1 WHERE id=?", [(g,) for g in new])
        postings = []
        for start in range(0, len(new), 900):
            chunk = new[start:start + 900]
            for graph_id, act, ctx in db.execute(
                    f"SELECT id, act, ctx FROM graphs WHERE id IN ({','.join('?' * len(chunk))})", chunk):
                postings += [(ACTIVATING, k, graph_id) for k in {normalize(t) for t in orjson.loads(act)}]
                postings += [(CONTEXT, k, graph_id) for k in {normalize(t) for t in orjson.loads(ctx)}]
        db.executemany("INSERT OR IGNORE INTO postings(kind, key, graph) VALUES (?,?,?)", postings)
        return new

    def _update_pairs(self, db: sqlite3.Connection, model: str | None, new: list[int]) -> None:
        """Keep the model's similar pairs (both overlaps >= PAIR_FLOOR) in step with its graphs."""
        if model is None:
            return
        sets = token_sets(db, model)
        floor = db.execute("SELECT pairs_floor FROM models WHERE model=?", (model,)).fetchone()
        if floor is None or floor[0] != PAIR_FLOOR or len(new) * 4 > len(sets):
            db.execute("DELETE FROM pairs WHERE model=?", (model,))
            rows = pair_rows(sets, PAIR_FLOOR)
        else:
            rows = pair_rows(sets, PAIR_FLOOR, positions=[sets.position[g] for g in new if g in sets.position])
        pairs = []
        for i, j, act, ctx in rows:
            a, b = sorted((sets.at(i), sets.at(j)), key=lambda item: (item.layer, item.neuron))
            pairs.append((model, a.id, b.id, a.layer, a.neuron, b.layer, b.neuron, act, ctx, min(act, ctx)))
        db.executemany("INSERT INTO pairs(model, a, b, a_layer, a_neuron, b_layer, b_neuron, act, ctx, score) "
                       "VALUES (?,?,?,?,?,?,?,?,?,?)", pairs)
        db.execute("INSERT OR REPLACE INTO models(model, pairs_floor) VALUES (?,?)", (model, PAIR_FLOOR))

    # ----------------------------------------------------------------- reading a line
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


def token_sets(db: sqlite3.Connection, model: str) -> TokenSets:
    """One model's current graphs as normalised token sets, in result order (what all-pairs reads)."""
    items, keys = [], []
    interned: dict[str, str] = {}
    for graph_id, layer, neuron, act, ctx in db.execute(
            "SELECT id, layer, neuron, act, ctx FROM graphs WHERE model=? AND current=1 "
            "ORDER BY rank, layer, neuron", (model,)):
        items.append(Item(graph_id, layer, neuron))
        act_keys, ctx_keys = (frozenset(interned.setdefault(k, k) for k in map(normalize, orjson.loads(tokens)))
                              for tokens in (act, ctx))
        keys.append(TokenKeys(act_keys, ctx_keys))
    return TokenSets(items, keys)

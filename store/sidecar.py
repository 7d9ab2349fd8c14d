"""A store's sidecar index: the store index's rows of one store file, kept beside it, so that a
server that has never seen the store answers every tool from its first call.

In: a store file (``x.jsonl`` or ``x.jsonl.gz``). Out: ``x.jsonl.n2gidx`` (``x.jsonl.gz.n2gidx``)
beside it, an SQLite database of the store index's schema (``store/sqlschema.py``) holding what
the index would hold of that file alone (its checked lines as graphs with their postings, its
corrupt lines, its similar pairs; for a ``.gz`` store, the access points from which any line is
read without decompressing the file from its start, not its text), and a ``sidecar`` table that
ties it to the store: its format version, the store's name, size and content hash, and the shape
its lines were checked against (none where neither the header nor the writer knew it: an index
checking against a shape uses it only where every graph lies inside that shape).

A directory index (``store/sqlindex.py``) meeting a store it has not indexed imports the store's
sidecar instead of reading the store (a copy between two SQLite files: 0.3 s of CPU for the
46,080-graph SmolLM2 store, where reading it takes 11 s) only when the sidecar is of this format
and schema, names this file, was checked against the shape the index checks against, and the
store still holds exactly the bytes it indexed: the same size and content hash, or, for a plain
store that a build appended to since, the same first bytes and the same bytes before the
sidecar's end (the index then reads only the lines after it). Any other sidecar is ignored, never
trusted: the store is read as if it had none. Deleting a sidecar only makes a first open slower.

``n2g index`` and ``n2g store compact`` write sidecars (:func:`write_sidecar`); so does a build
when it finishes appending to a store.
"""

from __future__ import annotations

import io
import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import indexed_gzip

from store.errors import StoreFormatError
from store.jsonl import read_header
from store.lines import Shape
from store.sqlfiles import PAIR_FLOOR, FileIndexer, FileState, file_digest, head_hash
from store.sqlschema import SCHEMA, SCHEMA_VERSION

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".n2gidx"
"""A store's sidecar is its file name with this added."""
SIDECAR_VERSION = 1
"""The sidecar's own format (the ``sidecar`` table); its rows follow the index's ``SCHEMA_VERSION``."""
POINT_SPACING = 4 << 20
"""Bytes of a ``.gz`` store's text between two access points: a line is read by decompressing at
most this much (about 15 ms); the 52 MB SmolLM2 store has 57 points (1.8 MB)."""

_META = "CREATE TABLE sidecar (key TEXT PRIMARY KEY, value)"
_QUERY_INDEXES = ("graphs_file", "graphs_neuron", "graphs_rank", "pairs_score", "pairs_a", "pairs_b")
"""Indexes of the schema that serve queries, not the copy: a sidecar leaves them out."""


class Sidecar(NamedTuple):
    """A usable sidecar of a store: its path, and whether it indexes the whole store (else a
    plain store grew since, and the lines after ``indexed_to`` are read from the store)."""

    path: Path
    whole: bool


def sidecar_path(store: Path) -> Path:
    """Where a store's sidecar lies: beside it, its name with :data:`SIDECAR_SUFFIX` added."""
    return store.with_name(store.name + SIDECAR_SUFFIX)


def points(store: Path) -> bytes:
    """The access points of a ``.gz`` store (``indexed_gzip``'s index, one decompression pass)."""
    with indexed_gzip.IndexedGzipFile(str(store), spacing=POINT_SPACING) as f:
        f.build_full_index()
        out = io.BytesIO()
        f.export_index(fileobj=out)
    return out.getvalue()


def open_points(store: Path, data: bytes) -> indexed_gzip.IndexedGzipFile:
    """A ``.gz`` store opened for reading at any offset of its text, from its access points."""
    f = indexed_gzip.IndexedGzipFile(str(store), spacing=POINT_SPACING)
    f.import_index(fileobj=io.BytesIO(data))
    return f


class _OneFile(FileIndexer):
    """The index's file-indexing steps, run over one store into its sidecar."""

    def __init__(self, store: Path, shapes: Callable[[str], Shape | None] | None) -> None:
        self.directory, self.shapes, self._readers = store.parent, shapes, {}


def write_sidecar(store: Path, shapes: Callable[[str], Shape | None] | None = None) -> Path | None:
    """Write (or replace) a store's sidecar, indexing the store alone; returns its path, or None
    where the store's header cannot be read (its sidecar, if any, is then removed).

    ``shapes`` gives the shape lines are checked against where the store's header has none (the
    server's served models: ``n2g_mcp.registry.ServedModels.shape``); the sidecar records it, and
    an index checking against another shape does not use it. Written to a temporary file and
    renamed, so a reader never meets half a sidecar.
    """
    store = Path(store)
    target = sidecar_path(store)
    stat = store.stat()
    state = FileState(stat.st_size, stat.st_mtime_ns)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    indexer = _OneFile(store, shapes)
    db = sqlite3.connect(temporary, isolation_level=None)
    try:
        for statement in (SCHEMA + ";" + _META).split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("BEGIN")
        model, done = indexer._index_file(db, store, state, head_hash(store), text=False)
        if model is None or not done:
            db.execute("ROLLBACK")
            db.close()
            temporary.unlink(missing_ok=True)
            target.unlink(missing_ok=True)
            return None
        indexer._update_pairs(db, model, indexer._mark_current(db, model))
        shape = indexer._shape(read_header(store))
        meta = {"version": SIDECAR_VERSION, "store": store.name, "size": state.size,
                "digest": db.execute("SELECT digest FROM files").fetchone()[0],
                "shape": None if shape is None else f"{shape[0]}x{shape[1]}"}
        db.executemany("INSERT INTO sidecar(key, value) VALUES (?,?)", list(meta.items()))
        if store.name.endswith(".gz"):
            db.execute("INSERT INTO points(file, data) VALUES (1, ?)", (points(store),))
        for index in _QUERY_INDEXES:
            db.execute(f"DROP INDEX {index}")
        db.execute("COMMIT")
        db.execute("VACUUM")
    except BaseException:
        db.close()
        temporary.unlink(missing_ok=True)
        raise
    db.close()
    os.replace(temporary, target)
    return target


def usable(store: Path, state: FileState, shape: Shape | None, appended: Callable[[tuple], bool]) -> Sidecar | None:
    """The store's sidecar where it may be imported for the store as it is now (see the module
    docstring), else None. ``appended`` tells, from the sidecar's ``files`` row, whether a plain
    store only grew since (``store.sqlfiles.FileIndexer._appended``)."""
    path = sidecar_path(store)
    if not path.is_file():
        return None
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                return None
            meta = dict(db.execute("SELECT key, value FROM sidecar"))
            row = db.execute("SELECT id, name, model, size, mtime_ns, head, indexed_to, tail, lines, problem "
                             "FROM files").fetchall()
            floor = db.execute("SELECT pairs_floor FROM models").fetchall()
            # Checked against no shape, its lines fit this one if none lies outside it.
            outside = None if shape is None else db.execute(
                "SELECT count(*) FROM graphs WHERE layer>=? OR neuron>=?", shape).fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error as exc:
        log.warning("ignoring the sidecar %s: %s", path, exc)
        return None
    if (meta.get("version") != SIDECAR_VERSION or meta.get("store") != store.name or len(row) != 1
            or floor != [(PAIR_FLOOR,)]
            or meta.get("shape") not in {None if shape is None else f"{shape[0]}x{shape[1]}", None}
            or (meta.get("shape") is None and outside)):
        return None
    if meta.get("size") == state.size:
        try:
            return Sidecar(path, True) if file_digest(store) == meta.get("digest") else None
        except OSError:
            return None
    if store.name.endswith(".gz") or meta.get("size", 0) > state.size:
        return None
    try:
        return Sidecar(path, False) if appended(row[0]) else None
    except OSError:
        return None


def import_sidecar(indexer: FileIndexer, db: sqlite3.Connection, side: Sidecar, store: Path,
                   state: FileState) -> tuple[str, bool] | None:
    """Copy a usable sidecar's rows into an index (``db``, in no transaction: the sidecar is
    attached, copied from in one ``BEGIN IMMEDIATE`` transaction, and detached), replacing what
    the index held of the store; returns the store's model and whether the model's similar pairs
    came with it (where the store is the model's only file, and the sidecar indexes it whole),
    or None where another process indexed the store meanwhile. A sidecar of a plain store that
    grew since is copied as the store's first lines: the index reads the rest as after a slice."""
    db.execute("ATTACH DATABASE ? AS side", (str(side.path),))
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            found = _copy(indexer, db, side, store, state)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    finally:
        db.execute("DETACH DATABASE side")
    return found


def _copy(indexer: FileIndexer, db: sqlite3.Connection, side: Sidecar, store: Path,
          state: FileState) -> tuple[str, bool] | None:
    row = db.execute("SELECT id, size, mtime_ns, complete FROM files WHERE name=?", (store.name,)).fetchone()
    if row is not None and tuple(row[1:]) == (state.size, state.mtime_ns, 1):
        return None  # indexed meanwhile (another process)
    if row is not None:
        indexer._forget(db, row[0])
    (model,) = db.execute("SELECT model FROM side.files").fetchone()
    shift = db.execute("SELECT coalesce(max(id), 0) FROM graphs").fetchone()[0]
    file_id = db.execute(
        "INSERT INTO files(name, model, size, mtime_ns, head, indexed_to, tail, lines, problem, scan, complete, digest) "
        "SELECT name, model, ?, ?, head, indexed_to, tail, lines, problem, scan, ?, CASE WHEN ? THEN digest END "
        "FROM side.files", (state.size, state.mtime_ns, side.whole, side.whole)).lastrowid
    # The model's only file: "last line wins" within the file is the rule over the model, and the
    # sidecar applied it (its current graphs, and their pairs, are the model's).
    alone = db.execute("SELECT count(*) FROM files WHERE model=? AND id<>?", (model, file_id)).fetchone()[0] == 0
    db.execute("INSERT INTO graphs(id, file, line, model, layer, neuron, f1, rank, current, act, ctx, n_act, n_ctx, "
               "repeated, offset, length, ordinary_f1, ordinary_r) SELECT id+?, ?, line, model, layer, neuron, f1, rank, "
               "current*?, act, ctx, n_act, n_ctx, repeated, offset, length, ordinary_f1, ordinary_r "
               "FROM side.graphs ORDER BY id", (shift, file_id, alone))
    db.execute("INSERT INTO postings(kind, key, graph, share) SELECT kind, key, graph+?, share FROM side.postings",
               (shift,))
    db.execute("INSERT INTO corrupt(file, line, reason) SELECT ?, line, reason FROM side.corrupt", (file_id,))
    db.execute("INSERT INTO points(file, data) SELECT ?, data FROM side.points", (file_id,))
    if not alone:
        indexer._mark_current(db, model)
    if not side.whole or not alone:  # its pairs are made as without a sidecar
        db.execute("UPDATE models SET pairs_floor=NULL WHERE model=?", (model,))
        return model, False
    db.execute("DELETE FROM pairs WHERE model=?", (model,))
    db.execute("INSERT INTO pairs(model, a, b, a_layer, a_neuron, b_layer, b_neuron, act, ctx, score) "
               "SELECT model, a+?, b+?, a_layer, a_neuron, b_layer, b_neuron, act, ctx, score FROM side.pairs",
               (shift, shift))
    db.execute("INSERT OR REPLACE INTO models(model, pairs_floor) VALUES (?,?)", (model, PAIR_FLOOR))
    return model, True


def current_sidecar(store: Path, shapes: Callable[[str], Shape | None] | None = None) -> Sidecar | None:
    """The store's sidecar where it indexes the store as it is now, whole (None: none, stale, or
    of a prefix of a plain store that grew: :func:`write_sidecar` makes it again)."""
    try:
        indexer = _OneFile(store, shapes)
        stat = store.stat()
        state = FileState(stat.st_size, stat.st_mtime_ns)
        side = usable(store, state, indexer._shape(read_header(store)), lambda row: False)
    except (StoreFormatError, OSError, ValueError):
        return None
    return side if side is not None and side.whole else None

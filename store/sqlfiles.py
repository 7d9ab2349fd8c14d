"""How store files become rows of the store index: one role of ``store/sqlindex.py``'s index.

In: a store file (its path, state and first bytes' hash) and an open transaction of the index
database. Out: its checked lines as ``graphs`` rows, the postings of the current ones, the similar
pairs of each model. :class:`FileIndexer` holds these steps; :class:`store.sqlindex.StoreIndex`
decides when they run (in step with the directory, in one transaction or in slices) and holds
the connection. The one rule of which line is a neuron's graph ("last line wins", files in
:func:`merge_order`) is applied here, in :meth:`FileIndexer._mark_current`, and nowhere else.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import orjson

from store.errors import StoreFormatError
from store.jsonl import StoreHeader, read_header
from store.lines import IndexedLine, LineError, Shape, index_line, iter_lines
from store.models import EMBEDDED
from store.similarity import Item, TokenSets, pair_rows
from store.tokens import TokenKeys, normalize, repeat_level

log = logging.getLogger(__name__)

STORE_SUFFIXES = (".jsonl", ".jsonl.gz")
HEAD_BYTES = 1 << 16
"""Bytes hashed at the start of a file (and before its old end) to tell an append from a rewrite."""
PAIR_FLOOR = 0.7
"""Similar pairs at or above this overlap are kept in the index; lower thresholds are computed on demand."""
ACTIVATING, CONTEXT = 0, 1
"""Posting kinds."""
BLOCK_BYTES = 1 << 18
"""Lines of a ``.gz`` store are kept in the index in blocks of about this many bytes, each
compressed on its own (a graph is read by decompressing its block: well under a millisecond)."""
BATCH = 8192
"""Lines indexed between two writes of their rows."""


def is_store_file(path: Path) -> bool:
    """Whether a directory entry is a store file (hidden files and others are not)."""
    return path.name.endswith(STORE_SUFFIXES) and not path.name.startswith(".") and path.is_file()


def merge_order(name: str) -> tuple[bool, str]:
    """Files of one model are read in this order, the later winning: compressed first, then plain."""
    return (not name.endswith(".gz"), name)


def head_hash(path: Path, start: int = 0, size: int = HEAD_BYTES) -> str:
    with open(path, "rb") as f:
        f.seek(start)
        return hashlib.blake2b(f.read(size), digest_size=16).hexdigest()


def file_digest(path: Path) -> str:
    """A hash of a file's whole content: a file whose modification time changed but whose bytes
    did not (a copy, a checkout) keeps its index."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


@dataclass(frozen=True)
class FileState:
    size: int
    mtime_ns: int



class _Lines:
    """``iter_lines`` of a file that a slice can stop in and the next go on from: a ``.gz`` is
    then not decompressed again from its start for every slice."""

    def __init__(self, path: Path, start: int, state: FileState) -> None:
        self.damage: list[str] = []
        self.state = state
        self._lines = iter_lines(path, self.damage, start)
        self._back: tuple[int, bytes, bool] | None = None

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> tuple[int, bytes, bool]:
        if self._back is not None:
            item, self._back = self._back, None
            return item
        return next(self._lines)

    def stop_at(self, item: tuple[int, bytes, bool]) -> None:
        """The next slice goes on from this line (read, not indexed)."""
        self._back = item

    @property
    def at(self) -> int | None:
        return None if self._back is None else self._back[0]


class FileIndexer:
    """The steps that index store files into the database (a base of ``StoreIndex``)."""

    directory: Path
    shapes: Callable[[str], Shape | None] | None
    _readers: dict[str, _Lines]
    """Compressed files a slice stopped in, their reader where it stopped (the background worker's)."""

    @staticmethod
    def _appended(path: Path, row: tuple, state: FileState, head: str) -> bool:
        """Whether a plain file only grew since it was indexed (a build appended to it)."""
        _, name, model, size, _, old_head, indexed_to, tail, _, problem = row
        if name.endswith(".gz") or problem is not None or model is None or state.size < size:
            return False
        if head != old_head and size >= HEAD_BYTES:
            return False
        return tail == head_hash(path, max(0, indexed_to - HEAD_BYTES), min(indexed_to, HEAD_BYTES))

    def _same_bytes(self, name: str, state: FileState, row: tuple) -> bool:
        """Whether a file indexed whole (``row``: id, name, model, size, mtime_ns, complete,
        digest) holds the same bytes now that its modification time changed (touched, copied,
        checked out again): its content hash, taken when it was indexed, says so."""
        if not row[5] or row[6] is None or row[3] != state.size:
            return False
        try:
            return file_digest(self.directory / name) == row[6]
        except OSError:
            return False

    @staticmethod
    def _forget(db: sqlite3.Connection, file_id: int) -> None:
        db.execute("DELETE FROM postings WHERE graph IN (SELECT id FROM graphs WHERE file=?)", (file_id,))
        db.execute("DELETE FROM pairs WHERE a IN (SELECT id FROM graphs WHERE file=?) "
                   "OR b IN (SELECT id FROM graphs WHERE file=?)", (file_id, file_id))
        db.execute("DELETE FROM graphs WHERE file=?", (file_id,))
        db.execute("DELETE FROM blocks WHERE file=?", (file_id,))
        db.execute("DELETE FROM points WHERE file=?", (file_id,))
        db.execute("DELETE FROM corrupt WHERE file=?", (file_id,))
        db.execute("DELETE FROM files WHERE id=?", (file_id,))

    def _shape(self, header: StoreHeader) -> Shape | None:
        """The shape lines are checked against: the header's, else the caller's, else an embedded model's."""
        if header.shape is not None:
            return header.shape
        known = self.shapes(header.key) if self.shapes is not None else None
        if known is None and header.key in EMBEDDED:
            known = (EMBEDDED[header.model].n_layers, EMBEDDED[header.model].d_mlp)
        return known

    def _index_file(self, db: sqlite3.Connection, path: Path, state: FileState, head: str, *,
                    file_id: int | None = None, start: int = 0, first_line: int = 2,
                    model: str | None = None, deadline: float | None = None,
                    text: bool = True) -> tuple[str | None, bool]:
        """Index a file's lines from ``start`` (its whole body for a new file), stopping after the
        ``deadline``; returns its model, and whether it reached the end. Without ``text``, a
        ``.gz`` file's text is not kept (a sidecar keeps access points instead)."""
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
            return None, True
        if file_id is None:
            model = header.key
            scan = None if header.scan is None else header.scan.model_dump_json()
            file_id = db.execute("INSERT INTO files(name, model, lines, scan) VALUES (?,?,1,?)",
                                 (path.name, model, scan)).lastrowid
            start = -1  # skip the header line below
        else:
            db.execute("DELETE FROM corrupt WHERE file=? AND line>=?", (file_id, first_line))
        assert model is not None
        shape = self._shape(header)
        number, indexed_to = first_line - 1, max(start, 0)
        corrupt: list[tuple[int, int, str]] = []
        done = True
        lines = self._readers.pop(path.name, None) if compressed else None
        if lines is None or lines.at != start or lines.state != state:
            lines = _Lines(path, max(start, 0), state)
        with ThreadPoolExecutor(1, thread_name_prefix="n2g-index-zlib") as pool:
            # Hashing the file and compressing blocks release the interpreter's lock: they run
            # beside the parsing, on another core where there is one. (A slice that may stop
            # in the file hashes it only once it reaches the end.)
            digest = pool.submit(file_digest, path) if deadline is None else None
            batch = _Batch(db, file_id, model, pool if compressed and text else None)
            for offset, line, whole in lines:
                if compressed and offset < start:
                    continue  # a .gz is read from its start: skip to where a slice stopped
                if deadline is not None and batch.lines % 256 == 255 and time.monotonic() > deadline:
                    done = False  # the next slice goes on from indexed_to
                    if compressed:
                        lines.stop_at((offset, line, whole))
                        self._readers[path.name] = lines
                    break
                end = offset + len(line) + whole  # past the newline, where there is one
                if start < 0 and offset == 0:
                    start, indexed_to = 0, end
                    continue  # the header
                number += 1
                batch.keep(offset, line, whole)
                if not line.strip():
                    indexed_to = end
                    continue
                try:
                    entry = index_line(line, model, shape)
                except LineError as exc:
                    if not whole:  # a last line cut off mid-write: look again when the file changes
                        corrupt.append((file_id, number, "cut off (no newline at the end of the file)"))
                        break
                    corrupt.append((file_id, number, str(exc)[:200]))
                    indexed_to = end
                    continue
                indexed_to = end
                batch.add(entry, number, offset, len(line))
                if batch.lines >= BATCH:
                    batch.write()
            batch.write(last=True)
            stored_digest = None if not done else digest.result() if digest is not None else file_digest(path)
        if done:
            corrupt += [(file_id, number + 1, reason) for reason in lines.damage]
        db.executemany("INSERT INTO corrupt(file, line, reason) VALUES (?,?,?)", corrupt)
        tail = head_hash(path, max(0, indexed_to - HEAD_BYTES), min(indexed_to, HEAD_BYTES))
        try:  # a file that changed while it was read must not be trusted by its hash later
            if FileState(path.stat().st_size, path.stat().st_mtime_ns) != state:
                stored_digest = None
        except OSError:
            stored_digest = None
        db.execute("UPDATE files SET size=?, mtime_ns=?, head=?, indexed_to=?, tail=?, lines=?, complete=?, "
                   "digest=? WHERE id=?",
                   (state.size, state.mtime_ns, head, indexed_to, tail, number, done, stored_digest, file_id))
        return model, done

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
        # Every indexed line has its postings; searches and similarity read current graphs only,
        # and pairs are kept between current graphs only.
        db.executemany("UPDATE graphs SET current=0 WHERE id=?", [(g,) for g in gone])
        db.executemany("DELETE FROM pairs WHERE a=? OR b=?", [(g, g) for g in gone])
        db.executemany("UPDATE graphs SET current=1 WHERE id=?", [(g,) for g in new])
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



class _Batch:
    """The rows of the lines of one file read since the last write: graphs, their postings (written
    sorted by key, so that the postings' B-tree is filled in order), and for a ``.gz`` file the
    blocks of its text (compressed in the pool's thread).

    Tokens become keys once per spelling (``keys``, by number), and postings are kept as three
    flat lists sorted at write time, not as a tuple a posting: a million postings cost seconds
    the other way.
    """

    def __init__(self, db: sqlite3.Connection, file_id: int, model: str, pool: ThreadPoolExecutor | None) -> None:
        self.db, self.file_id, self.model, self.pool = db, file_id, model, pool
        self.next_id = db.execute("SELECT coalesce(max(id), 0) + 1 FROM graphs").fetchone()[0]
        self.lines = 0
        self.keys: dict[str, int] = {}
        """Spelling -> number of its key."""
        self.names: list[str] = []
        """Number -> key."""
        self._clear()

    def _clear(self) -> None:
        self.graphs: list[tuple] = []
        self.act_key: list[int] = []
        self.act_graph: list[int] = []
        self.act_share: list[float] = []
        self.ctx_key: list[int] = []
        self.ctx_graph: list[int] = []
        self.blocks: list[tuple[int, Future[bytes]]] = []
        self.text: list[bytes] = []
        self.text_start, self.text_bytes = -1, 0

    def keep(self, offset: int, line: bytes, whole: bool) -> None:
        """Keep a line's text for the current block (``.gz`` files only)."""
        self.lines += 1
        if self.pool is None:
            return
        if self.text_start < 0:
            self.text_start = offset
        self.text += (line, b"\n") if whole else (line,)
        self.text_bytes += len(line) + 1
        if self.text_bytes >= BLOCK_BYTES:
            self._block()

    def _block(self) -> None:
        if self.text and self.pool is not None:
            self.blocks.append((self.text_start, self.pool.submit(zlib.compress, b"".join(self.text), 1)))
        self.text, self.text_start, self.text_bytes = [], -1, 0

    def _key(self, token: str) -> int:
        key = normalize(token)
        number = self.keys[token] = self.keys.get(key, len(self.names))
        if number == len(self.names):
            self.names.append(key)
            self.keys.setdefault(key, number)
        return number

    def add(self, entry: IndexedLine, number: int, offset: int, length: int) -> None:
        keys, act, graph_id = self.keys, entry.activating, self.next_id
        self.next_id += 1
        act_keys = [keys[t] if t in keys else self._key(t) for t in act]
        values = list(act.values())
        top = max(values, default=0.0)
        if len(set(act_keys)) < len(act_keys):  # spellings of one key: it counts as its strongest
            best: dict[int, float] = {}
            for key, value in zip(act_keys, values):
                if value > best.get(key, -float("inf")):
                    best[key] = value
            act_keys, values = list(best), list(best.values())
        ctx_keys = {keys[t] if t in keys else self._key(t) for t in entry.context}
        self.act_key += act_keys
        self.act_graph += [graph_id] * len(act_keys)
        self.act_share += [v / top for v in values] if top > 0 else [0.0] * len(values)
        self.ctx_key += ctx_keys
        self.ctx_graph += [graph_id] * len(ctx_keys)
        # In-context behaviour, the order search_graphs(repeated=true) ranks by: a repeat node,
        # else a token both activating and context spelled exactly alike (a case-folded match is not).
        self.graphs.append((graph_id, self.file_id, number, self.model, entry.layer, entry.neuron, entry.f1,
                            2.0 if entry.f1 is None else -entry.f1, orjson.dumps(act).decode(),
                            orjson.dumps(entry.context).decode(), len(act_keys), len(ctx_keys),
                            repeat_level(act, entry.context), offset, length, *entry.ordinary))

    def _postings(self, kind: int, keys: list[int], graphs: list[int], shares: list[float] | None) -> list[tuple]:
        """Postings rows sorted by key, then graph (the order the lines came in)."""
        rank = [0] * len(self.names)
        for position, key in enumerate(sorted(range(len(self.names)), key=self.names.__getitem__)):
            rank[key] = position
        order = sorted(range(len(keys)), key=[rank[k] for k in keys].__getitem__)
        names = self.names
        if shares is None:
            return [(kind, names[keys[i]], graphs[i], 0.0) for i in order]
        return [(kind, names[keys[i]], graphs[i], shares[i]) for i in order]

    def write(self, last: bool = False) -> None:
        """Write what was read (``last``: the file's last batch, its last block too)."""
        db = self.db
        db.executemany(
            "INSERT INTO graphs(id, file, line, model, layer, neuron, f1, rank, act, ctx, n_act, n_ctx, repeated, "
            "offset, length, ordinary_f1, ordinary_r) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", self.graphs)
        db.executemany("INSERT INTO postings(kind, key, graph, share) VALUES (?,?,?,?)",
                       self._postings(ACTIVATING, self.act_key, self.act_graph, self.act_share))
        db.executemany("INSERT INTO postings(kind, key, graph, share) VALUES (?,?,?,?)",
                       self._postings(CONTEXT, self.ctx_key, self.ctx_graph, None))
        if last:
            self._block()
        db.executemany("INSERT INTO blocks(file, start, data) VALUES (?,?,?)",
                       [(self.file_id, start, data.result()) for start, data in self.blocks])
        self._clear()
        self.lines = 0


def token_sets(db: sqlite3.Connection, model: str) -> TokenSets:
    """One model's current graphs as normalised token sets, in result order (what all-pairs reads)."""
    items, keys = [], []
    interned: dict[str, str] = {}  # spelling -> its key, one string per key

    def key(token: str) -> str:
        found = interned.get(token)
        if found is None:
            found = interned[token] = interned.setdefault(normalize(token), normalize(token))
        return found

    for graph_id, layer, neuron, act, ctx in db.execute(
            "SELECT id, layer, neuron, act, ctx FROM graphs WHERE model=? AND current=1 "
            "ORDER BY rank, layer, neuron", (model,)):
        items.append(Item(graph_id, layer, neuron))
        keys.append(TokenKeys(frozenset([key(t) for t in orjson.loads(act)]),
                              frozenset([key(t) for t in orjson.loads(ctx)])))
    return TokenSets(items, keys)

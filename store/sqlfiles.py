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
from dataclasses import dataclass
from pathlib import Path

import orjson

from store.errors import StoreFormatError
from store.jsonl import StoreHeader, read_header
from store.lines import LineError, Shape, check_line, iter_lines
from store.models import EMBEDDED
from store.similarity import Item, TokenSets, pair_rows
from store.tokens import TokenKeys, key_shares, normalize, repeat_level

log = logging.getLogger(__name__)

STORE_SUFFIXES = (".jsonl", ".jsonl.gz")
HEAD_BYTES = 1 << 16
"""Bytes hashed at the start of a file (and before its old end) to tell an append from a rewrite."""
PAIR_FLOOR = 0.7
"""Similar pairs at or above this overlap are kept in the index; lower thresholds are computed on demand."""
ACTIVATING, CONTEXT = 0, 1
"""Posting kinds."""


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


@dataclass(frozen=True)
class FileState:
    size: int
    mtime_ns: int



class FileIndexer:
    """The steps that index store files into the database (a base of ``StoreIndex``)."""

    directory: Path
    shapes: Callable[[str], Shape | None] | None

    @staticmethod
    def _appended(path: Path, row: tuple, state: FileState, head: str) -> bool:
        """Whether a plain file only grew since it was indexed (a build appended to it)."""
        _, name, model, size, _, old_head, indexed_to, tail, _, problem = row
        if name.endswith(".gz") or problem is not None or model is None or state.size < size:
            return False
        if head != old_head and size >= HEAD_BYTES:
            return False
        return tail == head_hash(path, max(0, indexed_to - HEAD_BYTES), min(indexed_to, HEAD_BYTES))

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
                    model: str | None = None, deadline: float | None = None) -> tuple[str | None, bool]:
        """Index a file's lines from ``start`` (its whole body for a new file), stopping after the
        ``deadline``; returns its model, and whether it reached the end."""
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
            model = header.model
            scan = None if header.scan is None else header.scan.model_dump_json()
            file_id = db.execute("INSERT INTO files(name, model, lines, scan) VALUES (?,?,1,?)",
                                 (path.name, model, scan)).lastrowid
            start = -1  # skip the header line below
        else:
            db.execute("DELETE FROM corrupt WHERE file=? AND line>=?", (file_id, first_line))
        assert model is not None
        shape = self._shape(header)
        number, indexed_to = first_line - 1, max(start, 0)
        graphs, corrupt, damage = [], [], []
        done = True
        for offset, line, whole in iter_lines(path, damage, max(start, 0)):
            if compressed and offset < start:
                continue  # a .gz is read from its start: skip to where a slice stopped
            if deadline is not None and len(graphs) % 256 == 255 and time.monotonic() > deadline:
                done = False  # the next slice goes on from indexed_to
                break
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
        if done:
            corrupt += [(file_id, number + 1, reason) for reason in damage]
        db.executemany("INSERT INTO corrupt(file, line, reason) VALUES (?,?,?)", corrupt)
        tail = head_hash(path, max(0, indexed_to - HEAD_BYTES), min(indexed_to, HEAD_BYTES))
        db.execute("UPDATE files SET size=?, mtime_ns=?, head=?, indexed_to=?, tail=?, lines=?, complete=? "
                   "WHERE id=?", (state.size, state.mtime_ns, head, indexed_to, tail, number, done, file_id))
        return model, done

    @staticmethod
    def _insert(db: sqlite3.Connection, file_id: int, model: str, graphs: list) -> None:
        for entry, number, offset, length, blob in graphs:
            act_keys = {normalize(t) for t in entry.activating}
            ctx_keys = {normalize(t) for t in entry.context}
            rank = 2.0 if entry.f1 is None else -entry.f1
            db.execute(
                "INSERT INTO graphs(file, line, model, layer, neuron, f1, rank, act, ctx, n_act, n_ctx, repeated, "
                "offset, length, blob) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (file_id, number, model, entry.layer, entry.neuron, entry.f1, rank,
                 orjson.dumps(entry.raw.get("activating_tokens", {})).decode(), orjson.dumps(entry.context).decode(),
                 len(act_keys), len(ctx_keys), repeat_level(entry.activating, entry.context),
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
                postings += [(ACTIVATING, k, graph_id, share) for k, share in key_shares(orjson.loads(act)).items()]
                postings += [(CONTEXT, k, graph_id, 0.0) for k in {normalize(t) for t in orjson.loads(ctx)}]
        db.executemany("INSERT OR IGNORE INTO postings(kind, key, graph, share) VALUES (?,?,?,?)", postings)
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


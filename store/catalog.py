"""The stores of a directory, by model: the one container the server reads graphs through.

In: a directory (the server's ``--stores``); every ``*.jsonl`` and ``*.jsonl.gz`` file in it is a
store, grouped by the model its header names. Out: per model a :class:`StoreView` that counts,
lists, searches and compares its graphs through the persistent index of ``store/sqlindex.py``,
and loads a full graph only when asked::

    catalog = Catalog(Path("stores"))
    catalog.models()                          # [StoreView(model="smollm2-135m"), ...]
    view = catalog.get("smollm2-135m")        # None where no store holds that model
    view.search([" except"], [" everyone"])   # (total, [Hit(...), ...])
    view.get(0, 404)                          # a NeuronGraph, parsed and validated now
    catalog.writable_path("smollm2-135m")     # stores/smollm2-135m.jsonl

Which line holds a neuron's graph (the last one, in the last file: a graph built here overrides
a shipped one) is decided by the index, in one place. Every call first brings the index in step
with the files (a stat per file when nothing changed). No torch, no model: this module only
reads files. It is thread-safe (the MCP server calls it from worker threads).
"""

from __future__ import annotations

import heapq
import threading
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from store.graph import NeuronGraph
from store.jsonl import Shape, StoreError
from store.names import file_safe, neuron_id
from store.similarity import Match, Pair, containment, overlap, similar_pairs
from store.sqlindex import ACTIVATING, PAIR_FLOOR, StoreIndex, TokenSets, merge_order
from store.tokens import normalize

GRAPH_CACHE = 64
"""Full graphs kept parsed, most recently used."""


def store_filename(model: str) -> str:
    """The file name of a model's writable store: the model name with unsafe characters replaced.

    >>> store_filename("smollm2-135m"), store_filename("NeelNanda/SoLU_6L")
    ('smollm2-135m.jsonl', 'NeelNanda_SoLU_6L.jsonl')
    """
    return f"{file_safe(model)}.jsonl"


@dataclass(frozen=True)
class Hit:
    """A graph as the index knows it: enough to list it, without loading it."""

    layer: int
    neuron: int
    f1: float | None
    activating_tokens: list[str]
    """Activating tokens, strongest first (as stored)."""
    context_tokens: list[str]
    """Context tokens, most important first."""

    @property
    def id(self) -> str:
        return neuron_id(self.layer, self.neuron)


class CorruptGraph(StoreError):
    """A stored line that indexed but does not validate as a whole graph."""


class StoreView:
    """One model's graphs over all its store files; see the module docstring."""

    def __init__(self, catalog: Catalog, model: str) -> None:
        self._catalog, self.model = catalog, model

    def __repr__(self) -> str:
        return f"StoreView(model={self.model!r})"

    def _rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        index = self._catalog.index
        with index.lock:
            return index.db.execute(sql, params).fetchall()

    # ----------------------------------------------------------------- container
    def __len__(self) -> int:
        return self._catalog._cached(("len", self.model), lambda: self._rows(
            "SELECT count(*) FROM graphs WHERE model=? AND current=1", (self.model,))[0][0])

    def layers(self) -> list[int]:
        """The layers that have at least one graph, ascending."""
        return self._catalog._cached(("layers", self.model), lambda: [layer for (layer,) in self._rows(
            "SELECT DISTINCT layer FROM graphs WHERE model=? AND current=1 ORDER BY layer", (self.model,))])

    def _ranks(self) -> list[float]:
        """Every graph's rank (-F1, unscored last), ascending: counts ``min_f1`` listings by bisection."""
        return self._catalog._cached(("ranks", self.model), lambda: [rank for (rank,) in self._rows(
            "SELECT rank FROM graphs WHERE model=? AND current=1 ORDER BY rank", (self.model,))])

    def _graph_id(self, layer: int, neuron: int) -> int | None:
        rows = self._rows("SELECT id FROM graphs WHERE model=? AND layer=? AND neuron=? AND current=1",
                          (self.model, layer, neuron))
        return rows[0][0] if rows else None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and len(key) == 2 and self._graph_id(*key) is not None

    def hit(self, layer: int, neuron: int) -> Hit | None:
        """What the index knows of one neuron's graph (tokens, F1), without loading it."""
        rows = self._rows("SELECT layer, neuron, f1, act, ctx FROM graphs WHERE model=? AND layer=? "
                          "AND neuron=? AND current=1", (self.model, layer, neuron))
        return _hit(rows[0]) if rows else None

    def get(self, layer: int, neuron: int) -> NeuronGraph | None:
        """The graph of one neuron, parsed and validated, or None where no store has it.

        Raises:
            CorruptGraph: where its line indexed but does not validate as a whole graph.
        """
        graph_id = self._graph_id(layer, neuron)
        if graph_id is None:
            return None
        return self._catalog._graph(graph_id, neuron_id(layer, neuron))

    @property
    def files(self) -> list[str]:
        """The names of the model's store files, in merge order (later wins)."""
        names = [name for (name,) in self._rows("SELECT name FROM files WHERE model=?", (self.model,))]
        return sorted(names, key=merge_order)

    @property
    def corrupt_lines(self) -> int:
        """Lines skipped, over all the model's files."""
        return self._rows("SELECT count(*) FROM corrupt c JOIN files f ON f.id=c.file WHERE f.model=?",
                          (self.model,))[0][0]

    def corrupt_reports(self, limit: int = 5) -> list[str]:
        """One line per file with skipped lines, saying which and why."""
        by_file: dict[str, list[tuple[int, str]]] = {}
        for name, line, reason in self._rows("SELECT f.name, c.line, c.reason FROM corrupt c JOIN files f "
                                             "ON f.id=c.file WHERE f.model=? ORDER BY c.line", (self.model,)):
            by_file.setdefault(name, []).append((line, reason))
        reports = []
        for name in sorted(by_file, key=merge_order):
            skipped = by_file[name]
            shown = ", ".join(f"line {line} ({reason})" for line, reason in skipped[:limit])
            more = f" and {len(skipped) - limit} more" if len(skipped) > limit else ""
            reports.append(f"{len(skipped)} corrupt line(s) skipped in {name}: {shown}{more}")
        return reports

    # ----------------------------------------------------------------- search
    def search(self, activating: Sequence[str] = (), context: Sequence[str] = (), *,
               exact: bool = False, layer: int | None = None, min_f1: float | None = None,
               repeated: bool = False, limit: int | None = None, offset: int = 0) -> tuple[int, list[Hit]]:
        """Graphs holding every given activating and context token, best F1 first.

        Tokens match case- and space-insensitively (``store.tokens.normalize``) unless ``exact``;
        ``repeated`` keeps graphs where some token is both activating and context (the paper's
        search for in-context neurons); graphs with no F1 fall below every ``min_f1``.

        Returns:
            ``(total, hits)``: how many graphs match, and the page ``[offset, offset + limit)``
            ordered by F1 descending (unscored last), then layer and neuron.
        """
        if isinstance(activating, str) or isinstance(context, str):
            raise TypeError("activating and context take a list of tokens, not a string")
        where, params = ["g.model=?", "g.current=1"], [self.model]
        for kind, tokens in ((0, activating), (1, context)):
            for token in dict.fromkeys(normalize(t) for t in tokens):
                where.append("g.id IN (SELECT graph FROM postings WHERE kind=? AND key=?)")
                params += [kind, token]
        if layer is not None:
            where.append("g.layer=?")
            params.append(layer)
        if min_f1 is not None:
            where.append("g.rank<=?")
            params.append(-min_f1)
        if repeated:
            where.append("g.repeated_exact=1" if exact else "g.repeated=1")
        clause = " AND ".join(where)
        columns = "SELECT g.layer, g.neuron, g.f1, g.act, g.ctx FROM graphs g WHERE "
        order = " ORDER BY g.rank, g.layer, g.neuron"
        if exact and (activating or context):
            # Spellings are checked on the normalised hits rather than indexed a second time.
            hits = [h for h in map(_hit, self._rows(columns + clause + order, tuple(params)))
                    if set(activating) <= set(h.activating_tokens) and set(context) <= set(h.context_tokens)]
            end = len(hits) if limit is None else offset + limit
            return len(hits), hits[offset:end]
        if len(where) == 2:
            total = len(self)
        elif len(where) == 3 and min_f1 is not None:
            total = bisect_right(self._ranks(), -min_f1)
        else:
            total = self._rows("SELECT count(*) FROM graphs g WHERE " + clause, tuple(params))[0][0]
        page = " LIMIT ? OFFSET ?" if limit is not None else " LIMIT -1 OFFSET ?"
        page_params = (limit, offset) if limit is not None else (offset,)
        return total, [_hit(r) for r in self._rows(columns + clause + order + page, (*params, *page_params))]

    # ----------------------------------------------------------------- similar
    def similar_to(self, target: NeuronGraph, *, threshold: float = 0.9,
                   mode: Literal["similar", "subset"] = "similar", limit: int = 20) -> list[Match]:
        """Neurons whose token sets overlap the target's (``store.similarity.similar_to``'s rule)."""
        act = frozenset(map(normalize, target.activating_tokens))
        ctx = frozenset(map(normalize, target.context_tokens))
        if not act:
            return []
        keys = sorted(act)
        rows = self._rows(
            "SELECT g.layer, g.neuron, g.n_act, g.ctx, c.n FROM (SELECT graph, count(*) AS n FROM postings "
            f"WHERE kind={ACTIVATING} AND key IN ({','.join('?' * len(keys))}) GROUP BY graph) c "
            "JOIN graphs g ON g.id=c.graph WHERE g.model=? AND g.current=1", (*keys, self.model))
        found = []
        for layer, neuron, n_act, ctx_json, shared in rows:
            if (layer, neuron) == (target.layer, target.neuron):
                continue
            act_score = shared / (max(len(act), n_act) if mode == "similar" else len(act))
            if act_score < threshold:
                continue
            other = frozenset(map(normalize, orjson.loads(ctx_json)))
            ctx_score = overlap(ctx, other) if mode == "similar" else containment(ctx, other)
            if ctx_score >= threshold:
                found.append((min(act_score, ctx_score), layer, neuron, act_score, ctx_score))
        best = heapq.nsmallest(limit, found, key=lambda f: (-f[0], f[1], f[2]))
        return [Match(id=neuron_id(layer, neuron), layer=layer, neuron=neuron, activating_overlap=a,
                      context_overlap=c) for _, layer, neuron, a, c in best]

    def similar_pairs(self, *, threshold: float = 0.9, limit: int = 20, layer: int | None = None) -> list[Pair]:
        """The most similar pairs (``store.similarity.similar_pairs``'s rule); read from the index
        for thresholds at or above ``store.sqlindex.PAIR_FLOOR``, computed for lower ones."""
        if threshold < PAIR_FLOOR:
            index = self._catalog.index
            with index.lock:
                sets = TokenSets.load(index.db, self.model)
            return similar_pairs(sets, threshold=threshold, limit=limit, layer=layer)
        where, params = "model=? AND score>=?", [self.model, threshold]
        if layer is not None:
            where += " AND a_layer=? AND b_layer=?"
            params += [layer, layer]
        rows = self._rows(f"SELECT a_layer, a_neuron, b_layer, b_neuron, act, ctx FROM pairs WHERE {where} "
                          "ORDER BY score DESC, a_layer, a_neuron, b_layer, b_neuron LIMIT ?", (*params, limit))
        return [Pair(a=neuron_id(al, an), b=neuron_id(bl, bn), activating_overlap=act, context_overlap=ctx)
                for al, an, bl, bn, act, ctx in rows]


def _hit(row: tuple) -> Hit:
    layer, neuron, f1, act, ctx = row
    return Hit(layer=layer, neuron=neuron, f1=f1, activating_tokens=orjson.loads(act), context_tokens=orjson.loads(ctx))


class Catalog:
    """The stores of one directory, by model; see the module docstring.

    Args:
        directory: where the stores are; it need not exist yet (a first build creates it).
        index_path: the index database (default: see :class:`store.sqlindex.StoreIndex`).
        shapes: ``(n_layers, d_mlp)`` of a model by name, or None where unknown; lines of stores
            whose header records no shape are checked against it (the server passes the models
            it serves), so a line with a layer or neuron the model lacks is skipped as corrupt.
    """

    def __init__(self, directory: Path, index_path: Path | None = None,
                 shapes: Callable[[str], Shape | None] | None = None) -> None:
        self.directory = Path(directory)
        self.index = StoreIndex(self.directory, index_path, shapes)
        self._lock = threading.RLock()
        self._graphs: OrderedDict[int, NeuronGraph] = OrderedDict()
        self._cache: dict[tuple, object] = {}
        self._generation = -1

    def refresh(self) -> None:
        """Bring the index in step with the files (cheap when nothing changed)."""
        with self._lock:
            self.index.refresh()
            if self.index.generation != self._generation:
                self._generation = self.index.generation
                self._cache.clear()
                self._graphs.clear()

    def _cached(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """A value computed once per state of the stores (counts, layers, ranks)."""
        with self._lock:
            if key not in self._cache:
                self._cache[key] = compute()
            return self._cache[key]

    def _graph(self, graph_id: int, name: str) -> NeuronGraph:
        with self._lock:
            cached = self._graphs.get(graph_id)
            if cached is not None:
                self._graphs.move_to_end(graph_id)
                return cached
        try:
            graph = NeuronGraph.model_validate(orjson.loads(self.index.line(graph_id)))
            graph.graph  # noqa: B018 - validate the trie rows now, not at first use
        except (orjson.JSONDecodeError, ValidationError, ValueError, LookupError, OSError) as exc:
            reason = str(exc).splitlines()[0][:200]
            raise CorruptGraph(f"the stored graph of {name} cannot be read ({reason}); rebuild it with "
                               "build_graph(rebuild=true)") from exc
        with self._lock:
            self._graphs[graph_id] = graph
            while len(self._graphs) > GRAPH_CACHE:
                self._graphs.popitem(last=False)
        return graph

    def _model_names(self) -> list[str]:
        with self.index.lock:
            rows = self.index.db.execute("SELECT DISTINCT model FROM files WHERE model IS NOT NULL "
                                         "ORDER BY model").fetchall()
        return [model for (model,) in rows]

    def models(self) -> list[StoreView]:
        """Every model with at least one store file, by name (refreshes first)."""
        self.refresh()
        return [StoreView(self, model) for model in self._model_names()]

    def get(self, model: str) -> StoreView | None:
        """One model's stores, or None where no file holds that model (refreshes first)."""
        self.refresh()
        return StoreView(self, model) if model in self._model_names() else None

    @property
    def problems(self) -> list[str]:
        """Files in the directory that could not be read as stores, with the reason."""
        with self.index.lock:
            rows = self.index.db.execute("SELECT problem FROM files WHERE problem IS NOT NULL ORDER BY name")
            return [problem for (problem,) in rows.fetchall()]

    def writable_path(self, model: str) -> Path:
        """Where new graphs of a model are appended: its existing plain store, else ``<model>.jsonl``."""
        self.refresh()
        with self.index.lock:
            rows = self.index.db.execute("SELECT name FROM files WHERE model=? ORDER BY name", (model,)).fetchall()
        for (name,) in rows:
            if not name.endswith(".gz"):
                return self.directory / name
        return self.directory / store_filename(model)

"""Reading the store index: every query the package asks of it, in one place.

In: a :class:`store.sqlindex.StoreIndex` (kept in step with the files by the catalog). Out: counts,
layers, one neuron's record (:class:`Hit`), token search, similar neurons and pairs, without
parsing a graph. ``store.catalog.StoreView`` is the container the server uses over it; this
module holds the SQL.

Search order: with activating tokens, how much of the graph they explain first
(``store.tokens.explained``: the mean of their activations relative to the graph's strongest, kept
on each activating posting as ``share``), then F1 descending (unscored last), then layer and
neuron; the index's ``rank`` column is ``-F1`` (2 for unscored), so ``min_f1`` is a range of it.
Tokens match by normalised key (``store.tokens.normalize``) unless ``exact``, in which case the
spellings are checked, and the shares taken from them, on the normalised hits rather than
indexed a second time.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, replace

import orjson

from store.graph import NeuronGraph
from store.names import neuron_id
from store.similarity import (
    PAPER_THRESHOLD,
    SIMILAR_LIMIT,
    Candidate,
    Match,
    Mode,
    Pair,
    PairBudget,
    TokenSets,
    rank_matches,
    similar_pairs,
)
from store.sqlindex import (
    ACTIVATING,
    CONTEXT,
    PAIR_FLOOR,
    StoreIndex,
    merge_order,
    token_sets,
)
from store.tokens import explained, normalize, repeat_level, token_keys


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
    explained: float | None = None
    """For a search with activating tokens, how much of the graph they explain
    (``store.tokens.explained``); None otherwise."""
    ordinary_f1: float | None = None
    ordinary_r: float | None = None
    """F1 and correlation on held-out documents, where the graph was scored there."""

    @property
    def id(self) -> str:
        return neuron_id(self.layer, self.neuron)


_HIT_COLUMNS = "g.layer, g.neuron, g.f1, g.act, g.ctx, g.ordinary_f1, g.ordinary_r"


def _hit(row: tuple) -> Hit:
    layer, neuron, f1, act, ctx, ordinary_f1, ordinary_r, *score = row
    return Hit(layer=layer, neuron=neuron, f1=f1, activating_tokens=list(orjson.loads(act)),
               context_tokens=orjson.loads(ctx), explained=score[0] if score else None,
               ordinary_f1=ordinary_f1, ordinary_r=ordinary_r)


class IndexSearch:
    """The read queries of one store index; thread-safe (each holds the index's lock)."""

    def __init__(self, index: StoreIndex) -> None:
        self.index = index

    def _rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        with self.index.lock:
            return self.index.db.execute(sql, tuple(params)).fetchall()

    # ----------------------------------------------------------------- files
    def models(self) -> list[str]:
        """Models with at least one readable store file, by name."""
        return [m for (m,) in self._rows("SELECT DISTINCT model FROM files WHERE model IS NOT NULL ORDER BY model")]

    def problems(self) -> list[str]:
        """Files that could not be read as stores, with the reason."""
        return [p for (p,) in self._rows("SELECT problem FROM files WHERE problem IS NOT NULL ORDER BY name")]

    def files(self, model: str) -> list[str]:
        """A model's store file names, in merge order (later wins)."""
        return sorted((n for (n,) in self._rows("SELECT name FROM files WHERE model=?", (model,))), key=merge_order)

    def corrupt(self, model: str) -> list[tuple[str, int, str]]:
        """``(file, line, reason)`` of every skipped line of a model's files."""
        return self._rows("SELECT f.name, c.line, c.reason FROM corrupt c JOIN files f ON f.id=c.file "
                          "WHERE f.model=? ORDER BY c.line", (model,))

    # ----------------------------------------------------------------- graphs
    def count(self, model: str) -> int:
        return self._rows("SELECT count(*) FROM graphs WHERE model=? AND current=1", (model,))[0][0]

    def layers(self, model: str) -> list[int]:
        """Layers with at least one graph, ascending."""
        return [layer for (layer,) in self._rows(
            "SELECT DISTINCT layer FROM graphs WHERE model=? AND current=1 ORDER BY layer", (model,))]

    def ranks(self, model: str) -> list[float]:
        """Every graph's rank, ascending (``min_f1`` listings are counted from it by bisection)."""
        return [rank for (rank,) in self._rows(
            "SELECT rank FROM graphs WHERE model=? AND current=1 ORDER BY rank", (model,))]

    def f1_by_layer(self, model: str) -> dict[int, list[float]]:
        """Every scored graph's F1, by layer (the viewer's per-layer plot), ascending."""
        out: dict[int, list[float]] = {}
        for layer, f1 in self._rows("SELECT layer, f1 FROM graphs WHERE model=? AND current=1 AND f1 IS NOT NULL "
                                    "ORDER BY layer, f1", (model,)):
            out.setdefault(layer, []).append(f1)
        return out

    def graph_id(self, model: str, layer: int, neuron: int) -> int | None:
        """The index's id of a neuron's current graph, or None."""
        rows = self._rows("SELECT id FROM graphs WHERE model=? AND layer=? AND neuron=? AND current=1",
                          (model, int(layer), int(neuron)))
        return rows[0][0] if rows else None

    def hit(self, model: str, layer: int, neuron: int) -> Hit | None:
        """What the index knows of one neuron's graph (tokens, F1), without loading it."""
        rows = self._rows(f"SELECT {_HIT_COLUMNS} FROM graphs g WHERE g.model=? AND g.layer=? AND g.neuron=? "
                          "AND g.current=1", (model, int(layer), int(neuron)))
        return _hit(rows[0]) if rows else None

    def line(self, graph_id: int) -> bytes:
        """A graph's stored line (see ``StoreIndex.line``)."""
        return self.index.line(graph_id)

    # ----------------------------------------------------------------- search
    def search(self, model: str, activating: Sequence[str] = (), context: Sequence[str] = (), *,
               words: Sequence[str] = (), exact: bool = False, layer: int | None = None, min_f1: float | None = None,
               min_ordinary_f1: float | None = None,
               repeated: bool = False, limit: int | None = None, offset: int = 0,
               count: int | None = None, ranks: Sequence[float] | None = None) -> tuple[int, list[Hit]]:
        """Graphs holding every given activating and context token: those the activating tokens
        explain most first, then best F1 (see the module docstring).

        ``words`` keeps graphs holding each word as an activating or a context token, either
        (normalised, whatever ``exact`` says): the tokens a graph's description names
        (``store.describe``). ``repeated`` keeps graphs with a repeat node
        (``store.tokens.REPEAT_KEY``) or where some token is both activating and context, spelled
        exactly alike (the paper's search for in-context neurons; ``store.tokens.repeat_level``),
        those with a repeat node first; graphs with no F1 fall below every ``min_f1``, and graphs
        not scored on held-out documents below every ``min_ordinary_f1``. ``count``
        and ``ranks`` (the model's :meth:`count` and :meth:`ranks`, where the caller keeps them)
        save a count query for unfiltered and F1-only listings.

        Returns:
            ``(total, hits)``: how many graphs match, and the page ``[offset, offset + limit)``.
        """
        if isinstance(activating, str) or isinstance(context, str) or isinstance(words, str):
            raise TypeError("activating, context and words take a list of tokens, not a string")
        # One join a distinct activating key: it filters, and its share ranks.
        keys = list(dict.fromkeys(normalize(t) for t in activating))
        joins = [f"JOIN postings p{i} ON p{i}.graph=g.id AND p{i}.kind={ACTIVATING} AND p{i}.key=?"
                 for i in range(len(keys))]
        where, params = ["g.model=?", "g.current=1"], [*keys, model]
        for token in dict.fromkeys(normalize(t) for t in context):
            where.append("g.id IN (SELECT graph FROM postings WHERE kind=? AND key=?)")
            params += [CONTEXT, token]
        for word in dict.fromkeys(normalize(w) for w in words):
            where.append(f"g.id IN (SELECT graph FROM postings WHERE kind IN ({ACTIVATING}, {CONTEXT}) AND key=?)")
            params.append(word)
        if layer is not None:
            where.append("g.layer=?")
            params.append(int(layer))
        if min_f1 is not None:
            where.append("g.rank<=?")
            params.append(-min_f1)
        if min_ordinary_f1 is not None:
            where.append("g.ordinary_f1>=?")
            params.append(min_ordinary_f1)
        if repeated:
            where.append("g.repeated>0")
        body = f"FROM graphs g {' '.join(joins)} WHERE {' AND '.join(where)}"
        score = f"({' + '.join(f'p{i}.share' for i in range(len(keys)))}) / {len(keys)}.0" if keys else "NULL"
        order = "explained DESC, g.rank, g.layer, g.neuron" if keys else "g.rank, g.layer, g.neuron"
        if repeated:  # repeat paths before tokens that merely recur
            order = "g.repeated DESC, " + order
        select = f"SELECT {_HIT_COLUMNS}, {score} AS explained {body} ORDER BY {order}"
        if exact and (activating or context):
            return self._exact(select, params, activating, context, limit, offset, repeated)
        if not keys and len(where) == 2:
            total = count if count is not None else self.count(model)
        elif not keys and len(where) == 3 and min_f1 is not None and min_ordinary_f1 is None:
            total = bisect_right(ranks if ranks is not None else self.ranks(model), -min_f1)
        else:
            total = self._rows(f"SELECT count(*) {body}", params)[0][0]
        page = self._rows(select + " LIMIT ? OFFSET ?", [*params, -1 if limit is None else limit, offset])
        return total, [_hit(r) for r in page]

    def _exact(self, select: str, params: Sequence[object], activating: Sequence[str], context: Sequence[str],
               limit: int | None, offset: int, repeated: bool) -> tuple[int, list[Hit]]:
        """An exact search: the normalised hits with the spellings checked, ranked by the exact
        spellings' shares (``store.tokens.explained(exact=True)``), after repeat paths where
        ``repeated``."""
        hits = []
        for row in self._rows(select, params):
            act, ctx = orjson.loads(row[3]), orjson.loads(row[4])
            if set(activating) <= act.keys() and set(context) <= set(ctx):
                hit = _hit(row[:7])
                hits.append(replace(hit, explained=explained(act, activating, exact=True)))
        if activating:
            first = (lambda h: -repeat_level(h.activating_tokens, h.context_tokens)) if repeated else (lambda h: 0)
            hits.sort(key=lambda h: (first(h), -h.explained, h.f1 is None, -(h.f1 or 0.0), h.layer, h.neuron))
        end = len(hits) if limit is None else offset + limit
        return len(hits), hits[offset:end]

    # ----------------------------------------------------------------- similar
    def similar_to(self, model: str, target: NeuronGraph, *, threshold: float = PAPER_THRESHOLD,
                   mode: Mode = "similar", limit: int = SIMILAR_LIMIT) -> list[Match]:
        """Neurons whose token sets overlap the target's: candidates counted here, scored by
        ``store.similarity.rank_matches`` (the rule ``similarity.similar_to`` applies in memory)."""
        act, ctx = token_keys(target)
        if not act:
            return []
        keys = sorted(act)
        rows = self._rows(
            "SELECT g.layer, g.neuron, c.n, g.n_act, g.ctx FROM (SELECT graph, count(*) AS n FROM postings "
            f"WHERE kind={ACTIVATING} AND key IN ({','.join('?' * len(keys))}) GROUP BY graph) c "
            "JOIN graphs g ON g.id=c.graph WHERE g.model=? AND g.current=1", (*keys, model))
        candidates = (Candidate(layer, neuron, shared, n_act, frozenset(map(normalize, orjson.loads(ctx_json))))
                      for layer, neuron, shared, n_act, ctx_json in rows)
        return rank_matches(act, ctx, candidates, (target.layer, target.neuron), threshold=threshold,
                            mode=mode, limit=limit)

    def token_sets(self, model: str) -> TokenSets:
        """A model's graphs as token sets (for all-pairs below the stored floor)."""
        with self.index.lock:
            return token_sets(self.index.db, model)

    def similar_pairs(self, model: str, *, threshold: float = PAPER_THRESHOLD, limit: int = SIMILAR_LIMIT,
                      layer: int | None = None, kept: bool = True, budget: PairBudget | None = None) -> list[Pair]:
        """The most similar pairs (``store.similarity.similar_pairs``'s rule): read from the pairs
        kept at or above ``store.sqlindex.PAIR_FLOOR``; computed for a lower threshold only where
        fewer than ``limit`` are kept (otherwise the kept ones are the answer: every pair below the
        floor ranks after them), and for any where the kept pairs are not made yet (``kept``
        false), under ``budget``'s cap and cancel event."""
        if not kept:
            return similar_pairs(self.token_sets(model), threshold=threshold, limit=limit, layer=layer, budget=budget)
        kept_pairs = self._kept_pairs(model, max(threshold, PAIR_FLOOR), limit, layer)
        if threshold >= PAIR_FLOOR or len(kept_pairs) >= limit:
            if budget is not None:
                budget.complete_to = threshold
            return kept_pairs
        return similar_pairs(self.token_sets(model), threshold=threshold, limit=limit, layer=layer, budget=budget,
                             known=kept_pairs, known_to=PAIR_FLOOR)

    def _kept_pairs(self, model: str, threshold: float, limit: int, layer: int | None) -> list[Pair]:
        """The best ``limit`` pairs kept in the index whose overlaps reach ``threshold`` (at least the floor)."""
        where, params = "model=? AND score>=?", [model, threshold]
        if layer is not None:
            where += " AND a_layer=? AND b_layer=?"
            params += [int(layer), int(layer)]
        rows = self._rows(f"SELECT a_layer, a_neuron, b_layer, b_neuron, act, ctx FROM pairs WHERE {where} "
                          "ORDER BY score DESC, a_layer, a_neuron, b_layer, b_neuron LIMIT ?", (*params, limit))
        return [Pair(a=neuron_id(al, an), b=neuron_id(bl, bn), activating_overlap=act, context_overlap=ctx)
                for al, an, bl, bn, act, ctx in rows]

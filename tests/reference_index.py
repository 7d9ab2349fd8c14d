"""The reference index: token search written plainly over graphs in memory, for the tests.

The package searches through its SQLite index (``store.sqlsearch``); this module states the same
rules over a list of graphs, simply enough to check by eye, and the tests hold the SQL against it
on generated stores (``tests/test_sqlindex.py``). It is not used by the package.

In: an iterable of :class:`store.graph.NeuronGraph` (one model's store). Out: a :class:`GraphIndex`,
built once and then queried::

    index = GraphIndex(read_store(path))          # store.jsonl.read_store: a Store iterates graphs
    index.search(activating=[" everyone"], context=[" except"])   # the paper's Figure 1 neuron
    index.search(repeated=True, min_f1=0.5)                          # in-context learning candidates

The paper (Foote et al. 2023, section 3.2) searches graphs by activating and by context tokens, and
finds in-context learning neurons by looking for graphs that hold some token both as an activating
and as a context token (section 4.2); ``search(repeated=True)`` is that search.

Tokens match case- and space-insensitively (``store.tokens.normalize``) unless ``exact=True``.
A search with activating tokens ranks first the graphs they explain most: the mean, over the
query's distinct tokens, of the token's activation in the graph (its strongest matching spelling)
relative to the graph's strongest activating token; then in result order (F1 and so on).
Every filter is a set of graph *positions*; a query intersects those sets smallest first, so its
cost follows the rarest token asked for rather than the number of graphs. A graph's position is its
rank in result order (F1 descending, None last, then layer, then neuron), so sorting hits by
position sorts them for the answer, and ``min_f1`` is a prefix of the positions.

Only normalised keys are indexed. An exact match is always a normalised match, so an exact query
intersects the normalised postings and then checks the spellings on the few hits: the same answer
as a second, exact index, at half the memory.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import Literal

from store.graph import NeuronGraph, top_f1
from store.tokens import REPEAT_KEY, TokenKeys, normalize

Kind = Literal["activating", "context"]

_EMPTY: frozenset[int] = frozenset()


def explained(graph: NeuronGraph, activating: Sequence[str], exact: bool) -> float:
    """How much of a graph the query's activating tokens explain (see the module docstring)."""
    acts = graph.activating_tokens
    top = max(acts.values(), default=0.0)
    shares = []
    for query in dict.fromkeys(activating if exact else (normalize(t) for t in activating)):
        values = [v for t, v in acts.items() if (t if exact else normalize(t)) == query]
        shares.append(max(values) / top if values and top > 0 else 0.0)
    return sum(shares) / len(shares)


def _result_order(graph: NeuronGraph) -> tuple[bool, float, int, int]:
    f1 = top_f1(graph)
    return (f1 is None, -(f1 or 0.0), graph.layer, graph.neuron)


class GraphIndex:
    """Inverted indexes from tokens to graphs, over one model's graphs.

    It indexes graphs as given; which line of a store holds a neuron's graph is decided where
    stores are read (``store.jsonl.read_store`` for one file, ``store.sqlindex`` for a directory).

    Args:
        graphs: the graphs to index, all of one model, one per neuron; iterated once.

    Raises:
        ValueError: if the graphs belong to more than one model (a neuron id would be ambiguous),
            or a neuron comes twice.
    """

    def __init__(self, graphs: Iterable[NeuronGraph]) -> None:
        latest: dict[tuple[int, int], NeuronGraph] = {}
        self.model: str | None = None
        """The model of the indexed graphs; None for an empty index."""
        for graph in graphs:
            if self.model is None:
                self.model = graph.model
            elif graph.model != self.model:
                raise ValueError(f"an index holds one model's graphs, got {self.model!r} and "
                                 f"{graph.model!r}; build one index per store")
            if (graph.layer, graph.neuron) in latest:
                raise ValueError(f"{graph.id} is given twice; index a store's graphs (a Store keeps each "
                                 "neuron's last line)")
            latest[(graph.layer, graph.neuron)] = graph
        ordered = sorted(latest.values(), key=_result_order)
        self._graphs: tuple[NeuronGraph, ...] = tuple(ordered)
        self._position = {(g.layer, g.neuron): i for i, g in enumerate(ordered)}

        # Graphs share most of their tokens: normalise each spelling once, and keep one string
        # object per key so that the per-graph key sets share their strings.
        keys_of: dict[str, str] = {}

        def key_set(tokens: Iterable[str]) -> frozenset[str]:
            out = []
            for token in tokens:
                key = keys_of.get(token)
                if key is None:
                    key = normalize(token)
                    key = keys_of[token] = keys_of.get(key, key)
                    keys_of.setdefault(key, key)
                out.append(key)
            return frozenset(out)

        keys: list[TokenKeys] = []
        postings: dict[Kind, defaultdict[str, set[int]]] = {
            "activating": defaultdict(set), "context": defaultdict(set)}
        by_layer: defaultdict[int, set[int]] = defaultdict(set)
        repeated: dict[int, int] = {}
        for i, graph in enumerate(ordered):
            act, ctx = key_set(graph.activating_tokens), key_set(graph.context_tokens)
            keys.append(TokenKeys(act, ctx))
            for k in act:
                postings["activating"][k].add(i)
            for k in ctx:
                postings["context"][k].add(i)
            by_layer[graph.layer].add(i)
            if REPEAT_KEY in act or REPEAT_KEY in ctx:  # a repeat node says it in any spelling
                repeated[i] = 2
            elif not graph.activating_tokens.keys().isdisjoint(graph.context_tokens):
                repeated[i] = 1  # a token repeated exactly; 'Th' before 'th' is not a repeat
        self._keys: tuple[TokenKeys, ...] = tuple(keys)
        self._postings: dict[Kind, dict[str, set[int]]] = {k: dict(v) for k, v in postings.items()}
        self._by_layer: dict[int, set[int]] = dict(by_layer)
        self._repeated = repeated
        # Negated F1s of the scored graphs, ascending: the graphs with F1 >= x are the first
        # bisect_right(self._neg_f1, -x) positions.
        self._neg_f1 = [-f for f in map(top_f1, ordered) if f is not None]

    # ----------------------------------------------------------------- container
    def __len__(self) -> int:
        return len(self._graphs)

    def __contains__(self, key: object) -> bool:
        return key in self._position

    @property
    def graphs(self) -> tuple[NeuronGraph, ...]:
        """Every indexed graph, in result order (F1 descending, None last, then layer, neuron)."""
        return self._graphs

    def get(self, layer: int, neuron: int) -> NeuronGraph | None:
        """The graph of one neuron, or None where the index has none."""
        i = self._position.get((layer, neuron))
        return None if i is None else self._graphs[i]

    def layers(self) -> list[int]:
        """The layers that have at least one graph, ascending."""
        return sorted(self._by_layer)

    # ----------------------------------------------------------------- positions
    # Positions let store.similarity walk postings without re-deriving every graph's keys.
    def at(self, position: int) -> NeuronGraph:
        """The graph at a position (its rank in result order)."""
        return self._graphs[position]

    def position(self, layer: int, neuron: int) -> int | None:
        """The position of one neuron's graph, or None."""
        return self._position.get((layer, neuron))

    def keys(self, position: int) -> TokenKeys:
        """The normalised token keys of the graph at a position."""
        return self._keys[position]

    def postings(self, token: str, kind: Kind = "activating", *, exact: bool = False) -> AbstractSet[int]:
        """Positions of the graphs holding a token as an activating or a context token.

        Args:
            token: the token; normalised first (normalising a key again leaves it unchanged).
            kind: which token set to look in.
            exact: keep only graphs holding this exact spelling.

        Returns:
            A read-only view: do not modify it.
        """
        found = self._postings[kind].get(normalize(token), _EMPTY)
        if exact and found:
            return {i for i in found if token in self._tokens(i, kind)}
        return found

    def _tokens(self, position: int, kind: Kind) -> dict[str, float]:
        graph = self._graphs[position]
        return graph.activating_tokens if kind == "activating" else graph.context_tokens

    # ----------------------------------------------------------------- search
    def search(
        self,
        activating: Sequence[str] = (),
        context: Sequence[str] = (),
        *,
        exact: bool = False,
        layer: int | None = None,
        min_f1: float | None = None,
        repeated: bool = False,
    ) -> list[NeuronGraph]:
        """Graphs that hold every given activating token and every given context token.

        Args:
            activating: tokens that must all be among the graph's activating tokens.
            context: tokens that must all be among the graph's context tokens.
            exact: compare spellings exactly; by default case- and space-insensitively.
            layer: only graphs of this layer.
            min_f1: only graphs whose N2G top-example F1 is at least this; graphs with no
                fidelity or an undefined F1 are left out.
            repeated: only graphs with a repeat node, or where some token is both activating
                and context spelled exactly alike: the paper's search for in-context learning
                neurons; those with a repeat node first.

        Returns:
            The matching graphs: with activating tokens, those they explain most first
            (:func:`explained`); then best F1 first (None last), then by layer and neuron. With no
            token and no filter, every graph.
        """
        if isinstance(activating, str) or isinstance(context, str):
            # A bare string would be read as a sequence of one-character tokens.
            raise TypeError("activating and context take a list of tokens, not a string")
        sets: list[AbstractSet[int]] = [self.postings(t, "activating") for t in activating]
        sets += [self.postings(t, "context") for t in context]
        if layer is not None:
            sets.append(self._by_layer.get(layer, _EMPTY))
        if repeated:
            sets.append(self._repeated.keys())
        end = len(self._graphs) if min_f1 is None else bisect_right(self._neg_f1, -min_f1)

        if not sets:
            return list(self._graphs[:end])
        sets.sort(key=len)
        hits = {i for i in sets[0] if i < end}
        for other in sets[1:]:
            if not hits:
                break
            hits.intersection_update(other)
        if exact:
            # An exact match is also a normalised match, so the exact spellings are checked on
            # the few normalised hits instead of being indexed a second time.
            hits = {i for i in hits
                    if all(t in self._tokens(i, "activating") for t in activating)
                    and all(t in self._tokens(i, "context") for t in context)}
        level = (lambda i: -self._repeated[i]) if repeated else (lambda i: 0)
        if activating:
            return [self._graphs[i] for i in sorted(hits, key=lambda i: (
                level(i), -explained(self._graphs[i], activating, exact), i))]
        return [self._graphs[i] for i in sorted(hits, key=lambda i: (level(i), i))]

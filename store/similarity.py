"""Similar neurons: graphs whose activating and context token sets overlap.

In: a :class:`TokenIndex` (one model's graphs as token sets by position: :class:`TokenSets`, loaded
from the store index by ``store.sqlindex.token_sets``, or the tests' in-memory reference index)
and either one target graph (:func:`similar_to`) or nothing (:func:`similar_pairs`). Out:
:class:`Match` or :class:`Pair` records, most similar first. :func:`rank_matches` is the one
rule that scores a target's candidates; the SQL search (``store.sqlsearch``) feeds it candidates
counted in the database.

The paper (Foote et al. 2023, section 4.2) calls two neurons similar when both their activating
token sets and their context token sets overlap by at least 90%; its reference code measures
``overlap(A, B) = |A & B| / max(|A|, |B|)`` over every pair of neurons, O(N^2). Here tokens are
compared by normalised key (``store.tokens.normalize``), and the work goes through the index:

- Candidates come from the postings of the activating tokens: a graph that shares no activating
  token with another has activating overlap 0, so it cannot reach a positive threshold. At
  threshold 0 this means only graphs sharing an activating token are considered. For one target,
  counting its postings gives every candidate's shared-token count, with no set intersections.
- For all pairs, a size filter, ``overlap(A, B) <= min(|A|, |B|) / max(|A|, |B|)``, and a prefix
  filter (Bayardo et al. 2007, "Scaling up all pairs similarity search"): order each graph's
  activating tokens rarest first; two sets sharing at least ``ceil(t * |A|)`` tokens must share
  one among the first ``|A| - ceil(t * |A|) + 1`` tokens of each. Common tokens then rarely make
  candidates, which keeps the count far below N^2 (:func:`candidate_pairs` yields them).
- All pairs stream into a heap of the best ``limit`` (memory bounded whatever the threshold), and
  below :data:`DESCENT`'s thresholds the search first tries higher ones: where one already gives
  ``limit`` pairs, those are the answer for any lower threshold (every pair below ranks after
  them), at a fraction of the work. A :class:`PairBudget` caps the work (candidate visits), and
  holds a cancel event: a search that reaches the cap stops with the best pairs found so far and
  says down to which overlap they are complete.

A repeat node (``store.trie.REPEAT``) counts as one token, ``store.tokens.REPEAT_KEY``, in
whichever set it stands: two neurons that fire on whatever continues an earlier copy share it,
and a repeat graph shares nothing with one that names only literal tokens.

Graphs with no activating tokens (dead neurons) are skipped: they are all alike and say nothing.
``mode="subset"`` asks whether the target's behaviour is contained in another neuron's, the
paper's proposed extension for finding neurons composed of earlier ones (section 5, appendix A).
"""

from __future__ import annotations

import heapq
import math
import threading
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from store.errors import Cancelled
from store.graph import NeuronGraph
from store.names import neuron_id, parse_neuron_id
from store.tokens import TokenKeys, token_keys

Mode = Literal["similar", "subset"]
"""``"similar"``: both overlaps at least the threshold; ``"subset"``: the target's token sets contained
in the other's (see :func:`similar_to`)."""
PAPER_THRESHOLD = 0.9
"""The least overlap of both token sets at which the paper calls two neurons similar (section 4.2):
the default threshold of every similarity query, down to the tool's."""
SIMILAR_LIMIT = 20
"""How many matches or pairs a similarity query returns when not told."""
DESCENT = (0.5, 0.3, 0.1)
"""Thresholds an all-pairs search below them tries first, highest first (see the module
docstring): at threshold 0 every pair sharing any token is a candidate, at 0.5 few are."""

# Thresholds times set sizes are compared as integers; this keeps 0.7 * 10 = 7.000000000000001
# from demanding 8 shared tokens.
_EPS = 1e-9


class Match(BaseModel):
    """A neuron similar to a target.

    In ``mode="subset"`` the two overlaps are containments: the share of the target's tokens that
    this neuron also has.
    """

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="neuron id, e.g. L4/N117")
    layer: int
    neuron: int
    activating_overlap: float = Field(ge=0, le=1, description="overlap of the activating token sets")
    context_overlap: float = Field(ge=0, le=1, description="overlap of the context token sets")


class Pair(BaseModel):
    """Two similar neurons; ``a`` comes before ``b`` by (layer, neuron)."""

    model_config = ConfigDict(frozen=True)

    a: str = Field(description="neuron id of the first neuron")
    b: str = Field(description="neuron id of the second neuron")
    activating_overlap: float = Field(ge=0, le=1, description="overlap of the activating token sets")
    context_overlap: float = Field(ge=0, le=1, description="overlap of the context token sets")


def overlap(a: frozenset[str] | set[str], b: frozenset[str] | set[str]) -> float:
    """``|a & b| / max(|a|, |b|)``: 1.0 for two empty sets, 0.0 when only one is empty.

    >>> overlap({"a", "b"}, {"a", "b", "c"})
    0.6666666666666666
    """
    if not a and not b:
        return 1.0
    return len(a & b) / max(len(a), len(b))


def containment(target: frozenset[str] | set[str], other: frozenset[str] | set[str]) -> float:
    """``|target & other| / |target|``: how much of the target ``other`` holds; 1.0 if target is empty.

    >>> containment({"a"}, {"a", "b"}), containment({"a", "b"}, {"a"})
    (1.0, 0.5)
    """
    if not target:
        return 1.0
    return len(target & other) / len(target)


def _check(threshold: float, limit: int) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
    if limit < 0:
        raise ValueError(f"limit must be at least 0, got {limit}")


class OutOfBudget(Exception):
    """An all-pairs search reached its :class:`PairBudget` (caught by :func:`similar_pairs`)."""


class PairBudget:
    """The work an all-pairs search may do, and, afterwards, how far it got.

    Work is counted in candidate visits: each entry of a prefix posting list that one graph's
    tokens lead to (:func:`candidate_pairs`), what the search's time and the pairs it scores grow
    with. ``cancel`` is checked at every posting list read, so a cancelled call stops at once.

    Args:
        visits: the most candidate visits; None for no cap.
        cancel: set to stop the search (it raises :class:`store.errors.Cancelled`).
    """

    def __init__(self, visits: int | None = None, cancel: threading.Event | None = None) -> None:
        self.visits, self.cancel = visits, cancel
        self.spent = 0
        """Candidate visits made."""
        self.stopped = False
        """Whether the search stopped at the cap before it had seen every candidate."""
        self.complete_to: float | None = None
        """After a search: every pair whose two overlaps both reach this is in its answer or ranks
        below all of it; the threshold asked unless :attr:`stopped`, and None where nothing is sure."""

    def spend(self, visits: int) -> None:
        """Charge ``visits`` candidate visits.

        Raises:
            Cancelled: where ``cancel`` is set.
            OutOfBudget: where the cap is passed (:attr:`stopped` is then True).
        """
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("the similarity search was cancelled")
        self.spent += visits
        if self.visits is not None and self.spent > self.visits:
            self.stopped = True
            raise OutOfBudget


_PairKey = tuple[float, tuple[int, int], tuple[int, int]]
"""``(smaller overlap, -a, -b)``: larger is better (see :class:`_Best`)."""


class _Best:
    """The best ``limit`` pairs seen, in memory bounded by ``limit``: a min-heap on
    ``(smaller overlap, -a, -b)`` whose top is the worst pair kept. Each pair is kept once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._heap: list[tuple[_PairKey, float, float]] = []
        self._kept: set[_PairKey] = set()

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, a: tuple[int, int], b: tuple[int, int], act: float, ctx: float) -> None:
        """Offer a pair, ``a`` before ``b``."""
        key = (min(act, ctx), (-a[0], -a[1]), (-b[0], -b[1]))
        if key in self._kept or self.limit == 0:
            return
        if len(self._heap) < self.limit:
            heapq.heappush(self._heap, (key, act, ctx))
        elif key > self._heap[0][0]:
            self._kept.discard(heapq.heapreplace(self._heap, (key, act, ctx))[0])
        else:
            return
        self._kept.add(key)

    def pairs(self) -> list[Pair]:
        """The pairs kept, best first: smaller overlap descending, then by the two neurons."""
        return [Pair(a=neuron_id(-a[0], -a[1]), b=neuron_id(-b[0], -b[1]), activating_overlap=act,
                     context_overlap=ctx) for (_, a, b), act, ctx in sorted(self._heap, reverse=True)]


class Located(Protocol):
    """Where a graph is: what similarity reads of the graph at a position."""

    @property
    def layer(self) -> int: ...

    @property
    def neuron(self) -> int: ...


class TokenIndex(Protocol):
    """One model's graphs by position (result order), as similarity reads them."""

    def __len__(self) -> int: ...

    def at(self, position: int) -> Located: ...

    def keys(self, position: int) -> TokenKeys:
        """The normalised token keys of the graph at a position."""
        ...

    def postings(self, key: str) -> Iterable[int]:
        """Positions of the graphs holding ``key`` as an activating token."""
        ...


@dataclass(frozen=True)
class Item:
    """A graph of :class:`TokenSets`: its id in the store index and its neuron."""

    id: int
    layer: int
    neuron: int


class TokenSets:
    """One model's current graphs as normalised token sets, by position: a :class:`TokenIndex`
    made from the store index's rows (``store.sqlindex.token_sets``), without parsing graphs."""

    def __init__(self, items: list[Item], keys: list[TokenKeys]) -> None:
        self._items = items
        self._keys = keys
        postings: dict[str, list[int]] = {}
        for i, (act, _) in enumerate(keys):
            for k in act:
                postings.setdefault(k, []).append(i)
        self._postings = postings
        self.position = {item.id: i for i, item in enumerate(items)}
        """Position of each graph, by its id in the store index."""

    def __len__(self) -> int:
        return len(self._items)

    def at(self, position: int) -> Item:
        return self._items[position]

    def keys(self, position: int) -> TokenKeys:
        return self._keys[position]

    def postings(self, key: str) -> list[int]:
        return self._postings.get(key, [])


@dataclass(frozen=True)
class Candidate:
    """A graph that shares activating tokens with a target."""

    layer: int
    neuron: int
    shared: int
    """How many of the target's activating keys it holds."""
    n_activating: int
    """Its own activating keys."""
    context: frozenset[str]
    """Its context keys."""


def rank_matches(act: frozenset[str], ctx: frozenset[str], candidates: Iterable[Candidate],
                 target: tuple[int, int], *, threshold: float, mode: Mode, limit: int) -> list[Match]:
    """The one rule of :func:`similar_to`, over candidates however they were found.

    ``mode="similar"``: both overlaps at least ``threshold``; ``"subset"``: the target's keys each
    at least ``threshold`` contained in the candidate's. The target itself is never a match.
    Returns matches by the smaller of the two scores descending, then layer and neuron.
    """
    found: list[tuple[float, int, int, float, float]] = []
    for c in candidates:
        if (c.layer, c.neuron) == target:
            continue
        act_score = c.shared / (max(len(act), c.n_activating) if mode == "similar" else len(act))
        if act_score < threshold:
            continue
        ctx_score = overlap(ctx, c.context) if mode == "similar" else containment(ctx, c.context)
        if ctx_score >= threshold:
            found.append((min(act_score, ctx_score), c.layer, c.neuron, act_score, ctx_score))
    best = heapq.nsmallest(limit, found, key=lambda f: (-f[0], f[1], f[2]))
    return [Match(id=neuron_id(layer, neuron), layer=layer, neuron=neuron,
                  activating_overlap=a, context_overlap=c) for _, layer, neuron, a, c in best]


def similar_to(
    index: TokenIndex,
    target: NeuronGraph,
    *,
    threshold: float = PAPER_THRESHOLD,
    mode: Mode = "similar",
    limit: int = SIMILAR_LIMIT,
) -> list[Match]:
    """Neurons in the index whose behaviour resembles the target's.

    Args:
        index: the graphs to search.
        target: the graph to compare with; it need not be in the index, and is never its own match.
        threshold: the least overlap (or containment) of both token sets, between 0 and 1.
        mode: ``"similar"``: both overlaps at least ``threshold``. ``"subset"``: the target's
            activating and context tokens are each at least ``threshold`` contained in the other's
            (an empty target context counts as contained).
        limit: the most matches to return.

    Returns:
        Matches, the smaller of the two overlaps descending, then by layer and neuron. Empty when
        the target has no activating tokens.

    Raises:
        ValueError: for a threshold outside [0, 1] or a negative limit.
    """
    _check(threshold, limit)
    act, ctx = token_keys(target)
    if not act:
        return []
    # How many of the target's activating tokens each candidate shares: |A_t & A_o| for free, so
    # the activating score costs one division and no size filter could save work here.
    shared: Counter[int] = Counter()
    for key in act:
        shared.update(index.postings(key))

    candidates = []
    for position, n_shared in shared.items():
        other = index.at(position)
        other_act, other_ctx = index.keys(position)
        candidates.append(Candidate(other.layer, other.neuron, n_shared, len(other_act), other_ctx))
    return rank_matches(act, ctx, candidates, (target.layer, target.neuron), threshold=threshold,
                        mode=mode, limit=limit)


def candidate_pairs(
    index: TokenIndex, *, threshold: float = PAPER_THRESHOLD, layer: int | None = None,
    budget: PairBudget | None = None,
) -> Iterator[tuple[int, int]]:
    """The pairs of index positions ``(i, j)``, ``i < j``, whose overlaps :func:`similar_pairs` computes.

    Every pair of graphs whose activating overlap reaches ``threshold`` (and who share an
    activating token) is among them, each once; the prefix and size filters keep out most others.
    Exposed so that tests can count the work without timing it.

    Args:
        index: the graphs.
        threshold: the least activating overlap a pair must be able to reach.
        layer: only graphs of this layer.
        budget: charged for every candidate visited; the generator raises :class:`OutOfBudget`
            (or ``Cancelled``) from it.
    """
    live = [
        i for i in range(len(index))
        if index.keys(i).activating and (layer is None or index.at(i).layer == layer)
    ]
    size = {i: len(index.keys(i).activating) for i in live}

    # A global token order, rarest first; any fixed order is correct, rare-first is fast.
    def rarity(key: str) -> tuple[int, str]:
        return (len(index.postings(key)), key)

    prefixes: dict[int, list[str]] = {}
    prefix_postings: defaultdict[str, list[int]] = defaultdict(list)
    for i in live:  # ascending, so every prefix posting list is sorted
        ordered = sorted(index.keys(i).activating, key=rarity)
        need = max(1, math.ceil(threshold * size[i] - _EPS))
        prefixes[i] = ordered[: size[i] - need + 1]
        for key in prefixes[i]:
            prefix_postings[key].append(i)

    for i in live:
        n = size[i]
        seen: set[int] = set()
        for key in prefixes[i]:
            posting = prefix_postings[key]
            after = bisect_right(posting, i)
            if budget is not None:
                budget.spend(len(posting) - after)
            for j in posting[after:]:
                if j not in seen:
                    seen.add(j)
                    m = size[j]
                    # overlap <= min(n, m) / max(n, m): pairs of too different sizes cannot match.
                    if (n if n < m else m) / (m if n < m else n) >= threshold:
                        yield i, j


def pair_rows(
    index: TokenIndex, threshold: float, *, layer: int | None = None, positions: Iterable[int] | None = None,
    budget: PairBudget | None = None,
) -> Iterator[tuple[int, int, float, float]]:
    """``(i, j, activating_overlap, context_overlap)`` for each pair of positions whose two
    overlaps both reach ``threshold``, each unordered pair once.

    Args:
        index: the graphs (a :class:`TokenIndex`).
        threshold: the least overlap of both token sets.
        layer: only pairs whose two neurons are both in this layer.
        positions: only pairs involving these positions (found through their postings, for
            graphs just added); by default every pair.
        budget: the all-pairs search's cap and cancel event (see :func:`candidate_pairs`).
    """
    if positions is None:
        candidates: Iterable[tuple[int, int]] = candidate_pairs(index, threshold=threshold, layer=layer,
                                                                budget=budget)
    else:
        def around() -> Iterator[tuple[int, int]]:
            wanted = set(positions)
            for i in sorted(wanted):
                seen: set[int] = set()
                for key in index.keys(i).activating:
                    for j in index.postings(key):
                        if j != i and j not in seen and not (j in wanted and j < i):
                            seen.add(j)
                            yield (i, j) if i < j else (j, i)
        candidates = around()
    for i, j in candidates:
        (act_i, ctx_i), (act_j, ctx_j) = index.keys(i), index.keys(j)
        act_score = overlap(act_i, act_j)
        if act_score < threshold or not act_i:
            continue
        ctx_score = overlap(ctx_i, ctx_j)
        if ctx_score >= threshold:
            yield i, j, act_score, ctx_score


def similar_pairs(
    index: TokenIndex,
    *,
    threshold: float = PAPER_THRESHOLD,
    limit: int = SIMILAR_LIMIT,
    layer: int | None = None,
    budget: PairBudget | None = None,
    known: Iterable[Pair] = (),
    known_to: float | None = None,
) -> list[Pair]:
    """Pairs of similar neurons in the index: both overlaps at least ``threshold``.

    Args:
        index: the graphs to compare with each other.
        threshold: the least overlap of both the activating and the context token sets.
        limit: the most pairs to return.
        layer: only pairs whose two neurons are both in this layer (to find the twins of one
            neuron across layers, use :func:`similar_to`).
        budget: caps the work and can cancel it; afterwards it says whether the search stopped
            and down to which overlap the answer is complete (:class:`PairBudget`). None: no cap.
        known, known_to: pairs found elsewhere (the index's kept ones), every pair scoring at
            least ``known_to`` among them; they are part of the answer if the search stops.

    Returns:
        Each unordered pair once, the smaller of its two overlaps descending, then by the two
        neurons' (layer, neuron). Where the budget stopped the search: the best of ``known`` and
        of the pairs found so far.

    Raises:
        ValueError: for a threshold outside [0, 1] or a negative limit.
        Cancelled: where the budget's cancel event was set.
    """
    _check(threshold, limit)
    budget = budget if budget is not None else PairBudget()
    done, complete_to = list(known), known_to
    for step in [s for s in DESCENT if threshold < s and (known_to is None or s < known_to)] + [threshold]:
        best = _Best(limit)
        try:
            for i, j, act_score, ctx_score in pair_rows(index, step, layer=layer, budget=budget):
                gi, gj = index.at(i), index.at(j)
                a, b = sorted([(gi.layer, gi.neuron), (gj.layer, gj.neuron)])
                best.add(a, b, act_score, ctx_score)
        except OutOfBudget:
            for p in done:  # complete down to the last finished step: they rank first
                best.add(parse_neuron_id(p.a), parse_neuron_id(p.b), p.activating_overlap, p.context_overlap)
            budget.complete_to = complete_to
            return best.pairs()
        if len(best) >= limit or step == threshold:
            budget.complete_to = threshold
            return best.pairs()
        done, complete_to = best.pairs(), step
    raise AssertionError("the last step is the threshold itself, which returns")

"""Similar neurons: overlap of activating and context token sets, found through the index."""

from __future__ import annotations

import random
import threading
from itertools import combinations

import pytest

from store.errors import Cancelled
from store.graph import NeuronGraph
from store.names import parse_neuron_id
from store.similarity import (
    Pair,
    PairBudget,
    candidate_pairs,
    containment,
    overlap,
    similar_pairs,
    similar_to,
)
from store.tokens import REPEAT_KEY, token_keys
from store.trie import IGNORE, REPEAT
from tests.graphs import make_graph
from tests.reference_index import GraphIndex


def graph_of(activating: list[str], context: list[str], layer: int, neuron: int) -> NeuronGraph:
    """A graph whose activating and context token sets are exactly the ones given."""
    paths = [((a, c), 1.0) for a in activating for c in context] if context else [
        ((a,), 1.0) for a in activating]
    return make_graph(paths, layer=layer, neuron=neuron)


TEN = [f" t{i}" for i in range(10)]
TARGET = graph_of(TEN, [" ctx1", " ctx2"], layer=1, neuron=404)
TWIN = graph_of(TEN, [" CTX1", "ctx2"], layer=4, neuron=12)  # same tokens, other spellings
DISJOINT = graph_of([" x", " y"], [" z"], layer=2, neuron=1)
SUPERSET = graph_of(TEN + [f" u{i}" for i in range(10)], [" ctx1", " ctx2", " ctx3"], layer=5, neuron=2)
DEAD = make_graph([], layer=0, neuron=99)


@pytest.fixture(scope="module")
def index() -> GraphIndex:
    return GraphIndex([TARGET, TWIN, DISJOINT, SUPERSET, DEAD])


def test_a_repeat_node_is_one_token_key_that_repeat_graphs_share() -> None:
    bigram = make_graph([((REPEAT, REPEAT), 1.0)], layer=3, neuron=1)
    also = make_graph([((REPEAT, REPEAT), 0.8), ((REPEAT, IGNORE, REPEAT), 0.9)], layer=6, neuron=2)
    literal = make_graph([((" b", " a"), 1.0)], layer=6, neuron=3)
    assert token_keys(bigram) == (frozenset({REPEAT_KEY}), frozenset({REPEAT_KEY}))
    index = GraphIndex([bigram, also, literal])
    assert [m.id for m in similar_to(index, bigram)] == ["L6/N2"]
    assert similar_to(index, literal, threshold=0.0) == []


def test_overlap_divides_the_intersection_by_the_larger_set() -> None:
    assert overlap(frozenset("ab"), frozenset("abcd")) == 0.5
    assert overlap(frozenset(), frozenset()) == 1.0
    assert overlap(frozenset("a"), frozenset()) == 0.0


def test_containment_is_the_share_of_the_target_held_by_the_other() -> None:
    assert containment(frozenset("ab"), frozenset("abcd")) == 1.0
    assert containment(frozenset("abcd"), frozenset("ab")) == 0.5
    assert containment(frozenset(), frozenset("a")) == 1.0


def test_a_graph_with_the_same_tokens_is_similar_at_0_9(index: GraphIndex) -> None:
    matches = similar_to(index, TARGET, threshold=0.9)
    assert [m.id for m in matches] == ["L4/N12"]
    assert (matches[0].activating_overlap, matches[0].context_overlap) == (1.0, 1.0)


def test_a_graph_sharing_no_token_is_not_similar(index: GraphIndex) -> None:
    assert "L2/N1" not in [m.id for m in similar_to(index, TARGET, threshold=0.0)]


def test_the_target_is_never_its_own_match(index: GraphIndex) -> None:
    assert "L1/N404" not in [m.id for m in similar_to(index, TARGET, threshold=0.0)]


def test_a_target_outside_the_index_is_compared_with_all_of_it(index: GraphIndex) -> None:
    outsider = graph_of(TEN, [" ctx1", " ctx2"], layer=7, neuron=7)
    assert [m.id for m in similar_to(index, outsider)] == ["L1/N404", "L4/N12"]


def test_subset_mode_finds_a_neuron_containing_the_targets_behaviour(index: GraphIndex) -> None:
    assert "L5/N2" in [m.id for m in similar_to(index, TARGET, mode="subset")]
    # Half of the superset's activating tokens: not similar in the paper's sense.
    assert "L5/N2" not in [m.id for m in similar_to(index, TARGET, mode="similar")]


def test_subset_mode_does_not_hold_in_reverse(index: GraphIndex) -> None:
    assert "L1/N404" not in [m.id for m in similar_to(index, SUPERSET, mode="subset")]


def test_a_dead_target_has_no_matches(index: GraphIndex) -> None:
    assert similar_to(index, DEAD, threshold=0.0) == []


def test_matches_are_ordered_by_smaller_overlap_then_layer_and_neuron() -> None:
    target = graph_of(TEN, [" c"], layer=0, neuron=0)
    near = graph_of(TEN[:9], [" c"], layer=1, neuron=1)  # activating overlap 0.9
    same_late = graph_of(TEN, [" c"], layer=3, neuron=0)
    same_early = graph_of(TEN, [" c"], layer=2, neuron=5)
    found = similar_to(GraphIndex([target, near, same_late, same_early]), target, threshold=0.9)
    assert [m.id for m in found] == ["L2/N5", "L3/N0", "L1/N1"]


def test_limit_caps_the_matches(index: GraphIndex) -> None:
    assert len(similar_to(index, TARGET, threshold=0.0, mode="subset", limit=1)) == 1


def test_threshold_outside_zero_to_one_is_refused(index: GraphIndex) -> None:
    with pytest.raises(ValueError, match="threshold"):
        similar_to(index, TARGET, threshold=1.5)


def test_similar_pairs_lists_each_pair_once(index: GraphIndex) -> None:
    assert similar_pairs(index) == [
        Pair(a="L1/N404", b="L4/N12", activating_overlap=1.0, context_overlap=1.0)
    ]


def test_similar_pairs_layer_filter_keeps_pairs_within_that_layer() -> None:
    within = [graph_of([" a", " b"], [" c"], layer=1, neuron=n) for n in (1, 2)]
    across = [graph_of([" x", " y"], [" z"], layer=layer, neuron=3) for layer in (1, 2)]
    index = GraphIndex(within + across)
    assert {(p.a, p.b) for p in similar_pairs(index)} == {("L1/N1", "L1/N2"), ("L1/N3", "L2/N3")}
    assert [(p.a, p.b) for p in similar_pairs(index, layer=1)] == [("L1/N1", "L1/N2")]
    assert similar_pairs(index, layer=2) == []


def test_dead_neurons_are_not_paired_with_each_other() -> None:
    dead = [make_graph([], layer=0, neuron=n) for n in range(3)]
    assert similar_pairs(GraphIndex(dead), threshold=0.0) == []


# --------------------------------------------------------------------- at scale
def random_graphs(n: int, seed: int, vocab_size: int = 400) -> list[NeuronGraph]:
    """Graphs with Zipf-like token frequencies, some of them near-copies of earlier ones."""
    rng = random.Random(seed)
    vocab = [f" v{i}" for i in range(vocab_size)]
    weights = [1 / (rank + 1) for rank in range(vocab_size)]
    graphs: list[NeuronGraph] = []
    for i in range(n):
        if graphs and rng.random() < 0.1:
            act = set(graphs[rng.randrange(len(graphs))].activating_tokens)  # a twin, maybe perturbed
            if rng.random() < 0.5:
                act.add(rng.choice(vocab))
            ctx = set(rng.choices(vocab, weights, k=rng.randint(0, 3)))
        else:
            act = set(rng.choices(vocab, weights, k=rng.randint(1, 6)))
            ctx = set(rng.choices(vocab, weights, k=rng.randint(0, 4)))
        graphs.append(graph_of(sorted(act), sorted(ctx), layer=i % 6, neuron=i))
    return graphs


def brute_force_pairs(graphs: list[NeuronGraph], threshold: float) -> set[tuple[str, str]]:
    found = set()
    for g, h in combinations(graphs, 2):
        (ga, gc), (ha, hc) = token_keys(g), token_keys(h)
        if ga and ha and not ga.isdisjoint(ha) and overlap(ga, ha) >= threshold \
                and overlap(gc, hc) >= threshold:
            found.add(tuple(sorted([g.id, h.id])))
    return found


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 0.9, 1.0])
def test_similar_pairs_finds_the_same_pairs_as_comparing_all_of_them(threshold: float) -> None:
    graphs = random_graphs(300, seed=1, vocab_size=60)
    pairs = similar_pairs(GraphIndex(graphs), threshold=threshold, limit=10**6)
    assert {tuple(sorted([p.a, p.b])) for p in pairs} == brute_force_pairs(graphs, threshold)
    assert len(pairs) == len({(p.a, p.b) for p in pairs})


def test_similar_pairs_examines_far_fewer_than_all_pairs() -> None:
    graphs = random_graphs(2000, seed=2)
    index = GraphIndex(graphs)
    examined = sum(1 for _ in candidate_pairs(index, threshold=0.9))
    all_pairs = len(graphs) * (len(graphs) - 1) // 2
    assert examined < all_pairs / 100
    assert similar_pairs(index, threshold=0.9)  # the planted twins are found


def test_similar_pairs_are_ordered_by_smaller_overlap_then_ids() -> None:
    pairs = similar_pairs(GraphIndex(random_graphs(300, seed=3, vocab_size=60)),
                          threshold=0.5, limit=10**6)
    assert len({min(p.activating_overlap, p.context_overlap) for p in pairs}) > 2, "too few to test an order"

    def key(p: Pair) -> tuple[float, tuple[int, int], tuple[int, int]]:
        return (-min(p.activating_overlap, p.context_overlap), parse_neuron_id(p.a), parse_neuron_id(p.b))

    assert pairs == sorted(pairs, key=key)
    assert all(parse_neuron_id(p.a) < parse_neuron_id(p.b) for p in pairs)


def brute_force_ranked(graphs: list[NeuronGraph], threshold: float) -> list[tuple[str, str]]:
    """Every pair's ids in the order similar_pairs ranks them (smaller overlap descending, then ids)."""
    scored = []
    for g, h in combinations(graphs, 2):
        (ga, gc), (ha, hc) = token_keys(g), token_keys(h)
        if ga and ha and not ga.isdisjoint(ha) and min(overlap(ga, ha), overlap(gc, hc)) >= threshold:
            a, b = sorted([(g.layer, g.neuron), (h.layer, h.neuron)])
            scored.append((-min(overlap(ga, ha), overlap(gc, hc)), a, b))
    return [(f"L{a[0]}/N{a[1]}", f"L{b[0]}/N{b[1]}") for _, a, b in sorted(scored)]


def test_a_low_threshold_answers_from_a_higher_one_where_it_fills_the_limit() -> None:
    """At threshold 0 every pair sharing a token is a candidate; when a higher threshold already
    gives `limit` pairs they are the answer, exact, for a fraction of the work."""
    graphs = random_graphs(600, seed=7, vocab_size=60)
    index = GraphIndex(graphs)
    few, every = PairBudget(), PairBudget()
    top = similar_pairs(index, threshold=0.0, limit=10, budget=few)
    assert [(p.a, p.b) for p in top] == brute_force_ranked(graphs, 0.0)[:10]
    similar_pairs(index, threshold=0.0, limit=10**6, budget=every)
    assert not few.stopped and few.complete_to == 0.0
    assert few.spent < every.spent / 5


def test_an_all_pairs_search_stops_at_its_budget_with_the_pairs_it_is_sure_of() -> None:
    graphs = random_graphs(600, seed=7, vocab_size=60)
    index = GraphIndex(graphs)
    at_half = PairBudget()
    assert len(similar_pairs(index, threshold=0.5, limit=10**6, budget=at_half)) < 2000
    # Enough for the search's first step (0.5), not for the next.
    budget = PairBudget(visits=at_half.spent + 100)
    pairs = similar_pairs(index, threshold=0.0, limit=2000, budget=budget)
    assert budget.stopped and budget.spent <= budget.visits + len(graphs)  # one posting list past the cap
    assert budget.complete_to == 0.5 and len(pairs) <= 2000
    # Down to the overlap it reports complete, the answer is the exact one.
    sure = [(p.a, p.b) for p in pairs if min(p.activating_overlap, p.context_overlap) >= 0.5]
    assert sure == brute_force_ranked(graphs, 0.5)
    assert len(pairs) > len(sure)  # and below it, the best pairs found before it stopped


def test_pairs_known_from_the_index_stay_in_a_stopped_answer() -> None:
    graphs = random_graphs(600, seed=7, vocab_size=60)
    index = GraphIndex(graphs)
    kept = similar_pairs(index, threshold=0.7, limit=10**6)
    budget = PairBudget(visits=10)
    pairs = similar_pairs(index, threshold=0.0, limit=len(kept) + 5, budget=budget, known=kept, known_to=0.7)
    assert budget.stopped and budget.complete_to == 0.7 and pairs[:len(kept)] == kept


def test_a_cancelled_all_pairs_search_stops() -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        similar_pairs(GraphIndex(random_graphs(100, seed=8)), threshold=0.0, budget=PairBudget(cancel=cancel))

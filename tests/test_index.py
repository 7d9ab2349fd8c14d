"""GraphIndex: token search with AND semantics, normalisation, filters and ordering."""

from __future__ import annotations

import pytest

from store.tokens import REPEAT_KEY, repeated_tokens
from store.trie import IGNORE, REPEAT
from tests.graphs import make_graph
from tests.reference_index import GraphIndex

EXCEPT = make_graph([((" everyone", " except"), 0.9), ((" all", " except"), 0.7)],
                    layer=1, neuron=10, f1=0.8)
EVERYONE = make_graph([((" everyone", " hello"), 0.8)], layer=1, neuron=11, f1=0.5)
IMPORT = make_graph([((" numpy", " import"), 1.0), ((" os", " import"), 0.9)],
                    layer=2, neuron=3, f1=0.9)
UNSCORED = make_graph([((" Everyone", IGNORE, " Except"), 0.6)], layer=0, neuron=5)
# "ab ... ab": fires on " b" when " b" (and " a") came earlier: an induction-like neuron.
INDUCTION = make_graph([((" b", " a", IGNORE, " b", " a"), 1.0)], layer=3, neuron=7, f1=0.6)


@pytest.fixture(scope="module")
def index() -> GraphIndex:
    return GraphIndex([EXCEPT, EVERYONE, IMPORT, UNSCORED, INDUCTION])


def ids(graphs: list) -> list[str]:
    return [g.id for g in graphs]


def test_search_by_one_activating_token_finds_every_graph_holding_it(index: GraphIndex) -> None:
    assert set(ids(index.search([" everyone"]))) == {"L1/N10", "L1/N11", "L0/N5"}


def test_search_requires_every_activating_token(index: GraphIndex) -> None:
    assert ids(index.search([" everyone", " all"])) == ["L1/N10"]


def test_search_requires_every_context_token(index: GraphIndex) -> None:
    assert ids(index.search(context=[" import"])) == ["L2/N3"]
    assert index.search(context=[" import", " except"]) == []


def test_search_combines_activating_and_context_tokens(index: GraphIndex) -> None:
    assert set(ids(index.search([" everyone"], [" except"]))) == {"L1/N10", "L0/N5"}


def test_search_does_not_confuse_activating_and_context_tokens(index: GraphIndex) -> None:
    assert index.search([" except"]) == []


def test_search_ignores_case_and_surrounding_space_by_default(index: GraphIndex) -> None:
    assert ids(index.search(["EVERYONE"], ["except "])) == ["L1/N10", "L0/N5"]


def test_exact_search_matches_only_the_exact_spelling(index: GraphIndex) -> None:
    assert ids(index.search([" Everyone"], exact=True)) == ["L0/N5"]
    assert index.search(["everyone"], exact=True) == []


def test_unknown_token_finds_nothing(index: GraphIndex) -> None:
    assert index.search([" everyone", " zebra"]) == []


def test_layer_filter_keeps_only_that_layer(index: GraphIndex) -> None:
    assert ids(index.search([" everyone"], layer=1)) == ["L1/N10", "L1/N11"]
    assert index.search(layer=9) == []


def test_min_f1_keeps_graphs_at_or_above_it_and_drops_unscored_ones(index: GraphIndex) -> None:
    assert ids(index.search(min_f1=0.6)) == ["L2/N3", "L1/N10", "L3/N7"]
    assert "L0/N5" not in ids(index.search([" everyone"], min_f1=0.0))


def test_results_are_ordered_by_f1_then_layer_then_neuron_with_unscored_last(index: GraphIndex) -> None:
    assert ids(index.search()) == ["L2/N3", "L1/N10", "L3/N7", "L1/N11", "L0/N5"]


def test_ties_in_f1_are_ordered_by_layer_then_neuron() -> None:
    graphs = [make_graph([((" x",), 1.0)], layer=layer, neuron=neuron, f1=0.5)
              for layer, neuron in [(2, 1), (1, 9), (1, 2)]]
    assert ids(GraphIndex(graphs).search([" x"])) == ["L1/N2", "L1/N9", "L2/N1"]


def test_repeated_finds_the_induction_like_graph_only(index: GraphIndex) -> None:
    assert ids(index.search(repeated=True)) == ["L3/N7"]


def test_repeated_tokens_lists_tokens_both_activating_and_context() -> None:
    assert repeated_tokens(INDUCTION) == [" b"]
    assert repeated_tokens(EXCEPT) == []


def test_repeated_finds_graphs_with_a_repeat_node_as_well_as_the_token_signature() -> None:
    wildcard = make_graph([((REPEAT, REPEAT), 1.0)], layer=4, neuron=1, f1=0.7)
    literal = make_graph([((" b", REPEAT), 0.9)], layer=4, neuron=2, f1=0.5)
    index = GraphIndex([EXCEPT, INDUCTION, wildcard, literal])
    # Repeat paths first (best F1 first among them), then the token signature.
    assert ids(index.search(repeated=True)) == ["L4/N1", "L4/N2", "L3/N7"]
    assert ids(index.search(repeated=True, exact=True)) == ["L4/N1", "L4/N2", "L3/N7"]
    assert ids(index.search(context=[REPEAT_KEY])) == ["L4/N1", "L4/N2"]
    assert repeated_tokens(literal) == [REPEAT_KEY]
    assert repeated_tokens(wildcard) == [REPEAT_KEY]


def test_a_case_folded_self_match_is_not_a_repeat() -> None:
    """Issue 27: 'Th' in the context of an activating 'th' made 11,841 graphs "repeated"."""
    folded = make_graph([(("th", "Th"), 1.0)], f1=0.9)
    exact = make_graph([((" b", " b"), 1.0)], neuron=1, f1=0.5)
    index = GraphIndex([folded, exact])
    assert ids(index.search(repeated=True)) == ids(index.search(repeated=True, exact=True)) == ["L0/N1"]
    assert repeated_tokens(folded) == [] and repeated_tokens(exact) == [" b"]


def test_get_returns_one_neurons_graph_or_none(index: GraphIndex) -> None:
    assert index.get(2, 3) is IMPORT
    assert index.get(2, 4) is None


def test_a_neuron_given_twice_is_refused_since_stores_decide_which_line_wins() -> None:
    first = make_graph([((" a",), 1.0)], layer=0, neuron=1)
    second = make_graph([((" b",), 1.0)], layer=0, neuron=1)
    with pytest.raises(ValueError, match="L0/N1 is given twice"):
        GraphIndex([first, second])


def test_graphs_of_two_models_are_refused() -> None:
    with pytest.raises(ValueError, match="one model"):
        GraphIndex([make_graph([((" a",), 1.0)], model="m1"),
                    make_graph([((" a",), 1.0)], model="m2", neuron=1)])


def test_graphs_lists_every_graph_in_result_order(index: GraphIndex) -> None:
    assert len(index) == 5
    assert ids(list(index.graphs)) == ids(index.search())


def test_a_bare_string_query_is_refused(index: GraphIndex) -> None:
    with pytest.raises(TypeError):
        index.search(" everyone")  # type: ignore[arg-type]


def test_search_over_many_graphs_matches_a_linear_scan() -> None:
    import random

    rng = random.Random(0)
    vocab = [f" w{i}" for i in range(40)]
    graphs = []
    for n in range(3000):
        paths = [((rng.choice(vocab), rng.choice(vocab), rng.choice(vocab)), rng.random())
                 for _ in range(rng.randint(1, 3))]
        graphs.append(make_graph(paths, layer=n % 4, neuron=n, f1=rng.choice([None, rng.random()])))
    index = GraphIndex(graphs)
    for _ in range(30):
        act, ctx, layer = [rng.choice(vocab)], [rng.choice(vocab)], rng.choice([None, 1])
        expected = {g.id for g in graphs
                    if act[0] in g.activating_tokens and ctx[0] in g.context_tokens
                    and (layer is None or g.layer == layer)}
        assert {g.id for g in index.search(act, ctx, layer=layer)} == expected

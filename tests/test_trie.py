"""The neuron trie: a container of paths that predicts activations."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from store.tokens import REPEAT_KEY, repeat_lengths
from store.trie import (
    IGNORE,
    REPEAT,
    NeuronTrie,
    PathNotFound,
    TrieFormatError,
)

GOLDEN = Path(__file__).parent / "data" / "store-v1.jsonl"


def make() -> NeuronTrie:
    trie = NeuronTrie()
    trie.insert((" except", IGNORE, " everyone"), 0.9, (0.1, 0.95))
    trie.insert((" except", " all"), 0.6, (0.8,))
    trie.insert((" import",), 0.7)
    return trie


def test_trie_is_a_mapping_of_paths_to_end_activations() -> None:
    trie = make()
    assert len(trie) == 3
    assert trie[(" except", " all")] == 0.6
    assert set(trie) == {(" except", IGNORE, " everyone"), (" except", " all"), (" import",)}
    with pytest.raises(PathNotFound):
        trie[(" except",)]
    trie._check()


def test_inserting_a_path_twice_keeps_the_larger_activation() -> None:
    trie = make()
    trie.insert((" import",), 0.4)
    trie.insert((" import",), 0.95)
    assert len(trie) == 3 and trie[(" import",)] == 0.95


def test_prediction_needs_the_context_of_a_path() -> None:
    trie = make()
    assert trie.predict([" everyone", " else", " except"]) == [0.0, 0.0, 0.9]
    assert trie.predict([" except"]) == [0.0]
    assert trie.predict([" import", " x"]) == [0.7, 0.0]


def test_all_paths_rule_finds_what_the_greedy_walk_misses() -> None:
    trie = NeuronTrie()
    trie.insert(("b", "a", "x"), 0.5, (0.9, 0.9))  # exact child "a" leads to a dead end here
    trie.insert(("b", IGNORE, "y"), 0.8, (0.0, 0.9))
    text = ["y", "a", "b"]
    assert trie.predict(text, rule="all") == [0.0, 0.0, 0.8]
    assert trie.predict(text, rule="greedy") == [0.0, 0.0, 0.0]


def test_normalized_copy_matches_case_and_space_insensitively() -> None:
    trie = make()
    assert trie.predict(["Import"]) == [0.0]
    assert trie.normalized_copy().predict(["Import"]) == [0.7]


def test_rows_round_trip() -> None:
    trie = make()
    again = NeuronTrie.from_rows(trie.to_rows())
    assert dict(again) == pytest.approx(dict(trie), abs=1e-4)
    assert again.context_tokens() == pytest.approx(trie.context_tokens(), abs=1e-4)
    again._check()


@pytest.mark.parametrize("rows", [
    [],
    [[-1, "", 0, None], [5, "a", 0, 1.0]],
    [[-1, "", 0, None], [0, None, 0, 1.0]],
    [[-1, "", 0, None], [0, "a", 0, 1.0], [0, "a", 0, 0.5]],
    [[-1, "", 0, None], [0, 3, 0, 1.0]],
    [[-1, "", 0, None], [0, {"kind": "copy"}, 0, 1.0]],
    [[-1, "", 0, None], [0, {"kind": "repeat"}, 0, 1.0], [0, {"kind": "repeat"}, 0, 0.5]],
])
def test_bad_rows_raise_a_format_error(rows) -> None:
    with pytest.raises(TrieFormatError):
        NeuronTrie.from_rows(rows)


def test_deep_paths_do_not_hit_the_recursion_limit() -> None:
    trie = NeuronTrie()
    path = ("x",) + tuple(f"t{i}" for i in range(5000))
    trie.insert(path, 1.0, [1.0] * 5000)
    rows = trie.to_rows()
    assert NeuronTrie.from_rows(rows).depth() == 5001
    assert trie.predict(list(reversed(path)))[-1] == 1.0


def test_ignore_cannot_be_an_activating_token() -> None:
    with pytest.raises(ValueError):
        NeuronTrie().insert((IGNORE, "a"), 1.0)


def test_rows_written_before_repeat_nodes_load_unchanged() -> None:
    line = orjson.loads(GOLDEN.read_bytes().splitlines()[2])  # L0/N15: four activating tokens
    trie = NeuronTrie.from_rows(line["trie"])
    trie._check()
    assert trie.to_rows() == line["trie"]
    assert trie.activating_tokens() == line["activating_tokens"]
    assert trie.predict([" Outside", " x", " inside", " Outside"]) == [1.0542, 0.0, 0.8677, 1.0542]


def test_a_repeat_row_loads_as_a_repeat_node() -> None:
    rows = orjson.loads(b'[[-1,"",0.0,null],[0,{"kind":"repeat"},1.0,null],[1,{"kind":"repeat"},1.0,0.98]]')
    trie = NeuronTrie.from_rows(rows)
    trie._check()
    assert dict(trie) == {(REPEAT, REPEAT): 0.98}
    assert trie.to_rows() == rows
    assert trie.activating_tokens() == {REPEAT_KEY: 1.0} and trie.context_tokens() == {REPEAT_KEY: 1.0}


def test_repeat_lengths_count_the_tokens_that_continue_an_earlier_copy() -> None:
    assert repeat_lengths("x a b c y a b c".split(), 5) == [0, 0, 0, 0, 0, 1, 2, 3]
    assert repeat_lengths("a a a a".split(), 5) == [0, 1, 2, 3]  # an earlier copy may overlap
    assert repeat_lengths("x a b c y a b c".split(), 2) == [0, 0, 0, 0, 0, 1, 2, 2]


def test_a_repeat_wildcard_fires_on_any_token_seen_before() -> None:
    trie = NeuronTrie()
    trie.insert((REPEAT,), 0.8)
    assert trie.predict([" a", " b", " a", " c", " b"]) == [0.0, 0.0, 0.8, 0.0, 0.8]


def test_a_repeat_context_node_needs_the_whole_span_to_repeat() -> None:
    trie = NeuronTrie()
    trie.insert((" b", REPEAT), 0.9, (1.0,))  # " b" where the bigram ending at it is a repeat
    trie.insert((" c", IGNORE, REPEAT), 0.7, (0.0, 1.0))  # " c" ending a repeated trigram
    text = [" a", " b", " c", " x", " b", " a", " b", " c", " y", " b", " c"]
    assert trie.predict(text) == [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.9, 0.7, 0.0, 0.0, 0.0]
    trie._check()


def test_a_greedy_walk_prefers_the_exact_child_then_repeat_then_ignore() -> None:
    trie = NeuronTrie()
    trie.insert((" b", " a", " z"), 0.3, (1.0, 1.0))  # exact child " a" leads to a dead end
    trie.insert((" b", REPEAT), 0.9, (1.0,))
    trie.insert((" c", IGNORE), 0.2, (0.0,))
    trie.insert((" c", REPEAT), 0.6, (1.0,))
    text = [" a", " b", " a", " b", " x", " c", " x", " c"]
    assert trie.predict(text, rule="all") == [0.0, 0.0, 0.0, 0.9, 0.0, 0.2, 0.0, 0.6]
    # At 3 the walk takes " a" and dies; at 7 it takes REPEAT over IGNORE; at 5 " c" is new.
    assert trie.predict(text, rule="greedy") == [0.0, 0.0, 0.0, 0.0, 0.0, 0.2, 0.0, 0.6]


def test_repeat_nodes_survive_copies_and_folded_matching() -> None:
    trie = NeuronTrie()
    trie.insert((" The", REPEAT), 0.9, (1.0,))
    folded = trie.normalized_copy()
    folded._check()
    assert folded.predict([" x", " the", " X", "The"]) == [0.0, 0.0, 0.0, 0.9]
    assert list(trie.filtered(lambda path, node: True)) == [(" The", REPEAT)]

"""The neuron trie: a container of paths that predicts activations."""

from __future__ import annotations

import pytest

from store.trie import IGNORE, NeuronTrie, PathNotFound, TrieFormatError


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

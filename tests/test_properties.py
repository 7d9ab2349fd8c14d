"""Property tests (hypothesis): trie prediction against a brute-force matcher, and the store's
write / read round trip, damaged tails included.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.graph import NeuronGraph
from store.jsonl import StoreWriter, read_store, write_store
from store.trie import IGNORE, REPEAT, NeuronTrie
from store.trie import Path as TriePath
from tests.graphs import make_graph

VOCAB = [" a", " b", " c", " d"]
tokens = st.sampled_from(VOCAB)
paths = st.tuples(tokens, st.lists(st.one_of(tokens, st.just(IGNORE)), max_size=4)).map(
    lambda p: (p[0], *p[1]))
tries = st.dictionaries(paths, st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=12)
texts = st.lists(tokens, min_size=1, max_size=14)
node = st.one_of(tokens, st.just(IGNORE), st.just(REPEAT))
repeat_paths = st.tuples(st.one_of(tokens, st.just(REPEAT)), st.lists(node, max_size=4)).map(
    lambda p: (p[0], *p[1]))
repeat_tries = st.dictionaries(repeat_paths, st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=12)


def occurred_earlier(text: list[str], start: int, end: int) -> bool:
    """Whether ``text[start:end + 1]`` also stands somewhere ending before ``end``."""
    span = text[start:end + 1]
    return any(text[j - len(span) + 1:j + 1] == span for j in range(len(span) - 1, end))


def brute_force(trie: NeuronTrie, text: list[str]) -> list[float]:
    """The paper's rule, spelled out: at each token, the largest end of every path that matches
    backwards from it (exact token or IGNORE at each step; a REPEAT where the span from it to
    the token occurred earlier), else 0."""
    out = []
    for i in range(len(text)):
        best = 0.0
        for path in trie:
            if len(path) <= i + 1 and all(
                    t is IGNORE or (t is REPEAT and occurred_earlier(text, i - k, i)) or t == text[i - k]
                    for k, t in enumerate(path)):
                best = max(best, trie[path])
        out.append(best)
    return out


def trie_of(spec: dict[TriePath, float]) -> NeuronTrie:
    trie = NeuronTrie()
    for path, activation in spec.items():
        trie.insert(path, activation)
    return trie


@given(tries, texts)
def test_prediction_is_the_largest_end_of_every_matching_path(spec, text) -> None:
    trie = trie_of(spec)
    trie._check()
    assert trie.predict(text) == brute_force(trie, text)


@given(repeat_tries, texts)
def test_prediction_with_repeat_nodes_is_the_largest_end_of_every_matching_path(spec, text) -> None:
    trie = trie_of(spec)
    trie._check()
    assert trie.predict(text) == brute_force(trie, text)


@given(repeat_tries, texts)
def test_a_greedy_walk_never_predicts_more_than_all_paths(spec, text) -> None:
    trie = trie_of(spec)
    assert all(g <= a for g, a in zip(trie.predict(text, "greedy"), trie.predict(text), strict=True))


@given(repeat_tries)
def test_trie_rows_round_trip_to_the_stored_precision(spec) -> None:
    trie = trie_of(spec)
    again = NeuronTrie.from_rows(trie.to_rows())
    assert set(again) == set(trie)
    assert all(again[p] == pytest.approx(trie[p], abs=5e-5) for p in trie)


graph_specs = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 40), tries), min_size=1, max_size=8)


def graphs_of(specs) -> dict[tuple[int, int], object]:
    """Graphs keyed by neuron; a neuron given twice keeps its last graph, as a store does."""
    out = {}
    for layer, neuron, spec in specs:
        out[(layer, neuron)] = make_graph([(p, a) for p, a in spec.items()], layer=layer, neuron=neuron,
                                          model="m")
    return out


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(graph_specs)
def test_appended_graphs_read_back_as_written_the_last_line_winning(tmp_path: Path, specs) -> None:
    path = tmp_path / "s.jsonl"
    path.unlink(missing_ok=True)
    with StoreWriter(path, "m", (4, 41)) as writer:
        for layer, neuron, spec in specs:
            writer.append([make_graph([(p, a) for p, a in spec.items()], layer=layer, neuron=neuron, model="m")])
    store = read_store(path)
    expected = graphs_of(specs)
    assert store.corrupt == []
    assert {key: g.model_dump() for key, g in store.graphs.items()} == \
        {key: g.model_dump() for key, g in expected.items()}


@SETTINGS
@given(graph_specs, st.floats(0.0, 1.0))
def test_a_plain_store_cut_anywhere_keeps_every_whole_line(tmp_path: Path, specs, where: float) -> None:
    path = tmp_path / "s.jsonl"
    path.unlink(missing_ok=True)
    with StoreWriter(path, "m") as writer:
        for layer, neuron, spec in specs:
            writer.append([make_graph([(p, a) for p, a in spec.items()], layer=layer, neuron=neuron, model="m")])
    data = path.read_bytes()
    header_end = data.index(b"\n") + 1
    cut = header_end + int(where * (len(data) - header_end))
    path.write_bytes(data[:cut])
    lines = data[:cut].split(b"\n")
    whole = lines[1:-1]  # every line ended by a newline before the cut
    store = read_store(path)
    kept = {(g.layer, g.neuron): g.model_dump() for g in store}
    expected: dict = {}
    for line in whole:
        g = read_line(line)
        expected[(g.layer, g.neuron)] = g.model_dump()
    # A torn last line either parses whole (kept) or is reported; it never changes the others.
    torn = read_line_or_none(lines[-1]) if lines[-1] else None
    for key, graph in expected.items():
        assert key in kept
        if kept[key] != graph:
            assert torn is not None and key == torn[0]
    # Nothing but the torn line adds a neuron.
    assert set(kept) - set(expected) <= ({torn[0]} if torn is not None else set())
    assert len(store.corrupt) <= 1


def read_line(line: bytes):

    return NeuronGraph.model_validate_json(line)


def read_line_or_none(line: bytes):
    try:
        g = read_line(line)
    except ValueError:
        return None
    return ((g.layer, g.neuron),)


@SETTINGS
@given(graph_specs, st.floats(0.05, 0.95))
def test_a_cut_compressed_store_yields_a_prefix_of_its_graphs(tmp_path: Path, specs, where: float) -> None:
    path = tmp_path / "s.jsonl.gz"
    expected = graphs_of(specs)
    write_store(path, "m", expected.values())
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(where * len(data)))])
    try:
        store = read_store(path)
    except ValueError:  # cut before the header was whole: refused as no store, never misread
        return
    ordered = sorted(expected)  # write_store sorts by layer and neuron
    kept = sorted(store.graphs)
    assert kept == ordered[:len(kept)]
    assert all(store.graphs[k].model_dump() == expected[k].model_dump() for k in kept)
    assert store.corrupt, "the damage is reported"

"""The persistent index answers as the in-memory index does, and stays right as stores change.

Oracle tests: a store of random graphs is searched and compared through the SQLite index
(``store.catalog``) and through ``tests.reference_index.GraphIndex`` / ``store.similarity`` over the same
graphs in memory; the answers must be the same, in the same order.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from store.catalog import Catalog
from store.jsonl import StoreWriter, write_store
from store.similarity import similar_pairs, similar_to
from store.trie import REPEAT
from tests.graphs import make_graph
from tests.reference_index import GraphIndex
from tests.test_similarity import random_graphs

VOCAB = [f" w{i}" for i in range(30)] + [" W1", "w2", " W3 "]


def scored_graphs(n: int, seed: int) -> list:
    """Graphs with random paths, F1 (or none), over a small vocabulary with case/space variants."""
    rng = random.Random(seed)
    graphs = []
    for i in range(n):
        paths = [((rng.choice(VOCAB), rng.choice(VOCAB)), rng.random()) for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.1:  # an in-context graph with a repeat node, activating or context
            paths.append((rng.choice([(REPEAT, REPEAT), (rng.choice(VOCAB), REPEAT)]), rng.random()))
        graphs.append(make_graph(paths, layer=i % 5, neuron=i, model="m",
                                 f1=rng.choice([None, round(rng.random(), 2)])))
    return graphs


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> tuple[Catalog, GraphIndex]:
    directory = tmp_path_factory.mktemp("stores")
    graphs = scored_graphs(600, seed=0)
    write_store(directory / "m.jsonl.gz", "m", graphs[:400])
    StoreWriter(directory / "m.jsonl", "m").append(graphs[400:])
    return Catalog(directory), GraphIndex(graphs)


def test_search_through_the_index_matches_the_in_memory_index(stored) -> None:
    catalog, memory = stored
    view, rng = catalog.get("m"), random.Random(1)
    for _ in range(60):
        query = {"activating": rng.sample(VOCAB, rng.choice([0, 1, 1, 2])),
                 "context": rng.sample(VOCAB, rng.choice([0, 1])),
                 "exact": rng.random() < 0.3, "layer": rng.choice([None, 2]),
                 "min_f1": rng.choice([None, 0.5]), "repeated": rng.random() < 0.2}
        expected = [g.id for g in memory.search(**query)]
        total, hits = view.search(**query, limit=7, offset=3)
        assert total == len(expected), query
        assert [h.id for h in hits] == expected[3:10], query


def test_similar_to_through_the_index_matches_the_in_memory_one(stored) -> None:
    catalog, memory = stored
    view = catalog.get("m")
    for neuron in range(0, 600, 37):
        target = view.get(neuron % 5, neuron)
        for mode in ("similar", "subset"):
            assert view.similar_to(target, threshold=0.5, mode=mode, limit=50) == \
                similar_to(memory, target, threshold=0.5, mode=mode, limit=50)


@pytest.mark.parametrize("threshold", [0.4, 0.7, 0.9])
def test_similar_pairs_above_and_below_the_kept_floor_match_the_in_memory_ones(tmp_path: Path, threshold) -> None:
    graphs = random_graphs(400, seed=4, vocab_size=50)
    write_store(tmp_path / "test-model.jsonl.gz", "test-model", graphs)
    view = Catalog(tmp_path).get("test-model")
    for layer in (None, 3):
        assert view.similar_pairs(threshold=threshold, limit=10**6, layer=layer) == \
            similar_pairs(GraphIndex(graphs), threshold=threshold, limit=10**6, layer=layer)


def test_kept_pairs_follow_appends_and_rebuilt_neurons(tmp_path: Path) -> None:
    graphs = random_graphs(300, seed=5, vocab_size=50)
    write_store(tmp_path / "test-model.jsonl.gz", "test-model", graphs)
    catalog = Catalog(tmp_path)
    assert catalog.get("test-model").similar_pairs(limit=10**6)
    twin = graphs[7].model_copy(update={"neuron": 1000})
    rebuilt = make_graph([((" nothing-alike",), 1.0)], layer=graphs[8].layer, neuron=graphs[8].neuron)
    StoreWriter(tmp_path / "test-model.jsonl", "test-model").append([twin, rebuilt])
    merged = {(g.layer, g.neuron): g for g in [*graphs, twin, rebuilt]}
    expected = similar_pairs(GraphIndex(merged.values()), threshold=0.8, limit=10**6)
    assert catalog.get("test-model").similar_pairs(threshold=0.8, limit=10**6) == expected


def test_two_processes_indexing_one_directory_at_once_agree(tmp_path: Path) -> None:
    write_store(tmp_path / "m.jsonl.gz", "m", scored_graphs(3000, seed=6))
    script = ("import sys; from pathlib import Path; from store.catalog import Catalog; "
              "v = Catalog(Path(sys.argv[1])).get('m'); print(len(v), v.search([' w1'])[0])")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    view = Catalog(tmp_path).get("m")
    assert [out.strip() for out, _ in outputs] == [f"{len(view)} {view.search([' w1'])[0]}"] * 2
    assert len(view) == 3000


def test_a_second_reader_sees_graphs_another_process_indexed_first(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path / "m.jsonl", "m")
    writer.append(scored_graphs(3, seed=7))
    first, second = Catalog(tmp_path), Catalog(tmp_path)
    assert len(first.get("m")) == len(second.get("m")) == 3
    writer.append([make_graph([((" late",), 1.0)], layer=4, neuron=99, model="m")])
    assert len(first.get("m")) == 4  # the first indexes the append...
    view = second.get("m")  # ...and the second finds it indexed, and must not answer from its caches
    assert len(view) == 4 and view.layers()[-1] == 4 and view.search([" late"])[0] == 1

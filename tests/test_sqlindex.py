"""The persistent index answers as the in-memory index does, and stays right as stores change.

Oracle tests: a store of random graphs is searched and compared through the SQLite index
(``store.catalog``) and through ``tests.reference_index.GraphIndex`` / ``store.similarity`` over the same
graphs in memory; the answers must be the same, in the same order.
"""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from store.catalog import Catalog
from store.jsonl import StoreWriter, write_store
from store.similarity import similar_pairs, similar_to
from store.sqlschema import SCHEMA_VERSION
from store.trie import REPEAT
from tests.graphs import make_graph
from tests.reference_index import GraphIndex
from tests.test_similarity import random_graphs

VOCAB = [f" w{i}" for i in range(30)] + [" W1", "w2", " W3 "]


def scored_graphs(n: int, seed: int, model: str = "m") -> list:
    """Graphs with random paths, F1 (or none), over a small vocabulary with case/space variants."""
    rng = random.Random(seed)
    graphs = []
    for i in range(n):
        paths = [((rng.choice(VOCAB), rng.choice(VOCAB)), rng.random()) for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.1:  # an in-context graph with a repeat node, activating or context
            paths.append((rng.choice([(REPEAT, REPEAT), (rng.choice(VOCAB), REPEAT)]), rng.random()))
        graphs.append(make_graph(paths, layer=i % 5, neuron=i, model=model,
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


def test_a_low_threshold_is_answered_from_the_kept_pairs_where_they_fill_the_limit(tmp_path: Path,
                                                                                monkeypatch) -> None:
    """Every pair below the kept floor ranks after the kept ones: with `limit` of them kept, the
    all-pairs search below the floor is not run at all."""
    graphs = random_graphs(400, seed=4, vocab_size=50)
    write_store(tmp_path / "test-model.jsonl.gz", "test-model", graphs)
    view = Catalog(tmp_path).get("test-model")
    kept = len(view.similar_pairs(threshold=0.7, limit=10**6))
    assert kept > 5
    read: list[str] = []
    monkeypatch.setattr("store.sqlsearch.IndexSearch.token_sets", lambda self, model: read.append(model))
    assert view.similar_pairs(threshold=0.0, limit=5) == similar_pairs(GraphIndex(graphs), threshold=0.0, limit=5)
    assert read == []


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


def test_search_ranks_the_graph_its_token_explains_first_and_shows_that_token_first(tmp_path: Path) -> None:
    from n2g_mcp.outputs import SearchHit

    # The case: an F1-1.0 neuron that fires most on ' wasting' and a little on ' import',
    # and an F1-0.6 one that fires on every form of 'import'.
    many = [((f" t{i}",), 0.9 - i / 100) for i in range(8)]
    wasting = make_graph([((" wasting",), 1.0), *many, ((" import",), 0.3)], layer=0, neuron=319, model="m", f1=1.0)
    imports = make_graph([((" import",), 0.8), (("import",), 0.9), ((" Import",), 0.7)], layer=0, neuron=1501,
                         model="m", f1=0.6)
    write_store(tmp_path / "m.jsonl", "m", [wasting, imports])
    view = Catalog(tmp_path).get("m")
    total, hits = view.search([" import"], min_f1=0.5)
    assert total == 2 and [h.id for h in hits] == ["L0/N1501", "L0/N319"]
    assert [round(h.explained, 4) for h in hits] == [1.0, 0.3]  # 'import' spellings: 0.9 of 0.9; 0.3 of 1.0
    shown = SearchHit.of(hits[1], repeated=False, exact=False, activating=[" import"])
    assert shown.activating_tokens[0] == " import" and shown.explained == 0.3
    _, exact = view.search([" import"], exact=True)
    assert [(h.id, round(h.explained, 4)) for h in exact] == [("L0/N1501", 0.8889), ("L0/N319", 0.3)]
    _, listing = view.search(min_f1=0.5)
    assert [h.id for h in listing] == ["L0/N319", "L0/N1501"] and listing[0].explained is None


def test_indexing_in_the_background_answers_partially_at_once_then_fully(tmp_path: Path, monkeypatch) -> None:
    import store.sqlindex

    graphs = scored_graphs(3000, seed=8)
    write_store(tmp_path / "m.jsonl.gz", "m", graphs[:2000])
    StoreWriter(tmp_path / "m.jsonl", "m").append(graphs[2000:])
    monkeypatch.setattr(store.sqlindex, "FIRST_SLICE", 0.0)  # a slice of 256 lines, then commit
    monkeypatch.setattr(store.sqlindex, "SLICE", 0.0)
    background = Catalog(tmp_path, index_path=tmp_path / "bg.sqlite", first_call=0.0)
    view = background.get("m")  # it waits for the first slice only
    assert view is not None and view.indexing and len(view) < 3000
    _, early = view.search([" w1"])
    worker = background.index._worker
    if worker is not None:
        worker.join()
    full = Catalog(tmp_path, index_path=tmp_path / "sync.sqlite").get("m")
    view = background.get("m")
    assert not view.indexing and len(view) == 3000
    assert view.search([" w1"]) == full.search([" w1"])
    assert view.similar_pairs(threshold=0.7, limit=10**6) == full.similar_pairs(threshold=0.7, limit=10**6)
    assert {h.id for h in early} <= {h.id for h in full.search([" w1"])[1]}


def test_a_search_answered_while_indexing_says_it_is_partial(tmp_path: Path, monkeypatch) -> None:
    import n2g_mcp.resolve
    import store.sqlindex
    from n2g_mcp.queries import Queries

    write_store(tmp_path / "m.jsonl.gz", "m", scored_graphs(3000, seed=9))
    monkeypatch.setattr(store.sqlindex, "FIRST_SLICE", 0.0)
    monkeypatch.setattr(store.sqlindex, "SLICE", 0.0)
    monkeypatch.setattr(n2g_mcp.resolve, "INDEX_WAIT", 0.0)  # past the wait: partial
    queries = Queries(tmp_path)
    early = queries.search([" w1"], model="m")
    assert early.partial and early.searched < 3000 and "still being indexed" in early.warnings[-1]
    worker = queries.catalog.index._worker
    if worker is not None:
        worker.join()
    done = queries.search([" w1"], model="m")
    assert not done.partial and done.searched == 3000 and done.warnings == []


def test_the_first_slice_holds_graphs_of_every_model(tmp_path: Path, monkeypatch) -> None:
    """A fresh clone ships stores of two models: the first slice indexes some of each, so a first
    call about the model whose file sorts last finds graphs (it was told "no graphs yet")."""
    import store.sqlindex

    write_store(tmp_path / "a.jsonl.gz", "a", scored_graphs(3000, seed=10, model="a"))
    write_store(tmp_path / "b.jsonl.gz", "b", scored_graphs(3000, seed=11, model="b"))
    monkeypatch.setattr(store.sqlindex, "FIRST_SLICE", 0.0)  # each file: a batch of 256 lines
    monkeypatch.setattr(store.sqlindex, "SLICE", 0.0)
    catalog = Catalog(tmp_path, index_path=tmp_path / "bg.sqlite", first_call=0.0)
    views = {view.model: view for view in catalog.models()}
    assert set(views) == {"a", "b"}
    assert all(len(view) > 0 for view in views.values())
    catalog.index.wait()
    assert [len(view) for view in catalog.models()] == [3000, 3000]


def test_an_index_of_the_previous_schema_is_rebuilt_not_trusted(tmp_path: Path) -> None:
    """Schema 2 marked case-folded self-matches ('Th' before 'th') as repeated; an index kept from
    then would go on answering so unless the version (3 since) makes it rebuild."""
    write_store(tmp_path / "m.jsonl.gz", "m", [make_graph([(("th", "Th"), 1.0)], model="m", f1=0.9)])
    catalog = Catalog(tmp_path)
    assert SCHEMA_VERSION >= 3 and catalog.get("m").search(repeated=True) == (0, [])
    catalog.index.close()
    db = sqlite3.connect(catalog.index.path)
    db.execute("UPDATE graphs SET repeated=1")  # what schema 2 stored for it
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION - 1}")
    db.commit()
    db.close()
    assert Catalog(tmp_path).get("m").search(repeated=True) == (0, [])

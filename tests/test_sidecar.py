"""A store's sidecar index (store/sidecar.py): a never-seen store answers every tool in full from
its first call, while the index is still filling; a sidecar is trusted only for the bytes it
indexed (issue 27)."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from store.catalog import Catalog
from store.jsonl import StoreWriter, write_store
from store.sidecar import SIDECAR_SUFFIX, current_sidecar, sidecar_path, write_sidecar
from tests.client import ok
from tests.fakes import FakeLiveBackend
from tests.test_server import serve
from tests.test_sqlindex import scored_graphs

MODEL = "test-model"
GRAPHS = 3000


def answers(catalog: Catalog, model: str = MODEL) -> dict:
    """Everything a server's tools read of a model's stores, to compare two indexes by."""
    view = catalog.get(model)
    assert view is not None
    layer4 = view.search(layer=4, limit=10**6)
    target = view.get(4, 2999)
    return {
        "count": len(view), "layers": view.layers(), "files": view.files, "corrupt": view.corrupt_reports(),
        "layer 4": (layer4[0], [h.id for h in layer4[1]]),
        "w1": [(h.id, h.explained) for h in view.search([" w1"], limit=10**6)[1]],
        "w2 in context": [h.id for h in view.search(context=["w2"], limit=10**6)[1]],
        "repeated": [h.id for h in view.search(repeated=True, limit=10**6)[1]],
        "get": [view.get(layer, neuron).model_dump_json() for layer, neuron in ((0, 0), (2, 1502), (4, 2999))],
        "similar": view.similar_to(target, threshold=0.3, limit=10**6),
        "pairs": view.similar_pairs(threshold=0.7, limit=10**6),
        "hits": sorted(view.hits([(0, 0), (4, 2999), (3, 5), (1, 2999)])),
    }


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> tuple[Path, dict]:
    """A store of 3,000 graphs (with a corrupt line) and its sidecar, as shipped; and what an
    index made by reading the store answers."""
    folder = tmp_path_factory.mktemp("shipped")
    store = folder / f"{MODEL}.jsonl.gz"
    write_store(store, MODEL, scored_graphs(GRAPHS, seed=21, model=MODEL))
    reading = tmp_path_factory.mktemp("read")
    shutil.copy(store, reading)
    expected = answers(Catalog(reading))
    assert write_sidecar(store) == sidecar_path(store)
    return store, expected


def never_seen(shipped: tuple[Path, dict], folder: Path) -> Path:
    """A copy of the shipped store and its sidecar in a folder no index has seen."""
    store, _ = shipped
    shutil.copy(store, folder)
    shutil.copy(sidecar_path(store), folder)
    return folder / store.name


@pytest.fixture
def slow_reading(monkeypatch) -> threading.Event:
    """Reading a store's lines takes 5 ms a line while the event is set (3,000 lines: 15 s), in
    slices of 256 lines: the index fills slowly, and a call that needs lines read waits."""
    import store.sqlfiles
    import store.sqlindex

    slow = threading.Event()
    slow.set()
    index_line = store.sqlfiles.index_line

    def slowly(*args, **kwargs):
        if slow.is_set():
            time.sleep(0.005)
        return index_line(*args, **kwargs)

    monkeypatch.setattr(store.sqlfiles, "index_line", slowly)
    monkeypatch.setattr(store.sqlindex, "FIRST_SLICE", 0.0)
    monkeypatch.setattr(store.sqlindex, "SLICE", 0.0)
    yield slow
    slow.clear()


def test_an_index_made_from_the_sidecar_answers_as_one_made_by_reading_the_store(shipped, tmp_path) -> None:
    store = never_seen(shipped, tmp_path)
    assert answers(Catalog(tmp_path)) == shipped[1]
    rows = sqlite3.connect(tmp_path / ".n2g-index.sqlite").execute(
        "SELECT (SELECT count(*) FROM blocks), (SELECT count(*) FROM points)").fetchone()
    assert rows == (0, 1), "the sidecar's rows were copied, the store not read (its lines read through points)"
    assert store.with_name(store.name + SIDECAR_SUFFIX).is_file()


@pytest.mark.anyio
async def test_a_never_seen_store_answers_every_tool_in_full_while_the_index_fills(shipped, tmp_path, monkeypatch,
                                                                                   slow_reading) -> None:
    """The shipped store's copy answers at once and in full, though the index is still reading
    another model's store line by line: before the sidecar, each call waited for its store's
    lines (here past the wait, answering partial: 'L4/N2999 not stored', a layer's count so far)."""
    import n2g_mcp.resolve

    never_seen(shipped, tmp_path)
    write_store(tmp_path / "other.jsonl.gz", "other", scored_graphs(GRAPHS, seed=22, model="other"))
    monkeypatch.setattr(n2g_mcp.resolve, "INDEX_WAIT", 1.0)
    expected = shipped[1]
    fake = FakeLiveBackend(n_layers=5, d_mlp=GRAPHS)
    server = serve(tmp_path, fake)
    start = time.perf_counter()
    first = await ok(server, "search_graphs", layer=4, limit=1)
    assert (first["total"], first["partial"]) == (expected["layer 4"][0], False)
    found = await ok(server, "search_graphs", activating=[" w1"], limit=100)
    assert [h["id"] for h in found["results"]] == [i for i, _ in expected["w1"]][:100] and not found["partial"]
    assert (await ok(server, "get_graph", layer=4, neuron=2999))["id"] == "L4/N2999"
    predicted = await ok(server, "predict_activations", layer=4, neuron=2999, text=" w1 w2 w3", compare=False)
    assert predicted["id"] == "L4/N2999"
    similar = await ok(server, "find_similar_neurons", layer=4, neuron=2999, threshold=0.3, limit=100)
    assert [m["id"] for m in similar["results"]] == [m.id for m in expected["similar"]][:100]
    assert not similar["partial"]
    pairs = await ok(server, "find_similar_neurons", threshold=0.7, limit=100)
    assert [(p["similar_to"], p["id"]) for p in pairs["results"]] == [(p.a, p.b) for p in expected["pairs"]][:100]
    assert not pairs["partial"]
    seconds = time.perf_counter() - start
    # The index is still reading the other store: listing every model waits for it, then says so.
    listed = {m["model"]: m for m in (await ok(server, "list_models"))["models"]}
    assert listed[MODEL]["graphs"] == GRAPHS and not listed[MODEL]["partial"]
    assert listed["other"]["partial"] and listed["other"]["graphs"] < GRAPHS
    assert seconds < 10, f"first calls took {seconds:.1f} s"


def test_has_graph_is_true_for_every_stored_neuron_while_the_index_fills(shipped, tmp_path, monkeypatch,
                                                                         slow_reading) -> None:
    import n2g_mcp.resolve
    from n2g_mcp.queries import Queries

    never_seen(shipped, tmp_path)
    write_store(tmp_path / "other.jsonl.gz", "other", scored_graphs(GRAPHS, seed=23, model="other"))
    monkeypatch.setattr(n2g_mcp.resolve, "INDEX_WAIT", 0.5)
    fake = FakeLiveBackend(n_layers=5, d_mlp=GRAPHS)
    queries = Queries(tmp_path, live=fake, models=fake.served())
    asked = [(i % 5, i) for i in range(0, GRAPHS, 7)] + [(0, 1), (1, 0)]
    hits = queries.hits(MODEL, asked)
    assert set(hits) == {n for n in asked if n[0] == n[1] % 5}
    assert queries.catalog.index.pending("other"), "the other store is still being read"
    queries.catalog.index.close()


def test_a_sidecar_of_other_bytes_is_ignored_and_the_store_read(shipped, tmp_path) -> None:
    """A store rewritten after its sidecar was made (same name, other graphs) is read, not
    answered from the sidecar; so is one whose sidecar is of another schema."""
    store = never_seen(shipped, tmp_path)
    graphs = scored_graphs(GRAPHS, seed=24, model=MODEL)
    write_store(store, MODEL, graphs)
    reference = tmp_path / "ref"
    reference.mkdir()
    shutil.copy(store, reference)
    assert current_sidecar(store) is None
    assert answers(Catalog(tmp_path, index_path=tmp_path / "a.sqlite")) == answers(Catalog(reference))
    write_sidecar(store)
    db = sqlite3.connect(sidecar_path(store))
    db.execute("PRAGMA user_version=4")
    db.commit()
    db.close()
    assert current_sidecar(store) is None
    catalog = Catalog(tmp_path, index_path=tmp_path / "b.sqlite")
    assert answers(catalog) == answers(Catalog(reference))
    assert catalog.index.db.execute("SELECT count(*) FROM blocks").fetchone()[0] > 0, "read, not imported"


def test_a_plain_store_that_grew_since_its_sidecar_imports_it_and_reads_only_the_rest(tmp_path, monkeypatch) -> None:
    import store.sqlfiles as sqlfiles

    graphs = scored_graphs(GRAPHS, seed=25, model=MODEL)
    store = tmp_path / f"{MODEL}.jsonl"
    StoreWriter(store, MODEL).append(graphs[:2000])
    write_sidecar(store)
    rebuilt = scored_graphs(10, seed=26, model=MODEL)  # neurons 0-9 again: later lines win
    StoreWriter(store, MODEL).append(graphs[2000:] + rebuilt)
    reference = tmp_path / "ref"
    reference.mkdir()
    shutil.copy(store, reference)
    expected = answers(Catalog(reference))
    read: list[bytes] = []
    index_line = sqlfiles.index_line
    monkeypatch.setattr(sqlfiles, "index_line", lambda line, *a, **k: read.append(line) or index_line(line, *a, **k))
    assert answers(Catalog(tmp_path)) == expected
    assert len(read) == GRAPHS - 2000 + 10, "only the lines after the sidecar's end are read"


def test_with_another_file_of_the_model_last_line_wins_and_pairs_are_made_again(shipped, tmp_path) -> None:
    store = never_seen(shipped, tmp_path)
    override = scored_graphs(40, seed=27, model=MODEL)  # neurons 0-39 rebuilt in a plain store
    StoreWriter(tmp_path / f"{MODEL}.jsonl", MODEL).append(override)
    reference = tmp_path / "ref"
    reference.mkdir()
    shutil.copy(store, reference)
    shutil.copy(tmp_path / f"{MODEL}.jsonl", reference)
    assert answers(Catalog(tmp_path)) == answers(Catalog(reference))


def test_n2g_index_writes_missing_sidecars_and_keeps_current_ones(tmp_path) -> None:
    import argparse

    from n2g_mcp.cli.index import cmd_index

    write_store(tmp_path / "a.jsonl.gz", "a", scored_graphs(300, seed=28, model="a"))
    StoreWriter(tmp_path / "b.jsonl", "b").append(scored_graphs(200, seed=29, model="b"))
    cmd_index(argparse.Namespace(stores=str(tmp_path), sidecars=True))
    made = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob(f"*{SIDECAR_SUFFIX}")}
    assert set(made) == {f"a.jsonl.gz{SIDECAR_SUFFIX}", f"b.jsonl{SIDECAR_SUFFIX}"}
    cmd_index(argparse.Namespace(stores=str(tmp_path), sidecars=True))
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob(f"*{SIDECAR_SUFFIX}")} == made

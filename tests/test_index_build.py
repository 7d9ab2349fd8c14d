"""The store index is made by the set-up, tied to the files it indexed, and never answers wrong
while it is being made (issue 27).

- ``n2g index`` (run by ``make setup``) makes the index; a server then starts no indexing at all.
- A store changed since (or an index file that is not a database) is indexed again, never read
  from the stale index; a store only touched (same bytes, new modification time) keeps it.
- While a never-seen store is indexed, a call waits for what its answer needs; past that wait,
  one neuron's graph is read from the store file, so ``has_graph`` is never false for a stored
  graph.
- The index's fast line check accepts exactly the lines the full check does, with the same values.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from n2g_mcp.cli import main
from store.catalog import Catalog
from store.jsonl import StoreWriter, write_store
from store.lines import LineError, check_line, index_line
from tests.graphs import make_graph
from tests.test_sqlindex import scored_graphs


def _slow_indexing(monkeypatch) -> None:
    """Slices of 256 lines, each committed: the background index takes many slices."""
    import store.sqlindex

    monkeypatch.setattr(store.sqlindex, "FIRST_SLICE", 0.0)
    monkeypatch.setattr(store.sqlindex, "SLICE", 0.0)


def test_the_set_up_command_makes_an_index_the_server_uses_at_once(tmp_path: Path, capsys) -> None:
    from n2g_mcp.queries import Queries

    graphs = scored_graphs(2000, seed=20)
    write_store(tmp_path / "m.jsonl.gz", "m", graphs)
    assert main(["index", "--stores", str(tmp_path)]) == 0
    assert "m: 2,000 graphs in m.jsonl.gz" in capsys.readouterr().out
    queries = Queries(tmp_path)
    first = queries.search(model="m", layer=3, limit=1)
    assert queries.catalog.index._worker is None  # nothing to index: no background work at all
    assert first.total == sum(g.layer == 3 for g in graphs) and not first.partial
    assert queries.get_graph("m", 4, 1999).id == "L4/N1999"


def test_a_store_changed_after_the_index_was_made_is_indexed_again(tmp_path: Path, monkeypatch) -> None:
    """The index made by the set-up is tied to the files: a store rewritten since (a pull, a
    rebuild) is indexed again, and the first answers are the new file's, all of it."""
    from n2g_mcp.queries import Queries

    path = tmp_path / "m.jsonl.gz"
    write_store(path, "m", [make_graph([((" old",), 1.0)], layer=1, neuron=n, model="m") for n in range(50)])
    assert main(["index", "--stores", str(tmp_path)]) == 0
    new = scored_graphs(3000, seed=21)
    write_store(path, "m", new)
    _slow_indexing(monkeypatch)
    queries = Queries(tmp_path)
    assert queries.search([" old"], model="m").total == 0
    first = queries.search(model="m", layer=1, limit=1)
    assert first.total == sum(g.layer == 1 for g in new) and not first.partial
    assert queries.hit("m", 4, 2999) is not None


def test_a_touched_store_keeps_its_index(tmp_path: Path) -> None:
    """Same bytes, new modification time (a copy, a checkout): the content hash keeps the index."""
    path = tmp_path / "m.jsonl.gz"
    write_store(path, "m", scored_graphs(500, seed=22))
    assert main(["index", "--stores", str(tmp_path)]) == 0
    catalog = Catalog(tmp_path)
    ids = catalog.search.graph_id("m", 4, 499)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    catalog = Catalog(tmp_path, first_call=30.0)
    assert len(catalog.get("m")) == 500 and catalog.index._worker is None
    assert catalog.search.graph_id("m", 4, 499) == ids  # not indexed again
    row = catalog.index.db.execute("SELECT mtime_ns FROM files WHERE name='m.jsonl.gz'").fetchone()
    assert row[0] == path.stat().st_mtime_ns


def test_a_store_of_the_same_size_changed_in_place_is_indexed_again(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    StoreWriter(path, "m").append([make_graph([((" aaa",), 1.0)], layer=1, neuron=1, model="m")])
    assert len(Catalog(tmp_path).get("m").search([" aaa"])[1]) == 1
    path.write_bytes(path.read_bytes().replace(b" aaa", b" bbb"))  # same size, new bytes and time
    view = Catalog(tmp_path, first_call=30.0).get("m")
    assert [h.id for h in view.search([" bbb"])[1]] == ["L1/N1"] and view.search([" aaa"])[0] == 0


def test_an_index_file_that_is_not_a_database_is_made_again(tmp_path: Path) -> None:
    write_store(tmp_path / "m.jsonl.gz", "m", scored_graphs(300, seed=23))
    (tmp_path / ".n2g-index.sqlite").write_bytes(b"this is not an SQLite database" * 200)
    assert len(Catalog(tmp_path, first_call=30.0).get("m")) == 300


def test_a_call_past_the_wait_reads_a_graph_from_the_store_file(tmp_path: Path, monkeypatch) -> None:
    """A call that cannot wait for the index (no wait at all here) answers searches partial, but
    has_graph and get_graph read a graph the index has not reached from the store file."""
    import n2g_mcp.resolve
    from n2g_mcp.queries import Queries

    write_store(tmp_path / "m.jsonl.gz", "m", scored_graphs(3000, seed=24))
    StoreWriter(tmp_path / "m.jsonl", "m").append([make_graph([((" late",), 1.0)], layer=4, neuron=2999, model="m")])
    _slow_indexing(monkeypatch)
    monkeypatch.setattr(n2g_mcp.resolve, "INDEX_WAIT", 0.0)
    queries = Queries(tmp_path)
    early = queries.search(model="m")
    assert early.partial and early.total < 3000
    hits = queries.hits("m", [(4, 2999), (0, 0), (3, 4)])
    assert hits[(4, 2999)].activating_tokens == [" late"]  # the plain file's line wins
    assert set(hits) == {(4, 2999), (0, 0)}  # L3/N4 has no graph (layer = neuron % 5)
    assert list(queries.get_graph("m", 4, 2999).activating_tokens) == [" late"]
    queries.catalog.index.wait()
    assert queries.hits("m", [(4, 2999)])[(4, 2999)].activating_tokens == [" late"]


def test_similar_pairs_not_made_yet_are_computed_rather_than_left_out(tmp_path: Path, monkeypatch) -> None:
    import store.sqlindex

    write_store(tmp_path / "m.jsonl.gz", "m", scored_graphs(1500, seed=25))
    full = Catalog(tmp_path, index_path=tmp_path / "sync.sqlite").get("m").similar_pairs(threshold=0.8, limit=10**6)
    assert full
    release = threading.Event()
    make_pairs = store.sqlindex.StoreIndex._make_pairs

    def held(self, db, new):  # noqa: ANN001
        release.wait(30)
        make_pairs(self, db, new)

    monkeypatch.setattr(store.sqlindex.StoreIndex, "_make_pairs", held)
    catalog = Catalog(tmp_path, first_call=0.5)
    view = catalog.get("m")
    assert not view.indexing and len(view) == 1500  # the files are in; the pairs are held back
    assert view.similar_pairs(threshold=0.8, limit=10**6) == full
    release.set()
    catalog.index.wait()
    assert view.similar_pairs(threshold=0.8, limit=10**6) == full


LINES = [
    b'{"model":"m","layer":0,"neuron":1,"max_activation":1.0,"activating_tokens":{" a":1.0," A":0.5},'
    b'"context_tokens":{" b":0.2},"trie":[],"fidelity":{"n2g":{"top":{"f1":0.5}}}}',
    b'{"model": "m", "layer": 2, "neuron": 3, "max_activation": 2, "trie": [], "fidelity": null}',
    b'{"model":"m","layer":0,"neuron":1,"max_activation":1.0,"trie":[],"fidelity":{"n2g":{"top":{"f1":NaN}}}}',
    b'{"model":"m","layer":0,"neuron":1,"max_activation":1.0,"trie":[],"other":NaN}',
    b'{"model":"m","layer":0,"neuron":1,"max_activation":1.0,"trie":[],"other":-Infinity}',
    b'{"model":"m","layer":0,"neuron":1,"max_activation":1.0,"trie":[],"activating_tokens":{"NaN":1.0}}',
    b'{"model":"m","layer":0,"neuron":1,"max_activation":1.0,"trie":[],"fidelity":{"n2g":{"top":{}}}}',
    b'{"model":"m","layer":0,"neuron":1,"max_activation":1.0,"trie":[],"fidelity":{"n2g":{"top":{"f1":"x"}}}}',
    b'{"model":"m","layer":-1,"neuron":1,"max_activation":1.0,"trie":[]}',
    b'{"model":"m","layer":true,"neuron":1,"max_activation":1.0,"trie":[]}',
    b'{"model":"m","layer":9,"neuron":1,"max_activation":1.0,"trie":[]}',
    b'{"model":"m","layer":0,"neuron":99,"max_activation":1.0,"trie":[]}',
    b'{"model":"other","layer":0,"neuron":1,"max_activation":1.0,"trie":[]}',
    b'{"model":"m","layer":0,"neuron":1,"max_activation":1.0}',
    b'{"model":"m","layer":0,"neuron":1,"trie":[]}',
    b'{"model":"m","layer":0,"neuron":1,"max_activation":1.0,"trie":{}}',
    b'{"model":"m","layer":0,"neuron":1,"max_activation":1.0,"trie":[],"activating_tokens":{"a":true}}',
    b'{"model":"m","layer":0,"neuron":1,"max_activation":1.0,"trie":[],"activating_tokens":[]}',
    b'{"model":"m","layer":0,"neuron":1,"max_activation":1.0,"trie":[],"context_tokens":{"a":1e999}}',
    b'{"model":"m","layer":0,"neuron":1,"max_activation":1.0,"trie":[]} trailing',
    b'{"model":"m","layer":0,"neuron":1,"max_activation":1.0,"trie":[],"x":"\\ud800"}',
    b'{"model":"m","layer":0,"neuron":1,"max_act',
    b'[1, 2]',
    b'\xff\xfe',
]


@pytest.mark.parametrize("line", LINES)
def test_the_fast_line_check_agrees_with_the_full_one(line: bytes) -> None:
    def outcome(check):  # noqa: ANN001, ANN202
        try:
            entry = check(line, "m", (4, 64))
        except LineError as exc:
            return str(exc)
        tokens = entry.activating if isinstance(entry.activating, dict) else entry.raw.get("activating_tokens", {})
        return entry.layer, entry.neuron, entry.f1, list(tokens.items()), entry.context

    assert outcome(index_line) == outcome(check_line)

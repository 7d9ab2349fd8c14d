"""Catalog: stores of a directory grouped by model, merged through the persistent index, kept in
step with the files."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from store.catalog import Catalog, store_filename
from store.errors import CorruptGraph
from store.jsonl import StoreWriter, write_store
from tests.graphs import make_graph


def graph(layer: int, neuron: int, token: str = " a", model: str = "m"):
    return make_graph([((token,), 1.0)], layer=layer, neuron=neuron, model=model)


def test_a_missing_directory_has_no_models(tmp_path: Path):
    catalog = Catalog(tmp_path / "absent")
    assert catalog.models() == [] and catalog.get("m") is None
    assert catalog.writable_path("m") == tmp_path / "absent" / "m.jsonl"


def test_stores_group_by_the_header_model_not_the_file_name(tmp_path: Path):
    write_store(tmp_path / "shipped.jsonl.gz", "m", [graph(0, 1)])
    StoreWriter(tmp_path / "other-name.jsonl", "m").append([graph(0, 2)])
    StoreWriter(tmp_path / "n.jsonl", "n").append([graph(0, 1, model="n")])
    catalog = Catalog(tmp_path)
    assert [(v.model, len(v)) for v in catalog.models()] == [("m", 2), ("n", 1)]
    assert catalog.get("m").files == ["shipped.jsonl.gz", "other-name.jsonl"]


def test_the_plain_store_wins_over_the_compressed_one_for_a_neuron_in_both(tmp_path: Path):
    write_store(tmp_path / "m.jsonl.gz", "m", [graph(0, 1, " shipped"), graph(0, 2)])
    StoreWriter(tmp_path / "m.jsonl", "m").append([graph(0, 1, " rebuilt")])
    view = Catalog(tmp_path).get("m")
    assert list(view.get(0, 1).activating_tokens) == [" rebuilt"]
    assert [h.id for h in view.search([" rebuilt"])[1]] == ["L0/N1"]
    assert view.search([" shipped"]) == (0, [])


def test_an_append_is_seen_on_the_next_call_and_only_the_new_lines_are_indexed(tmp_path: Path):
    writer = StoreWriter(tmp_path / "m.jsonl", "m")
    writer.append([graph(0, 1)])
    catalog = Catalog(tmp_path)
    assert len(catalog.get("m")) == 1
    first_row = catalog.index.db.execute("SELECT id FROM graphs").fetchall()
    writer.append([graph(3, 4, " new")])
    view = catalog.get("m")
    assert [h.id for h in view.search([" new"])[1]] == ["L3/N4"]
    assert view.layers() == [0, 3]
    assert catalog.index.db.execute("SELECT id FROM graphs ORDER BY id").fetchall()[:1] == first_row


def test_a_rewritten_file_is_indexed_again(tmp_path: Path):
    StoreWriter(tmp_path / "m.jsonl", "m").append([graph(0, 1, " old")])
    catalog = Catalog(tmp_path)
    assert len(catalog.get("m")) == 1
    write_store(tmp_path / "m.jsonl", "m", [graph(0, 2, " fresh")])
    view = catalog.get("m")
    assert [h.id for h in view.search([" fresh"])[1]] == ["L0/N2"] and view.search([" old"]) == (0, [])


def test_the_index_survives_a_restart_and_is_not_rebuilt(tmp_path: Path):
    StoreWriter(tmp_path / "m.jsonl", "m").append([graph(0, 1)])
    Catalog(tmp_path).get("m")
    again = Catalog(tmp_path)
    assert again.index.sync() is False  # nothing changed since the first process indexed it
    assert len(again.get("m")) == 1 and (tmp_path / ".n2g-index.sqlite").is_file()


def test_a_removed_store_is_forgotten(tmp_path: Path):
    StoreWriter(tmp_path / "m.jsonl", "m").append([graph(0, 1)])
    catalog = Catalog(tmp_path)
    assert catalog.get("m") is not None
    os.remove(tmp_path / "m.jsonl")
    assert catalog.get("m") is None and catalog.models() == []


def test_corrupt_lines_are_counted_and_described(tmp_path: Path):
    path = tmp_path / "m.jsonl"
    StoreWriter(path, "m").append([graph(0, 1)])
    with open(path, "ab") as f:
        f.write(b"not json\n")
    view = Catalog(tmp_path).get("m")
    assert len(view) == 1 and view.corrupt_lines == 1
    (report,) = view.corrupt_reports()
    assert report.startswith("1 corrupt line(s) skipped in m.jsonl: line 3 (")


@pytest.mark.parametrize(("change", "reason"), [
    ({"max_activation": float("nan")}, "max_activation is not a finite number"),
    ({"layer": 30}, "layer 30 is outside smollm2-135m (layers 0-29)"),
    ({"model": "other"}, "a graph of model 'other' in a store of 'smollm2-135m'"),
    ({"layer": True}, "layer is not a non-negative integer"),
    ({"activating_tokens": {" a": "high"}}, "activating_tokens[' a'] is not a finite number"),
    # Listed, these lines would be found by search and fail on get_graph.
    ({"trie": [[-1, "", 0, None], [7, " x", 0, None]]}, "trie: row 1: parent 7 does not precede it"),
    ({"trie": "[]"}, "trie is missing"),
    ({"max_activation": 0}, "max_activation is 0, but a graph with paths needs a positive one"),
    ({"max_activation": -1}, "max_activation is -1, but a graph with paths needs a positive one"),
])
def test_lines_with_bad_values_are_skipped_and_reported(tmp_path: Path, change: dict, reason: str):
    path = tmp_path / "smollm2-135m.jsonl"
    good = graph(0, 1, model="smollm2-135m")
    StoreWriter(path, "smollm2-135m").append([good])
    bad = good.model_dump(mode="json") | {"neuron": 1} | change
    with open(path, "ab") as f:
        f.write(orjson.dumps(bad, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    view = Catalog(tmp_path).get("smollm2-135m")
    assert len(view) == 1 and view.corrupt_reports() == [
        f"1 corrupt line(s) skipped in smollm2-135m.jsonl: line 3 ({reason})"]


def test_a_dead_neurons_graph_keeps_its_non_positive_max(tmp_path: Path):
    """The builder stores a neuron that never fired with its own max (0 or below) and no paths."""
    path = tmp_path / "m.jsonl"
    dead = make_graph([], layer=0, neuron=3, model="m").model_copy(update={"max_activation": -0.17})
    StoreWriter(path, "m").append([graph(0, 1), dead])
    view = Catalog(tmp_path).get("m")
    assert view.corrupt_lines == 0 and view.get(0, 3).max_activation == -0.17


def test_a_line_that_indexed_but_does_not_validate_says_to_rebuild_it(tmp_path: Path):
    path = tmp_path / "m.jsonl"
    StoreWriter(path, "m").append([graph(0, 1)])
    with open(path, "ab") as f:
        f.write(orjson.dumps(graph(0, 2).model_dump(mode="json") | {"examples": "none"}) + b"\n")
    view = Catalog(tmp_path).get("m")
    with pytest.raises(CorruptGraph, match="L0/N2 cannot be read .* rebuild it"):
        view.get(0, 2)


def test_files_that_are_not_stores_are_listed_as_problems_and_skipped(tmp_path: Path):
    (tmp_path / "junk.jsonl").write_text('{"hello": 1}\n')
    (tmp_path / "empty.jsonl.gz").write_bytes(b"")
    (tmp_path / "readme.txt").write_text("not a store name, ignored")
    StoreWriter(tmp_path / "m.jsonl", "m").append([graph(0, 1)])
    catalog = Catalog(tmp_path)
    assert [v.model for v in catalog.models()] == ["m"]
    problems = catalog.problems
    assert len(problems) == 2 and problems[0].startswith("empty.jsonl.gz") and problems[1].startswith("junk.jsonl")


def test_new_graphs_go_to_the_models_plain_store_else_a_file_named_for_it(tmp_path: Path):
    write_store(tmp_path / "m.jsonl.gz", "m", [graph(0, 1)])
    StoreWriter(tmp_path / "mine.jsonl", "n").append([graph(0, 1, model="n")])
    catalog = Catalog(tmp_path)
    assert catalog.writable_path("m") == tmp_path / "m.jsonl"
    assert catalog.writable_path("n") == tmp_path / "mine.jsonl"
    assert catalog.writable_path("Org/Model v2") == tmp_path / "Org_Model_v2.jsonl"


def test_store_filename_keeps_safe_names_and_replaces_the_rest():
    assert store_filename("smollm2-135m") == "smollm2-135m.jsonl"
    assert store_filename("../../etc/passwd") == "etc_passwd.jsonl"


def test_lines_outside_the_registered_shape_of_an_old_store_are_skipped(tmp_path: Path):
    write_store(tmp_path / "m.jsonl.gz", "m", [graph(0, 1), graph(99999, 1), graph(0, 5000)])  # no shape
    view = Catalog(tmp_path, shapes={"m": (30, 1536)}.get).get("m")
    assert [h.id for h in view.search()[1]] == ["L0/N1"] and view.corrupt_lines == 2
    assert "layer 99999 is outside m" in view.corrupt_reports()[0]


def test_a_cut_compressed_store_still_serves_its_whole_lines(tmp_path: Path):
    path = tmp_path / "m.jsonl.gz"
    write_store(path, "m", [make_graph([((f" w{n}", f" c{n}"), 0.9)], neuron=n, model="m") for n in range(300)])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    view = Catalog(tmp_path).get("m")
    assert view is not None and 0 < len(view) < 300 and view.corrupt_lines == 1

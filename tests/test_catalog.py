"""Catalog: stores of a directory grouped by model, merged, indexed and refreshed on change."""

from __future__ import annotations

import os
from pathlib import Path

from store.catalog import Catalog, store_filename
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
    assert [g.id for g in view.index.search([" rebuilt"])] == ["L0/N1"]
    assert view.index.search([" shipped"]) == []


def test_an_append_is_seen_on_the_next_call_and_the_index_is_rebuilt(tmp_path: Path):
    writer = StoreWriter(tmp_path / "m.jsonl", "m")
    writer.append([graph(0, 1)])
    catalog = Catalog(tmp_path)
    assert len(catalog.get("m").index) == 1
    writer.append([graph(3, 4, " new")])
    view = catalog.get("m")
    assert [g.id for g in view.index.search([" new"])] == ["L3/N4"]
    assert view.layers() == [0, 3]


def test_unchanged_files_are_not_read_again(tmp_path: Path):
    StoreWriter(tmp_path / "m.jsonl", "m").append([graph(0, 1)])
    catalog = Catalog(tmp_path)
    first = catalog.get("m")
    index = first.index
    assert catalog.get("m") is first and catalog.get("m").index is index


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
    assert sorted(view.graphs) == [(0, 1)] and view.corrupt_lines == 2
    assert "layer 99999 is outside m" in view.corrupt_reports()[0]


def test_a_cut_compressed_store_still_serves_its_whole_lines(tmp_path: Path):
    path = tmp_path / "m.jsonl.gz"
    write_store(path, "m", [make_graph([((f" w{n}", f" c{n}"), 0.9)], neuron=n, model="m") for n in range(300)])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    view = Catalog(tmp_path).get("m")
    assert view is not None and 0 < len(view) < 300 and view.corrupt_lines == 1

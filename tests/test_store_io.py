"""Stores on disk: versioned, resumable, and tolerant of damage."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from store.jsonl import StoreError, StoreFormatError, StoreWriter, read_store, write_store
from tests.graphs import make_graph

GOLDEN = Path(__file__).parent / "data" / "store-v1.jsonl"


def test_golden_v1_store_still_loads_and_predicts() -> None:
    store = read_store(GOLDEN)
    assert store.model == "smollm2-135m" and len(store) == 2 and not store.corrupt
    graph = store.get(0, 7)
    assert graph.id == "L0/N7"
    assert graph.predict([" x", " var", " y"])[1] >= 0.5
    assert graph.fidelity.n2g.top.f1 is not None


def test_writer_appends_and_reader_keeps_the_last_line_per_neuron(tmp_path) -> None:
    path = tmp_path / "s.jsonl"
    StoreWriter(path, "m").append([make_graph([((" a",), 0.9)], neuron=1, model="m")])
    StoreWriter(path, "m").append([make_graph([((" b",), 0.8)], neuron=1, model="m")])
    store = read_store(path)
    assert len(store) == 1 and list(store.get(0, 1).activating_tokens) == [" b"]


def test_a_line_cut_by_a_crash_is_removed_before_appending(tmp_path) -> None:
    path = tmp_path / "s.jsonl"
    StoreWriter(path, "m").append([make_graph([((" a",), 0.9)], neuron=1, model="m")])
    with open(path, "ab") as f:
        f.write(b'{"model": "m", "layer": 0, "neu')  # the crash
    assert len(read_store(path).corrupt) == 1
    StoreWriter(path, "m").append([make_graph([((" c",), 0.7)], neuron=2, model="m")])
    store = read_store(path)
    assert not store.corrupt and sorted(store.graphs) == [(0, 1), (0, 2)]


def test_corrupt_lines_are_skipped_counted_and_named(tmp_path) -> None:
    path = tmp_path / "s.jsonl"
    StoreWriter(path, "m").append([make_graph([((" a",), 0.9)], neuron=1, model="m")])
    with open(path, "ab") as f:
        f.write(b"not json\n" + orjson.dumps({"model": "m", "layer": 0}) + b"\n")
    store = read_store(path)
    assert len(store) == 1 and [c.line for c in store.corrupt] == [3, 4]


def test_newer_format_version_is_refused_with_a_clear_error(tmp_path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(orjson.dumps({"format": "n2g-store", "version": 99, "model": "m",
                                   "created": "x"}) + b"\n")
    with pytest.raises(StoreFormatError, match="newer"):
        read_store(path)


def test_a_file_that_is_not_a_store_is_refused(tmp_path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text('{"hello": 1}\n')
    with pytest.raises(StoreFormatError, match="not an n2g-store"):
        read_store(path)


def test_writer_refuses_a_store_of_another_model(tmp_path) -> None:
    path = tmp_path / "s.jsonl"
    StoreWriter(path, "m")
    with pytest.raises(StoreError):
        StoreWriter(path, "other")


def test_compressed_store_is_written_reproducibly_and_read_as_shipped(tmp_path) -> None:
    graphs = [make_graph([((" a",), 0.9)], neuron=n, model="m") for n in (3, 1, 2)]
    first, second = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    write_store(first, "m", graphs)
    write_store(second, "m", graphs)
    assert gzip.decompress(first.read_bytes()).split(b"\n")[1:] == gzip.decompress(second.read_bytes()).split(b"\n")[1:]
    assert sorted(read_store(first).graphs) == [(0, 1), (0, 2), (0, 3)]
    with pytest.raises(StoreError):
        StoreWriter(first, "m")

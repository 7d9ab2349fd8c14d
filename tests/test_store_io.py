"""Stores on disk: versioned, resumable, and tolerant of damage."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import orjson
import pytest

from store.jsonl import (
    StoreError,
    StoreFormatError,
    StoreWriter,
    describe_corrupt,
    dumps,
    read_header,
    read_store,
    stored_neurons,
    write_store,
)
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


def test_stored_neurons_are_the_graphs_a_read_keeps_and_a_read_of_some_layers_keeps_those(tmp_path) -> None:
    path = tmp_path / "s.jsonl"
    StoreWriter(path, "m").append([make_graph([((" a",), 0.9)], layer=layer, neuron=neuron, model="m")
                                   for layer, neuron in ((0, 1), (1, 2), (2, 3))])
    with open(path, "ab") as f:  # a bad line and a torn one are not stored
        f.write(orjson.dumps({"model": "m", "layer": 1, "neuron": 5}) + b'\n{"model": "m", "layer": 2, "neu')
    assert stored_neurons(path) == set(read_store(path).graphs) == {(0, 1), (1, 2), (2, 3)}
    assert sorted(read_store(path, layers={1, 2}).graphs) == [(1, 2), (2, 3)]


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


# --------------------------------------------------------------------------- damage (issue 9)
def _store_with(tmp_path, neurons=(1, 2), shape=None) -> Path:
    path = tmp_path / "s.jsonl"
    with StoreWriter(path, "m", shape) as writer:
        writer.append([make_graph([((f" w{n}",), 0.9)], neuron=n, model="m") for n in neurons])
    return path


def test_a_whole_last_line_without_its_newline_is_kept_and_the_writer_adds_the_newline(tmp_path) -> None:
    path = _store_with(tmp_path)
    path.write_bytes(path.read_bytes().rstrip(b"\n"))  # a crash between the line and its newline
    assert sorted(read_store(path).graphs) == [(0, 1), (0, 2)]
    with StoreWriter(path, "m") as writer:
        writer.append([make_graph([((" c",), 0.7)], neuron=3, model="m")])
    store = read_store(path)
    assert not store.corrupt and sorted(store.graphs) == [(0, 1), (0, 2), (0, 3)]


def test_a_header_without_its_newline_is_kept(tmp_path) -> None:
    path = _store_with(tmp_path, neurons=())
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    with StoreWriter(path, "m") as writer:
        writer.append([make_graph([((" a",), 0.9)], neuron=1, model="m")])
    assert sorted(read_store(path).graphs) == [(0, 1)]


def test_a_torn_last_line_is_named_as_cut_short(tmp_path) -> None:
    path = _store_with(tmp_path)
    with open(path, "ab") as f:
        f.write(b'{"model": "m", "layer": 0, "neu')
    (corrupt,) = read_store(path).corrupt
    assert corrupt.line == 4 and "cut short" in corrupt.reason


def _whole_lines_in(prefix: bytes) -> int:
    """Whole lines a truncated gzip holds, decoded independently with zlib (the oracle)."""
    decoded = zlib.decompressobj(wbits=31).decompress(prefix)
    return decoded.count(b"\n")


def test_a_cut_gzip_store_yields_every_whole_line_before_the_cut(tmp_path) -> None:
    path = tmp_path / "s.jsonl.gz"
    graphs = [make_graph([((f" w{n}", f" c{n}"), 0.9), ((f" v{n}",), 0.6)], neuron=n, model="m", f1=0.5)
              for n in range(400)]
    write_store(path, "m", graphs)
    data = path.read_bytes()
    cut = data[: len(data) // 2]
    path.write_bytes(cut)
    whole = _whole_lines_in(cut) - 1  # minus the header
    store = read_store(path)
    assert 0 < whole < 400 and len(store) == whole
    assert any("cut short" in c.reason for c in store.corrupt)


def test_a_gzip_store_failing_its_checksum_keeps_its_lines_and_says_so(tmp_path) -> None:
    path = tmp_path / "s.jsonl.gz"
    write_store(path, "m", [make_graph([((" a",), 0.9)], neuron=n, model="m") for n in range(5)])
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    path.write_bytes(bytes(data))
    store = read_store(path)
    assert len(store) == 5 and any("damaged" in c.reason for c in store.corrupt)


def test_a_byte_order_mark_before_the_header_is_tolerated(tmp_path) -> None:
    path = _store_with(tmp_path)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert sorted(read_store(path).graphs) == [(0, 1), (0, 2)]
    with StoreWriter(path, "m") as writer:  # a writer accepts it too
        writer.append([make_graph([((" c",), 0.7)], neuron=3, model="m")])
    assert len(read_store(path)) == 3


def _poison(line: dict, where: str, value: object) -> dict:
    target = line
    *parents, last = where.split(".")
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return line


@pytest.mark.parametrize("where, value, reason", [
    ("max_activation", "NaN", "finite"),
    ("max_activation", "Infinity", "finite"),
    ("activating_tokens. w9", "NaN", "finite"),
    ("fidelity.n2g.top.f1", "-Infinity", "finite"),
    ("trie.1.3", "NaN", "finite"),
    ("layer", 99999, "layer 99999 is outside m"),
    ("neuron", 5000, "neuron 5000 is outside m"),
    ("model", "other-lm", "a graph of model 'other-lm' in a store of 'm'"),
])
def test_a_line_with_bad_values_is_skipped_and_reported(tmp_path, where, value, reason) -> None:
    path = _store_with(tmp_path, shape=(4, 64))
    bad = make_graph([((" w9",), 0.9)], neuron=9, model="m", f1=0.5).model_dump(mode="json")
    with open(path, "ab") as f:
        f.write(orjson.dumps(_poison(bad, where, value)) + b"\n")
    store = read_store(path)
    assert sorted(store.graphs) == [(0, 1), (0, 2)]
    (corrupt,) = store.corrupt
    assert corrupt.line == 4 and reason in corrupt.reason, corrupt
    assert reason in describe_corrupt(store)


def test_an_old_header_without_a_shape_is_checked_against_the_callers_shape(tmp_path) -> None:
    path = _store_with(tmp_path)  # no shape in the header
    with open(path, "ab") as f:
        f.write(dumps(make_graph([((" a",), 0.9)], layer=99999, neuron=1, model="m")))
    assert (99999, 1) in read_store(path).graphs  # nothing to check it against
    store = read_store(path, shape=(30, 1536))
    assert (99999, 1) not in store.graphs and "layer 99999" in store.corrupt[0].reason


def test_the_writer_records_the_shape_in_a_version_1_header(tmp_path) -> None:
    path = _store_with(tmp_path, shape=(30, 1536))
    header = read_header(path)
    assert header.version == 1 and header.shape == (30, 1536)
    assert read_store(path).shape == (30, 1536)


def test_the_writer_refuses_a_graph_its_readers_would_skip(tmp_path) -> None:
    path = _store_with(tmp_path, shape=(4, 64))
    with StoreWriter(path, "m") as writer, pytest.raises(StoreError, match="layer 7 is outside"):
        writer.append([make_graph([((" a",), 0.9)], layer=7, neuron=1, model="m")])
    assert sorted(read_store(path).graphs) == [(0, 1), (0, 2)]


def test_the_writer_refuses_a_store_of_the_same_name_but_another_shape(tmp_path) -> None:
    path = _store_with(tmp_path, shape=(4, 64))
    with pytest.raises(StoreError, match="shape"):
        StoreWriter(path, "m", (30, 1536))

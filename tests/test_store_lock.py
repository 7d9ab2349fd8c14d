"""One writer per store: a second one waits for the first or fails with a clear message."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from n2g_mcp.cli import main
from store.errors import Busy
from store.jsonl import StoreWriter, read_store, write_store
from tests.graphs import make_graph

ROOT = Path(__file__).resolve().parent.parent


def graph(neuron: int):
    return make_graph([((" a",), 0.9)], neuron=neuron, model="smollm2-135m")


def test_a_second_writer_is_refused_with_a_message_naming_the_store(tmp_path) -> None:
    path = tmp_path / "s.jsonl"
    with StoreWriter(path, "smollm2-135m"), pytest.raises(Busy) as refused:
        StoreWriter(path, "smollm2-135m")
    assert str(path) in str(refused.value) and "wait for it to finish" in str(refused.value)


def test_the_lock_is_released_when_the_writer_closes(tmp_path) -> None:
    path = tmp_path / "s.jsonl"
    with StoreWriter(path, "smollm2-135m") as first:
        first.append([graph(1)])
    with StoreWriter(path, "smollm2-135m") as second:
        second.append([graph(2)])
    assert sorted(read_store(path).graphs) == [(0, 1), (0, 2)]


def test_a_waiting_writer_gets_the_store_once_the_first_closes(tmp_path) -> None:
    path = tmp_path / "s.jsonl"
    first = StoreWriter(path, "smollm2-135m")
    threading.Timer(0.3, first.close).start()
    started = time.monotonic()
    with StoreWriter(path, "smollm2-135m", wait=10) as second:
        second.append([graph(1)])
    assert 0.2 < time.monotonic() - started < 5
    assert sorted(read_store(path).graphs) == [(0, 1)]


def test_readers_need_no_lock(tmp_path) -> None:
    path = tmp_path / "s.jsonl"
    with StoreWriter(path, "smollm2-135m") as writer:
        writer.append([graph(1)])
        assert sorted(read_store(path).graphs) == [(0, 1)]


def test_compacting_over_a_store_being_written_is_refused(tmp_path) -> None:
    path = tmp_path / "s.jsonl"
    with StoreWriter(path, "smollm2-135m"), pytest.raises(Busy):
        write_store(path, "smollm2-135m", [graph(1)])


def test_a_second_n2g_build_on_the_same_store_exits_2_with_a_clear_message(tmp_path, capsys) -> None:
    path = tmp_path / "s.jsonl"
    holder = subprocess.Popen(  # another process, as a first `n2g build` would be
        [sys.executable, "-c", "import sys; from store.jsonl import StoreWriter; "
         f"w = StoreWriter({str(path)!r}, 'smollm2-135m'); print('locked', flush=True); sys.stdin.read()"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["build", "--layers", "0", "--neurons", "0", "--store", str(path)]) == 2
    finally:
        holder.communicate("", timeout=30)
    err = capsys.readouterr().err.strip()
    assert err.startswith("n2g: error:") and str(path) in err and "wait for it to finish" in err


def test_a_live_build_into_a_store_being_written_reports_busy(tmp_path, monkeypatch) -> None:
    from builder.config import BuildConfig, ScanConfig
    from builder.run.live import LiveModels
    from store.errors import Busy
    from tests.oracle import TOKEN, rule_model

    monkeypatch.setenv("N2G_CACHE", str(tmp_path / "cache"))
    live = LiveModels(config=BuildConfig(scan=ScanConfig(window=16, top_k=4, random_windows=2,
                                                         max_tokens=2_000)))
    spec = live.add(rule_model())
    path = tmp_path / "rule-model.jsonl"
    with StoreWriter(path, "rule-model"), pytest.raises(Busy, match="wait for it to finish"):
        live.build(spec, 0, [TOKEN], path)

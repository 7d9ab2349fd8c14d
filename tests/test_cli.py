"""The n2g command: clear one-line errors, and fidelity tables from a store."""

from __future__ import annotations

import dataclasses

import pytest

from n2g_mcp.cli import main
from n2g_mcp.cli.ranges import parse_range, sample
from store.jsonl import read_store, write_store
from tests.test_store_io import GOLDEN


@pytest.mark.parametrize("argv, message", [
    (["build", "--layers", "40"], "layer 40 is out of range"),
    (["build", "--neurons", "1536"], "neuron 1536 is out of range"),
    (["build", "--neurons", "3-1"], "bad range"),
    (["build", "--corpus", "/no/such/corpus.txt"], "corpus file not found"),
    (["build", "--model", "./no/such/model"], "no model at"),
    (["build", "--sample", "0"], "--sample must be a positive"),
    (["build", "--ids", "L1/N2,L40/N1"], "layer 40 is out of range"),
    (["build", "--ids", "L1/N2,seven"], "not a neuron id: 'seven'"),
    (["build", "--ids", "L1/N2", "--neurons", "3"], "--ids names the neurons itself"),
    (["eval", "--store", "/no/such/store.jsonl"], "No such file"),
])
def test_bad_arguments_end_with_one_line_and_status_2(argv, message, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("n2g: error:") and message in err and "\n" not in err


def test_eval_prints_per_layer_tables_for_all_three_methods(capsys) -> None:
    assert main(["eval", "--store", str(GOLDEN), "--paper"]) == 0
    out = capsys.readouterr().out
    assert "| 0 | 2 |" in out  # layer 0, two neurons, in both protocols
    for method in ("N2G F1", "Token lookup F1", "5-gram lookup F1"):
        assert method in out
    assert "| 5 | 0.38 | 0.68 | 0.37 |" in out  # the paper's row for layer 5


def test_eval_margin_table_is_the_difference_of_the_layer_means(tmp_path, capsys) -> None:
    graphs = list(read_store(GOLDEN))
    # Two copies of the golden layer-0 graphs, one made to lose to the token lookup everywhere.
    losing = [g.model_copy(deep=True) for g in graphs if g.layer == 0]
    for g in losing:
        g.layer = 1
        for protocol in (g.fidelity.n2g.top, g.fidelity.n2g.random):
            protocol.f1 = 0.0
    target = tmp_path / "mixed.jsonl"
    write_store(target, "smollm2-135m", graphs + losing)
    assert main(["eval", "--store", str(target)]) == 0
    rows = {line.split(" | ")[0]: line.split(" | ") for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and ("| exact |" in line or "| folded |" in line)}
    layer0 = [g for g in graphs if g.layer == 0]
    n2g = sum(g.fidelity.n2g.top.f1 for g in layer0) / len(layer0)
    lookup = sum(g.fidelity.token_lookup.top.f1 for g in layer0) / len(layer0)
    assert float(rows["| 0"][5]) == pytest.approx(n2g - lookup, abs=5e-4)
    assert float(rows["| 1"][5]) == pytest.approx(-lookup, abs=5e-4)
    assert rows["| 1"][9] == "no"


def test_compact_writes_a_store_that_reads_back(tmp_path, capsys) -> None:
    target = tmp_path / "out.jsonl.gz"
    assert main(["store", "compact", str(GOLDEN), str(target)]) == 0
    assert main(["eval", "--store", str(target)]) == 0
    assert "2 graphs" in capsys.readouterr().out


def test_ranges_and_samples() -> None:
    assert parse_range("0-2,7") == [0, 1, 2, 7]
    assert parse_range("all", 3) == [0, 1, 2]
    picked = sample(range(1536), 32)
    assert picked == sample(range(1536), 32) and len(set(picked)) == 32


def test_compact_merges_several_stores_the_later_winning(tmp_path, capsys) -> None:
    from store.jsonl import read_store, write_store

    old = read_store(GOLDEN)
    first = next(iter(old))
    newer = first.model_copy(update={"max_activation": first.max_activation * 2})
    patch = tmp_path / "patch.jsonl"
    write_store(patch, old.model, [newer], shape=old.shape)
    target = tmp_path / "merged.jsonl.gz"
    assert main(["store", "compact", str(GOLDEN), str(patch), str(target)]) == 0
    merged = read_store(target)
    assert len(merged) == len(old)
    assert merged.get(first.layer, first.neuron).max_activation == newer.max_activation


def test_compact_layers_writes_one_part_of_a_store(tmp_path, capsys) -> None:
    golden = read_store(GOLDEN)
    graphs = list(golden)
    moved = graphs[0].model_copy(update={"layer": graphs[0].layer + 1})  # a second layer
    source = tmp_path / "whole.jsonl"
    write_store(source, golden.model, [*graphs, moved], shape=golden.shape)
    target = tmp_path / "part.jsonl.gz"
    assert main(["store", "compact", "--layers", str(moved.layer), str(source), str(target)]) == 0
    assert [(g.layer, g.neuron) for g in read_store(target)] == [(moved.layer, moved.neuron)]
    assert main(["store", "compact", "--layers", "9", str(source), str(tmp_path / "none.jsonl")]) == 2
    assert "no graphs of layers 9" in capsys.readouterr().err


# --------------------------------------------------------------------------- defaults, stated once
def test_n2g_scan_takes_its_window_and_top_k_from_the_scan_config(tmp_path, monkeypatch) -> None:
    import builder.config
    import builder.run.distributed_scan

    @dataclasses.dataclass(frozen=True)
    class Other(builder.config.ScanConfig):
        window: int = 32
        top_k: int = 7

    asked = {}

    def fake(load, out, config, dist, **kw):
        asked.update(load=load, config=config)
        out.write_bytes(b"scan")
        return out

    monkeypatch.setattr(builder.config, "ScanConfig", Other)
    monkeypatch.setattr(builder.run.distributed_scan, "run_distributed_scan", fake)
    assert main(["scan", "--out", str(tmp_path / "m.scan.npz"), "--ray"]) == 0
    assert (asked["config"].window, asked["config"].top_k) == (32, 7)


@pytest.mark.parametrize("command", ["build", "scan"])
def test_the_dtype_asked_reaches_the_model_loader_on_ray_workers(command, tmp_path, monkeypatch) -> None:
    import builder.run.distributed
    import builder.run.distributed_scan
    from builder.config import DTYPES

    loads = []

    def fake_build(load, *args, **kw):
        loads.append(load)
        return builder.run.distributed.DistributedResult(appended=0, units=0)

    def fake_scan(load, out, *args, **kw):
        loads.append(load)
        out.write_bytes(b"scan")
        return out

    monkeypatch.setattr(builder.run.distributed, "run_distributed", fake_build)
    monkeypatch.setattr(builder.run.distributed_scan, "run_distributed_scan", fake_scan)
    where = ["--store", str(tmp_path / "s.jsonl")] if command == "build" else ["--out", str(tmp_path / "s.npz")]
    for dtype in DTYPES:
        assert main([command, *where, "--ray", "--dtype", dtype]) == 0
    assert [load.keywords["dtype"] for load in loads] == list(DTYPES)



def test_the_ordinary_text_budgets_and_short_texts_asked_reach_the_build_config(tmp_path, monkeypatch) -> None:
    import builder.run.distributed

    configs = []

    def fake_build(load, layers, neurons, store, config, *args, **kw):
        configs.append(config)
        return builder.run.distributed.DistributedResult(appended=0, units=0)

    monkeypatch.setattr(builder.run.distributed, "run_distributed", fake_build)
    assert main(["build", "--store", str(tmp_path / "s.jsonl"), "--ray", "--ordinary", "--token-paths", "2000",
                 "--bigram-paths", "50"]) == 0
    assert main(["build", "--store", str(tmp_path / "s.jsonl"), "--ray", "--no-short-texts"]) == 0
    ordinary = configs[0].ordinary
    assert (ordinary.enabled, ordinary.token_paths, ordinary.bigram_paths) == (True, 2000, 50)
    assert (configs[0].eval.short_before, configs[1].eval.short_before, configs[1].eval.short_after) == (24, 0, 0)

"""A build spread over Ray (``builder/run/distributed.py``): each neuron stored exactly once, a killed
worker or driver costing at most its units in flight, every graph naming its worker.

The cluster is a local two-CPU one started once for the module, the model the rule model of
``tests/oracle.py`` (five neurons, one layer). Without Ray installed (the ``[distributed]``
extra), the tests that need a cluster are skipped; the rest run.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch

from builder.config import BuildConfig, EvalConfig, ScanConfig
from builder.run.cluster import gpus_per_worker
from builder.run.distributed import (
    BuildWorker,
    DistributedConfig,
    WorkUnit,
    run_distributed,
    shard_dir,
    unit_size,
    units_of,
)
from builder.run.runner import BuildSource, run_build
from store.errors import BadArgument, Unavailable
from store.examples import Example, ExampleRef
from store.jsonl import StoreWriter, read_store
from store.scanfile import ScanFile
from tests.distributed_oracle import gated_rule_model
from tests.oracle import (
    BIGRAM,
    D_MLP,
    DEAD,
    EXCEPT,
    HALF,
    REPEAT,
    TOKEN,
    rule_model,
    write_corpus,
)

ROOT = Path(__file__).resolve().parent.parent
# One neuron a batch: a unit of two neurons is two batches, so a worker can die between them.
CONFIG = BuildConfig(scan=ScanConfig(window=16, top_k=60, random_windows=10),
                     eval=EvalConfig(top=40, train=20, extra_train=20), neuron_batch=1)
ALL = [EXCEPT, REPEAT, TOKEN, HALF, BIGRAM, DEAD]  # live neurons first: every two-neuron unit forwards twice
DIST = DistributedConfig(workers=2, unit_neurons=2)


def lines_per_neuron(path: Path) -> Counter:
    """How many lines of the store file each neuron has (the reader keeps only the last)."""
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines()[1:] if line.strip()]
    return Counter((row["layer"], row["neuron"]) for row in rows)


def workers_of(path: Path) -> dict[int, dict]:
    return {g.neuron: g.build.get("worker") for g in read_store(path)}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """A local Ray cluster of 2 CPUs; workers inherit the cache folder and the import path."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[distributed]'")
    root = tmp_path_factory.mktemp("ray")
    mp = pytest.MonkeyPatch()
    mp.setenv("N2G_CACHE", str(root / "cache"))  # set before ray.init: its workers inherit it
    mp.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20,
             log_to_driver=False)
    yield ray, write_corpus(root / "corpus.txt")
    ray.shutdown()
    mp.undo()


# --------------------------------------------------------------------------- without a cluster
def test_a_worker_writes_its_shard_and_names_itself_in_each_build_record(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("N2G_CACHE", str(tmp_path / "cache"))
    worker = BuildWorker(rule_model, CONFIG, str(tmp_path / "shards"),
                         corpus=str(write_corpus(tmp_path / "corpus.txt")))
    info = worker.info()
    graphs = worker.build(WorkUnit(0, (EXCEPT, TOKEN)))
    assert [g.neuron for g in graphs] == [EXCEPT, TOKEN]
    shard = read_store(info.shard)
    assert sorted(shard.graphs) == [(0, EXCEPT), (0, TOKEN)]
    assert {str(g.build["worker"]) for g in shard} == {str({"host": info.host, "pid": os.getpid()})}


def test_a_worker_that_cannot_load_its_model_reports_that_error() -> None:
    def broken():
        raise BadArgument("no such model here")

    worker = BuildWorker(broken, CONFIG, "/nonexistent/shards")
    with pytest.raises(BadArgument, match="no such model here"):
        worker.info()


def test_without_ray_a_distributed_build_says_how_to_install_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails
    with pytest.raises(Unavailable, match=r"pip install 'n2g-mcp\[distributed\]'"):
        run_distributed(rule_model, [0], None, tmp_path / "s.jsonl", CONFIG, DIST)


class FakeRay:
    def __init__(self, **resources: float) -> None:
        self.resources = resources

    def cluster_resources(self) -> dict[str, float]:
        return self.resources


@pytest.mark.parametrize(("resources", "asked", "expected"), [
    ({"CPU": 4}, None, 0.0),                 # no GPU: workers build on CPUs
    ({"CPU": 4, "GPU": 4}, None, 1.0),       # a GPU each
    ({"CPU": 4, "GPU": 1}, None, 0.5),       # two workers share the one GPU
    ({"CPU": 4, "GPU": 4}, 0.0, 0.0),        # asked for CPUs on a GPU cluster
])
def test_gpus_per_worker_follows_the_cluster(resources, asked, expected) -> None:
    dist = DistributedConfig(workers=2, gpus_per_worker=asked)
    assert gpus_per_worker(FakeRay(**resources), dist) == expected


@pytest.mark.parametrize(("resources", "dist", "words"), [
    ({"CPU": 4}, DistributedConfig(workers=2, gpus_per_worker=1), "lower --gpus-per-worker"),
    ({"CPU": 2}, DistributedConfig(workers=3), "ask for fewer --workers"),
])
def test_asks_the_cluster_can_never_grant_are_refused(resources, dist, words) -> None:
    with pytest.raises(BadArgument, match=words):
        gpus_per_worker(FakeRay(**resources), dist)


# --------------------------------------------------------------------------- on a local cluster
def test_two_workers_build_each_neuron_exactly_once(cluster, tmp_path) -> None:
    _, corpus = cluster
    store = tmp_path / "store.jsonl"
    result = run_distributed(rule_model, [0], None, store, CONFIG, DIST, corpus=corpus)
    assert lines_per_neuron(store) == {(0, n): 1 for n in ALL}
    assert result.units == 3 and result.appended == len(ALL) and not result.lost_workers
    assert not shard_dir(store).exists()
    pids = {w["pid"] for w in workers_of(store).values()}
    assert len(pids) == 2 and os.getpid() not in pids  # both workers built, the driver did not

    again = run_distributed(rule_model, [0], None, store, CONFIG, DIST, corpus=corpus)
    assert again.units == 0 and again.appended == 0
    assert lines_per_neuron(store) == {(0, n): 1 for n in ALL}


def test_a_worker_killed_mid_unit_costs_only_its_unfinished_batch(cluster, tmp_path) -> None:
    ray, corpus = cluster
    store, gate = tmp_path / "store.jsonl", tmp_path / "gate"
    gate.mkdir()
    (gate / "armed").touch()
    actors: dict[int, object] = {}
    killed: list[int] = []

    def kill_the_held_worker() -> None:
        # Waits for an event, not for a time: the held worker sits in its pass until killed.
        for _ in range(6000):
            if (gate / "held").is_file() and (gate / "held").read_text():
                pid = int((gate / "held").read_text())
                if pid in actors:
                    killed.append(pid)
                    ray.kill(actors[pid])
                    return
            time.sleep(0.05)
        (gate / "armed").unlink()  # never held: let the build end, and the test fail below

    def on_event(event) -> None:
        if event.kind == "worker":
            actors[event.worker.pid] = event.actor

    killer = threading.Thread(target=kill_the_held_worker, daemon=True)
    killer.start()
    load = functools.partial(gated_rule_model, str(gate), str(shard_dir(store)))
    result = run_distributed(load, [0], ALL, store, CONFIG, DIST, corpus=corpus, on_event=on_event)
    killer.join()

    assert killed, "no worker was held mid-unit"
    [victim] = killed
    assert [int(w.split(":")[1]) for w in result.lost_workers] == [victim]
    # The batch it finished came back from its shard; the rest of its unit went to a worker.
    assert result.recovered == 1
    assert lines_per_neuron(store) == {(0, n): 1 for n in ALL}
    builders = Counter(w["pid"] for w in workers_of(store).values())
    assert builders[victim] == 1 and os.getpid() not in builders
    assert not shard_dir(store).exists()

    (gate / "armed").unlink()
    again = run_distributed(rule_model, [0], ALL, store, CONFIG, DIST, corpus=corpus)
    assert again.appended == 0 and again.recovered == 0
    assert lines_per_neuron(store) == {(0, n): 1 for n in ALL}


def wait_for(condition, what: str) -> None:
    """Wait for an event (not a time): up to a generous bound, then fail naming it."""
    for _ in range(6000):
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"never happened: {what}")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


DRIVER = """
import functools, sys
from pathlib import Path
import ray
from builder.run.distributed import run_distributed
from tests.distributed_oracle import gated_rule_model
from tests.test_distributed import ALL, CONFIG, DIST
address, store, gate, corpus = sys.argv[1:]
ray.init(address=address, log_to_driver=False)
load = functools.partial(gated_rule_model, gate, store + ".shards")
run_distributed(load, [0], ALL, Path(store), CONFIG, DIST, corpus=corpus)
"""


def test_a_driver_killed_mid_run_loses_only_its_units_in_flight(cluster, tmp_path) -> None:
    ray, corpus = cluster
    store, gate = tmp_path / "store.jsonl", tmp_path / "gate"
    gate.mkdir()
    (gate / "armed").touch()
    # A second driver on the same cluster, killed (SIGKILL) while one of its workers is held
    # mid-unit; Ray then ends that driver's workers.
    address = ray.get_runtime_context().gcs_address
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, address, str(store), str(gate),
                               str(corpus)], cwd=ROOT)
    try:
        wait_for(lambda: (gate / "held").is_file() and (gate / "held").read_text()
                 or driver.poll() is not None, "a worker of the driver held mid-unit")
        assert driver.poll() is None, "the driver ended before a worker was held"
        victim = int((gate / "held").read_text())
    finally:
        driver.kill()
        driver.wait()
    workers = [int(p.stem.rsplit("-", 1)[1]) for p in shard_dir(store).glob("*.jsonl")]
    assert victim in workers
    wait_for(lambda: all(gone(pid) for pid in workers), "the killed driver's workers ended")
    (gate / "armed").unlink()

    result = run_distributed(rule_model, [0], ALL, store, CONFIG, DIST, corpus=corpus)
    assert result.recovered >= 1  # at least the held worker's finished batch, from its shard
    assert lines_per_neuron(store) == {(0, n): 1 for n in ALL}
    assert Counter(w["pid"] for w in workers_of(store).values())[victim] == 1
    assert not shard_dir(store).exists()


def test_a_rerun_after_a_killed_driver_keeps_its_shards_and_builds_only_the_rest(cluster, tmp_path) -> None:
    _, corpus = cluster
    store = tmp_path / "store.jsonl"
    folder = shard_dir(store)
    folder.mkdir()
    model = rule_model()
    source = BuildSource(model, CONFIG, corpus=corpus)
    # What a killed run leaves: a graph merged into the store whose shard was not yet removed,
    # a shard never merged, ending in a line cut off by the kill.
    [merged] = run_build(model, [0], [REPEAT], store, CONFIG, source,
                         stamp={"worker": {"host": "gone", "pid": 1}})
    with StoreWriter(folder / "gone-1.jsonl", model.name, (1, D_MLP)) as shard:
        shard.append([merged])
    run_build(model, [0], [EXCEPT, TOKEN], folder / "gone-2.jsonl", CONFIG, source,
              stamp={"worker": {"host": "gone", "pid": 2}})
    with open(folder / "gone-2.jsonl", "ab") as torn:
        torn.write(b'{"model": "rule-model", "layer": 0, "neur')

    result = run_distributed(rule_model, [0], None, store, CONFIG, DIST, corpus=corpus)
    assert result.recovered == 2 and result.appended == 3  # EXCEPT, TOKEN kept; HALF, BIGRAM, DEAD built
    assert lines_per_neuron(store) == {(0, n): 1 for n in ALL}
    pids = {n: w["pid"] for n, w in workers_of(store).items()}
    assert pids[REPEAT] == 1 and pids[EXCEPT] == pids[TOKEN] == 2
    assert not folder.exists()


def test_a_rebuild_appends_one_newer_line_per_neuron(cluster, tmp_path) -> None:
    _, corpus = cluster
    store = tmp_path / "store.jsonl"
    run_distributed(rule_model, [0], [EXCEPT, TOKEN], store, CONFIG, DIST, corpus=corpus)
    result = run_distributed(rule_model, [0], [EXCEPT], store, CONFIG, DIST, corpus=corpus,
                             rebuild=True)
    assert result.appended == 1
    assert lines_per_neuron(store) == {(0, EXCEPT): 2, (0, TOKEN): 1}


def test_a_neuron_the_model_lacks_is_refused_before_anything_is_built(cluster, tmp_path) -> None:
    _, corpus = cluster
    store = tmp_path / "store.jsonl"
    with pytest.raises(BadArgument, match="neuron 7 is out of range"):
        run_distributed(rule_model, [0], [7], store, CONFIG, DIST, corpus=corpus)
    assert not store.exists()


# --------------------------------------------------------------------------- units for every worker
def test_units_are_cut_so_that_every_worker_gets_one() -> None:
    two = DistributedConfig(workers=2)  # units of up to 256 neurons
    units = units_of({0: list(range(64))}, unit_size(64, two))
    assert [len(u.neurons) for u in units] == [32, 32]
    assert unit_size(10_000, two) == 256 and unit_size(1, two) == 1
    assert [u.name for u in units_of({0: [0, 1], 3: [5, 6, 7]}, unit_size(5, DistributedConfig(workers=4)))] == [
        "L0/N0-1", "L3/N5-6", "L3/N7"]


def test_a_build_of_fewer_neurons_than_a_unit_runs_on_both_workers(cluster, tmp_path) -> None:
    _, corpus = cluster
    store = tmp_path / "store.jsonl"
    result = run_distributed(rule_model, [0], None, store, CONFIG, DistributedConfig(workers=2), corpus=corpus)
    assert result.units == 2 and len(result.built_by) == 2 and sorted(result.built_by.values()) == [3, 3]
    assert lines_per_neuron(store) == {(0, n): 1 for n in ALL}
    assert len({w["pid"] for w in workers_of(store).values()}) == 2


# --------------------------------------------------------------------------- over a scan file
@pytest.fixture(scope="module")
def scan_path(cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rule model's scan file over the cluster's corpus, as ``n2g scan`` writes one."""
    from builder.corpus import make_windows
    from builder.stages.scan import export_scan_file, scan

    _, corpus = cluster
    model = rule_model()
    windows = make_windows(model, corpus, CONFIG.scan.window, CONFIG.scan.max_tokens)
    return export_scan_file(model, windows, scan(model, windows, [0], CONFIG.scan, use_cache=False),
                            tmp_path_factory.mktemp("scans") / "rule-model.scan.npz", CONFIG.scan)


def read_back(store: Path) -> None:
    """Every graph of the store as the server reads it from the store's folder: whole, its
    examples read as text, with no warning."""
    from n2g_mcp.queries import Queries

    queries = Queries(store.parent)
    for graph in read_store(store):
        described = queries.get_graph(graph.model, graph.layer, graph.neuron)
        assert not described.warnings, described.warnings
        assert described.examples or graph.neuron == DEAD, graph.id


def test_a_build_into_a_new_store_away_from_the_scan_file_merges_text_that_reads_anywhere(
        cluster, scan_path, tmp_path) -> None:
    # The issue: n2g build --ray --store /tmp/x/s.jsonl built every graph, then refused to merge
    # the shards' references into a store that names no scan file, and exited 2.
    _, corpus = cluster
    store = tmp_path / "x" / "s.jsonl"
    result = run_distributed(rule_model, [0], None, store, CONFIG, DistributedConfig(workers=2), corpus=corpus,
                             scan_path=scan_path)
    assert result.appended == len(ALL) and len(result.built_by) == 2
    assert lines_per_neuron(store) == {(0, n): 1 for n in ALL}
    assert not shard_dir(store).exists()
    stored = read_store(store)
    assert stored.header.scan is None
    assert all(isinstance(e, Example) for g in stored for e in [*g.examples, *g.pruned])
    read_back(store)


def test_a_build_into_a_store_beside_the_scan_file_keeps_references_once(cluster, scan_path, tmp_path) -> None:
    _, corpus = cluster
    folder = tmp_path / "stores"
    folder.mkdir()
    (folder / scan_path.name).symlink_to(scan_path)
    store = folder / "rule-model.jsonl"
    run_distributed(rule_model, [0], ALL[:3], store, CONFIG, DIST, corpus=corpus, scan_path=folder / scan_path.name)
    result = run_distributed(rule_model, [0], None, store, CONFIG, DIST, corpus=corpus,
                             scan_path=folder / scan_path.name)  # into the existing store
    assert result.appended == len(ALL) - 3 and result.recovered == 0
    assert lines_per_neuron(store) == {(0, n): 1 for n in ALL}  # the shards' lines are the results'
    stored = read_store(store)
    assert stored.header.scan is not None and stored.header.scan.name == scan_path.name
    assert all(isinstance(e, ExampleRef) for g in stored for e in g.examples)
    read_back(store)


def test_a_build_into_an_existing_store_of_text_appends_text(cluster, scan_path, tmp_path) -> None:
    _, corpus = cluster
    folder = tmp_path / "stores"
    folder.mkdir()
    (folder / scan_path.name).symlink_to(scan_path)
    store = folder / "rule-model.jsonl"
    model = rule_model()
    source = BuildSource(model, CONFIG, corpus=corpus, scan_file=ScanFile(folder / scan_path.name))
    run_build(model, [0], [REPEAT], store, CONFIG, source, refer=False)  # a store begun with text
    result = run_distributed(rule_model, [0], None, store, CONFIG, DIST, corpus=corpus,
                             scan_path=folder / scan_path.name)
    assert result.appended == len(ALL) - 1
    stored = read_store(store)
    assert stored.header.scan is None and lines_per_neuron(store) == {(0, n): 1 for n in ALL}
    read_back(store)


def test_references_a_killed_run_left_in_its_shards_are_merged_as_text(cluster, scan_path, tmp_path) -> None:
    _, corpus = cluster
    store = tmp_path / "x" / "s.jsonl"
    folder = shard_dir(store)
    model = rule_model()
    source = BuildSource(model, CONFIG, corpus=corpus, scan_file=ScanFile(scan_path))
    # A shard of references, as the run that exited 2 left them.
    run_build(model, [0], [EXCEPT, TOKEN], folder / "gone-1.jsonl", CONFIG, source, refer=True,
              stamp={"worker": {"host": "gone", "pid": 1}})
    assert read_store(folder / "gone-1.jsonl").header.scan is not None
    result = run_distributed(rule_model, [0], None, store, CONFIG, DIST, corpus=corpus, scan_path=scan_path)
    assert result.recovered == 2 and result.appended == len(ALL) - 2
    assert lines_per_neuron(store) == {(0, n): 1 for n in ALL} and not folder.exists()
    assert read_store(store).header.scan is None
    read_back(store)


# --------------------------------------------------------------------------- the command line
def test_n2g_build_ray_passes_the_cluster_options_to_the_distributed_build(tmp_path, monkeypatch,
                                                                           capsys) -> None:
    import builder.run.distributed
    from n2g_mcp.cli import main

    asked = {}

    def fake(load, layers, neurons, store, config, dist, **kw):
        asked.update(load=load, layers=layers, neurons=neurons, store=store, dist=dist, **kw)
        return builder.run.distributed.DistributedResult(appended=4, units=1)

    monkeypatch.setattr(builder.run.distributed, "run_distributed", fake)
    store = tmp_path / "s.jsonl"
    assert main(["build", "--layers", "2-3", "--neurons", "0-3", "--store", str(store), "--ray",
                 "--workers", "3", "--gpus-per-worker", "0.5", "--unit-neurons", "2"]) == 0
    dist = asked["dist"]
    assert (dist.address, dist.workers, dist.gpus_per_worker, dist.unit_neurons) == ("local", 3, 0.5, 2)
    assert asked["layers"] == [2, 3] and list(asked["neurons"]) == [0, 1, 2, 3]
    assert asked["store"] == store and asked["load"].args == ("smollm2-135m",)
    assert "built 4 graphs" in capsys.readouterr().out

    main(["build", "--store", str(store), "--ray", "auto"])
    assert asked["dist"].address == "auto" and asked["dist"].gpus_per_worker is None


# --------------------------------------------------------------------------- the scan, in spans
SCAN = ScanConfig(window=16, top_k=8, random_windows=4, batch_size=8, sample_stride=4)


def assert_same_top_windows(values_a, windows_a, values_b, windows_b) -> None:
    """Same top values; the same windows wherever a value is not tied with the k-th (among
    equal activations either window may take the last places)."""
    np.testing.assert_array_equal(values_a, values_b)
    for n in range(values_a.shape[1]):
        kth = values_a[-1, n]
        assert set(windows_a[values_a[:, n] > kth, n]) == set(windows_b[values_b[:, n] > kth, n])


def test_spans_merged_equal_one_pass_over_the_corpus(tmp_path) -> None:
    from builder.corpus import make_windows
    from builder.run.distributed_scan import _arrays, merge_states, spans_of
    from builder.stages.scan_pass import top_k_pass

    model = rule_model()
    windows = make_windows(model, write_corpus(tmp_path / "corpus.txt"), SCAN.window)
    whole = _arrays(top_k_pass(model, windows, [0], SCAN, None, lambda *_: None, None))[0]
    spans = spans_of(len(windows), 100, SCAN.batch_size)
    assert len(spans) > 3 and all(s.start % SCAN.batch_size == 0 for s in spans)
    parts = [_arrays(top_k_pass(model, windows, [0], SCAN, None, lambda *_: None, None,
                                span=(s.start, s.stop))) for s in spans]
    merged = parts[0]
    for part in parts[1:]:
        merged = merge_states(merged, part)
    merged = merged[0]
    # The same tokens were sampled, so the histograms (density, quantiles) are equal, not close.
    np.testing.assert_array_equal(merged["hist"], whole["hist"])
    assert_same_top_windows(merged["values"], merged["index"], whole["values"], whole["index"])
    # Each kept trace is the activation along the window it names.
    acts = {int(w): rule_model().bridge.activations(
        torch.tensor([[0, *windows[w]]]))[0, 1:].numpy() for w in np.unique(merged["index"])}
    for j, n in np.ndindex(merged["index"].shape):
        np.testing.assert_array_equal(merged["traces"][j, n], acts[int(merged["index"][j, n])][:, n])


def test_a_scan_on_two_workers_writes_the_file_one_pass_writes(cluster, tmp_path) -> None:
    from builder.corpus import make_windows
    from builder.run.distributed_scan import run_distributed_scan
    from builder.stages.scan import export_scan_file, scan
    from store.scanfile import ScanFile

    _, corpus = cluster
    events = []
    out = run_distributed_scan(rule_model, tmp_path / "spread.scan.npz", SCAN, DIST, corpus=corpus,
                               span_windows=160, on_event=events.append)
    model = rule_model()
    windows = make_windows(model, corpus, SCAN.window)
    one = export_scan_file(model, windows, scan(model, windows, [0], SCAN, use_cache=False),
                           tmp_path / "one.scan.npz", SCAN)
    spread, single = ScanFile(out), ScanFile(one)
    spans = [e for e in events if e.kind == "unit"]
    assert len(spans) >= 4 and len({e.worker.pid for e in spans}) == 2
    np.testing.assert_array_equal(spread.windows, single.windows)
    assert_same_top_windows(spread.top_value[0], spread.top_window[0],
                            single.top_value[0], single.top_window[0])
    for name in ("max_activation", "density", "quantile", "mean", "random_windows"):
        np.testing.assert_array_equal(getattr(spread, name), getattr(single, name), err_msg=name)


def test_n2g_scan_ray_spreads_the_scan_into_the_same_file(tmp_path, monkeypatch, capsys) -> None:
    import builder.run.distributed_scan
    from n2g_mcp.cli import main

    asked = {}

    def fake(load, out, config, dist, **kw):
        asked.update(load=load, out=out, config=config, dist=dist, **kw)
        out.write_bytes(b"scan")
        return out

    monkeypatch.setattr(builder.run.distributed_scan, "run_distributed_scan", fake)
    out = tmp_path / "m.scan.npz"
    assert main(["scan", "--out", str(out), "--top-k", "30", "--ray", "HEAD:6379", "--workers", "4",
                 "--span-windows", "512"]) == 0
    assert asked["out"] == out and asked["config"].top_k == 30 and asked["span_windows"] == 512
    assert (asked["dist"].address, asked["dist"].workers) == ("HEAD:6379", 4)
    assert f"wrote {out}" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["build", "--workers", "4"], ["scan", "--span-windows", "64"]])
def test_worker_options_without_ray_are_refused_rather_than_ignored(argv, capsys) -> None:
    from n2g_mcp.cli import main

    assert main(argv) == 2
    assert "add --ray" in capsys.readouterr().err

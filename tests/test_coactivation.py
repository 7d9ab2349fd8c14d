"""find_similar_neurons by co-activation: the neurons that fire with a target, whatever its graph says.

The oracle is the fake model (``tests/fakes.py``): neuron L{l}/N{n} fires on the word
``WORDS[n % 16]``, so L0/N1 and L0/N17 fire on the same tokens (' dog') everywhere. Here L0/N17's
stored graph names another spelling (' Dogs'), as a graph fitted from its own top windows may:
token-set overlap cannot find it, co-activation must, on the model (correlation) and from the
scan alone (shared top windows), and every neuron it ranks as correlated fires on ' dog'.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import numpy as np
import pytest
from mcp import Client

from n2g_mcp.server import create_server
from store.coactivation import CorrelationSums, ScanOverlap, by_correlation, by_scan
from store.jsonl import write_store
from store.scanfile import ScanFile, write_scan_file
from tests.client import call, error, ok
from tests.fake_files import write_rule_scan
from tests.fakes import WORDS, FakeLiveBackend
from tests.graphs import make_graph

pytestmark = pytest.mark.anyio

TARGET, TWIN = (0, 1), (0, 17)  # both fire on ' dog'


def rule_stores(folder: Path, fake: FakeLiveBackend, scan: bool = True) -> Path:
    """The target's own graph, its twin's under another spelling, and a scan by the rule."""
    folder.mkdir(exist_ok=True)
    twin = make_graph([((" Dogs", " barking"), 1.0), ((" Dogs",), 0.4)], layer=TWIN[0], neuron=TWIN[1])
    write_store(folder / "test-model.jsonl.gz", "test-model", [fake.graph("test-model", *TARGET), twin])
    if scan:
        write_rule_scan(folder, fake)
    return folder


@pytest.fixture
def fake() -> FakeLiveBackend:
    return FakeLiveBackend()


@pytest.fixture
def server(tmp_path: Path, fake: FakeLiveBackend):
    return create_server(rule_stores(tmp_path / "stores", fake), live=fake, models=fake.served())


# --------------------------------------------------------------------- the scan's shared top windows
def tiny_scan(path: Path) -> ScanFile:
    """Two layers of three neurons, three top windows each (see the test below)."""
    windows = np.arange(40).reshape(10, 4) % 7 + 1
    top_window = np.array([[[1, 1, 1], [2, 2, 2], [3, 3, 3]],    # layer 0: neurons 0, 1, 2 by column
                           [[4, 1, 3], [5, 2, 2], [6, 3, 9]]])   # layer 1
    top_position = np.array([[[0, 0, 0], [1, 1, 1], [2, 3, 2]],
                             [[0, 0, 2], [0, 1, 1], [0, 2, 0]]])
    top_value = np.ones((2, 3, 3))
    top_value[1, 0, 1] = np.nan  # L1/N1's first entry is not real: it counts for nothing
    top_value[1, 2, 1] = 0.0  # nor where it does not fire
    max_activation = np.array([[2.0, 2.0, 0.0], [2.0, 2.0, 2.0]])  # L0/N2 is dead
    write_scan_file(path, model="m", hook="h", vocab=[str(i) for i in range(8)], windows=windows,
                    top_window=top_window, top_position=top_position, top_value=top_value,
                    max_activation=max_activation, density=max_activation, quantiles={0.5: max_activation},
                    mean=max_activation, random_windows=np.arange(2), seed=0, windows_key="tiny")
    return ScanFile(path)


def test_shared_top_windows_count_tokens_then_windows_and_skip_the_dead_and_the_unreal(tmp_path):
    scan = tiny_scan(tmp_path / "m.scan.npz")
    tokens, windows = ScanOverlap(scan).shared(0, 0)
    # The target L0/N0: windows 1, 2, 3 peaking at 0, 1, 2.
    assert tokens.tolist() == [[3, 2, 3], [0, 1, 2]]
    assert windows.tolist() == [[3, 3, 3], [0, 1, 2]]
    ranked = by_scan(scan, (0, 0), [0, 1], limit=10)
    assert [(n.id, n.shared_tokens, n.shared_windows) for n in ranked] == [
        ("L0/N1", 2, 3), ("L1/N2", 2, 2), ("L1/N1", 1, 1)]  # L0/N2 is dead, L1/N0 shares nothing
    assert [n.id for n in by_scan(scan, (0, 0), [1], limit=1)] == ["L1/N2"]
    assert by_scan(scan, (0, 2), [0, 1], limit=10) == []  # a dead target has no neighbours


def test_the_rule_scan_ranks_the_neurons_of_the_targets_word_first(tmp_path, fake):
    write_rule_scan(tmp_path, fake)
    scan = ScanFile(tmp_path / "test-model.scan.npz")
    ranked = by_scan(scan, TARGET, range(4), limit=200)
    same_word = {(layer, n) for layer in range(4) for n in range(64) if n % len(WORDS) == 1} - {TARGET}
    top = len([w for w in scan.top(*TARGET) if w.activation > 0])
    assert {(n.layer, n.neuron) for n in ranked if n.shared_tokens == top} == same_word
    assert all(n.shared_tokens < top for n in ranked[len(same_word):])


# --------------------------------------------------------------------- the correlation
def test_correlation_sums_over_batches_match_numpy():
    rng = np.random.default_rng(3)
    x = rng.normal(size=90) * 3 + 100  # a large offset: float64 sums keep the variance
    y = np.stack([x * 0.5 + rng.normal(size=90), rng.normal(size=90), np.full(90, 2.0), -x], axis=1)
    sums = CorrelationSums()
    for part in np.array_split(np.arange(90), 4):
        xs, ys = x[part], y[part]
        sums.add(len(part), xs.sum(), (xs * xs).sum(), {5: (ys.sum(0), (ys * ys).sum(0), xs @ ys)})
    r = sums.correlation(5)
    expected = [np.corrcoef(x, y[:, i])[0, 1] for i in (0, 1, 3)]
    assert r[[0, 1, 3]] == pytest.approx(expected, abs=1e-9) and np.isnan(r[2])
    ranked = by_correlation(sums, (5, 0), [5], limit=10)
    assert [n.id for n in ranked] == ["L5/N1", "L5/N3"]  # the target and the constant are not listed
    assert ranked[0].correlation == pytest.approx(expected[1], abs=1e-4)


# --------------------------------------------------------------------- through MCP
async def test_coactivation_finds_a_twin_whose_graph_names_other_tokens_and_token_overlap_does_not(server, fake):
    tokens = await ok(server, "find_similar_neurons", layer=0, neuron=1, by="tokens", threshold=0.0)
    assert tokens["results"] == [] and tokens["nearest"] is None and tokens["coactivation"] is None
    default = await ok(server, "find_similar_neurons", layer=0, neuron=1)  # by='both', from the scan
    assert default["by"] == "both" and default["coactivation"]["source"] == "scan"
    assert TWIN in [(h["layer"], h["neuron"]) for h in default["coactivation"]["results"]]
    result = await call(server, "find_similar_neurons", layer=0, neuron=1, run_model=True)
    data, said = result.structured_content, result.content[0].text
    assert data["by"] == "both" and data["coactivation"]["source"] == "model"
    hits = data["coactivation"]["results"]
    twin = next(h for h in hits if (h["layer"], h["neuron"]) == TWIN)
    assert twin["correlation"] == pytest.approx(1.0) and twin["has_graph"] and twin["activating_tokens"][0] == " Dogs"
    assert "L0/N17: r 1.00" in said and "Pearson r" in said
    # The oracle: every neuron ranked as correlated fires on the target's word.
    assert all(fake.rule(h["layer"], h["neuron"])[0] == " dog" for h in hits if h["correlation"] > 0.5)
    same_word = {(layer, n) for layer in range(4) for n in range(64) if n % len(WORDS) == 1} - {TARGET}
    assert same_word <= {(h["layer"], h["neuron"]) for h in hits} and data["coactivation"]["tokens"] > 0


async def test_without_the_model_the_scan_ranks_the_twin_and_says_why(server):
    data = await ok(server, "find_similar_neurons", layer=0, neuron=1, by="coactivation", run_model=False,
                    layers=[0])
    c = data["coactivation"]
    assert data["by"] == "coactivation" and data["results"] == [] and c["source"] == "scan"
    assert "run_model=false" in c["why_scan"] and c["layers"] == [0]
    # The neurons of the same word share every top window at the same token; others (words in the
    # same windows) share windows, at other tokens, and rank after them.
    assert [(h["layer"], h["neuron"]) for h in c["results"][:3]] == [(0, 17), (0, 33), (0, 49)]
    assert all(h["correlation"] is None for h in c["results"])
    assert [h["shared_tokens"] == c["top_windows"] for h in c["results"]] == [True] * 3 + [False] * 17


async def test_a_model_that_cannot_run_here_falls_back_to_the_scan(server, fake, monkeypatch):
    monkeypatch.setattr(fake, "availability", lambda spec: "torch is not installed")
    data = await ok(server, "find_similar_neurons", layer=0, neuron=1, by="coactivation", run_model=True)
    assert data["coactivation"]["source"] == "scan" and data["coactivation"]["why_scan"] == "torch is not installed"
    assert (0, 17) in [(h["layer"], h["neuron"]) for h in data["coactivation"]["results"]]
    assert "coactivation" not in fake.calls


async def test_a_target_without_a_graph_gets_coactivation_alone_or_the_graph_error(server):
    result = await call(server, "find_similar_neurons", layer=2, neuron=33)
    data = result.structured_content
    assert data["by"] == "coactivation" and data["coactivation"]["results"]
    assert any("has no stored graph" in w for w in data["warnings"])
    assert "No graph for L2/N33" in await error(server, "find_similar_neurons", layer=2, neuron=33, by="tokens")


async def test_coactivation_refusals_say_what_to_do(tmp_path, fake, server):
    assert "pass both layer and neuron" in await error(server, "find_similar_neurons", by="coactivation")
    assert "out of range" in await error(server, "find_similar_neurons", layer=0, neuron=1, layers=[9])
    bare = create_server(rule_stores(tmp_path / "bare", fake, scan=False), live=fake, models=fake.served())
    message = await error(bare, "find_similar_neurons", layer=0, neuron=1, by="coactivation")
    assert "n2g scan --model test-model" in message and "by='tokens'" in message
    both = await ok(bare, "find_similar_neurons", layer=0, neuron=1)  # tokens still answer
    assert both["by"] == "tokens" and both["coactivation"] is None
    assert any("co-activation was not measured" in w for w in both["warnings"])


async def test_pairs_stay_by_tokens(server):
    data = await ok(server, "find_similar_neurons", threshold=0.0)
    assert data["target"] is None and data["by"] == "tokens" and data["coactivation"] is None


async def test_a_cancelled_coactivation_stops_its_worker(tmp_path):
    fake = FakeLiveBackend(delay=0.4)
    server = create_server(rule_stores(tmp_path / "stores", fake), live=fake, models=fake.served())
    async with Client(server) as client:
        with anyio.move_on_after(0.2):
            await client.call_tool("find_similar_neurons", {"layer": 0, "neuron": 1, "run_model": True})
            pytest.fail("the co-activation should still be running")
        assert await anyio.to_thread.run_sync(fake.cancelled.wait, 5)
        assert not (await client.call_tool("list_models", {})).is_error

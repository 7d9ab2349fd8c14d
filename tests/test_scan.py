"""The activation scan on the rule-defined model: top windows, statistics, the shipped scan file,
reuse from the cache and the file, checkpoints, and cancelling."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from builder.config import ScanConfig
from builder.corpus import make_windows
from builder.stages.scan import export_scan_file, layer_scan_from_file, scan, scan_dir
from store.errors import Cancelled
from store.metrics import DECIMALS
from store.scanfile import ScanFile, ScanFileError
from tests.oracle import DEAD, EXCEPT, TOKEN, rule_model, write_corpus

CONFIG = ScanConfig(window=16, top_k=8, random_windows=4, batch_size=8, sample_stride=1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "rule.txt")


@pytest.fixture(scope="module")
def rule(corpus: Path):
    model = rule_model()
    windows = make_windows(model, corpus, CONFIG.window)
    return model, windows, scan(model, windows, [0], CONFIG, use_cache=False)[0]


def _true_activations(model, windows: np.ndarray) -> np.ndarray:
    import torch

    ids = torch.cat([torch.zeros(len(windows), 1, dtype=torch.long), torch.as_tensor(windows, dtype=torch.long)], 1)
    return model.bridge.activations(ids)[:, 1:].numpy()  # (windows, pos, neurons)


def test_the_top_windows_are_the_truly_strongest(rule):
    model, windows, s = rule
    truth = _true_activations(model, windows).max(axis=1)  # (windows, neurons)
    for n in (EXCEPT, TOKEN):
        assert np.allclose(np.sort(truth[:, n])[::-1][:8], s.values[:, n])
        assert np.allclose(truth[s.windows[:, n], n], s.values[:, n])
    assert s.max_activation[DEAD] == 0


def test_density_and_quantiles_match_the_counted_truth(rule):
    model, windows, s = rule
    acts = _true_activations(model, windows).reshape(-1, model.d_mlp)
    for n in (EXCEPT, TOKEN):
        assert s.density[n] == pytest.approx((acts[:, n] >= 0.5 * acts[:, n].max()).mean(), rel=0.01)
    assert s.density[DEAD] == 0
    # TOKEN is 0.8 on " the" and 0 elsewhere: its p99.9 is 0.8 (one histogram bin), its p50 is 0.
    share = (acts[:, TOKEN] > 0).mean()
    assert s.quantiles[0.5][TOKEN] == 0 and share < 0.5
    assert s.quantiles[0.999][TOKEN] == pytest.approx(0.8, rel=0.05)


def test_the_scan_file_round_trips_and_rebuilds_a_neurons_traces(rule, tmp_path: Path):
    model, windows, s = rule
    path = export_scan_file(model, windows, {0: s}, tmp_path / "rule.scan.npz", CONFIG)
    read = ScanFile(path)
    top = read.top(0, EXCEPT)
    assert [w.window for w in top] == s.windows[:, EXCEPT].tolist()
    assert all(w.tokens[w.pivot] == " except" for w in top if w.activation > 0)
    assert read.stats(0, TOKEN).density == round(float(s.density[TOKEN]), DECIMALS)  # as results show it
    again = layer_scan_from_file(model, read, 0, [EXCEPT], CONFIG)
    assert np.allclose(again.traces[:, EXCEPT], s.traces[:, EXCEPT])
    assert np.allclose(again.random_traces, s.random_traces)


def test_a_newer_or_foreign_scan_file_is_refused_clearly(tmp_path: Path):
    other = tmp_path / "x.scan.npz"
    np.savez(other, meta=np.frombuffer(b'{"format": "n2g-scan", "version": 99}', dtype=np.uint8))
    with pytest.raises(ScanFileError, match="newer"):
        ScanFile(other)
    (tmp_path / "bad.scan.npz").write_bytes(b"not a zip")
    with pytest.raises(ScanFileError, match="n2g scan"):
        ScanFile(tmp_path / "bad.scan.npz")


def test_a_cached_scan_with_more_windows_serves_a_request_for_fewer(rule, tmp_path, monkeypatch):
    monkeypatch.setenv("N2G_CACHE", str(tmp_path))
    model, windows, _ = rule
    big = scan(model, windows, [0], CONFIG)[0]
    small_config = ScanConfig(**{**CONFIG.__dict__, "top_k": 3})
    calls = []
    monkeypatch.setattr("builder.stages.scan.top_k_pass", lambda *a, **k: calls.append(a))
    small = scan(model, windows, [0], small_config)[0]
    assert not calls and np.array_equal(small.windows, big.windows[:3])


def test_an_interrupted_scan_resumes_from_its_checkpoint_to_the_same_result(rule, tmp_path, monkeypatch):
    monkeypatch.setenv("N2G_CACHE", str(tmp_path))
    model, windows, whole = rule
    config = ScanConfig(**{**CONFIG.__dict__, "checkpoint_seconds": 0.0})

    def crash(done: float, total: float, message: str) -> None:
        if done >= 3 * config.batch_size:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        scan(model, windows, [0], config, progress=crash)
    assert list(scan_dir(model, windows, config).glob("partial-*"))
    resumed = scan(model, windows, [0], config, progress=lambda *_: None)[0]
    assert np.array_equal(resumed.values, whole.values) and np.array_equal(resumed.windows, whole.windows)
    assert np.allclose(resumed.density, whole.density)
    assert not list(scan_dir(model, windows, config).glob("partial-*"))


def test_cancelling_a_scan_stops_it_and_leaves_nothing_behind(rule, tmp_path, monkeypatch):
    monkeypatch.setenv("N2G_CACHE", str(tmp_path))
    model, windows, _ = rule
    config = ScanConfig(**{**CONFIG.__dict__, "checkpoint_seconds": 0.0})
    cancel = threading.Event()

    def cancel_soon(done: float, total: float, message: str) -> None:
        if done >= 2 * config.batch_size:
            cancel.set()

    with pytest.raises(Cancelled, match="cancelled"):
        scan(model, windows, [0], config, progress=cancel_soon, cancel=cancel)
    folder = scan_dir(model, windows, config)
    assert not folder.exists() or not any(folder.iterdir())

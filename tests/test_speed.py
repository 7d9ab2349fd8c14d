"""The builder's speed levers keep its answers: the length ladder of pruning, the numeric type as a
choice a build checks, one pass for every layer's traces from a scan file, and (on the real model)
saliency from a cached prefix equal to running every masked copy whole."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from builder.config import BuildConfig, PruneConfig, ScanConfig
from builder.corpus import make_windows
from builder.stages.build import build_layer
from builder.stages.examples import TopExample
from builder.stages.prune import prune
from builder.stages.scan import export_scan_file, forget_traces, layer_scans_from_file, scan, scan_dir
from store.errors import BadArgument
from store.scanfile import ScanFile
from tests.oracle import EXCEPT, TOKEN, RuleBridge, rule_model, write_corpus

SCAN = ScanConfig(window=16, top_k=8, random_windows=4, batch_size=8, sample_stride=1)


# -- pruning's length ladder -------------------------------------------------------------------

def _except_example(model, gap: int) -> TopExample:
    """A window ending at " except" with " everyone" ``gap`` tokens before it: the EXCEPT neuron
    needs the last ``gap + 1`` tokens, and fires at 1.0."""
    ids = model.encode("We sat on the mat and the cat ran home" + " everyone" + " big" * (gap - 1)
                       + " except")
    return TopExample(EXCEPT, ids, len(ids) - 1, 1.0)


def test_pruning_takes_the_shortest_passing_length_of_its_ladder() -> None:
    model = rule_model()
    example = _except_example(model, gap=3)  # needs 4 tokens; 14 up to the pivot
    every = PruneConfig(exact=2, growth=None, per_pass=1)
    ladder = PruneConfig(exact=2, growth=1.5, per_pass=1)  # lengths 1, 2 | 3 | 5 | 8 | 12
    assert len(prune(model, 0, [example], every)[0].tokens) == 4
    assert len(prune(model, 0, [example], ladder)[0].tokens) == 5


def test_lengths_per_pass_change_the_cost_of_pruning_not_its_answer() -> None:
    model = rule_model()
    examples = [_except_example(model, gap) for gap in (1, 2, 3)]
    answers = {}
    for per_pass in (1, 3):
        before = model.tokens_forwarded
        found = prune(model, 0, examples, PruneConfig(exact=1, growth=1.3, per_pass=per_pass))
        answers[per_pass] = ([s.tokens for s in found], model.tokens_forwarded - before)
    assert answers[1][0] == answers[3][0]
    assert answers[1][1] < answers[3][1]  # one length a pass stops as soon as one passes


# -- the numeric type --------------------------------------------------------------------------

def test_a_build_refuses_a_model_loaded_in_another_numeric_type(tmp_path: Path) -> None:
    model = rule_model()  # float32
    windows = make_windows(model, write_corpus(tmp_path / "rule.txt"), SCAN.window)
    layer_scan = scan(model, windows, [0], SCAN, use_cache=False)[0]
    with pytest.raises(BadArgument, match="bfloat16"):
        build_layer(model, 0, [TOKEN], layer_scan, windows, BuildConfig(scan=SCAN, dtype="bfloat16"))


def test_scans_are_cached_apart_per_numeric_type(tmp_path: Path) -> None:
    model = rule_model()
    windows = make_windows(model, write_corpus(tmp_path / "rule.txt"), SCAN.window)
    fp32 = scan_dir(model, windows, SCAN)
    bf16 = scan_dir(dataclasses.replace(model, dtype="bfloat16"), windows, SCAN)
    assert fp32 != bf16 and "bfloat16" in bf16.name and "float32" not in fp32.name


# -- one pass for every layer's traces ---------------------------------------------------------

class TwoLayerBridge(RuleBridge):
    """The rule neurons in layer 0, twice their activations in layer 1; counts its passes."""

    def __init__(self, tokenizer) -> None:
        super().__init__(tokenizer)
        self.hook_dict = {f"blocks.{layer}.mlp.hook_post": None for layer in (0, 1)}
        self.passes = 0

    def run_with_hooks(self, ids: torch.Tensor, fwd_hooks, stop_at_layer: int | None = None, **_):
        self.passes += 1
        acts = self.activations(ids)
        for name, hook in sorted(fwd_hooks):
            hook(acts * (1 + int(name.split(".")[1])), name)


def test_a_scan_file_serves_every_layer_from_one_pass_over_the_windows(tmp_path: Path) -> None:
    model = rule_model()
    model = dataclasses.replace(model, n_layers=2, bridge=TwoLayerBridge(model.tokenizer))
    windows = make_windows(model, write_corpus(tmp_path / "rule.txt"), SCAN.window)
    scans = scan(model, windows, [0, 1], SCAN, use_cache=False)
    path = export_scan_file(model, windows, scans, tmp_path / "two.scan.npz", SCAN)
    model.bridge.passes = 0
    reports: list[tuple[float, float, str]] = []
    again = layer_scans_from_file(model, ScanFile(path), [0, 1], [EXCEPT, TOKEN], SCAN,
                                  progress=lambda *report: reports.append(report))
    rows = len(np.unique(np.concatenate([scans[layer].windows[:, [EXCEPT, TOKEN]].ravel()
                                         for layer in (0, 1)]))) + SCAN.random_windows
    assert model.bridge.passes == -(-rows // SCAN.batch_size)  # one pass, not one per layer
    assert len(reports) == model.bridge.passes and reports[-1][:2] == (rows, rows)  # a report a batch
    for layer in (0, 1):
        for n in (EXCEPT, TOKEN):
            assert np.allclose(again[layer].traces[:, n], scans[layer].traces[:, n])
        assert np.allclose(again[layer].random_traces, scans[layer].random_traces)


def test_a_stopped_build_resumes_without_measuring_the_same_traces_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("N2G_CACHE", str(tmp_path / "cache"))
    model = rule_model()
    model = dataclasses.replace(model, n_layers=2, bridge=TwoLayerBridge(model.tokenizer))
    windows = make_windows(model, write_corpus(tmp_path / "rule.txt"), SCAN.window)
    full = scan(model, windows, [0, 1], SCAN, use_cache=False)
    scan_file = ScanFile(export_scan_file(model, windows, full, tmp_path / "two.scan.npz", SCAN))
    scan(model, windows, [0, 1], SCAN, scan_file=scan_file, neurons=[EXCEPT])
    passes = model.bridge.passes
    scan(model, windows, [0, 1], SCAN, scan_file=scan_file, neurons=[EXCEPT])
    assert model.bridge.passes > passes  # two traces: measured again, not kept
    monkeypatch.setattr("builder.stages.scan.KEEP_TRACES", 2)
    first = scan(model, windows, [0, 1], SCAN, scan_file=scan_file, neurons=[EXCEPT])
    passes = model.bridge.passes
    again = scan(model, windows, [0, 1], SCAN, scan_file=scan_file, neurons=[EXCEPT])
    assert model.bridge.passes == passes  # kept: no pass
    for layer in (0, 1):
        assert np.array_equal(again[layer].traces, first[layer].traces)
        assert again[layer].traced.tolist() == [EXCEPT]
    # Another neuron: one pass for it, and the kept file then holds both.
    both = scan(model, windows, [0, 1], SCAN, scan_file=scan_file, neurons=[TOKEN])
    assert model.bridge.passes > passes
    for layer in (0, 1):
        assert both[layer].traced.tolist() == sorted([EXCEPT, TOKEN])
        for n in (EXCEPT, TOKEN):
            assert np.allclose(both[layer].traces[:, n], full[layer].traces[:, n])
    forget_traces(model, windows, SCAN, 0)
    passes = model.bridge.passes
    scan(model, windows, [1], SCAN, scan_file=scan_file, neurons=[TOKEN])
    assert model.bridge.passes == passes  # layer 1 is still kept
    scan(model, windows, [0], SCAN, scan_file=scan_file, neurons=[TOKEN])
    assert model.bridge.passes > passes  # layer 0's was dropped


# -- saliency from a cached prefix (real model) ------------------------------------------------

@pytest.fixture(scope="module")
def smollm():
    from builder.models import load_model

    return load_model(device="cpu", dtype="float32")


TEXT = ("In 1905 Albert Einstein published four papers that changed physics, and the world took "
        "notice of the patent clerk from Bern. The quick brown fox jumps over the lazy dog.")


@pytest.mark.model
def test_suffixes_after_a_cached_prefix_read_what_the_whole_rows_read(smollm) -> None:
    from builder.forward import pivot_activations
    from builder.prefix import shared_prefix_activations

    ids = smollm.encode(TEXT)
    prefixes = [ids[:20], ids[:0], ids[:7], ids[:33]]  # unequal, one empty: padding is masked
    suffixes = [[ids[20:29], ids[20:22]], [ids[:5]], [ids[7:16], ids[7:8], [smollm.mask_id] * 3],
                [ids[33:40]]]
    neurons = [5, 100, 900, 1200]
    owners = [n for n, g in zip(neurons, suffixes) for _ in g]
    cached = shared_prefix_activations(smollm, 15, prefixes, suffixes, neurons)
    rows = [p + list(x) for p, group in zip(prefixes, suffixes) for x in group]
    whole = pivot_activations(smollm, 15, rows, owners)
    assert np.allclose(np.concatenate(cached), whole, atol=1e-4)
    # Each suffix after its own share of the prefix (saliency's masked copies): lengths differ,
    # so they run in several passes from copies of one cache.
    starts = [[20, 3], [0], [7, 0, 5], [12]]
    cached = shared_prefix_activations(smollm, 15, prefixes, suffixes, neurons, starts=starts)
    rows = [p[:at] + list(x) for p, group, s in zip(prefixes, suffixes, starts) for x, at in zip(group, s)]
    whole = pivot_activations(smollm, 15, rows, owners)
    assert np.allclose(np.concatenate(cached), whole, atol=1e-4)
    with pytest.raises(ValueError, match="starts"):
        shared_prefix_activations(smollm, 15, prefixes, suffixes, neurons, starts=[[21, 0], [0], [0, 0, 0], [0]])


@pytest.mark.model
def test_saliency_from_a_cached_prefix_equals_masking_whole_copies(smollm) -> None:
    from builder.stages.prune import Snippet
    from builder.stages.saliency import saliency

    ids = smollm.encode(TEXT)
    snippets = [Snippet(n, tuple(ids[:length]), 0.0) for n, length in ((5, 30), (100, 12), (7, 5), (900, 40))]
    plain = dataclasses.replace(smollm, prefix_cache=False)
    got = saliency(smollm, 15, snippets, smollm.mask_id, context=8)
    want = saliency(plain, 15, snippets, smollm.mask_id, context=8)
    assert np.allclose([g.activation for g in got], [w.activation for w in want], atol=1e-4)
    for g, w in zip(got, want, strict=True):
        assert np.allclose(g.importances, w.importances, atol=1e-3)

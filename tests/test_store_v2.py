"""Store format 2: examples as references into the model's scan file read exactly as their text did.

A tiny scan file is written here (random windows over a vocabulary with a repeated spelling, as
real vocabularies have), graphs get text examples cut from its windows the way the builder cuts
them, and the claims are held on the store files, the compact command and the server's queries.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import orjson
import pytest

from n2g_mcp.cli import main as n2g
from n2g_mcp.outputs import ExampleView
from n2g_mcp.queries import Queries
from store.errors import StoreFormatError, StoreMismatch
from store.examples import (
    EXAMPLE_AFTER,
    EXAMPLE_BEFORE,
    Example,
    ExampleRef,
    PrunedRef,
    Referrer,
    UnresolvedExamples,
    resolve,
    scan_problem,
    scan_ref,
)
from store.jsonl import StoreWriter, read_header, read_store, write_store
from store.scanfile import ScanFile, write_scan_file
from tests.graphs import make_graph

MODEL = "test-model"
WIDTH, N_WINDOWS, LAYERS, D = 64, 40, 2, 4
VOCAB = [f"t{i}" for i in range(199)] + ["t7"]  # id 199 spells like id 7


def _scan(path: Path, seed: int = 0) -> ScanFile:
    rng = np.random.default_rng(seed)
    windows = rng.integers(0, len(VOCAB), (N_WINDOWS, WIDTH))
    k = 5
    top_window = np.stack([rng.permutation(N_WINDOWS)[:k * D].reshape(k, D) for _ in range(LAYERS)])
    write_scan_file(path, model=MODEL, hook="blocks.{layer}.mlp.hook_post", vocab=VOCAB, windows=windows,
                    top_window=top_window, top_position=np.zeros_like(top_window),
                    top_value=np.ones(top_window.shape), max_activation=np.ones((LAYERS, D)),
                    density=np.zeros((LAYERS, D)), quantiles={0.5: np.zeros((LAYERS, D))},
                    mean=np.zeros((LAYERS, D)), random_windows=np.arange(3), seed=0,
                    windows_key=f"key{seed}")
    return ScanFile(path)


def _text_example(scan: ScanFile, window: int, pivot: int, split: str) -> Example:
    """A top example cut as the builder cuts it."""
    row = scan.windows[window]
    start, end = max(0, pivot - EXAMPLE_BEFORE), min(WIDTH, pivot + EXAMPLE_AFTER + 1)
    return Example(tokens=[VOCAB[t] for t in row[start:end]], pivot=pivot - start, activation=2.5 + pivot / 100,
                   split=split)


def _text_graph(scan: ScanFile, layer: int, neuron: int):
    graph = make_graph([((" a",), 0.9)], layer=layer, neuron=neuron, model=MODEL, f1=0.5)
    windows = scan.top_window[layer, :, neuron]
    graph.examples = [_text_example(scan, int(w), p, "train" if i % 2 else "test")
                      for i, (w, p) in enumerate(zip(windows, (0, 5, 24, 40, 63), strict=True))]
    row = scan.windows[int(windows[1])]
    graph.pruned = [Example(tokens=[VOCAB[t] for t in row[10:15]], pivot=4, activation=1.25, split="train",
                            importances=[0.1, 0.2, 0.0, 0.5, 1.0])]
    return graph


@pytest.fixture
def scan(tmp_path: Path) -> ScanFile:
    return _scan(tmp_path / "stores" / "model.scan.npz")


@pytest.fixture
def v1_store(tmp_path: Path, scan: ScanFile) -> Path:
    path = tmp_path / "v1.jsonl"
    write_store(path, MODEL, [_text_graph(scan, layer, n) for layer in range(LAYERS) for n in range(D)])
    return path


def test_references_resolve_to_the_very_text_they_replace(scan: ScanFile, v1_store: Path):
    referrer = Referrer(scan)
    for graph in read_store(v1_store):
        examples, pruned, kept = referrer.refer(graph.examples, graph.pruned,
                                                scan.top_window[graph.layer, :, graph.neuron])
        assert kept == 0
        assert all(isinstance(e, ExampleRef) for e in examples) and all(isinstance(p, PrunedRef) for p in pruned)
        assert resolve(examples, scan) == graph.examples
        assert resolve(pruned, scan) == graph.pruned


def test_an_example_no_window_holds_stays_text(scan: ScanFile):
    stray = Example(tokens=["t1", "t2", "not-a-token"], pivot=1, activation=1.0)
    unseen = Example(tokens=["t3"] * 9, pivot=8, activation=1.0)
    examples, pruned, kept = Referrer(scan).refer([stray, unseen], [stray])
    assert kept == 3 and examples == [stray, unseen] and pruned == [stray]


def test_repeated_spellings_in_the_vocabulary_still_match(scan: ScanFile):
    windows = scan.windows.copy()
    target = int(np.flatnonzero(windows[0] == 7)[0]) if (windows[0] == 7).any() else 3
    windows[0, target] = 199  # spelled "t7" too
    row = [VOCAB[t] for t in windows[0]]
    ex = Example(tokens=row[:target + 1], pivot=target, activation=1.0)

    class Patched:
        vocab, meta = VOCAB, scan.meta
    Patched.windows = windows
    ref = Referrer(Patched).pruned(ex)
    assert ref is not None and resolve([ref], Patched) == [ex]


def test_a_reference_outside_the_scan_is_refused_not_misread(scan: ScanFile):
    with pytest.raises(UnresolvedExamples, match="past the scan"):
        resolve([ExampleRef(window=N_WINDOWS, pivot=0, activation=1.0)], scan)
    with pytest.raises(UnresolvedExamples, match="past window"):
        resolve([PrunedRef(window=0, start=60, end=WIDTH + 1, activation=1.0)], scan)


def test_references_are_stored_as_rows_and_read_back(tmp_path: Path, scan: ScanFile, v1_store: Path):
    target = tmp_path / "stores" / "v2.jsonl.gz"
    assert n2g(["store", "compact", "--scan-file", str(scan.path), str(v1_store), str(target)]) == 0
    with gzip.open(target) as f:
        header, line = orjson.loads(f.readline()), orjson.loads(f.readline())
    assert header["version"] == 2 and header["scan"] == {"name": "model.scan.npz", "windows_key": "key0"}
    assert isinstance(line["examples"][0], list) and len(line["examples"][0]) == 4
    store, text = read_store(target), read_store(v1_store)
    for graph in store:
        assert graph.scan == read_header(target).scan
        assert resolve(graph.examples, scan) == text.get(graph.layer, graph.neuron).examples
        assert resolve(graph.pruned, scan) == text.get(graph.layer, graph.neuron).pruned


def test_compacting_a_version_2_store_keeps_its_references_and_its_scan(tmp_path: Path, scan: ScanFile,
                                                                        v1_store: Path):
    v2 = tmp_path / "stores" / "v2.jsonl.gz"
    assert n2g(["store", "compact", "--scan-file", str(scan.path), str(v1_store), str(v2)]) == 0
    again = tmp_path / "again.jsonl"
    assert n2g(["store", "compact", str(v2), str(again)]) == 0
    assert read_header(again).scan == read_header(v2).scan
    assert [g.examples for g in read_store(again)] == [g.examples for g in read_store(v2)]
    other_scan = _scan(tmp_path / "other.scan.npz", seed=1)
    write_store(tmp_path / "other-text.jsonl", MODEL, [_text_graph(other_scan, 0, 0)])
    other = tmp_path / "other.jsonl"
    assert n2g(["store", "compact", "--scan-file", str(other_scan.path), str(tmp_path / "other-text.jsonl"),
                str(other)]) == 0
    assert n2g(["store", "compact", str(v2), str(other), str(tmp_path / "mixed.jsonl")]) == 2  # two scans


def test_a_store_of_text_is_written_as_version_1(tmp_path: Path, v1_store: Path):
    assert read_header(v1_store).version == 1 and read_header(v1_store).scan is None


def test_a_newer_version_than_3_is_refused(tmp_path: Path):
    path = tmp_path / "v4.jsonl"
    path.write_bytes(orjson.dumps({"format": "n2g-store", "version": 4, "model": MODEL, "created": "x"}) + b"\n")
    with pytest.raises(StoreFormatError, match="version 4 is newer"):
        read_store(path)


def test_a_writer_refuses_references_into_a_store_that_names_no_scan(tmp_path: Path, scan: ScanFile):
    graph = _text_graph(scan, 0, 0)
    graph.examples = [ExampleRef(window=0, pivot=3, activation=1.0)]
    with StoreWriter(tmp_path / "text.jsonl", MODEL) as writer:
        assert writer.scan is None
        with pytest.raises(StoreMismatch, match="names no scan file"):
            writer.append([graph])


def test_a_writer_offers_references_only_into_its_stores_own_scan(tmp_path: Path, scan: ScanFile):
    ref = scan_ref(scan, scan.path.name)
    path = tmp_path / "s.jsonl"
    with StoreWriter(path, MODEL, scan=ref) as writer:
        assert writer.scan == ref
    other = ref.model_copy(update={"windows_key": "another"})
    with StoreWriter(path, MODEL, scan=other) as writer:
        assert writer.scan is None  # the header names the first scan: later builds against another write text
    assert read_header(path).version == 2 and read_header(path).scan == ref


def test_a_scan_over_other_windows_is_named_as_the_problem(tmp_path: Path, scan: ScanFile):
    ref = scan_ref(scan, scan.path.name)
    other = _scan(tmp_path / "other.scan.npz", seed=1)
    assert scan_problem(ref, scan) is None
    assert "other windows" in scan_problem(ref, other)
    assert "not beside the store" in scan_problem(ref, None)
    assert "names no scan" in scan_problem(None, scan)


# --------------------------------------------------------------------- through the server's queries
def _stores(tmp_path: Path, scan: ScanFile, v1_store: Path, version: int) -> Path:
    """A stores directory with the graphs as text (1) or as references (2); the scan file is not
    the model's default name, so top_activations reads the graphs' own examples."""
    stores = scan.path.parent
    if version == 1:
        (stores / "graphs.jsonl").write_bytes(v1_store.read_bytes())
    else:
        assert n2g(["store", "compact", "--scan-file", str(scan.path), str(v1_store),
                    str(stores / "graphs.jsonl.gz")]) == 0
    return stores


@pytest.mark.parametrize("version", [1, 2])
def test_get_graph_and_top_activations_read_the_same_text_in_both_formats(tmp_path: Path, scan: ScanFile,
                                                                           v1_store: Path, version: int):
    queries = Queries(_stores(tmp_path, scan, v1_store, version))
    text = read_store(v1_store).get(1, 2)
    described = queries.get_graph(MODEL, 1, 2)
    top = queries.top_activations(MODEL, 1, 2, limit=10)
    assert described.warnings == [] and top.warnings == [] and top.source == "graph"
    assert [e.text for e in described.examples] == ["".join(text.pruned[0].tokens[:-1]) + f"[[{text.pruned[0].tokens[-1]}]]"]
    assert described.examples[0].important_tokens[0] == text.pruned[0].tokens[3]
    shown = sorted(text.examples, key=lambda e: -e.activation)
    assert [e.text for e in top.examples] == [ExampleView.of(e, text.max_activation).text for e in shown]
    assert [e.raw_activation for e in top.examples] == [e.activation for e in shown]


def test_a_missing_or_mismatched_scan_is_reported_and_nothing_is_misread(tmp_path: Path, scan: ScanFile,
                                                                        v1_store: Path):
    stores = _stores(tmp_path, scan, v1_store, 2)
    queries = Queries(stores)
    _scan(scan.path, seed=1)  # the scan file replaced by one over other windows
    described = queries.get_graph(MODEL, 0, 1)
    assert described.examples == [] and "other windows" in described.warnings[-1]
    scan.path.unlink()
    top = queries.top_activations(MODEL, 0, 1)
    assert top.examples == [] and "not beside the store" in top.warnings[-1]


# --------------------------------------------------------------------- the builder
def test_a_build_over_its_scan_file_stores_references_that_read_as_the_built_text(tmp_path: Path,
                                                                                 monkeypatch) -> None:
    from builder.config import BuildConfig, EvalConfig, ScanConfig
    from builder.corpus import make_windows
    from builder.run.runner import BuildSource, run_build
    from builder.stages.scan import export_scan_file
    from builder.stages.scan import scan as scan_layers
    from tests.oracle import EXCEPT, TOKEN, rule_model, write_corpus

    monkeypatch.setenv("N2G_CACHE", str(tmp_path / "cache"))
    config = BuildConfig(scan=ScanConfig(window=16, top_k=60, random_windows=10),
                         eval=EvalConfig(top=40, train=20, extra_train=20), neuron_batch=2)
    model, corpus = rule_model(), write_corpus(tmp_path / "corpus.txt")
    windows = make_windows(model, corpus, config.scan.window, config.scan.max_tokens)
    path = export_scan_file(model, windows, scan_layers(model, windows, [0], config.scan, use_cache=False),
                            tmp_path / "rule.scan.npz", config.scan)
    source = BuildSource(model, config, corpus=corpus, scan_file=ScanFile(path))
    assert source.serves
    built = run_build(model, [0], [EXCEPT, TOKEN], tmp_path / "store.jsonl", config, source)
    store = read_store(tmp_path / "store.jsonl")
    assert store.header.version == 2 and store.header.scan == scan_ref(source.scan_file, "rule.scan.npz")
    for graph in built:
        stored = store.get(0, graph.neuron)
        assert stored.examples and all(isinstance(e, ExampleRef) for e in stored.examples)
        assert all(isinstance(p, PrunedRef) for p in stored.pruned)
        assert resolve(stored.examples, source.scan_file) == graph.examples
        assert resolve(stored.pruned, source.scan_file) == graph.pruned

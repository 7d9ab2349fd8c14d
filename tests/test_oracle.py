"""Oracle tests: neurons defined by rules must come back as the graphs the rules imply.

The real builder stages (scan, prune, saliency, augment, fit, evaluate) run on the rule model of
``tests/oracle.py``; only the transformer is replaced.
"""

from __future__ import annotations

import dataclasses

import pytest

from builder.config import AugmentConfig, BuildConfig, FitConfig, ScanConfig
from builder.run.runner import BuildSource, run_build
from store.jsonl import read_store
from store.trie import IGNORE
from store.trie import (
    REPEAT as REPEAT_NODE,  # REPEAT below is the oracle's repeat neuron
)
from tests.oracle import (
    ORACLE_CONFIG,
    oracle_build,
    BIGRAM,
    DEAD,
    EXCEPT,
    HALF,
    REPEAT,
    TOKEN,
    rule_activations,
    rule_model,
    write_corpus,
)

CONFIG = ORACLE_CONFIG


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("oracle")
    mp = pytest.MonkeyPatch()
    mp.setenv("N2G_CACHE", str(root / "cache"))
    model = rule_model()
    store, corpus = oracle_build(model, root, [EXCEPT, REPEAT, TOKEN, DEAD, BIGRAM], "store.jsonl")
    yield model, read_store(store), corpus
    mp.undo()


def test_except_neuron_comes_back_as_except_after_everyone(built) -> None:
    _, store, _ = built
    graph = store.get(0, EXCEPT)
    assert set(graph.activating_tokens) == {" except"}
    assert set(graph.context_tokens) == {" everyone"}
    paths = set(graph.graph)
    assert paths, "the graph has no paths"
    for path in paths:
        assert path[0] == " except" and path[-1] == " everyone"
        assert all(t is IGNORE for t in path[1:-1]) and len(path) <= 4, path
    graph.graph._check()


def test_except_graph_predicts_fresh_text(built) -> None:
    model, store, _ = built
    graph = store.get(0, EXCEPT)
    gaps = {len(p) - 2 for p in graph.graph}
    for gap in sorted(gaps):
        text = "The dog saw everyone" + " red" * gap + " except him. The cat ran except me."
        tokens = [model.vocab[i] for i in model.encode(text)]
        predicted = graph.predict(tokens)
        truth = rule_activations(model, text, EXCEPT)
        assert [p >= 0.5 for p in predicted] == [t >= 0.5 for t in truth], (gap, tokens, predicted)


def test_repeat_neuron_comes_back_as_the_repeat_wildcard(built) -> None:
    # Before repeat nodes, its graph listed the tokens that happened to repeat in its top windows
    # (" dog" after " dog", " red" five tokens after " red", ...): held-out F1 0.36.
    _, store, _ = built
    graph = store.get(0, REPEAT)
    assert list(graph.graph) == [(REPEAT_NODE,)]
    assert graph.fidelity.n2g.top.f1 > 0.8  # not 1: the rule skips repeats of the mask token


def test_repeated_bigram_neuron_comes_back_as_exactly_a_repeat_path(built) -> None:
    model, store, _ = built
    graph = store.get(0, BIGRAM)
    graph.graph._check()
    assert list(graph.graph) == [(REPEAT_NODE, REPEAT_NODE)]
    assert graph.graph[(REPEAT_NODE, REPEAT_NODE)] == pytest.approx(1.0)
    assert graph.fidelity.n2g.random.f1 == pytest.approx(1.0)
    # Fresh text, with words and bigrams its train windows never showed repeating.
    text = "We saw the big dog and the big dog ran home. We saw a red car on the road and a red car."
    tokens = [model.vocab[i] for i in model.encode(text)]
    truth = rule_activations(model, text, BIGRAM)
    assert truth.sum() >= 4
    assert [p >= 0.5 for p in graph.predict(tokens)] == [t >= 0.5 for t in truth]


@pytest.mark.parametrize("neuron", [EXCEPT, TOKEN])
def test_neurons_that_read_no_repetition_get_no_repeat_node(built, neuron: int) -> None:
    _, store, _ = built
    assert all(REPEAT_NODE not in path for path in store.get(0, neuron).graph)


def test_token_neuron_needs_no_context(built) -> None:
    _, store, _ = built
    graph = store.get(0, TOKEN)
    assert list(graph.graph) == [(" the",)]
    assert graph.graph[(" the",)] == pytest.approx(1.0)
    assert graph.fidelity.n2g.top.f1 == pytest.approx(1.0)
    assert graph.fidelity.n2g.random.correlation == pytest.approx(1.0)


def test_dead_neuron_is_stored_without_graph_or_fidelity(built) -> None:
    _, store, _ = built
    graph = store.get(0, DEAD)
    assert graph.fidelity is None and len(graph.graph) == 0 and graph.build["dead"]


def test_context_neuron_beats_token_lookup_on_precision(built) -> None:
    _, store, _ = built
    fidelity = store.get(0, EXCEPT).fidelity
    # " except" also appears without " everyone" before it, which only the graph tells apart.
    assert fidelity.n2g.random.precision == pytest.approx(1.0)
    assert fidelity.token_lookup.random.precision < 1.0
    assert fidelity.n2g.top.recall == pytest.approx(1.0)


def test_short_texts_are_measured_again_and_still_need_the_context(built) -> None:
    _, store, _ = built
    fidelity = store.get(0, EXCEPT).fidelity
    short, lookup = fidelity.n2g.short, fidelity.token_lookup.short
    # Ten test windows, each cut to at most 24 tokens before the pivot and 8 after.
    assert short is not None and 0 < short.tokens <= 10 * 33 and short.firing > 0
    assert short.f1 == pytest.approx(1.0) and lookup.precision < 1.0


def test_a_second_build_skips_the_stored_neurons(built, tmp_path, monkeypatch) -> None:
    model, store, corpus = built
    monkeypatch.setenv("N2G_CACHE", str(tmp_path / "cache"))
    again = run_build(model, [0], [EXCEPT, TOKEN], store.path, CONFIG, BuildSource(model, CONFIG, corpus=corpus))
    assert again == []


def test_rebuild_builds_stored_neurons_again_and_the_new_line_wins(built, tmp_path, monkeypatch) -> None:
    model, store, corpus = built
    monkeypatch.setenv("N2G_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "copy.jsonl"
    path.write_bytes(store.path.read_bytes())
    lines = len(path.read_bytes().splitlines())
    config = dataclasses.replace(CONFIG, fit=dataclasses.replace(CONFIG.fit, rule="greedy"))
    again = run_build(model, [0], [TOKEN], path, config, BuildSource(model, config, corpus=corpus), rebuild=True)
    assert [(g.layer, g.neuron) for g in again] == [(0, TOKEN)]
    assert len(path.read_bytes().splitlines()) == lines + 1
    reread = read_store(path)
    assert reread.get(0, TOKEN).matching.rule == "greedy"
    assert reread.get(0, EXCEPT).matching.rule == store.get(0, EXCEPT).matching.rule == "all"


def _half_graph(tmp_path, monkeypatch, fit: FitConfig):
    monkeypatch.setenv("N2G_CACHE", str(tmp_path / "cache"))
    model = rule_model()
    config = dataclasses.replace(CONFIG, fit=fit, augment=AugmentConfig(helper="none"))
    [graph] = run_build(model, [0], [HALF], None, config, BuildSource(model, config, corpus=write_corpus(tmp_path / "corpus.txt")))
    return model, graph


@pytest.mark.parametrize("scale", [True, False])
def test_pruned_path_predicts_the_full_examples_level_only_when_scaled(tmp_path, monkeypatch,
                                                                       scale: bool) -> None:
    # Uncalibrated, so that the END is the pruned example's own value, scaled or not.
    model, graph = _half_graph(tmp_path, monkeypatch,
                               FitConfig(scale=scale, calibrate=False, backoff=False))
    assert (" home",) in set(graph.graph), "pruning should cut ' went' away"
    text = "We went on the old road and home."
    tokens = [model.vocab[i] for i in model.encode(text)]
    at = tokens.index(" home")
    assert rule_activations(model, text, HALF)[at] >= 0.5
    assert (graph.predict(tokens)[at] >= 0.5) is scale


def test_calibration_learns_that_the_pruned_token_fires_only_after_its_distant_context(
        tmp_path, monkeypatch) -> None:
    model, graph = _half_graph(tmp_path, monkeypatch, FitConfig())
    # Pruning dropped " went", so the context-free path's END comes from its train matches, 0.45
    # and 0.8 ones: their mean, and firing since most of them fire.
    assert 0.5 <= graph.graph[(" home",)] <= 0.8
    assert graph.graph[(" sun", " red")] == pytest.approx(1.0)
    assert not graph.unexplained


def test_resuming_after_a_torn_tail_keeps_the_last_graph(built, tmp_path, monkeypatch) -> None:
    # The L1/N0 case: the last line lost only its newline in a crash; the reader counted
    # it as built, then the next build's writer cut it off, and the graph was gone.
    model, store, corpus = built
    monkeypatch.setenv("N2G_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "torn.jsonl"
    path.write_bytes(store.path.read_bytes().rstrip(b"\n"))
    last = read_store(path)
    assert run_build(model, [0], [EXCEPT, REPEAT, TOKEN, DEAD, BIGRAM], path, CONFIG,
                     BuildSource(model, CONFIG, corpus=corpus)) == []
    resumed = read_store(path)
    assert not resumed.corrupt and resumed.graphs.keys() == last.graphs.keys() == store.graphs.keys()
    assert path.read_bytes().endswith(b"\n")


def test_a_build_records_the_models_shape_in_a_new_store(built) -> None:
    model, store, _ = built
    assert store.header.shape == (model.n_layers, model.d_mlp)


def test_live_models_load_in_the_configs_numeric_type_and_build_in_it(tmp_path, monkeypatch) -> None:
    import builder.run.live as live
    from store.models import ModelSpec

    monkeypatch.setenv("N2G_CACHE", str(tmp_path / "cache"))
    asked = []

    def load_model(location, **options):  # load_model's own default where no dtype is given
        asked.append(options.get("dtype"))
        return dataclasses.replace(rule_model(), dtype=options.get("dtype") or BuildConfig.dtype)

    monkeypatch.setattr(live, "load_model", load_model)
    config = BuildConfig(scan=ScanConfig(window=16, top_k=4, random_windows=2, max_tokens=2_000),
                         dtype="bfloat16")
    graphs = live.LiveModels(config=config).build(ModelSpec(name="rule-model", location="rule-model"), 0,
                                                  [TOKEN], tmp_path / "rule-model.jsonl")
    assert asked == ["bfloat16"]
    assert [g.build["config"]["dtype"] for g in graphs] == ["bfloat16"]

"""Oracle tests of the ordinary-text stage (``builder.stages.ordinary``, issue 28): on the rule
model of ``tests/oracle.py``, graphs calibrated on build-split text must say what each path does
there, predict by their most specific path, and carry their held-out figures."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import pytest

from builder.config import OrdinaryConfig
from builder.stages.ordinary import ordinary_texts
from builder.corpus import heldout_mask, make_windows
from builder.run.runner import BuildSource, run_build
from store.jsonl import read_store
from tests.oracle import EXCEPT, HALF, TOKEN, rule_activations, rule_model, write_documents
from tests.test_oracle import CONFIG

ORDINARY = dataclasses.replace(CONFIG, scan=dataclasses.replace(CONFIG.scan, part="build"),
                               ordinary=OrdinaryConfig(enabled=True, windows=400))


@pytest.fixture(scope="module")
def ordinary(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("ordinary")
    mp = pytest.MonkeyPatch()
    mp.setenv("N2G_CACHE", str(root / "cache"))
    model = rule_model()
    corpus = write_documents(root / "corpus.jsonl")
    store = root / "store.jsonl"
    run_build(model, [0], [EXCEPT, TOKEN, HALF], store, ORDINARY, BuildSource(model, ORDINARY, corpus=corpus))
    yield model, read_store(store), corpus
    mp.undo()


def test_graphs_predict_by_their_most_specific_path_with_the_ordinary_mean_as_default(ordinary) -> None:
    _, store, _ = ordinary
    for neuron in (EXCEPT, TOKEN, HALF):
        graph = store.get(0, neuron)
        assert graph.matching.rule == "specific"
        # The neurons are silent on most tokens: the mean is small but not negative.
        assert 0.0 <= graph.matching.default < 0.2, graph.matching.default


def test_a_context_free_token_keeps_its_level(ordinary) -> None:
    _, store, _ = ordinary
    assert store.get(0, TOKEN).graph[(" the",)] == pytest.approx(1.0, abs=0.01)


def test_activating_tokens_are_those_the_calibrated_graph_expects_to_fire(ordinary) -> None:
    # The graph holds context-free paths for many tokens the neuron is a little above or below its
    # mean on; only " the" (TOKEN's rule) and " except" (in context) reach the activating level.
    _, store, _ = ordinary
    token, context = store.get(0, TOKEN), store.get(0, EXCEPT)
    assert len(token.graph) > 5 and list(token.activating_tokens) == [" the"]
    assert token.activating_tokens[" the"] == pytest.approx(1.0, abs=0.01)
    assert " except" in context.activating_tokens and context.activating_tokens[" except"] >= 0.5
    # A (token, previous) path's context weighs what it adds to the token's own mean: " everyone"
    # (measured by saliency) leads, the contexts the sample merely shifts a little follow far below.
    ranked = list(context.context_tokens.items())
    assert ranked[0] == (" everyone", pytest.approx(1.0)) and all(v < 0.5 for _, v in ranked[1:])


def test_a_token_that_fires_only_in_context_is_below_firing_alone_and_fires_in_its_context(ordinary) -> None:
    # " except" fires only with " everyone" in the 3 tokens before it. Alone, the graph predicts
    # the token's mean over ordinary text (some of its matches fire): graded, below firing.
    model, store, _ = ordinary
    graph = store.get(0, EXCEPT)
    predicted = {}
    for text in ("The cat ran except me.", "We saw everyone here except him."):
        tokens = [model.vocab[i] for i in model.encode(text)]
        at = tokens.index(" except")
        predicted[rule_activations(model, text, EXCEPT)[at] >= 0.5] = graph.predict(tokens)[at]
    assert 0.0 < predicted[False] < 0.5 and predicted[True] >= 0.9, predicted


def test_half_neurons_home_is_graded_between_its_two_levels(ordinary) -> None:
    # " home" fires at 0.8 after " went" anywhere before it, else at 0.45: a path for " home"
    # alone must hold what it does in ordinary text, between the two, not the top windows' 0.8.
    _, store, _ = ordinary
    graph = store.get(0, HALF)
    assert 0.45 - 0.01 <= graph.graph[(" home",)] <= 0.8 + 0.01


def test_held_out_fidelity_is_stored_for_the_graph_and_the_floor(ordinary) -> None:
    model, store, corpus = ordinary
    held = len(make_windows(model, corpus, ORDINARY.scan.window, part="heldout"))
    assert held > 0, "the synthetic corpus should have held-out documents"
    for neuron in (EXCEPT, TOKEN):
        fidelity = store.get(0, neuron).fidelity.heldout
        assert fidelity is not None
        for scores in (fidelity.n2g, fidelity.floor):
            assert scores.tokens.tokens == held * ORDINARY.scan.window
            assert 0 < scores.interval.tokens <= scores.tokens.tokens
    # The token neuron is its token: graph and floor both perfect on ordinary text.
    token = store.get(0, TOKEN).fidelity.heldout
    assert token.n2g.tokens.f1 == pytest.approx(1.0) and token.floor.tokens.f1 == pytest.approx(1.0)
    # The context neuron is not: the graph must beat the token lookup on precision.
    context = store.get(0, EXCEPT).fidelity.heldout
    assert context.n2g.tokens.precision > context.floor.tokens.precision or context.floor.tokens.precision is None


def test_calibration_never_reads_held_out_windows(ordinary, monkeypatch) -> None:
    from builder.stages import ordinary as stage

    model, _, corpus = ordinary
    mask = heldout_mask(model, corpus, ORDINARY.scan.window)
    picked = stage.sample_windows(len(mask), mask, np.zeros(0, np.int64), OrdinaryConfig(windows=10_000), 0)
    assert len(picked) == int((~mask).sum()) and not mask[picked].any()



def test_get_graphs_summary_shows_the_ordinary_text_figures_beside_the_floor(ordinary) -> None:
    from n2g_mcp.outputs import GraphSummary
    from n2g_mcp.text.summaries import graph_summary

    _, store, _ = ordinary
    graph = store.get(0, EXCEPT)
    summary = GraphSummary.of(graph)
    assert summary.fidelity_ordinary_text == graph.fidelity.heldout
    line = graph_summary(summary).splitlines()[-1]
    assert line.startswith("On ordinary text") and "floor" in line
    assert f"precision {graph.fidelity.heldout.n2g.tokens.precision:.2f}" in line


def test_an_ordinary_build_scans_the_build_split_only(ordinary) -> None:
    model, _, corpus = ordinary
    source = BuildSource(model, ORDINARY, corpus=corpus)
    held = {row.tobytes() for row in make_windows(model, corpus, ORDINARY.scan.window, part="heldout")}
    assert held and not any(row.tobytes() in held for row in source.windows)
    assert len(source.split.heldout_windows) == len(held) and not source.split.heldout.any()


def test_stored_graphs_are_scored_on_held_out_text_as_their_records_predict(ordinary) -> None:
    from builder.stages.ordinary import CorpusSplit, score_stored
    from n2g_mcp.cli.evaluate import heldout_table
    from store.metrics import score

    model, _, corpus = ordinary
    plain = run_build(model, [0], [EXCEPT, TOKEN], None, CONFIG, BuildSource(model, CONFIG, corpus=corpus))
    window = CONFIG.scan.window
    held_windows = make_windows(model, corpus, window, part="heldout")
    split = CorpusSplit(heldout_mask(model, corpus, window), held_windows)
    scored = {g.neuron: g for g in score_stored(model, plain, make_windows(model, corpus, window), split,
                                                np.zeros(0, np.int64), OrdinaryConfig(windows=400), 0)}
    assert scored[TOKEN].fidelity.heldout.n2g.tokens.f1 == pytest.approx(1.0)
    # The vectorised scoring is the record's own prediction (rule "all", default 0), token by token.
    graph = scored[EXCEPT]
    assert graph.matching.rule == "all"
    true = np.concatenate([model.bridge.activations(torch.tensor([[model.bos_id, *row]]))[0, 1:, EXCEPT].numpy()
                           for row in held_windows.tolist()])
    predicted = np.concatenate([graph.predict([model.vocab[t] for t in row]) for row in held_windows])
    expected = score(true / graph.max_activation, predicted)
    assert graph.fidelity.heldout.n2g.tokens == expected
    table = heldout_table(list(scored.values()), minimum=1)
    assert table.splitlines()[2].startswith("| 0 | 2 / 2 |")


def test_n2g_eval_heldout_writes_the_figures_into_the_store_and_tables_them(ordinary, tmp_path) -> None:
    from n2g_mcp.cli.evaluate import heldout_table, score_heldout
    from store.jsonl import write_store

    model, _, corpus = ordinary
    plain = run_build(model, [0], [EXCEPT, TOKEN], None, CONFIG, BuildSource(model, CONFIG, corpus=corpus))
    path = tmp_path / "plain.jsonl.gz"
    write_store(path, model.name, plain)
    scored = score_heldout(str(path), read_store(path), 6, model=model, corpus=corpus)
    assert all(g.fidelity.heldout is not None for g in scored)
    assert read_store(path).get(0, TOKEN).fidelity.heldout.n2g.tokens.f1 == pytest.approx(1.0)
    assert heldout_table(list(scored), minimum=1).splitlines()[2].startswith("| 0 | 2 / 2 |")


def test_n2g_eval_heldout_skips_layers_scored_already(ordinary, tmp_path, monkeypatch) -> None:
    from builder.stages import ordinary as stage
    from n2g_mcp.cli.evaluate import score_heldout
    from store.jsonl import write_store

    model, _, corpus = ordinary
    plain = run_build(model, [0], [TOKEN], None, CONFIG, BuildSource(model, CONFIG, corpus=corpus))
    path = tmp_path / "plain.jsonl"
    write_store(path, model.name, plain)
    score_heldout(str(path), read_store(path), 6, model=model, corpus=corpus)
    monkeypatch.setattr(stage, "layer_activations", lambda *a, **k: pytest.fail("layer 0 is scored already"))
    assert score_heldout(str(path), read_store(path), 6, model=model, corpus=corpus).get(0, TOKEN).fidelity.heldout


def test_each_graph_records_its_share_of_the_ordinary_text_pass(ordinary) -> None:
    _, store, _ = ordinary
    windows = ORDINARY.ordinary.windows  # the sample (fewer where the corpus has fewer) and held-out windows
    shares = {store.get(0, n).build["per_neuron"]["ordinary_tokens_forwarded"] for n in (EXCEPT, TOKEN, HALF)}
    assert len(shares) == 1 and 0 < shares.pop() <= (windows + 100) * (ORDINARY.scan.window + 1)


def test_reused_paths_are_calibrated_to_the_graph_a_full_ordinary_build_makes(ordinary, tmp_path,
                                                                              monkeypatch) -> None:
    """``n2g build --ordinary --paths-from``: a stored graph's fitted paths, calibrated and scored
    without pruning, measuring or fitting anything again, are the graph a whole ordinary build
    over the same windows makes."""
    from builder.stages import build as stages
    from n2g_mcp.cli.build import _reusable
    from store.jsonl import write_store

    model, _, corpus = ordinary
    whole = dataclasses.replace(ORDINARY, scan=CONFIG.scan)  # the whole corpus's windows, as the plain build's
    fresh = {g.neuron: g for g in run_build(model, [0], [EXCEPT, HALF], None, whole,
                                            BuildSource(model, whole, corpus=corpus))}
    plain = run_build(model, [0], [EXCEPT, HALF], None, CONFIG, BuildSource(model, CONFIG, corpus=corpus))
    other = plain[1].model_copy(update={"build": {**plain[1].build, "config": {
        **plain[1].build["config"], "prune": {**plain[1].build["config"]["prune"], "enabled": False}}}})
    path = tmp_path / "plain.jsonl"
    write_store(path, model.name, [plain[0], other])
    reuse = _reusable(path, model.name, whole, {0})
    assert set(reuse) == {(0, EXCEPT)}  # HALF's paths were made with other stage settings

    monkeypatch.setattr(stages, "fit", lambda *a, **k: pytest.fail("a reused graph is not fitted again"))
    graph = run_build(model, [0], [EXCEPT], None, whole, BuildSource(model, whole, corpus=corpus), reuse=reuse)[0]
    expected = fresh[EXCEPT]
    assert graph.graph.to_rows() == expected.graph.to_rows()
    assert graph.matching == expected.matching and graph.fidelity == expected.fidelity
    assert graph.build["paths_from"]["config"] == plain[0].build["config"]
    with pytest.raises(Exception, match="--ordinary"):
        run_build(model, [0], [EXCEPT], None, CONFIG, BuildSource(model, CONFIG, corpus=corpus), reuse=reuse)


def test_the_live_runtime_builds_by_the_atlas_method_and_keeps_the_layers_pass(tmp_path, monkeypatch) -> None:
    # build_graph's default: the served atlas's method; the pass over ordinary text runs once for
    # a layer's builds, and a 'fitted' build skips it.
    import builder.run.live as live
    import builder.run.runner as runner
    from store.models import ModelSpec

    monkeypatch.setenv("N2G_CACHE", str(tmp_path / "cache"))
    model = rule_model()
    monkeypatch.setattr(live, "load_model", lambda location, **options: model)
    passes = []

    def counted(*args, **kwargs):
        passes.append(args[1])
        return ordinary_texts(*args, **kwargs)

    monkeypatch.setattr(runner, "ordinary_texts", counted)
    runtime = live.LiveModels(config=dataclasses.replace(CONFIG, ordinary=OrdinaryConfig(windows=400)))
    spec, store = ModelSpec(name="rule-model", location="rule-model"), tmp_path / "rule-model.jsonl"
    (token,) = runtime.build(spec, 0, [TOKEN], store)
    (context,) = runtime.build(spec, 0, [EXCEPT], store)
    (fitted,) = runtime.build(spec, 0, [HALF], store, method="fitted")
    assert passes == [[0]]
    for graph in (token, context):
        assert graph.matching.rule == "specific" and graph.fidelity.heldout is not None
        assert graph.build["config"]["ordinary"]["enabled"] is True
    assert token.graph[(" the",)] == pytest.approx(1.0, abs=0.01)
    assert fitted.matching.rule != "specific" and fitted.fidelity.heldout is None
    assert fitted.build["config"]["ordinary"]["enabled"] is False

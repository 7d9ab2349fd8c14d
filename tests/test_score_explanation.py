"""score_explanation through the MCP client, on the real builder code over the rule model of
``tests/oracle.py``: its EXCEPT neuron fires (1.0) on ' except' when ' everyone' stands within
the three tokens before, and nowhere else. The test plays the agent: it predicts the scoring
set's tokens from a correct explanation (the rule), from a token-only one (' except' anywhere)
and from a wrong one (' the'), and the scores must order them, with the real graph's score
beside each."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
from mcp import Client

from builder.config import BuildConfig, EvalConfig, ScanConfig
from n2g_mcp.server import create_server
from store.scanfile import ScanFile, scan_filename
from store.scoring import INTERVALS, draw_set
from tests.client import error, ok
from tests.oracle import EXCEPT, HALF, TOKEN, rule_model, write_corpus

pytestmark = pytest.mark.anyio

CONFIG = BuildConfig(scan=ScanConfig(window=16, top_k=60, random_windows=10),
                     eval=EvalConfig(top=40, train=20, extra_train=20), neuron_batch=2)


@pytest.fixture(scope="module")
def oracle_stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stores directory with the rule model's scan file and the graphs of EXCEPT and TOKEN,
    built by the real builder over that scan."""
    from builder.corpus import make_windows
    from builder.run.runner import BuildSource, run_build
    from builder.stages.scan import export_scan_file, scan

    root = tmp_path_factory.mktemp("scoring")
    mp = pytest.MonkeyPatch()
    mp.setenv("N2G_CACHE", str(root / "cache"))
    model = rule_model()
    windows = make_windows(model, write_corpus(root / "corpus.txt"), CONFIG.scan.window, CONFIG.scan.max_tokens)
    stores = root / "stores"
    path = export_scan_file(model, windows, scan(model, windows, [0], CONFIG.scan, use_cache=False),
                            stores / scan_filename(model.name), CONFIG.scan)
    run_build(model, [0], [EXCEPT, TOKEN], stores / "rule-model.jsonl", CONFIG,
              BuildSource(model, CONFIG, scan_file=ScanFile(path)))
    mp.undo()
    return stores


def serve(stores: Path):
    from builder.run.live import LiveModels
    from n2g_mcp.live import BuilderBackend
    from n2g_mcp.registry import ServedModels

    models = LiveModels(config=CONFIG)
    spec = models.add(rule_model())
    return create_server(stores, live=BuilderBackend(models=models), models=ServedModels(default=spec, embedded=False))


@pytest.fixture
def server(oracle_stores: Path):
    return serve(oracle_stores)


def except_rule(tokens: list[str]) -> list[int]:
    """The correct explanation, as an agent would apply it: 10 on ' except' after ' everyone'."""
    return [10 if t == " except" and " everyone" in tokens[max(0, i - 3):i] else 0 for i, t in enumerate(tokens)]


def token_only(tokens: list[str]) -> dict[str, int]:
    """A half-right explanation ("fires on ' except'"), sent sparsely."""
    return {str(i): 10 for i, t in enumerate(tokens) if t == " except"}


def wrong_rule(tokens: list[str]) -> list[int]:
    """A wrong explanation: fires on ' the'."""
    return [10 if t == " the" else 0 for t in tokens]


async def scored(server, windows: list[list[str]], rule, set_id: str, explanation: str) -> dict:
    return await ok(server, "score_explanation", layer=0, neuron=EXCEPT, seed=0, set_id=set_id,
                    explanation=explanation, predictions=[rule(w) for w in windows])


def overall(out: dict) -> tuple[float, float]:
    first = out["scores"][0]
    assert first["kind"] == "all"
    return first["explanation"]["correlation"], first["graph"]["correlation"]


async def test_a_correct_explanation_scores_well_above_a_wrong_one_with_the_graph_beside_them(server):
    first = await ok(server, "score_explanation", layer=0, neuron=EXCEPT)
    assert first["has_graph"] and not first["scores"]
    windows = [w["tokens"] for w in first["windows"]]
    assert first["counts"]["top"] == 6 and first["counts"]["random"] == 10
    assert first["counts"]["out_of_context"] == 10
    assert len(windows) == sum(first["counts"].values())
    assert len(first["empty_intervals"]) == INTERVALS  # the neuron is 0 or 1: no window peaks between
    correct = await scored(server, windows, except_rule, first["set_id"], "' except' after ' everyone'")
    half = await scored(server, windows, token_only, first["set_id"], "' except'")
    wrong = await scored(server, windows, wrong_rule, first["set_id"], "' the'")
    (right, graph), (partly, _), (bad, _) = overall(correct), overall(half), overall(wrong)
    print(f"\ncorrelation on {len(windows)} windows: correct {right}, token only {partly}, wrong {bad}, "
          f"graph {graph}")
    assert right >= 0.95 and bad <= 0.1 and right - bad >= 0.8
    assert right > partly > bad
    assert graph >= 0.9  # the real builder recovers the rule
    by_kind = {k["kind"]: k for k in half["scores"]}
    # The token-only explanation is caught out where ' except' stands without ' everyone'.
    assert by_kind["out_of_context"]["explanation"]["precision"] < 1.0
    assert {k["kind"] for k in correct["scores"]} == {"all", "top_and_random", "top", "random", "out_of_context"}
    assert correct["window_kinds"] and not correct["windows"]
    assert wrong["worst"] and all("[[" in m["text"] for m in wrong["worst"])
    assert all(m["actual"] >= 0 and m["predicted"] in (0, 10) for m in wrong["worst"])


async def test_the_set_shows_tokens_never_activations_and_validates_against_its_schema(server):
    async with Client(server) as client:
        schema = {t.name: t for t in (await client.list_tools()).tools}["score_explanation"].output_schema
        result = await client.call_tool("score_explanation", {"layer": 0, "neuron": EXCEPT})
        assert not result.is_error, result.content[0].text
        jsonschema.validate(result.structured_content, schema)
        summary = result.content[0].text
    assert "W1: 0:" in summary and "predictions=[...]" in summary and "activation" not in str(
        result.structured_content["windows"])


async def test_the_same_seed_draws_the_same_set_on_a_fresh_server_and_another_seed_another(oracle_stores):
    a = await ok(serve(oracle_stores), "score_explanation", layer=0, neuron=EXCEPT, seed=3)
    b = await ok(serve(oracle_stores), "score_explanation", layer=0, neuron=EXCEPT, seed=3)
    c = await ok(serve(oracle_stores), "score_explanation", layer=0, neuron=EXCEPT, seed=4)
    assert a["set_id"] == b["set_id"] and a["windows"] == b["windows"]
    assert c["set_id"] != a["set_id"]


async def test_predictions_that_do_not_fit_the_set_are_refused_naming_the_window(server):
    first = await ok(server, "score_explanation", layer=0, neuron=EXCEPT)
    windows = [w["tokens"] for w in first["windows"]]
    short = [except_rule(w) for w in windows]
    short[2] = short[2][:-1]
    assert "window 3 has" in await error(server, "score_explanation", layer=0, neuron=EXCEPT, predictions=short)
    assert "predictions for a set of" in await error(server, "score_explanation", layer=0, neuron=EXCEPT,
                                                     predictions=short[:-1])
    outside = [{"99": 10}] + [except_rule(w) for w in windows[1:]]
    assert "not a token index" in await error(server, "score_explanation", layer=0, neuron=EXCEPT,
                                              predictions=outside)
    assert "not the set seed 0 draws" in await error(server, "score_explanation", layer=0, neuron=EXCEPT,
                                                     set_id="000000000000", predictions=short)
    assert "11" in await error(server, "score_explanation", layer=0, neuron=EXCEPT,
                               predictions=[[11] * len(w) for w in windows])  # the schema's 0-10


async def test_a_neuron_without_a_graph_is_scored_alone(server):
    first = await ok(server, "score_explanation", layer=0, neuron=HALF)
    out = await ok(server, "score_explanation", layer=0, neuron=HALF, set_id=first["set_id"],
                   predictions=[[0] * len(w["tokens"]) for w in first["windows"]])
    assert out["has_graph"] is False and out["scores"][0]["graph"] is None
    assert out["scores"][0]["explanation"]["correlation"] is None  # constant predictions


def test_interval_windows_peak_inside_their_interval_and_the_graphs_windows_are_left_out(oracle_stores):
    from builder.forward import neuron_activations

    model = rule_model()
    scan_file = ScanFile(oracle_stores / scan_filename(model.name))

    def measure(rows):
        return neuron_activations(model, 0, rows, [HALF] * len(rows))

    top = scan_file.top(0, HALF)
    built_on = [w.window for w in top[:10]]
    drawn = draw_set(scan_file, 0, HALF, 0, measure, exclude=built_on)
    intervals = [w for w in drawn.windows if w.kind == "interval"]
    assert intervals, "HALF fires at 0.45 and 0.8 of its max: two intervals hold windows"
    for w in intervals:
        low, high = w.interval
        peak = max(measure([scan_file.windows[w.window].tolist()])[0]) / drawn.max_activation
        assert low <= peak < high
    assert not {w.window for w in drawn.windows if w.kind == "top"} & set(built_on)
    assert draw_set(scan_file, 0, HALF, 0, measure, exclude=built_on).id == drawn.id

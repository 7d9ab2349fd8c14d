"""The whole-model tools through the MCP client, on the real builder code over a rule-defined
model: top_activations from a scan file for a neuron with no graph, find_neurons,
find_induction_neurons, ablate_neurons and test_hypothesis, and their explaining errors."""

from __future__ import annotations

import threading
from pathlib import Path

import anyio
import jsonschema
import pytest
from mcp import Client

from n2g_mcp.server import create_server
from store.jsonl import write_store
from store.scanfile import ScanFile, scan_filename
from store.probes import CONTROL_DRAWS
from tests.client import call, error, ok
from tests.graphs import make_graph
from tests.induction_oracle import (
    D_MLP,
    EVEN,
    INDUCT,
    INDUCT_LAYER,
    PROBE_CALLS,
    induction_model,
    oracle_backend,
    write_oracle_scan,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def oracle_stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stores directory holding only the oracle model's whole-model scan file."""
    stores = tmp_path_factory.mktemp("stores")
    write_oracle_scan(stores)
    return stores


@pytest.fixture
def server(oracle_stores: Path):
    backend, models = oracle_backend()
    return create_server(oracle_stores, live=backend, models=models)


def test_the_scan_file_round_trips_the_top_windows(oracle_stores: Path):
    scan_file = ScanFile(oracle_stores / scan_filename("induction-oracle"))
    model = induction_model()
    top = scan_file.top(0, EVEN)
    assert len(top) == 6 and all(w.tokens[w.pivot] in model.vocab for w in top)
    # EVEN fires 0.9 on even-numbered words, so its top windows peak at 0.9 on such a word.
    assert all(w.activation == pytest.approx(0.9, abs=1e-3) for w in top)
    assert all((model.vocab.index(w.tokens[w.pivot]) - 1) % 2 == 0 for w in top)
    assert scan_file.stats(0, EVEN).density == pytest.approx(0.5, abs=0.1)


async def test_every_probe_tools_output_validates_against_its_published_schema(server):
    async with Client(server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        for name, args in {**PROBE_CALLS, "top_activations": {"layer": 1, "neuron": INDUCT}}.items():
            result = await client.call_tool(name, args)
            assert not result.is_error, (name, result.content[0].text)
            jsonschema.validate(result.structured_content, tools[name].output_schema)


async def test_top_activations_answers_for_a_neuron_without_a_graph(server):
    out = await ok(server, "top_activations", layer=INDUCT_LAYER, neuron=INDUCT, limit=3)
    assert out["source"] == "scan" and out["total"] == 6 and len(out["examples"]) == 3
    assert out["stats"]["density"] > 0 and out["next_cursor"]
    assert all("[[" in e["text"] for e in out["examples"])


async def test_find_neurons_ranks_the_neuron_firing_at_the_token(server):
    out = await ok(server, "find_neurons", text="abd abc aaa abd", limit=3)  # " abd" is odd: not EVEN
    first = out["results"][0]
    assert (first["layer"], first["neuron"]) == (INDUCT_LAYER, INDUCT)
    assert out["token"] == " abd" and out["position"] == 3 and first["has_graph"] is False
    out = await ok(server, "find_neurons", text="aaa abc abd", token=" aaa", layers=[0], limit=1)
    assert (out["results"][0]["neuron"], out["position"]) == (EVEN, 0)


async def test_probe_hits_report_the_graphs_stored_for_them(tmp_path: Path):
    """The probes' indices come from numpy (argsort): the stored graphs must still be found."""
    write_oracle_scan(tmp_path)
    model = induction_model().name
    graphs = [make_graph([((" abd",), 1.0)], layer=INDUCT_LAYER, neuron=INDUCT, model=model, f1=0.75),
              make_graph([((" aaa",), 1.0)], layer=0, neuron=EVEN, model=model, f1=0.5)]
    write_store(tmp_path / "oracle.jsonl", model, graphs, shape=(INDUCT_LAYER + 1, D_MLP))
    backend, models = oracle_backend()
    server = create_server(tmp_path, live=backend, models=models)
    out = await ok(server, "find_neurons", text="abd abc aaa abd", limit=D_MLP * (INDUCT_LAYER + 1))
    stored = {(r["layer"], r["neuron"]): r for r in out["results"] if r["has_graph"]}
    assert set(stored) == {(INDUCT_LAYER, INDUCT), (0, EVEN)}
    assert stored[(INDUCT_LAYER, INDUCT)]["activating_tokens"] == [" abd"]
    assert stored[(INDUCT_LAYER, INDUCT)]["f1"] == 0.75
    out = await ok(server, "find_induction_neurons", sequences=6, length=20, limit=D_MLP * (INDUCT_LAYER + 1))
    assert {(r["layer"], r["neuron"]) for r in out["results"] if r["has_graph"]} == set(stored)


async def test_find_induction_neurons_puts_the_planted_neuron_first_and_reports_the_copy_losses(server):
    out = await ok(server, "find_induction_neurons", sequences=6, length=20, limit=5)
    best = out["results"][0]
    assert best["id"] == f"L{INDUCT_LAYER}/N{INDUCT}" and best["score"] > 0.9 and best["cohens_d"] > 3
    assert best["second"] == 1.0 and best["firing_difference"] == best["second"] - best["first"]
    assert out["threshold_source"] == "corpus scan max" and out["seeds"] == [0, 1, 2]
    assert out["loss_second_copy"] < 0.25 * out["loss_first_copy"]
    again = await ok(server, "find_induction_neurons", sequences=6, length=20, limit=5)
    assert [r["id"] for r in again["results"]] == [r["id"] for r in out["results"]]
    other = await ok(server, "find_induction_neurons", sequences=6, length=20, limit=5, seed=4, runs=1)
    assert other["seeds"] == [4] and other["loss_first_copy"] != out["loss_first_copy"]


async def test_ablating_the_induction_neuron_beats_its_control(server):
    out = await ok(server, "ablate_neurons", neurons=[f"L{INDUCT_LAYER}/N{INDUCT}"])
    assert out["delta"] > 3 and abs(out["control_delta"]) < 1e-3
    assert out["control_draws"] == len(out["control_deltas"]) == CONTROL_DRAWS and out["rank_among_controls"] == 1
    assert out["measured_on"].startswith("repeated")
    assert out["loss_clean"] < 0.5 * out["loss_first_copy"] and out["seed"] == 0
    one = await ok(server, "ablate_neurons", neurons=f"L{INDUCT_LAYER}/N{INDUCT}", control=False)
    assert one["control_delta"] is None and one["each"] == []


async def test_ablate_each_gives_every_neurons_own_delta(server):
    out = await ok(server, "ablate_neurons", neurons=[f"L{INDUCT_LAYER}/N{INDUCT}", "L1/N0", "L0/N2"], each=True)
    assert [e["id"] for e in out["each"]][0] == f"L{INDUCT_LAYER}/N{INDUCT}"
    assert out["each"][0]["delta"] > 3 and all(abs(e["delta"]) < 1e-3 for e in out["each"][1:])


async def test_the_ablation_text_ranks_it_among_its_controls_without_a_ratio(server):
    result = await call(server, "ablate_neurons", neurons=["L1/N0"], controls=8)
    said = result.content[0].text
    assert "Controls: 8 draws of 1 random neuron of the same layers: mean delta" in said
    assert "ranks 9th of 9: 8 draws of random neurons moved the loss as much or more" in said
    assert "x the control" not in said


async def test_ablate_each_flags_candidates_that_carry_nothing_alone(server):
    """Issue 27: the top-ranked candidate alone moved the loss by -0.021 while the 12th carried +0.523."""
    result = await call(server, "ablate_neurons", neurons=["L1/N0", "L0/N2", f"L{INDUCT_LAYER}/N{INDUCT}"],
                        each=True)
    out, said = result.structured_content, result.content[0].text
    assert [e["given"] for e in out["each"]][0] == 3 and out["no_effect"] == ["L0/N2", "L1/N0"]
    assert out["neurons"] == ["L1/N0", "L0/N2", f"L{INDUCT_LAYER}/N{INDUCT}"]  # the order given
    assert (f"Nil or negative alone (<= 0.005 nats): L1/N0 (given 1st) +0.000, L0/N2 (given 2nd) +0.000; the "
            f"largest own delta is L{INDUCT_LAYER}/N{INDUCT}'s (given 3rd)") in said


async def first_progress(server, tool: str, **args) -> str:
    """The first progress message a call reports."""
    messages: list[str] = []

    async def progress(done, total, message):
        messages.append(message)

    async with Client(server) as client:
        result = await client.call_tool(tool, args, progress_callback=progress)
    assert not result.is_error, result.content[0].text
    return messages[0]


@pytest.mark.parametrize(("args", "forwarded"), [
    # the probe: intact, ablated, 8 controls, 2 alone; 16 rows of 2 x 40 tokens and BOS
    ({"each": True}, f"{2 + CONTROL_DRAWS + 2} runs, {(2 + CONTROL_DRAWS + 2) * 16 * 81:,} tokens"),
    # a text, before the model has read it: ceil(15 characters / 4) tokens and BOS, 5 runs
    ({"text": "aaa aab aac aad", "controls": 3}, "5 runs, ~25 tokens (from the text's length; counted once read)"),
])
async def test_an_ablations_first_progress_message_says_how_long_it_should_take(server, args, forwarded):
    """Issue 27: each=true ran 258 s with no estimate given up front."""
    first = await first_progress(server, "ablate_neurons", neurons=["L1/N0", "L1/N3"], **args)
    assert first.startswith(f"ablate_neurons: {forwarded} forwarded: expect about")
    assert "assumed until this server has timed the model" in first


async def test_once_the_model_is_timed_estimates_use_its_measured_rate(server):
    await ok(server, "ablate_neurons", neurons=["L1/N0"], controls=1)
    for tool, args, forwarded in [
            ("ablate_neurons", {"neurons": ["L1/N0"], "controls": 1}, "3 runs, 3,888 tokens"),
            ("find_induction_neurons", {"sequences": 6, "length": 20}, f"3 runs, {3 * 6 * 41:,} tokens")]:
        first = await first_progress(server, tool, **args)
        assert first.startswith(f"{tool}: {forwarded} forwarded: expect about ") and "this model last ran here" in first


async def test_ablate_each_is_refused_past_its_cap(server, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("n2g_mcp.probe_queries.MAX_EACH", 2)  # the oracle has too few neurons for 33
    message = await error(server, "ablate_neurons", neurons=["L0/N0", "L0/N1", "L1/N3"], each=True)
    assert "at most 2" in message and "each=false" in message


async def test_steer_neurons_changes_the_text_and_repeats_exactly(server):
    args = {"neurons": [f"L{INDUCT_LAYER}/N{INDUCT}"], "prompt": "aaa abb aac aaa", "scale": 0.0,
            "max_new_tokens": 6}
    out = await ok(server, "steer_neurons", **args)
    assert out["clean_text"] == " abb aac aaa abb aac aaa" and out["steered_text"] == ""
    assert out["first_difference"] == 0 and out["values"] == [0.0] and out["prompt_tokens"] == 4
    assert out["changes"][0]["clean_next"] == " abb"
    assert await ok(server, "steer_neurons", **args) == out
    idle = await ok(server, "steer_neurons", **{**args, "neurons": ["L1/N0"], "scale": 1})
    assert idle["steered_text"] == idle["clean_text"] and idle["first_difference"] is None
    assert idle["values"][0] > 0  # 1 x the neuron's corpus max from the scan


async def test_test_hypothesis_scores_a_true_claim_highly(server):
    # EVEN fires on words with an even index: those whose last letter is a, c, e, g or i.
    out = await ok(server, "test_hypothesis", layer=0, neuron=EVEN, pattern=r" [a-j]{2}[acegi]\b")
    assert out["overall"]["f1"] == 1.0
    assert {s["set"] for s in out["sets"]} == {"top", "random", "matches"}


@pytest.mark.parametrize("tool, args, words", [
    ("ablate_neurons", {"neurons": ["L1/N99"]}, "out of range"),
    ("ablate_neurons", {"neurons": ["neuron 3"]}, "L17/N938"),
    ("ablate_neurons", {"neurons": [f"L0/N{i % 6}" for i in range(257)]}, "257"),
    ("find_neurons", {"text": ""}, "empty"),
    ("find_neurons", {"text": "abc " * 6000}, "over the limit"),
    ("find_neurons", {"text": "abc abd", "token": " zzz"}, "no token"),
    ("find_neurons", {"text": "abc abd", "layers": [7]}, "out of range"),
    ("find_induction_neurons", {"layers": [2]}, "out of range"),
    ("steer_neurons", {"neurons": ["neuron 3"], "prompt": "aaa"}, "L17/N938"),
    ("steer_neurons", {"neurons": ["L1/N99"], "prompt": "aaa"}, "out of range"),
    ("steer_neurons", {"neurons": ["L1/N3"] * 33, "prompt": "aaa"}, "32"),
    ("steer_neurons", {"neurons": ["L1/N3"], "prompt": "   "}, "empty"),
    ("steer_neurons", {"neurons": ["L1/N3"], "prompt": "aaa " * 300}, "at most 256"),
    ("steer_neurons", {"neurons": ["L1/N3"], "prompt": "aaa", "max_new_tokens": 65}, "max_new_tokens"),
    ("steer_neurons", {"neurons": ["L1/N3"], "prompt": "aaa", "scale": 50}, "scale"),
    ("test_hypothesis", {"layer": 0, "neuron": 1, "pattern": "("}, "does not compile"),
    ("test_hypothesis", {"layer": 0, "neuron": 1, "pattern": "zebra"}, "claims no token"),
])
async def test_bad_input_gets_an_explaining_error_and_the_server_carries_on(server, tool, args, words):
    message = await error(server, tool, **args)
    assert words in message
    assert (await ok(server, "top_activations", layer=0, neuron=0))["total"] == 6


@pytest.mark.parametrize("tool, args", [
    ("find_neurons", {"text": "abc abd"}),
    ("find_induction_neurons", {}),
    ("ablate_neurons", {"neurons": ["L0/N1"]}),
    ("steer_neurons", {"neurons": ["L0/N1"], "prompt": "aaa abb"}),
    ("test_hypothesis", {"layer": 0, "neuron": 1, "pattern": "a"}),
    ("build_graph", {"layer": 0, "neuron": 1}),
    ("search_graphs", {}),
])
async def test_an_unknown_model_gets_one_wording_from_every_tool(server, tool, args):
    """Not `n2g scan --model gpt2`, nor `pass layers`: which models this server runs, and how its
    operator adds one."""
    message = await error(server, tool, **args, model="gpt2")
    assert ("Unknown model or store 'gpt2': this server does not run it and no store holds it. "
            "It runs induction-oracle (default induction-oracle)") in message
    assert "--model NAME=PATH" in message and "n2g scan" not in message


@pytest.mark.parametrize("tool, args, words, wrong", [
    ("find_neurons", {"text": "abc " * 5000}, "find_neurons runs at most 4096", "compare"),
    ("find_neurons", {"text": "a" * 20_001}, "the part that ends at the token", "predict_activations"),
    ("ablate_neurons", {"neurons": ["L0/N1"], "text": "a" * 20_001}, "call ablate_neurons once per part",
     "predict_activations"),
    ("ablate_neurons", {"neurons": ["L0/N1"], "text": "abc " * 5000}, "ablate_neurons runs at most 4096", "compare"),
    ("steer_neurons", {"neurons": ["L0/N1"], "prompt": "a" * 20_001}, "prompt of at most 256 tokens",
     "predict_activations"),
])
async def test_a_text_too_long_is_refused_in_the_tools_own_limits(server, tool, args, words, wrong):
    message = await error(server, tool, **args)
    assert words in message and wrong not in message


async def test_a_seed_past_the_schemas_limit_is_refused(server):
    for tool, args in (("ablate_neurons", {"neurons": ["L0/N1"]}), ("find_induction_neurons", {})):
        assert "less than or equal to 4294967295" in await error(server, tool, **args, seed=10**30)


async def test_the_scan_tools_explain_a_missing_scan(tmp_path: Path):
    backend, models = oracle_backend()
    bare = create_server(tmp_path, live=backend, models=models)
    assert "n2g scan" in await error(bare, "find_neurons", text="abc abd")
    assert "n2g scan" in await error(bare, "steer_neurons", neurons=["L1/N3"], prompt="aaa abb")


async def test_a_cancelled_ablation_stops_within_a_pass_and_frees_the_model(oracle_stores: Path):
    """A client that gives up stops the model work at the next pass; meanwhile an argument error
    is answered without waiting for the model."""
    from builder.run.live import LiveModels
    from n2g_mcp.live import BuilderBackend
    from n2g_mcp.registry import ServedModels

    model = induction_model()
    passes, entered, release = [], threading.Event(), threading.Event()
    forward = model.bridge.run_with_hooks

    def held(ids, fwd_hooks=(), **kwargs):  # every pass waits for the test to release it
        passes.append(len(fwd_hooks))
        entered.set()
        release.wait(10)
        return forward(ids, fwd_hooks=fwd_hooks, **kwargs)

    model.bridge.run_with_hooks = held
    models = LiveModels()
    spec = models.add(model)
    cancels: list[threading.Event] = []
    ablate = models.ablate

    def spy(*args, **kwargs):
        cancels.append(kwargs["cancel"])
        return ablate(*args, **kwargs)

    models.ablate = spy
    server = create_server(oracle_stores, live=BuilderBackend(models=models),
                           models=ServedModels(default=spec, embedded=False))
    neurons = [f"L{INDUCT_LAYER}/N{INDUCT}", "L1/N0", "L0/N2"]  # each=true: 6 passes in all
    async with Client(server) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "ablate_neurons", {"neurons": neurons, "each": True})
            assert await anyio.to_thread.run_sync(entered.wait, 10)
            tg.cancel_scope.cancel()
        assert await anyio.to_thread.run_sync(cancels[0].wait, 10)
        with anyio.fail_after(10):  # the first pass still holds the model
            refused = await client.call_tool("ablate_neurons", {"neurons": neurons, "text": "abc"})
        assert refused.is_error and "at least two tokens" in refused.content[0].text
        release.set()
        again = await client.call_tool("ablate_neurons", {"neurons": neurons[:1], "control": False})
    assert not again.is_error
    # The cancelled call's first pass, then the new call's one pass (its intact and ablated runs share it).
    assert len(passes) == 1 + 1

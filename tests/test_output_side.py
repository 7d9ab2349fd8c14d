"""What neurons write (issue 31): the output-token file, its computation on tiny real models, the
measured effects, and the tools (find_by_output, output_effects, the output lists of get_graph
and top_activations) through the MCP client over the fake live model.

The tiny models are Llama and Gemma 3 checkpoints made from transformers' config classes (no
download; ``tests/test_architectures.py``), with their norms' weights set away from 1 so that a
wrong handling of the norm shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from mcp import Client

from n2g_mcp.server import create_server
from store.errors import ScanFileError
from store.logitfile import LOGITS_VERSION, LogitFile, logits_filename, write_logit_file
from store.render import display_token
from tests.client import error, ok
from tests.fake_files import D_MLP, K, N_LAYERS, VOCAB, rule_logits, write_rule_files
from tests.fakes import MAX_ACTIVATION, FakeLiveBackend

DATA = Path(__file__).parent / "data"


@pytest.fixture
def fake() -> FakeLiveBackend:
    return FakeLiveBackend()


@pytest.fixture
def server(stores_dir: Path, fake: FakeLiveBackend):
    write_rule_files(stores_dir, fake)
    return create_server(stores_dir, live=fake, models=fake.served())


# --------------------------------------------------------------------- the file
def test_the_logit_file_finds_exactly_the_neurons_whose_lists_hold_a_token(tmp_path: Path, fake: FakeLiveBackend):
    arrays = rule_logits(fake)
    f = LogitFile(write_logit_file(tmp_path / "m.logits.npz", model="test-model", vocab=VOCAB,
                                   path_note="rule", excluded=1, **arrays))
    dog = VOCAB.index(" dog")
    for side in ("promoted", "suppressed"):
        ids = arrays[f"{side}_id"]
        expected = sorted((layer, n, r) for layer, n, r in zip(*np.nonzero(ids == dog), strict=True))
        assert sorted((layer, n, r) for layer, n, r, _ in f.neurons_with([dog], side)) == expected
        assert expected
    assert f.token_ids("DOG ") == [dog] and f.token_ids("DOG", exact=True) == []
    assert [t.token for t in f.output(2, 1).promoted] == [" dog", " tree", " house"]
    assert f.output(2, 1).promoted[0].value == 4.0 and f.shape == (N_LAYERS, D_MLP) and f.top_k == K


def test_a_newer_logit_file_is_refused_with_the_command_that_rewrites_it(tmp_path: Path, fake: FakeLiveBackend):
    path = write_logit_file(tmp_path / "m.logits.npz", model="m", vocab=VOCAB, path_note="rule", excluded=0,
                            **rule_logits(fake))
    with np.load(path) as z:
        arrays = dict(z)
    meta = json.loads(bytes(arrays["meta"]).decode()) | {"version": LOGITS_VERSION + 1}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez_compressed(path, **arrays)
    with pytest.raises(ScanFileError, match="newer than this n2g-mcp reads.*n2g logits"):
        LogitFile(path)


def test_the_golden_version_1_logit_file_still_loads():
    f = LogitFile(DATA / "logits-v1.npz")
    assert (f.model, f.shape, f.top_k, f.meta["version"]) == ("test-model", (N_LAYERS, D_MLP), K, 1)
    assert [t.token for t in f.output(0, 1).promoted][0] == FakeLiveBackend.rule(0, 1)[0]


# --------------------------------------------------------------------- tiny real models
@pytest.fixture(scope="module", params=["llama", "gemma3"])
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A tiny random checkpoint of the family, loaded, with its norms' scales set away from 1."""
    from builder.models import load_model
    from tests.test_architectures import FAMILIES, write_corpus

    root = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    FAMILIES[request.param][0](root / "model", write_corpus(root / "corpus.txt", sentences=200))
    model = load_model(str(root / "model"), device="cpu")
    gen = torch.Generator().manual_seed(1)
    bridge = model.bridge
    norms = [bridge.ln_final] + [b.ln2_post for b in bridge.blocks if hasattr(b, "ln2_post")]
    with torch.no_grad():
        for norm in norms:  # Llama multiplies by w, Gemma by 1 + w: both become 0.5-2
            weight = norm.original_component.weight
            offset = 1.0 if request.param == "gemma3" else 0.0
            weight.copy_(torch.rand(weight.shape, generator=gen) * 1.5 + 0.5 - offset)
    return request.param, root, model


def _scale(family: str, norm) -> torch.Tensor:
    """A norm's elementwise scale by the family's own convention (not by the code under test)."""
    weight = norm.original_component.weight.detach()
    return 1 + weight if family == "gemma3" else weight


def _point_at(family: str, model, layer: int, neuron: int, token: int, sign: float = 1.0) -> None:
    """Set the neuron's output row so that, through the norms' scales, it is the token's unembedding."""
    bridge = model.bridge
    block = bridge.blocks[layer]
    row = bridge.W_U[:, token].detach() / _scale(family, bridge.ln_final)
    if hasattr(block, "ln2_post"):
        row = row / _scale(family, block.ln2_post)
    with torch.no_grad():
        block.mlp.out.original_component.weight[:, neuron] = sign * row


def test_a_neuron_whose_output_row_is_a_tokens_unembedding_promotes_that_token_first(tiny):
    from builder.stages.logits import direct_logits, logit_tables

    family, _, model = tiny
    cat, road = model.encode(" cat")[0], model.encode(" road")[0]
    _point_at(family, model, 1, 5, cat)
    _point_at(family, model, 0, 7, road, sign=-1.0)
    tables, _ = logit_tables(model, k=4)
    assert model.vocab[tables["promoted_id"][1, 5, 0]] == " cat"
    assert model.vocab[tables["suppressed_id"][0, 7, 0]] == " road"
    assert tables["promoted_value"][1, 5, 0] > 0 > tables["suppressed_value"][0, 7, 0]
    row = direct_logits(model, 1, [5])[0]  # (d_vocab,)
    assert int(row.argmax()) == cat


def test_raising_a_last_layer_neuron_makes_its_direct_path_token_likelier(tiny):
    from builder.probes.output import output_effects

    family, _, model = tiny
    cat = model.encode(" cat")[0]
    _point_at(family, model, 1, 5, cat)
    windows = [model.encode(text) for text in ("the dog sat on the mat and", "everyone went home in the rain")]
    r = output_effects(model, 1, 5, windows, raised=200.0, top=5)
    assert r.static.promoted[0].token == " cat" and r.windows == 2
    assert r.raised.rose[0].token == " cat" and r.raised.rose[0].prob_edited > r.raised.rose[0].prob_clean
    # Nothing but the norms stand between the last layer and the logits. Their per-token scales
    # (the residual, and Gemma's MLP output, grow with the edit) are what the direct path leaves
    # out, and what keeps the correlation below 1 (0.88 on Llama, 0.69 on Gemma here).
    assert r.raised.direct_correlation > 0.5 and r.raised.direct_overlap >= 1
    assert r.raised.value == 200.0 and r.zeroed.value == 0.0


def test_n2g_logits_writes_the_file_the_server_reads(tiny, tmp_path: Path, capsys):
    from n2g_mcp.cli import main

    family, root, _ = tiny
    out = tmp_path / "tiny.logits.npz"
    assert main(["logits", "--model", str(root / "model"), "--name", f"tiny-{family}", "--out", str(out),
                 "--top-k", "4", "--device", "cpu"]) == 0
    f = LogitFile(out)
    assert (f.model, f.shape, f.top_k) == (f"tiny-{family}", (2, 64), 4)
    assert "special tokens excluded" in f.path_note and "wrote" in capsys.readouterr().out


# --------------------------------------------------------------------- the tools
pytestmark_anyio = pytest.mark.anyio


@pytestmark_anyio
async def test_find_by_output_finds_the_neurons_that_promote_a_token(server, fake: FakeLiveBackend):
    out = await ok(server, "find_by_output", promotes=" Dog", limit=100)
    ids = rule_logits(fake)["promoted_id"]
    expected = {(int(layer), int(n)): int(rank) for layer, n, rank in zip(*np.nonzero(ids == VOCAB.index(" dog")),
                                                                              strict=True)}
    assert {(h["layer"], h["neuron"]): h["ranks"][0] for h in out["results"]} == expected
    assert out["total"] == len(expected) and all(h["matched"] == [" dog"] for h in out["results"])
    # Strongest first: rank 0 of the deepest layer (value 2 + 3, at a max activation of 4).
    assert out["ranked_by"] == "at_max" and out["results"][0]["at_max"] == (2.0 + 3) * MAX_ACTIVATION
    assert out["results"][0]["layer"] == 3 and out["results"][0]["ranks"] == [0]
    at_max = [h["at_max"] for h in out["results"]]
    assert at_max == sorted(at_max, reverse=True)
    apple = fake.rule(0, 1)[1]
    both = await ok(server, "find_by_output", promotes=[" dog"], suppresses=[apple], layer=0)
    down = rule_logits(fake)["suppressed_id"]
    assert {h["neuron"] for h in both["results"]} == {
        n for n in range(D_MLP) if VOCAB.index(" dog") in ids[0, n] and VOCAB.index(apple) in down[0, n]}
    assert "L0/N1" in {h["id"] for h in both["results"]} and all(h["layer"] == 0 for h in both["results"])
    first = next(h for h in out["results"] if h["id"] == "L0/N1")
    assert first["has_graph"] and first["activating_tokens"][0] == " dog"


@pytestmark_anyio
async def test_find_by_output_explains_a_word_that_is_not_a_token_and_a_missing_file(server, stores_dir: Path,
                                                                                     fake: FakeLiveBackend):
    assert "case- and space-insensitively" in await error(server, "find_by_output", promotes=[" zebra"])
    assert "spelled exactly" in await error(server, "find_by_output", promotes=[" Dog"], exact=True)
    assert "pass promotes or suppresses" in await error(server, "find_by_output")
    (stores_dir / logits_filename("test-model")).unlink()
    assert "n2g logits --model test-model" in await error(server, "find_by_output", promotes=[" dog"])


@pytestmark_anyio
async def test_a_file_of_another_shape_serves_neither_search_nor_graphs(server, stores_dir: Path,
                                                                         fake: FakeLiveBackend):
    arrays = {k: v[:, :-1] for k, v in rule_logits(fake).items()}  # one neuron a layer short
    write_logit_file(stores_dir / logits_filename("test-model"), model="test-model", vocab=VOCAB,
                     path_note="rule", excluded=1, **arrays)
    assert "not of test-model's" in await error(server, "find_by_output", promotes=[" dog"])
    graph = await ok(server, "get_graph", layer=0, neuron=1)
    assert graph["output"] is None


@pytestmark_anyio
async def test_get_graph_and_top_activations_say_what_the_neuron_writes(server, fake: FakeLiveBackend):
    act, ctx = fake.rule(0, 1)
    graph = await ok(server, "get_graph", layer=0, neuron=1)
    top = await ok(server, "top_activations", layer=3, neuron=9)
    assert graph["output"]["promoted"][0] == {"token": act, "value": 2.0}
    assert graph["output"]["suppressed"][0]["token"] == ctx and "rule" in graph["output"]["path"]
    assert top["output"]["promoted"][0]["token"] == fake.rule(3, 9)[0]


@pytestmark_anyio
async def test_the_drawing_names_what_the_neuron_writes(server, fake: FakeLiveBackend, stores_dir: Path):
    act, ctx = fake.rule(0, 1)
    dot = (await ok(server, "render_graph_dot", layer=0, neuron=1))["dot"]
    assert f"promotes {display_token(act)}" in dot and f"suppresses {display_token(ctx)}" in dot
    (stores_dir / logits_filename("test-model")).unlink()
    assert "writes" not in (await ok(server, "render_graph_dot", layer=0, neuron=1))["dot"]


@pytestmark_anyio
async def test_output_effects_measures_the_neuron_on_its_top_windows(server, fake: FakeLiveBackend):
    out = await ok(server, "output_effects", layer=2, neuron=3, windows=4, scale=1.5)
    assert out["windows"] == 4 and out["raised"]["value"] == 1.5 * MAX_ACTIVATION
    assert out["static"]["promoted"][0]["token"] == fake.rule(2, 3)[0] and "output_effects" in fake.calls
    assert out["id"] == "L2/N3" and out["max_activation"] == MAX_ACTIVATION


@pytestmark_anyio
async def test_the_new_tools_answers_validate_against_their_published_schemas(server):
    calls = {"find_by_output": {"promotes": [" dog"]}, "output_effects": {"layer": 0, "neuron": 1},
             "export_neuron": {"layer": 0, "neuron": 1}, "get_graph": {"layer": 0, "neuron": 1},
             "top_activations": {"layer": 0, "neuron": 1}}
    async with Client(server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        for name, args in calls.items():
            result = await client.call_tool(name, args)
            assert not result.is_error, (name, result.content[0].text)
            jsonschema.validate(result.structured_content, tools[name].output_schema)
        assert all(tools[name].annotations.read_only_hint for name in calls)

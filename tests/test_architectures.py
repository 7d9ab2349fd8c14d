"""Four model families from local folders, end to end: ``n2g build`` then the MCP server.

Tiny randomly initialised GPT-2, GPT-NeoX, Llama and Gemma 3 checkpoints are made from
transformers' config classes and saved to a temporary folder (no download), each with a
tokenizer trained on a small synthetic corpus in its family's conventions (GPT-2's one
``<|endoftext|>``; Llama's ``<s>``; Gemma's ``<pad> <eos> <bos> <unk> <mask>`` then unused special
tokens, and ``▁`` for spaces). Each is built through the ``n2g`` entry point under a served name,
then served with ``--model NAME=PATH``'s spec: listed with its shape, its graphs read, and its
prediction compared with the real neuron through the SDK's in-memory client.

The server's ``build_graph`` is not run here: without a scan file it scans the embedded corpus
(724k tokens), minutes for four models; ``test_server.py`` covers it on a double.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from mcp import Client

from builder.forward import run_layers
from builder.models import load_model
from n2g_mcp.cli import main
from n2g_mcp.registry import ServedModels, parse_model_option
from n2g_mcp.server import create_server
from store.jsonl import read_store
from tests.client import ok

LAYERS, NEURONS = (0, 1), (0, 1, 2)
WORDS = ("the cat sat on a mat and the dog ran to the old red house while everyone except me "
         "went home in the rain because it was late so we saw a big blue car on the road").split()


def write_corpus(path: Path, sentences: int = 900, seed: int = 0) -> Path:
    """A one-document ``.txt`` corpus of seeded random sentences (about 25k tokens here)."""
    rng = random.Random(seed)
    text = " ".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 11))).capitalize() + "."
                    for _ in range(sentences))
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- tokenizers
def _byte_level(corpus: Path, specials: list[str], vocab: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train([str(corpus)], trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials,
                                                 initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def _metaspace(corpus: Path, specials: list[str], vocab: int = 400):
    """Gemma's scheme: spaces become ``▁`` before BPE, and back after."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.train([str(corpus)], trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials))
    return tok


def _save_tokenizer(folder: Path, backend, **named: str) -> int:
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **named)
    tokenizer.save_pretrained(folder)
    return len(tokenizer)


# --------------------------------------------------------------------------- checkpoints
def _gpt2(folder: Path, corpus: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    eot = "<|endoftext|>"
    vocab = _save_tokenizer(folder, _byte_level(corpus, [eot]), bos_token=eot, eos_token=eot, unk_token=eot)
    GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=128, n_embd=32, n_layer=2, n_head=2,
                               bos_token_id=0, eos_token_id=0)).save_pretrained(folder)


def _neox(folder: Path, corpus: Path) -> None:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    specials = ["<|endoftext|>", "<|padding|>"]
    vocab = _save_tokenizer(folder, _byte_level(corpus, specials), bos_token=specials[0],
                            eos_token=specials[0], pad_token=specials[1])
    GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=128)).save_pretrained(folder)


def _llama(folder: Path, corpus: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    specials = ["<unk>", "<s>", "</s>"]
    vocab = _save_tokenizer(folder, _metaspace(corpus, specials), unk_token="<unk>", bos_token="<s>",
                            eos_token="</s>")
    LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                 max_position_embeddings=128, bos_token_id=1,
                                 eos_token_id=2)).save_pretrained(folder)


GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<unused0>", "<unused1>"]


def _gemma3(folder: Path, corpus: Path) -> None:
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    vocab = _save_tokenizer(folder, _metaspace(corpus, GEMMA_SPECIALS), pad_token="<pad>", eos_token="<eos>",
                            bos_token="<bos>", unk_token="<unk>", mask_token="<mask>",
                            additional_special_tokens=GEMMA_SPECIALS[5:])
    Gemma3ForCausalLM(Gemma3TextConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=16,
        layer_types=["sliding_attention", "full_attention"], max_position_embeddings=128,
        pad_token_id=0, eos_token_id=1, bos_token_id=2)).save_pretrained(folder)


FAMILIES: dict[str, tuple[Callable[[Path, Path], None], int]] = {
    "gpt2": (_gpt2, 128), "neox": (_neox, 64), "llama": (_llama, 64), "gemma3": (_gemma3, 64)}
"""Family -> (writes the checkpoint, its d_mlp). GPT-2's MLP is 4 x n_embd, the others' set."""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def built(request: pytest.FixtureRequest, corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One family's checkpoint, built with ``n2g build --name tiny-<family>`` into a stores folder."""
    family = request.param
    root = tmp_path_factory.mktemp(family)
    folder, stores = root / "model", root / "stores"
    stores.mkdir()
    import torch

    torch.manual_seed(0)
    FAMILIES[family][0](folder, corpus)
    name = f"tiny-{family}"
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("N2G_CACHE", str(root / "cache"))  # the scan cache stays in tmp
    try:
        status = main(["build", "--model", str(folder), "--name", name, "--corpus", str(corpus),
                       "--layers", "0-1", "--neurons", "0-2", "--store", str(stores / f"{name}.jsonl"), "--device", "cpu"])
    finally:
        monkeypatch.undo()
    return {"family": family, "folder": folder, "stores": stores, "name": name, "status": status}


def test_the_cli_builds_a_graph_of_every_requested_neuron(built: dict) -> None:
    assert built["status"] == 0
    graphs = list(read_store(built["stores"] / f"{built['name']}.jsonl"))
    assert sorted((g.layer, g.neuron) for g in graphs) == [(l, n) for l in LAYERS for n in NEURONS]
    assert all(g.hook == f"blocks.{g.layer}.mlp.hook_post" for g in graphs)
    assert all(g.fidelity is not None and g.max_activation > 0 for g in graphs)


def test_the_loaded_model_has_the_familys_bos_mask_and_special_tokens(built: dict) -> None:
    model = load_model(str(built["folder"]), device="cpu")
    assert (model.n_layers, model.d_mlp) == (2, FAMILIES[built["family"]][1])
    first = {"gpt2": "<|endoftext|>", "neox": "<|endoftext|>", "llama": "<s>", "gemma3": "<bos>"}
    assert model.vocab[model.bos_id] == first[built["family"]]
    assert model.mask_id in model.special_ids
    if built["family"] == "gemma3":
        assert (model.bos_id, model.vocab[model.mask_id]) == (2, "<unk>")
        assert {model.vocab[i] for i in model.special_ids} == set(GEMMA_SPECIALS)
    assert "".join(model.vocab[i] for i in model.encode(" the cat sat.")) == " the cat sat."


@pytest.mark.anyio
async def test_the_server_lists_reads_and_compares_the_built_graphs(built: dict) -> None:
    name = built["name"]
    served = ServedModels(configured=[parse_model_option(f"{name}={built['folder']}")])
    server = create_server(built["stores"], models=served)
    async with Client(server) as client:
        listing = (await client.call_tool("list_models", {})).structured_content
        info = next(m for m in listing["models"] if m["model"] == name)
        assert (info["n_layers"], info["d_mlp"], info["graphs"]) == (2, FAMILIES[built["family"]][1], 6)
        assert info["can_build"]
    graph = (await ok(server, "get_graph", model=name, layer=1, neuron=2))
    assert graph["id"] == "L1/N2" and graph["activating_tokens"]
    text = "Everyone went home in the rain except me. The old dog sat on the mat."
    out = await ok(server, "predict_activations", model=name, layer=1, neuron=2, text=text, compare=True)
    assert len(out["tokens"]) == len(out["predicted"]) == len(out["actual"]) > 10
    # The served neuron is the model's: the same activations as a direct pass over the text.
    model = load_model(str(built["folder"]), device="cpu")
    direct = run_layers(model, [model.encode(text)], [1])[1][0, :, 2].numpy()  # (pos,)
    stored = next(g for g in read_store(built["stores"] / f"{name}.jsonl") if (g.layer, g.neuron) == (1, 2))
    np.testing.assert_allclose(out["actual"], direct / stored.max_activation, atol=2e-3)
    assert out["predicted"] == pytest.approx(stored.predict(out["tokens"]), abs=1e-3)

"""Four model families from local folders, end to end: ``n2g build`` then the MCP server.

Tiny randomly initialised GPT-2, GPT-NeoX, Llama and Gemma 3 checkpoints are made from
transformers' config classes and saved to a temporary folder (no download), each with a
tokenizer trained on a small synthetic corpus in its family's conventions (GPT-2's one
``<|endoftext|>``; Llama's ``<s>``; Gemma's ``<pad> <eos> <bos> <unk> <mask>`` then unused special
tokens, and ``▁`` for spaces). Each is built through the ``n2g`` entry point under a served name,
then served with ``--model NAME=PATH``'s spec: listed with its shape, its graphs read, and its
prediction compared with the real neuron through the SDK's in-memory client. The Gemma 3
checkpoint is also written as a GGUF file, as llama.cpp lays one out: a config read from GGUF
names no architecture, which the loader must supply for the bridge to boot.

The server's ``build_graph`` is not run here: without a scan file it scans the embedded corpus
(724k tokens), minutes for four models; ``test_server.py`` covers it on a double.
"""

from __future__ import annotations

import json
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
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )

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


def _gemma3(folder: Path, corpus: Path,
            layer_types: list[str] | None = ["sliding_attention", "full_attention"]) -> None:  # noqa: B006
    """A two-layer Gemma 3: by default one sliding-window layer and one global one, as Gemma
    alternates them (every 6th layer global); None takes the config's pattern (both sliding)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    vocab = _save_tokenizer(folder, _metaspace(corpus, GEMMA_SPECIALS), pad_token="<pad>", eos_token="<eos>",
                            bos_token="<bos>", unk_token="<unk>", mask_token="<mask>",
                            additional_special_tokens=GEMMA_SPECIALS[5:])
    Gemma3ForCausalLM(Gemma3TextConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=16,
        layer_types=layer_types, max_position_embeddings=128,
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


# --------------------------------------------------------------------------- GGUF
def write_gemma3_gguf(folder: Path, path: Path) -> Path:
    """The Gemma 3 checkpoint in ``folder`` as a GGUF file in llama.cpp's layout (float32)."""
    import gguf
    import torch
    from transformers import Gemma3ForCausalLM

    model = Gemma3ForCausalLM.from_pretrained(folder, dtype=torch.float32)
    cfg = model.config
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_key_length(cfg.head_dim)
    writer.add_value_length(cfg.head_dim)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(cfg.rope_parameters["full_attention"]["rope_theta"])
    writer.add_sliding_window(cfg.sliding_window)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("llama")  # sentencepiece-style, rebuilt as Gemma's by transformers
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in GEMMA_SPECIALS else 1 for t in tokens])  # 3: control
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, cfg.num_hidden_layers)
    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight":
            continue  # tied to the embedding
        value = tensor.detach().numpy().astype(np.float32)
        if key.endswith("norm.weight"):
            value = value + 1  # llama.cpp stores Gemma's norm weights as 1 + w
        writer.add_tensor(names.get_name(key, try_suffixes=(".weight",)), np.ascontiguousarray(value))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def gemma3_gguf(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny Gemma 3 checkpoint folder and the same weights as a GGUF file."""
    import torch

    root = tmp_path_factory.mktemp("gemma3-gguf")
    torch.manual_seed(1)
    # A GGUF file names no layer types: transformers derives Gemma 3's pattern (every 6th layer
    # global), so the folder must follow it for the two to be the same model.
    _gemma3(root / "model", corpus, layer_types=None)
    return root / "model", write_gemma3_gguf(root / "model", root / "tiny-gemma3.gguf")


def test_a_gemma3_gguf_file_reads_the_neurons_of_the_weights_it_holds(gemma3_gguf) -> None:
    folder, path = gemma3_gguf
    from_gguf, from_folder = load_model(str(path), device="cpu"), load_model(str(folder), device="cpu")
    assert from_gguf.bridge.original_model.config.architectures == ["Gemma3ForCausalLM"]
    assert (from_gguf.bos_id, from_gguf.vocab[from_gguf.bos_id]) == (2, "<bos>")
    assert {from_gguf.vocab[i] for i in from_gguf.special_ids} == set(GEMMA_SPECIALS)
    ids = from_folder.encode("Everyone went home in the rain except me.")
    got, want = run_layers(from_gguf, [ids], [0, 1]), run_layers(from_folder, [ids], [0, 1])
    for layer in (0, 1):
        np.testing.assert_allclose(got[layer].numpy(), want[layer].numpy(), atol=1e-5)


def test_n2g_build_takes_a_gguf_file(gemma3_gguf, corpus: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("N2G_CACHE", str(tmp_path / "cache"))
    store = tmp_path / "tiny.jsonl"
    assert main(["build", "--model", str(gemma3_gguf[1]), "--name", "tiny-gguf", "--corpus", str(corpus),
                 "--layers", "1", "--neurons", "5", "--store", str(store), "--device", "cpu"]) == 0
    graphs = list(read_store(store))
    assert [(g.layer, g.neuron) for g in graphs] == [(1, 5)] and graphs[0].fidelity is not None


def test_n2g_build_ids_builds_the_named_neurons_of_each_layer(gemma3_gguf, corpus: Path, tmp_path: Path,
                                                               monkeypatch) -> None:
    import builder.run.runner as runner

    monkeypatch.setenv("N2G_CACHE", str(tmp_path / "cache"))
    passes = []
    scan = runner.scan
    monkeypatch.setattr(runner, "scan", lambda model, windows, layers, *a, **k: passes.append(layers) or
                        scan(model, windows, layers, *a, **k))
    store = tmp_path / "tiny.jsonl"
    assert main(["build", "--model", str(gemma3_gguf[1]), "--name", "tiny-gguf", "--corpus", str(corpus),
                 "--ids", "L1/N5,L0/N2,l1/n3", "--store", str(store), "--device", "cpu"]) == 0
    assert sorted((g.layer, g.neuron) for g in read_store(store)) == [(0, 2), (1, 3), (1, 5)]
    assert passes == [[0, 1]]  # other neurons in each layer, still one scan of both layers

"""Dictionaries (SAEs, transcoders) as unit sources: every file format read alike, wrong files
refused by name, and rule-defined latents built back into the graphs their rules imply."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from builder.dictionaries.formats import read_folder, save_sparsify
from builder.forward import run_layers
from store.errors import BadArgument, DictionaryError
from store.jsonl import read_header, read_store
from tests.dictionary_files import (
    EITHER,
    EXCEPT_AFTER_EVERYONE,
    NEVER,
    RULE_HOOK,
    THE,
    random_tensors,
    rule_encoder,
    write_gemma_scope,
    write_saelens,
    write_sparsify,
)
from tests.oracle import EXCEPT, TOKEN, oracle_build, rule_model, write_documents

# ----------------------------------------------------------------------------- formats
def _encode_reference(t: dict[str, torch.Tensor], x: torch.Tensor, k: int | None = None,
                      threshold: torch.Tensor | None = None, b_dec_in: bool = True) -> torch.Tensor:
    """The formats' encoders written out plainly, to hold the reader against."""
    pre = (x - t["b_dec"] if b_dec_in else x) @ t["W_enc"] + t["b_enc"]
    if threshold is not None:
        return pre * (pre > threshold)
    pre = pre.relu()
    if k is not None:
        kept = pre.topk(k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, kept.indices, kept.values)
    return pre


def test_the_three_formats_read_the_same_tensors_the_same_way(tmp_path: Path) -> None:
    t = random_tensors(8, 16, seed=1)
    t["b_dec"] = torch.linspace(-1, 1, 8)
    x = torch.randn(5, 8)
    threshold = torch.full((16,), 0.1)
    saelens = read_folder(write_saelens(tmp_path / "sl", t, "blocks.2.hook_resid_post",
                                        architecture="topk", k=4), "a", "m")
    sparsify_dir = tmp_path / "sp"
    write_sparsify(sparsify_dir, 3, t, k=4)
    sparsify = read_folder(sparsify_dir, "b", "m")
    gemma = read_folder(write_gemma_scope(tmp_path / "gs", "resid_post", 5, t, threshold), "c", "m")
    assert list(saelens.layers) == [2] and list(sparsify.layers) == [3] and list(gemma.layers) == [5]
    assert saelens.layer(2).hook_in == "blocks.2.hook_resid_post"
    assert sparsify.layer(3).hook_in == sparsify.layer(3).hook_out == "blocks.3.hook_mlp_out"
    assert gemma.layer(5).hook_in == "blocks.5.hook_resid_post"
    torch.testing.assert_close(saelens.layer(2).encode(x), _encode_reference(t, x, k=4))
    torch.testing.assert_close(sparsify.layer(3).encode(x), _encode_reference(t, x, k=4))
    # Gemma Scope: JumpReLU, and b_dec is not subtracted from the input.
    torch.testing.assert_close(gemma.layer(5).encode(x), _encode_reference(t, x, threshold=threshold, b_dec_in=False))
    z = saelens.layer(2).encode(x)
    torch.testing.assert_close(saelens.layer(2).decode(z), z @ t["W_dec"] + t["b_dec"])


def test_transcoders_read_the_mlp_input_and_write_its_output(tmp_path: Path) -> None:
    t = random_tensors(8, 16, d_out=8, seed=2)
    write_sparsify(tmp_path / "sp", 1, t, k=3, transcode=True)
    sp = read_folder(tmp_path / "sp", "tc", "m").layer(1)
    assert (sp.hook_in, sp.hook_out) == ("blocks.1.mlp.hook_in", "blocks.1.hook_mlp_out") and not sp.b_dec_in
    skip = torch.randn(8, 8)
    gs = read_folder(write_gemma_scope(tmp_path / "gs", "transcoder", 4, t, torch.zeros(16), skip), "g", "m").layer(4)
    assert (gs.hook_in, gs.hook_out) == ("blocks.4.mlp.hook_in", "blocks.4.hook_mlp_out")
    x = torch.randn(3, 8)
    z = gs.encode(x)
    torch.testing.assert_close(gs.decode(z, x), z @ t["W_dec"] + t["b_dec"] + x @ skip)
    sl = read_folder(write_saelens(tmp_path / "sl", t, "blocks.6.ln2.hook_normalized",
                                   hook_out="blocks.6.hook_mlp_out"), "s", "m").layer(6)
    assert (sl.hook_in, sl.hook_out, sl.b_dec_in) == ("blocks.6.ln2.hook_normalized", "blocks.6.hook_mlp_out", False)


def test_a_folder_of_layer_folders_is_one_dictionary_and_the_trainer_output_reads_back(tmp_path: Path) -> None:
    for layer in (2, 7):
        t = random_tensors(8, 12, seed=layer)
        save_sparsify(tmp_path / f"layers.{layer}.mlp",
                      {"encoder.weight": t["W_enc"].T, "encoder.bias": t["b_enc"], "W_dec": t["W_dec"],
                       "b_dec": t["b_dec"]}, k=4, transcode=False)
    (tmp_path / "quality.json").write_text(json.dumps({"layers": {"2": {"fvu": 0.2}}}))
    found = read_folder(tmp_path, "mine", "m")
    assert sorted(found.layers) == [2, 7] and found.width == 12 and found.quality["layers"]["2"]["fvu"] == 0.2
    assert found.layer(7).W_enc.dtype == torch.float32  # saved at float16, computed in float32
    with pytest.raises(DictionaryError, match="no layer 3; it covers layers 2, 7"):
        found.layer(3)


@pytest.mark.parametrize("damage, message", [
    ("no files", "no dictionary files"),
    ("shape", "b_enc has shape"),
    ("latents", "the encoder has 16 latents"),
    ("missing", "missing tensor"),
    ("json", "not a readable JSON file"),
    ("weights", "not a readable safetensors file"),
    ("folder name", "not a sparsify hookpoint"),
    ("no hook", "no hook name"),
    ("topk without k", "needs an integer k"),
])
def test_a_wrong_file_is_refused_naming_the_file_and_what_is_wrong(tmp_path: Path, damage: str, message: str) -> None:
    t = random_tensors(8, 16)
    folder = tmp_path / "d"
    if damage == "no files":
        folder.mkdir()
        named = folder
    elif damage in ("shape", "latents", "missing"):
        bad = dict(t)
        if damage == "shape":
            bad["b_enc"] = torch.zeros(15)
        elif damage == "latents":
            bad["W_dec"] = torch.zeros(12, 8)
        else:
            del bad["b_dec"]
        write_saelens(folder, bad, "blocks.0.hook_resid_post")
        named = folder / "sae_weights.safetensors"
    elif damage == "json":
        write_saelens(folder, t, "blocks.0.hook_resid_post")
        (folder / "cfg.json").write_text("{not json")
        named = folder / "cfg.json"
    elif damage == "weights":
        write_saelens(folder, t, "blocks.0.hook_resid_post")
        (folder / "sae_weights.safetensors").write_bytes(b"\x00" * 40)
        named = folder / "sae_weights.safetensors"
    elif damage == "folder name":
        named = write_sparsify(tmp_path, 0, t, k=2, part="")
        named = named.rename(tmp_path / "encoder7") / "cfg.json"
        folder = named.parent
    elif damage == "no hook":
        write_saelens(folder, t, "blocks.0.hook_resid_post")
        cfg = json.loads((folder / "cfg.json").read_text())
        del cfg["metadata"]["hook_name"]
        (folder / "cfg.json").write_text(json.dumps(cfg))
        named = folder / "cfg.json"
    else:
        write_saelens(folder, t, "blocks.0.hook_resid_post", architecture="topk")
        named = folder / "cfg.json"
    with pytest.raises(DictionaryError, match=message) as caught:
        read_folder(folder, "d", "m")
    assert str(named) in str(caught.value)


def test_a_dictionary_that_does_not_fit_the_model_is_refused(tmp_path: Path) -> None:
    model = rule_model()
    wrong_hook = read_folder(write_saelens(tmp_path / "a", rule_encoder(), "blocks.0.hook_resid_post"), "a", "m")
    with pytest.raises(DictionaryError, match="does not exist in rule-model"):
        model.with_units(wrong_hook)
    wrong_layer = read_folder(write_saelens(tmp_path / "b", rule_encoder(), "blocks.3.mlp.hook_post"), "b", "m")
    with pytest.raises(DictionaryError, match="layer 3, but rule-model has layers 0-0"):
        model.with_units(wrong_layer)


# ----------------------------------------------------------------------------- the rule oracle
@pytest.fixture(scope="module")
def latents(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("latents")
    mp = pytest.MonkeyPatch()
    mp.setenv("N2G_CACHE", str(root / "cache"))
    neurons = rule_model()
    model = neurons.with_units(read_folder(write_saelens(root / "rule-sae", rule_encoder(), RULE_HOOK), "rule-sae",
                                           neurons.name))
    store, corpus = oracle_build(model, root, [THE, EXCEPT_AFTER_EVERYONE, EITHER, NEVER], "rule-model.rule-sae.jsonl")
    yield model, read_store(store), corpus
    mp.undo()


@pytest.mark.parametrize("kind", ["sparsify", "gemma-scope", "gemma-scope-transcoder"])
def test_every_format_builds_the_token_latent_back(kind: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("N2G_CACHE", str(tmp_path / "cache"))
    t = rule_encoder()
    if kind == "sparsify":  # TopK 2 keeps both latents a rule token fires
        write_sparsify(tmp_path / "d", 0, t, k=2)
    else:
        site = "transcoder" if kind.endswith("transcoder") else "mlp_out"
        write_gemma_scope(tmp_path / "d", site, 0, t, torch.full((4,), 0.1))
    neurons = rule_model()
    model = neurons.with_units(read_folder(tmp_path / "d", kind, neurons.name))
    store, _ = oracle_build(model, tmp_path, [THE], "s.jsonl")
    graph = read_store(store).get(0, THE)
    assert graph.id == "L0/F0" and list(graph.graph) == [(" the",)]
    assert graph.hook == ("blocks.0.mlp.hook_in" if kind.endswith("transcoder") else "blocks.0.hook_mlp_out")


def test_latents_are_the_encoder_over_the_hook(latents) -> None:
    model, _, _ = latents
    rows = [model.encode("We saw everyone except the dog.")]
    z = run_layers(model, rows, [0])[0][0]  # (pos, 4)
    acts = model.bridge.activations(torch.tensor([[0, *rows[0]]]))[0, 1:]
    torch.testing.assert_close(z[:, THE], acts[:, TOKEN])
    torch.testing.assert_close(z[:, EITHER], acts[:, TOKEN] + acts[:, EXCEPT])
    assert z[:, NEVER].abs().sum() == 0


def test_a_token_latent_comes_back_as_its_token(latents) -> None:
    _, store, _ = latents
    graph = store.get(0, THE)
    assert graph.units == "rule-sae" and graph.id == "L0/F0" and graph.hook == RULE_HOOK
    assert list(graph.graph) == [(" the",)]
    assert graph.fidelity.n2g.top.f1 == pytest.approx(1.0)


def test_a_context_latent_comes_back_as_except_after_everyone(latents) -> None:
    _, store, _ = latents
    graph = store.get(0, EXCEPT_AFTER_EVERYONE)
    assert set(graph.activating_tokens) == {" except"} and set(graph.context_tokens) == {" everyone"}


def test_a_latent_mixing_two_neurons_gets_both_behaviours(latents) -> None:
    _, store, _ = latents
    graph = store.get(0, EITHER)
    assert set(graph.activating_tokens) == {" the", " except"}
    assert (" the",) in set(graph.graph)
    assert all(p[-1] == " everyone" for p in graph.graph if p[0] == " except")


def test_a_latent_that_never_fires_is_stored_dead_and_the_store_names_the_dictionary(latents) -> None:
    _, store, _ = latents
    assert store.get(0, NEVER).build["dead"]
    header = read_header(store.path)
    assert (header.model, header.units, header.version, header.key) == ("rule-model", "rule-sae", 3,
                                                                        "rule-model@rule-sae")


def test_scoring_a_store_of_latents_on_held_out_text_needs_their_dictionary(latents) -> None:
    from n2g_mcp.cli.evaluate import score_heldout

    _, store, _ = latents
    with pytest.raises(BadArgument, match="rule-sae latents .* pass --dictionary rule-sae=PATH"):
        score_heldout(str(store.path), store, 6)


def test_a_neuron_store_refuses_latent_graphs(tmp_path: Path) -> None:
    from store.errors import StoreMismatch
    from store.jsonl import StoreWriter

    StoreWriter(tmp_path / "neurons.jsonl", "rule-model").close()  # a neuron store's header
    with pytest.raises(StoreMismatch, match="holds graphs of rule-model, not rule-model@rule-sae"):
        StoreWriter(tmp_path / "neurons.jsonl", "rule-model@rule-sae")


def test_quality_of_an_exact_dictionary_and_of_one_that_drops_the_induction_neuron(tmp_path: Path) -> None:
    from builder.dictionaries.quality import quality
    from tests.induction_oracle import INDUCT, INDUCT_LAYER, induction_model

    model = induction_model()
    hook = f"blocks.{INDUCT_LAYER}.mlp.hook_post"
    eye = torch.eye(6)
    exact = read_folder(write_saelens(tmp_path / "exact", {"W_enc": eye, "b_enc": torch.zeros(6), "W_dec": eye,
                                                           "b_dec": torch.zeros(6)}, hook), "e", model.name)
    rng = torch.Generator().manual_seed(0)
    first = torch.randint(1, len(model.vocab), (8, 12), generator=rng)
    windows = torch.cat([first, first], dim=1).numpy()  # repeated halves: the induction neuron carries the loss
    q = quality(model, exact.layers, windows)[str(INDUCT_LAYER)]
    assert q["fvu"] == pytest.approx(0.0, abs=1e-6) and q["loss_spliced"] == pytest.approx(q["loss_clean"])
    assert q["recovered"] == pytest.approx(1.0) and q["loss_zeroed"] > q["loss_clean"] + 1
    blind = eye.clone()
    blind[INDUCT, INDUCT] = 0.0  # the induction neuron is never encoded: its latent never fires
    lossy = read_folder(write_saelens(tmp_path / "lossy", {"W_enc": blind, "b_enc": torch.zeros(6), "W_dec": eye,
                                                           "b_dec": torch.zeros(6)}, hook), "l", model.name)
    q = quality(model, lossy.layers, windows)[str(INDUCT_LAYER)]
    assert q["dead"] >= 1 and q["fvu"] > 0 and q["recovered"] < 0.5


def test_a_scan_from_the_training_activations_equals_the_scan_of_the_model(tmp_path: Path, monkeypatch) -> None:
    import dataclasses

    import numpy as np

    from builder.config import ScanConfig
    from builder.dictionaries.cached import CachedBridge
    from builder.stages.scan import scan
    from tests.induction_oracle import INDUCT_LAYER, induction_model

    monkeypatch.setenv("N2G_CACHE", str(tmp_path / "cache"))
    hook = f"blocks.{INDUCT_LAYER}.mlp.hook_post"
    neurons = induction_model()
    model = neurons.with_units(read_folder(write_saelens(tmp_path / "d", random_tensors(6, 10, seed=5), hook), "d",
                                           neurons.name))
    windows = np.random.default_rng(0).integers(1, len(model.vocab), size=(40, 16)).astype(np.int32)
    at_hook = dataclasses.replace(neurons, hook_template="blocks.{layer}.mlp.hook_post")
    acts = run_layers(at_hook, windows.tolist(), [INDUCT_LAYER])[INDUCT_LAYER]  # (40, 16, 6)
    cached = acts[:30].reshape(-1, 6).numpy().astype(np.float16)  # the last 10 windows are not cached
    bridge = CachedBridge(model.bridge, windows[:30], {hook: cached})
    config = ScanConfig(window=16, top_k=6, random_windows=4, batch_size=8, sample_stride=1)
    fast = scan(dataclasses.replace(model, bridge=bridge), windows, [INDUCT_LAYER], config, use_cache=False)
    real = scan(model, windows, [INDUCT_LAYER], config, use_cache=False)
    assert bridge.served > 0 and bridge.missed > 0
    fast_l, real_l = fast[INDUCT_LAYER], real[INDUCT_LAYER]
    np.testing.assert_allclose(fast_l.values, real_l.values, rtol=2e-3, atol=2e-3)
    # Ties (these units read the token alone) may pick other windows of equal activation: each
    # window picked holds the value it is ranked by.
    peak = model.units.layer(INDUCT_LAYER).encode(acts).amax(dim=1).numpy()  # (windows, latents)
    picked = np.take_along_axis(peak, fast_l.windows.astype(np.int64), axis=0)  # (k, latents)
    np.testing.assert_allclose(picked, fast_l.values, rtol=2e-3, atol=2e-3)


def test_the_trainer_learns_a_planted_dictionary_and_saves_it_reading_raw_activations(tmp_path: Path) -> None:
    import numpy as np

    from builder.dictionaries.train import TrainConfig, folded, train_layer

    rng = np.random.default_rng(0)
    atoms = rng.standard_normal((8, 16))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    picks = np.stack([rng.choice(8, 2, replace=False) for _ in range(6000)])  # two atoms a token
    x = (rng.uniform(5, 20, (6000, 2, 1)) * atoms[picks]).sum(1) + 3.0  # an offset b_dec must learn
    config = TrainConfig(num_latents=16, k=2, epochs=20, batch=200, lr=3e-3, warmup=10, dead_tokens=2000)
    sae, scale, record = train_layer(x.astype(np.float16), config, tmp_path / "ck.pt")
    assert record["history"][-1]["fvu"] < 0.1 and scale > 1
    save_sparsify(tmp_path / "layers.0", folded(sae, scale), k=2, transcode=False)
    one = read_folder(tmp_path, "planted", "m").layer(0)
    raw = torch.tensor(x, dtype=torch.float32)
    with torch.no_grad():
        x_hat = one.decode(one.encode(raw))
        pre = torch.relu((raw / scale - sae.b_dec) @ sae.encoder.weight.T + sae.encoder.bias)
    fvu = float((raw - x_hat).pow(2).sum() / (raw - raw.mean(0)).pow(2).sum())
    assert fvu < 0.1, "the saved dictionary reconstructs raw activations (the scale folded in)"
    top = pre.topk(2, dim=-1)
    z = torch.zeros_like(pre).scatter(-1, top.indices, top.values) * scale
    torch.testing.assert_close(one.encode(raw), z, rtol=2e-2, atol=2e-2)  # float16 weights on disk


def test_latent_graphs_calibrate_on_ordinary_text_as_neuron_graphs_do(latents, tmp_path: Path) -> None:
    # The ordinary-text stage reads the dictionary's latents (the pass, the calibration, the
    # held-out figures), so a latent store can be calibrated as the neuron atlas is.
    from builder.run.runner import BuildSource, run_build
    from tests.test_ordinary import ORDINARY

    model, _, _ = latents
    documents = write_documents(tmp_path / "corpus.jsonl")
    out = tmp_path / "calibrated.jsonl"
    run_build(model, [0], [THE, EXCEPT_AFTER_EVERYONE], out, ORDINARY, BuildSource(model, ORDINARY, corpus=documents))
    store = read_store(out)
    token, context = store.get(0, THE), store.get(0, EXCEPT_AFTER_EVERYONE)
    assert token.id == "L0/F0" and token.units == "rule-sae" and token.matching.rule == "specific"
    assert token.graph[(" the",)] == pytest.approx(1.0, abs=0.01) and list(token.activating_tokens) == [" the"]
    assert " except" in context.activating_tokens and next(iter(context.context_tokens)) == " everyone"
    assert token.fidelity.heldout is not None and token.fidelity.heldout.n2g.tokens.f1 == pytest.approx(1.0)

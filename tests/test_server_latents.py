"""Dictionary latents served through MCP, on the real builder over the rule model of ``tests/oracle.py``
and the rule dictionary of ``tests/dictionary_files.py`` (F0 fires on ' the', F1 on ' except' after
' everyone', F2 on either, F3 never): list_models lists the dictionary with its quality, and
search, get_graph, top_activations, predict with compare and build_graph answer for its latents
(``units="rule-sae"``), never confusing a latent with the neuron of the same index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.dictionaries.formats import read_folder
from n2g_mcp.server import create_server
from store.catalog import store_filename
from store.dictionaries import spec_at
from store.scanfile import ScanFile, scan_filename
from tests.client import call, error, ok
from tests.dictionary_files import EITHER, EXCEPT_AFTER_EVERYONE, RULE_HOOK, THE, rule_encoder, write_saelens
from tests.oracle import ORACLE_CONFIG, rule_model, write_corpus

pytestmark = pytest.mark.anyio

CONFIG = ORACLE_CONFIG
QUALITY = {"layers": {"0": {"fvu": 0.25, "l0": 1.5, "dead": 1, "latents": 4, "loss_clean": 3.0,
                            "loss_spliced": 3.1, "loss_zeroed": 4.0, "recovered": 0.9}}}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A stores folder with the rule dictionary's scan and the graphs of F0 and F2, and the
    dictionary's folder (with a quality.json)."""
    from builder.corpus import make_windows
    from builder.run.runner import BuildSource, run_build
    from builder.stages.scan import export_scan_file, scan

    root = tmp_path_factory.mktemp("latents")
    mp = pytest.MonkeyPatch()
    mp.setenv("N2G_CACHE", str(root / "cache"))
    folder = write_saelens(root / "rule-sae", rule_encoder(), RULE_HOOK)
    (folder / "quality.json").write_text(json.dumps(QUALITY))
    neurons = rule_model()
    model = neurons.with_units(read_folder(folder, "rule-sae", neurons.name))
    windows = make_windows(model, write_corpus(root / "corpus.txt"), CONFIG.scan.window, CONFIG.scan.max_tokens)
    stores = root / "stores"
    path = export_scan_file(model, windows, scan(model, windows, [0], CONFIG.scan, use_cache=False),
                            stores / scan_filename(model.key), CONFIG.scan)
    run_build(model, [0], [THE, EITHER], stores / store_filename(model.key), CONFIG,
              BuildSource(model, CONFIG, scan_file=ScanFile(path)))
    yield stores, folder
    mp.undo()


@pytest.fixture
def server(served, tmp_path, monkeypatch):
    from builder.run.live import LiveModels
    from n2g_mcp.live import BuilderBackend
    from n2g_mcp.registry import ServedModels

    stores, folder = served
    monkeypatch.setenv("N2G_CACHE", str(tmp_path / "cache"))
    models = LiveModels(config=CONFIG)
    spec = models.add(rule_model())  # the dictionary itself loads from its folder on first use
    return create_server(stores, live=BuilderBackend(models=models), models=ServedModels(
        default=spec, embedded=False, dictionaries=[spec_at("rule-sae", "rule-model", str(folder))]))


async def test_list_models_lists_the_dictionary_with_its_quality(server):
    out = await ok(server, "list_models")
    [model] = out["models"]  # one entry a model, its dictionaries inside it
    [info] = model["dictionaries"]
    assert model["model"] == "rule-model" and model["graphs"] == 0 and model["d_mlp"] == 6
    assert info["units"] == "rule-sae" and info["graphs"] == 2 and info["d_mlp"] == 4
    assert info["quality"]["0"]["fvu"] == 0.25 and info["can_build"]
    said = await call(server, "list_models")
    assert "units='rule-sae' (a dictionary, 4 latents a layer): 2 graphs, layers 0" in said.content[0].text
    assert "L0: FVU 0.25, L0 1.5, dead 1/4" in said.content[0].text


async def test_search_and_get_graph_answer_for_latents_by_their_ids(server):
    found = await ok(server, "search_graphs", activating=[" the"], units="rule-sae")
    assert sorted(h["id"] for h in found["results"]) == ["L0/F0", "L0/F2"]
    graph = await ok(server, "get_graph", layer=0, neuron=THE, units="rule-sae")
    assert graph["id"] == "L0/F0" and list(graph["activating_tokens"]) == [" the"]
    # The neuron of the same index is another unit: no graph of it is stored.
    assert "no graph" in (await error(server, "get_graph", layer=0, neuron=THE)).lower()


async def test_top_activations_of_a_latent_come_from_its_scan(server):
    out = await ok(server, "top_activations", layer=0, neuron=EITHER, units="rule-sae", limit=5)
    assert out["id"] == "L0/F2" and out["source"] == "scan"
    pivots = {e["pivot_token"] for e in out["examples"]}
    assert pivots <= {" the", " except"} and pivots


async def test_predict_compares_the_graph_with_the_latent_itself(server):
    out = await ok(server, "predict_activations", layer=0, neuron=EITHER, units="rule-sae", compare=True,
                   text="We saw everyone except the dog. The cat ran except me.")
    assert out["id"] == "L0/F2"
    real = dict(zip(out["tokens"], out["actual"], strict=False))
    assert real[" the"] == pytest.approx(0.8)  # the TOKEN neuron's 0.8 through F2's encoder row, over its max 1.0
    fired = [t for t, v in zip(out["tokens"], out["actual"], strict=True) if v >= 0.5]
    assert fired.count(" except") == 1  # only the one after ' everyone'
    assert out["agreement"]["f1"] == pytest.approx(1.0)  # the latent's graph predicts it


async def test_build_graph_builds_a_latent_into_its_own_store(server, served):
    stores, _ = served
    # The scan is of another corpus than the embedded one, so its held-out documents are unknown:
    # the calibrated method says so and names the fitted one, which builds.
    message = await error(server, "build_graph", layer=0, neuron=EXCEPT_AFTER_EVERYONE, units="rule-sae")
    assert "not the corpus's" in message and "method='fitted'" in message
    out = await ok(server, "build_graph", layer=0, neuron=EXCEPT_AFTER_EVERYONE, units="rule-sae", method="fitted")
    assert out["id"] == "L0/F1" and set(out["activating_tokens"]) == {" except"}
    assert set(out["context_tokens"]) == {" everyone"}
    assert (stores / "rule-model.rule-sae.jsonl").is_file() and not (stores / "rule-model.jsonl").exists()


async def test_an_unknown_dictionary_is_refused_naming_the_ones_there_are(server):
    message = await error(server, "get_graph", layer=0, neuron=0, units="res-16k")
    assert "'res-16k' is not a dictionary of rule-model" in message and "'rule-sae'" in message



async def test_test_hypothesis_scores_a_pattern_against_a_latent(server):
    out = await ok(server, "test_hypothesis", layer=0, neuron=THE, units="rule-sae", pattern=" the", kind="tokens")
    assert out["id"] == "L0/F0"


# ----------------------------------------------------------------------------- editing latents
PERMUTED = [3, 0, 1, 2, 4, 5]
"""The induction oracle's dictionary at layer 1: latent i is neuron PERMUTED[i], so F0 is the planted
induction neuron (N3) and F3 is N2, which the model's output does not read."""


@pytest.fixture
def induction_server(tmp_path, monkeypatch):
    import torch

    from builder.run.live import LiveModels
    from n2g_mcp.live import BuilderBackend
    from n2g_mcp.registry import ServedModels
    from tests.induction_oracle import INDUCT_LAYER, induction_model

    monkeypatch.setenv("N2G_CACHE", str(tmp_path / "cache"))
    eye = torch.eye(6)[:, PERMUTED]  # (d_in, M): column i reads neuron PERMUTED[i]
    folder = write_saelens(tmp_path / "perm", {"W_enc": eye, "b_enc": torch.zeros(6), "W_dec": eye.T.contiguous(),
                                               "b_dec": torch.zeros(6)}, f"blocks.{INDUCT_LAYER}.mlp.hook_post")
    models = LiveModels()
    spec = models.add(induction_model())
    _scan_both(tmp_path / "stores", induction_model().with_units(read_folder(folder, "perm", spec.name)))
    return create_server(tmp_path / "stores", live=BuilderBackend(models=models), models=ServedModels(
        default=spec, embedded=False, dictionaries=[spec_at("perm", spec.name, str(folder))]))


def _scan_both(stores: Path, view) -> None:
    """The oracle's neuron scan and its dictionary's scan (steering reads each one's means)."""
    import numpy as np

    from builder.config import ScanConfig
    from builder.stages.scan import export_scan_file, scan
    from tests.induction_oracle import write_oracle_scan

    write_oracle_scan(stores)
    windows = np.random.default_rng(0).integers(1, len(view.vocab), size=(40, 16)).astype(np.int32)
    config = ScanConfig(window=16, top_k=6, random_windows=4, batch_size=8, sample_stride=1)
    export_scan_file(view, windows, scan(view, windows, [1], config, use_cache=False),
                     stores / scan_filename(view.key), config)


async def test_ablating_a_latent_subtracts_its_decoder_row_and_keeps_the_rest(induction_server):
    from tests.induction_oracle import INDUCT, INDUCT_LAYER

    neuron = await ok(induction_server, "ablate_neurons", neurons=[f"L{INDUCT_LAYER}/N{INDUCT}"], control=False)
    latent = await ok(induction_server, "ablate_neurons", neurons=[f"L{INDUCT_LAYER}/F0"], units="perm",
                      control=False)
    other = await ok(induction_server, "ablate_neurons", neurons=[f"L{INDUCT_LAYER}/F{INDUCT}"], units="perm",
                     control=False)
    assert latent["neurons"] == [f"L{INDUCT_LAYER}/F0"]
    assert latent["delta"] == pytest.approx(neuron["delta"]) and latent["delta"] > 3
    assert abs(other["delta"]) < 1e-3  # F3 is N2: nothing the output reads
    assert latent["loss_clean"] == pytest.approx(neuron["loss_clean"])  # intact: the model's own output


async def test_steering_a_latent_to_zero_stops_the_copy(induction_server):
    from tests.induction_oracle import INDUCT_LAYER

    args = {"prompt": "aaa abb aac aaa", "scale": 0.0, "max_new_tokens": 4}
    latent = await ok(induction_server, "steer_neurons", neurons=[f"L{INDUCT_LAYER}/F0"], units="perm", **args)
    neuron = await ok(induction_server, "steer_neurons", neurons=[f"L{INDUCT_LAYER}/N3"], **args)
    assert latent["neurons"] == [f"L{INDUCT_LAYER}/F0"]
    assert latent["steered_tokens"] == neuron["steered_tokens"] != neuron["clean_tokens"] == latent["clean_tokens"]


async def test_find_neurons_lists_the_latents_firing_at_a_token(server):
    out = await ok(server, "find_neurons", text="We saw everyone except the", units="rule-sae")
    ids = [h["id"] for h in out["results"]]
    assert set(ids[:2]) == {"L0/F0", "L0/F2"} and "L0/F3" not in ids  # ' the': F0 and F2; F3 is dead
    assert all(h["activation"] == 0 for h in out["results"][2:])


async def test_find_induction_neurons_ranks_the_latent_that_reads_the_induction_neuron_first(induction_server):
    from tests.induction_oracle import INDUCT_LAYER

    out = await ok(induction_server, "find_induction_neurons", units="perm", layers=[INDUCT_LAYER], sequences=6,
                   length=20, limit=3)
    assert out["results"][0]["id"] == f"L{INDUCT_LAYER}/F0"
    each = await ok(induction_server, "ablate_neurons", neurons=[f"L{INDUCT_LAYER}/F0", f"L{INDUCT_LAYER}/F3"],
                    units="perm", each=True, control=False)
    assert [e["id"] for e in each["each"]] == [f"L{INDUCT_LAYER}/F0", f"L{INDUCT_LAYER}/F3"]
    assert each["no_effect"] == [f"L{INDUCT_LAYER}/F3"]


async def test_a_sparsify_folder_serves_the_same_way_with_the_dictionary_option(tmp_path, monkeypatch):
    from builder.run.live import LiveModels
    from n2g_mcp.live import BuilderBackend
    from n2g_mcp.registry import ServedModels
    from store.dictionaries import parse_dictionary_option
    from tests.dictionary_files import write_sparsify

    monkeypatch.setenv("N2G_CACHE", str(tmp_path / "cache"))
    write_sparsify(tmp_path / "sp", 0, rule_encoder(), k=2)  # layers.0.mlp: TopK 2 after ReLU
    option = parse_dictionary_option(f"rule-sp={tmp_path / 'sp'}", "rule-model")  # what n2g-mcp --dictionary reads
    models = LiveModels(config=CONFIG)
    spec = models.add(rule_model())
    server = create_server(tmp_path / "stores", live=BuilderBackend(models=models), models=ServedModels(
        default=spec, embedded=False, dictionaries=[option]))
    [info] = [d for m in (await ok(server, "list_models"))["models"] for d in m["dictionaries"]]
    assert info["d_mlp"] == 4 and info["graphs"] == 0 and info["quality"] is None
    built = await ok(server, "build_graph", layer=0, neuron=EITHER, units="rule-sp")
    # Built over the embedded corpus (no scan here), where ' everyone ... except' is rare: ' the' leads.
    assert built["id"] == "L0/F2" and list(built["activating_tokens"])[0] == " the"
    assert (tmp_path / "stores" / "rule-model.rule-sp.jsonl").is_file()
    again = await ok(server, "get_graph", layer=0, neuron=EITHER, units="rule-sp")
    assert again["activating_tokens"] == built["activating_tokens"]

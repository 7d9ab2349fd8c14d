"""Dictionary latents on the real default model (SmolLM2-135M): a rule-defined latent (an encoder row
that picks one token's embedding direction at layer 0) comes back as that token's graph, and editing
a latent changes the model by exactly its decoder row, so an edit that changes nothing leaves the
model's own output (the reconstruction error is kept). Marked ``model``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from builder.config import BuildConfig, ScanConfig
from builder.dictionaries.formats import read_folder
from builder.forward import pack, token_losses
from builder.models import load_model
from builder.run.runner import run_build
from tests.dictionary_files import random_tensors, write_saelens, write_sparsify

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def neurons():
    return load_model("smollm2-135m", device="cpu")


def _token_latent(model, token: str) -> dict[str, torch.Tensor]:
    """A dictionary at ``blocks.0.hook_resid_pre`` (the token embedding): F0 fires on ``token``
    alone (its embedding direction, with a bias just under the token's own projection), F1 never."""
    [tid] = model.encode(token)
    embed = model.embedding().float()  # (vocab, d)
    direction = embed[tid] / embed[tid].norm()
    own = float(embed[tid] @ direction)
    t = random_tensors(embed.shape[1], 2)
    t["W_enc"] = torch.stack([direction, -direction], dim=1)
    t["b_enc"] = torch.tensor([-0.98 * own, -1e6])
    t["b_dec"] = torch.zeros(embed.shape[1])
    assert int(((embed @ direction) > 0.98 * own).sum()) == 1, "the direction picks the token alone"
    return t


def test_a_token_direction_latent_comes_back_as_that_token(neurons, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("N2G_CACHE", str(tmp_path / "cache"))
    folder = write_saelens(tmp_path / "tok", _token_latent(neurons, " the"), "blocks.0.hook_resid_pre")
    model = neurons.with_units(read_folder(folder, "tok", neurons.name))
    config = BuildConfig(scan=ScanConfig(max_tokens=30_000))
    [graph] = run_build(model, [0], [0], tmp_path / "s.jsonl", config)
    assert graph.id == "L0/F0" and graph.units == "tok"
    assert list(graph.graph) == [(" the",)]
    assert graph.fidelity.n2g.top.f1 == pytest.approx(1.0)


def test_an_edit_that_changes_no_latent_leaves_the_model_exactly_as_it_was(neurons, tmp_path) -> None:
    write_sparsify(tmp_path / "d", 3, random_tensors(576, 64, seed=3), k=8, part="")  # resid_post of block 3
    model = neurons.with_units(read_folder(tmp_path / "d", "d", neurons.name))
    rows = [model.encode("The cat sat on the mat because it was warm and quiet.")]
    ids = pack(model, rows)
    with torch.inference_mode():
        clean = model.bridge(ids)
        same = model.bridge.run_with_hooks(ids, fwd_hooks=model.unit_hooks(3, lambda z, hook: z))
    assert torch.equal(clean, same)  # the reconstruction error is kept: nothing replaced by x_hat


def test_zeroing_a_latent_subtracts_its_decoder_row_and_ablation_reads_it(neurons, tmp_path) -> None:
    t = random_tensors(576, 64, seed=4)
    write_sparsify(tmp_path / "d", 3, t, k=8, part="")
    model = neurons.with_units(read_folder(tmp_path / "d", "d", neurons.name))
    one = model.units.layer(3)
    rows = [model.encode("The cat sat on the mat because it was warm and quiet.")]
    ids = pack(model, rows)
    seen: dict[str, torch.Tensor] = {}

    def grab(name: str):
        def hook(acts, hook):
            seen[name] = acts.detach().clone()
            return acts
        return hook
    with torch.inference_mode():
        model.bridge.run_with_hooks(ids, fwd_hooks=[("blocks.3.hook_resid_post", grab("x"))])
        z = one.encode(seen["x"])
        latent = int(z[0, 1:].sum(0).argmax())  # one that fires on this text

        def zero(acts, hook):
            acts[..., latent] = 0.0
            return acts
        model.bridge.run_with_hooks(ids, fwd_hooks=[*model.unit_hooks(3, zero), ("blocks.4.hook_resid_pre", grab("after"))])
    expected = seen["x"] - z[..., latent, None] * one.W_dec[latent]
    torch.testing.assert_close(seen["after"], expected, rtol=1e-4, atol=1e-4)
    # The ablation probe's passes read the same edit: zeroing that latent changes the loss.
    clean, ablated = token_losses(model, rows), token_losses(model, rows, {3: ([latent], torch.zeros(1))})
    assert not np.allclose(clean[0], ablated[0])


def test_quality_reads_the_real_models_hooks_and_an_exact_splice_changes_no_loss(neurons, tmp_path) -> None:
    from builder.corpus import make_windows
    from builder.dictionaries.quality import quality

    # An 'SAE' whose latents are the residual stream's coordinates, both signs: x = relu(x) - relu(-x).
    eye = torch.eye(576)
    t = {"W_enc": torch.cat([eye, -eye], dim=1), "b_enc": torch.zeros(1152),
         "W_dec": torch.cat([eye, -eye], dim=0), "b_dec": torch.zeros(576)}
    write_saelens(tmp_path / "exact", t, "blocks.2.hook_mlp_out")
    one = read_folder(tmp_path / "exact", "x", neurons.name).layers
    windows = make_windows(neurons, None, 16, max_tokens=64, part="heldout")
    q = quality(neurons, one, windows)["2"]
    assert q["fvu"] == pytest.approx(0.0, abs=1e-6) and q["loss_spliced"] == pytest.approx(q["loss_clean"], abs=1e-4)
    assert q["loss_zeroed"] > q["loss_clean"] and q["recovered"] == pytest.approx(1.0, abs=1e-3)

"""Tiny dictionaries written as files in each format the server reads, for tests.

:func:`write_saelens`, :func:`write_sparsify` and :func:`write_gemma_scope` write one layer's
folder from the same tensors (SAELens's orientation: ``W_enc (d_in, M)``, ``W_dec (M, d_out)``),
each in its format's names, orientation and config keys (``builder/dictionaries/formats.py``
documents them). :func:`rule_encoder` is the rule model's dictionary (``tests/oracle.py``): each
latent a known mix of the rule neurons, so its graph is known.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.oracle import D_MLP, DEAD, EXCEPT, TOKEN

RULE_HOOK = "blocks.0.mlp.hook_post"
THE, EXCEPT_AFTER_EVERYONE, EITHER, NEVER = 0, 1, 2, 3
"""The rule dictionary's latents: F0 is the TOKEN neuron (" the"), F1 the EXCEPT neuron, F2 both
(it fires on " the" and on " except" after " everyone"), F3 never fires (negative weights)."""


def random_tensors(d_in: int, m: int, d_out: int | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random dictionary's tensors: ``W_enc (d_in, m)``, ``b_enc``, ``W_dec (m, d_out)``, ``b_dec``."""
    gen = torch.Generator().manual_seed(seed)
    d_out = d_in if d_out is None else d_out
    w_dec = torch.randn(m, d_out, generator=gen)
    return {"W_enc": torch.randn(d_in, m, generator=gen) / d_in ** 0.5, "b_enc": torch.zeros(m),
            "W_dec": w_dec / w_dec.norm(dim=1, keepdim=True), "b_dec": torch.zeros(d_out)}


def rule_encoder() -> dict[str, torch.Tensor]:
    """The rule model's dictionary over its 6 neurons (see :data:`THE` and the latents after it)."""
    t = random_tensors(D_MLP, 4)
    w = torch.zeros(D_MLP, 4)
    w[TOKEN, THE] = 1.0
    w[EXCEPT, EXCEPT_AFTER_EVERYONE] = 1.0
    w[TOKEN, EITHER] = w[EXCEPT, EITHER] = 1.0
    w[:, NEVER] = -1.0
    w[DEAD, NEVER] = 0.0
    t["W_enc"] = w
    return t


def write_saelens(folder: Path, t: dict[str, torch.Tensor], hook: str, *, architecture: str = "standard",
                  k: int | None = None, threshold: torch.Tensor | None = None,
                  hook_out: str | None = None) -> Path:
    """One SAELens (6.x) folder: ``cfg.json`` (metadata.hook_name) + ``sae_weights.safetensors``."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = dict(t)
    if threshold is not None:
        tensors["threshold"] = threshold
    save_file({name: v.clone().contiguous() for name, v in tensors.items()}, str(folder / "sae_weights.safetensors"))
    cfg = {"architecture": architecture, "d_in": t["W_enc"].shape[0], "d_sae": t["W_enc"].shape[1],
           "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": hook_out is None,
           "normalize_activations": "none", "metadata": {"hook_name": hook, "model_name": "m",
                                                         "sae_lens_version": "6.5.0"}}
    if k is not None:
        cfg["k"] = k
    if hook_out is not None:
        cfg["metadata"]["hook_name_out"] = hook_out
        cfg["d_out"] = t["W_dec"].shape[1]
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def write_sparsify(parent: Path, layer: int, t: dict[str, torch.Tensor], *, k: int, part: str = "mlp",
                   transcode: bool = False) -> Path:
    """One sparsify hookpoint folder ``layers.N[.part]``: ``cfg.json`` + ``sae.safetensors``."""
    folder = parent / (f"layers.{layer}" + (f".{part}" if part else ""))
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"encoder.weight": t["W_enc"].T.contiguous(), "encoder.bias": t["b_enc"],
               "W_dec": t["W_dec"].contiguous(), "b_dec": t["b_dec"]}, str(folder / "sae.safetensors"))
    (folder / "cfg.json").write_text(json.dumps(
        {"activation": "topk", "expansion_factor": 1, "normalize_decoder": True,
         "num_latents": t["W_enc"].shape[1], "k": k, "multi_topk": False, "skip_connection": False,
         "transcode": transcode, "d_in": t["W_enc"].shape[0]}))
    return folder


def write_gemma_scope(parent: Path, site: str, layer: int, t: dict[str, torch.Tensor],
                      threshold: torch.Tensor, skip: torch.Tensor | None = None) -> Path:
    """One Gemma Scope 2 folder ``<site>/layer_N_width_..._l0_small/params.safetensors``."""
    folder = parent / site / f"layer_{layer}_width_{t['W_enc'].shape[1]}_l0_small"
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"w_enc": t["W_enc"], "b_enc": t["b_enc"], "w_dec": t["W_dec"], "b_dec": t["b_dec"],
               "threshold": threshold}
    if skip is not None:
        tensors["affine_skip_connection"] = skip
    save_file({name: v.contiguous() for name, v in tensors.items()}, str(folder / "params.safetensors"))
    return folder

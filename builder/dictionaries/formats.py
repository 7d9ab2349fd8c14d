"""Dictionary files: SAELens, sparsify and Gemma Scope 2 folders read into one typed form, and written.

The three formats (facts from their loaders; see docs/dictionaries.md):

- **SAELens**: ``cfg.json`` + ``sae_weights.safetensors``: ``W_enc (d_in, M)``, ``b_enc (M)``,
  ``W_dec (M, d_out)``, ``b_dec (d_out)``, ``threshold (M)`` for JumpReLU; ``architecture`` is
  ``standard``, ``jumprelu`` or ``topk`` (with ``k``; pre-6.0 configs say
  ``activation_fn_str: topk`` and ``activation_fn_kwargs.k``); the hook is ``metadata.hook_name``
  (pre-6.0: ``hook_name`` or ``hook_point``), a transcoder's output hook ``hook_name_out``;
  ``apply_b_dec_to_input`` (default true) subtracts ``b_dec`` before encoding.
- **sparsify**: a folder a hookpoint (``layers.N`` the residual stream after block N,
  ``layers.N.mlp`` the MLP, ``layers.N.self_attn`` attention) with ``cfg.json`` (``k``,
  ``num_latents``, ``transcode``, ``d_in``) + ``sae.safetensors``: ``encoder.weight (M, d_in)``,
  ``encoder.bias``, ``W_dec (M, d_out)``, ``b_dec``, optional ``W_skip (d_out, d_in)``. TopK
  after ReLU; ``b_dec`` is subtracted before encoding unless it is a transcoder.
- **Gemma Scope 2**: ``params.safetensors`` (+ ``config.json``, optional) in folders
  ``<site>/layer_N_width_..._l0_...`` (site ``resid_post``, ``attn_out``, ``mlp_out``,
  ``transcoder``): ``w_enc (d_in, M)``, ``w_dec (M, d_out)``, ``b_enc``, ``b_dec``, ``threshold``
  (JumpReLU: ``pre * (pre > threshold)``), optional ``affine_skip_connection (d_in, d_out)``.

A folder holding one of these is one layer; a folder of such folders is a dictionary over several
layers. Every problem with a file raises :class:`store.errors.DictionaryError` naming the file and
what is wrong with it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from builder.dictionaries.units import Dictionary, DictionaryLayer
from store.errors import DictionaryError

SAELENS = ("cfg.json", "sae_weights.safetensors")
SPARSIFY = ("cfg.json", "sae.safetensors")
GEMMA_SCOPE = ("params.safetensors",)
SITES = {"resid_post": "blocks.{layer}.hook_resid_post", "mlp_out": "blocks.{layer}.hook_mlp_out",
         "attn_out": "blocks.{layer}.hook_attn_out"}
"""Hook points of an SAE on each site, as the model bridge names them."""
TRANSCODER_IN = "blocks.{layer}.mlp.hook_in"
TRANSCODER_OUT = "blocks.{layer}.hook_mlp_out"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DictionaryError(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(data, dict):
        raise DictionaryError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return {k: v.float() for k, v in load_file(str(path)).items()}
    except (OSError, SafetensorError, RuntimeError) as exc:
        raise DictionaryError(f"{path}: not a readable safetensors file ({exc})") from exc


def _need(tensors: Mapping[str, torch.Tensor], path: Path, *names: str) -> list[torch.Tensor]:
    missing = [n for n in names if n not in tensors]
    if missing:
        raise DictionaryError(f"{path}: missing tensor(s) {', '.join(missing)} "
                              f"(found {', '.join(sorted(tensors)) or 'none'})")
    return [tensors[n] for n in names]


def _layer_of(hook: str, path: Path) -> int:
    match = re.search(r"blocks\.(\d+)\.", hook)
    if match is None:
        raise DictionaryError(f"{path}: hook {hook!r} names no layer (expected blocks.N....)")
    return int(match.group(1))


def _read_saelens(folder: Path) -> DictionaryLayer:
    cfg_path, weights = folder / SAELENS[0], folder / SAELENS[1]
    cfg = _read_json(cfg_path)
    meta = cfg.get("metadata") or {}
    hook = meta.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point")
    if not isinstance(hook, str):
        raise DictionaryError(f"{cfg_path}: no hook name (metadata.hook_name, hook_name or hook_point)")
    arch = cfg.get("architecture") or ("topk" if cfg.get("activation_fn_str") == "topk" else "standard")
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    if arch not in ("standard", "jumprelu", "topk", "transcoder", "jumprelu_transcoder"):
        raise DictionaryError(f"{cfg_path}: architecture {arch!r} is not one of standard, jumprelu, topk")
    if cfg.get("normalize_activations", "none") not in ("none", None, False):
        raise DictionaryError(f"{cfg_path}: normalize_activations={cfg['normalize_activations']!r} "
                              "is not supported (fold the scaling into the weights first)")
    t = _read_tensors(weights)
    w_enc, b_enc, w_dec, b_dec = _need(t, weights, "W_enc", "b_enc", "W_dec", "b_dec")
    threshold = None
    if "jumprelu" in arch:
        threshold = t.get("threshold")
        if threshold is None and "log_threshold" in t:
            threshold = t["log_threshold"].exp()
        if threshold is None:
            raise DictionaryError(f"{weights}: a JumpReLU dictionary needs a threshold tensor")
    hook_out = meta.get("hook_name_out") or cfg.get("hook_name_out") or hook
    activation = "topk" if arch == "topk" else "jumprelu" if threshold is not None else "relu"
    if activation == "topk" and not isinstance(k, int):
        raise DictionaryError(f"{cfg_path}: a topk dictionary needs an integer k")
    return DictionaryLayer.checked(
        path=weights, layer=_layer_of(hook, cfg_path), hook_in=hook, hook_out=hook_out,
        W_enc=w_enc, b_enc=b_enc, W_dec=w_dec, b_dec=b_dec, threshold=threshold,
        k=k if activation == "topk" else None, activation=activation,
        b_dec_in=bool(cfg.get("apply_b_dec_to_input", True)) and hook_out == hook,
        W_skip=t["W_skip"].T if "W_skip" in t else None)


def sparsify_hooks(name: str, transcode: bool, path: Path) -> tuple[int, str, str]:
    """``(layer, hook in, hook out)`` of a sparsify hookpoint folder name (``layers.N[.mlp|.self_attn]``)."""
    match = re.fullmatch(r"(?:model\.)?layers[._](\d+)(?:\.(mlp|self_attn))?", name)
    if match is None:
        raise DictionaryError(f"{path}: folder name {name!r} is not a sparsify hookpoint "
                              "(layers.N, layers.N.mlp or layers.N.self_attn)")
    layer, part = int(match.group(1)), match.group(2)
    if transcode:
        if part != "mlp":
            raise DictionaryError(f"{path}: a sparsify transcoder must be on layers.N.mlp, not {name!r}")
        return layer, TRANSCODER_IN, TRANSCODER_OUT
    site = {"mlp": "mlp_out", "self_attn": "attn_out", None: "resid_post"}[part]
    return layer, SITES[site], SITES[site]


def _read_sparsify(folder: Path) -> DictionaryLayer:
    cfg_path, weights = folder / SPARSIFY[0], folder / SPARSIFY[1]
    cfg = _read_json(cfg_path)
    if cfg.get("activation", "topk") != "topk" or not isinstance(cfg.get("k"), int):
        raise DictionaryError(f"{cfg_path}: expected activation 'topk' with an integer k")
    transcode = bool(cfg.get("transcode", False))
    layer, hook_in, hook_out = sparsify_hooks(folder.name, transcode, cfg_path)
    t = _read_tensors(weights)
    enc, b_enc, w_dec, b_dec = _need(t, weights, "encoder.weight", "encoder.bias", "W_dec", "b_dec")
    return DictionaryLayer.checked(
        path=weights, layer=layer, hook_in=hook_in.format(layer=layer),
        hook_out=hook_out.format(layer=layer), W_enc=enc.T, b_enc=b_enc, W_dec=w_dec, b_dec=b_dec,
        threshold=None, k=int(cfg["k"]), activation="topk", b_dec_in=not transcode,
        W_skip=t["W_skip"].T if "W_skip" in t else None)


def _read_gemma_scope(folder: Path) -> DictionaryLayer:
    weights = folder / GEMMA_SCOPE[0]
    cfg = _read_json(folder / "config.json") if (folder / "config.json").exists() else {}
    match = re.search(r"layer_(\d+)", folder.name)
    layer = cfg.get("layer", int(match.group(1)) if match else None)
    if not isinstance(layer, int):
        raise DictionaryError(f"{folder}: no layer (a config.json 'layer' or a folder named layer_N_...)")
    site = str(cfg.get("site") or folder.parent.name).removesuffix("_all")
    t = _read_tensors(weights)
    w_enc, b_enc, w_dec, b_dec, threshold = _need(t, weights, "w_enc", "b_enc", "w_dec", "b_dec", "threshold")
    if site.startswith("transcoder") or w_enc.shape[0] != w_dec.shape[1] or "affine_skip_connection" in t:
        hook_in, hook_out = TRANSCODER_IN, TRANSCODER_OUT
    elif site in SITES:
        hook_in = hook_out = SITES[site]
    else:
        raise DictionaryError(f"{folder}: cannot tell the site from {site!r} (expected a parent folder "
                              f"or config.json 'site' of {', '.join(SITES)} or transcoder)")
    return DictionaryLayer.checked(
        path=weights, layer=layer, hook_in=hook_in.format(layer=layer), hook_out=hook_out.format(layer=layer),
        W_enc=w_enc, b_enc=b_enc, W_dec=w_dec, b_dec=b_dec, threshold=threshold, k=None,
        activation="jumprelu", b_dec_in=False, W_skip=t.get("affine_skip_connection"))


def _read_one(folder: Path) -> DictionaryLayer | None:
    """The layer in ``folder`` in whichever format its files say, or None when it holds none."""
    if all((folder / f).is_file() for f in SAELENS):
        return _read_saelens(folder)
    if all((folder / f).is_file() for f in SPARSIFY):
        return _read_sparsify(folder)
    if (folder / GEMMA_SCOPE[0]).is_file():
        return _read_gemma_scope(folder)
    return None


def read_folder(folder: Path, name: str, model: str) -> Dictionary:
    """A dictionary from a local folder: one layer's files, or folders of them (any depth up to 2).

    Raises:
        DictionaryError: no dictionary files, two at one layer, or a file of the wrong shape or format.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DictionaryError(f"{folder}: not a folder (expected a dictionary folder in SAELens, "
                              "sparsify or Gemma Scope 2 format)")
    found: dict[int, DictionaryLayer] = {}
    candidates = [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]
    candidates += [q for p in candidates[1:] for q in sorted(p.iterdir()) if q.is_dir()]
    for candidate in candidates:
        one = _read_one(candidate)
        if one is None:
            continue
        if one.layer in found:
            raise DictionaryError(f"{folder}: two dictionaries at layer {one.layer} "
                                  f"({found[one.layer].path} and {one.path}); serve them under two names")
        found[one.layer] = one
        if candidate == folder:
            break
    if not found:
        raise DictionaryError(
            f"{folder}: no dictionary files (expected {' + '.join(SAELENS)} (SAELens), "
            f"{' + '.join(SPARSIFY)} (sparsify) or {GEMMA_SCOPE[0]} (Gemma Scope 2), here or in subfolders)")
    quality = folder / "quality.json"
    return Dictionary(name=name, model=model, layers=dict(sorted(found.items())), source=str(folder),
                      quality=_read_json(quality) if quality.is_file() else None)


def load_dictionary(spec: str, name: str, model: str) -> Dictionary:
    """A dictionary from a local folder, else (online) a Hugging Face repo or a SAELens release id.

    ``spec`` is a folder path; ``owner/repo`` or ``owner/repo/folder`` (that folder only,
    downloaded with ``huggingface_hub``); or ``saelens:RELEASE/SAE_ID`` (SAELens' pretrained directory, which needs ``sae-lens``
    installed). The online paths are not exercised offline.
    """
    path = Path(spec).expanduser()
    if path.exists() or spec.startswith(("/", ".", "~")):
        return read_folder(path, name, model)
    sub = ""
    if spec.startswith("saelens:"):
        release, _, sae_id = spec.removeprefix("saelens:").partition("/")
        try:
            from sae_lens.loading.pretrained_saes_directory import get_repo_id_and_folder_name
        except ImportError as exc:
            raise DictionaryError(f"{spec}: SAELens release ids need `pip install sae-lens` "
                                  "(or download the folder and pass its path)") from exc
        spec, sub = get_repo_id_and_folder_name(release, sae_id)
    elif spec.count("/") > 1:  # owner/repo/folder...: that folder of the repo only
        owner, repo, sub = spec.split("/", 2)
        spec = f"{owner}/{repo}"
    pattern = f"{sub.strip('/')}/*" if sub else None
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(spec, allow_patterns=pattern)
    except Exception as exc:  # the hub's errors are many; all mean "not fetched"
        raise DictionaryError(f"{spec}: not a local folder, and fetching it from the Hugging Face hub "
                              f"failed ({str(exc).splitlines()[0][:160]})") from exc
    return read_folder(Path(local) / sub.strip("/") if sub else Path(local), name, model)


def save_sparsify(folder: Path, tensors: dict[str, torch.Tensor], *, k: int, transcode: bool,
                  dtype: torch.dtype = torch.float16) -> None:
    """Write one hookpoint's folder in sparsify's format: ``cfg.json`` + ``sae.safetensors``
    (the keys sparsify's ``SparseCoderConfig`` saves, and ``d_in``)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    m, d = tensors["encoder.weight"].shape
    save_file({name: t.to(dtype).contiguous() for name, t in tensors.items()},
              str(folder / "sae.safetensors"))
    cfg = {"activation": "topk", "expansion_factor": max(1, m // d), "normalize_decoder": True,
           "num_latents": m, "k": k, "multi_topk": False, "skip_connection": "W_skip" in tensors,
           "transcode": transcode, "d_in": d}
    (folder / "cfg.json").write_text(json.dumps(cfg))

"""A dictionary's quality, the way the field reports it, measured on held-out text.

Per layer, over the held-out documents' windows (``make_windows(part="heldout")``: text no
training step read): the fraction of variance unexplained (``sum |x - x_hat|^2 / sum |x -
mean x|^2``), L0 (latents active per token), dead latents (never active over those tokens), and
the next-token loss of the model with the reconstruction spliced in at the layer's output hook,
beside the clean model's and the loss with that hook zeroed; ``recovered`` is the share of the
zeroing's loss increase the reconstruction wins back (1 is perfect). Written as ``quality.json``
beside the dictionary; ``list_models`` shows it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from builder.corpus import make_windows
from builder.dictionaries.formats import read_folder
from builder.dictionaries.units import DictionaryLayer
from builder.forward import _losses, pack
from builder.models import LoadedModel, load_model


def layer_quality(model: LoadedModel, one: DictionaryLayer, windows: np.ndarray,
                   rows_a_pass: int = 32) -> dict[str, float | int]:
    """One layer's figures over ``windows``."""
    se = var_sum = 0.0
    l0 = tokens = 0
    fired = torch.zeros(one.width, dtype=torch.bool)
    losses: dict[str, list[float]] = {"clean": [], "spliced": [], "zeroed": []}
    for start in range(0, len(windows), rows_a_pass):
        ids = pack(model, windows[start:start + rows_a_pass].tolist())
        seen: dict[str, torch.Tensor] = {}

        def read(acts: torch.Tensor, hook: object) -> torch.Tensor:
            seen["x"] = acts.float()
            return acts

        def splice(acts: torch.Tensor, hook: object) -> torch.Tensor:
            x_in = seen["x"]
            z = one.encode(x_in)
            return one.decode(z, x_in).to(acts.dtype)

        with torch.inference_mode():
            hooks_clean = [(one.hook_in, read)]
            clean = _losses(model.bridge.run_with_hooks(ids, fwd_hooks=hooks_clean), ids)
            x_in = seen["x"][:, 1:]  # BOS left out of every figure, as training left it out
            target = x_in if one.hook_in == one.hook_out else None
            if target is None:
                out: dict[str, torch.Tensor] = {}

                def grab(acts: torch.Tensor, hook: object) -> torch.Tensor:
                    out["y"] = acts.float()
                    return acts
                model.bridge.run_with_hooks(ids, fwd_hooks=[(one.hook_out, grab)])
                target = out["y"][:, 1:]
            z = one.encode(x_in)
            x_hat = one.decode(z, x_in)
            flat_t, flat_h = target.reshape(-1, target.shape[-1]), x_hat.reshape(-1, x_hat.shape[-1])
            se += float((flat_t - flat_h).pow(2).sum())
            var_sum += float((flat_t - flat_t.mean(0)).pow(2).sum())
            active = z.reshape(-1, z.shape[-1]) > 0
            l0 += int(active.sum())
            tokens += active.shape[0]
            fired |= active.any(0)
            if one.hook_in == one.hook_out:  # read and splice at one hook
                def read_splice(acts: torch.Tensor, hook: object) -> torch.Tensor:
                    seen["x"] = acts.float()
                    return splice(acts, hook)
                hooks = [(one.hook_in, read_splice)]
            else:
                hooks = [(one.hook_in, read), (one.hook_out, splice)]
            spliced = _losses(model.bridge.run_with_hooks(ids, fwd_hooks=hooks), ids)
            zeroed = _losses(model.bridge.run_with_hooks(
                ids, fwd_hooks=[(one.hook_out, lambda acts, hook: torch.zeros_like(acts))]), ids)
        losses["clean"].append(float(clean.mean()))
        losses["spliced"].append(float(spliced.mean()))
        losses["zeroed"].append(float(zeroed.mean()))
    clean_loss, spliced_loss, zero_loss = (float(np.mean(losses[k])) for k in ("clean", "spliced", "zeroed"))
    gap = zero_loss - clean_loss
    return {"fvu": round(se / var_sum, 4), "l0": round(l0 / tokens, 2), "dead": int((~fired).sum()),
            "latents": one.width, "tokens": tokens, "loss_clean": round(clean_loss, 4),
            "loss_spliced": round(spliced_loss, 4), "loss_zeroed": round(zero_loss, 4),
            "recovered": round((zero_loss - spliced_loss) / gap, 4) if gap > 0 else None}


def measure(model: LoadedModel, folder: Path, max_tokens: int = 40_000, window: int = 64) -> dict:
    """Every layer's figures for the dictionary in ``folder``, on held-out windows."""
    dictionary = read_folder(folder, folder.name, model.name)
    windows = make_windows(model, None, window, max_tokens=max_tokens, part="heldout")
    return {"model": model.name, "split": "heldout", "tokens": int(windows.size),
            "layers": {str(layer): layer_quality(model, one, windows)
                       for layer, one in dictionary.layers.items()}}


def write_quality(folder: Path, model_name: str, max_tokens: int) -> list[str]:
    """Measure, write ``quality.json`` into ``folder``, and return a line a layer for the terminal."""
    figures = measure(load_model(model_name), folder, max_tokens)
    (folder / "quality.json").write_text(json.dumps(figures, indent=1))
    lines = [f"{folder}: {figures['tokens']:,} held-out tokens"]
    for layer, q in figures["layers"].items():
        lines.append(f"  L{layer}: FVU {q['fvu']:.3f}  L0 {q['l0']:.1f}  dead {q['dead']}/{q['latents']}  "
                     f"loss {q['loss_clean']:.3f} clean, {q['loss_spliced']:.3f} spliced, "
                     f"{q['loss_zeroed']:.3f} zeroed (recovered {q['recovered']})")
    return lines

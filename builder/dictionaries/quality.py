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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from builder.corpus import make_windows
from builder.dictionaries.formats import read_folder
from builder.dictionaries.units import DictionaryLayer
from builder.forward import _losses, pack
from builder.models import LoadedModel, load_model


@dataclass
class _Tally:
    """One layer's running sums."""

    width: int
    se: float = 0.0
    var: float = 0.0
    active: int = 0
    tokens: int = 0
    fired: torch.Tensor | None = None
    losses: dict[str, list[float]] = field(default_factory=lambda: {"spliced": [], "zeroed": []})

    def add(self, one: DictionaryLayer, x_in: torch.Tensor, target: torch.Tensor) -> None:
        z = one.encode(x_in)
        x_hat = one.decode(z, x_in)
        flat_t, flat_h = target.reshape(-1, target.shape[-1]), x_hat.reshape(-1, x_hat.shape[-1])
        self.se += float((flat_t - flat_h).pow(2).sum())
        self.var += float((flat_t - flat_t.mean(0)).pow(2).sum())
        on = z.reshape(-1, z.shape[-1]) > 0
        self.active += int(on.sum())
        self.tokens += on.shape[0]
        self.fired = on.any(0) if self.fired is None else self.fired | on.any(0)


def _spliced_hooks(one: DictionaryLayer) -> list[tuple[str, object]]:
    """Hooks that put the reconstruction in place of the output hook's activation."""
    seen: dict[str, torch.Tensor] = {}

    def splice(acts: torch.Tensor, x_in: torch.Tensor) -> torch.Tensor:
        return one.decode(one.encode(x_in), x_in).to(acts.dtype)

    if one.hook_in == one.hook_out:  # read and splice at one hook
        return [(one.hook_in, lambda acts, hook: splice(acts, acts.float()))]

    def read(acts: torch.Tensor, hook: object) -> torch.Tensor:
        seen["x"] = acts.float()
        return acts
    return [(one.hook_in, read), (one.hook_out, lambda acts, hook: splice(acts, seen.pop("x")))]


def quality(model: LoadedModel, layers: dict[int, DictionaryLayer], windows: np.ndarray,
            rows_a_pass: int = 32) -> dict[str, dict[str, float | int | None]]:
    """Every layer's figures over ``windows``: one clean pass reads every layer's hooks (FVU, L0,
    dead), then one spliced and one zeroed pass a layer (the losses)."""
    tallies = {layer: _Tally(one.width) for layer, one in layers.items()}
    clean_losses: list[float] = []
    for start in range(0, len(windows), rows_a_pass):
        ids = pack(model, windows[start:start + rows_a_pass].tolist())
        seen: dict[str, torch.Tensor] = {}

        def grab(name: str):
            def hook(acts: torch.Tensor, hook: object) -> torch.Tensor:
                seen[name] = acts.float()[:, 1:]  # BOS left out, as training left it out
                return acts
            return hook
        names = sorted({h for one in layers.values() for h in (one.hook_in, one.hook_out)})
        with torch.inference_mode():
            logits = model.bridge.run_with_hooks(ids, fwd_hooks=[(name, grab(name)) for name in names])
            clean_losses.append(float(_losses(logits, ids).mean()))
            for layer, one in layers.items():
                tallies[layer].add(one, seen[one.hook_in], seen[one.hook_out])
                spliced = model.bridge.run_with_hooks(ids, fwd_hooks=_spliced_hooks(one))
                zeroed = model.bridge.run_with_hooks(
                    ids, fwd_hooks=[(one.hook_out, lambda acts, hook: torch.zeros_like(acts))])
                tallies[layer].losses["spliced"].append(float(_losses(spliced, ids).mean()))
                tallies[layer].losses["zeroed"].append(float(_losses(zeroed, ids).mean()))
    clean = float(np.mean(clean_losses))
    out: dict[str, dict[str, float | int | None]] = {}
    for layer, t in tallies.items():
        spliced, zeroed = (float(np.mean(t.losses[k])) for k in ("spliced", "zeroed"))
        gap = zeroed - clean
        out[str(layer)] = {"fvu": round(t.se / t.var, 4), "l0": round(t.active / t.tokens, 2),
                           "dead": int((~t.fired).sum()) if t.fired is not None else t.width,
                           "latents": t.width, "tokens": t.tokens, "loss_clean": round(clean, 4),
                           "loss_spliced": round(spliced, 4), "loss_zeroed": round(zeroed, 4),
                           "recovered": round((zeroed - spliced) / gap, 4) if gap > 0 else None}
    return out


def measure(model: LoadedModel, folder: Path, max_tokens: int = 40_000, window: int = 64) -> dict:
    """Every layer's figures for the dictionary in ``folder``, on held-out windows."""
    dictionary = read_folder(folder, folder.name, model.name)
    windows = make_windows(model, None, window, max_tokens=max_tokens, part="heldout")
    return {"model": model.name, "split": "heldout", "tokens": int(windows.size),
            "layers": quality(model, dictionary.layers, windows)}


def write_quality(folder: Path, model_name: str, max_tokens: int) -> list[str]:
    """Measure, write ``quality.json`` into ``folder``, and return a line a layer for the terminal."""
    figures = measure(load_model(model_name), folder, max_tokens)
    for layer, q in figures["layers"].items():  # a trained layer's own count, over many more tokens
        record = next(folder.glob(f"*layers.{layer}*/train.json"), None)
        if record is not None:
            trained = json.loads(record.read_text())
            q["dead_in_training"] = trained["history"][-1]["dead"]
            q["dead_window_tokens"] = trained["config"]["dead_tokens"]
    (folder / "quality.json").write_text(json.dumps(figures, indent=1))
    lines = [f"{folder}: {figures['tokens']:,} held-out tokens"]
    for layer, q in figures["layers"].items():
        lines.append(f"  L{layer}: FVU {q['fvu']:.3f}  L0 {q['l0']:.1f}  dead {q['dead']}/{q['latents']}  "
                     f"loss {q['loss_clean']:.3f} clean, {q['loss_spliced']:.3f} spliced, "
                     f"{q['loss_zeroed']:.3f} zeroed (recovered {q['recovered']})")
    return lines

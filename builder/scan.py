"""The activation scan: top-k corpus windows of every neuron of several layers, in one pass.

In: a model, token windows ``(n_windows, window)``, the layers to scan. Out, per layer, a
:class:`LayerScan`: for every neuron its ``top_k`` windows (by the window's largest activation),
the activation along each of them, the neuron's largest activation (the normaliser), and the
activations of a fixed set of random windows (negatives for fidelity). Each pass stops after the
deepest requested layer.

Scans are cached as ``.npz`` files under ``$N2G_CACHE/scans/<model>/<windows hash>-...``, one per
layer, so later stages and later runs reuse them; a layer already cached is not scanned again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from builder.config import ScanConfig
from builder.corpus import windows_key
from builder.forward import run_layers
from builder.models import LoadedModel, cache_dir
from store.names import file_safe

log = logging.getLogger(__name__)

Progress = Callable[[float, float, str], None]


@dataclass
class LayerScan:
    """What the scan keeps of one layer."""

    layer: int
    values: np.ndarray
    """``(k, d_mlp)`` each top window's largest activation, descending per neuron."""
    windows: np.ndarray
    """``(k, d_mlp)`` index of each top window in the scanned windows."""
    traces: np.ndarray
    """``(k, d_mlp, window)`` activation along each top window."""
    random_windows: np.ndarray
    """``(r,)`` indices of the random negative windows."""
    random_traces: np.ndarray
    """``(r, window, d_mlp)`` activations along the random windows."""

    @property
    def max_activation(self) -> np.ndarray:
        """``(d_mlp,)`` each neuron's largest activation in the corpus."""
        return self.values[0]

    def save(self, path: Path) -> None:
        """Write to ``path`` (through a temporary file, so a crash leaves no half scan)."""
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, layer=self.layer, values=self.values, windows=self.windows, traces=self.traces,
                 random_windows=self.random_windows, random_traces=self.random_traces)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> LayerScan:
        """Read a scan written by :meth:`save`."""
        with np.load(path) as z:
            return cls(layer=int(z["layer"]), values=z["values"], windows=z["windows"],
                       traces=z["traces"], random_windows=z["random_windows"],
                       random_traces=z["random_traces"])


def scan_dir(model: LoadedModel, windows: np.ndarray, config: ScanConfig) -> Path:
    """The cache folder of one model, corpus and scan configuration."""
    name = (f"{windows_key(windows)}-k{config.top_k}-r{config.random_windows}-s{config.seed}"
            f"-{file_safe(model.hook_template)}")
    return cache_dir() / "scans" / file_safe(model.name) / name


def _top_k_pass(model: LoadedModel, windows: np.ndarray, layers: Sequence[int], config: ScanConfig,
                progress: Progress | None) -> dict[int, tuple[torch.Tensor, ...]]:
    n, width = windows.shape
    k = min(config.top_k, n)
    d = model.d_mlp
    state = {layer: (torch.full((k, d), -torch.inf), torch.full((k, d), -1, dtype=torch.int32),
                     torch.zeros((k, d, width))) for layer in layers}
    bar = tqdm(total=n * width, unit="tok", unit_scale=True, desc=f"scan layers {list(layers)}",
               disable=progress is not None)
    for start in range(0, n, config.batch_size):
        batch = windows[start:start + config.batch_size]
        acts = run_layers(model, batch.tolist(), layers)
        ids = torch.arange(start, start + len(batch), dtype=torch.int32)
        for layer in layers:
            values, index, traces = state[layer]
            a = acts[layer].cpu()  # (batch, pos, d_mlp)
            cand_values = torch.cat([values, a.max(dim=1).values])  # (k + batch, d_mlp)
            cand_index = torch.cat([index, ids[:, None].expand(-1, d)])
            cand_traces = torch.cat([traces, a.transpose(1, 2)])  # (k + batch, d_mlp, pos)
            top, order = cand_values.topk(k, dim=0)  # (k, d_mlp)
            state[layer] = (top, cand_index.gather(0, order),
                            cand_traces.gather(0, order[..., None].expand(-1, -1, width)))
        bar.update(batch.size)
        if progress is not None:
            progress(start + len(batch), n, f"scanning layers {list(layers)}")
    bar.close()
    return state


def scan(model: LoadedModel, windows: np.ndarray, layers: Sequence[int], config: ScanConfig,
         progress: Progress | None = None, use_cache: bool = True) -> dict[int, LayerScan]:
    """Scan the corpus for the given layers, reusing cached layers.

    Args:
        model: the loaded model.
        windows: ``(n_windows, window)`` token ids.
        layers: layers to return.
        config: scan settings (``top_k``, ``random_windows``, ``batch_size``, ``seed``).
        progress: called as ``progress(done, total, message)``; without it a tqdm bar is shown.
        use_cache: read and write the on-disk cache.
    """
    for layer in layers:
        model.check_layer(layer)
    folder = scan_dir(model, windows, config)
    out: dict[int, LayerScan] = {}
    missing = []
    for layer in sorted(set(layers)):
        path = folder / f"layer{layer}.npz"
        if use_cache and path.is_file():
            out[layer] = LayerScan.load(path)
        else:
            missing.append(layer)
    if not missing:
        return out

    state = _top_k_pass(model, windows, missing, config, progress)
    rng = np.random.default_rng(config.seed)
    r = min(config.random_windows, len(windows))
    random_ids = np.sort(rng.choice(len(windows), size=r, replace=False)).astype(np.int32)
    random_acts = run_layers(model, windows[random_ids].tolist(), missing) if r else {}
    if use_cache:
        folder.mkdir(parents=True, exist_ok=True)
    for layer in missing:
        values, index, traces = state[layer]
        result = LayerScan(
            layer=layer,
            values=values.numpy().astype(np.float32),
            windows=index.numpy(),
            traces=traces.numpy().astype(np.float32),
            random_windows=random_ids,
            random_traces=(random_acts[layer].cpu().numpy().astype(np.float32) if r
                           else np.zeros((0, windows.shape[1], model.d_mlp), np.float32)),
        )
        if use_cache:
            result.save(folder / f"layer{layer}.npz")
        out[layer] = result
    return out

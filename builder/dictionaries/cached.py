"""A dictionary's scan from the activations its training already collected, not a second pass.

Training (``builder.dictionaries.train.collect``) kept every build-split window's activations at
the dictionary's hooks (float16, BOS left out). A scan of the whole corpus runs the same windows
again to the deepest layer: on this CPU most of an hour for SmolLM2's layer 25. :class:`CachedBridge`
stands in for the model bridge in that scan: a pass whose rows are all cached windows and whose
hooks are all cached hook points gets them from the files (the capture hooks run on them as on a
real pass); any other pass (a held-out document's window, a masked copy, a full-depth pass) runs
the real model. The latents read from float16 inputs differ from a float32 pass by about 1e-3 of
their size; the scan file's statistics and top windows are what it is for, and every live call
(predict's compare, the builds' stages) still runs the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from builder.corpus import make_windows
from builder.dictionaries.train import TrainConfig, collect
from builder.models import LoadedModel


def _depth(hook: str) -> int:
    """The block a hook name is in (``blocks.N....``)."""
    return int(hook.split(".")[1]) if hook.startswith("blocks.") else -1


class CachedBridge:
    """The model bridge, answering passes over cached windows from the training activations.

    Args:
        bridge: the real bridge (every attribute but ``run_with_hooks`` is its own).
        windows: the cached windows ``(n, window)``, in the order of the files' rows.
        acts: ``{hook name: (n * window, d) float16}`` the files.
    """

    def __init__(self, bridge: Any, windows: np.ndarray, acts: dict[str, np.ndarray]) -> None:
        self._bridge, self._acts = bridge, acts
        self._window = windows.shape[1]
        self._rows = {row.tobytes(): i for i, row in enumerate(windows.astype(np.int64))}
        self.served = self.missed = 0
        """Passes answered from the files, and passes run on the model."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bridge, name)

    def _cached_rows(self, ids: torch.Tensor, hooks: Sequence[tuple[str, Any]], kwargs: dict) -> list[int] | None:
        if kwargs.keys() - {"stop_at_layer"} or ids.shape[1] != self._window + 1:
            return None
        if any(name not in self._acts for name, _ in hooks):
            return None
        rows = [self._rows.get(r.tobytes()) for r in ids[:, 1:].cpu().numpy().astype(np.int64)]
        return None if any(r is None for r in rows) else rows  # type: ignore[return-value]

    def run_with_hooks(self, ids: torch.Tensor, fwd_hooks: Sequence[tuple[str, Any]] = (), **kwargs: Any) -> Any:
        """The capture hooks run on the cached activations where the pass is all cached, else the model."""
        rows = self._cached_rows(ids, fwd_hooks, kwargs)
        if rows is None:
            self.missed += 1
            return self._bridge.run_with_hooks(ids, fwd_hooks=fwd_hooks, **kwargs)
        self.served += 1
        w = self._window
        index = (np.asarray(rows)[:, None] * w + np.arange(w)[None]).reshape(-1)
        for name, hook in sorted(fwd_hooks, key=lambda h: _depth(h[0])):  # as a real pass: the deepest ends it
            stored = self._acts[name]
            acts = torch.zeros(len(rows), w + 1, stored.shape[1])  # BOS (not cached) left at zero
            acts[:, 1:] = torch.from_numpy(np.asarray(stored[index], dtype=np.float32)).reshape(len(rows), w, -1)
            hook(acts, name)
        return None


def cached_view(model: LoadedModel, config: TrainConfig) -> LoadedModel:
    """``model`` (a dictionary's view) with its bridge answering the cached windows from the training
    files; the dictionary's hooks must be the ones trained (``config.hook`` at ``config.layers``)."""
    windows = make_windows(model, None, config.window, part="build")
    files = collect(model, config)  # the finished files (collects them where they are missing)
    acts = {config.hook.format(layer=layer): files[layer] for layer in config.layers}
    return replace(model, bridge=CachedBridge(model.bridge, windows, acts))

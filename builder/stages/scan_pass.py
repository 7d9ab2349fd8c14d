"""The scan's one pass: every neuron's running top-k windows and a sampled histogram, per layer.

In: a model, token windows ``(n_windows, window)``, the layers to scan, a span of the windows.
Out: a :class:`LayerState` per layer: each neuron's ``top_k`` windows so far (their largest
activations, window ids and the activation along each) and a histogram of a sample of its
activations. :func:`top_k_pass` runs the windows in batches, one pass to the deepest layer for
every layer at once, and checkpoints itself every ``checkpoint_seconds``; states of disjoint
spans merge into the whole pass's (:meth:`LayerState.merge`, the distributed scan's parts).
``builder.stages.scan`` turns finished states into :class:`~builder.stages.scan.LayerScan` records.

Statistics. Counting, for every neuron, the tokens at >= 0.5 x its max needs the max, which is
known only at the end. Two sources give it in one pass: the top windows' traces hold every firing
token of a neuron whose k-th window is below half its max (exact); for denser neurons a
histogram of a random 1-in-``sample_stride`` token sample (16 bins an octave) estimates
it, and the larger of the two is kept (:func:`layer_stats`). The quantiles come from the same
histogram.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from builder.config import ScanConfig
from builder.forward import run_layers
from builder.models import LoadedModel
from store.errors import Cancelled
from store.metrics import FIRING_THRESHOLD
from store.progress import Progress

log = logging.getLogger(__name__)

QUANTILES = (0.5, 0.9, 0.99, 0.999)
"""Activation quantiles recorded per neuron."""
BINS_PER_OCTAVE = 16
LOW_EXP, HIGH_EXP = -8, 8
"""The histogram covers raw activations from 2^-8 to 2^8; lower ones (negatives included) share
bin 0, higher ones the top bin."""
N_BINS = (HIGH_EXP - LOW_EXP) * BINS_PER_OCTAVE + 2


@dataclass
class LayerState:
    """Running top-k windows and the sampled histogram of one layer."""

    values: torch.Tensor  # (k, d_mlp) descending
    index: torch.Tensor  # (k, d_mlp) window ids
    traces: torch.Tensor  # (k, d_mlp, window)
    hist: torch.Tensor  # (d_mlp, N_BINS) sampled token counts
    pending: list[torch.Tensor]  # sampled rows (tokens, d_mlp) not yet in the histogram

    @classmethod
    def empty(cls, k: int, d: int, width: int) -> LayerState:
        return cls(torch.full((k, d), -torch.inf), torch.full((k, d), -1, dtype=torch.int32),
                   torch.zeros((k, d, width)), torch.zeros((d, N_BINS), dtype=torch.int64), [])

    def add(self, acts: torch.Tensor, ids: torch.Tensor, sample: torch.Tensor) -> None:
        """Merge a batch: ``acts`` (batch, pos, d_mlp), ``ids`` (batch,) window ids."""
        k, d = self.values.shape
        best = acts.amax(dim=1)  # (batch, d_mlp)
        # Only neurons with a window beating their k-th best need a merge; after the first
        # batches that is a small share, which keeps the pass close to a plain forward.
        changed = (best > self.values[-1]).any(dim=0).nonzero().squeeze(1)  # (c,)
        if changed.numel():
            values = torch.cat([self.values[:, changed], best[:, changed]])  # (k + batch, c)
            index = torch.cat([self.index[:, changed], ids[:, None].expand(-1, len(changed))])
            traces = torch.cat([self.traces[:, changed],
                                acts[:, :, changed].transpose(1, 2)])  # (k + batch, c, pos)
            top, order = values.topk(k, dim=0)  # (k, c)
            self.values[:, changed] = top
            self.index[:, changed] = index.gather(0, order)
            self.traces[:, changed] = traces.gather(0, order[..., None].expand(-1, -1, traces.shape[2]))
        self.pending.append(acts.reshape(-1, d)[sample])
        if sum(len(p) for p in self.pending) >= 4096:
            self.flush()

    def merge(self, other: LayerState) -> None:
        """Fold in the state of a disjoint range of windows (a distributed scan's parts): the top
        ``k`` of the two top-``k`` lists is the top ``k`` of both ranges, and counts add."""
        self.flush()
        other.flush()
        k = self.values.shape[0]
        top, order = torch.cat([self.values, other.values]).topk(k, dim=0)  # (k, d_mlp)
        traces = torch.cat([self.traces, other.traces])  # (2k, d_mlp, window)
        self.index = torch.cat([self.index, other.index]).gather(0, order)
        self.traces = traces.gather(0, order[..., None].expand(-1, -1, traces.shape[2]))
        self.values = top
        self.hist += other.hist

    def flush(self) -> None:
        """Add the pending sampled tokens to the histogram (in bulk: its cost is per call)."""
        if not self.pending:
            return
        x = torch.cat(self.pending).contiguous()  # (tokens, d_mlp) float32
        self.pending = []
        d = x.shape[1]
        # The bin is read off the float's bits: 8 exponent bits and the top 4 mantissa bits give
        # 16 bins an octave with no logarithm (a tenth of the cost).
        bins = (x.view(torch.int32) >> 19) - ((127 + LOW_EXP) << 4) + 1
        bins = bins.clamp_(1, N_BINS - 1).masked_fill_(x < 2.0 ** LOW_EXP, 0)
        flat = (bins + torch.arange(d, dtype=torch.int32) * N_BINS).flatten()
        self.hist += torch.bincount(flat, minlength=d * N_BINS).view(d, N_BINS)


def _edges() -> np.ndarray:
    """Lower edges of histogram bins 1 .. N_BINS - 1, then the top bin's upper edge."""
    j = np.arange(N_BINS)  # bin j >= 1 starts at 2^e (1 + m / 16)
    e, m = (j // BINS_PER_OCTAVE) + LOW_EXP, j % BINS_PER_OCTAVE
    return 2.0 ** e * (1 + m / BINS_PER_OCTAVE)


def layer_stats(state: LayerState, n_tokens: int) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """Density and quantiles of one layer from its top-k traces and sampled histogram."""
    hist = state.hist.numpy().astype(np.float64)  # (d, bins)
    sampled = np.maximum(hist.sum(axis=1), 1)  # (d,)
    values = state.values.numpy()
    maxes = values[0]
    edges = _edges()  # edges[j - 1] is the lower edge of bin j
    # Exact count of firing tokens inside the top windows.
    in_top = (state.traces.numpy() >= FIRING_THRESHOLD * maxes[None, :, None]).sum(axis=(0, 2))
    # Estimate from the sample: the bins above the threshold, plus the straddling bin's share.
    threshold = FIRING_THRESHOLD * maxes
    j = np.clip(np.searchsorted(edges, threshold, side="right"), 1, N_BINS - 1)  # its bin
    low, high = edges[j - 1], edges[j]
    inside = np.clip((high - threshold) / (high - low), 0, 1)
    tail = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]  # tail[n, b] = sampled tokens in bins >= b
    rows = np.arange(len(maxes))
    above = np.where(j + 1 < N_BINS, tail[rows, np.minimum(j + 1, N_BINS - 1)], 0)
    estimate = (above + hist[rows, j] * inside) / sampled
    exact = values[-1] < threshold  # no window outside the top k can hold a firing token
    density = np.where(exact, in_top / n_tokens, np.maximum(estimate, in_top / n_tokens))
    density = np.where(maxes > 0, density, 0.0)
    cum = np.cumsum(hist, axis=1) / sampled[:, None]
    quantiles = {}
    for q in QUANTILES:
        b = np.minimum((cum < q).sum(axis=1), N_BINS - 1)  # first bin reaching q
        mid = (edges[np.maximum(b - 1, 0)] + edges[b]) / 2
        quantiles[q] = np.where(b == 0, 0.0, mid).astype(np.float32)
    return density.astype(np.float32), quantiles


def checkpoint_path(folder: Path, layers: Sequence[int]) -> Path:
    return folder / f"partial-{'-'.join(map(str, layers))}.pt"


def top_k_pass(model: LoadedModel, windows: np.ndarray, layers: Sequence[int], config: ScanConfig,
                folder: Path | None, progress: Progress | None,
                cancel: threading.Event | None, span: tuple[int, int] | None = None) -> dict[int, LayerState]:
    """The top-k states of windows ``span`` (default: all); a span starting on a multiple of
    ``config.batch_size`` samples the same tokens as the whole pass does, so merged spans
    (``LayerState.merge``) equal the whole pass."""
    n, width = windows.shape
    k = min(config.top_k, n)
    first, n = span if span is not None else (0, n)
    checkpoint = checkpoint_path(folder, layers) if folder is not None else None
    start = first
    if checkpoint is not None and checkpoint.is_file():
        saved = torch.load(checkpoint, weights_only=True)
        state = {layer: LayerState(**saved["layers"][layer], pending=[]) for layer in layers}
        start = int(saved["next"])
        log.info("resuming the scan of layers %s at window %d of %d", list(layers), start, n)
    else:
        state = {layer: LayerState.empty(k, model.d_mlp, width) for layer in layers}
    bar = tqdm(total=(n - first) * width, initial=(start - first) * width, unit="tok", unit_scale=True,
               desc=f"scan {len(layers)} layer(s) up to {max(layers)}", disable=progress is not None)
    saved_at = time.monotonic()
    for batch_start in range(start, n, config.batch_size):
        if cancel is not None and cancel.is_set():
            if checkpoint is not None:
                checkpoint.unlink(missing_ok=True)
            raise Cancelled(f"scan of layers {list(layers)} cancelled at window {batch_start} of {n}")
        batch = windows[batch_start:min(n, batch_start + config.batch_size)]
        acts = run_layers(model, batch.tolist(), layers)
        ids = torch.arange(batch_start, batch_start + len(batch), dtype=torch.int32)
        # A seeded 1-in-stride sample of the batch's tokens, the same on a resumed run.
        gen = torch.Generator().manual_seed(config.seed * 1_000_003 + batch_start)
        sample = torch.randperm(batch.size, generator=gen)[:math.ceil(batch.size / config.sample_stride)]
        for layer in layers:
            state[layer].add(acts[layer].cpu(), ids, sample)
        bar.update(batch.size)
        if progress is not None:
            progress(batch_start + len(batch) - first, n - first, f"scanning layers {list(layers)}")
        if checkpoint is not None and time.monotonic() - saved_at > config.checkpoint_seconds:
            _save_checkpoint(checkpoint, state, batch_start + len(batch))
            saved_at = time.monotonic()
    bar.close()
    for s in state.values():
        s.flush()
    return state


def _save_checkpoint(path: Path, state: dict[int, LayerState], next_window: int) -> None:
    for s in state.values():
        s.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # per process, as in LayerScan.save
    torch.save({"next": next_window,
                "layers": {layer: {"values": s.values, "index": s.index, "traces": s.traces,
                                   "hist": s.hist} for layer, s in state.items()}}, tmp)
    tmp.replace(path)

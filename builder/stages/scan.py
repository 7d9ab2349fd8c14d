"""The activation scan: top-k corpus windows and statistics of every neuron, in one pass.

In: a model, token windows ``(n_windows, window)``, the layers to scan. Out, per layer, a
:class:`LayerScan`: for every neuron its ``top_k`` windows (by the window's largest activation),
the activation along each, the neuron's largest activation (the normaliser), its firing density
and activation quantiles, and the activations of a fixed set of random windows (negatives for
fidelity). Each pass stops inside the deepest requested layer, so one pass over the corpus serves
every layer at once (``n2g scan``: all 30 layers of SmolLM2).

Scans are cached as ``.npz`` files under ``$N2G_CACHE/scans/<model>/<windows hash>-...``, one per
layer; a cached layer is not scanned again, and a cache with more windows per neuron serves a
request for fewer. A long scan checkpoints itself every few minutes and resumes from the
checkpoint after a crash; cancelling deletes the checkpoint, so no partial scan is ever read.

Statistics. Counting, for every neuron, the tokens at >= 0.5 x its max needs the max, which is
known only at the end. Two sources give it in one pass: the top windows' traces hold every firing
token of a neuron whose k-th window is below half its max (exact); for denser neurons a
histogram of a random 1-in-``sample_stride`` token sample (16 bins an octave) estimates
it, and the larger of the two is kept. The quantiles come from the same histogram.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from builder.config import ScanConfig
from builder.corpus import windows_key
from builder.forward import run_layers
from builder.models import LoadedModel, cache_dir
from store.errors import Cancelled
from store.metrics import FIRING_THRESHOLD
from store.names import file_safe
from store.progress import Progress
from store.scanfile import ScanFile, write_scan_file

log = logging.getLogger(__name__)

QUANTILES = (0.5, 0.9, 0.99, 0.999)
"""Activation quantiles recorded per neuron."""
BINS_PER_OCTAVE = 16
LOW_EXP, HIGH_EXP = -8, 8
"""The histogram covers raw activations from 2^-8 to 2^8; lower ones (negatives included) share
bin 0, higher ones the top bin."""
N_BINS = (HIGH_EXP - LOW_EXP) * BINS_PER_OCTAVE + 2


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
    density: np.ndarray | None = None
    """``(d_mlp,)`` share of corpus tokens at >= 0.5 x the neuron's max (None: not recorded)."""
    quantiles: dict[float, np.ndarray] = field(default_factory=dict)
    """``{q: (d_mlp,)}`` raw activation quantiles."""
    traced: np.ndarray | None = None
    """``(m,)`` the neurons whose traces were measured (None: every neuron). A scan read from a
    scan file measures only the neurons a build asks for; the others' traces are zeros."""

    @property
    def max_activation(self) -> np.ndarray:
        """``(d_mlp,)`` each neuron's largest activation in the corpus."""
        return self.values[0]

    def head(self, k: int) -> LayerScan:
        """The same scan with only the top ``k`` windows per neuron."""
        return LayerScan(self.layer, self.values[:k], self.windows[:k], self.traces[:k],
                         self.random_windows, self.random_traces, self.density, self.quantiles,
                         self.traced)

    def save(self, path: Path) -> None:
        """Write to ``path`` (through a temporary file, so a crash leaves no half scan)."""
        # The process id keeps workers that scan the same layer at once off each other's file.
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")
        stats = {} if self.density is None else {
            "density": self.density, "quantile_levels": np.array(sorted(self.quantiles)),
            "quantiles": np.stack([self.quantiles[q] for q in sorted(self.quantiles)])}
        if self.traced is not None:
            stats["traced"] = self.traced
        np.savez(tmp, layer=self.layer, values=self.values, windows=self.windows, traces=self.traces,
                 random_windows=self.random_windows, random_traces=self.random_traces, **stats)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> LayerScan:
        """Read a scan written by :meth:`save`."""
        with np.load(path) as z:
            density = z["density"] if "density" in z else None
            quantiles = ({float(q): z["quantiles"][i] for i, q in enumerate(z["quantile_levels"])}
                         if "quantiles" in z else {})
            return cls(layer=int(z["layer"]), values=z["values"], windows=z["windows"],
                       traces=z["traces"], random_windows=z["random_windows"],
                       random_traces=z["random_traces"], density=density, quantiles=quantiles,
                       traced=z["traced"] if "traced" in z else None)


def _regime(model: LoadedModel) -> str:
    """The end of a cache folder's name: the hook, and the numeric type unless float32 (so
    float32 caches keep the names they had before the type was a choice)."""
    hook = file_safe(model.hook_template)
    return hook if model.dtype == "float32" else f"{hook}-{model.dtype}"


def _folder_name(key: str, k: int, config: ScanConfig, model: LoadedModel) -> str:
    return f"{key}-k{k}-r{config.random_windows}-s{config.seed}-{_regime(model)}"


def scan_dir(model: LoadedModel, windows: np.ndarray, config: ScanConfig) -> Path:
    """The cache folder of one model, corpus and scan configuration."""
    return (cache_dir() / "scans" / file_safe(model.name)
            / _folder_name(windows_key(windows), config.top_k, config, model))


def _cached_layer(model: LoadedModel, windows: np.ndarray, config: ScanConfig,
                  layer: int) -> LayerScan | None:
    """A cached scan of the layer with at least ``top_k`` windows per neuron, cut to ``top_k``."""
    base = scan_dir(model, windows, config)
    pattern = f"{windows_key(windows)}-k*-r{config.random_windows}-s{config.seed}-{_regime(model)}"
    for folder in [base, *sorted(base.parent.glob(pattern))]:
        k = int(folder.name.split("-k", 1)[1].split("-", 1)[0])
        path = folder / f"layer{layer}.npz"
        if k >= config.top_k and path.is_file():
            return LayerScan.load(path).head(config.top_k)
    return None


# -- the pass --------------------------------------------------------------------------------


@dataclass
class _LayerState:
    """Running top-k windows and the sampled histogram of one layer."""

    values: torch.Tensor  # (k, d_mlp) descending
    index: torch.Tensor  # (k, d_mlp) window ids
    traces: torch.Tensor  # (k, d_mlp, window)
    hist: torch.Tensor  # (d_mlp, N_BINS) sampled token counts
    pending: list[torch.Tensor]  # sampled rows (tokens, d_mlp) not yet in the histogram

    @classmethod
    def empty(cls, k: int, d: int, width: int) -> _LayerState:
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

    def merge(self, other: _LayerState) -> None:
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


def _stats(state: _LayerState, n_tokens: int) -> tuple[np.ndarray, dict[float, np.ndarray]]:
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


def _checkpoint_path(folder: Path, layers: Sequence[int]) -> Path:
    return folder / f"partial-{'-'.join(map(str, layers))}.pt"


def _top_k_pass(model: LoadedModel, windows: np.ndarray, layers: Sequence[int], config: ScanConfig,
                folder: Path | None, progress: Progress | None,
                cancel: threading.Event | None, span: tuple[int, int] | None = None) -> dict[int, _LayerState]:
    """The top-k states of windows ``span`` (default: all); a span starting on a multiple of
    ``config.batch_size`` samples the same tokens as the whole pass does, so merged spans
    (``_LayerState.merge``) equal the whole pass."""
    n, width = windows.shape
    k = min(config.top_k, n)
    first, n = span if span is not None else (0, n)
    checkpoint = _checkpoint_path(folder, layers) if folder is not None else None
    start = first
    if checkpoint is not None and checkpoint.is_file():
        saved = torch.load(checkpoint, weights_only=True)
        state = {layer: _LayerState(**saved["layers"][layer], pending=[]) for layer in layers}
        start = int(saved["next"])
        log.info("resuming the scan of layers %s at window %d of %d", list(layers), start, n)
    else:
        state = {layer: _LayerState.empty(k, model.d_mlp, width) for layer in layers}
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


def _save_checkpoint(path: Path, state: dict[int, _LayerState], next_window: int) -> None:
    for s in state.values():
        s.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # per process, as in LayerScan.save
    torch.save({"next": next_window,
                "layers": {layer: {"values": s.values, "index": s.index, "traces": s.traces,
                                   "hist": s.hist} for layer, s in state.items()}}, tmp)
    tmp.replace(path)


def scan_file_serves(scan_file: ScanFile | None, windows: np.ndarray, config: ScanConfig) -> bool:
    """Whether a shipped scan file was made over these windows with at least ``top_k`` each."""
    return (scan_file is not None and scan_file.meta["windows_key"] == windows_key(windows)
            and scan_file.top_k >= config.top_k and scan_file.meta["seed"] == config.seed
            and len(scan_file.random_windows) == min(config.random_windows, len(windows)))


def scan(model: LoadedModel, windows: np.ndarray, layers: Sequence[int], config: ScanConfig,
         progress: Progress | None = None, use_cache: bool = True,
         cancel: threading.Event | None = None, scan_file: ScanFile | None = None,
         neurons: Sequence[int] | None = None) -> dict[int, LayerScan]:
    """Scan the corpus for the given layers, reusing cached layers or a shipped scan file.

    Args:
        model: the loaded model.
        windows: ``(n_windows, window)`` token ids.
        layers: layers to return.
        config: scan settings (``top_k``, ``random_windows``, ``batch_size``, ``seed``, ...).
        progress: called as ``progress(done, total, message)``; without it a tqdm bar is shown.
        use_cache: read and write the on-disk cache (and checkpoint long scans there).
        cancel: set it to stop between batches.
        scan_file: a shipped whole-model scan; where it was made over the same windows, a layer
            missing from the cache is read from it instead of scanned (see
            :func:`layer_scans_from_file`: only ``neurons`` get traces, in one pass for all
            the layers it serves).
        neurons: the neurons the caller needs (None: all).

    Raises:
        Cancelled: when ``cancel`` is set; nothing of the unfinished scan is kept.
    """
    for layer in layers:
        model.check_layer(layer)
    folder = scan_dir(model, windows, config)
    out: dict[int, LayerScan] = {}
    missing = []
    from_file = []
    for layer in sorted(set(layers)):
        cached = _cached_layer(model, windows, config, layer) if use_cache else None
        if cached is not None:
            out[layer] = cached
        elif scan_file_serves(scan_file, windows, config):
            from_file.append(layer)
        else:
            missing.append(layer)
    if from_file:  # one pass for every layer the file serves and no earlier pass kept
        wanted = range(model.d_mlp) if neurons is None else neurons
        kept = {layer: _kept_traces(folder, layer, scan_file, config) for layer in from_file} if use_cache else {}
        run = [layer for layer in from_file if not _covers(kept.get(layer), wanted)]
        made = layer_scans_from_file(model, scan_file, run, wanted, config, progress=progress,
                                     cancel=cancel) if run else {}
        for layer in run:
            if kept.get(layer) is not None:
                made[layer] = _merge_traces(made[layer], kept[layer])
            if use_cache and len(made[layer].traced) * len(run) >= KEEP_TRACES:
                folder.mkdir(parents=True, exist_ok=True)
                made[layer].save(_traces_path(folder, layer))
        out.update({layer: made[layer] if layer in made else kept[layer] for layer in from_file})
    if not missing:
        return out

    state = _top_k_pass(model, windows, missing, config, folder if use_cache else None,
                        progress, cancel)
    out.update(_layer_scans(model, windows, config, state))
    if use_cache:
        folder.mkdir(parents=True, exist_ok=True)
        for layer in missing:
            out[layer].save(folder / f"layer{layer}.npz")
        _checkpoint_path(folder, missing).unlink(missing_ok=True)
    return out


# -- traces measured again from a scan file, kept until their layer is built ------------------
# A whole-model build's first step, the pass over every top window to the deepest layer, takes
# 15-40 min on a CPU: a build stopped after it resumes without running it again.


KEEP_TRACES = 256
"""Neuron traces (summed over the pass's layers) a pass must measure to be kept on disk: a live
build of a few neurons measures its traces again in seconds, a whole layer takes minutes."""


def _traces_path(folder: Path, layer: int) -> Path:
    return folder / f"layer{layer}.traced.npz"


def _kept_traces(folder: Path, layer: int, scan_file: ScanFile, config: ScanConfig) -> LayerScan | None:
    """The traces an earlier build measured for this layer from the same scan file, if any."""
    path = _traces_path(folder, layer)
    if not path.is_file():
        return None
    try:
        kept = LayerScan.load(path)
    except (OSError, ValueError, KeyError) as exc:  # a damaged cache file costs a pass, no more
        log.warning("ignoring %s: %s", path, exc)
        return None
    k = min(config.top_k, scan_file.top_k)
    same = (kept.traced is not None and kept.windows.shape[0] == k
            and np.array_equal(kept.windows, scan_file.top_window[layer, :k]))
    return kept if same else None


def _covers(kept: LayerScan | None, neurons: Sequence[int]) -> bool:
    return kept is not None and kept.traced is not None and bool(np.isin(neurons, kept.traced).all())


def _merge_traces(new: LayerScan, old: LayerScan) -> LayerScan:
    """``new`` with the traces of neurons only ``old`` measured copied in."""
    extra = np.setdiff1d(old.traced, new.traced)
    new.traces[:, extra] = old.traces[:, extra]
    new.values[:, extra] = old.values[:, extra]
    new.traced = np.union1d(new.traced, old.traced)
    return new


def forget_traces(model: LoadedModel, windows: np.ndarray, config: ScanConfig, layer: int) -> None:
    """Drop the traces kept for a layer (its build finished: 28 MB a layer of SmolLM2)."""
    _traces_path(scan_dir(model, windows, config), layer).unlink(missing_ok=True)


def _layer_scans(model: LoadedModel, windows: np.ndarray, config: ScanConfig,
                 state: dict[int, _LayerState]) -> dict[int, LayerScan]:
    """Each layer's scan from its finished pass: statistics, and the random windows' traces."""
    layers = sorted(state)
    rng = np.random.default_rng(config.seed)
    r = min(config.random_windows, len(windows))
    random_ids = np.sort(rng.choice(len(windows), size=r, replace=False)).astype(np.int32)
    random_acts = run_layers(model, windows[random_ids].tolist(), layers) if r else {}
    out = {}
    for layer in layers:
        s = state[layer]
        density, quantiles = _stats(s, windows.size)
        out[layer] = LayerScan(
            layer=layer,
            values=s.values.numpy().astype(np.float32),
            windows=s.index.numpy(),
            traces=s.traces.numpy().astype(np.float32),
            random_windows=random_ids,
            random_traces=(random_acts[layer].cpu().numpy().astype(np.float32) if r
                           else np.zeros((0, windows.shape[1], model.d_mlp), np.float32)),
            density=density,
            quantiles=quantiles,
        )
    return out


# -- the shipped scan file ---------------------------------------------------------------------


def export_scan_file(model: LoadedModel, windows: np.ndarray, scans: dict[int, LayerScan],
                     path: Path, config: ScanConfig) -> Path:
    """Write every layer's scan as one compact, torch-free file (``store/scanfile.py``)."""
    layers = sorted(scans)
    if layers != list(range(model.n_layers)):
        raise ValueError(f"a scan file needs every layer of {model.name}; got {layers}")
    top_value = np.stack([scans[layer].values for layer in layers])  # (L, k, d)
    top_position = np.stack([scans[layer].traces.argmax(axis=2) for layer in layers])
    missing = [layer for layer in layers if scans[layer].density is None]
    if missing:
        raise ValueError(f"layers {missing} were scanned without statistics; scan them again")
    return write_scan_file(
        path, model=model.name, hook=model.hook_template, vocab=model.vocab, windows=windows,
        top_window=np.stack([scans[layer].windows for layer in layers]),
        top_position=top_position, top_value=top_value,
        max_activation=top_value[:, 0], density=np.stack([scans[layer].density for layer in layers]),
        quantiles={q: np.stack([scans[layer].quantiles[q] for layer in layers]) for q in QUANTILES},
        mean=np.stack([scans[layer].random_traces.mean(axis=(0, 1)) for layer in layers]),
        random_windows=scans[layers[0]].random_windows, seed=config.seed,
        windows_key=windows_key(windows))


def layer_scans_from_file(model: LoadedModel, scan_file: ScanFile, layers: Sequence[int],
                          neurons: Sequence[int], config: ScanConfig, progress: Progress | None = None,
                          cancel: threading.Event | None = None) -> dict[int, LayerScan]:
    """Several layers' scans for some neurons, from a shipped scan file: their top windows are
    known, their traces are measured again, in the model's numeric type. One pass over the
    windows any of them needs (and the random ones), to the deepest layer, serves every layer
    and neuron: a whole-model build runs the corpus's top windows once, never once per layer or
    per batch. Traces of other neurons are left at zero.

    Memory: the traces kept (``k x d_mlp x window`` floats a layer) and one batch's activations;
    each batch is scattered into the traces as it comes. ``progress`` and ``cancel`` as in
    :func:`scan` (a whole-model build's pass runs most of the corpus, minutes on a CPU)."""
    layers = sorted(set(layers))
    for layer in layers:
        model.check_layer(layer)
    k = min(config.top_k, scan_file.top_k)
    chosen = np.asarray(sorted(set(neurons)), dtype=np.int64)  # (m,)
    window_ids = {layer: scan_file.top_window[layer, :k].astype(np.int64) for layer in layers}  # (k, d)
    needed = np.unique(np.concatenate([window_ids[layer][:, chosen].ravel() for layer in layers]))
    random_ids = scan_file.random_windows.astype(np.int64)
    rows = np.concatenate([needed, random_ids])
    windows = scan_file.windows.astype(np.int64)
    width = windows.shape[1]
    # Per layer, every (rank, neuron) trace wanted, sorted by its row in ``rows``, so that a batch
    # of rows owns one contiguous run of them.
    wanted: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for layer in layers:
        row = np.searchsorted(needed, window_ids[layer][:, chosen]).ravel()  # (k * m,)
        rank, column = np.divmod(np.arange(row.size), len(chosen))
        order = np.argsort(row, kind="stable")
        wanted[layer] = (row[order], rank[order], chosen[column[order]])
    traces = {layer: np.zeros((k, model.d_mlp, width), np.float32) for layer in layers}
    random_traces = {layer: np.zeros((len(random_ids), width, model.d_mlp), np.float32)
                     for layer in layers}
    desc = f"traces of {len(chosen)} neuron(s), layer(s) {layers[0]}-{layers[-1]}"
    bar = tqdm(total=len(rows) * width, unit="tok", unit_scale=True, desc=desc, disable=progress is not None)
    for start in range(0, len(rows), config.batch_size):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"{desc} cancelled at window {start} of {len(rows)}")
        end = min(start + config.batch_size, len(rows))
        acts = run_layers(model, windows[rows[start:end]].tolist(), layers)
        for layer in layers:
            a = acts[layer].cpu().numpy()  # (batch, pos, d)
            row, rank, neuron = wanted[layer]
            lo, hi = np.searchsorted(row, [start, end])
            traces[layer][rank[lo:hi], neuron[lo:hi]] = a[row[lo:hi] - start, :, neuron[lo:hi]]
            first_random = max(start, len(needed))  # rows from here on are random windows
            if first_random < end:
                random_traces[layer][first_random - len(needed):end - len(needed)] = a[first_random - start:]
        bar.update((end - start) * width)
        if progress is not None:
            progress(end, len(rows), f"{desc}: {end}/{len(rows)} windows")
    bar.close()
    out = {}
    for layer in layers:
        values = scan_file.top_value[layer, :k].astype(np.float32)  # (k, d), float16 precision
        values[0] = scan_file.max_activation[layer]
        values[:, chosen] = traces[layer][:, chosen].max(axis=2)
        out[layer] = LayerScan(
            layer=layer, values=values, windows=window_ids[layer].astype(np.int32),
            traces=traces[layer], random_windows=random_ids.astype(np.int32),
            random_traces=random_traces[layer], density=scan_file.density[layer], quantiles={
                q: scan_file.quantile[layer, i] for i, q in enumerate(scan_file.meta["quantiles"])},
            traced=chosen)
    return out


def layer_scan_from_file(model: LoadedModel, scan_file: ScanFile, layer: int,
                         neurons: Sequence[int], config: ScanConfig) -> LayerScan:
    """One layer's scan for some neurons, from a shipped scan file (see
    :func:`layer_scans_from_file`)."""
    return layer_scans_from_file(model, scan_file, [layer], neurons, config)[layer]

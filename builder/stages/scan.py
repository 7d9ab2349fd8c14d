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
The pass itself, and how density and quantiles come out of it, is ``builder.stages.scan_pass``.

Where a shipped whole-model scan file (``store/scanfile.py``) was made over the same windows, a
layer is read from it instead: its top windows are known, and only the traces of the neurons a
build asks for are measured again (:func:`layer_scans_from_file`). :func:`export_scan_file`
writes one.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from builder.config import ScanConfig
from builder.corpus import windows_key
from builder.forward import run_layers
from builder.models import LoadedModel
from builder.stages.scan_pass import QUANTILES, LayerState, checkpoint_path, layer_stats, top_k_pass
from store.errors import Cancelled
from store.models import cache_dir
from store.names import file_safe
from store.progress import Progress
from store.scanfile import ScanFile, write_scan_file

log = logging.getLogger(__name__)


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
    hook = file_safe(model.hook_template) if model.units is None else \
        f"units-{file_safe(model.units.name)}-{model.units.fingerprint}"
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

    state = top_k_pass(model, windows, missing, config, folder if use_cache else None,
                        progress, cancel)
    out.update(layer_scans_from_pass(model, windows, config, state))
    if use_cache:
        folder.mkdir(parents=True, exist_ok=True)
        for layer in missing:
            out[layer].save(folder / f"layer{layer}.npz")
        checkpoint_path(folder, missing).unlink(missing_ok=True)
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


def layer_scans_from_pass(model: LoadedModel, windows: np.ndarray, config: ScanConfig,
                          state: dict[int, LayerState]) -> dict[int, LayerScan]:
    """Each layer's scan from its finished pass: statistics, and the random windows' traces."""
    layers = sorted(state)
    rng = np.random.default_rng(config.seed)
    r = min(config.random_windows, len(windows))
    random_ids = np.sort(rng.choice(len(windows), size=r, replace=False)).astype(np.int32)
    random_acts = run_layers(model, windows[random_ids].tolist(), layers) if r else {}
    out = {}
    for layer in layers:
        s = state[layer]
        density, quantiles = layer_stats(s, windows.size)
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
    covered = list(range(model.n_layers)) if model.units is None else sorted(model.units.layers)
    if layers != covered:
        raise ValueError(f"a scan file needs every layer of {model.name} {model.units_name} "
                         f"({covered}); got {layers}")
    missing = [layer for layer in layers if scans[layer].density is None]
    if missing:
        raise ValueError(f"layers {missing} were scanned without statistics; scan them again")
    first = scans[layers[0]]

    def stacked(get) -> np.ndarray:
        """``(n_layers, ...)`` of one field, zeros at the layers a dictionary does not cover."""
        parts = {layer: np.asarray(get(scans[layer])) for layer in layers}
        blank = np.zeros_like(parts[layers[0]])
        return np.stack([parts.get(layer, blank) for layer in range(model.n_layers)])
    top_value = stacked(lambda s: s.values)  # (L, k, d)
    return write_scan_file(
        path, model=model.name, hook=model.hook_template if model.units is None else
        ",".join(model.units.layer(layer).hook_in for layer in layers), vocab=model.vocab, windows=windows,
        top_window=stacked(lambda s: s.windows), top_position=stacked(lambda s: s.traces.argmax(axis=2)),
        top_value=top_value, max_activation=top_value[:, 0], density=stacked(lambda s: s.density),
        quantiles={q: stacked(lambda s, q=q: s.quantiles[q]) for q in QUANTILES},
        mean=stacked(lambda s: s.random_traces.mean(axis=(0, 1))),
        random_windows=first.random_windows, seed=config.seed, windows_key=windows_key(windows),
        units=None if model.units is None else model.units.name, layers=layers)


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

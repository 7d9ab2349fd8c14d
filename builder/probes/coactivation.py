"""The neurons that fire with a target, measured on the model: Pearson correlation over fixed windows.

In: a target neuron, the model's scan file (for the target's top windows), the corpus's build
split, and the layers to search. Out: every neuron of those layers ranked by the correlation of
its activation with the target's over every token of

- the target's top windows from the scan (where it fires), those of held-out documents left out
  (the held-out split is never read: ``builder.corpus``), and
- as many random windows of the build split (where it mostly does not), drawn with a fixed seed
  so that the same call reads the same windows,

as Neuronpedia's "correlated neurons". Random text matters: on top windows alone two neurons
that both fire on, say, code would correlate through the text's kind rather than their tokens.
The passes read every requested layer at once and stop inside the deepest (the target's layer
included); each batch is reduced on the device to float64 sums (``store.coactivation.CorrelationSums``),
so memory holds one batch of activations, at most :data:`CAPTURE_FLOATS` floats.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from builder.corpus import heldout_mask, make_windows, windows_key
from builder.forward import run_layers
from builder.models import LoadedModel
from store.coactivation import CorrelationSums, by_correlation
from store.errors import BadArgument, Cancelled
from store.probes import Coactivation, Neuron
from store.progress import Progress
from store.names import neuron_id
from store.scanfile import ScanFile

SEED = 0
"""Seed of the random build-split windows (fixed: the same target reads the same windows)."""
CAPTURE_FLOATS = 1 << 25
"""Most activations one pass captures over all the layers read (128 MB in float32): on SmolLM2's
30 layers, about 11 windows of 64 tokens a pass."""


@dataclass(frozen=True)
class CorpusSplit:
    """The embedded corpus's windows (as the shipped scans hold them) and which are held out."""

    windows: np.ndarray
    """``(n, window)`` token ids of every document."""
    heldout: np.ndarray
    """``(n,)`` bool: the window's document is held out."""

    @classmethod
    def of(cls, model: LoadedModel, window: int) -> CorpusSplit:
        """Tokenise the embedded corpus (seconds; callers keep the result)."""
        return cls(make_windows(model, None, window), heldout_mask(model, None, window))

    @property
    def key(self) -> str:
        """The windows' content key, as a scan file's ``meta.windows_key`` names its windows."""
        return windows_key(self.windows)


def choose_windows(scan: ScanFile, target: Neuron, split: CorpusSplit,
                   seed: int = SEED) -> tuple[np.ndarray, int, int, bool]:
    """The rows to read: the target's top windows (held-out ones left out where the scan is of
    this corpus) and as many random build-split windows, not among them.

    Returns ``(rows, top windows, held-out windows left out, whether the scan is of this corpus)``.

    Raises:
        BadArgument: where the target has no top window left to read.
    """
    layer, neuron = target
    top = [w.window for w in scan.top(layer, neuron) if w.activation > 0]
    same = scan.meta.get("windows_key") == split.key and len(scan.windows) == len(split.windows)
    left_out = 0
    if same:
        kept = [w for w in top if not split.heldout[w]]
        left_out, top = len(top) - len(kept), kept
    if not top:
        raise BadArgument(f"{neuron_id(*target)} has no top window to correlate over (it never fires in "
                          "the scanned build-split text); by='tokens' compares its graph's tokens instead")
    pool = np.flatnonzero(~split.heldout)
    if same:
        pool = np.setdiff1d(pool, top)
    rng = np.random.default_rng(seed)
    random = np.sort(rng.choice(pool, size=min(len(top), len(pool)), replace=False))
    rows = np.concatenate([scan.windows[top].astype(np.int64), split.windows[random].astype(np.int64)])
    return rows, len(top), left_out, same


def _batch_sums(acts: dict[int, torch.Tensor], target: Neuron,
                layers: Sequence[int]) -> tuple[int, float, float, dict[int, tuple[np.ndarray, ...]]]:
    """One pass's sums, reduced on the device in float64."""
    x = acts[target[0]][:, :, target[1]].reshape(-1).double()  # (tokens,)
    sums = {}
    for layer in layers:
        y = acts[layer].reshape(-1, acts[layer].shape[-1]).double()  # (tokens, d)
        sums[layer] = (y.sum(0).cpu().numpy(), (y * y).sum(0).cpu().numpy(), (x @ y).cpu().numpy())
    return int(x.numel()), float(x.sum()), float((x * x).sum()), sums


def correlate(model: LoadedModel, target: Neuron, rows: np.ndarray, layers: Sequence[int],
              cancel: threading.Event | None = None, progress: Progress | None = None) -> CorrelationSums:
    """The correlation sums of the target with every neuron of ``layers`` over every token of ``rows``
    (``(n, length)``, each run after a BOS as the scan ran its windows).

    Raises:
        store.errors.Cancelled: when ``cancel`` is set (checked before every pass and at every layer).
    """
    read = sorted(set(layers) | {target[0]})
    per_pass = max(1, CAPTURE_FLOATS // (rows.shape[1] * model.d_mlp * len(read)))
    sums = CorrelationSums()
    for start in range(0, len(rows), per_pass):
        if cancel is not None and cancel.is_set():
            raise Cancelled("the correlation passes were cancelled")
        if progress is not None:
            progress(start, len(rows), "reading every layer on the target's top and random windows")
        acts = run_layers(model, rows[start:start + per_pass].tolist(), read, cancel)
        n, sx, sxx, layer_sums = _batch_sums(acts, target, layers)
        sums.add(n, sx, sxx, layer_sums)
    return sums


def coactivation(model: LoadedModel, scan: ScanFile, target: Neuron, layers: Sequence[int], limit: int,
                 split: CorpusSplit, cancel: threading.Event | None = None,
                 progress: Progress | None = None) -> Coactivation:
    """The ``limit`` neurons of ``layers`` most correlated with the target; see the module docstring.

    Raises:
        BadArgument: where the target has no top window to read.
        store.errors.Cancelled: when ``cancel`` is set.
    """
    model.check_layer(target[0])
    model.check_neuron(target[1])
    rows, top, left_out, same = choose_windows(scan, target, split)
    sums = correlate(model, target, rows, layers, cancel, progress)
    return Coactivation(neurons=by_correlation(sums, target, layers, limit, scan), layers=list(layers),
                        top_windows=top, random_windows=len(rows) - top, tokens=sums.n,
                        heldout_left_out=left_out, scan_matches_corpus=same)

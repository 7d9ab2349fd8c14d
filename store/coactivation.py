"""Neighbours by behaviour: the neurons that fire with a target, whatever tokens their graphs name.

Token-set overlap (``store.similarity``) misses a twin whose graph names other tokens: two
neurons may fire on the same texts while their graphs, each fitted from its own top windows,
keep different token spellings (SmolLM2's L1/N404 and L1/N1006 share 23 of their 50 top windows,
at the same token, and one of their 6 and 9 activating tokens: overlap 0.11, against the paper's
0.9). Two measures of co-activation, as Neuronpedia's "correlated neurons":

- **From the scan file alone** (:class:`ScanOverlap`, no model, instant): each neuron's ``k``
  top windows and the token where it peaks in each (``top_window``, ``top_position``). A neuron
  that fires where the target fires holds many of the target's top windows among its own, peaking
  at the same token. :meth:`ScanOverlap.shared` counts, for every neuron of every layer, the
  target's top (window, token) pairs it shares (``shared_tokens``) and its shared windows
  (``shared_windows``, the peak anywhere in the window); neighbours rank by shared tokens, then
  windows. Tokens come first because co-activation is a per-token measure: a neuron that fires
  elsewhere in the same code windows (on another part of the line) shares windows, not tokens.
  Counting is one gather over every neuron's ``k`` entries (46,080 x 50 on SmolLM2, ~0.1 s)
  against a mark array of the target's entries; no inverted index is needed, and the only state
  kept is the packed windows and (window, token) keys, made once a scan file (``overlap_of``,
  18 MB on SmolLM2).
- **On the live model** (the exact measure, ``builder.probes.coactivation``): the Pearson
  correlation of the target's activation with every neuron's over a fixed set of tokens. The
  builder adds each pass's sums to :class:`CorrelationSums` (float64, so that a neuron with a
  large offset keeps its variance), which gives every neuron's r; :func:`by_correlation` ranks.

Entries of a neuron's top list that are not real (a tiny corpus gives fewer than ``k`` windows:
non-finite values) or where it does not fire (value <= 0) count for nothing, and neurons dead in
the corpus (largest activation <= 0) are never listed: their top windows are arbitrary.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence

import numpy as np

from store.probes import CoactiveNeuron, Neuron
from store.scanfile import ScanFile

SCAN_SOURCE, MODEL_SOURCE = "scan", "model"
"""Where a co-activation ranking came from: the scan's shared top windows, or correlation on the model."""


class ScanOverlap:
    """A scan file's top (window, token) entries, packed for counting shared ones; see the module docstring.

    Args:
        scan: the whole-model scan file.
    """

    def __init__(self, scan: ScanFile) -> None:
        n_windows, width = scan.windows.shape
        self.width = int(width)
        self.n_windows = int(n_windows)
        real = np.isfinite(scan.top_value) & (scan.top_value > 0)  # (L, k, d)
        # Entries that count for nothing point at a sentinel window (index n_windows), never marked.
        self.windows = np.where(real, scan.top_window.astype(np.int32), np.int32(n_windows))
        self.keys = self.windows * np.int32(width) + scan.top_position.astype(np.int32)
        self.alive = scan.max_activation > 0  # (L, d)

    @property
    def n_layers(self) -> int:
        return int(self.windows.shape[0])

    def entries(self, layer: int, neuron: int) -> tuple[np.ndarray, np.ndarray]:
        """The neuron's real top windows and their packed (window, token) keys."""
        windows = self.windows[layer, :, neuron]
        keep = windows < self.n_windows
        return windows[keep], self.keys[layer, :, neuron][keep]

    def shared(self, layer: int, neuron: int,
               layers: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(shared_tokens, shared_windows)``, each ``(len(layers), d)``: for every neuron of
        ``layers`` (None: all), how many of the target's top (window, token) pairs and top windows
        are among its own."""
        windows, keys = self.entries(layer, neuron)
        picked = list(range(self.n_layers)) if layers is None else list(layers)
        marked_windows = np.zeros(self.n_windows + 1, dtype=bool)
        marked_windows[windows] = True
        marked_keys = np.zeros((self.n_windows + 1) * self.width, dtype=bool)
        marked_keys[keys] = True
        tokens = marked_keys[self.keys[picked]].sum(axis=1)  # (layers, d)
        shared_windows = marked_windows[self.windows[picked]].sum(axis=1)
        return tokens, shared_windows


_OVERLAPS: weakref.WeakKeyDictionary[ScanFile, ScanOverlap] = weakref.WeakKeyDictionary()
_MAKING = threading.Lock()


def overlap_of(scan: ScanFile) -> ScanOverlap:
    """The scan file's :class:`ScanOverlap`, made once while the file is held open (the server's
    worker threads may ask at once)."""
    with _MAKING:
        overlap = _OVERLAPS.get(scan)
        if overlap is None:
            overlap = _OVERLAPS[scan] = ScanOverlap(scan)
        return overlap


def _items(order: np.ndarray, layers: Sequence[int], d: int, tokens: np.ndarray, windows: np.ndarray,
           r: np.ndarray | None) -> list[CoactiveNeuron]:
    out = []
    for flat in order:
        row, neuron = divmod(int(flat), d)
        out.append(CoactiveNeuron(layer=int(layers[row]), neuron=neuron, shared_tokens=int(tokens[row, neuron]),
                                  shared_windows=int(windows[row, neuron]),
                                  correlation=None if r is None else float(r[row, neuron])))
    return out


def by_scan(scan: ScanFile, target: Neuron, layers: Sequence[int], limit: int) -> list[CoactiveNeuron]:
    """The ``limit`` neurons of ``layers`` sharing most of the target's top (window, token) pairs,
    then most of its top windows (ties: by layer, neuron); neurons sharing none are not listed.
    Empty where the target is dead in the corpus."""
    overlap = overlap_of(scan)
    layer, neuron = target
    if not overlap.alive[layer, neuron]:
        return []
    tokens, windows = overlap.shared(layer, neuron, layers)
    score = tokens.astype(np.int64) * (overlap.windows.shape[1] + 1) + windows  # tokens first, then windows
    score[~overlap.alive[list(layers)]] = 0
    if layer in layers:
        score[list(layers).index(layer), neuron] = 0
    order = np.flatnonzero(score.ravel() > 0)
    # Stable sort on the negated score keeps (layer, neuron) order among ties.
    order = order[np.argsort(-score.ravel()[order], kind="stable")][:limit]
    return _items(order, layers, score.shape[1], tokens, windows, None)


class CorrelationSums:
    """Running sums for the Pearson correlation of one target's activation with every neuron's.

    The builder adds one batch of tokens at a time (:meth:`add`): the target's sums once, each
    layer's sums for it. Float64 throughout.

    >>> sums = CorrelationSums()
    >>> x = np.array([0.0, 1.0, 2.0, 3.0])
    >>> y = np.stack([2 * x, -x, np.ones(4)], axis=1)  # (tokens, neurons)
    >>> sums.add(len(x), x.sum(), (x * x).sum(), {0: (y.sum(0), (y * y).sum(0), x @ y)})
    >>> sums.correlation(0).round(6).tolist()  # the constant neuron has none
    [1.0, -1.0, nan]
    """

    def __init__(self) -> None:
        self.n = 0
        self.sx = 0.0
        self.sxx = 0.0
        self.layers: dict[int, list[np.ndarray]] = {}
        """Per layer ``[sum y, sum y^2, sum x y]``, each ``(d,)``."""

    def add(self, n: int, sx: float, sxx: float, layers: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """Add a batch of ``n`` tokens: the target's sum and sum of squares, and for each layer
        ``(sum y, sum y^2, sum x y)`` over its neurons."""
        self.n += n
        self.sx += float(sx)
        self.sxx += float(sxx)
        for layer, sums in layers.items():
            held = self.layers.get(layer)
            new = [np.asarray(s, dtype=np.float64) for s in sums]
            self.layers[layer] = new if held is None else [h + s for h, s in zip(held, new, strict=True)]

    def correlation(self, layer: int) -> np.ndarray:
        """Every neuron's r with the target, ``(d,)``; NaN where either varies by (next to) nothing."""
        sy, syy, sxy = self.layers[layer]
        n = float(self.n)
        cov = sxy - self.sx * sy / n
        var_x = self.sxx - self.sx * self.sx / n
        var_y = syy - sy * sy / n
        # Relative floors: rounding leaves a constant's variance at ~1e-16 of its sum of squares.
        flat_x = var_x <= 1e-12 * max(self.sxx, 1e-300)
        flat_y = var_y <= 1e-12 * np.maximum(syy, 1e-300)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = cov / np.sqrt(np.maximum(var_x, 0.0) * np.maximum(var_y, 0.0))
        r[flat_y | flat_x] = np.nan
        return np.clip(r, -1.0, 1.0)


def by_correlation(sums: CorrelationSums, target: Neuron, layers: Sequence[int], limit: int,
                   scan: ScanFile | None = None) -> list[CoactiveNeuron]:
    """The ``limit`` neurons of ``layers`` most correlated with the target (ties: by layer, neuron),
    with their shared top windows from the scan where one is given; the target is never listed."""
    layers = list(layers)
    r = np.stack([sums.correlation(layer) for layer in layers])  # (layers, d)
    score = np.where(np.isnan(r), -np.inf, r)
    if target[0] in layers:
        score[layers.index(target[0]), target[1]] = -np.inf
    order = np.flatnonzero(np.isfinite(score.ravel()))
    order = order[np.argsort(-score.ravel()[order], kind="stable")][:limit]
    if scan is not None:
        tokens, windows = overlap_of(scan).shared(*target, layers)
    else:
        tokens = windows = np.zeros(r.shape, dtype=np.int64)
    return _items(order, layers, r.shape[1], tokens, windows, r)

"""The whole-model activation scan as a shipped file: every neuron's top windows and statistics.

In: what ``builder/stages/scan.py`` recorded in one pass over a corpus through every layer. Out: a
compact, versioned ``.npz`` (numpy only, never torch) that answers, for any neuron of any layer,
graph or no graph: its top-activating corpus windows (as token ids and the pivot position), its
largest activation, and how often it fires.

Format (version 1), one ``numpy.savez_compressed`` file, ``<model>.scan.npz`` beside the stores:

==================  ======================  =====================================================
array               shape, dtype            meaning
==================  ======================  =====================================================
``meta``            (bytes,) uint8          UTF-8 JSON: ``format`` ("n2g-scan"), ``version``,
                                            ``model``, ``hook``, ``window``, ``top_k``, ``seed``,
                                            ``windows_key``, ``tokens``, ``quantiles``, ``created``
``vocab``           (bytes,) uint8          UTF-8 JSON list: the token string of every id
``windows``         (n, window) uint16/32   the corpus windows as token ids (no text)
``top_window``      (L, k, d) uint16/32     index into ``windows`` of each neuron's k top windows,
                                            strongest first
``top_position``    (L, k, d) uint8/16      the pivot: position of the window's largest activation
``top_value``       (L, k, d) float16       the window's largest activation (raw)
``max_activation``  (L, d) float32          the neuron's largest activation (the normaliser)
``density``         (L, d) float32          share of corpus tokens at >= 0.5 x max (firing)
``quantile``        (L, q, d) float32       raw activation quantiles (``meta.quantiles``)
``mean``            (L, d) float32          mean activation over the random windows (what a mean
                                            ablation puts in the neuron's place)
``random_windows``  (r,) int32              indices of the random negative windows
==================  ======================  =====================================================

Version 2 (a dictionary's scan, ``<model>.<units>.scan.npz``) adds ``meta.units`` (the
dictionary's name) and ``meta.layers`` (the layers it covers; the arrays keep every layer, zeros
elsewhere, so a layer indexes them as in a neuron scan, and ``d`` is the dictionary's width). A
neuron scan is still written as version 1.

A loader refuses an unknown format or a newer version with a clear error.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from store.errors import ScanFileError
from store.metrics import Rounded
from store.names import NEURONS, file_safe, neuron_id, split_units_key, units_key

SCAN_FORMAT = "n2g-scan"
SCAN_VERSION = 2
SCAN_SUFFIX = ".scan.npz"


def scan_filename(model: str) -> str:
    """The file name of a model's scan in a stores directory.

    >>> scan_filename("smollm2-135m"), scan_filename("smollm2-135m@mlp-3k")
    ('smollm2-135m.scan.npz', 'smollm2-135m.mlp-3k.scan.npz')
    """
    model, units = split_units_key(model)
    return file_safe(model) + ("" if units == NEURONS else "." + file_safe(units)) + SCAN_SUFFIX


@dataclass(frozen=True)
class TopWindow:
    """One of a neuron's top corpus windows."""

    window: int
    """Index of the window in the scanned corpus windows."""
    tokens: list[str]
    pivot: int
    """Position of the window's most activating token."""
    activation: float
    """Raw activation at the pivot."""


class NeuronStats(BaseModel):
    """How a neuron behaves over the whole scanned corpus (from the model's scan file)."""

    # Rounded as top_activations shows them; arithmetic wants the scan's own arrays
    # (ScanFile.max_activation).
    model_config = ConfigDict(frozen=True)

    max_activation: Rounded = Field(description="raw activation that normalises to 1.0")
    density: Rounded = Field(description="share of corpus tokens at which it fires (normalised >= 0.5)")
    quantiles: dict[str, Rounded] = Field(description="raw activation quantiles over corpus tokens, e.g. p99")


def _json_bytes(value: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(value, ensure_ascii=False).encode(), dtype=np.uint8)


def _smallest_uint(limit: int) -> type[np.unsignedinteger]:
    for dtype in (np.uint8, np.uint16, np.uint32):
        if limit <= np.iinfo(dtype).max:
            return dtype
    return np.uint64


def write_scan_file(path: str | os.PathLike[str], *, model: str, hook: str, vocab: list[str],
                    windows: np.ndarray, top_window: np.ndarray, top_position: np.ndarray,
                    top_value: np.ndarray, max_activation: np.ndarray, density: np.ndarray,
                    quantiles: dict[float, np.ndarray], mean: np.ndarray,
                    random_windows: np.ndarray, seed: int, windows_key: str,
                    units: str | None = None, layers: list[int] | None = None) -> Path:
    """Write a scan file (through a temporary file, so a crash leaves none half written).

    Args:
        path: the ``.scan.npz`` to write.
        model, hook: what was scanned.
        vocab: token string of every token id.
        windows: ``(n, window)`` token ids.
        top_window, top_position, top_value: ``(L, k, d)`` per layer, rank and neuron.
        max_activation, density, mean: ``(L, d)``.
        quantiles: ``{q: (L, d)}`` raw activation quantiles.
        random_windows: ``(r,)`` indices of the random negative windows.
        seed, windows_key: how the windows and negatives were chosen (for reuse checks).
        units, layers: a dictionary's name and the layers it covers (version 2; the arrays
            still hold every layer, zeros where it has none); None: the model's neurons.
    """
    path = Path(path)
    n_layers, k, d = top_window.shape
    qs = sorted(quantiles)
    meta = {"format": SCAN_FORMAT, "version": SCAN_VERSION, "model": model, "hook": hook,
            "window": int(windows.shape[1]), "top_k": int(k), "n_layers": int(n_layers),
            "d_mlp": int(d), "seed": int(seed), "windows_key": windows_key,
            "tokens": int(windows.size), "quantiles": qs,
            **({"version": 2, "units": units, "layers": [int(x) for x in layers or []]} if units else {}),
            "created": datetime.now(UTC).isoformat(timespec="seconds")}
    arrays = {
        "meta": _json_bytes(meta),
        "vocab": _json_bytes(vocab),
        "windows": windows.astype(_smallest_uint(max(len(vocab) - 1, 0))),
        "top_window": top_window.astype(_smallest_uint(max(len(windows) - 1, 0))),
        "top_position": top_position.astype(_smallest_uint(max(windows.shape[1] - 1, 0))),
        "top_value": top_value.astype(np.float16),
        "max_activation": max_activation.astype(np.float32),
        "density": density.astype(np.float32),
        "quantile": np.stack([quantiles[q] for q in qs], axis=1).astype(np.float32),
        "mean": mean.astype(np.float32),
        "random_windows": random_windows.astype(np.int32),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return path


def _quantile_name(q: float) -> str:
    return "p" + f"{q * 100:g}"


class ScanFile:
    """A scan file, opened for queries: top windows and statistics of any neuron.

    Arrays are read once when opened (about 15 MB for a 30-layer model); token strings are
    looked up only for the windows asked for.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            with np.load(self.path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                if meta.get("format") != SCAN_FORMAT:
                    raise ScanFileError(f"{self.path}: not an n2g scan file")
                if not isinstance(meta.get("version"), int) or meta["version"] > SCAN_VERSION:
                    raise ScanFileError(
                        f"{self.path}: scan format version {meta.get('version')} is newer than this "
                        f"n2g-mcp reads ({SCAN_VERSION}); upgrade n2g-mcp or run `n2g scan` again")
                self.meta: dict[str, Any] = meta
                self.vocab: list[str] = json.loads(bytes(z["vocab"]).decode())
                self.windows = z["windows"]
                self.top_window = z["top_window"]
                self.top_position = z["top_position"]
                self.top_value = z["top_value"]
                self.max_activation = z["max_activation"]
                self.density = z["density"]
                self.quantile = z["quantile"]
                self.mean = z["mean"]
                self.random_windows = z["random_windows"]
        except ScanFileError:
            raise
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
            raise ScanFileError(f"{self.path}: cannot read the scan file ({e}); run `n2g scan` "
                                "to write it again") from e

    @property
    def model(self) -> str:
        return str(self.meta["model"])

    @property
    def units(self) -> str:
        """``neurons``, or the dictionary whose latents were scanned (version 2)."""
        return str(self.meta.get("units") or "neurons")

    @property
    def key(self) -> str:
        """The units key of what was scanned (``store.names.units_key``)."""
        return units_key(self.model, self.units)

    @property
    def n_layers(self) -> int:
        return int(self.top_window.shape[0])

    @property
    def d_mlp(self) -> int:
        return int(self.top_window.shape[2])

    @property
    def top_k(self) -> int:
        return int(self.top_window.shape[1])

    def _check(self, layer: int, neuron: int) -> None:
        if not 0 <= layer < self.n_layers or not 0 <= neuron < self.d_mlp:
            raise IndexError(f"{neuron_id(layer, neuron)} is outside {self.model} "
                             f"({self.n_layers} layers x {self.d_mlp} neurons)")

    def stats(self, layer: int, neuron: int) -> NeuronStats:
        """The neuron's largest activation, firing density and activation quantiles."""
        self._check(layer, neuron)
        qs = self.meta["quantiles"]
        return NeuronStats(
            max_activation=float(self.max_activation[layer, neuron]),
            density=float(self.density[layer, neuron]),
            quantiles={_quantile_name(q): float(self.quantile[layer, i, neuron])
                       for i, q in enumerate(qs)},
        )

    def top(self, layer: int, neuron: int, limit: int | None = None,
            offset: int = 0) -> list[TopWindow]:
        """The neuron's top windows, strongest first (ranks ``offset`` to ``offset + limit``)."""
        self._check(layer, neuron)
        end = self.top_k if limit is None else min(self.top_k, offset + limit)
        out = []
        for rank in range(offset, end):
            value = float(self.top_value[layer, rank, neuron])
            if not math.isfinite(value):  # fewer windows than k in a tiny corpus
                break
            w = int(self.top_window[layer, rank, neuron])
            out.append(TopWindow(window=w, tokens=[self.vocab[t] for t in self.windows[w]],
                                 pivot=int(self.top_position[layer, rank, neuron]),
                                 activation=value))
        return out

    def window_tokens(self, index: int) -> list[str]:
        """The token strings of one scanned window."""
        return [self.vocab[t] for t in self.windows[index]]

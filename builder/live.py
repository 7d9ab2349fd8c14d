"""A loaded model serving interactive requests: tokens, a neuron's activations, a few graphs.

The MCP server holds one :class:`LiveModel` per model and calls it from worker threads; the lock
makes one request at a time use the model. Scans and corpus windows are kept after the first
build, so later builds of the same layer only run the N2G stages.

A neuron is read along a text in windows (``builder.forward.long_activations``), so the longest
text the server accepts runs in bounded memory. A build holds the store's writer lock; when
another process is writing that store, it fails at once with :class:`builder.errors.Busy`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from builder.build import build_layer
from builder.config import BuildConfig
from builder.corpus import make_windows
from builder.errors import Busy
from builder.forward import long_activations
from builder.models import LoadedModel, load_model
from builder.scan import LayerScan, scan
from store.graph import NeuronGraph
from store.jsonl import StoreLocked, StoreWriter

Progress = Callable[[float, float, str], None]


class LiveModel:
    """One model, loaded once, shared by requests one at a time."""

    def __init__(self, model: LoadedModel, config: BuildConfig | None = None) -> None:
        self.model = model
        self.config = config or BuildConfig()
        self.lock = threading.Lock()
        self._windows: np.ndarray | None = None
        self._scans: dict[int, LayerScan] = {}

    def tokens(self, text: str) -> list[str]:
        """The text's tokens as graphs store them."""
        return [self.model.vocab[i] for i in self.model.encode(text)]

    def activations(self, layer: int, neuron: int, text: str) -> tuple[list[str], list[float]]:
        """The text's tokens and the neuron's raw activation on each (windowed: see
        ``builder.forward.long_activations`` for the context a position sees in a long text)."""
        self.model.check_layer(layer)
        self.model.check_neuron(neuron)
        ids = self.model.encode(text)
        if not ids:
            return [], []
        with self.lock:
            acts = long_activations(self.model, layer, ids, [neuron])[:, 0]
        return [self.model.vocab[i] for i in ids], [float(a) for a in acts]

    def build(self, layer: int, neurons: Sequence[int], store_path: Path,
              progress: Progress | None = None,
              cancel: threading.Event | None = None) -> list[NeuronGraph]:
        """Build graphs for neurons of one layer and append them to a store.

        Raises:
            Busy: if another process is writing to the store.
        """
        self.model.check_layer(layer)
        with self.lock:
            if self._windows is None:
                self._windows = make_windows(self.model, None, self.config.scan.window,
                                             self.config.scan.max_tokens)
            if layer not in self._scans:
                self._scans.update(scan(self.model, self._windows, [layer], self.config.scan,
                                        progress=progress))
            try:
                writer = StoreWriter(store_path, self.model.name,
                                     (self.model.n_layers, self.model.d_mlp))
            except StoreLocked as exc:
                raise Busy(str(exc)) from exc
            with writer:
                return build_layer(self.model, layer, list(neurons), self._scans[layer],
                                   self._windows, self.config, writer, progress, cancel)


def load_live_model(name: str, device: str | None = None) -> LiveModel:
    """Load a model for interactive use (slow: seconds to a minute)."""
    return LiveModel(load_model(name, device=device))


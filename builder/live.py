"""Loaded models serving interactive requests: tokens, a neuron's activations, a few graphs.

The MCP server holds one :class:`LiveModels` and calls it from worker threads. It is the one
live-model layer: each model loads on first use, once, and one lock makes one request at a time
use a model (loading included), since a model is not safe to share between threads. Corpus
windows and layer scans are kept after a model's first build, so later builds of the same layer
run only the N2G stages.

Models are named by :class:`store.models.ModelSpec`; a spec that is not ``local`` never makes
this layer look at the disk for its location (an MCP client's model name cannot reach files).
Errors are :class:`builder.errors.N2GError` with messages meant for the user.

A neuron is read along a text in windows (``builder.forward.long_activations``), so the longest
text the server accepts runs in bounded memory. A build holds the store's writer lock; when
another process is writing that store, it fails at once with :class:`builder.errors.Busy`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from builder.ablate import Ablation, AblationMode, ablate
from builder.build import build_layer
from builder.config import BuildConfig
from builder.corpus import make_windows
from builder.errors import Busy
from builder.firing import Hit, neurons_at
from builder.forward import long_activations
from builder.hypothesis import CorpusText, HypothesisResult, PatternKind, score_hypothesis
from builder.induction import InductionScore, induction_scores
from builder.models import LoadedModel, load_model
from builder.scan import LayerScan, scan, scan_file_serves
from builder.tokenizer import load_tokenizer
from store.graph import NeuronGraph
from store.jsonl import StoreLocked, StoreWriter
from store.models import EMBEDDED, ModelSpec
from store.progress import Progress
from store.scanfile import ScanFile

log = logging.getLogger(__name__)


@dataclass
class _Loaded:
    """One loaded model and what its builds keep between calls."""

    model: LoadedModel
    windows: np.ndarray | None = None
    scans: dict[int, LayerScan] = field(default_factory=dict)
    corpus: CorpusText | None = None


class LiveModels:
    """Models loaded once each, used one request at a time; see the module docstring.

    Args:
        device: where models run (default: cuda if available).
        config: the build configuration (default: ``BuildConfig()``).
    """

    def __init__(self, device: str | None = None, config: BuildConfig | None = None) -> None:
        self.device = device
        self.config = config or BuildConfig()
        self._lock = threading.Lock()
        """The one lock: held while a model loads and while any request uses one."""
        self._loaded: dict[str, _Loaded] = {}

    def add(self, model: LoadedModel) -> ModelSpec:
        """Serve a model already loaded (by a script or a test); returns the spec that names it."""
        with self._lock:
            self._loaded[model.name] = _Loaded(model)
        return ModelSpec(name=model.name, location=model.name, shape=(model.n_layers, model.d_mlp))

    def _get(self, spec: ModelSpec, progress: Progress | None = None) -> _Loaded:
        """The loaded model; the caller holds the lock, so each model loads once."""
        loaded = self._loaded.get(spec.name)
        if loaded is None:
            if progress is not None:
                progress(0, 1, f"loading {spec.name} (once; can take a minute)")
            log.info("loading model %s (once; can take a minute)", spec.name)
            model = load_model(spec.location, device=self.device, local=spec.local, as_name=spec.name)
            loaded = self._loaded[spec.name] = _Loaded(model)
        return loaded

    def tokens(self, spec: ModelSpec, text: str) -> list[str]:
        """The text's tokens as graphs store them; needs only the tokenizer where it is on disk."""
        loaded = self._loaded.get(spec.name)
        if loaded is not None:
            return [loaded.model.vocab[i] for i in loaded.model.encode(text)]
        if spec.location in EMBEDDED or spec.local:
            return list(load_tokenizer(spec.location).tokens(text))
        with self._lock:  # a hub model: its tokenizer comes with it
            model = self._get(spec).model
            return [model.vocab[i] for i in model.encode(text)]

    def activations(self, spec: ModelSpec, layer: int, neuron: int, text: str) -> tuple[list[str], list[float]]:
        """The text's tokens and the neuron's raw activation on each (windowed: see
        ``builder.forward.long_activations`` for the context a position sees in a long text)."""
        with self._lock:
            model = self._get(spec).model
            model.check_layer(layer)
            model.check_neuron(neuron)
            ids = model.encode(text)
            if not ids:
                return [], []
            acts = long_activations(model, layer, ids, [neuron])[:, 0]
        return [model.vocab[i] for i in ids], [float(a) for a in acts]

    def _windows(self, loaded: _Loaded, scan_file: ScanFile | None) -> np.ndarray:
        """The corpus windows: the scan file's where it has them (no tokenising), else made."""
        if loaded.windows is None:
            if scan_file is not None:
                loaded.windows = scan_file.windows.astype(np.int32)
            else:
                loaded.windows = make_windows(loaded.model, None, self.config.scan.window,
                                              self.config.scan.max_tokens)
        return loaded.windows

    def _layer_scan(self, loaded: _Loaded, layer: int, neurons: Sequence[int],
                    scan_file: ScanFile | None, progress: Progress | None = None,
                    cancel: threading.Event | None = None) -> LayerScan:
        """A layer's scan with these neurons' traces: kept, cached on disk, from the scan file
        (a few windows measured again), or, failing all three, a scan of the corpus."""
        if layer in loaded.scans:
            return loaded.scans[layer]
        windows = self._windows(loaded, scan_file)
        serves = scan_file_serves(scan_file, windows, self.config.scan)
        scans = scan(loaded.model, windows, [layer], self.config.scan, progress=progress, cancel=cancel,
                     scan_file=scan_file if serves else None, neurons=neurons)
        if not serves:  # a whole-layer scan: worth keeping for the next build of this layer
            loaded.scans.update(scans)
        return scans[layer]

    def build(self, spec: ModelSpec, layer: int, neurons: Sequence[int], store_path: Path, *,
              progress: Progress | None = None, cancel: threading.Event | None = None,
              scan_file: ScanFile | None = None) -> list[NeuronGraph]:
        """Build graphs for neurons of one layer and append them to a store.

        With the model's scan file, the neurons' top windows come from it (seconds); without,
        the first build of a layer scans the corpus (minutes on a CPU).

        Raises:
            builder.errors.Cancelled: when ``cancel`` is set (checked between batches).
            builder.errors.Busy: if another process is writing to the store.
            builder.errors.N2GError: for a request the model refuses.
        """
        with self._lock:
            loaded = self._get(spec, progress)
            model = loaded.model
            model.check_layer(layer)
            layer_scan = self._layer_scan(loaded, layer, neurons, scan_file, progress, cancel)
            try:
                writer = StoreWriter(store_path, model.name, (model.n_layers, model.d_mlp))
            except StoreLocked as exc:
                raise Busy(str(exc)) from exc
            with writer:
                return build_layer(model, layer, list(neurons), layer_scan, self._windows(loaded, scan_file),
                                   self.config, writer, progress, cancel)

    # ----------------------------------------------------------------- probes of the live model
    def neurons_at(self, spec: ModelSpec, ids: Sequence[int], position: int, layers: Sequence[int],
                   max_activation: dict[int, np.ndarray], limit: int) -> list[Hit]:
        """The neurons most active at one token (see :func:`builder.firing.neurons_at`)."""
        with self._lock:
            return neurons_at(self._get(spec).model, ids, position, layers, max_activation, limit)

    def encode(self, spec: ModelSpec, text: str) -> tuple[list[int], list[str]]:
        """The text's token ids and strings."""
        with self._lock:
            model = self._get(spec).model
            ids = model.encode(text)
            return ids, [model.vocab[i] for i in ids]

    def induction(self, spec: ModelSpec, layers: Sequence[int], sequences: int, length: int, seed: int,
                  max_activation: dict[int, np.ndarray] | None) -> list[InductionScore]:
        """The repeated-sequence probe (see :mod:`builder.induction`)."""
        with self._lock:
            return induction_scores(self._get(spec).model, layers, sequences, length, seed, max_activation)

    def ablate(self, spec: ModelSpec, neurons: Sequence[tuple[int, int]], text: str | None,
               mode: AblationMode, control: bool, means: dict[int, np.ndarray] | None) -> Ablation:
        """Loss with neurons ablated (see :mod:`builder.ablate`)."""
        with self._lock:
            return ablate(self._get(spec).model, neurons, text, mode, control, means)

    def hypothesis(self, spec: ModelSpec, layer: int, neuron: int, pattern: str, kind: PatternKind,
                   scan_file: ScanFile) -> HypothesisResult:
        """A pattern scored against the real neuron at corpus scale (see :mod:`builder.hypothesis`)."""
        with self._lock:
            loaded = self._get(spec)
            layer_scan = self._layer_scan(loaded, layer, [neuron], scan_file)
            windows = self._windows(loaded, scan_file)
            if loaded.corpus is None:
                loaded.corpus = CorpusText.from_windows(windows, loaded.model.vocab)
            return score_hypothesis(loaded.model, layer, neuron, pattern, kind, layer_scan, windows,
                                    loaded.corpus)

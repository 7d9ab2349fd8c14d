"""Loaded models serving interactive requests: tokens, a neuron's activations, a few graphs.

The MCP server holds one :class:`LiveModels` and calls it from worker threads. It is the one
live-model layer: each model loads on first use, once, and one lock makes one request at a time
use a model (loading included), since a model is not safe to share between threads. Corpus
windows and layer scans are kept after a model's first build, so later builds of the same layer
run only the N2G stages.

Models are named by :class:`store.models.ModelSpec`; a spec that is not ``local`` never makes
this layer look at the disk for its location (an MCP client's model name cannot reach files).

It implements ``n2g_mcp.live.LiveBackend``, the interface the server's queries use; its
results are the torch-free types of ``store.probes`` and its errors those of ``store.errors``.
A neuron is read along a text in windows (``builder.forward.long_activations``), so the longest
text the server accepts runs in bounded memory. Builds go through the one runner
(``builder.run.runner``) and hold the store's writer lock; when another process is writing that
store, a build fails at once with :class:`store.errors.Busy`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from builder.config import BuildConfig
from builder.forward import long_activations, neuron_activations
from builder.models import LoadedModel, load_model
from builder.probes.ablate import ablate
from builder.probes.coactivation import CorpusSplit, coactivation
from builder.probes.firing import neurons_at
from builder.probes.hypothesis import CorpusText, compile_pattern, score_hypothesis
from builder.probes.induction import induction_probe
from builder.probes.output import output_effects
from builder.probes.steer import steer
from builder.run.runner import BuildSource, run_build
from builder.tokenizer import load_tokenizer
from store.effects import OutputEffects
from store.errors import BadArgument
from store.graph import NeuronGraph
from store.models import EMBEDDED, ModelSpec
from store.probes import (
    Ablation,
    AblationMode,
    BuildMethod,
    Coactivation,
    FiringHit,
    HypothesisResult,
    InductionProbe,
    PatternKind,
    Steering,
)
from store.progress import Progress
from store.scanfile import ScanFile

log = logging.getLogger(__name__)


@dataclass
class _Loaded:
    """One loaded model and what its builds keep between calls."""

    model: LoadedModel
    source: BuildSource | None = None
    """The windows and layer scans of its builds (made again when the scan file changes)."""
    corpus: CorpusText | None = None
    split: CorpusSplit | None = None
    """The embedded corpus's windows and held-out marks (co-activation's random windows)."""


class LiveModels:
    """Models loaded once each, used one request at a time; see the module docstring.

    Args:
        device: where models run (default: cuda if available).
        config: the build configuration (default: ``BuildConfig()``); models load in its ``dtype``.
            A build by the ``ordinary`` method runs it with its ordinary-text stage on.
    """

    def __init__(self, device: str | None = None, config: BuildConfig | None = None) -> None:
        self.device = device
        self.config = config or BuildConfig()
        # A source over this config serves both methods: the method changes only the stages.
        self._ordinary = replace(self.config, ordinary=replace(self.config.ordinary, enabled=True))
        self._lock = threading.Lock()
        """The one lock: held while a model loads and while any request uses one."""
        self._tokenizing = threading.Lock()
        """Held while a loaded model's tokenizer encodes (milliseconds): a call's argument checks
        need its tokens, and must not wait for another request's model work."""
        self._loaded: dict[str, _Loaded] = {}

    def add(self, model: LoadedModel) -> ModelSpec:
        """Serve a model already loaded (by a script or a test; a dictionary view of one serves its
        latents); returns the spec that names it."""
        with self._lock:
            self._loaded[model.key] = _Loaded(model)
        units = model.units_name
        return ModelSpec(name=model.name, location=model.name, shape=(model.n_layers, model.d_mlp), units=units,
                         dictionary=None if model.units is None else model.units.source)

    def _get(self, spec: ModelSpec, progress: Progress | None = None) -> _Loaded:
        """The loaded model (a dictionary's view of it for a units spec); the caller holds the
        lock, so each model and each dictionary loads once."""
        if spec.units != "neurons" and spec.key not in self._loaded:
            from builder.dictionaries.formats import load_dictionary

            base = self._get(spec.neurons(), progress).model
            if progress is not None:
                progress(0, 1, f"loading dictionary {spec.units} of {spec.name}")
            dictionary = load_dictionary(spec.dictionary or "", spec.units, spec.name)
            self._loaded[spec.key] = _Loaded(base.with_units(dictionary))
        loaded = self._loaded.get(spec.key)
        if loaded is None:
            if progress is not None:
                progress(0, 1, f"loading {spec.name} (once; can take a minute)")
            log.info("loading model %s (once; can take a minute)", spec.name)
            # In the config's numeric type: a build refuses a model loaded in another.
            model = load_model(spec.location, device=self.device, local=spec.local, as_name=spec.name,
                               dtype=self.config.dtype)
            loaded = self._loaded[spec.name] = _Loaded(model)
        return loaded

    def tokens(self, spec: ModelSpec, text: str) -> list[str]:
        """The text's tokens as graphs store them; needs only the tokenizer where it is on disk."""
        loaded = self._loaded.get(spec.name)
        if loaded is not None:
            with self._tokenizing:
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

    def window_activations(self, spec: ModelSpec, layer: int, neuron: int,
                           rows: Sequence[Sequence[int]]) -> list[list[float]]:
        """The neuron's raw activation at every token of each row (``builder.forward.neuron_activations``:
        BOS added to each row, as the scan ran its windows)."""
        with self._lock:
            model = self._get(spec).model
            model.check_layer(layer)
            model.check_neuron(neuron)
            acts = neuron_activations(model, layer, [list(r) for r in rows], [neuron] * len(rows))
        return [[float(a) for a in row] for row in acts]

    def _source(self, loaded: _Loaded, scan_file: ScanFile | None) -> BuildSource:
        """The model's build source over this scan file, kept while the file stays the same."""
        if loaded.source is None or loaded.source.scan_file is not scan_file:
            loaded.source = BuildSource(loaded.model, self.config, scan_file=scan_file, keep_ordinary=True)
        return loaded.source

    def build(self, spec: ModelSpec, layer: int, neurons: Sequence[int], store_path: Path, *,
              progress: Progress | None = None, cancel: threading.Event | None = None,
              scan_file: ScanFile | None = None, method: BuildMethod = "ordinary") -> list[NeuronGraph]:
        """Build graphs for neurons of one layer by ``method`` and append them to a store, stored
        or not (the caller applied ``store.pending``: see ``builder.run.runner.run_build``).

        With the model's scan file, the neurons' top windows come from it (seconds); without,
        the first build of a layer scans the corpus (minutes on a CPU). The ``ordinary`` method's
        pass over the calibration sample and the held-out documents (about 200k tokens to the
        layer) is kept for the layer's next build.

        Raises:
            store.errors.Cancelled: when ``cancel`` is set (checked between batches).
            store.errors.Busy: if another process is writing to the store.
            store.errors.StoreMismatch: if the store holds another model or shape.
        """
        with self._lock:
            loaded = self._get(spec, progress)
            source = self._source(loaded, scan_file)
            if method == "ordinary":
                try:
                    source.split  # noqa: B018 - the held-out documents must be found in the scan's windows
                except BadArgument as exc:
                    raise BadArgument(f"{exc}; method='fitted' builds the graph from its top windows alone") from None
            return run_build(loaded.model, [layer], list(neurons), store_path,
                             self._ordinary if method == "ordinary" else self.config,
                             source, rebuild=True, progress=progress, cancel=cancel)

    # ----------------------------------------------------------------- probes of the live model
    def neurons_at(self, spec: ModelSpec, ids: Sequence[int], position: int, layers: Sequence[int],
                   max_activation: dict[int, np.ndarray], limit: int) -> list[FiringHit]:
        """The neurons most active at one token (see :func:`builder.probes.firing.neurons_at`)."""
        with self._lock:
            return neurons_at(self._get(spec).model, ids, position, layers, max_activation, limit)

    def encode(self, spec: ModelSpec, text: str) -> tuple[list[int], list[str]]:
        """The text's token ids and strings; once the model is loaded, without waiting for the
        model (another request may be using it)."""
        loaded = self._loaded.get(spec.name)
        if loaded is None:
            with self._lock:  # loads it
                loaded = self._get(spec)
        with self._tokenizing:
            ids = loaded.model.encode(text)
        return ids, [loaded.model.vocab[i] for i in ids]

    def induction(self, spec: ModelSpec, layers: Sequence[int], sequences: int, length: int, seeds: Sequence[int],
                  max_activation: dict[int, np.ndarray] | None,
                  cancel: threading.Event | None = None) -> InductionProbe:
        """The repeated-sequence probe (see :mod:`builder.probes.induction`)."""
        with self._lock:
            return induction_probe(self._get(spec).model, layers, sequences, length, seeds, max_activation,
                                   cancel)

    def ablate(self, spec: ModelSpec, neurons: Sequence[tuple[int, int]], text: str | None,
               mode: AblationMode, controls: int, means: dict[int, np.ndarray] | None, seed: int = 0,
               each: bool = False, cancel: threading.Event | None = None) -> Ablation:
        """Loss with neurons ablated (see :mod:`builder.probes.ablate`); ``cancel`` is checked
        before every forward pass and at every layer, so a cancelled call frees the model at once."""
        with self._lock:
            return ablate(self._get(spec).model, neurons, text, mode, controls, means, seed=seed, each=each,
                          cancel=cancel)

    def steer(self, spec: ModelSpec, neurons: Sequence[tuple[int, int]], values: Sequence[float],
              prompt: Sequence[int], max_new_tokens: int, *, progress: Progress | None = None,
              cancel: threading.Event | None = None) -> Steering:
        """Clean and steered greedy continuations (see :mod:`builder.probes.steer`)."""
        with self._lock:
            return steer(self._get(spec).model, neurons, values, prompt, max_new_tokens, progress=progress,
                         cancel=cancel)

    def hypothesis(self, spec: ModelSpec, layer: int, neuron: int, pattern: str, kind: PatternKind,
                   scan_file: ScanFile, cancel: threading.Event | None = None) -> HypothesisResult:
        """A pattern scored against the real neuron at corpus scale (see :mod:`builder.probes.hypothesis`);
        a regex that does not compile is refused before the model is taken."""
        if kind == "regex":
            compile_pattern(pattern)
        with self._lock:
            loaded = self._get(spec)
            source = self._source(loaded, scan_file)
            # A callback, not a tqdm bar on the server's stderr: the tool reports its own progress.
            layer_scan = source.layer_scans([layer], [neuron], progress=lambda *_: None, cancel=cancel)[layer]
            windows = source.windows
            if loaded.corpus is None:
                loaded.corpus = CorpusText.from_windows(windows, loaded.model.vocab)
            return score_hypothesis(loaded.model, layer, neuron, pattern, kind, layer_scan, windows,
                                    loaded.corpus, cancel=cancel)

    def coactivation(self, spec: ModelSpec, layer: int, neuron: int, scan_file: ScanFile, layers: Sequence[int],
                     limit: int, *, progress: Progress | None = None,
                     cancel: threading.Event | None = None) -> Coactivation:
        """The neurons most correlated with one (see :mod:`builder.probes.coactivation`); the first
        call tokenises the embedded corpus for its build split (seconds), kept for later calls."""
        with self._lock:
            loaded = self._get(spec, progress)
            width = int(scan_file.windows.shape[1])
            if loaded.split is None or loaded.split.windows.shape[1] != width:
                if progress is not None:
                    progress(0, 1, "reading the corpus's build split (once)")
                loaded.split = CorpusSplit.of(loaded.model, width)
            return coactivation(loaded.model, scan_file, (layer, neuron), layers, limit, loaded.split,
                                cancel=cancel, progress=progress)

    def output_effects(self, spec: ModelSpec, layer: int, neuron: int, windows: Sequence[Sequence[int]],
                       raised: float, top: int) -> OutputEffects:
        """The neuron zeroed and raised at its windows' pivots (see :mod:`builder.probes.output`)."""
        with self._lock:
            return output_effects(self._get(spec).model, layer, neuron, windows, raised, top)

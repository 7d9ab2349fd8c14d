"""The build runner: the one way graphs are built into a store, for the command line and the server.

    lock the store -> skip what it holds (``store.pending``) -> corpus windows -> layer scans
        -> ``builder.stages.build.build_layer`` for each layer, every finished batch appended

:class:`BuildSource` is what builds read: the corpus windows and each layer's scan (top windows
and traces), from a shipped scan file where it serves, else scanned, and kept for the next build
of the same model. :func:`run_build` runs the stages over it into a store. A crash or Ctrl-C
loses at most the batch in flight, and a new run skips what is stored (resume).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from builder.config import BuildConfig
from builder.corpus import heldout_mask, make_windows
from builder.models import LoadedModel
from builder.stages.build import build_layer
from builder.stages.ordinary import CorpusSplit, OrdinaryText, ordinary_texts
from builder.stages.scan import LayerScan, forget_traces, scan, scan_file_serves
from store.errors import BadArgument
from store.examples import Referrer, ScanRef, scan_ref
from store.graph import NeuronGraph
from store.jsonl import StoreWriter, scan_for, stored_neurons
from store.lines import Shape
from store.pending import pending
from store.progress import Progress
from store.scanfile import ScanFile

log = logging.getLogger(__name__)

ORDINARY_LAYERS_PER_PASS = 6
"""Layers whose ordinary-text sample one forward pass serves in a many-layer build (memory: about
0.6 GB a layer of 1,536 neurons), rather than one pass to each layer."""


class _StampingWriter(StoreWriter):
    """A store writer that adds fixed fields to each graph's build record before writing it, so
    the line on disk says who built it (a distributed worker's host and process), and keeps the
    graphs as written (references where the store names the scan)."""

    def __init__(self, path: Path, model: str, shape: Shape, stamp: Mapping[str, Any],
                 scan: ScanRef | None = None) -> None:
        super().__init__(path, model, shape, scan=scan)
        self.stamp = dict(stamp)
        self.written: list[NeuronGraph] = []

    def append(self, graphs: Iterable[NeuronGraph]) -> int:
        graphs = list(graphs)
        for graph in graphs:
            graph.build.update(self.stamp)
        count = super().append(graphs)
        self.written += [graph.with_scan(self.scan) for graph in graphs]
        return count


class BuildSource:
    """The corpus windows and layer scans builds of one model read.

    Args:
        model: the loaded model.
        config: the build configuration (its ``scan`` section sets windows and top-k).
        corpus: a corpus name or path (None: the embedded default).
        scan_file: the model's whole-model scan; with the default corpus its windows are the
            corpus (no tokenising), and where it serves (same windows, enough top windows) each
            layer's top windows are read from it and only their traces measured again.
        keep_ordinary: keep the last layer's ordinary-text evidence for the next build of that
            layer (a live server's one-neuron builds; about 0.6 GB for 1,536 neurons).
    """

    def __init__(self, model: LoadedModel, config: BuildConfig, corpus: str | Path | None = None,
                 scan_file: ScanFile | None = None, keep_ordinary: bool = False) -> None:
        self.model, self.config, self.corpus, self.scan_file = model, config, corpus, scan_file
        self.keep_ordinary = keep_ordinary
        self._windows: np.ndarray | None = None
        self._split: CorpusSplit | None = None
        self._scans: dict[int, LayerScan] = {}
        self._referrer: Referrer | None = None
        self._ordinary: tuple[tuple[Any, ...], OrdinaryText] | None = None

    @property
    def windows(self) -> np.ndarray:
        """``(n_windows, window)`` token ids, made once."""
        if self._windows is None:
            if self.scan_file is not None and self.corpus is None and self.config.scan.part == "all":
                self._windows = self.scan_file.windows.astype(np.int32)
            else:  # a scan file of the build split only serves where its windows are these
                self._windows = make_windows(self.model, self.corpus, self.config.scan.window,
                                             self.config.scan.max_tokens, part=self.config.scan.part)
        return self._windows

    @property
    def split(self) -> CorpusSplit:
        """Where the held-out documents are (``builder.stages.ordinary.CorpusSplit``), which builds
        that calibrate on ordinary text read (made on first use).

        Raises:
            BadArgument: where the windows are not the corpus's (a scan file of another corpus).
        """
        if self._split is None:
            scan = self.config.scan
            if scan.part == "build":
                mask = np.zeros(len(self.windows), dtype=bool)
            else:
                mask = heldout_mask(self.model, self.corpus, scan.window, scan.max_tokens)
                if len(mask) != len(self.windows):
                    raise BadArgument(f"the build's {len(self.windows)} windows are not the corpus's {len(mask)}: "
                                      "calibrating on ordinary text needs the scan made over the same corpus")
            try:
                held = make_windows(self.model, self.corpus, scan.window, part="heldout")
            except BadArgument:  # a corpus whose held-out documents hold no full window
                held = np.zeros((0, scan.window), dtype=np.int32)
            self._split = CorpusSplit(mask, held)
        return self._split

    @property
    def serves(self) -> bool:
        """Whether the scan file was made over the build's windows (so stored examples can refer
        into it, and its top windows stand in for a scan)."""
        return scan_file_serves(self.scan_file, self.windows, self.config.scan)

    @property
    def scan_ref(self) -> ScanRef | None:
        """The header reference to the scan file where it serves, else None (examples as text)."""
        if self.scan_file is None or not self.serves:
            return None
        return scan_ref(self.scan_file, self.scan_file.path.name)

    def referrer(self) -> Referrer:
        """Text examples to references into the scan file (made once; only where it serves)."""
        if self._referrer is None:
            if self.scan_file is None:
                raise ValueError("examples refer only into a scan file, and this build has none")
            self._referrer = Referrer(self.scan_file)
        return self._referrer

    def ordinary_texts(self, chunk: Sequence[tuple[int, Sequence[int]]], scans: Mapping[int, LayerScan],
                       config: BuildConfig, progress: Progress | None = None,
                       cancel: threading.Event | None = None) -> dict[int, OrdinaryText]:
        """The ordinary-text evidence of a few layers (neurons to build, by layer) from one pass,
        charged to the neurons built; with ``keep_ordinary``, a one-layer build's evidence is
        kept for the next (its charge stays what the pass cost)."""
        layers = [layer for layer, _ in chunk]
        key = (tuple(layers), config.ordinary, config.seed, config.fit.normalized)
        if self._ordinary is not None and self._ordinary[0] == key:
            return {layers[0]: self._ordinary[1]}
        forwarded = self.model.tokens_forwarded
        texts = ordinary_texts(self.model, layers, self.windows, self.split, scans[layers[0]].random_windows,
                               config.ordinary, config.seed, config.fit.normalized, progress, cancel)
        share = (self.model.tokens_forwarded - forwarded) // max(1, sum(len(neurons) for _, neurons in chunk))
        texts = {layer: dataclasses.replace(text, tokens_per_neuron=share) for layer, text in texts.items()}
        self._ordinary = (key, texts[layers[0]]) if self.keep_ordinary and len(layers) == 1 else None
        return texts

    def built(self, layer: int) -> None:
        """The build of a layer finished: the traces kept for its resume are no longer needed."""
        if self.serves:
            forget_traces(self.model, self.windows, self.config.scan, layer)

    def layer_scans(self, layers: Sequence[int], neurons: Sequence[int] | None = None,
                    progress: Progress | None = None,
                    cancel: threading.Event | None = None) -> dict[int, LayerScan]:
        """Each layer's scan with (at least) these neurons' traces (None: every neuron's).

        A scan of the whole corpus is kept for later calls; one read from the scan file holds
        only the requested neurons' traces, so it is made again for other neurons.
        """
        out = {layer: self._scans[layer] for layer in layers if layer in self._scans}
        missing = [layer for layer in layers if layer not in out]
        if missing:
            serves = self.serves
            made = scan(self.model, self.windows, missing, self.config.scan, progress=progress,
                        cancel=cancel, scan_file=self.scan_file if serves else None, neurons=neurons)
            if not serves:
                self._scans.update(made)
            out.update(made)
        return out


def run_build(model: LoadedModel, layers: Sequence[int], neurons: Sequence[int] | Mapping[int, Sequence[int] | None] | None,
              store_path: Path | None, config: BuildConfig, source: BuildSource | None = None,
              rebuild: bool = False, progress: Progress | None = None,
              cancel: threading.Event | None = None,
              stamp: Mapping[str, Any] | None = None, refer: bool | None = None,
              as_stored: bool = False,
              reuse: Mapping[tuple[int, int], NeuronGraph] | None = None) -> list[NeuronGraph]:
    """Build the requested neurons of each layer into a store; returns the graphs built.

    Args:
        model: the loaded model.
        layers: layers to build.
        neurons: neuron indices (None: every neuron of each layer), or per layer (a build of other
            neurons in each layer still gathers every layer's traces in one pass).
        store_path: the ``.jsonl`` store to append to (None: build without storing).
        config: stage settings.
        source: the windows and scans to read (default: the embedded corpus, scanned).
        rebuild: build neurons the store holds already (see ``store.pending``).
        progress: ``progress(done, total, message)``; without it tqdm bars are shown.
        cancel: set it to stop between batches.
        stamp: fields added to every graph's build record before it is stored (a distributed
            worker names itself: ``{"worker": {"host": ..., "pid": ...}}``).
        refer: whether stored examples may be references into the source's scan file (where it
            serves the build's windows). None: where the store's readers will find the scan
            file (``store.jsonl.scan_for``: beside the store, or named by its header already), else
            text. A distributed worker says True when the driver's store names this scan.
        as_stored: return the graphs as the store holds them (references, where it names the
            scan) rather than with their text: a distributed worker sends the driver the very
            lines of its shard.
        reuse: stored graphs by ``(layer, neuron)`` whose fitted paths are kept, only calibrated on
            ordinary text and scored (``n2g build --ordinary --paths-from STORE``): the stages
            that read top windows are not run again for them.

    Raises:
        store.errors.Busy: if another writer holds the store.
        store.errors.StoreMismatch: if the store holds another model or shape.
        store.errors.Cancelled: when ``cancel`` is set; finished batches are kept.
    """
    for layer in layers:
        model.check_layer(layer)
    per_layer = neurons if isinstance(neurons, Mapping) else dict.fromkeys(layers, neurons)
    requested = {layer: list(range(model.d_mlp)) if per_layer.get(layer) is None else list(per_layer[layer])
                 for layer in layers}
    for n in {n for ns in requested.values() for n in ns}:
        model.check_neuron(n)
    source = source if source is not None else BuildSource(model, config)
    shape = (model.n_layers, model.d_mlp)
    # The writer locks the store for the whole build and repairs a torn tail before it is read.
    writer: StoreWriter | None = None
    if store_path is not None:
        offer = source.scan_ref if refer else None
        if refer is None and source.scan_file is not None:
            offer = scan_for(store_path, source.scan_file.path, source.scan_ref)
        writer = (_StampingWriter(store_path, model.key, shape, stamp or {}, scan=offer) if stamp or as_stored
                  else StoreWriter(store_path, model.key, shape, scan=offer))
    try:
        stored = stored_neurons(store_path, shape) if writer is not None and not rebuild else set()
        todo: dict[int, list[int]] = {}
        for layer in layers:
            todo.update(pending([layer], requested[layer], stored, rebuild))
        if not todo:
            log.info("every requested neuron is already in %s", store_path)
            return []
        wanted = sorted({n for todo_neurons in todo.values() for n in todo_neurons})
        scans = source.layer_scans(list(todo), wanted, progress, cancel)
        # References where the store names the build's scan (a store begun against another
        # scan, or without one, gets text: its header cannot change).
        referrer = source.referrer() if writer is not None and writer.scan is not None else None
        built: list[NeuronGraph] = []
        texts: dict[int, OrdinaryText] = {}
        for at, (layer, todo_neurons) in enumerate(todo.items()):
            if config.ordinary.enabled and layer not in texts:
                texts = source.ordinary_texts(list(todo.items())[at:at + ORDINARY_LAYERS_PER_PASS], scans, config,
                                              progress, cancel)
            kept = {n: g for (at_layer, n), g in (reuse or {}).items() if at_layer == layer}
            built += build_layer(model, layer, todo_neurons, scans[layer], source.windows, config,
                                 writer, progress, cancel, referrer,
                                 source.split if config.ordinary.enabled else None, kept, texts.pop(layer, None))
            source.built(layer)
        if stamp and writer is None:  # the stamping writer stamps what it writes
            for graph in built:
                graph.build.update(stamp)
        return writer.written if as_stored and isinstance(writer, _StampingWriter) else built
    finally:
        if writer is not None:
            writer.close()

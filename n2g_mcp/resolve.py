"""The shared ground of every query: which model a call is about, and the checks before any work.

:class:`Resolver` holds the stores (:class:`store.catalog.Catalog`), the models this server may
run (:class:`n2g_mcp.registry.ServedModels`), the model side (:class:`n2g_mcp.live.LiveBackend`),
the cursor signer (:class:`n2g_mcp.paging.Pager`) and each model's scan file and output-token
file (each read once, again when it changes). Its methods resolve a call's arguments (a model name, a layer and neuron, a
text, a list of layers) into what the queries need, or raise an :mod:`store.errors` error worded
in ``n2g_mcp.text`` that says what to call next. The four query rooms build on it:
``store_queries`` (the stores alone), ``live_queries`` (predict, build), ``probe_queries``
(the whole-model probes) and ``output_queries`` (what neurons write).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from n2g_mcp import text
from n2g_mcp.limits import MAX_TEXT_CHARS, OUTPUT_SHOWN
from n2g_mcp.live import BuilderBackend, LiveBackend
from n2g_mcp.paging import Pager
from n2g_mcp.registry import ServedModels, looks_like_path
from n2g_mcp.viewer.links import neuron_url
from store.catalog import Catalog, StoreView
from store.errors import BadArgument, CorruptGraph, NotFound, ScanFileError, Unavailable
from store.examples import (
    Example,
    ExampleRef,
    PrunedRef,
    UnresolvedExamples,
    has_refs,
    resolve,
    scan_problem,
)
from store.graph import NeuronGraph
from store.logitfile import LogitFile, OutputTokens, logits_filename
from store.models import ModelSpec, cache_dir
from store.names import NEURONS, UNITS_SEP, check_range, split_units_key
from store.scanfile import ScanFile, scan_filename
from store.sqlsearch import Hit

F = TypeVar("F")

INDEX_WAIT = 60.0
"""Seconds a call waits for the part of the store index its answer needs (a model's files; for
similar pairs, its pairs) where the stores are being indexed in the background: a never-seen
store of 46,080 graphs is indexed in seconds, at once where its sidecar lies beside it
(``store/sidecar.py``). Only past this wait does an answer cover the graphs
indexed so far, marked partial; a graph the index has not reached is read from the store files."""


class Resolver:
    """Arguments to models, stores, graphs and scans; see the module docstring.

    Args:
        stores_dir: where the stores are (created by the first build if missing).
        live: the model side; the real builder by default (loaded on first use).
        models: the models this server may run; the embedded default alone by default.
        pager: signs cursors; a fresh random key by default.
        show_paths: whether answers and errors may show the server's folders (a local user's, as
            over stdio); where not, :meth:`shown` words them as "the server's stores folder".
        viewer_url: the base URL of the viewer's pages (``n2g_mcp.viewer``), which answers about
            one neuron link to (``viewer_url`` fields); None: no links.
    """

    def __init__(self, stores_dir: Path, live: LiveBackend | None = None, models: ServedModels | None = None,
                 pager: Pager | None = None, show_paths: bool = True, viewer_url: str | None = None) -> None:
        self.show_paths = show_paths
        self.viewer_url = viewer_url
        self.models = models if models is not None else ServedModels()
        # Lines of a store whose header lacks the shape are checked against the served models'.
        self.catalog = Catalog(Path(stores_dir), shapes=self.models.shape, first_call=INDEX_WAIT)
        self.live: LiveBackend = live if live is not None else BuilderBackend()
        self.pager = pager if pager is not None else Pager()
        self._scans: dict[str, tuple[float, ScanFile]] = {}
        self.rates: dict[str, float] = {}
        """Full-model tokens a second each model last ran at (the probes' passes, timed), from
        which long calls estimate their duration."""
        self._logit_files: dict[str, tuple[float, LogitFile]] = {}

    @property
    def default_model(self) -> str:
        return self.models.default_name

    def shown(self, message: str) -> str:
        """A message as a client may read it: the server's folders named, not shown, unless
        ``show_paths`` (every error passes through here, ``n2g_mcp.tools.bind``)."""
        if self.show_paths:
            return message
        for folder, name in ((self.catalog.directory, text.STORES_FOLDER), (cache_dir(), text.CACHE_FOLDER),
                             (Path.home(), text.HOME_FOLDER)):
            for spelled in dict.fromkeys((str(folder), str(folder.expanduser().resolve()))):
                if len(spelled) > 1:
                    message = message.replace(spelled, name)
        return message

    def unknown(self, model: str) -> str:
        """Why a model is refused where this server neither runs it nor holds graphs of it: the
        one wording of every tool."""
        stored = [(v.model, len(v)) for v in self.catalog.models()]
        empty = not stored and not self.catalog.problems
        return text.unknown_model(model, self.models.names(), self.default_model, stored, self.models.allow_hub,
                                  str(self.catalog.directory) if empty else None)

    def refused(self) -> str:
        """A note naming the store files this server refused, where any are (they may hold what was asked)."""
        problems = self.catalog.problems
        return f" {text.refused_files(problems)}" if problems else ""

    def model(self, name: str | None) -> str:
        """The model a call is about: the named one, else the default.

        Raises:
            BadArgument: for a name shaped like a path that names no store (without touching the
                disk, and without repeating the name).
        """
        if name is None or not name.strip():
            return self.default_model
        name = name.strip()
        if name.startswith(UNITS_SEP):  # units without a model: the default model's dictionary
            name = self.default_model + name
        base, units = split_units_key(name)
        if units != NEURONS:
            if self.models.spec(name) is None and self.catalog.get(name) is None:
                known = sorted({*self.models.units_of(base),
                                *(split_units_key(v.model)[1] for v in self.catalog.models()
                                  if split_units_key(v.model)[0] == base)} - {NEURONS})
                raise BadArgument(text.unknown_units(base, units, known))
            return name
        if self.models.spec(name) is None and looks_like_path(name) and self.catalog.get(name) is None:
            raise BadArgument(text.model_is_a_path())
        return name

    def link(self, model: str, layer: int, neuron: int) -> str | None:
        """The URL of a neuron's page in the viewer, or None where this server links to none."""
        return None if self.viewer_url is None else neuron_url(self.viewer_url, model, layer, neuron)

    def build_call(self, model: str, layer: int, neuron: int) -> str:
        """The build_graph call an agent makes for a neuron."""
        return text.call("build_graph", model, self.default_model, layer=layer, neuron=neuron)

    def check_range(self, model: str, layer: int | None = None, neuron: int | None = None) -> None:
        """Refuse a layer or neuron the model does not have (where its shape is known).

        Raises:
            OutOfRange: in ``store.names.check_range``'s words.
        """
        shape = self.models.shape(model)
        if shape is not None:
            check_range(model, shape, layer, neuron)

    def layers(self, model: str, layers: list[int] | None) -> list[int]:
        """The layers a probe covers: the given ones (checked, sorted, once each), else all."""
        shape = self.models.shape(model)
        if not layers:
            if shape is None:
                raise BadArgument(text.LAYERS_NEEDED)
            return list(range(shape[0]))
        for layer in layers:
            self.check_range(model, layer)
        return sorted(set(layers))

    @staticmethod
    def check_text(value: str, tool: str = "predict_activations") -> None:
        """Refuse an empty or over-long text given to ``tool``.

        Raises:
            BadArgument: saying what that tool takes and how to shorten it.
        """
        if not value or not value.strip():
            raise BadArgument(text.empty_text(tool))
        if len(value) > MAX_TEXT_CHARS:
            raise BadArgument(text.text_too_long(len(value), MAX_TEXT_CHARS, tool))

    # ----------------------------------------------------------------- stores
    def view(self, model: str) -> StoreView:
        """A model's merged stores.

        Raises:
            NotFound: where no store holds the model, saying whether it is unknown or just empty.
        """
        found = self.catalog.get(model)
        if found is not None:
            return found
        if self.models.spec(model) is not None:
            any_stored = bool(self.catalog.models() or self.catalog.problems)
            raise NotFound(text.no_store_yet(model, str(self.catalog.directory), self.build_call(model, 0, 0),
                                             any_stored=any_stored) + self.refused())
        raise NotFound(self.unknown(model) + self.refused())

    def stored(self, model: str, layer: int, neuron: int) -> NeuronGraph | None:
        """A neuron's readable stored graph, or None (none stored, or its line is damaged)."""
        view = self.catalog.get(model)
        try:
            return None if view is None else view.get(layer, neuron)
        except CorruptGraph:
            return None

    def graph(self, model: str, layer: int, neuron: int) -> tuple[NeuronGraph, StoreView]:
        """One neuron's stored graph.

        Raises:
            OutOfRange: for a layer or neuron out of range.
            NotFound: for an unknown model, or no graph yet (in the index, or in the store files
                where the index has not reached them yet).
            CorruptGraph: for a stored line that does not validate (saying how to rebuild it).
        """
        self.check_range(model, layer, neuron)
        view = self.view(model)
        graph = view.get(layer, neuron)
        if graph is None:
            layers = view.layers()
            hint = layers if self.models.shape(model) is None and layer not in layers else None
            raise NotFound(text.no_graph(model, layer, neuron, self.build_call(model, layer, neuron), hint)
                           + self.refused())
        return graph, view

    def hit(self, model: str, layer: int, neuron: int) -> Hit | None:
        """What the index knows of a neuron's stored graph (tokens, F1), or None where none is."""
        return self.hits(model, [(layer, neuron)]).get((layer, neuron))

    def hits(self, model: str, neurons: Sequence[tuple[int, int]]) -> dict[tuple[int, int], Hit]:
        """:meth:`hit` of several neurons at once, those with a stored graph."""
        view = self.catalog.get(model)
        return {} if view is None else view.hits(neurons)

    def warnings(self, model: str) -> list[str]:
        """The model's store problems (corrupt lines), for a result's warnings."""
        view = self.catalog.get(model)
        return view.corrupt_reports() if view is not None else []

    @staticmethod
    def partial(view: StoreView) -> list[str]:
        """A warning, while the stores are still being indexed, that the answer covers only the
        graphs indexed so far."""
        return [text.still_indexing(len(view))] if view.indexing else []

    # ----------------------------------------------------------------- the live model
    def spec(self, model: str, doing: str, instead: str) -> ModelSpec:
        """The model to run, where this server can run it.

        Raises:
            NotFound: for a model this server neither runs nor holds graphs of (:meth:`unknown`).
            Unavailable: for a stored model this server does not run, or one it cannot run here.
        """
        spec = self.models.spec(model)
        if spec is None and self.catalog.get(model) is None:
            raise NotFound(self.unknown(model))
        if spec is None:
            raise Unavailable(text.cannot(doing, model, text.not_served(model), instead))
        reason = self.live.availability(spec)
        if reason is not None:
            raise Unavailable(text.cannot(doing, model, reason, instead))
        return spec

    # ----------------------------------------------------------------- the whole-model scan
    def scan_file(self, model: str) -> ScanFile | None:
        """The model's scan file in the stores directory, read once (again if it changes).

        Raises:
            ScanFileError: for a scan file that cannot be read, saying that the tools needing it wait.
        """
        return self._scan_at(scan_filename(model))

    def _scan_at(self, name: str) -> ScanFile | None:
        """The scan file of this name in the stores directory, read once (again if it changes)."""
        def read(path: Path) -> ScanFile:
            try:
                return ScanFile(path)
            except ScanFileError as exc:
                raise ScanFileError(text.scan_unreadable(str(exc))) from None
        return self._read_once(self._scans, name, read)

    def _read_once(self, cache: dict[str, tuple[float, F]], name: str, read: Callable[[Path], F]) -> F | None:
        """The file ``name`` of the stores directory as ``read`` makes it, read once and again only
        when it changes; None where there is no such file."""
        path = self.catalog.directory / name
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        cached = cache.get(name)
        if cached is None or cached[0] != mtime:
            cached = cache[name] = (mtime, read(path))
        return cached[1]

    def examples(self, graph: NeuronGraph,
                 items: Sequence[Example | ExampleRef | PrunedRef]) -> tuple[list[Example], list[str]]:
        """A graph's stored examples as text (references read through the scan file its store's
        header names), and a warning where some cannot be read: those are left out, never misread."""
        if not has_refs(items):
            return list(items), []  # type: ignore[arg-type]
        ref, scan, problem = graph.scan, None, None
        if ref is not None and Path(ref.name).name != ref.name:
            problem = f"its store names the scan file {ref.name!r}, which is not a file name"
        elif ref is not None:
            try:
                scan = self._scan_at(ref.name)
            except ScanFileError as exc:
                problem = self.shown(str(exc))
        try:
            return resolve(items, scan, problem or scan_problem(ref, scan)), []
        except UnresolvedExamples as exc:
            return [e for e in items if isinstance(e, Example)], [text.examples_unresolved(graph.id, str(exc))]

    def need_scan(self, model: str, tool: str) -> ScanFile:
        """The model's scan file, for a tool that cannot work without it.

        Raises:
            NotFound: naming the file and the command that writes it.
        """
        scan = self.scan_file(model)
        if scan is None:
            raise NotFound(text.no_scan(model, scan_filename(model), str(self.catalog.directory), tool))
        return scan

    # ----------------------------------------------------------------- what neurons write
    def logit_file(self, model: str) -> LogitFile | None:
        """The model's output-token file in the stores directory (``store/logitfile.py``), read
        once (again if it changes); None where there is none.

        Raises:
            ScanFileError: for a file that cannot be read (``store.logitfile.LogitFileError``).
        """
        return self._read_once(self._logit_files, logits_filename(model), LogitFile)

    def served_logit_file(self, model: str) -> tuple[LogitFile | None, str | None]:
        """The model's output-token file where it is of this model and shape; else None, and why
        where a file is there but cannot serve it (None, None: there is none).

        Raises:
            ScanFileError: for a file that cannot be read.
        """
        found = self.logit_file(model)
        if found is None:
            return None, None
        shape = self.models.shape(model)
        if found.model != model or (shape is not None and found.shape != tuple(shape)):
            return None, text.logits_mismatch(found.path.name, found.model, found.shape, model)
        return found, None

    def output_tokens(self, model: str, layer: int, neuron: int) -> tuple[OutputTokens | None, list[str]]:
        """The neuron's promoted and suppressed tokens (None where the model has no readable file of
        its shape), and a warning where a file is there but cannot serve it."""
        try:
            found, problem = self.served_logit_file(model)
        except ScanFileError as exc:
            return None, [self.shown(str(exc))]
        if found is None:
            return None, [] if problem is None else [problem]
        if not (layer < found.shape[0] and neuron < found.shape[1]):
            return None, []
        return found.output(layer, neuron, OUTPUT_SHOWN), []

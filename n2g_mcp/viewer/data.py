"""What the viewer's pages show, gathered from the query library the MCP tools use.

In: a :class:`n2g_mcp.queries.Queries` (the server's own, so a page's numbers are the tools'
numbers) and a model, or a neuron. Out: :class:`ModelData` (per-layer F1 and firing density,
and a search as search_graphs answers it) and :class:`NeuronData` (the graph as get_graph reads
it and drawn as render_graph_dot draws it, the top windows of top_activations with every token
shaded, the scan's density and quantiles, the fidelity on every protocol stored, similar neurons
as find_similar_neurons finds them, and the neuron's place in the last induction probe run).

Top windows are shaded by the real neuron where the model runs here: the scan's windows are run
again (``LiveBackend.window_activations``, as the scan ran them, each after a BOS) and kept for
the next view of the page; where it does not run, only each window's pivot is shaded, by the
activation the scan stored. Nothing here writes HTML (``n2g_mcp.viewer.pages`` does).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from n2g_mcp.outputs import GraphDescription, InductionHit, InductionOutput, SearchOutput, SimilarOutput
from n2g_mcp.queries import Queries
from n2g_mcp.store_queries import split_words
from store.errors import N2GError, NotFound
from store.graph import Fidelity
from store.models import ModelSpec
from store.names import neuron_id
from store.scanfile import NeuronStats

WINDOWS_SHOWN = 12
"""Top windows a neuron page shows."""
SIMILAR_SHOWN = 12
"""Similar neurons a neuron page links to."""
MEASURED_KEPT = 64
"""Neurons whose measured windows are kept for the next view."""
BEFORE, AFTER = 32, 12
"""Tokens a shown window keeps before and after its pivot (as top_activations cuts them)."""


@dataclass(frozen=True)
class Spread:
    """The quartiles and mean of some values."""

    low: float
    median: float
    high: float
    mean: float
    count: int

    @staticmethod
    def of(values: Sequence[float] | np.ndarray) -> Spread | None:
        """The spread of the values, None for none.

        >>> Spread.of([0.0, 1.0, 2.0, 3.0, 4.0])
        Spread(low=1.0, median=2.0, high=3.0, mean=2.0, count=5)
        """
        array = np.asarray(values, dtype=float)
        if array.size == 0:
            return None
        low, median, high = (float(v) for v in np.percentile(array, [25, 50, 75]))
        return Spread(low, median, high, float(array.mean()), int(array.size))


@dataclass(frozen=True)
class LayerRow:
    layer: int
    graphs: int
    f1: Spread | None
    """F1 of the layer's graphs on their held-out top examples."""
    density: Spread | None
    """Share of corpus tokens at which each of the layer's neurons fires (the scan)."""


@dataclass
class ModelData:
    model: str
    graphs: int
    n_layers: int | None
    d_mlp: int | None
    layers: list[LayerRow]
    has_scan: bool
    activating: str = ""
    context: str = ""
    search: SearchOutput | None = None
    error: str | None = None
    """Why the search could not run, in the library's words."""


def _tokens(value: str) -> list[str]:
    """A search box's tokens: comma-separated, each kept as typed (search ignores case and spaces)."""
    return [t for t in (part.strip() for part in value.split(",")) if t]


def model_data(q: Queries, model: str, activating: str = "", context: str = "") -> ModelData:
    """A model's page: per-layer F1 and density, and a search where tokens are given.

    Raises:
        NotFound: for a model the server holds no graphs of.
    """
    model = q.model(model)
    view = q.view(model)
    shape = q.models.shape(model)
    scan = q.scan_file(model)
    f1s = view.f1_by_layer()
    layers = range(shape[0]) if shape else (range(scan.n_layers) if scan else view.layers())
    counts = {layer: len(values) for layer, values in f1s.items()}
    rows = [LayerRow(layer, counts.get(layer, 0), Spread.of(f1s.get(layer, [])),
                     Spread.of(scan.density[layer]) if scan is not None and layer < scan.n_layers else None)
            for layer in layers]
    data = ModelData(model=model, graphs=len(view), n_layers=shape[0] if shape else None,
                     d_mlp=shape[1] if shape else None, layers=rows, has_scan=scan is not None,
                     activating=activating, context=context)
    if _tokens(activating) or _tokens(context):
        try:
            data.search = q.search(split_words(_tokens(activating)), split_words(_tokens(context)), model=model,
                                   limit=50)
        except N2GError as exc:
            data.error = q.shown(str(exc))
    return data


@dataclass(frozen=True)
class Window:
    """A top window, every token's activation as a share of the neuron's max (None: not measured)."""

    tokens: list[str]
    pivot: int
    activation: float
    shades: list[float | None]
    cut_before: bool = False
    cut_after: bool = False

    @staticmethod
    def around(tokens: Sequence[str], pivot: int, activation: float, shades: Sequence[float | None]) -> Window:
        """The window cut to :data:`BEFORE` tokens before its pivot and :data:`AFTER` after."""
        start, end = max(0, pivot - BEFORE), min(len(tokens), pivot + 1 + AFTER)
        return Window(list(tokens[start:end]), pivot - start, activation, list(shades[start:end]),
                      start > 0, end < len(tokens))


@dataclass
class NeuronData:
    model: str
    layer: int
    neuron: int
    graph: GraphDescription | None = None
    missing: str | None = None
    """Why there is no graph (and how to build one), where there is none."""
    fidelity: Fidelity | None = None
    svg: str | None = None
    windows: list[Window] = field(default_factory=list)
    measured: bool = False
    """Whether every token of the windows is shaded (the real neuron ran), not only the pivots."""
    measure_note: str | None = None
    stats: NeuronStats | None = None
    max_activation: float | None = None
    similar: SimilarOutput | None = None
    induction: InductionHit | None = None
    induction_run: InductionOutput | None = None
    can_compare: bool = False
    compare_note: str | None = None

    @property
    def id(self) -> str:
        return neuron_id(self.layer, self.neuron)


class NeuronPages:
    """Gathers :class:`NeuronData`, keeping each neuron's measured windows for its next view."""

    def __init__(self, q: Queries) -> None:
        self.q = q
        self._measured: OrderedDict[tuple, list[list[float]]] = OrderedDict()
        self._lock = threading.Lock()

    def _runs(self, model: str) -> tuple[ModelSpec | None, str | None]:
        """The model to run, and None; or why it does not run here."""
        spec = self.q.models.spec(model)
        if spec is None:
            return None, "the server does not run this model"
        return spec, self.q.live.availability(spec)

    def _measure(self, model: str, layer: int, neuron: int, key: tuple,
                 rows: list[list[int]]) -> tuple[list[list[float]] | None, str | None]:
        """The real neuron's raw activations on the windows' token ids, or None and why not."""
        with self._lock:
            if key in self._measured:
                self._measured.move_to_end(key)
                return self._measured[key], None
        spec, reason = self._runs(model)
        if spec is None or reason is not None:
            return None, reason
        try:
            acts = self.q.live.window_activations(spec, layer, neuron, rows)
        except N2GError as exc:
            return None, self.q.shown(str(exc))
        with self._lock:
            self._measured[key] = acts
            while len(self._measured) > MEASURED_KEPT:
                self._measured.popitem(last=False)
        return acts, None

    def _windows(self, data: NeuronData) -> None:
        q, model, layer, neuron = self.q, data.model, data.layer, data.neuron
        scan = q.scan_file(model)
        if scan is not None:
            data.stats = scan.stats(layer, neuron)
            top = float(scan.max_activation[layer, neuron])
            scale = top if top > 0 else 1.0
            data.max_activation = top
            found = scan.top(layer, neuron, limit=WINDOWS_SHOWN)
            key = (model, layer, neuron, str(scan.path), scan.meta.get("created"))
            acts, data.measure_note = self._measure(model, layer, neuron, key,
                                                    [[int(t) for t in scan.windows[w.window]] for w in found])
            for i, w in enumerate(found):
                shades: list[float | None] = [a / scale for a in acts[i]] if acts else [None] * len(w.tokens)
                if not acts:
                    shades[w.pivot] = w.activation / scale
                data.windows.append(Window.around(w.tokens, w.pivot, w.activation / scale, shades))
            data.measured = acts is not None and bool(found)
            return
        if data.graph is None:
            return
        graph, _ = q.graph(model, layer, neuron)
        scale = graph.max_activation if graph.max_activation > 0 else 1.0
        data.max_activation = graph.max_activation
        examples, _ = q.examples(graph, graph.examples)
        for e in sorted(examples, key=lambda e: -e.activation)[:WINDOWS_SHOWN]:
            shades = [None] * len(e.tokens)
            shades[e.pivot] = e.activation / scale
            data.windows.append(Window.around(e.tokens, e.pivot, e.activation / scale, shades))
        data.measure_note = "the model has no scan file here, so only each window's pivot is known"

    def neuron(self, model: str, layer: int, neuron: int) -> NeuronData:
        """A neuron's page: whatever of it the server holds (a neuron without a graph still has its
        scan windows and statistics).

        Raises:
            OutOfRange, NotFound: for a neuron outside the model, or a model with neither graphs nor scan.
        """
        q = self.q
        model = q.model(model)
        q.check_range(model, layer, neuron)
        data = NeuronData(model=model, layer=layer, neuron=neuron)
        try:
            data.graph = q.get_graph(model, layer, neuron)
        except NotFound as exc:
            if q.scan_file(model) is None:
                raise
            data.missing = q.shown(str(exc))
        if data.graph is not None:
            graph, _ = q.graph(model, layer, neuron)
            data.fidelity = graph.fidelity
            data.svg = q.picture(model, layer, neuron, "svg").decode()
            data.similar = q.similar(model, layer, neuron, limit=SIMILAR_SHOWN)
        self._windows(data)
        run = q.induction_runs.get(model)
        if run is not None:
            data.induction_run = run
            data.induction = next((r for r in run.results if (r.layer, r.neuron) == (layer, neuron)), None)
        _, data.compare_note = self._runs(model)
        data.can_compare = data.compare_note is None
        return data

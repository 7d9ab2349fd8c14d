"""find_similar_neurons' co-activation: the neurons that fire with a target, whatever its graph says.

Where the model runs here, the exact measure (``builder.probes.coactivation`` through the live
backend): Pearson correlation over the target's top windows and as many random build-split
windows. Where it does not, or when asked not to run it, the scan's shared top windows
(``store.coactivation.by_scan``: instant, no model), saying why. Either way the scan file is
needed: it holds the target's top windows.
"""

from __future__ import annotations

import threading

from n2g_mcp import text
from n2g_mcp.limits import HIT_TOKENS
from n2g_mcp.outputs import CoactiveHit, Coactivated
from n2g_mcp.resolve import Resolver
from store.coactivation import by_scan
from store.errors import NotFound
from store.names import check_range
from store.probes import CoactiveNeuron
from store.progress import Progress
from store.scanfile import ScanFile, scan_filename


class CoactivationQueries(Resolver):
    """The co-activation half of find_similar_neurons (the token half is ``store_queries``')."""

    def _scan_layers(self, model: str, scan: ScanFile, layer: int, neuron: int,
                     layers: list[int] | None) -> list[int]:
        """The layers to search (None: all), each and the target checked against the model and its scan."""
        scan_shape = (scan.n_layers, scan.d_mlp)
        for each in [layer, *(layers or [])]:
            self.check_range(model, each, neuron if each == layer else None)
            check_range(model, scan_shape, each, neuron if each == layer else None)
        return sorted(set(layers)) if layers else list(range(scan.n_layers))

    def coactivated(self, model: str, layer: int, neuron: int, *, layers: list[int] | None = None,
                    limit: int = 20, run_model: bool = True, progress: Progress | None = None,
                    cancel: threading.Event | None = None) -> Coactivated:
        """The ``limit`` neurons of ``layers`` (None: all) that fire most with the target.

        Raises:
            NotFound: where the model has no scan file (saying who writes it, and by='tokens').
            BadArgument: for layers outside the model, or a target with no top window to read.
            Cancelled: when ``cancel`` is set while the model runs.
        """
        scan = self.scan_file(model)
        if scan is None:
            raise NotFound(text.no_scan_for_coactivation(model, scan_filename(model),
                                                         self.shown(str(self.catalog.directory))))
        layers = self._scan_layers(model, scan, layer, neuron, layers)
        spec = self.models.spec(model) if run_model else None
        why = (text.MODEL_NOT_ASKED if not run_model else text.not_served(model) if spec is None
               else self.live.availability(spec))
        if spec is not None and why is None:
            found = self.live.coactivation(spec, layer, neuron, scan, layers, limit, progress=progress, cancel=cancel)
            return Coactivated(source="model", layers=found.layers, top_windows=found.top_windows,
                               random_windows=found.random_windows, tokens=found.tokens,
                               heldout_left_out=found.heldout_left_out, results=self._hits(model, found.neurons))
        top = sum(1 for w in scan.top(layer, neuron) if w.activation > 0)
        return Coactivated(source="scan", why_scan=why, layers=layers, top_windows=top,
                           results=self._hits(model, by_scan(scan, (layer, neuron), layers, limit)))

    def _hits(self, model: str, neurons: list[CoactiveNeuron]) -> list[CoactiveHit]:
        """The neurons as listed, each with what its stored graph says (from the index)."""
        graphs = self.hits(model, [(n.layer, n.neuron) for n in neurons])
        out = []
        for n in neurons:
            stored = graphs.get((n.layer, n.neuron))
            out.append(CoactiveHit(**dict(n), has_graph=stored is not None,
                                   activating_tokens=[] if stored is None else stored.activating_tokens[:HIT_TOKENS],
                                   f1=None if stored is None else stored.f1,
                                   ordinary_f1=None if stored is None else stored.ordinary_f1))
        return out

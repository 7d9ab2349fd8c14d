"""The stores of a directory, by model: the one container the server reads graphs through.

In: a directory (the server's ``--stores``); every ``*.jsonl`` and ``*.jsonl.gz`` file in it is a
store, grouped by the model its header names. Out: per model a :class:`StoreView` that counts,
lists, searches and compares its graphs through the persistent index (``store/sqlindex.py`` keeps
it in step, ``store/sqlsearch.py`` queries it),
and loads a full graph only when asked::

    catalog = Catalog(Path("stores"))
    catalog.models()                          # [StoreView(model="smollm2-135m"), ...]
    view = catalog.get("smollm2-135m")        # None where no store holds that model
    view.search([" except"], [" everyone"])   # (total, [Hit(...), ...])
    view.get(0, 404)                          # a NeuronGraph, parsed and validated now
    catalog.writable_path("smollm2-135m")     # stores/smollm2-135m.jsonl

Which line holds a neuron's graph (the last one, in the last file: a graph built here overrides
a shipped one) is decided by the index, in one place. Every call first brings the index in step
with the files (a stat per file when nothing changed), then, where the index is being made in
the background (the server), waits for what its answer needs: a model's files for its counts,
graphs and searches, its similar pairs for listing them. Past that wait (``first_call``
seconds) a view answers from what is indexed so far and says so (:attr:`StoreView.indexing`),
and reads a graph the index has not reached from the store files themselves, so that a stored
graph is never missing. No torch, no model: this module only reads files. It is thread-safe (the
MCP server calls it from worker threads).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from store.errors import CorruptGraph
from store.examples import ScanRef
from store.graph import NeuronGraph
from store.jsonl import CORRUPT_SHOWN, corrupt_report
from store.lines import LineError, Shape, index_line
from store.names import NEURONS, file_safe, neuron_id, split_units_key
from store.similarity import PAPER_THRESHOLD, SIMILAR_LIMIT, Match, Mode, Pair, PairBudget
from store.sqlindex import StoreIndex, merge_order
from store.sqlsearch import Hit, IndexSearch

GRAPH_CACHE = 64
"""Full graphs kept parsed, most recently used."""


def store_filename(model: str) -> str:
    """The file name of a model's (or units key's) writable store: unsafe characters replaced, a
    dictionary's name after the model's.

    >>> store_filename("smollm2-135m"), store_filename("NeelNanda/SoLU_6L")
    ('smollm2-135m.jsonl', 'NeelNanda_SoLU_6L.jsonl')
    >>> store_filename("smollm2-135m@mlp-3k")
    'smollm2-135m.mlp-3k.jsonl'
    """
    model, units = split_units_key(model)
    return f"{file_safe(model)}.jsonl" if units == NEURONS else f"{file_safe(model)}.{file_safe(units)}.jsonl"


class StoreView:
    """One model's graphs over all its store files; see the module docstring."""

    def __init__(self, catalog: Catalog, model: str) -> None:
        self._catalog, self.model = catalog, model
        self._search = catalog.search

    def __repr__(self) -> str:
        return f"StoreView(model={self.model!r})"

    # ----------------------------------------------------------------- container
    def __len__(self) -> int:
        return self._catalog.cached(("len", self.model), lambda: self._search.count(self.model))

    def layers(self) -> list[int]:
        """The layers that have at least one graph, ascending."""
        return self._catalog.cached(("layers", self.model), lambda: self._search.layers(self.model))

    def f1_by_layer(self) -> dict[int, list[float]]:
        """Every scored graph's F1 by layer, ascending (of the graphs indexed so far)."""
        return self._catalog.cached(("f1_by_layer", self.model), lambda: self._search.f1_by_layer(self.model))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and len(key) == 2 and self.hit(*key) is not None

    def hit(self, layer: int, neuron: int) -> Hit | None:
        """What the index knows of one neuron's graph (tokens, F1), without loading it (read from
        the store files where the index has not reached it yet)."""
        return self.hits([(layer, neuron)]).get((layer, neuron))

    def hits(self, neurons: Sequence[tuple[int, int]]) -> dict[tuple[int, int], Hit]:
        """:meth:`hit` of several neurons, those with a stored graph (one pass over the store
        files for those the index has not reached yet)."""
        found = {}
        for layer, neuron in neurons:
            hit = self._search.hit(self.model, layer, neuron)
            if hit is not None:
                found[(layer, neuron)] = hit
        missing = {(int(layer), int(neuron)) for layer, neuron in neurons} - set(found)
        if missing and self.indexing:
            for key, (line, _) in self._catalog.unindexed(self.model, missing).items():
                try:
                    entry = index_line(line, self.model, None)
                except LineError:
                    continue
                found[key] = Hit(layer=entry.layer, neuron=entry.neuron, f1=entry.f1,
                                 activating_tokens=list(entry.activating), context_tokens=entry.context)
        return found

    def get(self, layer: int, neuron: int) -> NeuronGraph | None:
        """The graph of one neuron, parsed and validated, or None where no store has it (read
        from the store files where the index has not reached it yet).

        Raises:
            CorruptGraph: where its line indexed but does not validate as a whole graph.
        """
        graph_id = self._search.graph_id(self.model, layer, neuron)
        if graph_id is not None:
            return self._catalog.graph(graph_id, neuron_id(layer, neuron))
        if not self.indexing:
            return None
        line = self._catalog.unindexed(self.model, {(int(layer), int(neuron))}).get((layer, neuron))
        return None if line is None else self._catalog.parse(*line, neuron_id(layer, neuron))

    @property
    def indexing(self) -> bool:
        """Whether the model's stores are still being indexed (the wait for them ran out):
        counts and searches cover the graphs indexed so far."""
        return self._catalog.index.pending(self.model)

    @property
    def files(self) -> list[str]:
        """The names of the model's store files, in merge order (later wins)."""
        return self._search.files(self.model)

    @property
    def corrupt_lines(self) -> int:
        """Lines skipped, over all the model's files."""
        return len(self._search.corrupt(self.model))

    def corrupt_reports(self, limit: int = CORRUPT_SHOWN) -> list[str]:
        """One line per file with skipped lines, saying which and why (``store.jsonl.corrupt_report``)."""
        by_file: dict[str, list[tuple[int, str]]] = {}
        for name, line, reason in self._search.corrupt(self.model):
            by_file.setdefault(name, []).append((line, reason))
        return [corrupt_report(name, by_file[name], limit) for name in sorted(by_file, key=merge_order)]

    # ----------------------------------------------------------------- search and similarity
    def search(self, activating: Sequence[str] = (), context: Sequence[str] = (), *,
               words: Sequence[str] = (), exact: bool = False, layer: int | None = None,
               min_f1: float | None = None, repeated: bool = False, limit: int | None = None,
               offset: int = 0, min_ordinary_f1: float | None = None) -> tuple[int, list[Hit]]:
        """Graphs holding every given activating and context token (and every word in either
        role), best F1 first (``store.sqlsearch.IndexSearch.search``)."""
        ranks = self._catalog.cached(("ranks", self.model), lambda: self._search.ranks(self.model))
        return self._search.search(self.model, activating, context, words=words, exact=exact, layer=layer,
                                   min_f1=min_f1, min_ordinary_f1=min_ordinary_f1, repeated=repeated,
                                   limit=limit, offset=offset,
                                   count=len(self), ranks=ranks)

    def similar_to(self, target: NeuronGraph, *, threshold: float = PAPER_THRESHOLD, mode: Mode = "similar",
                   limit: int = SIMILAR_LIMIT) -> list[Match]:
        """Neurons whose token sets overlap the target's (``store.similarity``'s rule)."""
        return self._search.similar_to(self.model, target, threshold=threshold, mode=mode, limit=limit)

    def similar_pairs(self, *, threshold: float = PAPER_THRESHOLD, limit: int = SIMILAR_LIMIT,
                      layer: int | None = None, budget: PairBudget | None = None) -> list[Pair]:
        """The most similar pairs of the model's graphs (``store.similarity``'s rule): from the
        kept pairs once they are made (waiting for them), else computed now, under ``budget``'s
        cap and cancel event where given."""
        kept = self._catalog.index.wait_for(self.model, pairs=True)
        return self._search.similar_pairs(self.model, threshold=threshold, limit=limit, layer=layer, kept=kept,
                                          budget=budget)


class Catalog:
    """The stores of one directory, by model; see the module docstring.

    Args:
        directory: where the stores are; it need not exist yet (a first build creates it).
        index_path: the index database (default: see :class:`store.sqlindex.StoreIndex`).
        shapes: ``(n_layers, d_mlp)`` of a model by name, or None where unknown; lines of stores
            whose header records no shape are checked against it (the server passes the models
            it serves), so a line with a layer or neuron the model lacks is skipped as corrupt.
        first_call: index changed files in the background, a call waiting at most this many
            seconds for what its answer needs before answering from the graphs indexed so far
            (:attr:`StoreView.indexing` says so); None (the default) indexes before answering.
    """

    def __init__(self, directory: Path, index_path: Path | None = None,
                 shapes: Callable[[str], Shape | None] | None = None, first_call: float | None = None) -> None:
        self.directory = Path(directory)
        self.index = StoreIndex(self.directory, index_path, shapes, first_call)
        self.search = IndexSearch(self.index)
        """The read queries over the index."""
        self._lock = threading.RLock()
        self._graphs: OrderedDict[int, NeuronGraph] = OrderedDict()
        self._cache: dict[tuple, object] = {}
        self._generation = -1

    def refresh(self, model: str | None = None) -> None:
        """Bring the index in step with the files (cheap when nothing changed), and wait, as the
        index says, for the files of ``model`` (of every model: None) where it is being made."""
        with self._lock:
            self.index.refresh()
        self.index.wait_for(model)
        with self._lock:
            if self.index.generation != self._generation:
                self._generation = self.index.generation
                self._cache.clear()
                self._graphs.clear()

    def cached(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """A value computed once per state of the stores (counts, layers, ranks)."""
        with self._lock:
            if key not in self._cache:
                self._cache[key] = compute()
            return self._cache[key]

    def graph(self, graph_id: int, name: str) -> NeuronGraph:
        """A graph by its index id, parsed and validated once and kept among the recent ones.

        Raises:
            CorruptGraph: where its line does not validate as a whole graph.
        """
        with self._lock:
            cached = self._graphs.get(graph_id)
            if cached is not None:
                self._graphs.move_to_end(graph_id)
                return cached
        try:
            line, scan = self.search.line(graph_id), self.index.scan(graph_id)
        except (LookupError, OSError) as exc:
            raise CorruptGraph(f"the stored graph of {name} cannot be read ({str(exc)[:200]}); rebuild it "
                               "with build_graph(rebuild=true)") from exc
        graph = self.parse(line, scan, name)
        with self._lock:
            self._graphs[graph_id] = graph
            while len(self._graphs) > GRAPH_CACHE:
                self._graphs.popitem(last=False)
        return graph

    @staticmethod
    def parse(line: bytes, scan: ScanRef | None, name: str) -> NeuronGraph:
        """A stored line as a whole graph, validated, its example references tied to its scan.

        Raises:
            CorruptGraph: where the line does not validate as a whole graph.
        """
        try:
            graph = NeuronGraph.model_validate(orjson.loads(line))
            graph.graph  # noqa: B018 - validate the trie rows now, not at first use
            graph.with_scan(scan)
        except (orjson.JSONDecodeError, ValidationError, ValueError) as exc:
            reason = str(exc).splitlines()[0][:200]
            raise CorruptGraph(f"the stored graph of {name} cannot be read ({reason}); rebuild it with "
                               "build_graph(rebuild=true)") from exc
        return graph

    def unindexed(self, model: str, neurons: set[tuple[int, int]]) -> dict[tuple[int, int], tuple[bytes, ScanRef | None]]:
        """The stored lines of neurons the index has not reached yet, read from the store files
        (``StoreIndex.find_lines``), and the scan file each store names; kept per state of the
        stores, so that asking again costs nothing."""
        key = ("unindexed", model)
        with self._lock:
            known: dict = self._cache.setdefault(key, {})
            wanted = {n for n in neurons if n not in known}
        if wanted:
            lines = self.index.find_lines(model, wanted)
            with self._lock:
                for n in wanted:
                    known[n] = lines.get(n)
        return {n: known[n] for n in neurons if known.get(n) is not None}

    def models(self) -> list[StoreView]:
        """Every model with at least one store file, by name (refreshes first)."""
        self.refresh()
        return [StoreView(self, model) for model in self.search.models()]

    def get(self, model: str) -> StoreView | None:
        """One model's stores, or None where no file holds that model (refreshes first)."""
        self.refresh(model)
        return StoreView(self, model) if model in self.search.models() else None

    @property
    def problems(self) -> list[str]:
        """Files in the directory that could not be read as stores, with the reason."""
        return self.search.problems()

    def writable_path(self, model: str) -> Path:
        """Where new graphs of a model are appended: its existing plain store, else ``<model>.jsonl``."""
        self.refresh()
        for name in sorted(self.search.files(model)):
            if not name.endswith(".gz"):
                return self.directory / name
        return self.directory / store_filename(model)

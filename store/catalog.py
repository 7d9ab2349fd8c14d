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
with the files (a stat per file when nothing changed). No torch, no model: this module only
reads files. It is thread-safe (the MCP server calls it from worker threads).
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
from store.graph import NeuronGraph
from store.jsonl import CORRUPT_SHOWN, corrupt_report
from store.lines import Shape
from store.names import file_safe, neuron_id
from store.similarity import PAPER_THRESHOLD, SIMILAR_LIMIT, Match, Mode, Pair, PairBudget
from store.sqlindex import StoreIndex, merge_order
from store.sqlsearch import Hit, IndexSearch

GRAPH_CACHE = 64
"""Full graphs kept parsed, most recently used."""


def store_filename(model: str) -> str:
    """The file name of a model's writable store: the model name with unsafe characters replaced.

    >>> store_filename("smollm2-135m"), store_filename("NeelNanda/SoLU_6L")
    ('smollm2-135m.jsonl', 'NeelNanda_SoLU_6L.jsonl')
    """
    return f"{file_safe(model)}.jsonl"


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

    def __contains__(self, key: object) -> bool:
        return (isinstance(key, tuple) and len(key) == 2
                and self._search.graph_id(self.model, *key) is not None)

    def hit(self, layer: int, neuron: int) -> Hit | None:
        """What the index knows of one neuron's graph (tokens, F1), without loading it."""
        return self._search.hit(self.model, layer, neuron)

    def get(self, layer: int, neuron: int) -> NeuronGraph | None:
        """The graph of one neuron, parsed and validated, or None where no store has it.

        Raises:
            CorruptGraph: where its line indexed but does not validate as a whole graph.
        """
        graph_id = self._search.graph_id(self.model, layer, neuron)
        if graph_id is None:
            return None
        return self._catalog.graph(graph_id, neuron_id(layer, neuron))

    @property
    def indexing(self) -> bool:
        """Whether the stores are still being indexed: answers cover the graphs indexed so far."""
        return self._catalog.index.indexing

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
               exact: bool = False, layer: int | None = None, min_f1: float | None = None,
               repeated: bool = False, limit: int | None = None, offset: int = 0) -> tuple[int, list[Hit]]:
        """Graphs holding every given activating and context token, best F1 first
        (``store.sqlsearch.IndexSearch.search``)."""
        ranks = self._catalog.cached(("ranks", self.model), lambda: self._search.ranks(self.model))
        return self._search.search(self.model, activating, context, exact=exact, layer=layer, min_f1=min_f1,
                                   repeated=repeated, limit=limit, offset=offset, count=len(self), ranks=ranks)

    def similar_to(self, target: NeuronGraph, *, threshold: float = PAPER_THRESHOLD, mode: Mode = "similar",
                   limit: int = SIMILAR_LIMIT) -> list[Match]:
        """Neurons whose token sets overlap the target's (``store.similarity``'s rule)."""
        return self._search.similar_to(self.model, target, threshold=threshold, mode=mode, limit=limit)

    def similar_pairs(self, *, threshold: float = PAPER_THRESHOLD, limit: int = SIMILAR_LIMIT,
                      layer: int | None = None, budget: PairBudget | None = None) -> list[Pair]:
        """The most similar pairs of the model's graphs (``store.similarity``'s rule), under
        ``budget``'s cap and cancel event where given."""
        return self._search.similar_pairs(self.model, threshold=threshold, limit=limit, layer=layer,
                                          budget=budget)


class Catalog:
    """The stores of one directory, by model; see the module docstring.

    Args:
        directory: where the stores are; it need not exist yet (a first build creates it).
        index_path: the index database (default: see :class:`store.sqlindex.StoreIndex`).
        shapes: ``(n_layers, d_mlp)`` of a model by name, or None where unknown; lines of stores
            whose header records no shape are checked against it (the server passes the models
            it serves), so a line with a layer or neuron the model lacks is skipped as corrupt.
        first_call: index changed files in the background, waiting at most this many seconds
            for them before answering from the graphs indexed so far (:attr:`StoreView.indexing`
            says so); None (the default) indexes before answering.
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

    def refresh(self) -> None:
        """Bring the index in step with the files (cheap when nothing changed)."""
        with self._lock:
            self.index.refresh()
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
            graph = NeuronGraph.model_validate(orjson.loads(self.search.line(graph_id)))
            graph.graph  # noqa: B018 - validate the trie rows now, not at first use
            graph.with_scan(self.index.scan(graph_id))
        except (orjson.JSONDecodeError, ValidationError, ValueError, LookupError, OSError) as exc:
            reason = str(exc).splitlines()[0][:200]
            raise CorruptGraph(f"the stored graph of {name} cannot be read ({reason}); rebuild it with "
                               "build_graph(rebuild=true)") from exc
        with self._lock:
            self._graphs[graph_id] = graph
            while len(self._graphs) > GRAPH_CACHE:
                self._graphs.popitem(last=False)
        return graph

    def models(self) -> list[StoreView]:
        """Every model with at least one store file, by name (refreshes first)."""
        self.refresh()
        return [StoreView(self, model) for model in self.search.models()]

    def get(self, model: str) -> StoreView | None:
        """One model's stores, or None where no file holds that model (refreshes first)."""
        self.refresh()
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

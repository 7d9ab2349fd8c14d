"""A build spread over a Ray cluster: work units of (layer, neuron range), one shard per worker.

    driver: lock the store -> merge the shards a killed run left -> pending neurons -> units
        -> workers (Ray actors; each loads the model once) run ``builder.run.runner.run_build`` for
           one unit at a time into their own shard ``<store>.shards/<host>-<pid>.jsonl``
        -> each finished unit's graphs appended to the store -> shards merged and removed

    n2g build --ray --workers 2 --layers 0-29           # a local cluster on this machine
    n2g build --ray auto --workers 8 --gpus-per-worker 1   # the cluster `ray start --head` made

Units are of at most ``DistributedConfig.unit_neurons`` neurons, fewer where that leaves a worker
idle (64 neurons over 2 workers: two units of 32). Examples are stored as references into the
scan file where the store's readers find it (``store.jsonl.scan_for``: the scan beside the store,
or the one its header names), else as text: the driver opens the store first and tells each
worker which, and a worker sends back the very lines it wrote to its shard.

The one rule for "done" is the store's (``store.pending``, last line wins): the driver holds the
store's lock for the whole run, builds only what it lacks, and appends a graph unless the store's
current line for that neuron is the same graph (so a shard merged twice adds nothing). A worker
appends each finished batch to its shard before returning the unit, so:

- a killed worker loses at most its unit in flight: the batches it finished are in its shard,
  merged at once; the rest of the unit goes to another worker (a replacement is started);
- a killed driver loses at most the units in flight: the next run merges the shards it left
  before deciding what to build, and rebuilds nothing they hold.

Units go back to the driver as graphs, so a cluster needs no shared filesystem for the store;
with one, shards of a killed driver's workers on other machines are recovered too. Each graph's
build record names its worker: ``build["worker"] = {"host": ..., "pid": ...}``.

Ray is the optional ``[distributed]`` extra; it is imported when a distributed build starts.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.config import BuildConfig
from builder.run.cluster import (
    BuildEvent,
    DistributedConfig,
    ModelLoader,
    Pool,
    Run,
    WorkerInfo,
    connect,
    ray_module,
)
from store.errors import Busy, StoreMismatch
from store.examples import ScanRef, has_refs, resolve, scan_problem
from store.graph import NeuronGraph
from store.jsonl import StoreWriter, dumps, read_store, scan_for
from store.lines import Shape
from store.names import check_range, file_safe, neuron_id
from store.pending import pending

log = logging.getLogger(__name__)

__all__ = ["BuildEvent", "BuildWorker", "DistributedConfig", "DistributedResult", "WorkUnit",
           "run_distributed", "shard_dir", "unit_size", "units_of"]


@dataclass(frozen=True)
class WorkUnit:
    """Some neurons of one layer, built by one worker in one call of ``run_build``."""

    layer: int
    neurons: tuple[int, ...]

    @property
    def name(self) -> str:
        """``L3/N0-255`` (first and last neuron)."""
        first, last = self.neurons[0], self.neurons[-1]
        return neuron_id(self.layer, first) + ("" if first == last else f"-{last}")


@dataclass
class DistributedResult:
    """What a distributed build did."""

    appended: int = 0
    """Graphs appended to the store from finished units."""
    recovered: int = 0
    """Graphs appended from shards: of a killed run, or of workers that died in this one."""
    units: int = 0
    """Units finished."""
    lost_workers: list[str] = field(default_factory=list)
    """``host:pid`` of workers that died."""
    built_by: dict[str, int] = field(default_factory=dict)
    """Graphs each worker (``host:pid``) built in the units it finished."""


def units_of(todo: dict[int, list[int]], size: int) -> list[WorkUnit]:
    """The pending neurons as units of at most ``size`` neurons, layer by layer.

    >>> [u.name for u in units_of({0: [0, 1, 2], 3: [7]}, 2)]
    ['L0/N0-1', 'L0/N2', 'L3/N7']
    """
    return [WorkUnit(layer, tuple(neurons[i:i + size]))
            for layer, neurons in todo.items() for i in range(0, len(neurons), size)]


def unit_size(pending: int, dist: DistributedConfig) -> int:
    """Neurons a unit: ``dist.unit_neurons``, or fewer, so that every worker gets a unit.

    >>> unit_size(64, DistributedConfig(workers=2)), unit_size(10_000, DistributedConfig(workers=2))
    (32, 256)
    """
    return max(1, min(dist.unit_neurons, math.ceil(pending / dist.workers)))


def shard_dir(store_path: Path) -> Path:
    """Where the workers of a build into ``store_path`` write their shards."""
    return store_path.with_name(store_path.name + ".shards")


# --------------------------------------------------------------------------- merging
def _digest(graph: NeuronGraph) -> bytes:
    return hashlib.blake2b(dumps(graph), digest_size=16).digest()


class _Merger:
    """The store being built and the digest of its current line per neuron: appends a graph
    unless that neuron's line is the same graph already (the store's last-line rule)."""

    def __init__(self, writer: StoreWriter, shape: Shape, scan_path: Path | None = None) -> None:
        self.writer, self.shape, self.scan_path = writer, shape, scan_path
        self._scan: Any = None
        # Digests, not graphs: a whole model's store is too large to hold twice in memory.
        self.current = {key: _digest(g) for key, g in read_store(writer.path, shape).graphs.items()}

    def storable(self, graph: NeuronGraph) -> NeuronGraph:
        """The graph as this store can hold it: references into a scan the store does not name
        (a shard left by a run that wrote them, say) read as text through the scan file at hand.

        Raises:
            StoreMismatch: where that scan file is not at hand.
        """
        if not (has_refs(graph.examples) or has_refs(graph.pruned)):
            return graph
        if graph.scan is not None and graph.scan == self.writer.scan:
            return graph
        if self._scan is None and self.scan_path is not None and Path(self.scan_path).is_file():
            from store.scanfile import ScanFile

            self._scan = ScanFile(self.scan_path)
        problem = scan_problem(graph.scan, self._scan)
        if problem is not None:
            raise StoreMismatch(f"graph {graph.id} holds examples as references into a scan file that "
                                f"{self.writer.path.name} does not name, and they cannot be read as text "
                                f"here ({problem}): pass that scan file with --scan-file")
        return graph.model_copy(update={"examples": resolve(graph.examples, self._scan),
                                        "pruned": resolve(graph.pruned, self._scan)})

    def append(self, graphs: Iterable[NeuronGraph]) -> int:
        fresh = []
        for graph in map(self.storable, graphs):
            key, digest = (graph.layer, graph.neuron), _digest(graph)
            if self.current.get(key) != digest:
                fresh.append(graph)
                self.current[key] = digest
        return self.writer.append(fresh)

    def merge_shard(self, shard: Path, wait: float) -> tuple[int, set[tuple[int, int]]]:
        """Append what a shard holds that the store lacks, then remove the shard; returns how
        many graphs were appended and every neuron the shard held.

        Raises:
            Busy: if a worker still holds the shard after ``wait`` seconds (merging it later,
                after its neurons were built again, would store them twice).
        """
        try:
            # Taking the shard's lock also cuts a last line a killed worker left half written.
            lock = StoreWriter(shard, self.writer.model, self.shape, wait=wait)
        except Busy:
            raise Busy(f"{shard} is still being written by a worker (of this build or one before "
                       "it); stop that worker, or wait for it to finish, and run again") from None
        with lock:
            graphs = read_store(shard, self.shape).graphs
            merged = self.append(graphs.values())
            shard.unlink()
        return merged, set(graphs)

    def merge_all(self, folder: Path, wait: float) -> int:
        """Merge every shard in ``folder``; returns the graphs appended."""
        return sum(self.merge_shard(shard, wait)[0] for shard in sorted(folder.glob("*.jsonl")))


# --------------------------------------------------------------------------- the worker
class BuildWorker:
    """One worker: the model loaded once, the build source kept across units, one shard.

    Made a Ray actor by :func:`run_distributed`; plain Python otherwise (tests call it directly).
    An error while loading is kept and raised by :meth:`info`, so the driver reports the real
    error (an unknown model, a missing corpus) rather than "the actor died".
    """

    def __init__(self, load: ModelLoader, config: BuildConfig, folder: str,
                 corpus: str | None = None, scan_path: str | None = None) -> None:
        from builder.run.runner import BuildSource
        from store.scanfile import ScanFile

        self.config, self.error = config, None
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.shard = Path(folder) / f"{file_safe(self.host)}-{self.pid}.jsonl"
        try:
            self.model = load()
            # A scan file of another model, or one missing on this machine, means: scan instead.
            found = ScanFile(scan_path) if scan_path and Path(scan_path).is_file() else None
            scan_file = found if found is not None and found.model == self.model.name else None
            self.source = BuildSource(self.model, config, corpus=corpus, scan_file=scan_file)
        except Exception as exc:  # noqa: BLE001 - raised again, whole, by info()
            self.error = exc

    def info(self) -> WorkerInfo:
        """Who this worker is and what model it loaded.

        Raises:
            Exception: whatever loading the model raised.
        """
        if self.error is not None:
            raise self.error
        return WorkerInfo(self.host, self.pid, str(self.shard), self.model.name,
                          (self.model.n_layers, self.model.d_mlp), self.source.scan_ref)

    def build(self, unit: WorkUnit, scan: ScanRef | None = None) -> list[NeuronGraph]:
        """Build one unit into this worker's shard (each batch appended as it finishes); returns
        the graphs as the shard holds them. ``scan``: the scan the driver's store names, where
        examples may be references into it (this worker's own scan), else text."""
        from builder.run.runner import run_build

        stamp = {"worker": {"host": self.host, "pid": self.pid}}
        # The driver has applied the store's rule already: build every neuron of the unit
        # (rebuild=True also spares reading the growing shard once per unit).
        # A progress callback silences the tqdm bars, which Ray would relay to the driver's screen.
        return run_build(self.model, [unit.layer], list(unit.neurons), self.shard, self.config,
                         self.source, rebuild=True, progress=lambda *_: None, stamp=stamp,
                         refer=scan is not None and scan == self.source.scan_ref, as_stored=True)


class _BuildRun(Run):
    """A distributed build: units of neurons; results and dead workers' shards go to the store."""

    def __init__(self, ray: Any, pool: Pool, merger: _Merger, units: Sequence[WorkUnit],
                 dist: DistributedConfig, notify: Callable[[BuildEvent], None]) -> None:
        super().__init__(ray, pool, units, dist, notify)
        self.merger = merger
        self.result = DistributedResult(lost_workers=self.lost_workers)

    def call(self, actor: Any, unit: WorkUnit) -> Any:
        return actor.build.remote(unit, self.merger.writer.scan)

    def done(self, actor: Any, unit: WorkUnit, value: list[NeuronGraph]) -> None:
        # Its references (if any) point into the scan the store names: the worker was told.
        appended = self.merger.append(graph.with_scan(self.merger.writer.scan) for graph in value)
        info = self.pool.info[actor]
        who = f"{info.host}:{info.pid}"
        self.result.built_by[who] = self.result.built_by.get(who, 0) + len(value)
        self.result.appended += appended
        self.result.units += 1
        self.notify(BuildEvent("unit", info, unit, appended, actor))

    def left_of(self, info: WorkerInfo, unit: WorkUnit) -> tuple[WorkUnit | None, int]:
        # What the worker finished is in its shard; the process is on its way out, and its
        # lock goes with it.
        shard = Path(info.shard)
        recovered, held = self.merger.merge_shard(shard, wait=60) if shard.is_file() else (0, set())
        self.result.recovered += recovered
        rest = tuple(n for n in unit.neurons if (unit.layer, n) not in held)
        return (WorkUnit(unit.layer, rest) if rest else None), recovered


def run_distributed(load: ModelLoader, layers: Sequence[int], neurons: Sequence[int] | None,
                    store_path: Path, config: BuildConfig, dist: DistributedConfig,
                    corpus: str | Path | None = None, scan_path: Path | None = None,
                    rebuild: bool = False,
                    on_event: Callable[[BuildEvent], None] | None = None) -> DistributedResult:
    """Build the requested neurons of each layer into a store, spread over Ray workers.

    Args:
        load: loads the model in each worker (see :data:`ModelLoader`).
        layers: layers to build.
        neurons: neuron indices (None: every neuron of each layer).
        store_path: the ``.jsonl`` store; shards go to :func:`shard_dir` beside it.
        config: stage settings, the same for every worker.
        dist: the cluster and how to use it.
        corpus: a corpus name or path every worker can read (None: the embedded default).
        scan_path: a scan file to take windows and top windows from, where a worker has it.
        rebuild: build neurons the store holds already (the newer line wins).
        on_event: called in the driver for each worker started or lost and each unit done.

    Raises:
        Unavailable: without Ray, or when units were given up (workers kept dying on them);
            everything finished is in the store, and running again builds the rest.
        store.errors.Busy: if another writer holds the store, or a worker still holds a shard.
        BadArgument, OutOfRange: for asks the cluster or the model cannot meet.
    """
    ray = ray_module()
    notify = on_event or (lambda event: None)
    store_path = Path(store_path)
    folder = shard_dir(store_path)  # made by the first worker's shard
    connected = connect(ray, dist)
    pool: Pool | None = None
    try:
        pool = Pool(ray, dist, (load, config, str(folder), None if corpus is None else str(corpus),
                                None if scan_path is None else str(scan_path)), BuildWorker)
        idle = pool.start(dist.workers)
        for actor in idle:
            notify(BuildEvent("worker", pool.info[actor], actor=actor))
        model, shape = pool.info[idle[0]].model, pool.info[idle[0]].shape
        requested = list(range(shape[1])) if neurons is None else list(neurons)
        for layer in layers:
            check_range(model, shape, layer=layer)
        for n in requested:
            check_range(model, shape, neuron=n)
        # References into the workers' scan where the store's readers find it, else text.
        offer = scan_for(store_path, scan_path, pool.info[idle[0]].scan)
        with StoreWriter(store_path, model, shape, scan=offer) as writer:
            merger = _Merger(writer, shape, scan_path)
            recovered = merger.merge_all(folder, wait=0)
            if recovered:
                notify(BuildEvent("merged", None, graphs=recovered))
            # After the merge, so that what a killed run's shards held counts as done.
            todo = pending(layers, requested, set(merger.current), rebuild)
            size = unit_size(sum(map(len, todo.values())), dist)
            run = _BuildRun(ray, pool, merger, units_of(todo, size), dist, notify)
            run.result.recovered += recovered
            run.run(idle)
            # Every unit is back and no worker holds its shard between units: what the shards
            # hold is in the store; merging checks that and removes them.
            run.result.recovered += merger.merge_all(folder, wait=60)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    finally:
        if pool is not None:
            pool.stop()
        if connected:
            ray.shutdown()
    run.check_given_up(f"{sum(len(u.neurons) for u in run.given_up)} neurons were",
                       f"everything else is in {store_path}; run the same command again to build the rest")
    return run.result

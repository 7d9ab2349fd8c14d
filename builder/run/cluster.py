"""The Ray plumbing of the distributed build and scan: connecting, workers, units handed out.

:class:`DistributedConfig` says where and how widely work spreads; :class:`Pool` starts Ray actors
of a worker class (each loads the model once), replaces dead ones and stops them; :class:`Run`
hands units to idle workers one at a time and queues again what a dead worker left of its unit.
``builder/run/distributed.py`` (the build) and ``builder/run/distributed_scan.py`` (the scan) say
what a unit is and what its result does. Ray (the ``[distributed]`` extra) is imported only here, and
only when a run starts.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from builder.models import LoadedModel
from store.errors import BadArgument, Unavailable
from store.examples import ScanRef
from store.lines import Shape

log = logging.getLogger(__name__)

ModelLoader = Callable[[], LoadedModel]
"""Loads the model in a worker: a picklable function of no arguments (a ``functools.partial`` of
``builder.models.load_model``; tests pass a rule-defined model)."""


@dataclass(frozen=True)
class DistributedConfig:
    """Where and how widely a build or scan spreads (``n2g build --ray``, ``n2g scan --ray``)."""

    address: str = "local"
    """``"local"``: start a cluster on this machine for this build; ``"auto"``: join the cluster
    ``ray start --head`` started here; ``"HOST:PORT"`` or ``"ray://HOST:10001"``: join that one.
    A driver already connected (``ray.init`` done by the caller) uses its cluster."""
    workers: int = 2
    """Ray actors started, each loading the model once."""
    cpus_per_worker: float = 1.0
    """CPUs reserved per worker (Ray also caps each worker's torch threads to it)."""
    gpus_per_worker: float | None = None
    """GPUs per worker; None: 1 where the cluster has a GPU for each worker, a share of them where
    it has fewer, 0 where it has none."""
    unit_neurons: int = 256
    """Neurons per work unit (of one layer), at most: a build of fewer neurons than this per
    worker is cut into smaller units, so that every worker gets one. A killed worker loses at
    most one unit, less the batches of ``BuildConfig.neuron_batch`` it finished."""
    max_restarts: int = 2
    """Replacement workers started, in all, after workers die."""
    attempts: int = 2
    """Times a unit is tried before the driver gives up on it (a unit that kills every worker it
    reaches must not take the whole cluster with it)."""
    local_object_store_mb: int | None = None
    """Object store of a local cluster, in MB (None: Ray's default share of memory)."""

    def __post_init__(self) -> None:
        if self.workers < 1 or self.unit_neurons < 1 or self.attempts < 1 or self.max_restarts < 0:
            raise BadArgument("--workers and the unit size must be at least 1, restarts at least 0")
        if self.cpus_per_worker <= 0 or (self.gpus_per_worker is not None and self.gpus_per_worker < 0):
            raise BadArgument("--cpus-per-worker must be above 0 and --gpus-per-worker at least 0")


@dataclass(frozen=True)
class WorkerInfo:
    """Who a worker is: what it writes into each graph's build record, and its shard."""

    host: str
    pid: int
    shard: str
    model: str
    shape: Shape
    scan: ScanRef | None = None
    """The scan file its builds can refer examples into (where it serves them), else None."""


@dataclass(frozen=True)
class BuildEvent:
    """What the driver reports while it runs: a worker started or lost, a unit done."""

    kind: Literal["worker", "unit", "lost", "merged"]
    worker: WorkerInfo | None
    unit: Any = None
    """The unit done or lost: a ``WorkUnit`` of neurons, or a ``WindowSpan`` of a scan."""
    graphs: int = 0
    """Graphs appended to the store by this event (a scan: 0)."""
    actor: Any = None
    """The worker's Ray actor handle (``ray.kill`` it to test recovery)."""


def ray_module() -> Any:
    """The ``ray`` package.

    Raises:
        Unavailable: where it is not installed, saying how to install it.
    """
    try:
        import ray
    except ImportError:
        raise Unavailable("--ray needs Ray: pip install 'n2g-mcp[distributed]' (or drop --ray to "
                          "run in this process)") from None
    return ray


def connect(ray: Any, dist: DistributedConfig) -> bool:
    """Connect to the cluster; returns whether this call connected (and so should disconnect)."""
    if ray.is_initialized():
        return False
    if dist.address == "local":
        memory = dist.local_object_store_mb
        ray.init(num_cpus=math.ceil(dist.workers * dist.cpus_per_worker), include_dashboard=False,
                 object_store_memory=None if memory is None else memory * 2**20)
    else:
        try:
            ray.init(address=dist.address)
        except ConnectionError as exc:
            raise Unavailable(f"no Ray cluster at {dist.address}: {exc}; start one with "
                              "`ray start --head`, or use --ray local") from None
    return True


def gpus_per_worker(ray: Any, dist: DistributedConfig) -> float:
    """The GPUs each worker asks for; refuses asks the cluster can never grant (Ray would
    otherwise wait for them forever)."""
    cluster = ray.cluster_resources()
    gpus, cpus = cluster.get("GPU", 0.0), cluster.get("CPU", 0.0)
    if dist.workers * dist.cpus_per_worker > cpus:
        raise BadArgument(f"{dist.workers} workers of {dist.cpus_per_worker:g} CPUs need "
                          f"{dist.workers * dist.cpus_per_worker:g}; the cluster has {cpus:g}: "
                          "ask for fewer --workers")
    per = dist.gpus_per_worker
    if per is None:
        per = min(1.0, gpus / dist.workers) if gpus else 0.0
    if dist.workers * per > gpus:
        raise BadArgument(f"{dist.workers} workers of {per:g} GPUs need {dist.workers * per:g}; "
                          f"the cluster has {gpus:g}: lower --gpus-per-worker (0 builds on CPUs)")
    return per


class Pool:
    """The workers of one run: starting, replacing and stopping them."""

    def __init__(self, ray: Any, dist: DistributedConfig, args: tuple, worker: type) -> None:
        gpus = gpus_per_worker(ray, dist)
        self.ray, self.dist, self.args = ray, dist, args
        self.actor_class = ray.remote(num_cpus=dist.cpus_per_worker, num_gpus=gpus)(worker)
        self.restarts = dist.max_restarts
        self.info: dict[Any, WorkerInfo] = {}  # actor -> who it is

    def start(self, count: int) -> list[Any]:
        """Start ``count`` workers and wait until each has loaded the model.

        Raises:
            Exception: the first worker's loading error.
        """
        actors = [self.actor_class.remote(*self.args) for _ in range(count)]
        try:
            infos = self.ray.get([a.info.remote() for a in actors])
        except BaseException:
            for actor in actors:
                self.ray.kill(actor)
            raise
        self.info.update(zip(actors, infos, strict=True))
        return actors

    def replace(self) -> list[Any]:
        """A replacement for a dead worker, while the restart budget lasts (else none)."""
        if self.restarts <= 0:
            return []
        self.restarts -= 1
        return self.start(1)

    def stop(self) -> None:
        for actor in self.info:
            self.ray.kill(actor)


class Run:
    """Units handed to idle workers, one a worker at a time. When a worker dies, what is left of
    its unit (:meth:`left_of`) is queued again, until the unit has had ``dist.attempts`` tries,
    and a replacement worker is started. Subclasses say what a unit is and what its result does."""

    def __init__(self, ray: Any, pool: Pool, units: Sequence[Any], dist: DistributedConfig,
                 notify: Callable[[BuildEvent], None]) -> None:
        self.ray, self.pool, self.dist, self.notify = ray, pool, dist, notify
        self.queue = deque(units)
        self.tries: dict[Any, int] = {}
        self.given_up: list[Any] = []
        self.lost_workers: list[str] = []

    def call(self, actor: Any, unit: Any) -> Any:
        """Start a unit on a worker; returns the result's reference."""
        raise NotImplementedError

    def done(self, actor: Any, unit: Any, value: Any) -> None:
        """Take a finished unit's result."""
        raise NotImplementedError

    def left_of(self, info: WorkerInfo, unit: Any) -> tuple[Any | None, int]:
        """What of a lost worker's unit is still to do (None: nothing), and the graphs recovered."""
        return unit, 0

    def run(self, idle: list[Any]) -> None:
        """Hand units to idle workers until every unit is done or given up."""
        from ray.exceptions import RayActorError

        in_flight: dict[Any, tuple[Any, Any]] = {}  # result ref -> (actor, unit)
        while self.queue or in_flight:
            while idle and self.queue:
                actor, unit = idle.pop(), self.queue.popleft()
                self.tries[unit] = self.tries.get(unit, 0) + 1
                in_flight[self.call(actor, unit)] = (actor, unit)
            if not in_flight:
                break  # units left and no worker to run them
            [ref], _ = self.ray.wait(list(in_flight), num_returns=1)
            actor, unit = in_flight.pop(ref)
            try:
                value = self.ray.get(ref)
            except RayActorError:
                idle += self._lost(actor, unit)
                continue
            self.done(actor, unit, value)
            idle.append(actor)
        self.given_up += self.queue

    def _lost(self, actor: Any, unit: Any) -> list[Any]:
        self.ray.kill(actor)  # "unavailable" may mean a live worker cut off: it must not go on
        info = self.pool.info.pop(actor)
        self.lost_workers.append(f"{info.host}:{info.pid}")
        rest, recovered = self.left_of(info, unit)
        self.notify(BuildEvent("lost", info, unit, recovered, actor))
        if rest is not None:
            if self.tries[unit] < self.dist.attempts:
                self.tries[rest] = self.tries[unit]
                self.queue.appendleft(rest)
            else:
                self.given_up.append(rest)
        fresh = self.pool.replace()
        for replacement in fresh:
            self.notify(BuildEvent("worker", self.pool.info[replacement], actor=replacement))
        return fresh

    def check_given_up(self, what: str, after: str) -> None:
        """Raise if units were given up: ``what`` (e.g. "12 neurons were") not done, naming the
        units and the workers that died, then ``after`` (what is kept, how to finish).

        Raises:
            Unavailable: if any unit was given up.
        """
        if self.given_up:
            names = ", ".join(u.name for u in self.given_up[:5]) + (" ..." if len(self.given_up) > 5 else "")
            raise Unavailable(f"{what} not done ({names}): the workers that took them died "
                              f"({', '.join(self.lost_workers)}). {after[0].upper()}{after[1:]}")

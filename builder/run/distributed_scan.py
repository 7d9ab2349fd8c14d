"""A whole-model scan spread over Ray workers: spans of windows whose top windows and counts merge.

    driver: the corpus windows' count (from a worker) -> spans of ``span_windows`` windows
        -> each worker runs the scan's pass (``builder.stages.scan_pass.top_k_pass``) over its
           span, for every layer, and returns the running state (top-k windows and traces, histogram)
        -> the driver folds each span's state into one as it comes back (``LayerState.merge``)
        -> one worker finishes (random windows, density, quantiles) and writes the scan file

    n2g scan --ray --workers 2        # the same file as `n2g scan`, stores/<model>.scan.npz

Why the merge is exact: a neuron's top ``k`` windows over the whole corpus are among the top
``k`` of the span holding each, so the top ``k`` of the spans' top ``k`` lists is the whole
scan's; the statistics come from per-neuron counts (a histogram of sampled tokens, firing tokens
in the top windows) that add across spans and are turned into density and quantiles once, at
the end. Spans start on multiples of the scan's batch, whose seed sets which tokens are
sampled, so the histogram is the one a single pass makes. Only ties differ: among windows of
equal activation the k-th place may go to another one.

A span writes nothing, so a killed worker costs only its span, which another worker scans again;
a killed driver costs the scan (run it again). The driver holds two states of every layer at
once (about 23 MB a layer for SmolLM2-135M, most of it the top windows' traces).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from builder.config import BuildConfig, ScanConfig
from builder.run.cluster import (
    BuildEvent,
    DistributedConfig,
    ModelLoader,
    Pool,
    Run,
    connect,
    ray_module,
)
from builder.run.distributed import BuildWorker
from store.errors import Unavailable

if TYPE_CHECKING:
    from builder.stages.scan_pass import LayerState


@dataclass(frozen=True)
class WindowSpan:
    """Windows ``start`` to ``stop`` (exclusive) of the corpus, scanned by one worker."""

    start: int
    stop: int

    @property
    def name(self) -> str:
        """``windows 0-4095``."""
        return f"windows {self.start}-{self.stop - 1}"


def spans_of(n_windows: int, span_windows: int, batch_size: int) -> list[WindowSpan]:
    """The corpus cut into spans of about ``span_windows`` windows, each starting on a batch.

    >>> [s.name for s in spans_of(10, 7, 3)]  # 7 windows asked: 6, two whole batches of 3
    ['windows 0-5', 'windows 6-9']
    """
    size = max(batch_size, span_windows // batch_size * batch_size)
    return [WindowSpan(a, min(n_windows, a + size)) for a in range(0, n_windows, size)]


State = dict[int, dict[str, np.ndarray]]
"""A span's pass as plain arrays, per layer (what travels between processes)."""


def _arrays(state: dict[int, LayerState]) -> State:
    out = {}
    for layer, s in state.items():
        s.flush()
        out[layer] = {"values": s.values.numpy(), "index": s.index.numpy(),
                      "traces": s.traces.numpy(), "hist": s.hist.numpy()}
    return out


def _states(arrays: State) -> dict[int, LayerState]:
    import torch

    from builder.stages.scan_pass import LayerState

    return {layer: LayerState(**{k: torch.from_numpy(np.array(v)) for k, v in a.items()}, pending=[])
            for layer, a in arrays.items()}


def merge_states(a: State, b: State) -> State:
    """Two disjoint spans' passes as one (see the module docstring)."""
    merged = _states(a)
    for layer, state in _states(b).items():
        merged[layer].merge(state)
    return _arrays(merged)


class ScanWorker(BuildWorker):
    """A worker that scans spans of the corpus and writes the finished scan file."""

    def n_windows(self) -> int:
        """How many corpus windows there are (the driver cuts them into spans)."""
        return len(self.source.windows)

    def scan_span(self, layers: Sequence[int], span: WindowSpan) -> State:
        """The scan's pass over one span of windows, for every layer given."""
        from builder.stages.scan_pass import top_k_pass

        state = top_k_pass(self.model, self.source.windows, layers, self.config.scan, None,
                            lambda *_: None, None, span=(span.start, span.stop))
        return _arrays(state)

    def write_scan(self, merged: State) -> bytes:
        """The scan file of the merged passes (statistics and random windows done here)."""
        from builder.stages.scan import export_scan_file, layer_scans_from_pass

        scans = layer_scans_from_pass(self.model, self.source.windows, self.config.scan, _states(merged))
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "scan.npz"
            export_scan_file(self.model, self.source.windows, scans, path, self.config.scan)
            return path.read_bytes()


class _ScanRun(Run):
    """A distributed scan: units are spans; each result is folded into the merged state."""

    def __init__(self, ray: Any, pool: Pool, layers: Sequence[int], spans: Sequence[WindowSpan],
                 dist: DistributedConfig, notify: Callable[[BuildEvent], None]) -> None:
        super().__init__(ray, pool, spans, dist, notify)
        self.layers = list(layers)
        self.merged: State | None = None

    def call(self, actor: Any, unit: WindowSpan) -> Any:
        return actor.scan_span.remote(self.layers, unit)

    def done(self, actor: Any, unit: WindowSpan, value: State) -> None:
        self.merged = value if self.merged is None else merge_states(self.merged, value)
        self.notify(BuildEvent("unit", self.pool.info[actor], unit, 0, actor))


def run_distributed_scan(load: ModelLoader, out: Path, config: ScanConfig, dist: DistributedConfig,
                         corpus: str | Path | None = None, span_windows: int = 2048,
                         on_event: Callable[[BuildEvent], None] | None = None) -> Path:
    """Scan every layer of the model over the corpus on Ray workers and write the scan file.

    Args:
        load: loads the model in each worker.
        out: the scan file to write (through a temporary file).
        config: scan settings (window, top-k, batch size, seed, ...).
        dist: the cluster and how to use it.
        corpus: a corpus every worker can read (None: the embedded default).
        span_windows: windows a unit (rounded down to whole batches).
        on_event: called for each worker started or lost and each span done.

    Returns:
        ``out``.

    Raises:
        Unavailable: without Ray, or when spans were given up (workers kept dying on them).
    """
    ray = ray_module()
    notify = on_event or (lambda event: None)
    connected = connect(ray, dist)
    pool: Pool | None = None
    try:
        args = (load, BuildConfig(scan=config), tempfile.gettempdir(),
                None if corpus is None else str(corpus), None)
        pool = Pool(ray, dist, args, ScanWorker)
        idle = pool.start(dist.workers)
        for actor in idle:
            notify(BuildEvent("worker", pool.info[actor], actor=actor))
        n_layers = pool.info[idle[0]].shape[0]
        n = ray.get(idle[0].n_windows.remote())
        run = _ScanRun(ray, pool, range(n_layers), spans_of(n, span_windows, config.batch_size),
                       dist, notify)
        run.run(idle)
        run.check_given_up(f"{len(run.given_up)} spans were",
                           "nothing of the scan is kept; run the same command again")
        finisher = next(iter(pool.info), None) or next(iter(pool.replace()), None)
        if finisher is None:
            raise Unavailable("every worker died before the scan file was written; run it again")
        data = ray.get(finisher.write_scan.remote(run.merged))
    finally:
        if pool is not None:
            pool.stop()
        if connected:
            ray.shutdown()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return out

"""The profiling driver: glue between a GraphSpace, the cost table and the profiler pool.

Data flow::

    GraphSpace.specs {key: StageSpec}
        --device probe (one worker, or the analytic model locally)--> DeviceInfo
        --CostTable.lookup(keys, device, batch, dtype)--> cache hits (never measured again)
        --ProfilerPool.measure(rest)--> measurements, streamed in chunks --> CostTable.append
        --> {key: Measurement} for every key, DriverReport

Nothing here knows about the DP or the state space beyond ``space.specs``: the driver only decides
what to measure, where, and where the results go.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..costs.factory import CostConfig, CostKind, make_cost_source
from ..costs.measurement import DeviceInfo, ErrorKind, Measurement, MeasureSettings
from ..space.stage import StageSpec
from .cluster import SourceSpec, connect
from .profiler_pool import ProfilerPool
from .progress import ProgressBar


class DeviceMismatchError(RuntimeError):
    """Workers of one pool measure on different devices; their results cannot share one table key."""


@dataclass(frozen=True)
class DriverReport:
    """What ``profile_graph_space`` did and where its time went."""
    device: DeviceInfo
    unique_stages: int
    cache_hits: int
    measured: int
    errors: int
    num_workers: int
    per_worker: Dict[str, int] = field(default_factory=dict)
    retries: int = 0
    worker_deaths: int = 0
    restarts: int = 0
    table_appends: int = 0
    seconds: Dict[str, float] = field(default_factory=dict)  # connect, start, probe, lookup, measure, append

    def format(self) -> str:
        lines = [f"profiled on {self.device.name} ({self.device.kind}) with {self.num_workers} worker(s)",
                 f"  unique stages {self.unique_stages:,}  cache hits {self.cache_hits:,}  measured "
                 f"{self.measured:,}  errors {self.errors}  retries {self.retries}  worker deaths "
                 f"{self.worker_deaths}"]
        if self.per_worker:
            lines.append("  per worker: " + ", ".join(f"{w}={n}" for w, n in sorted(self.per_worker.items())))
        lines.append("  seconds: " + "  ".join(f"{k} {v:.2f}" for k, v in self.seconds.items()))
        return "\n".join(lines)


def _dtype(source: SourceSpec) -> str:
    return source.dtype if isinstance(source, CostConfig) else "float32"


def _specs_of(space: Any) -> Mapping[str, StageSpec]:
    specs = getattr(space, "specs", space)
    if not isinstance(specs, Mapping):
        raise TypeError(f"space must be a GraphSpace (with .specs) or a mapping key -> StageSpec, "
                        f"got {type(space).__name__}")
    return specs


def _reusable(m: Measurement) -> bool:
    """A cached worker death says more about the worker than the stage: measure it again."""
    return m.error is not ErrorKind.WORKER_DIED


class _TableWriter:
    """Buffers measurements and appends them to the table in chunks (so a crash loses little)."""

    def __init__(self, table, specs: Mapping[str, StageSpec], device: DeviceInfo, batch_size: int,
                 dtype: str, settings: MeasureSettings, chunk: int, interval_s: float):
        self.table, self.specs, self.device = table, specs, device
        self.batch_size, self.dtype, self.settings = batch_size, dtype, settings
        self.chunk, self.interval_s = chunk, interval_s
        self.buffer: List[Measurement] = []
        self.last = time.monotonic()
        self.appends = 0
        self.seconds = 0.0

    def add(self, measurements: List[Measurement]) -> None:
        if self.table is None:
            return
        self.buffer.extend(measurements)
        if len(self.buffer) >= self.chunk or time.monotonic() - self.last >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        if self.table is None or not self.buffer:
            return
        t0 = time.perf_counter()
        batch, self.buffer = self.buffer, []
        self.table.append(batch, {m.key: self.specs[m.key] for m in batch}, self.device, self.batch_size,
                          self.dtype, self.settings)
        self.appends += 1
        self.last = time.monotonic()
        self.seconds += time.perf_counter() - t0


def profile_graph_space(space: Any, *, num_workers: int, cost_cfg: SourceSpec, batch_size: int = 1,
                        settings: MeasureSettings = MeasureSettings(), table=None, progress: bool = True,
                        address: Optional[str] = None, pool: Optional[ProfilerPool] = None,
                        max_retries: int = 2, task_timeout_s: Optional[float] = None,
                        append_chunk: int = 256, append_interval_s: float = 10.0
                        ) -> Tuple[Dict[str, Measurement], DriverReport]:
    """Measure every distinct stage of ``space`` once, on Ray actors, reusing the cost table.

    Args:
        space: a ``GraphSpace`` (its ``specs``) or a mapping key -> StageSpec.
        num_workers: profiling actors to start (ignored when ``pool`` is given).
        cost_cfg: the ``CostConfig`` actors build their cost source from (or a picklable zero-argument
            factory of a CostSource, for tests and benchmarks).
        batch_size: batch size to measure at (part of the table's cache key).
        settings: warm-up / number / repeat of each timing.
        table: a ``CostTable`` to read cache hits from and append new measurements to, or None.
        progress: draw a progress bar on stderr.
        address: Ray cluster to join (default: the running Ray, else a new local instance).
        pool: an already started pool to use (kept running); by default one is started and shut down.
        max_retries: times a stage may be lost to a dying worker before it is recorded as WORKER_DIED.
        task_timeout_s: treat a batch running longer than this as a hung worker.
        append_chunk, append_interval_s: append to the table every this many results or seconds.

    Returns:
        ``({key: Measurement}`` for every key of the space (cache hits included), ``DriverReport)``.

    Raises:
        InsufficientResourcesError: the cluster cannot hold ``num_workers`` workers of this kind.
        DeviceMismatchError: the workers measure on different devices.
        WorkerStartError, WorkersExhaustedError: see ``ProfilerPool``.
    """
    specs = _specs_of(space)
    seconds: Dict[str, float] = {}
    t0 = time.perf_counter()
    connect(address)
    seconds["connect"] = time.perf_counter() - t0

    own_pool = pool is None
    dtype = _dtype(cost_cfg)
    try:
        # Device identity: the analytic model is the same everywhere, so it is asked here without
        # starting actors; a measuring source is asked where it runs.
        t0 = time.perf_counter()
        local_probe = isinstance(cost_cfg, CostConfig) and cost_cfg.kind is CostKind.ANALYTIC and pool is None
        if local_probe:
            device = make_cost_source(cost_cfg).device()
        else:
            if pool is None:
                pool = ProfilerPool(num_workers, cost_cfg, max_retries=max_retries, task_timeout_s=task_timeout_s)
            device = pool.device()
        seconds["probe"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        hits: Dict[str, Measurement] = {}
        if table is not None and specs:
            found = table.lookup(list(specs), device, batch_size, dtype)
            hits = {k: m for k, m in found.items() if _reusable(m)}
        todo = {k: s for k, s in specs.items() if k not in hits}
        seconds["lookup"] = time.perf_counter() - t0

        results: Dict[str, Measurement] = dict(hits)
        pool_report = None
        writer = _TableWriter(table, todo, device, batch_size, dtype, settings, append_chunk, append_interval_s)
        t0 = time.perf_counter()
        if todo:
            if pool is None:
                pool = ProfilerPool(num_workers, cost_cfg, max_retries=max_retries, task_timeout_s=task_timeout_s)
            seconds["start"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            _check_same_device(pool, device)
            seconds["start"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            bar = ProgressBar(total=len(todo), cache_hits=len(hits), desc="profiling stages", enabled=progress)

            def on_result(batch: List[Measurement]) -> None:
                writer.add(batch)
                bar.update(len(batch), errors=sum(m.error is not ErrorKind.NONE for m in batch))

            try:
                measured, pool_report = pool.measure(todo, batch_size, settings, on_result=on_result)
            finally:
                writer.flush()  # keep whatever was measured, even if the run fails
                bar.close()
            results.update(measured)
        seconds["measure"] = time.perf_counter() - t0 - writer.seconds
        seconds["append"] = writer.seconds
    finally:
        if own_pool and pool is not None:
            pool.shutdown()

    report = DriverReport(
        device=device, unique_stages=len(specs), cache_hits=len(hits), measured=len(todo),
        errors=sum(m.error is not ErrorKind.NONE for m in results.values()),
        num_workers=pool.num_workers if pool is not None else num_workers,
        per_worker=dict(pool_report.per_worker) if pool_report else {},
        retries=pool_report.retries if pool_report else 0,
        worker_deaths=pool_report.worker_deaths if pool_report else 0,
        restarts=pool_report.restarts if pool_report else 0,
        table_appends=writer.appends, seconds=seconds)
    return results, report


def _check_same_device(pool: ProfilerPool, device: DeviceInfo) -> None:
    """Refuse a pool whose workers would file results under different devices."""
    names = {wid: d.name for wid, d in pool.devices().items()}
    if any(n != device.name for n in names.values()):
        listing = ", ".join(f"{w}: {n}" for w, n in sorted(names.items()))
        raise DeviceMismatchError(f"profiling workers measure on different devices ({listing}); pin the pool "
                                  f"to one kind of node, e.g. with a custom resource")

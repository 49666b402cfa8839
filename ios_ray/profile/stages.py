"""The one profiling path: which stages to measure, on which pool, and where the results go.

Data flow::

    {key: StageSpec}
      --pool.device()--> DeviceInfo (name + software fingerprint); pool.dtype: the source's math mode
      --CostTable.search(keys, device, batch, dtype)--> hits (reused) and stale keys (rows from other
           software: kept, counted, measured again); cached WORKER_DIED rows are measured again too
      --with a table: claims (costs.claims) so that concurrent runs share the rest: repeatedly, keys no
           other live run holds are claimed a chunk at a time, measured, appended and released; keys
           other runs hold are read from the table once their rows land (or claimed once those runs'
           claims expire)
      --pool.measure(chunk, on_result)--> measurements, appended to the table in chunks as they land
      --> ({key: Measurement} for every key, ProfileReport)

In-process profiling is a pool of one (``LocalPool``, no Ray); ``distributed.driver`` passes a pool of
Ray actors. Both offer ``dtype``, ``num_workers``, ``device()``, ``devices()`` and
``measure(specs, batch_size, settings, on_result) -> (results, report)``.
"""
from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Protocol, Sequence, Tuple

from ..costs.measurement import CostSource, DeviceInfo, ErrorKind, MeasureSettings, Measurement
from ..costs.table import Conditions
from ..space.stage import StageSpec

log = logging.getLogger(__name__)

OnResult = Callable[[List[Measurement]], None]


class DeviceMismatchError(RuntimeError):
    """Workers of one pool measure on different devices or software; their rows cannot share one key."""


class PoolStats(Protocol):
    """What ``profile_stages`` reads from a pool's report (``PoolReport`` has more)."""
    per_worker: Dict[str, int]
    retries: int
    worker_deaths: int
    restarts: int


class StagePool(Protocol):
    """Workers that measure stage specs with one cost source (``LocalPool`` or a Ray pool)."""
    dtype: str
    num_workers: int

    def device(self) -> DeviceInfo: ...

    def devices(self) -> Dict[str, DeviceInfo]: ...

    def measure(self, specs: Mapping[str, StageSpec], batch_size: int, settings: MeasureSettings,
                on_result: Optional[OnResult] = None) -> Tuple[Dict[str, Measurement], PoolStats]: ...


@dataclass(frozen=True)
class LocalStats:
    """What one ``LocalPool.measure`` call did."""
    per_worker: Dict[str, int]
    retries: int = 0
    worker_deaths: int = 0
    restarts: int = 0


class LocalPool:
    """A pool of one: the cost source measured in this process, ``chunk`` specs at a time (so results
    reach the table and the progress bar as they come), with the Ray pool's interface.

    Args:
        source: the live cost source (a recipe's ``build()``).
        chunk: specs per ``source.measure`` call.
        worker: the name the report counts this process's measurements under.
    """

    num_workers = 1

    def __init__(self, source: CostSource, chunk: int = 64, worker: str = "local"):
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, got {chunk}")
        self._source = source
        self._chunk = chunk
        self._worker = worker

    @property
    def dtype(self) -> str:
        """The source's own math mode."""
        return str(self._source.dtype)

    def device(self) -> DeviceInfo:
        return self._source.device()

    def devices(self) -> Dict[str, DeviceInfo]:
        return {self._worker: self.device()}

    def measure(self, specs: Mapping[str, StageSpec], batch_size: int, settings: MeasureSettings,
                on_result: Optional[OnResult] = None) -> Tuple[Dict[str, Measurement], LocalStats]:
        """Measure every spec once, in order; ``on_result`` gets each chunk's measurements.

        Raises:
            ValueError: the cost source broke its protocol (wrong count or keys).
        """
        keys = list(specs)
        results: Dict[str, Measurement] = {}
        for i in range(0, len(keys), self._chunk):
            chunk = keys[i:i + self._chunk]
            got = self._source.measure([specs[k] for k in chunk], batch_size, settings)
            if [m.key for m in got] != chunk:
                raise ValueError(f"cost source {type(self._source).__name__} returned keys "
                                 f"{[m.key for m in got][:3]}... for specs {chunk[:3]}...: one measurement "
                                 f"per spec, in order, is its protocol")
            results.update((m.key, m) for m in got)
            if on_result is not None:
                on_result(got)
        return results, LocalStats({self._worker: len(keys)} if keys else {})

    def shutdown(self) -> None:
        """Nothing to stop (the same call as on a Ray pool)."""


@dataclass(frozen=True)
class ProfileOptions:
    """How one profiling run measures and records.

    Args:
        batch_size: the batch size stages are measured at (part of the table's key).
        settings: warm-up / number / repeat of each timing.
        progress: draw a progress bar on stderr.
        append_chunk, append_interval_s: append to the table every this many results or seconds.
        claim_chunk: stages per worker claimed (then measured, appended and released) at a time when a
            table is shared; concurrent runs split the work in units of this size times the pool's workers.
        claim_seconds: chunks grow (never below ``claim_chunk`` per worker) to about this much measuring.
        claim_ttl_s: how long this run's claims outlive it if it dies (renewed every third of it).
        claim_poll_s: how often a run waiting for stages other runs hold looks at the table.
    """
    batch_size: int = 1
    settings: MeasureSettings = MeasureSettings()
    progress: bool = False
    append_chunk: int = 256
    append_interval_s: float = 10.0
    claim_chunk: int = 64
    claim_seconds: float = 5.0
    claim_ttl_s: float = 60.0
    claim_poll_s: float = 1.0

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.append_chunk < 1 or self.append_interval_s < 0:
            raise ValueError(f"append_chunk must be >= 1 and append_interval_s >= 0, got {self.append_chunk}, "
                             f"{self.append_interval_s}")
        if self.claim_chunk < 1 or min(self.claim_seconds, self.claim_ttl_s, self.claim_poll_s) <= 0:
            raise ValueError(f"claim_chunk must be >= 1 and claim_seconds, claim_ttl_s, claim_poll_s > 0, got "
                             f"{self.claim_chunk}, {self.claim_seconds}, {self.claim_ttl_s}, {self.claim_poll_s}")


@dataclass(frozen=True)
class ProfileReport:
    """What ``profile_stages`` did and where its time went."""
    device: DeviceInfo
    dtype: str
    unique_stages: int
    cache_hits: int
    measured: int
    errors: int
    num_workers: int
    stale: int = 0                   # stages whose rows came only from other software: measured again
    remeasured_errors: int = 0       # cached WORKER_DIED rows measured again
    from_other_runs: int = 0         # stages a concurrent run measured while this one waited for them
    per_worker: Dict[str, int] = field(default_factory=dict)
    retries: int = 0
    worker_deaths: int = 0
    restarts: int = 0
    table_appends: int = 0
    seconds: Dict[str, float] = field(default_factory=dict)  # probe, lookup, start, measure, append

    def format(self) -> str:
        lines = [f"profiled on {self.device.name} ({self.device.kind}, {self.dtype}) with {self.num_workers} "
                 f"worker(s)",
                 f"  unique stages {self.unique_stages:,}  cache hits {self.cache_hits:,}  stale rows "
                 f"{self.stale:,}  {'estimated' if self.device.kind == 'analytic' else 'measured'} "
                 f"{self.measured:,}  from other runs {self.from_other_runs:,}  errors {self.errors}  "
                 f"retries {self.retries}  worker deaths {self.worker_deaths}"]
        if self.per_worker:
            lines.append("  per worker: " + ", ".join(f"{w}={n}" for w, n in sorted(self.per_worker.items())))
        lines.append("  seconds: " + "  ".join(f"{k} {v:.2f}" for k, v in self.seconds.items()))
        return "\n".join(lines)


class _TableWriter:
    """Buffers measurements and appends them to the table in chunks (so a crash loses little)."""

    def __init__(self, table, specs: Mapping[str, StageSpec], conditions: Conditions, options: ProfileOptions):
        self.table, self.specs, self.conditions = table, specs, conditions
        self.chunk, self.interval_s = options.append_chunk, options.append_interval_s
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
        self.table.append(batch, {m.key: self.specs[m.key] for m in batch}, self.conditions)
        self.appends += 1
        self.last = time.monotonic()
        self.seconds += time.perf_counter() - t0


class _Subset(Mapping[str, StageSpec]):
    """Some keys of a spec mapping, looked up on access (a space's specs are rebuilt on demand, and
    holding every spec of a large space at once would cost more than measuring it in chunks)."""

    def __init__(self, specs: Mapping[str, StageSpec], keys: Sequence[str]):
        self._specs, self._keys = specs, list(keys)
        self._members = frozenset(self._keys)

    def __getitem__(self, key: str) -> StageSpec:
        if key not in self._members:
            raise KeyError(key)
        return self._specs[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _reusable(found: Mapping[str, Measurement]) -> Dict[str, Measurement]:
    """Table rows to reuse: all but worker deaths (they say more about the worker than the stage)."""
    return {k: m for k, m in found.items() if m.error is not ErrorKind.WORKER_DIED}


def _cached(table, specs: Mapping[str, StageSpec], device: DeviceInfo, conditions: Conditions):
    """(reusable hits, stale count, re-measured error count) from the table."""
    if table is None or not specs:
        return {}, 0, 0
    found = table.search(list(specs), device, conditions.batch_size, conditions.dtype)
    hits = _reusable(found.found)
    died = len(found.found) - len(hits)
    if died:
        log.info("%d cached worker-death rows on %s are measured again", died, device.name)
    return hits, len(found.stale), died


def _check_same_device(pool: StagePool, device: DeviceInfo) -> None:
    """Refuse a pool whose workers would file results under another device or software."""
    seen = {wid: (d.name, d.software) for wid, d in pool.devices().items()}
    if any(v != (device.name, device.software) for v in seen.values()):
        listing = ", ".join(f"{w}: {n} [{sw}]" for w, (n, sw) in sorted(seen.items()))
        raise DeviceMismatchError(f"profiling workers measure on different devices or software ({listing}); pin "
                                  f"the pool to one kind of node, e.g. with a custom resource")


class _Tally:
    """The pool's counters summed over the chunks of one run."""

    def __init__(self):
        self.per_worker: Dict[str, int] = {}
        self.retries = self.worker_deaths = self.restarts = 0

    def add(self, stats: PoolStats) -> None:
        for w, n in stats.per_worker.items():
            self.per_worker[w] = self.per_worker.get(w, 0) + n
        self.retries += stats.retries
        self.worker_deaths += stats.worker_deaths
        self.restarts += stats.restarts

    def fields(self) -> dict:
        return {"per_worker": dict(self.per_worker), "retries": self.retries, "worker_deaths": self.worker_deaths,
                "restarts": self.restarts}


@dataclass
class _Run:
    """One profiling run's moving parts: what it measures with, where results go, what it counts."""
    specs: Mapping[str, StageSpec]
    pool: StagePool
    table: object
    conditions: Conditions
    options: ProfileOptions
    writer: _TableWriter
    bar: object
    tally: _Tally = field(default_factory=_Tally)
    measured: int = 0
    from_others: int = 0
    wait_s: float = 0.0

    def on_result(self, batch: List[Measurement]) -> None:
        self.writer.add(batch)
        if self.bar is not None:
            self.bar.update(len(batch), errors=sum(m.error is not ErrorKind.NONE for m in batch))

    def measure(self, keys: Sequence[str]) -> Dict[str, Measurement]:
        """Measure ``keys`` on the pool; their rows are appended before this returns."""
        try:
            got, stats = self.pool.measure(_Subset(self.specs, keys), self.options.batch_size, self.options.settings,
                                           on_result=self.on_result)
        finally:
            self.writer.flush()  # keep whatever was measured, even if the run fails
        self.tally.add(stats)
        self.measured += len(keys)
        return got

    def measure_shared(self, todo: Sequence[str]) -> Dict[str, Measurement]:
        """Measure ``todo`` sharing the work with concurrent runs through the table's claims.

        Each round reads the other runs' claims first and then the table, for the next chunk of unclaimed
        keys and for the keys others hold (a claim is released only after its rows are appended, so a key
        neither claimed nor in the table is truly missing), claims the chunk, measures and releases it;
        when others hold everything left, it waits for their rows (or their claims' expiry).
        """
        o = self.options
        smallest = chunk = o.claim_chunk * max(1, self.pool.num_workers)
        results: Dict[str, Measurement] = {}
        remaining = dict.fromkeys(todo)  # ordered; finished keys are deleted
        book = self.table.claims(self.conditions, ttl_s=o.claim_ttl_s)  # first write: fails on a read-only table
        try:
            while remaining:
                held = book.held()
                free = list(itertools.islice((k for k in remaining if k not in held), chunk))
                landed = self._landed(free + [k for k in held if k in remaining])
                for k in landed:
                    del remaining[k]
                results.update(landed)
                free = [k for k in free if k not in landed]
                if not free:
                    if remaining:
                        self._wait(len(remaining))
                    continue
                grant = book.claim(free)
                if grant.keys:
                    t0 = time.perf_counter()
                    results.update(self.measure(grant.keys))
                    book.release(grant)
                    for k in grant.keys:
                        del remaining[k]
                    # fast stages (estimates, a warm GPU) in bigger chunks: fewer claims and table files
                    rate = len(grant.keys) / max(time.perf_counter() - t0, 1e-6)
                    chunk = max(smallest, int(rate * o.claim_seconds))
        finally:
            book.close()
        return results

    def _landed(self, keys: List[str]) -> Dict[str, Measurement]:
        """Reusable rows of ``keys`` that other runs appended meanwhile."""
        if not keys:
            return {}
        c = self.conditions
        landed = _reusable(self.table.search(keys, c.device, c.batch_size, c.dtype).found)
        self.from_others += len(landed)
        if landed and self.bar is not None:
            self.bar.update(len(landed))
        return landed

    def _wait(self, missing: int) -> None:
        log.info("waiting for %d stages other runs are measuring", missing)
        t0 = time.perf_counter()
        time.sleep(self.options.claim_poll_s)
        self.wait_s += time.perf_counter() - t0


def profile_stages(specs: Mapping[str, StageSpec], pool: StagePool, table,
                   options: ProfileOptions = ProfileOptions()) -> Tuple[Dict[str, Measurement], ProfileReport]:
    """Measure every distinct stage once on ``pool``, reusing and extending the cost table.

    Args:
        specs: the stages, by key (``GraphSpace.specs``).
        pool: a ``LocalPool`` or a Ray pool (see the module docstring); not shut down here.
        table: a ``CostTable`` to read hits from and append new measurements to, or None. Concurrent runs
            into one table share the work through its claims.
        options: batch size, timing settings, progress bar, append chunking, claims.

    Returns:
        ``{key: Measurement}`` for every key (hits included) and a ``ProfileReport``.

    Raises:
        CostTableError: the table is not writable (raised before anything is measured).
        DeviceMismatchError: the pool's workers measure on different devices or software.
        Whatever the pool raises (e.g. ``WorkerStartError``); results measured so far are in the table.
    """
    seconds: Dict[str, float] = {}
    t0 = time.perf_counter()
    device = pool.device()
    conditions = Conditions(device, options.batch_size, pool.dtype, options.settings)
    seconds["probe"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    hits, stale, remeasured = _cached(table, specs, device, conditions)
    todo = [k for k in specs if k not in hits]
    seconds["lookup"] = time.perf_counter() - t0

    results: Dict[str, Measurement] = dict(hits)
    run = _Run(specs, pool, table, conditions, options, _TableWriter(table, specs, conditions, options), None)
    if todo:
        t0 = time.perf_counter()
        _check_same_device(pool, device)
        seconds["start"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        run.bar = _progress_bar(len(todo), len(hits), options.progress)
        try:
            results.update(run.measure(todo) if table is None else run.measure_shared(todo))
        finally:
            if run.bar is not None:
                run.bar.close()
        seconds["measure"] = time.perf_counter() - t0 - run.writer.seconds - run.wait_s
    seconds.setdefault("measure", 0.0)
    seconds["append"] = run.writer.seconds
    if run.wait_s:
        seconds["wait"] = run.wait_s

    report = ProfileReport(
        device=device, dtype=conditions.dtype, unique_stages=len(specs), cache_hits=len(hits),
        measured=run.measured, errors=sum(m.error is not ErrorKind.NONE for m in results.values()),
        num_workers=pool.num_workers, stale=stale, remeasured_errors=remeasured, from_other_runs=run.from_others,
        table_appends=run.writer.appends, seconds=seconds, **run.tally.fields())
    return results, report


def _progress_bar(total: int, hits: int, show: bool):
    if not show:
        return None
    from ..distributed.progress import ProgressBar
    return ProgressBar(total=total, cache_hits=hits, desc="profiling stages")


__all__ = ["DeviceMismatchError", "LocalPool", "LocalStats", "PoolStats", "ProfileOptions", "ProfileReport",
           "StagePool", "profile_stages"]

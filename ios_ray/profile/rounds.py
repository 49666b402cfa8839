"""Profiling in rounds: the one profiling path (``profile_stages``) batch after batch, on one pool and one
cost table, for the lazy DP (``dp.lazy``), which decides each batch from the costs known so far.

Data flow::

    ProfileRounds(specs, pool, table, options)
      .lookup()      every key searched in the table once, as profile_stages searches (rows of the same
                     device and software; cached worker deaths measured again) -> {key: cost} of the hits
      .measure(keys) profile_stages(those keys, the pool, no table) -> {key: cost}; the measurements are
                     appended to the table in chunks across rounds (few files however many rounds there are);
                     before the first, the table's claims are opened: the check that it is writable (the
                     rounds claim no stages: concurrent lazy runs may measure a stage twice, the table
                     keeps one row)
      .submit(keys)  one round's keys as the DP finds them: on a pool that streams (the Ray pool:
      .collect()     ``ProfilerPool.stream``) they go to idle actors at once, so the actors measure while
                     the DP solves the round's other parts; collect waits for them -> {key: cost}. On a
                     pool of one (in-process) submit only gathers them and collect measures them.
      .close()       the last chunk appended -> the ProfileReport of all rounds together

The pool is probed once (device and the check that all workers measure alike), not every round, and
its workers stay up between rounds, so each round's batch is spread over all of them.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import replace
from typing import Dict, List, Mapping, Optional, Sequence

from ..costs.measurement import DeviceInfo, ErrorKind, Measurement
from ..costs.table import Conditions
from ..space.stage import StageSpec
from .stages import (ProfileOptions, ProfileReport, StagePool, _cached, _check_same_device, _progress_bar, _Subset,
                     _TableWriter, profile_stages)

logger = logging.getLogger(__name__)


class _ProbedOnce:
    """A pool whose ``device()`` and ``devices()`` are asked once (every ``profile_stages`` call asks)."""

    def __init__(self, pool: StagePool):
        self._pool = pool
        self.dtype = pool.dtype
        self.num_workers = pool.num_workers
        self._device: Optional[DeviceInfo] = None
        self._devices: Optional[Dict[str, DeviceInfo]] = None

    def device(self) -> DeviceInfo:
        if self._device is None:
            self._device = self._pool.device()
        return self._device

    def devices(self) -> Dict[str, DeviceInfo]:
        if self._devices is None:
            self._devices = self._pool.devices()
        return self._devices

    def measure(self, specs, batch_size, settings, on_result=None):
        return self._pool.measure(specs, batch_size, settings, on_result=on_result)

    def stream(self, specs, batch_size, settings, on_result=None):
        """The pool's ``stream``; AttributeError on a pool that has none (``streams`` says)."""
        return self._pool.stream(specs, batch_size, settings, on_result=on_result)

    @property
    def streams(self) -> bool:
        return callable(getattr(self._pool, "stream", None))


class ProfileRounds:
    """``profile_stages`` in rounds over one pool and one cost table (see the module docstring).

    Args:
        specs: every stage that may be measured, by key (``GraphSpace.specs``).
        pool: a ``LocalPool`` or a Ray pool (not shut down here).
        table: a ``CostTable`` or None.
        options: batch size, timing settings, progress bar, append chunking.
    """

    def __init__(self, specs: Mapping[str, StageSpec], pool: StagePool, table, options: ProfileOptions):
        self._specs = specs
        self._pool = _ProbedOnce(pool)
        self._table = table
        self._options = replace(options, progress=False)   # one bar for all rounds, not one per round
        self._bar = None
        self._show = options.progress
        self._writer: Optional[_TableWriter] = None
        self._book = None     # this run's claims on the table: opened before the first measurement
        self._claim_conditions: Optional[Conditions] = None
        self.measurements: Dict[str, Measurement] = {}
        self._hits = self._stale = self._remeasured = self._measured = 0
        self._stats: Counter = Counter()
        self._per_worker: Counter = Counter()
        self._seconds: Counter = Counter()
        self._pending: List[str] = []    # submitted keys not sent yet (a pool that does not stream)
        self._stream = None              # the round's PoolStream (a pool that streams)
        self._checked = False            # the workers' devices compared (once, before the first stream)

    def _conditions(self) -> Conditions:
        t0 = time.perf_counter()
        device = self._pool.device()
        self._seconds["probe"] += time.perf_counter() - t0
        return Conditions(device, self._options.batch_size, self._pool.dtype, self._options.settings)

    def device(self) -> DeviceInfo:
        """The pool's device (probed once)."""
        return self._pool.device()

    def lookup(self) -> Dict[str, float]:
        """Costs of the stages the table already holds (every key searched once).

        Raises:
            Whatever the pool's device probe raises (e.g. ``WorkerStartError``).
        """
        conditions = self._conditions()
        self._writer = _TableWriter(self._table, self._specs, conditions, self._options)
        self._claim_conditions = conditions
        t0 = time.perf_counter()
        hits, self._stale, self._remeasured = _cached(self._table, self._specs, conditions.device, conditions)
        self._seconds["lookup"] += time.perf_counter() - t0
        self._hits = len(hits)
        self.measurements.update(hits)
        return {k: m.cost for k, m in hits.items()}

    def measure(self, keys: Sequence[str]) -> Dict[str, float]:
        """Measure ``keys`` (one round) through ``profile_stages`` on the pool; costs by key (inf: failed).

        Raises:
            CostTableError: the table is not writable (before the first round measures anything).
            Whatever the pool raises; what was measured in earlier rounds is in the table by then.
        """
        self._open(len(keys))
        got, report = profile_stages(_Subset(self._specs, keys), self._pool, None, self._options)
        self._count(report.measured, report)
        self._seconds.update({k: v for k, v in report.seconds.items() if k in ("start", "measure")})
        self._on_batch(list(got.values()))
        return {k: m.cost for k, m in got.items()}

    def submit(self, keys: Sequence[str]) -> None:
        """Start measuring ``keys``, part of the round ``collect`` ends (see the module docstring); a key
        is submitted once per round.

        Raises:
            As ``measure``.
        """
        if not keys:
            return
        if not self._pool.streams:
            self._pending.extend(keys)
            return
        self._open(len(keys))
        t0, appended = time.perf_counter(), self._writer.seconds
        if self._stream is None:
            if not self._checked:
                _check_same_device(self._pool, self._pool.device())
                self._checked = True
            self._stream = self._pool.stream(self._specs, self._options.batch_size, self._options.settings,
                                             on_result=self._on_batch)
        self._stream.add(list(keys))
        self._in_pool(t0, appended)

    def collect(self) -> Dict[str, float]:
        """Costs of the keys submitted since the last ``collect``, waiting for them. With a streaming pool,
        the report's ``measure`` seconds are the driver's time in the pool's calls (sending, waiting); the
        DP's time while the actors measured is not in them.

        Raises:
            As ``measure``.
        """
        if self._stream is None:
            keys, self._pending = self._pending, []
            return self.measure(keys) if keys else {}
        stream, self._stream = self._stream, None
        t0, appended = time.perf_counter(), self._writer.seconds
        try:
            got, report = stream.finish()
        finally:
            self._in_pool(t0, appended)
        self._count(len(got), report)
        return {k: got[k].cost for k in got}

    def _in_pool(self, t0: float, appended: float) -> None:
        """The time since ``t0`` counted as measuring, less the table appends made meanwhile (``on_result``
        appends inside the pool's calls; they are counted as ``append``): the report's shares add up."""
        self._seconds["measure"] += time.perf_counter() - t0 - (self._writer.seconds - appended)

    def _count(self, measured: int, report) -> None:
        """Counters of a ``ProfileReport`` or ``PoolReport`` (the same fields) added to the rounds'."""
        self._measured += measured
        self._per_worker.update(report.per_worker)
        self._stats.update(retries=report.retries, worker_deaths=report.worker_deaths, restarts=report.restarts)

    def _open(self, keys: int) -> None:
        """Before measuring ``keys`` more: the lookup, the table's claims (its first write: a read-only
        table fails here, before anything is measured), the progress bar."""
        if self._writer is None:
            self.lookup()
        if self._book is None and self._table is not None:
            self._book = self._table.claims(self._claim_conditions, ttl_s=self._options.claim_ttl_s)
        if self._bar is None:
            self._bar = _progress_bar(0, self._hits, self._show)
            if self._bar is not None:
                self._bar.desc = "lazy profiling"
        if self._bar is not None:
            self._bar.total += keys

    def _on_batch(self, batch: Sequence[Measurement]) -> None:
        """Measurements that came back: kept, appended to the table (chunked), counted on the bar."""
        batch = list(batch)
        self.measurements.update((m.key, m) for m in batch)
        self._writer.add(batch)
        if self._bar is not None:
            self._bar.update(len(batch), errors=sum(m.error is not ErrorKind.NONE for m in batch))

    def close(self) -> ProfileReport:
        """Append what is still buffered and report all rounds together."""
        if self._writer is None:
            self.lookup()
        if self._stream is not None:   # a round cut short (the DP raised): keep what its actors measured
            stream, self._stream = self._stream, None
            try:
                got, report = stream.finish()
                self._count(len(got), report)
            except Exception as exc:  # noqa: BLE001 -- the error that cut the round is the one to raise
                logger.warning("an unfinished lazy round's measurements were lost: %s: %s", type(exc).__name__, exc)
        try:
            self._writer.flush()
        finally:
            if self._book is not None:
                self._book.close()
                self._book = None
        if self._bar is not None:
            self._bar.close()
        seconds = dict(self._seconds)
        seconds.setdefault("measure", 0.0)
        seconds["append"] = self._writer.seconds
        return ProfileReport(
            device=self._pool.device(), dtype=self._pool.dtype, unique_stages=len(self._specs),
            cache_hits=self._hits, measured=self._measured,
            errors=sum(m.error is not ErrorKind.NONE for m in self.measurements.values()),
            num_workers=self._pool.num_workers, stale=self._stale, remeasured_errors=self._remeasured,
            per_worker=dict(self._per_worker), retries=self._stats["retries"],
            worker_deaths=self._stats["worker_deaths"], restarts=self._stats["restarts"],
            table_appends=self._writer.appends, seconds=seconds)


__all__ = ["ProfileRounds"]

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
      .close()       the last chunk appended -> the ProfileReport of all rounds together

The pool is probed once (device and the check that all workers measure alike), not every round, and
its workers stay up between rounds, so each round's batch is spread over all of them.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from typing import Dict, List, Mapping, Optional, Sequence

from ..costs.measurement import DeviceInfo, ErrorKind, Measurement
from ..costs.table import Conditions
from ..space.stage import StageSpec
from .stages import (ProfileOptions, ProfileReport, StagePool, _cached, _progress_bar, _Subset, _TableWriter,
                     profile_stages)


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
        if self._writer is None:
            self.lookup()
        if self._book is None and self._table is not None:
            # its first write: a read-only table fails here, before anything is measured
            self._book = self._table.claims(self._claim_conditions, ttl_s=self._options.claim_ttl_s)
        if self._bar is None:
            self._bar = _progress_bar(0, self._hits, self._show)
            if self._bar is not None:
                self._bar.desc = "lazy profiling"
        if self._bar is not None:
            self._bar.total += len(keys)
        got, report = profile_stages(_Subset(self._specs, keys), self._pool, None, self._options)
        batch: List[Measurement] = list(got.values())
        self.measurements.update(got)
        self._measured += report.measured
        self._per_worker.update(report.per_worker)
        self._stats.update(retries=report.retries, worker_deaths=report.worker_deaths, restarts=report.restarts)
        self._seconds.update({k: v for k, v in report.seconds.items() if k in ("start", "measure")})
        self._writer.add(batch)
        if self._bar is not None:
            self._bar.update(len(batch), errors=sum(m.error is not ErrorKind.NONE for m in batch))
        return {k: m.cost for k, m in got.items()}

    def close(self) -> ProfileReport:
        """Append what is still buffered and report all rounds together."""
        if self._writer is None:
            self.lookup()
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

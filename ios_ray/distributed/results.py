"""Measurements on the wire and in the driver as columns: one record per batch, not one object per stage.

Unpickling a ``Measurement`` costs the driver about 1 us and building one about as much again; at a few
thousand stages a second from dozens of workers that, not the work, fills the driver's thread. So a
worker sends each batch back as a ``BatchResult`` (latencies, spreads and repeat counts as packed
arrays, errors listed sparsely) in the order of the batch's keys, which the driver already holds.

Data flow::

    [Measurement] in the worker --BatchResult.of--> columns (pickled: a few bytes per stage)
        --> the driver: MeasuredBatch(keys, result), a Sequence[Measurement] built only when read
            (``on_result``: the cost table's rows, a progress bar's error count)
        --> PoolResults: {key: Measurement} over every batch, each Measurement built on access;
            ``latency_ms(key)`` reads the column without building one
"""
from __future__ import annotations

import functools
from array import array
from bisect import bisect_right
from dataclasses import dataclass
from typing import Dict, Iterator, List, Mapping, Sequence, Tuple

from ..costs.measurement import ErrorKind, Measurement


@dataclass(frozen=True, eq=False)
class BatchResult:
    """One batch's measurements, in the order of its keys (which travel the other way only).

    ``errors`` and ``estimated`` list only the positions they apply to: most batches have none.
    ``seconds`` is the worker's time spent in the cost source (the driver sizes later batches by it).
    """
    worker: str
    latency_ms: array                               # 'd'; NaN where the stage failed
    spread_ms: array                                # 'd'
    samples: array                                  # 'l'
    errors: Tuple[Tuple[int, str, str], ...] = ()   # (position, ErrorKind value, message)
    estimated: Tuple[int, ...] = ()                 # positions of analytic estimates
    seconds: float = 0.0

    @classmethod
    def of(cls, measurements: Sequence[Measurement], worker: str, seconds: float = 0.0) -> "BatchResult":
        """Columns of ``measurements`` (their own ``worker`` labels are replaced by ``worker``)."""
        return cls(worker, array("d", [m.latency_ms for m in measurements]),
                   array("d", [m.spread_ms for m in measurements]), array("l", [m.samples for m in measurements]),
                   tuple((i, m.error.value, m.message) for i, m in enumerate(measurements)
                         if m.error is not ErrorKind.NONE),
                   tuple(i for i, m in enumerate(measurements) if m.estimated), seconds)

    def __len__(self) -> int:
        return len(self.latency_ms)

    def measurements(self, keys: Sequence[str]) -> List[Measurement]:
        """The ``Measurement`` of every position, keyed by ``keys`` (the batch's keys, same order).

        Raises:
            ValueError: ``keys`` and the columns differ in length.
        """
        if len(keys) != len(self.latency_ms):
            raise ValueError(f"a batch of {len(self.latency_ms)} results cannot carry {len(keys)} keys")
        return [self.measurement(i, key) for i, key in enumerate(keys)]

    def measurement(self, i: int, key: str) -> Measurement:
        """The ``Measurement`` at position ``i``, keyed ``key``."""
        kind, message = self._errors.get(i, (ErrorKind.NONE, ""))
        return Measurement(key, self.latency_ms[i], self.spread_ms[i], self.samples[i], kind, message,
                           i in self._estimated, self.worker)

    @functools.cached_property
    def _errors(self) -> Dict[int, Tuple[ErrorKind, str]]:
        return {i: (ErrorKind(kind), message) for i, kind, message in self.errors}

    @functools.cached_property
    def _estimated(self) -> frozenset:
        return frozenset(self.estimated)

    def __getstate__(self):   # the lookups built in the driver do not travel
        return {k: v for k, v in self.__dict__.items() if k not in ("_errors", "_estimated")}

    def __setstate__(self, state):
        self.__dict__.update(state)


class MeasuredBatch(Sequence[Measurement]):
    """A batch's keys with its ``BatchResult``: the measurements ``on_result`` gets, built when first read.

    ``len`` and ``errors`` need no ``Measurement`` objects, so a consumer that only counts builds none.
    """

    def __init__(self, keys: Sequence[str], result: BatchResult):
        if len(keys) != len(result):
            raise ValueError(f"a batch of {len(result)} results cannot carry {len(keys)} keys")
        self.keys = keys
        self.result = result
        self._built: List[Measurement] = []

    @property
    def errors(self) -> int:
        """How many of the batch's stages failed."""
        return len(self.result.errors)

    def _all(self) -> List[Measurement]:
        if not self._built and self.keys:
            self._built = self.result.measurements(self.keys)
        return self._built

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index):
        return self._all()[index]

    def __iter__(self) -> Iterator[Measurement]:
        return iter(self._all())


class PoolResults(Mapping[str, Measurement]):
    """``{key: Measurement}`` over a run's batches, kept as columns; a later batch of a key (a retry) wins.

    Each ``Measurement`` is built when looked up; ``latency_ms`` and ``error_count`` read the columns.
    """

    def __init__(self):
        # key -> its position in the run: batch b holds positions starts[b] .. starts[b] + len - 1. Plain
        # ints, which the garbage collector does not track: no collections triggered per stage.
        self._where: Dict[str, int] = {}
        self._batches: List[MeasuredBatch] = []
        self._starts: List[int] = []
        self._positions = 0

    def add(self, batch: MeasuredBatch) -> None:
        """Record ``batch`` (its keys replace any earlier result of the same keys)."""
        n = len(batch.keys)
        self._where.update(zip(batch.keys, range(self._positions, self._positions + n)))
        self._batches.append(batch)
        self._starts.append(self._positions)
        self._positions += n

    def _locate(self, key: str) -> Tuple[BatchResult, int]:
        pos = self._where[key]
        b = bisect_right(self._starts, pos) - 1
        return self._batches[b].result, pos - self._starts[b]

    def __getitem__(self, key: str) -> Measurement:
        result, i = self._locate(key)
        return result.measurement(i, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def latency_ms(self, key: str) -> float:
        """The latency of ``key`` without building its ``Measurement`` (NaN when it failed)."""
        result, i = self._locate(key)
        return result.latency_ms[i]

    def _held(self, b: int) -> int:
        """How many keys of batch ``b`` still hold their result here (no later batch replaced them)."""
        keys, start = self._batches[b].keys, self._starts[b]
        if self._positions == len(self._where):   # no key came twice: every position holds
            return len(keys)
        return sum(self._where[k] == start + i for i, k in enumerate(keys))

    def per_worker(self) -> Dict[str, int]:
        """Results held here per worker id."""
        counts: Dict[str, int] = {}
        for b, batch in enumerate(self._batches):
            n = self._held(b)
            if n:
                counts[batch.result.worker] = counts.get(batch.result.worker, 0) + n
        return counts

    def error_count(self) -> int:
        """Results held here that carry an error."""
        return sum(self._where[batch.keys[i]] == self._starts[b] + i
                   for b, batch in enumerate(self._batches) for i, _, _ in batch.result.errors)

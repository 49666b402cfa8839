"""Measurement records and the cost-source protocol: the one interface between profiling and the DP.

Data flow: StageSpec (space.stage) -> CostSource.measure -> Measurement -> cost table -> DP cost lookup.
A measurement carries its error (kind and message); it becomes ``inf`` only at the DP boundary
(``Measurement.cost``).
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import List, Protocol, Sequence, runtime_checkable

from ..space.stage import StageSpec


class ErrorKind(enum.Enum):
    NONE = ""
    RUNTIME = "runtime"          # the stage raised while running (bad kernel, out of memory, ...)
    WORKER_DIED = "worker_died"  # the worker process died repeatedly on this stage
    UNSUPPORTED = "unsupported"  # the cost source cannot run this op


@dataclass(frozen=True)
class MeasureSettings:
    """How each stage is timed: ``warmup`` runs, then ``repeat`` timed repeats of ``number`` runs each.

    A repeat's latency is its elapsed time divided by ``number``; the median over repeats is the stage
    latency and the spread is (max - min) over repeats.
    """
    warmup: int = 2
    number: int = 6
    repeat: int = 6

    def __post_init__(self):
        if self.warmup < 0 or self.number < 1 or self.repeat < 1:
            raise ValueError(f"need warmup >= 0, number >= 1, repeat >= 1; got {self}")


@dataclass(frozen=True)
class DeviceInfo:
    """Where latencies come from, and the software that measured them: the cost table reuses a row only
    for the same ``name`` and the same ``software`` fingerprint."""
    name: str                      # e.g. "NVIDIA H200", "cpu:numpy/x86_64", "analytic:H200"
    kind: str                      # "gpu", "cpu" or "analytic"
    compute_capability: str = ""
    driver: str = ""               # e.g. the CUDA driver version "13.0"
    library: str = ""              # every library version that shapes a timing, e.g. "cudnn 9.19 / cupy 14.2"
    settings: str = ""             # source settings that shape a timing, e.g. "autotune on"

    @property
    def software(self) -> str:
        """The fingerprint of what measured: libraries, driver and settings (a cost-table key column)."""
        parts = [self.library, f"driver {self.driver}" if self.driver else "", self.settings]
        return " | ".join(p for p in parts if p)


@dataclass(frozen=True)
class Measurement:
    key: str
    latency_ms: float              # median over repeats; nan when error is set
    spread_ms: float = 0.0         # max - min over repeats
    samples: int = 0               # number of repeats
    error: ErrorKind = ErrorKind.NONE
    message: str = ""
    estimated: bool = False        # True for analytic estimates: never presented as a measurement
    worker: str = ""

    @property
    def cost(self) -> float:
        """The DP's view: an errored stage is infinitely slow."""
        if self.error is not ErrorKind.NONE or not math.isfinite(self.latency_ms):
            return math.inf
        return self.latency_ms


@runtime_checkable
class CostSource(Protocol):
    """Anything that turns stage specs into measurements (CPU profiler, analytic model, GPU profiler).

    ``dtype`` is the math mode it measures in (``"float32"``, ``"tf32"``): the cost table files its rows
    under it, so a source states it rather than anyone guessing.
    """

    dtype: str

    def device(self) -> DeviceInfo: ...

    def measure(self, specs: Sequence[StageSpec], batch_size: int, settings: MeasureSettings) -> List[Measurement]:
        """One measurement per spec, same order; a failing stage gives an error measurement, not a raise."""
        ...

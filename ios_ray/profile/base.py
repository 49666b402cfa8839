"""What the CPU and GPU stage profilers share: the per-spec loop that turns every failure into a measurement.

Data flow::

    StageSpec --build()--> (placeholders, groups)   (a spec that cannot be built: UNSUPPORTED)
      --time_stage (the subclass: numpy reference or CUDA-graph replay)--> per-repeat latencies (ms)
      --> Measurement(median over repeats, spread = max - min)   (a stage that raises: ``classify(exc)``)

Subclasses implement ``time_stage`` and may refine ``classify``; random inputs come from a bounded
per-shape ``InputCache`` so allocation stays out of the timings and memory stays flat.

A profiler may also offer ``measure_graph(graph, batch_size, settings) -> per-repeat ms`` (the CPU and
GPU ones do): the whole scheduled graph timed on the same device the same way, which ``optimize``'s
final check compares with the stage-sum predictions. It runs a ``timing_copy`` of the graph.
"""
from __future__ import annotations

import math
from typing import Any, Callable, List, Sequence, Tuple

import numpy as np

from ..costs.measurement import ErrorKind, MeasureSettings, Measurement
from ..graph.ir import Graph
from ..space.stage import StageSpec
from .inputs import InputCache, Shape

MAX_MESSAGE = 2000  # characters of an error message kept in a measurement (and the cost table)


class StageProfiler:
    """Base of the measuring cost sources (``CostSource``): subclasses time one built stage.

    Args:
        make_input: makes the random input array of one (N, C, H, W) shape.
        seed: seeds the random weights and inputs, so repeated profiles run the same numbers.
        max_cached_inputs: input arrays kept between stages (least recently used dropped beyond it).
        worker: the label put in every Measurement.
    """

    dtype = "float32"

    def __init__(self, make_input: Callable[[Shape], Any], seed: int, max_cached_inputs: int, worker: str):
        self._input = InputCache(make_input, max_cached_inputs)
        self.seed = int(seed)
        self.max_cached_inputs = int(max_cached_inputs)
        self.worker = worker

    def measure(self, specs: Sequence[StageSpec], batch_size: int, settings: MeasureSettings) -> List[Measurement]:
        """One Measurement per spec, in order; a stage that fails carries its error instead of raising.

        Raises:
            ValueError: ``batch_size`` < 1.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        return [self.measure_one(spec, batch_size, settings) for spec in specs]

    def measure_one(self, spec: StageSpec, batch_size: int, settings: MeasureSettings) -> Measurement:
        """Measure one stage; every failure is returned as an error Measurement, never raised."""
        key = spec.key
        try:
            built = spec.build()
        except Exception as exc:  # noqa: BLE001 -- a spec this runtime cannot even materialise
            return self._failed(key, ErrorKind.UNSUPPORTED, f"cannot build stage: {type(exc).__name__}: {exc}")
        try:
            samples = self.time_stage(built, batch_size, settings)
        except Exception as exc:  # noqa: BLE001 -- every failure must become a Measurement
            return self._failed(key, *self.classify(exc))
        return Measurement(key=key, latency_ms=float(np.median(samples)),
                           spread_ms=float(max(samples) - min(samples)), samples=len(samples), worker=self.worker)

    def time_stage(self, built: Tuple[list, list], batch_size: int, settings: MeasureSettings) -> List[float]:
        """Per-repeat latencies (ms) of a built stage (``StageSpec.build()``); may raise."""
        raise NotImplementedError

    def classify(self, exc: Exception) -> Tuple[ErrorKind, str]:
        """The error kind and message a failure while timing is recorded as."""
        return ErrorKind.RUNTIME, f"{type(exc).__name__}: {exc}"

    @property
    def cached_inputs(self) -> int:
        """Number of random input arrays currently cached."""
        return len(self._input)

    def _failed(self, key: str, kind: ErrorKind, message: str) -> Measurement:
        return Measurement(key=key, latency_ms=math.nan, error=kind, message=message[:MAX_MESSAGE],
                           worker=self.worker)


def timing_copy(graph: Graph, seed: int = 0) -> Graph:
    """A copy of ``graph`` and its schedule with random weights, for whole-graph timing.

    Timings do not depend on weight values (stages are profiled with random weights too), so a graph
    optimized without ``compute_weight`` can be timed, and the caller's graph and weights stay untouched.

    Raises:
        ValueError: the graph's schedule does not match it.
    """
    copy = Graph.from_config(graph.export_config())
    copy.init_weights(seed)
    return copy

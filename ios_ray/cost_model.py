"""The original's cost-model names (``ios.cost_model``), mapped onto ios_ray's cost sources.

Pass one as ``optimize(graph, cost_model=...)`` (or ``cost=``):

- ``IOSCostModel()``: stages measured by running them, as the original's did on its GPU runtime: our
  CUDA-graph profiler when a CUDA GPU works, else the CPU reference runtime (``optimize``'s default),
  given by its ``cost=`` name.
- ``RandomCostModel(seed)``: a random latency per stage, which the original used to debug and to draw
  random schedules. Its latencies are labelled estimated and never written to a cost table.
- ``CostModel``: the interface, ours being ``CostSource``.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from .costs.factory import gpu_available
from .costs.measurement import CostSource, DeviceInfo, MeasureSettings, Measurement
from .space.stage import StageSpec

CostModel = CostSource


def IOSCostModel() -> str:  # noqa: N802 -- the original's class name, called the same way
    """The measuring cost source, by its ``cost=`` name: ``"gpu"`` when CuPy sees a CUDA device, else
    ``"cpu"`` (the numpy reference runtime)."""
    return "gpu" if gpu_available() else "cpu"


class RandomCostModel:
    """A ``CostSource`` giving each stage a latency drawn uniformly from [0, 1) ms.

    Args:
        seed: for reproducible latencies (None: fresh entropy, as the original's ``np.random.rand``).
    """

    dtype = "float32"  # the math mode the cost table files rows under (none are written unless asked)

    def __init__(self, seed: Optional[int] = None):
        self._rng = np.random.default_rng(seed)

    def device(self) -> DeviceInfo:
        return DeviceInfo(name="random", kind="random", library="numpy.random")

    def measure(self, specs: Sequence[StageSpec], batch_size: int,
                settings: MeasureSettings = MeasureSettings()) -> List[Measurement]:
        """One random latency per spec, in order (``batch_size`` and ``settings`` are ignored)."""
        return [Measurement(spec.key, float(self._rng.random()), estimated=True, worker="random") for spec in specs]


__all__ = ["CostModel", "IOSCostModel", "RandomCostModel"]

"""CPU cost source: times candidate stages with the numpy reference kernels.

Data flow: StageSpec --build()--> placeholders + IR nodes per group --random weights (once per stage),
cached random inputs per external shape--> warmup runs, then ``repeat`` timed repeats of ``number``
runs (``time.perf_counter``) --> Measurement(median over repeats, spread = max - min).

The reference runtime has no concurrency: a stage's groups run one after another, so a CPU stage
latency is the sum of its groups' latencies. That makes this source right for testing the pipeline
end to end (and for CPU-only sanity runs), not for finding GPU parallelism.
"""
from __future__ import annotations

import os
import platform
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..costs.measurement import DeviceInfo, ErrorKind, MeasureSettings, Measurement
from ..graph.ir import Node, Placeholder
from ..runtime.reference import UnsupportedOpError, run_node
from ..space.stage import StageSpec
from .inputs import InputCache

InputShape = Tuple[int, int, int, int]


class CpuProfiler:
    """A ``CostSource`` measuring stages with the numpy reference runtime on this process's CPU.

    Args:
        seed: seeds the random weights and inputs, so repeated profiles run the same numbers.
        max_cached_inputs: how many random input arrays (one per distinct (N, C, H, W)) are kept between
            stages; the least recently used is dropped beyond it, so memory stays bounded however many
            stages are measured.
        worker: the label put in every Measurement (default ``host:pid``).
    """

    def __init__(self, seed: int = 0, max_cached_inputs: int = 32, worker: Optional[str] = None):
        self._input = InputCache(self._random_input, max_cached_inputs)
        self.seed = int(seed)
        self.max_cached_inputs = int(max_cached_inputs)
        self.worker = worker if worker is not None else f"{platform.node()}:{os.getpid()}"

    def device(self) -> DeviceInfo:
        cpu = platform.processor() or platform.machine() or "unknown"
        return DeviceInfo(name=f"cpu:{cpu}/numpy", kind="cpu", library=f"numpy {np.__version__}")

    @property
    def cached_inputs(self) -> int:
        """Number of random input arrays currently cached."""
        return len(self._input)

    def _random_input(self, shape: InputShape) -> np.ndarray:
        return np.random.default_rng((self.seed, *shape)).standard_normal(shape, dtype=np.float32)

    def measure(self, specs: Sequence[StageSpec], batch_size: int, settings: MeasureSettings) -> List[Measurement]:
        """One Measurement per spec, in order; a stage that fails carries its error instead of raising."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        return [self.measure_one(spec, batch_size, settings) for spec in specs]

    def measure_one(self, spec: StageSpec, batch_size: int, settings: MeasureSettings) -> Measurement:
        """Measure one stage; every failure is returned as an error Measurement, never raised."""
        key = spec.key
        try:
            built = spec.build()
        except Exception as exc:  # a spec this runtime cannot even materialise
            return self._failed(key, ErrorKind.UNSUPPORTED, f"cannot build stage: {type(exc).__name__}: {exc}")
        try:
            samples = time_built_stage(built, batch_size, settings, self._input, self.seed)
        except UnsupportedOpError as exc:
            return self._failed(key, ErrorKind.UNSUPPORTED, str(exc))
        except Exception as exc:  # noqa: BLE001 -- every failure must become a Measurement
            return self._failed(key, ErrorKind.RUNTIME, f"{type(exc).__name__}: {exc}")
        return Measurement(key=key, latency_ms=float(np.median(samples)),
                           spread_ms=float(max(samples) - min(samples)), samples=len(samples), worker=self.worker)

    def _failed(self, key: str, kind: ErrorKind, message: str) -> Measurement:
        return Measurement(key=key, latency_ms=float("nan"), error=kind, message=message, worker=self.worker)


def time_built_stage(built: Tuple[List[Placeholder], List[List[Node]]], batch_size: int, settings: MeasureSettings,
                     input_for: Callable[[InputShape], np.ndarray], seed: int = 0) -> List[float]:
    """Per-repeat latencies (ms) of a built stage (``StageSpec.build()``) with fresh random weights.

    Args:
        built: the placeholders of the external inputs and the nodes of each group.
        input_for: gives the input array for an external of shape ``(batch_size, C, H, W)``.
    Returns:
        ``settings.repeat`` latencies, each the elapsed time of ``settings.number`` runs divided by it.
    Raises:
        whatever the kernels raise (the caller decides how to report it).
    """
    exts, groups = built
    rng = np.random.default_rng(seed)
    for group in groups:
        for node in group:
            node.init_weights(rng)
    base: Dict[Node, np.ndarray] = {ext: input_for((batch_size, *ext.output_shape)) for ext in exts}

    def run_stage() -> None:
        env = dict(base)
        for group in groups:  # no concurrency on the CPU reference: groups run in turn
            for node in group:
                env[node] = run_node(node, env)

    for _ in range(settings.warmup):
        run_stage()
    samples = []
    for _ in range(settings.repeat):
        t0 = time.perf_counter()
        for _ in range(settings.number):
            run_stage()
        samples.append((time.perf_counter() - t0) * 1e3 / settings.number)
    return samples

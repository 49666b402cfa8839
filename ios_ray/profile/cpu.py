"""CPU cost source: times candidate stages with the numpy reference kernels.

Data flow: StageSpec --build()--> placeholders + IR nodes per group --random weights (once per stage),
cached random inputs per external shape--> warmup runs, then ``repeat`` timed repeats of ``number``
runs (``time.perf_counter``) --> Measurement(median over repeats, spread = max - min).

The reference runtime has no concurrency: a stage's groups run one after another, so a CPU stage
latency is the sum of its groups' latencies. That makes this source right for testing the pipeline
end to end (and for CPU-only sanity runs), not for finding GPU parallelism.
"""
from __future__ import annotations

import functools
import os
import platform
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ..costs.measurement import DeviceInfo, ErrorKind, MeasureSettings
from ..graph.ir import Node, Placeholder
from ..runtime.reference import UnsupportedOpError, run_node
from .base import StageProfiler

InputShape = Tuple[int, int, int, int]


class CpuProfiler(StageProfiler):
    """A ``CostSource`` measuring stages with the numpy reference runtime on this process's CPU.

    Args:
        seed: seeds the random weights and inputs, so repeated profiles run the same numbers.
        max_cached_inputs: how many random input arrays (one per distinct (N, C, H, W)) are kept between
            stages; the least recently used is dropped beyond it, so memory stays bounded however many
            stages are measured.
        worker: the label put in every Measurement (default ``host:pid``).
    """

    dtype = "float32"

    def __init__(self, seed: int = 0, max_cached_inputs: int = 32, worker: Optional[str] = None):
        super().__init__(self._random_input, seed, max_cached_inputs,
                         worker if worker is not None else f"{platform.node()}:{os.getpid()}")

    def device(self) -> DeviceInfo:
        cpu = platform.processor() or platform.machine() or "unknown"
        return DeviceInfo(name=f"cpu:{cpu}/numpy", kind="cpu", library=cpu_library())

    def _random_input(self, shape: InputShape) -> np.ndarray:
        return np.random.default_rng((self.seed, *shape)).standard_normal(shape, dtype=np.float32)

    def time_stage(self, built, batch_size: int, settings: MeasureSettings) -> List[float]:
        return time_built_stage(built, batch_size, settings, self._input, self.seed)

    def classify(self, exc: Exception) -> Tuple[ErrorKind, str]:
        if isinstance(exc, UnsupportedOpError):
            return ErrorKind.UNSUPPORTED, str(exc)
        return super().classify(exc)


@functools.lru_cache(maxsize=1)
def cpu_library() -> str:
    """The software a CPU timing depends on: numpy and its BLAS, Python, and ios_ray's own kernels."""
    from .. import __version__
    blas = ""
    try:
        dep = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f" ({dep['name']} {dep.get('version', '?')})"
    except Exception:  # noqa: BLE001 -- older numpy or no build information: the version alone
        pass
    return (f"numpy {np.__version__}{blas} / {platform.python_implementation().lower()} "
            f"{platform.python_version()} / ios_ray {__version__}")


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

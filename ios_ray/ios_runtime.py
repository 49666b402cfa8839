"""IOS-compatible runtime entry points: ``graph_inference``, ``graph_latency`` and ``stage_latency``.

Data flow: Graph (+ schedule, or the sequential one computed on the fly) -> ``_executor_for`` picks an
executor for the device -> ``run`` (inference) or ``latency`` (timing). The graph is never modified:
a graph without a schedule runs its sequential schedule without it being assigned.

``_executor_for`` is the one place where the executor is chosen. ``Device.CPU`` gives the numpy reference
executor; ``Device.GPU`` gives the CuPy/cuDNN ``GpuExecutor``, imported lazily so that importing this module
never needs CUDA; ``Device.AUTO`` (the default) is the GPU when CuPy, a CUDA device and cuDNN work, else the
CPU. Both executors offer ``run(x) -> np.ndarray``, ``latency(warmup, number, repeat, x=None,
profile_stage=False) -> (per-repeat ms, per-stage ms repeat-major)`` and ``close()``.
"""
from __future__ import annotations

import enum
import platform
from typing import List, Optional, Protocol, Sequence, Tuple, Union

import numpy as np

from .costs.measurement import MeasureSettings
from .graph.ir import Graph, Node
from .profile.cpu import time_built_stage
from .runtime.reference import ReferenceExecutor, stages_or_sequential
from .space.stage import stage_spec


class Device(enum.Enum):
    """Where a graph runs. AUTO is the GPU when its executor is available, else the CPU reference."""
    AUTO = "auto"
    CPU = "cpu"
    GPU = "gpu"


class Executor(Protocol):
    """What graph_inference/graph_latency need from an executor."""

    def run(self, x) -> np.ndarray: ...

    def latency(self, warmup: int = 2, number: int = 6, repeat: int = 6, x: Optional[np.ndarray] = None,
                profile_stage: bool = False) -> Tuple[List[float], List[float]]: ...

    def close(self) -> None: ...


def _resolve(device: Union[Device, str]) -> Device:
    """The concrete device for a request: AUTO is the GPU when CuPy, CUDA and cuDNN work, else the CPU."""
    try:
        device = device if isinstance(device, Device) else Device(str(device).lower())
    except ValueError:
        raise ValueError(f"device must be one of {[d.value for d in Device]}, got {device!r}") from None
    if device is Device.AUTO:
        from .runtime.gpu import available  # never imports CuPy unless it is there
        return Device.GPU if available() else Device.CPU
    return device


def _executor_for(graph: Graph, batch_size: int, device: Union[Device, str]) -> Executor:
    """The executor for ``graph`` on ``device``; the graph's own schedule, else its sequential one.

    Raises:
        ValueError: the schedule does not match the graph, weights are missing, a bad device name,
            or the GPU executor cannot be imported.
        GpuUnavailableError: the GPU was asked for and CuPy, a CUDA device or cuDNN is missing.
    """
    device = _resolve(device)
    stages = stages_or_sequential(graph)
    if device is Device.GPU:
        try:
            from .runtime.gpu.executor import GpuExecutor
        except ImportError as exc:
            raise ValueError(f"the GPU executor cannot be imported ({exc}); use device='cpu'") from exc
        from .profile.gpu import engine_book
        from .runtime.gpu.context import GpuContext
        context = GpuContext(0)   # raises GpuUnavailableError, with its reason, without CuPy or a device
        # the engines the profiler recorded for each conv (the default cost table's engine book)
        context.conv_plans.book = engine_book()
        return GpuExecutor(graph, batch_size, context=context, stages=stages)
    return ReferenceExecutor(graph, batch_size, stages=stages)


def device_name(graph: Optional[Graph] = None, batch_size: int = 1, device: Union[Device, str] = Device.AUTO) -> str:
    """Where ``graph_inference``/``graph_latency`` with this ``device`` run, for printing.

    ``graph`` and ``batch_size`` are accepted for symmetry with the other calls; the choice does not
    depend on them today.
    """
    if _resolve(device) is Device.GPU:
        return "gpu: CuPy/cuDNN executor"
    cpu = platform.processor() or platform.machine() or "unknown"
    return f"cpu:{cpu}/numpy reference"


def graph_inference(graph: Graph, batch_size: int, input, device: Union[Device, str] = Device.AUTO) -> np.ndarray:
    """Run ``graph`` on ``input`` of shape ``(batch_size, C, H, W)``; returns the output as float32 numpy.

    Raises:
        ValueError: wrong input shape, missing weights (call graph.init_weights()), or a bad schedule.
    """
    executor = _executor_for(graph, batch_size, device)
    try:
        return executor.run(input)
    finally:
        executor.close()


def graph_latency(graph: Graph, batch_size: int = 1, warmup: int = 2, number: int = 6, repeat: int = 6,
                  profile_stage: bool = False, device: Union[Device, str] = Device.AUTO):
    """Latency of ``graph`` under its schedule (sequential if it has none), on random input.

    Each repeat times ``number`` runs after ``warmup`` untimed runs.

    Returns:
        The list of ``repeat`` latencies in ms; with ``profile_stage``, a pair (that list, a flat list of
        per-stage latencies in ms, repeat-major: ``np.reshape(stage_latency, (repeat, -1))``), as IOS.
    """
    executor = _executor_for(graph, batch_size, device)
    try:
        seq, stages = executor.latency(warmup, number, repeat, profile_stage=profile_stage)
    finally:
        executor.close()
    return (seq, stages) if profile_stage else seq


def stage_latency(stage: Sequence[Sequence[Node]], batch_size: int = 1, warmup: int = 2, number: int = 6,
                  repeat: int = 6, profile_stage: bool = False):
    """Latency of one stage (groups of nodes, as the original's ``stage_latency``) on random inputs.

    The stage runs on fresh nodes with random weights (its nodes' own weights are neither needed nor
    touched), on the CPU reference, groups one after another.

    Returns:
        ``repeat`` latencies in ms; with ``profile_stage`` the pair (that list, the same list), as the
        stage is its own only stage.
    """
    settings = MeasureSettings(warmup=warmup, number=number, repeat=repeat)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if isinstance(stage, Node) or not stage or any(
            isinstance(g, Node) or not g or any(not isinstance(n, Node) for n in g) for g in stage):
        raise ValueError(f"stage must be a non-empty list of non-empty groups of nodes, e.g. [[conv_a], [conv_b]]; "
                         f"got {stage!r}")
    rng = np.random.default_rng(0)
    samples = time_built_stage(stage_spec(stage).build(), batch_size, settings,
                               lambda shape: rng.standard_normal(shape, dtype=np.float32))
    return (samples, list(samples)) if profile_stage else samples

"""IOS-compatible runtime entry points: ``graph_inference``, ``graph_latency``, ``stage_latency``, and
``graph_trace`` (a Chrome/Perfetto trace of one inference).

Data flow: Graph (+ schedule, or the sequential one computed on the fly) -> ``_executor_for`` picks an
executor for the device -> ``run`` (inference) or ``latency`` (timing). The graph is never modified:
a graph without a schedule runs its sequential schedule without it being assigned.

``_executor_for`` is the one place where the executor is chosen. ``Device.CPU`` gives the numpy reference
executor; ``Device.GPU`` gives the CuPy/cuDNN ``GpuExecutor``, imported lazily so that importing this module
never needs CUDA; ``Device.AUTO`` (the default) is the device the graph was measured on when it carries an
optimization report, else the GPU when CuPy, a CUDA device and cuDNN work, else the CPU; the GPU executor
runs in the math mode the graph was optimized in (TF32 for ``gpu-tf32`` costs). Both executors offer ``run(x) -> np.ndarray``, ``latency(warmup, number, repeat, x=None,
profile_stage=False) -> (per-repeat ms, per-stage ms repeat-major)`` and ``close()``.

CPU threads: the reference executor always runs under one explicit BLAS/OpenMP thread count
(``threads``), by default the one the graph's stages were measured with
(``graph.optimization_report.cpu_threads``), else ``DEFAULT_CPU_THREADS`` (1, as the CPU cost source
measures): a schedule runs the way it was measured.
"""
from __future__ import annotations

import contextlib
import enum
import platform
from typing import Iterator, List, Optional, Protocol, Sequence, Tuple, Union

import numpy as np

from .costs.factory import DEFAULT_CPU_THREADS, check_threads
from .costs.measurement import MeasureSettings
from .graph.ir import Graph, Node
from .profile.cpu import cpu_threads, time_built_stage
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


def _resolve(device: Union[Device, str], graph: Optional[Graph] = None) -> Device:
    """The concrete device for a request: AUTO is the device ``graph``'s stages were measured on (its
    optimization report's ``device_kind``: a schedule runs where it was measured), else the GPU when CuPy,
    CUDA and cuDNN work, else the CPU."""
    try:
        device = device if isinstance(device, Device) else Device(str(device).lower())
    except ValueError:
        raise ValueError(f"device must be one of {[d.value for d in Device]}, got {device!r}") from None
    if device is Device.AUTO and _report(graph, "device_kind", "") == "cpu":
        return Device.CPU
    if device is Device.AUTO:
        from .runtime.gpu import available  # never imports CuPy unless it is there
        return Device.GPU if available() else Device.CPU
    return device


def _report(graph: Optional[Graph], field: str, default):
    """A field of ``graph``'s optimization report, or ``default`` (no graph, no report, an older report)."""
    return getattr(getattr(graph, "optimization_report", None), field, default)


def measured_tf32(graph: Optional[Graph]) -> bool:
    """Whether ``graph`` was optimized on TF32 GPU costs: the GPU runtime then runs it in TF32 too."""
    return _report(graph, "dtype", "float32") == "tf32"


def _executor_for(graph: Graph, batch_size: int, device: Union[Device, str]) -> Executor:
    """The executor for ``graph`` on ``device``; the graph's own schedule, else its sequential one.

    Raises:
        ValueError: the schedule does not match the graph, weights are missing, a bad device name,
            or the GPU executor cannot be imported.
        GpuUnavailableError: the GPU was asked for and CuPy, a CUDA device or cuDNN is missing.
    """
    device = _resolve(device, graph)
    stages = stages_or_sequential(graph)
    if device is Device.GPU:
        try:
            from .runtime.gpu.executor import GpuExecutor
        except ImportError as exc:
            raise ValueError(f"the GPU executor cannot be imported ({exc}); use device='cpu'") from exc
        from .costs.engines import engine_location
        from .profile.gpu import engine_book
        from .runtime.gpu.context import GpuContext
        tf32 = measured_tf32(graph)
        # raises GpuUnavailableError, with its reason, without CuPy or a device; the measured math mode
        context = GpuContext(0, tf32=tf32)
        # the engines the profiler recorded for each conv, in that math mode: the engine book beside the
        # cost table the graph was optimized with (its report's), else the default table's
        table = _report(graph, "table", "") or None
        context.conv_plans.book = engine_book(0, tf32, location=engine_location(table) if table else None)
        return GpuExecutor(graph, batch_size, context=context, stages=stages)
    return ReferenceExecutor(graph, batch_size, stages=stages)


def reference_threads(graph: Optional[Graph] = None, threads: Optional[int] = None) -> int:
    """The BLAS/OpenMP threads the reference runtime runs ``graph`` with: ``threads`` when given, else the
    count its stages were measured with (``graph.optimization_report.cpu_threads``), else
    ``DEFAULT_CPU_THREADS``.

    Raises:
        ValueError: ``threads`` is not a whole number of at least 1.
    """
    if threads is not None:
        return check_threads(threads)
    measured = getattr(getattr(graph, "optimization_report", None), "cpu_threads", None)
    return check_threads(measured) if measured is not None else DEFAULT_CPU_THREADS


@contextlib.contextmanager
def _running(graph: Graph, batch_size: int, device: Union[Device, str], threads: Optional[int]) -> Iterator[Executor]:
    """The executor for ``graph`` (closed on exit); on the CPU, under its thread setting throughout."""
    device = _resolve(device, graph)
    limit = cpu_threads(reference_threads(graph, threads)) if device is Device.CPU else contextlib.nullcontext()
    with limit:
        executor = _executor_for(graph, batch_size, device)
        try:
            yield executor
        finally:
            executor.close()


def device_name(graph: Optional[Graph] = None, batch_size: int = 1, device: Union[Device, str] = Device.AUTO,
                threads: Optional[int] = None) -> str:
    """Where ``graph_inference``/``graph_latency`` with this ``device`` run, for printing (on the CPU, with
    the thread count ``reference_threads(graph, threads)`` they use).

    ``batch_size`` is accepted for symmetry with the other calls; the choice does not depend on it today.
    """
    if _resolve(device, graph) is Device.GPU:
        return f"gpu: CuPy/cuDNN executor, {'tf32' if measured_tf32(graph) else 'fp32'}"
    cpu = platform.processor() or platform.machine() or "unknown"
    n = reference_threads(graph, threads)
    return f"cpu:{cpu}/numpy reference, {n} BLAS thread{'s' if n > 1 else ''}"


def graph_inference(graph: Graph, batch_size: int, input, device: Union[Device, str] = Device.AUTO,
                    threads: Optional[int] = None) -> np.ndarray:
    """Run ``graph`` on ``input`` of shape ``(batch_size, C, H, W)``; returns the output as float32 numpy.

    ``threads``: BLAS threads on the CPU (default: ``reference_threads(graph)``, the count it was measured with).

    Raises:
        ValueError: wrong input shape, missing weights (call graph.init_weights()), or a bad schedule.
    """
    with _running(graph, batch_size, device, threads) as executor:
        return executor.run(input)


def graph_latency(graph: Graph, batch_size: int = 1, warmup: int = 2, number: int = 6, repeat: int = 6,
                  profile_stage: bool = False, device: Union[Device, str] = Device.AUTO,
                  threads: Optional[int] = None):
    """Latency of ``graph`` under its schedule (sequential if it has none), on random input.

    Each repeat times ``number`` runs after ``warmup`` untimed runs. On the CPU the reference executor
    runs with ``threads`` BLAS threads (default: ``reference_threads(graph)``, the count it was measured with).

    Returns:
        The list of ``repeat`` latencies in ms; with ``profile_stage``, a pair (that list, a flat list of
        per-stage latencies in ms, repeat-major: ``np.reshape(stage_latency, (repeat, -1))``), as IOS.
    """
    with _running(graph, batch_size, device, threads) as executor:
        seq, stages = executor.latency(warmup, number, repeat, profile_stage=profile_stage)
    return (seq, stages) if profile_stage else seq


def graph_trace(graph: Graph, batch_size: int = 1, path=None, device: Union[Device, str] = Device.AUTO,
                threads: Optional[int] = None, x=None) -> dict:
    """A Chrome/Perfetto trace of one inference of ``graph`` (``runtime/trace.py`` describes it): each stage
    and group on its stream, measured ms beside the predicted ones when the graph carries an optimization
    report.

    On the GPU, event-record nodes around each group inside the captured CUDA graph time one replay (in
    the math mode the graph was optimized in); on the CPU, the reference kernels time every node, under
    the thread setting of ``graph_latency``, groups of a stage one after another (said in ``otherData``).

    Args:
        graph: a graph with weights; its schedule, else its sequential one.
        batch_size: the batch the inference runs at.
        path: where to write the JSON (None: not written).
        device: ``auto``, ``cpu`` or ``gpu``.
        threads: CPU BLAS threads (default: ``reference_threads(graph)``).
        x: the input (default: seeded random).
    Returns:
        The trace document (``{"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {...}}``).
    Raises:
        ValueError: a bad input, missing weights, a schedule that does not match; OSError: ``path`` cannot
            be written. On the GPU also ``GpuUnavailableError``/``GpuRuntimeError``.
    """
    from .runtime.trace import CPU_NOTE, chrome_trace, cpu_group_spans, write_trace
    resolved = _resolve(device, graph)
    report = getattr(graph, "optimization_report", None)
    meta = {"batch_size": int(batch_size)}
    if resolved is Device.GPU:
        from .runtime.gpu.trace import gpu_group_spans
        tf32 = measured_tf32(graph)
        spans = gpu_group_spans(graph, batch_size, x, tf32=tf32)
        meta["math"] = "tf32" if tf32 else "float32"
        trace = chrome_trace(graph, spans, device_name(graph, batch_size, resolved),
                             "CUDA graph replay; groups of a stage run concurrently on their streams", meta)
    else:
        n = reference_threads(graph, threads)
        with cpu_threads(n):
            spans = cpu_group_spans(graph, batch_size, x)
        meta["threads"] = n
        trace = chrome_trace(graph, spans, device_name(graph, batch_size, resolved, n), CPU_NOTE, meta)
    if report is not None:
        trace["otherData"]["cost_source"] = f"{report.device} ({report.dtype})"
    if path is not None:
        write_trace(trace, path)
    return trace


def stage_latency(stage: Sequence[Sequence[Node]], batch_size: int = 1, warmup: int = 2, number: int = 6,
                  repeat: int = 6, profile_stage: bool = False, threads: Optional[int] = None):
    """Latency of one stage (groups of nodes, as the original's ``stage_latency``) on random inputs.

    The stage runs on fresh nodes with random weights (its nodes' own weights are neither needed nor
    touched), on the CPU reference, groups one after another, with ``threads`` BLAS threads (default
    ``DEFAULT_CPU_THREADS``, as the CPU cost source).

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
    with cpu_threads(reference_threads(None, threads)):
        samples = time_built_stage(stage_spec(stage).build(), batch_size, settings,
                                   lambda shape: rng.standard_normal(shape, dtype=np.float32))
    return (samples, list(samples)) if profile_stage else samples

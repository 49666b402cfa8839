"""GPU runtime: CuPy + cuDNN (frontend) executor with multi-stream stages replayed as one CUDA graph.

Layout (data flows down)::

    plan.py      where each node's output lives; zero-cost concat placements   (pure, no CUDA)
    kernels.py   our .cu kernels (cuda_kernels/): pooling, element-wise, bias+act
    conv.py      cuDNN conv + bias + activation graphs, cached per shape, strict fp32 unless tf32
    context.py   per-device streams, one cuDNN handle per stream, plan cache, kernels
    program.py   lowering of stages to launch steps, fork/join over streams, CUDA-graph capture
    executor.py  GpuExecutor(graph, batch_size, tf32=False): run() and latency()

Importing this package never imports CuPy or cuDNN; they are imported when an executor or context is
built. ``available()`` says whether that will work.
"""
from __future__ import annotations

from .errors import GpuRuntimeError, GpuUnavailableError


def unavailable_reason(device_id: int = 0) -> str:
    """Why the GPU runtime cannot run here ('' when it can); never raises."""
    try:
        import cupy
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no CuPy, no driver, ...
        return f"CuPy with a CUDA device is needed: {type(exc).__name__}: {exc}"
    if count <= device_id:
        return f"CUDA device {device_id} does not exist ({count} visible)"
    try:
        import cudnn  # noqa: F401
    except Exception as exc:
        return f"the cuDNN frontend ('import cudnn', pip nvidia-cudnn-frontend) is not usable: {exc}"
    return ""


def available(device_id: int = 0) -> bool:
    """True when CuPy, CUDA device ``device_id`` and the cuDNN frontend are all usable; never raises."""
    return unavailable_reason(device_id) == ""


def __getattr__(name):
    # lazy, so that `import ios_ray.runtime.gpu` stays free of CuPy
    if name == "GpuExecutor":
        from .executor import GpuExecutor
        return GpuExecutor
    if name == "GpuContext":
        from .context import GpuContext
        return GpuContext
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["GpuExecutor", "GpuContext", "GpuRuntimeError", "GpuUnavailableError", "available",
           "unavailable_reason"]

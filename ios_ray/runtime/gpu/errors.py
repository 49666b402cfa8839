"""Named errors of the GPU runtime."""
from __future__ import annotations


class GpuRuntimeError(RuntimeError):
    """A GPU operation could not be prepared or run (bad layout, unsupported conv, CUDA failure)."""


class GpuUnavailableError(GpuRuntimeError):
    """CuPy, a CUDA device or the cuDNN frontend (``import cudnn``) is missing."""

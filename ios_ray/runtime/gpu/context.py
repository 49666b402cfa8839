"""Per-device GPU state shared by executors and the profiler: streams, cuDNN handles, plans, kernels.

A ``GpuContext`` owns a pool of non-blocking CUDA streams (stream 0 is the one graphs are captured and
replayed on; CuPy refuses to capture the legacy default stream), one cuDNN handle per stream (the
frontend wants one handle per stream), the cache of built cuDNN conv graphs and our compiled kernels.
It is process-local: Ray actors build their own.
"""
from __future__ import annotations

from typing import List

from .conv import ConvPlans, handle_for_stream, import_cudnn
from .errors import GpuUnavailableError
from .kernels import Kernels
from .lock import NO_LOCK


def import_cupy():
    """CuPy with at least one CUDA device; GpuUnavailableError otherwise."""
    try:
        import cupy
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        raise GpuUnavailableError(f"CuPy with a CUDA device is needed: {type(exc).__name__}: {exc}") from exc
    if count < 1:
        raise GpuUnavailableError("CuPy sees no CUDA device")
    return cupy


class GpuContext:
    """Streams, handles, conv plans and kernels of one device in one math mode.

    Args:
        device_id: the CUDA device (within the visible devices).
        tf32: allow TF32 tensor-core convolutions (False: strict fp32).
        autotune: time cuDNN's candidate plans per conv signature and keep the fastest (default: the
            heuristic's plan, which is deterministic).
        engines: an engine book (``ConvPlans``' ``book``) the conv plans are read from and recorded in.
        lock: held around device work whose timing must be alone (``lock.DeviceLock``: a profiler's,
            shared by every process profiling this GPU); default ``NO_LOCK`` (the inference runtime).
    Raises:
        GpuUnavailableError: no CuPy, no device, or no cuDNN frontend.
    """

    def __init__(self, device_id: int = 0, tf32: bool = False, autotune: bool = False, engines=None, lock=None):
        cupy = import_cupy()
        import_cudnn()
        self.device_id = int(device_id)
        self.tf32 = bool(tf32)
        self.device = cupy.cuda.Device(self.device_id)
        self.lock = lock if lock is not None else NO_LOCK
        with self.device:
            self.kernels = Kernels(self.device_id)
            self.streams: List = []
            self.handles: List = []
            self.ensure_streams(1)
            # a handle of its own: building and autotuning rebind its stream
            self.conv_plans = ConvPlans(handle_for_stream(0), tf32=self.tf32, autotune=autotune, book=engines,
                                        lock=self.lock)

    def ensure_streams(self, count: int) -> None:
        """Make sure at least ``count`` streams (and their handles) exist."""
        import cupy
        with self.device:
            while len(self.streams) < count:
                s = cupy.cuda.Stream(non_blocking=True)
                self.streams.append(s)
                self.handles.append(handle_for_stream(s.ptr))

    @property
    def main_stream(self):
        return self.streams[0]

    def synchronize(self) -> None:
        for s in self.streams:
            s.synchronize()

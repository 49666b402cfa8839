"""Stage profilers (cost sources): the CPU reference here; the CUDA graph-replay profiler alongside."""
from .cpu import CpuProfiler

__all__ = ["CpuProfiler"]

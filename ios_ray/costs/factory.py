"""Picklable cost-source configuration: what a Ray actor receives to build its own cost source.

A cost source holds process-local state (CUDA context, cuDNN handles, cached buffers), so actors are
sent a ``CostConfig`` and build the source in their own process with ``make_cost_source``.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from .measurement import CostSource


class CostKind(enum.Enum):
    CPU = "cpu"            # measured on the numpy reference runtime
    ANALYTIC = "analytic"  # roofline estimate of a named GPU (labelled as an estimate)
    GPU = "gpu"            # measured on a CUDA GPU: CuPy + cuDNN, CUDA-graph replay


@dataclass(frozen=True)
class CostConfig:
    kind: CostKind = CostKind.CPU
    gpu_model: str = "H200"   # for ANALYTIC
    tf32: bool = False        # for GPU: TF32 tensor-core math in convolutions
    device_id: int = 0        # for GPU, within the process's visible devices

    @staticmethod
    def parse(text: str) -> "CostConfig":
        """``cpu``, ``gpu``, ``gpu-tf32``, ``analytic`` or ``analytic:V100``."""
        text = text.strip().lower()
        if text == "cpu":
            return CostConfig(CostKind.CPU)
        if text in ("gpu", "cuda"):
            return CostConfig(CostKind.GPU)
        if text in ("gpu-tf32", "cuda-tf32"):
            return CostConfig(CostKind.GPU, tf32=True)
        if text == "analytic" or text.startswith("analytic:"):
            _, _, model = text.partition(":")
            return CostConfig(CostKind.ANALYTIC, gpu_model=(model or "H200").upper())
        raise ValueError(f"unknown cost source {text!r}; use cpu, gpu, gpu-tf32, analytic or analytic:<GPU>")

    @property
    def dtype(self) -> str:
        """The math mode recorded in the cost table."""
        return "tf32" if (self.kind is CostKind.GPU and self.tf32) else "float32"


def make_cost_source(cfg: CostConfig) -> CostSource:
    """Build the cost source in this process (imports CuPy only for GPU)."""
    if cfg.kind is CostKind.CPU:
        from ..profile.cpu import CpuProfiler
        return CpuProfiler()
    if cfg.kind is CostKind.ANALYTIC:
        from .analytic import AnalyticCostModel
        return AnalyticCostModel(cfg.gpu_model)
    from ..profile.gpu import GpuProfiler
    return GpuProfiler(device_id=cfg.device_id, tf32=cfg.tf32)


def gpu_available() -> bool:
    """True when CuPy imports and sees a CUDA device; never raises."""
    try:
        import cupy  # noqa: F401
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False

"""Analytic stage costs: a deterministic roofline of a named GPU with a simple concurrency model.

Data flow: StageSpec --build()--> IR nodes per group --kernels, roofline--> kernel times --stage model-->
Measurement(estimated=True) on DeviceInfo(kind="analytic", name="analytic:<GPU>").

These are estimates, never measurements: every result says so (``estimated=True``), and the device name
keeps them apart from measured rows in the cost table. They let the DP and the distributed pipeline run
without a GPU, and give a plausible ordering of schedules; the absolute numbers are only indicative.

The kernels an op runs come from its declaration (``Node.kernels``, ``graph/ops.py``): one per op, except a
SepConv, which runs [pre-activation relu,] a depthwise conv and a pointwise conv, as the runtimes do.
Depthwise kernels (a SepConv's first conv, a Conv with one group per input channel) reuse nothing across
channels and reach only ``depthwise_eff`` of the dense FLOP rate. The model, for batch size ``b`` and one
kernel ``i`` (flops, bytes and output elements from the op's ``KernelCost``):

* work_i  = output elements x b: what the op's threads cover;
* util_i  = min(1, work_i / (SMs x tile_elems)): the fraction of the GPU one kernel fills -- one output
  tile per SM fills the GPU, a small op cannot (this is why inter-operator parallelism pays). Until it
  fills the GPU an op's compute time does not grow with its output (one wave of tiles), only with the
  work per output element;
* bytes_i = (activation bytes) x b + parameter bytes (weights are read once per batch);
* t_i     = launch + max(flops_i x b / (peak x compute_eff x util_i), bytes_i / (bandwidth x bw_eff)).

A group runs its ops' kernels one after another: t_g = sum of their t_i. A stage runs its groups concurrently on
separate streams, bounded both by its longest group and by the GPU's capacity, which each kernel occupies
for (t_i - launch) at a fraction util_i of the SMs::

    latency = max( max_g t_g,  sum_i (t_i - launch) x util_i + launch ) + stage_overhead

``stage_overhead`` is the per-stage synchronisation (events joining the streams). So two small ops run
together in about the time of one, while two GPU-filling ops take about the sum of their times.

Calibration (sequential schedule, batch 1, FP32; every op its own stage):

============== ============= ================== ============= ===========================
network        V100 model    V100, IOS paper    H200 model    H200 measured (facts.md)
============== ============= ================== ============= ===========================
sample (IOS)   0.46 ms       0.486 ms (README)  0.44 ms       0.552 ms (CUDA graph)
Inception-v3   4.27 ms       6.51 ms            3.76 ms       4.00 ms (torchvision, graph)
RandWire       7.09 ms       8.49 ms            4.30 ms       -
NASNet-A large 21.0 ms       22.95 ms           12.0 ms       -
SqueezeNet     0.89 ms       0.86 ms            0.63 ms       -
============== ============= ================== ============= ===========================

The sample network with the IOS schedule (conv1||conv2, conv4||conv3, concat): V100 model 0.35 ms vs
0.333 ms in the IOS README; H200 model 0.22 ms vs 0.299 ms measured.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from ..graph.ir import Node
from ..space.stage import StageSpec
from .measurement import DeviceInfo, ErrorKind, MeasureSettings, Measurement

MODEL_VERSION = 3  # 3: a depthwise Conv is priced at the depthwise rate, as a SepConv's depthwise step


@dataclass(frozen=True)
class GpuSpec:
    """Datasheet figures of a GPU plus the fractions of them that real kernels reach."""
    name: str
    peak_tflops_fp32: float        # dense FP32 (CUDA cores)
    peak_tflops_tf32: float        # dense TF32 tensor cores; 0 when the GPU has none
    bandwidth_gbs: float           # HBM bandwidth, GB/s
    sms: int                       # streaming multiprocessors
    compute_capability: str
    compute_eff: float = 0.6       # fraction of peak a large conv reaches
    bw_eff: float = 0.8            # fraction of bandwidth a large copy reaches
    tile_elems: int = 4096         # output elements one SM works on at a time (e.g. a 64x64 tile)
    depthwise_eff: float = 0.05    # a depthwise conv's FLOP rate relative to a dense conv's
    launch_us: float = 4.0         # per-kernel launch/ramp cost on the GPU
    stage_us: float = 5.0          # per-stage synchronisation cost


GPUS: Dict[str, GpuSpec] = {
    # V100 SXM2 (the IOS paper's GPU): 15.7 TFLOP/s FP32, 900 GB/s HBM2, 80 SMs.
    # tile_elems 2048 reproduces the IOS README's V100 stage times of its sample network (conv 375->375
    # 3x3 on 15x15: 0.11 ms alone; with a 375->750 conv in parallel: 0.16 ms).
    # depthwise_eff 0.02 brings the sequential RandWire and NASNet estimates near the paper's (cuDNN 7's
    # FP32 depthwise convs were slow): see the table in the module docstring.
    "V100": GpuSpec("V100", 15.7, 0.0, 900.0, 80, "7.0", compute_eff=0.7, tile_elems=2048, depthwise_eff=0.02,
                    launch_us=5.0, stage_us=5.0),
    # A100 SXM4 80GB: 19.5 TFLOP/s FP32, 156 TFLOP/s TF32, 2039 GB/s, 108 SMs.
    "A100": GpuSpec("A100", 19.5, 156.0, 2039.0, 108, "8.0", compute_eff=0.7, launch_us=4.0, stage_us=5.0),
    # H100 SXM: 67 TFLOP/s FP32, 495 TFLOP/s TF32, 3.35 TB/s, 132 SMs.
    "H100": GpuSpec("H100", 67.0, 495.0, 3350.0, 132, "9.0", compute_eff=0.55, launch_us=3.0, stage_us=5.0),
    # H200 SXM: H100's chip with 4.8 TB/s HBM3e. CuPy SGEMM 4096^3 reached 34.6 TFLOP/s there (0.52 of
    # peak; shared/facts.md), hence compute_eff 0.55. With tile_elems 4096 the IOS sample network comes out
    # at 0.44 ms sequential / 0.22 ms with two streams (measured there, strict FP32: 0.55 / 0.30 ms).
    "H200": GpuSpec("H200", 67.0, 495.0, 4800.0, 132, "9.0", compute_eff=0.55, launch_us=3.0, stage_us=5.0),
}

DTYPE_BYTES = {"float32": 4, "tf32": 4}


def gpu_spec(name: str) -> GpuSpec:
    """The ``GpuSpec`` called ``name`` (case-insensitive); ValueError listing the known names otherwise."""
    spec = GPUS.get(str(name).strip().upper())
    if spec is None:
        raise ValueError(f"unknown GPU {name!r} for the analytic cost model; known GPUs: {', '.join(sorted(GPUS))}")
    return spec


@dataclass(frozen=True)
class KernelEstimate:
    """One kernel's modelled time (ms, launch included) and the fraction of the GPU it fills."""
    time_ms: float
    util: float


class AnalyticCostModel:
    """Roofline cost source for a named GPU (implements ``CostSource``); results are labelled estimates.

    Args:
        gpu: a name in ``GPUS`` ("V100", "A100", "H100", "H200"), case-insensitive.
        dtype: "float32" (CUDA-core FP32) or "tf32" (tensor cores; not on V100).
    Raises:
        ValueError: unknown GPU or dtype, or TF32 on a GPU without it.
    """

    def __init__(self, gpu: str = "H200", dtype: str = "float32"):
        self.gpu = gpu_spec(gpu)
        if dtype not in DTYPE_BYTES:
            raise ValueError(f"analytic cost model dtype must be one of {sorted(DTYPE_BYTES)}, got {dtype!r}")
        peak = self.gpu.peak_tflops_tf32 if dtype == "tf32" else self.gpu.peak_tflops_fp32
        if peak <= 0:
            raise ValueError(f"{self.gpu.name} has no {dtype} tensor-core math")
        self.dtype = dtype
        self._dtype_bytes = DTYPE_BYTES[dtype]
        self._flops_per_ms = peak * 1e12 * self.gpu.compute_eff / 1e3
        self._bytes_per_ms = self.gpu.bandwidth_gbs * 1e9 * self.gpu.bw_eff / 1e3
        self._launch_ms = self.gpu.launch_us / 1e3
        self._stage_ms = self.gpu.stage_us / 1e3
        self._saturating_work = self.gpu.sms * self.gpu.tile_elems
        # (spec key, batch size) -> latency in ms; the model is deterministic, so results never go stale.
        self._cache: Dict[Tuple[str, int], float] = {}

    def __repr__(self) -> str:
        return f"AnalyticCostModel({self.gpu.name!r}, dtype={self.dtype!r})"

    def device(self) -> DeviceInfo:
        return DeviceInfo(name=f"analytic:{self.gpu.name}", kind="analytic",
                          compute_capability=self.gpu.compute_capability,
                          library=f"ios_ray roofline v{MODEL_VERSION}")

    # ----- the model -----------------------------------------------------------------------------
    def kernel_estimates(self, node: Node, batch_size: int) -> List[KernelEstimate]:
        """The roofline time of each kernel of one IR node (shape set) at ``batch_size``."""
        out = []
        for k in node.kernels(self._dtype_bytes):
            util = min(1.0, k.out_elems * batch_size / self._saturating_work)
            rate = self._flops_per_ms * util * (self.gpu.depthwise_eff if k.depthwise else 1.0)
            compute_ms = k.flops * batch_size / rate
            memory_ms = (k.act_bytes * batch_size + k.param_bytes) / self._bytes_per_ms
            out.append(KernelEstimate(self._launch_ms + max(compute_ms, memory_ms), util))
        return out

    def stage_latency(self, groups: Sequence[Sequence[Node]], batch_size: int) -> float:
        """Modelled latency (ms) of running ``groups`` concurrently, each group's ops in order."""
        longest = 0.0
        occupancy = 0.0
        for group in groups:
            kernels = [k for n in group for k in self.kernel_estimates(n, batch_size)]
            longest = max(longest, sum(k.time_ms for k in kernels))
            occupancy += sum((k.time_ms - self._launch_ms) * k.util for k in kernels)
        return max(longest, occupancy + self._launch_ms) + self._stage_ms

    def estimate(self, spec: StageSpec, batch_size: int) -> float:
        """Modelled latency (ms) of ``spec`` at ``batch_size``; cached by (key, batch size)."""
        cache_key = (spec.key, int(batch_size))
        latency = self._cache.get(cache_key)
        if latency is None:
            _, groups = spec.build()
            latency = self.stage_latency(groups, int(batch_size))
            self._cache[cache_key] = latency
        return latency

    # ----- CostSource ------------------------------------------------------------------------------
    def measure(self, specs: Sequence[StageSpec], batch_size: int,
                settings: MeasureSettings = MeasureSettings()) -> List[Measurement]:
        """One estimate per spec, in order; ``settings`` is ignored (nothing is timed)."""
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        worker = f"analytic:{self.gpu.name}"
        out = []
        for spec in specs:
            try:
                latency = self.estimate(spec, batch_size)
            except (ValueError, KeyError, TypeError) as e:
                out.append(Measurement(spec.key, math.nan, error=ErrorKind.UNSUPPORTED,
                                       message=f"analytic model cannot build this stage: {e}",
                                       estimated=True, worker=worker))
                continue
            out.append(Measurement(spec.key, latency, 0.0, 0, estimated=True, worker=worker))
        return out

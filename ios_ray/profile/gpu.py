"""GPU cost source: times candidate stages as captured CUDA graphs (cuDNN + our kernels, one stream per group).

Data flow::

    StageSpec --build()--> placeholders + IR nodes per group
      --Program (runtime/gpu)--> inputs from a per-shape cache (allocated once, random, reused),
                                 random weights on the device, the stage's groups on separate streams
      --capture as one CUDA graph (run eagerly first only when it has a new cuDNN plan)-->
      --under the GPU's lock (``runtime.gpu.lock``: other profiling processes on this GPU wait)-->
                                 timed warm (``L2_WARM``: single replays back to back, each between two
                                 events, until their median is stable; ``TIMING_REPEATS``: the original's
                                 repeats of ``number`` replays) or cold (``L2_COLD``: before each replay the
                                 L2 is flushed and the stage's inputs read, as inside a graph too big for
                                 the L2), or as the graph being optimized needs (``L2_AUTO``, ``for_graph``)
      --> Measurement(median over samples, spread = max - min); the stage's graph, buffers and weights
          are freed before the next stage, so profiling thousands of stages does not grow memory.

Every failure (an op cuDNN cannot run, out of memory, a CUDA error) becomes an error Measurement.
CuPy and cuDNN are imported when the profiler is built, never when this module is imported.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import platform
import zlib
from typing import List, Optional, Tuple

import numpy as np

from ..costs.measurement import DeviceInfo, MeasureSettings
from ..graph.ir import Graph
from .base import StageProfiler, timing_copy

InputShape = Tuple[int, int, int, int]

# How a stage's replays are timed. Warm replays of one small stage keep its weights in L2 from its own
# replays; inside the whole graph the rest of the graph's traffic evicts them before the next inference
# reaches the stage again. On one H200 (``benchmarks/cost_protocols.py``, README "Faithful costs"), warm
# stage sums missed strict-fp32 Inception-v3's whole Sequential graph by -20 % and the DP's schedule by -21 %,
# cold ones by -2 % and -3 %; RandWire's and NASNet's Sequential and Greedy sums came within 2 % cold in both
# math modes. SqueezeNet's working set (54 MiB) is below the L2 (60 MiB): a flush of its own working set
# predicted its sums within 4 %, a full one 3-10 % low. So ``L2_AUTO`` (``GpuRecipe``'s default) times every
# graph cold, flushing as much as one inference of the graph touches (``l2_protocol``).
L2_COLD = "cold"
L2_WARM = "warm"
L2_AUTO = "auto"
L2_SETTINGS = {L2_COLD: "L2 flushed and inputs read before each timed replay, launch less one graph node "
                        "taken off",
               L2_WARM: "warm back-to-back replays"}
FLUSH_STEP = 8 << 20   # a working-set flush is rounded up to this, so graphs of about one size share rows


def l2_protocol(working_set: Optional[int], l2_bytes: int) -> Tuple[str, Optional[int]]:
    """How to time the stages of a graph that touches ``working_set`` bytes an inference on an L2 of
    ``l2_bytes``: ``(L2_COLD, flush bytes)``, flushing the working set (rounded up to ``FLUSH_STEP``) or,
    from twice the L2 up, everything (None: ``ColdL2``'s default); ``(L2_WARM, None)`` when the working set
    is unknown (a profiler used without ``for_graph``)."""
    if working_set is None:
        return L2_WARM, None
    if working_set >= 2 * l2_bytes:
        return L2_COLD, None
    return L2_COLD, -(-int(working_set) // FLUSH_STEP) * FLUSH_STEP


# What a warm sample is. Single replays (the default) stop after 8 replays of a steady stage; repeats of
# ``number`` replays (the original IOS's protocol) after at least 20 at its defaults. On 3,000 NASNet
# stages the two agree in sum within 1.4-3.2 %, not stage by stage (a repeat's mean is multi-modal on
# multi-stream stages), and predict Inception-v3's whole graph alike (README, "Fast profiling"). Cold
# timing always takes single replays (each is flushed and timed on its own).
TIMING_REPLAYS = "replays"
TIMING_REPEATS = "repeats"
TIMING_SETTINGS = {TIMING_REPLAYS: "single replays until their median is stable",
                   TIMING_REPEATS: "repeats until the median is stable"}


class WeightCache:
    """Random device weights by shape, kept between stages (a WeightSource: ``cache(node, pname, shape)``).

    Drawing fresh weights cost ~70 us a tensor (0.93 ms of a NASNet stage's 7.9 ms): a stage's timing
    does not depend on the weights' values, only on their shapes, so each shape is drawn once. Uniform in
    +-1/sqrt(fan_in), never zeros. Least recently used shapes are dropped beyond ``max_bytes``.
    """

    def __init__(self, seed: int, max_bytes: int = 1 << 30, lock=None):
        from ..runtime.gpu.lock import NO_LOCK
        self.lock = lock if lock is not None else NO_LOCK   # drawing runs on the device
        self.seed = int(seed)
        self.max_bytes = int(max_bytes)
        self._arrays: "collections.OrderedDict[tuple, object]" = collections.OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._arrays)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __call__(self, node, pname: str, shape: tuple):
        import cupy
        shape = tuple(int(d) for d in shape)
        hit = self._arrays.get(shape)
        if hit is not None:
            self._arrays.move_to_end(shape)
            return hit
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 16
        bound = np.float32(1.0 / np.sqrt(max(1, fan_in)))
        rng = cupy.random.default_rng(zlib.crc32(repr((self.seed, shape)).encode()))
        with self.lock:
            arr = rng.random(shape, dtype=cupy.float32) * (2 * bound) - bound
            cupy.cuda.get_current_stream().synchronize()
        self._arrays[shape] = arr
        self._bytes += arr.nbytes
        while self._bytes > self.max_bytes and len(self._arrays) > 1:
            _, old = self._arrays.popitem(last=False)
            self._bytes -= old.nbytes
        return arr


class GpuProfiler(StageProfiler):
    """A ``CostSource`` measuring stages on one CUDA GPU by CUDA-graph replay.

    Args:
        device_id: the CUDA device (within the visible devices).
        tf32: allow TF32 tensor-core convolutions (default strict fp32).
        autotune: time cuDNN's candidate plans per new conv signature (default: the heuristic's plan).
        engines: the engine book's location (default: the default cost table's); the engines chosen
            for each conv are read from it and recorded in it, so the runtime runs the same ones.
        seed: seeds the random inputs and weights.
        worker: the label put in every Measurement (default ``host:pid:gpu<id>``).
    Raises:
        GpuUnavailableError: no CuPy, CUDA device or cuDNN frontend.
    """

    MAX_CACHED_INPUTS = 64   # input buffers (one per (N, C, H, W)) kept between stages

    def __init__(self, device_id: int = 0, tf32: bool = False, autotune: bool = False,
                 engines: Optional[str] = None, seed: int = 0, worker: Optional[str] = None):
        from ..runtime.gpu.context import GpuContext
        from ..runtime.gpu.lock import device_lock
        super().__init__(self._random_input, seed, self.MAX_CACHED_INPUTS,
                         worker if worker is not None else f"{platform.node()}:{os.getpid()}:gpu{device_id}")
        self.autotune = bool(autotune)
        self.lock = device_lock(device_id)   # every profiler of this GPU on this host shares it
        self.ctx = GpuContext(device_id, tf32=tf32, autotune=autotune,
                              engines=engine_book(device_id, tf32, autotune, engines), lock=self.lock)
        self._info: Optional[DeviceInfo] = None
        self._weights = WeightCache(seed, lock=self.lock)
        self.eager_runs = 0   # stages run eagerly before their capture (a new cuDNN plan in them)
        self.l2 = L2_WARM   # how stages are timed (L2_WARM, L2_COLD or L2_AUTO); the one used is in the fingerprint
        self.flush_bytes: Optional[int] = None   # cold: bytes overwritten before each replay (None: 2 x L2)
        self.working_set: Optional[int] = None   # L2_AUTO: the graph's bytes an inference (``for_graph``)
        self.timing = TIMING_REPLAYS   # a warm sample (TIMING_REPLAYS or TIMING_REPEATS); likewise
        self._cold = None
        self._l2_bytes: Optional[int] = None

    def measure(self, specs, batch_size: int, settings: MeasureSettings) -> List[Measurement]:
        """As ``StageProfiler.measure``; the engines chosen meanwhile go to the engine book."""
        try:
            return super().measure(specs, batch_size, settings)
        finally:
            self.ctx.conv_plans.book.flush()

    def device(self) -> DeviceInfo:
        if self._info is None:
            self._info = gpu_device_info(self.ctx.device_id, self.ctx.tf32, self.autotune)
        from ..runtime.gpu.lock import NO_LOCK
        protocol, flush = self._protocol()
        timing = TIMING_SETTINGS[self.timing if protocol == L2_WARM else TIMING_REPLAYS]
        unlocked = " / GPU lock off" if self.lock is NO_LOCK else ""
        l2 = L2_SETTINGS[protocol]
        if protocol == L2_COLD and flush is not None:
            l2 += f" ({flush >> 20} MiB flushed)"
        return dataclasses.replace(self._info, settings=f"{self._info.settings} / {timing} / {l2}{unlocked}")

    def protocol(self) -> str:
        """The timing protocol in use: ``l2``, or for ``L2_AUTO`` ``l2_protocol`` of the graph's working set."""
        return self._protocol()[0]

    def _protocol(self) -> Tuple[str, Optional[int]]:
        """(protocol, bytes flushed before a cold replay; None: twice the L2)."""
        if self.l2 not in (L2_WARM, L2_COLD, L2_AUTO):
            raise ValueError(f"l2 must be {L2_WARM!r}, {L2_COLD!r} or {L2_AUTO!r}, got {self.l2!r}")
        if self.l2 == L2_AUTO:
            return l2_protocol(self.working_set, self.l2_bytes())
        return self.l2, self.flush_bytes

    def for_graph(self, graph: Graph, batch_size: int) -> "GpuProfiler":
        """This profiler, set to time stages the way ``graph`` at ``batch_size`` runs them (its working set
        picks the protocol under ``L2_AUTO``); ``optimize`` calls it before profiling."""
        self.working_set = graph.working_set_bytes(batch_size)
        return self

    @property
    def dtype(self) -> str:
        """The math mode the cost table records: ``tf32`` when TF32 convolutions are allowed."""
        return "tf32" if self.ctx.tf32 else "float32"

    def _random_input(self, shape: InputShape):
        import cupy
        seed = zlib.crc32(repr((self.seed, shape)).encode())
        with self.ctx.device, self.lock:
            arr = cupy.random.default_rng(seed).standard_normal(shape, dtype=cupy.float32)
            cupy.cuda.get_current_stream().synchronize()
            return arr

    def time_stage(self, built, batch_size: int, settings: MeasureSettings) -> List[float]:
        """Per-repeat latencies (ms) of one captured stage; the stage's buffers are freed before returning."""
        from ..runtime.gpu.program import Feed, Program, time_graph_until_stable, time_replays_until_stable
        exts, groups = built
        program = None
        try:
            arrays = {e.name: self._input((batch_size, *e.output_shape)) for e in exts}
            builds = self.ctx.conv_plans.builds
            program = Program(self.ctx, [groups], exts, batch_size,
                              Feed(self._weights, arrays, place_external=True))
            graph = None
            if self.eager_runs and self.ctx.conv_plans.builds == builds:
                graph = self._capture_without_eager(program)
            with self.lock:   # the device work: alone on this GPU (other profiling processes wait)
                if graph is None:
                    program.run_eager()
                    self.eager_runs += 1
                    graph = program.capture(upload=False)
                if self.protocol() == L2_COLD:
                    touch = [program.output(e) for e in exts]
                    return self._cold_timer().time_until_stable(graph, touch, settings.warmup, settings.number,
                                                                settings.repeat)
                timer = time_replays_until_stable if self.timing == TIMING_REPLAYS else time_graph_until_stable
                return timer(graph, self.ctx.main_stream, settings.warmup, settings.number, settings.repeat)
        except Exception:
            self._recover()  # the base class records the failure as a RUNTIME measurement
            raise
        finally:
            if program is not None:
                program.close()

    def _capture_without_eager(self, program):
        """The stage captured without an eager run first (host work only, outside the lock), or None when
        that capture fails (the caller then runs it eagerly and captures again).

        An eager run loads what a first launch needs (a new cuDNN plan's kernels); a stage whose conv
        plans were all built and run before needs none, and its untimed warm-up replays warm it as well.
        The eager run was ~0.6 ms of a NASNet stage (the issue's breakdown), held on the device."""
        try:
            return program.capture(upload=False)
        except Exception:  # noqa: BLE001 -- e.g. a first use the capture refused: run it eagerly
            self._recover()
            return None

    def _cold_timer(self):
        """The cold-L2 timer of this device (built once: its scratch buffer and its overhead calibration)."""
        from ..runtime.gpu.program import ColdL2
        flush = self._protocol()[1]
        if self._cold is None or self._cold.flush_bytes != ColdL2.flush_size(self.l2_bytes(), flush):
            with self.ctx.device:
                with self.lock:   # it calibrates its overhead by timing
                    self._cold = ColdL2(self.ctx.main_stream, self.l2_bytes(), flush)
        return self._cold

    def l2_bytes(self) -> int:
        """The device's L2 cache size in bytes."""
        if self._l2_bytes is None:
            import cupy
            self._l2_bytes = int(cupy.cuda.runtime.getDeviceProperties(self.ctx.device_id)["l2CacheSize"])
        return self._l2_bytes

    def measure_graph(self, graph: Graph, batch_size: int, settings: MeasureSettings) -> List[float]:
        """Per-repeat latencies (ms) of the whole scheduled ``graph`` captured as one CUDA graph on this
        profiler's context (its streams, conv plans and math mode), with random weights; the executor's
        buffers are freed before returning.

        Raises:
            ValueError: a bad batch size or a schedule that does not match the graph.
            GpuRuntimeError: an op cannot be lowered.
        """
        from ..runtime.gpu.executor import GpuExecutor
        executor = None
        try:
            with self.lock:   # its weights' uploads and its replays: alone on this GPU
                executor = GpuExecutor(timing_copy(graph, self.seed), batch_size, context=self.ctx)
                return executor.latency(settings.warmup, settings.number, settings.repeat)[0]
        except Exception:
            self._recover()  # a capture left open would break the next measurement
            raise
        finally:
            if executor is not None:
                executor.close()

    def _recover(self) -> None:
        """After a failure: end a capture left open and wait for the streams, so the next stage starts clean."""
        try:
            main = self.ctx.main_stream
            if main.is_capturing():
                main.end_capture()
        except Exception:  # noqa: BLE001
            pass
        try:
            self.ctx.synchronize()
        except Exception:  # noqa: BLE001
            pass

    def memory_in_use(self) -> int:
        """Bytes CuPy's memory pool has handed out and not got back (for leak checks)."""
        import cupy
        with self.ctx.device:
            return int(cupy.get_default_memory_pool().used_bytes())


def engine_book(device_id: int = 0, tf32: bool = False, autotune: bool = False, location: Optional[str] = None):
    """The engine book of this device, software and math mode (``costs.engines``), at ``location`` or the
    default cost table's."""
    from ..costs.engines import EngineBook, engine_location
    info = gpu_device_info(device_id, tf32, autotune)
    return EngineBook(location or engine_location(), info.name, info.software, "tf32" if tf32 else "float32")


def gpu_device_info(device_id: int = 0, tf32: bool = False, autotune: bool = False) -> DeviceInfo:
    """Name, compute capability, driver, the library versions a timing depends on (cuDNN, CUDA runtime,
    CuPy, numpy, ios_ray's kernels) and the autotune setting of a CUDA device."""
    import cupy

    from .. import __version__
    rt = cupy.cuda.runtime
    props = rt.getDeviceProperties(device_id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    driver = rt.driverGetVersion()
    try:
        import cudnn
        cudnn_version = f"cudnn {cudnn.backend_version_string()} (frontend {cudnn.__version__})"
    except Exception:  # noqa: BLE001
        cudnn_version = "cudnn unavailable"
    math = "tf32" if tf32 else "fp32"
    runtime = rt.runtimeGetVersion()
    return DeviceInfo(name=name, kind="gpu", compute_capability=f"{props['major']}.{props['minor']}",
                      driver=f"{driver // 1000}.{(driver % 1000) // 10}",
                      library=f"{cudnn_version} / cuda runtime {runtime // 1000}.{(runtime % 1000) // 10} / "
                              f"cupy {cupy.__version__} / numpy {np.__version__} / ios_ray {__version__} / {math}",
                      settings=f"autotune {'on' if autotune else 'off'}")

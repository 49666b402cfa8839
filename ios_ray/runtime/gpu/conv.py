"""cuDNN convolutions through the cuDNN frontend's Python graph API (``import cudnn``).

Data flow::

    ConvKey (shapes, strides, conv attributes, activation)
      --ConvPlans.get--> cuDNN graph: conv_fprop -> bias -> act, one fused graph, built once per key
          (strict fp32 unless tf32: plans with tensor-core / down-converting numerics are deselected;
           optionally autotuned: every candidate plan timed, the fastest kept)
      --ConvGraph.execute(ptrs, workspace, handle)--> kernels on the handle's stream (capturable)

Why these choices (see shared/facts.md): the frontend needs ``handle=`` passed explicitly, one handle per
stream; output strides must always be given (else it may infer NHWC); building costs milliseconds per
shape and nothing is shared between graph objects, hence the cache. When a fused epilogue is not
supported for a key, the conv is built alone and the caller applies bias + activation with our kernel.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
from dataclasses import dataclass
from typing import Optional

from ...graph.ops import Window, window_out_hw
from .errors import GpuRuntimeError
from .lock import NO_LOCK

logger = logging.getLogger(__name__)

ACTIVATIONS = ("relu", "identity", "tanh", "sigmoid")
TUNE_PLANS = 8      # candidate plans timed per signature when autotuning
TUNE_RUNS = 10      # executions of one plan per captured graph when autotuning
TUNE_REPLAYS = 5    # replays of that graph (median)


@dataclass(frozen=True)
class ConvKey:
    """Everything a built cuDNN conv graph depends on (strides in elements)."""
    n: int
    c: int
    h: int
    w: int
    x_bstride: int
    k: int
    kh: int
    kw: int
    stride: tuple
    padding: tuple
    groups: int
    y_bstride: int
    act: str
    dilation: tuple = (1, 1)
    pad_end: Optional[tuple] = None   # bottom, right padding when it differs from ``padding`` (top, left)

    @property
    def out_hw(self) -> tuple:
        return window_out_hw(self.h, self.w, (self.kh, self.kw),
                             Window(self.stride, self.padding, self.groups, self.dilation, self.pad_end))

    @property
    def asymmetric(self) -> bool:
        """Whether the bottom/right padding differs from the top/left one."""
        return self.pad_end is not None and tuple(self.pad_end) != tuple(self.padding)

    def canonical(self) -> "ConvKey":
        """The same convolution as cuDNN sees it: with one image, batch strides mean nothing, so they are
        set to the packed ones (a conv writing into a concat slice then shares its plan with the profiled one)."""
        if self.n != 1:
            return self
        oh, ow = self.out_hw
        packed_x, packed_y = self.c * self.h * self.w, self.k * oh * ow
        if (self.x_bstride, self.y_bstride) == (packed_x, packed_y):
            return self
        return dataclasses.replace(self, x_bstride=packed_x, y_bstride=packed_y)

    def signature(self) -> str:
        """A stable text of the key (the engine book's row key)."""
        text = (f"n{self.n} c{self.c} h{self.h} w{self.w} xs{self.x_bstride} k{self.k} kh{self.kh} kw{self.kw} "
                f"s{self.stride[0]},{self.stride[1]} p{self.padding[0]},{self.padding[1]} g{self.groups} "
                f"ys{self.y_bstride} {self.act}")
        # added only where used, so the signatures of undilated, symmetric convs stay what the book holds
        if tuple(self.dilation) != (1, 1):
            text += f" d{self.dilation[0]},{self.dilation[1]}"
        if self.asymmetric:
            text += f" pe{self.pad_end[0]},{self.pad_end[1]}"
        return text

    def validate(self) -> None:
        if self.act not in ACTIVATIONS:
            raise GpuRuntimeError(f"conv: act must be one of {ACTIVATIONS}, got {self.act!r}")
        if self.groups < 1 or self.c % self.groups or self.k % self.groups:
            raise GpuRuntimeError(f"conv: groups={self.groups} must divide in channels {self.c} and out "
                                  f"channels {self.k}")
        oh, ow = self.out_hw
        if oh <= 0 or ow <= 0:
            raise GpuRuntimeError(f"conv: kernel {(self.kh, self.kw)} with padding {self.padding} does not fit "
                                  f"a {self.h}x{self.w} input")
        if self.x_bstride < self.c * self.h * self.w or self.y_bstride < self.k * oh * ow:
            raise GpuRuntimeError(f"conv: batch strides {self.x_bstride}/{self.y_bstride} are smaller than an "
                                  f"image")


@dataclass
class ConvGraph:
    """A built cuDNN graph and the uids of its operands."""
    graph: object
    uid_x: int
    uid_w: int
    uid_b: Optional[int]
    uid_y: int
    workspace_size: int
    fused: bool          # bias and activation happen inside the graph
    plan_name: str

    def execute(self, x_ptr: int, w_ptr: int, b_ptr: int, y_ptr: int, workspace_ptr: int, handle) -> None:
        pack = {self.uid_x: x_ptr, self.uid_w: w_ptr, self.uid_y: y_ptr}
        if self.fused:
            pack[self.uid_b] = b_ptr
        self.graph.execute(pack, workspace_ptr if self.workspace_size else None, handle=handle)


def import_cudnn():
    """The cuDNN frontend module; GpuUnavailableError when it is not installed."""
    try:
        import cudnn  # noqa: F401
    except Exception as exc:  # ImportError, or a missing libcudnn raising OSError
        from .errors import GpuUnavailableError
        raise GpuUnavailableError(f"the cuDNN frontend (pip nvidia-cudnn-frontend, 'import cudnn') is not "
                                  f"usable: {exc}") from exc
    return cudnn


def _nchw(n, c, h, w, bstride):
    return [n, c, h, w], [bstride, h * w, w, 1]


class ConvPlans:
    """Built cuDNN conv graphs by ConvKey, for one device and math mode (bounded LRU).

    Args:
        handle: the cuDNN handle used to build (executions pass their own stream's handle).
        tf32: allow TF32 tensor-core plans; False keeps strict fp32 arithmetic.
        autotune: time the candidate plans of a new signature (each replayed as a captured CUDA graph)
            and keep the fastest, like ``torch.backends.cudnn.benchmark``; False (the default) takes the
            heuristic's first plan, which is deterministic.
        capacity: how many built graphs to keep.
        book: an engine book (``get(signature)``, ``put(signature, plan)``, e.g. ``costs.engines.EngineBook``):
            a plan recorded there is used as it is; a choice made here is recorded in it.

    Why the heuristic by default: on the H200 (``benchmarks/gap_probe.py``), Inception-v3 ran as fast or
    faster with the heuristic's plans as with tuned ones (fp32 3.52 vs 3.54 ms, TF32 1.43 vs 1.53), and
    timing-based choices differ between processes.
    """

    def __init__(self, handle, tf32: bool = False, autotune: bool = False, capacity: int = 4096, book=None,
                 lock=None):
        self.handle = handle
        self.lock = lock if lock is not None else NO_LOCK   # held while autotuning runs plans on the device
        self.tf32 = bool(tf32)
        self.autotune = bool(autotune)
        self.book = book
        self.capacity = int(capacity)
        self._cache: "collections.OrderedDict[ConvKey, ConvGraph]" = collections.OrderedDict()
        self.builds = 0

    def __len__(self) -> int:
        return len(self._cache)

    def get(self, key: ConvKey) -> ConvGraph:
        """The built graph for ``key`` (built on first use). Raises GpuRuntimeError if cuDNN can't run it."""
        key = key.canonical()
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        key.validate()
        errors = []
        built = None
        recorded = self.book.get(key.signature()) if self.book is not None else None
        variants = (True, False) if recorded is None else (recorded.startswith("fused:"),)
        for fused in variants:
            try:
                built = self._build(key, fused)
                break
            except Exception as exc:  # the frontend raises several types (cudnnGraphNotSupportedError, ...)
                errors.append(f"{'fused' if fused else 'plain'}: {type(exc).__name__}: {exc}")
                logger.debug("conv %s: the %s graph cannot be built: %s: %s", key, "fused" if fused else "plain",
                             type(exc).__name__, exc)
        if built is None:
            raise GpuRuntimeError(f"cuDNN cannot run conv {key}: " + " | ".join(errors))
        if self.book is not None and built.plan_name:
            self.book.put(key.signature(), f"{'fused' if built.fused else 'plain'}:{built.plan_name}")
        self.builds += 1
        self._cache[key] = built
        if len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return built

    # ------------------------------------------------------------------------------------------------
    def _build(self, key: ConvKey, fused: bool) -> ConvGraph:
        cudnn = import_cudnn()
        f32 = cudnn.data_type.FLOAT
        oh, ow = key.out_hw
        g = cudnn.pygraph(io_data_type=f32, intermediate_data_type=f32, compute_data_type=f32, handle=self.handle)
        xd, xs = _nchw(key.n, key.c, key.h, key.w, key.x_bstride)
        x = g.tensor(name="x", dim=xd, stride=xs, data_type=f32)
        cg = key.c // key.groups
        w = g.tensor(name="w", dim=[key.k, cg, key.kh, key.kw], stride=[cg * key.kh * key.kw, key.kh * key.kw,
                                                                           key.kw, 1], data_type=f32)
        yd, ys = _nchw(key.n, key.k, oh, ow, key.y_bstride)
        packed = [key.k * oh * ow, oh * ow, ow, 1]
        if key.asymmetric:   # the frontend's overload with separate top/left and bottom/right padding
            pads = {"pre_padding": list(key.padding), "post_padding": list(key.pad_end)}
        else:
            pads = {"padding": list(key.padding)}
        y = g.conv_fprop(image=x, weight=w, **pads, stride=list(key.stride), dilation=list(key.dilation),
                         compute_data_type=f32, name="conv")
        b = None
        if fused:
            y.set_stride(packed)
            b = g.tensor(name="b", dim=[1, key.k, 1, 1], stride=[key.k, 1, 1, 1], data_type=f32)
            y = g.bias(name="bias", input=y, bias=b)
            if key.act != "identity":
                y.set_stride(packed)
                if key.act == "relu":
                    y = g.relu(name="act", input=y)
                elif key.act == "tanh":
                    y = g.tanh(name="act", input=y)
                else:
                    y = g.sigmoid(name="act", input=y)
        y.set_output(True).set_data_type(f32).set_stride(ys)
        g.validate()
        g.build_operation_graph()
        g.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        if not self.tf32:
            notes = [getattr(cudnn.numerical_note, name) for name in ("TENSOR_CORE", "DOWN_CONVERT_INPUTS")
                     if hasattr(cudnn.numerical_note, name)]
            g.deselect_numeric_notes(notes)
        g.check_support()
        recorded = self.book.get(key.signature()) if self.book is not None else None
        if recorded is not None:
            index = self._recorded_index(g, key, recorded.split(":", 1)[1])
        else:
            index = None
            if self.autotune:
                with self.lock:
                    index = self._tune(g, key, (x, w, b, y))
        if index is not None:
            g.select_plan(index)
        g.build_plans()
        name = ""
        try:
            name = g.get_plan_name_at_index(g._plan_index)  # noqa: SLF001 -- only for reports
        except Exception as exc:   # the name is informative only
            logger.debug("conv %s: no plan name: %s: %s", key, type(exc).__name__, exc)
        return ConvGraph(g, x.get_uid(), w.get_uid(), b.get_uid() if b is not None else None, y.get_uid(),
                         int(g.get_workspace_size()), fused, str(name))

    def _time_captured(self, g, pack: dict, ptr, index: int, stream) -> float:
        stream.begin_capture()
        try:
            for _ in range(TUNE_RUNS):
                g.execute_plan_at_index(pack, ptr, index=index, handle=self.handle)
        finally:
            graph = stream.end_capture()
        return _median_replay_ms(graph, stream, TUNE_RUNS)

    def _recorded_index(self, g, key: ConvKey, name: str) -> Optional[int]:
        """Index of the plan called ``name`` (the engine book's choice); None, with a warning, when this
        cuDNN no longer offers it (the heuristic's plan then runs, and is what the book gets next)."""
        for i in range(int(g.get_execution_plan_count())):
            try:
                if g.get_plan_name_at_index(i) == name:
                    g.build_plan_at_index(i)
                    return i
            except Exception as exc:  # noqa: BLE001 -- a barred or unbuildable plan: keep looking
                logger.debug("conv %s: plan %d: %s: %s", key, i, type(exc).__name__, exc)
        logger.warning("conv %s: the engine book's plan %r is not offered here; using the heuristic's", key, name)
        return None

    def _tune(self, g, key: ConvKey, tensors: tuple) -> Optional[int]:
        """Index of the fastest of the first ``TUNE_PLANS`` buildable, allowed plans, timed on scratch
        buffers for the graph's ``tensors`` (x, w, b or None, y); None when none could be timed (the
        heuristic's choice then stands).

        Each plan runs ``TUNE_RUNS`` times inside one captured CUDA graph, replayed ``TUNE_REPLAYS`` times
        (median): ``execute`` costs 33-45 us of host time, so timing eager calls measures the host, not the
        plan, and picked different plans in every process."""
        import cupy
        x, w, b, y = tensors
        try:
            count = int(g.get_execution_plan_count())
        except Exception as exc:
            logger.warning("conv %s: autotune skipped, the heuristic's plan stands (plan count: %s: %s)", key,
                           type(exc).__name__, exc)
            return None
        oh, ow = key.out_hw
        rng = cupy.random.default_rng(0)
        stream = cupy.cuda.Stream(non_blocking=True)
        with stream:
            xs = rng.standard_normal((key.n - 1) * key.x_bstride + key.c * key.h * key.w, dtype=cupy.float32)
            ws = rng.standard_normal(key.k * (key.c // key.groups) * key.kh * key.kw, dtype=cupy.float32)
            bs = rng.standard_normal(key.k, dtype=cupy.float32)
            ys = cupy.empty((key.n - 1) * key.y_bstride + key.k * oh * ow, dtype=cupy.float32)
        pack = {x.get_uid(): xs.data.ptr, w.get_uid(): ws.data.ptr, y.get_uid(): ys.data.ptr}
        if b is not None:
            pack[b.get_uid()] = bs.data.ptr
        cudnn = import_cudnn()
        cudnn.set_stream(self.handle, stream.ptr)
        best, best_ms, tried = None, float("inf"), 0
        try:
            for i in range(count):
                if tried >= TUNE_PLANS:
                    break
                try:
                    g.build_plan_at_index(i)        # raises for plans the numeric filter barred
                    size = int(g.get_workspace_size_plan_at_index(i))
                except Exception as exc:
                    logger.debug("conv %s: autotune skips plan %d (not buildable: %s: %s)", key, i,
                                 type(exc).__name__, exc)
                    continue
                tried += 1
                try:
                    with stream:
                        scratch = cupy.empty(max(size, 1), dtype=cupy.uint8)
                    ptr = scratch.data.ptr if size else None
                    g.execute_plan_at_index(pack, ptr, index=i, handle=self.handle)
                    ms = self._time_captured(g, pack, ptr, i, stream)
                except Exception as exc:
                    logger.warning("conv %s: autotune skips plan %d (timing it failed: %s: %s)", key, i,
                                   type(exc).__name__, exc)
                    continue
                if ms < best_ms:
                    best, best_ms = i, ms
        finally:
            stream.synchronize()
            cudnn.set_stream(self.handle, 0)
        if best is None:
            logger.debug("conv %s: autotune timed no plan (%d tried); the heuristic's plan stands", key, tried)
        return best


def _median_replay_ms(graph, stream, runs: int) -> float:
    """Median over ``TUNE_REPLAYS`` replays of a captured graph holding ``runs`` executions, per execution."""
    import cupy
    graph.upload(stream)
    graph.launch(stream)
    times = []
    for _ in range(TUNE_REPLAYS):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record(stream)
        graph.launch(stream)
        end.record(stream)
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end) / runs)
    return sorted(times)[len(times) // 2]


def handle_for_stream(stream_ptr: int):
    """A new cuDNN handle bound to ``stream_ptr``."""
    cudnn = import_cudnn()
    h = cudnn.create_handle()
    cudnn.set_stream(h, stream_ptr)
    return h


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
from dataclasses import dataclass
from typing import Dict, Optional

from ...graph.ops import window_out_hw
from .errors import GpuRuntimeError

ACTIVATIONS = ("relu", "identity", "tanh", "sigmoid")


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

    @property
    def out_hw(self) -> tuple:
        return window_out_hw(self.h, self.w, (self.kh, self.kw), self.stride, self.padding)

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
        autotune: time every candidate plan once per key and keep the fastest (like
            ``torch.backends.cudnn.benchmark``); False takes the heuristic's first plan.
        capacity: how many built graphs to keep.
    """

    def __init__(self, handle, tf32: bool = False, autotune: bool = True, capacity: int = 4096):
        self.handle = handle
        self.tf32 = bool(tf32)
        self.autotune = bool(autotune)
        self.capacity = int(capacity)
        self._cache: "collections.OrderedDict[ConvKey, ConvGraph]" = collections.OrderedDict()
        self.builds = 0

    def __len__(self) -> int:
        return len(self._cache)

    def get(self, key: ConvKey) -> ConvGraph:
        """The built graph for ``key`` (built on first use). Raises GpuRuntimeError if cuDNN can't run it."""
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        key.validate()
        errors = []
        built = None
        for fused in (True, False):
            try:
                built = self._build(key, fused)
                break
            except Exception as exc:  # the frontend raises several types (cudnnGraphNotSupportedError, ...)
                errors.append(f"{'fused' if fused else 'plain'}: {type(exc).__name__}: {exc}")
        if built is None:
            raise GpuRuntimeError(f"cuDNN cannot run conv {key}: " + " | ".join(errors))
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
        y = g.conv_fprop(image=x, weight=w, padding=list(key.padding), stride=list(key.stride), dilation=[1, 1],
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
        index = self._tune(g, key, x, w, b, y) if self.autotune else None
        if index is not None:
            g.select_plan(index)
        g.build_plans()
        name = ""
        try:
            name = g.get_plan_name_at_index(g._plan_index)  # noqa: SLF001 -- only for reports
        except Exception:
            pass
        return ConvGraph(g, x.get_uid(), w.get_uid(), b.get_uid() if b is not None else None, y.get_uid(),
                         int(g.get_workspace_size()), fused, str(name))

    def _tune(self, g, key: ConvKey, x, w, b, y, max_plans: int = 4) -> Optional[int]:
        """Index of the fastest of the first ``max_plans`` buildable, allowed plans, timed on scratch
        buffers; None when none could be timed (the heuristic's choice then stands)."""
        import cupy
        try:
            count = int(g.get_execution_plan_count())
        except Exception:
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
                if tried >= max_plans:
                    break
                try:
                    g.build_plan_at_index(i)        # raises for plans the numeric filter barred
                    size = int(g.get_workspace_size_plan_at_index(i))
                except Exception:
                    continue
                tried += 1
                try:
                    with stream:
                        scratch = cupy.empty(max(size, 1), dtype=cupy.uint8)
                    ptr = scratch.data.ptr if size else None
                    g.execute_plan_at_index(pack, ptr, index=i, handle=self.handle)
                    start, end = cupy.cuda.Event(), cupy.cuda.Event()
                    start.record(stream)
                    for _ in range(3):
                        g.execute_plan_at_index(pack, ptr, index=i, handle=self.handle)
                    end.record(stream)
                    end.synchronize()
                    ms = cupy.cuda.get_elapsed_time(start, end) / 3
                except Exception:
                    continue
                if ms < best_ms:
                    best, best_ms = i, ms
        finally:
            stream.synchronize()
            cudnn.set_stream(self.handle, 0)
        return best


def handle_for_stream(stream_ptr: int):
    """A new cuDNN handle bound to ``stream_ptr``."""
    cudnn = import_cudnn()
    h = cudnn.create_handle()
    cudnn.set_stream(h, stream_ptr)
    return h


def plans_report(plans: ConvPlans) -> Dict[str, int]:
    """How often each selected cuDNN plan name occurs among the cached graphs (for reports)."""
    out: Dict[str, int] = {}
    for cg in plans._cache.values():  # noqa: SLF001
        out[cg.plan_name] = out.get(cg.plan_name, 0) + 1
    return out

"""A lowered GPU program: buffers, weights and launch steps for a list of stages, captured as CUDA graphs.

Data flow::

    stages (groups of IR nodes) + external nodes
      --plan_buffers (plan.py)--> storages and each node's channel slice in them
      --lower each node (LOWERINGS[node.type])--> Steps: our kernels (gather/concat copies, pooling,
                           element-wise, scale-shift, channel multiply) and cuDNN convs (ConvPlans; a
                           Linear is a conv whose kernel covers its input), with every buffer, weight and
                           workspace allocated here
      --enqueue--> stage by stage: stage start event on stream 0, group g on stream g (waits on it),
                   each group's end event joined back into stream 0; no host synchronisation
      --capture--> one CUDA graph (the whole program, or one stage for per-stage timing), replayed

Nothing is allocated while capturing: every view and scratch buffer exists before ``capture`` and
stays referenced by the Program for as long as its graphs may be replayed. ``close`` drops them all.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ...graph.compound import Activation
from ...graph.ir import Conv, Element, Identity, Node, Pool, SepConv
from ...graph.ops import Registry, Window
from ...graph.ops_extra import ChannelMul, Linear, ScaleShift
from .conv import ACTIVATIONS as CUDNN_ACTIVATIONS
from .conv import ConvKey
from .errors import GpuRuntimeError
from .kernels import batch_stride
from .plan import BufferPlan, Loc, cudnn_reads_in_place, input_slice, plan_buffers, term_locs

# (node, parameter name, shape) -> device float32 array
WeightSource = Callable[[Node, str, tuple], object]

Step = Callable[[int], None]  # enqueues work on the current stream; the argument is the stream index

# op type -> Program method lowering one node of that type (declared in graph/ops.py): (self, node, out, steps)
LOWERINGS: Registry[Callable[..., None]] = Registry("GPU lowering")


def graph_weights(node: Node, pname: str, shape: tuple):
    """Weights from ``node.params`` (numpy), copied to the device once."""
    import cupy
    value = node.params.get(pname)
    if value is None:
        raise GpuRuntimeError(f"{node.display()} has no {pname!r}; call graph.init_weights() first")
    arr = np.ascontiguousarray(value, dtype=np.float32)
    if arr.shape != tuple(shape):
        raise GpuRuntimeError(f"{node.display()}: {pname!r} has shape {arr.shape}, expected {tuple(shape)}")
    return cupy.asarray(arr)


@dataclass(frozen=True)
class Feed:
    """Where a Program's weights and external inputs come from.

    Attributes:
        weights: the parameters (``graph_weights``: the nodes' own, copied to the device once).
        arrays: device arrays (N, C, H, W), by external node name, to use as the externals' storages.
        place_external: with one image, place an external that a concat reads whole inside the concat's
            storage, as the runtime places a producer (the profiler: a stage then costs what it costs in
            the graph, where such a concat copies nothing); it gets random values there.
        poison: fill every buffer with NaN first (tests: an unwritten element shows up).
    """
    weights: "WeightSource" = graph_weights
    arrays: Optional[Dict[str, object]] = None
    place_external: bool = False
    poison: bool = False


@dataclass
class _Lowered:
    node: Node
    steps: List[Step]


class Program:
    """Device-resident form of ``stages`` (each a list of groups, each a list of nodes).

    Args:
        ctx: the GpuContext (streams, handles, conv plans, kernels).
        stages: the stages in run order; the groups of a stage run concurrently, one stream each.
        external: nodes whose outputs are fed in (a placeholder, or a profiled stage's inputs).
        batch_size: the batch.
        feed: where weights and external inputs come from (``Feed``).
    Raises:
        GpuRuntimeError: an op the runtime cannot lower (unsupported conv, bad layout, ...).
    """

    def __init__(self, ctx, stages: Sequence[Sequence[Sequence[Node]]], external: Sequence[Node], batch_size: int,
                 feed: Optional["Feed"] = None):
        import cupy
        feed = feed if feed is not None else Feed()
        weights, poison = feed.weights, feed.poison
        if batch_size < 1:
            raise GpuRuntimeError(f"batch_size must be at least 1, got {batch_size}")
        self.ctx = ctx
        self.batch_size = int(batch_size)
        self.stages = [[list(g) for g in stage] for stage in stages]
        if any(not stage or any(not g for g in stage) for stage in self.stages):
            raise GpuRuntimeError("every stage needs at least one non-empty group")
        order = [n for stage in self.stages for g in stage for n in g]
        self.plan: BufferPlan = plan_buffers(order, external, self.batch_size, place_external=feed.place_external)
        self._storage_shapes = list(self.plan.storages)   # grows with storages added while lowering
        self._keep: List[object] = []   # scratch buffers, weights, workspaces: alive while graphs are
        self._events: List[object] = []
        self._graphs: List[object] = []
        external_arrays = dict(feed.arrays or {})
        ctx.ensure_streams(max(len(stage) for stage in self.stages))
        # set up on stream 0, which every stage starts from, and wait for it: the uploads must be
        # complete before any other (non-blocking) stream reads them
        with ctx.device, ctx.main_stream:
            self.storages = []
            fresh = []
            for (c, h, w), owner in zip(self.plan.storages, self.plan.owners):
                given = external_arrays.get(owner)
                if given is not None:
                    if tuple(given.shape) != (self.batch_size, c, h, w) or given.dtype != np.float32 \
                            or not given.flags.c_contiguous:
                        raise GpuRuntimeError(f"external {owner!r}: expected a contiguous float32 array of shape "
                                              f"{(self.batch_size, c, h, w)}, got {given.shape} {given.dtype}")
                    self.storages.append(given)
                    continue
                fresh.append(cupy.empty((self.batch_size, c, h, w), dtype=cupy.float32))
                self.storages.append(fresh[-1])
            self._weights = weights
            self._lowered: Dict[int, _Lowered] = {}
            for n in order:
                self._lowered[id(n)] = _Lowered(n, self._lower(n))
            # the device work of the set-up in one section under the context's lock (a profiler's other
            # processes on this GPU wait meanwhile), finished before the lock is let go
            with ctx.lock:
                if poison:
                    for buf in fresh:
                        buf.fill(np.nan)
                for node in external:   # an external placed inside a consumer's storage: random values there
                    loc = self.plan.loc(node)
                    if self.plan.owners[loc.storage] != node.name:
                        view = self.view(loc)
                        view[...] = cupy.random.default_rng(loc.offset).standard_normal(view.shape,
                                                                                      dtype=cupy.float32)
                ctx.main_stream.synchronize()

    # ----- views ------------------------------------------------------------------------------------
    def view(self, loc: Loc):
        """The (N, channels, H, W) slice ``loc`` of its storage."""
        return self.storages[loc.storage][:, loc.offset:loc.offset + loc.channels]

    def output(self, node: Node):
        """The device view holding ``node``'s output."""
        return self.view(self.plan.loc(node))

    def _scratch(self, c: int, h: int, w: int):
        import cupy
        buf = cupy.empty((self.batch_size, c, h, w), dtype=cupy.float32)
        self._keep.append(buf)
        return buf

    def _param(self, node: Node, pname: str, shape: tuple):
        arr = self._weights(node, pname, tuple(shape))
        self._keep.append(arr)
        return arr

    def _add_storage(self, c: int, h: int, w: int) -> int:
        """A storage beyond the plan's (a Sequential's inner output); returns its index."""
        self.storages.append(self._scratch(c, h, w))
        self._storage_shapes.append((c, h, w))
        return len(self.storages) - 1

    def _cudnn_ready(self, loc: Loc) -> bool:
        c_total, h, w = self._storage_shapes[loc.storage]
        return cudnn_reads_in_place(loc.offset, loc.channels, c_total, h * w, self.batch_size, strided=self.ctx.tf32)

    # ----- lowering ---------------------------------------------------------------------------------
    def _gather(self, node: Node, act: str, steps: List[Step], for_cudnn: bool):
        """The node's input (terms summed, concatenated) as one view, gathering a copy when needed."""
        if act == "identity":
            loc = input_slice(node, self.plan)
            if loc is not None and (not for_cudnn or self._cudnn_ready(loc)):
                return self.view(loc)
        c, h, w = node.input_shape()
        out = self._scratch(c, h, w)
        self._write_terms(node, out, act, steps)
        return out

    def _write_terms(self, node: Node, out, act: str, steps: List[Step],
                     act_args: Tuple[float, float] = (0.0, 0.0)) -> None:
        """Steps writing ``act`` of the node's input (each term summed, terms side by side) into ``out``;
        ``act_args``: a parametric activation's parameters (``Activation.act_args``)."""
        kernels = self.ctx.kernels
        offset = 0
        for locs in term_locs(node, self.plan):
            length = locs[0].channels
            dst = out[:, offset:offset + length]
            srcs = [self.view(l) for l in locs]
            steps.append(lambda si, dst=dst, srcs=srcs: kernels.nary(dst, srcs, "add", act, act_args))
            offset += length

    def _conv_step(self, x, y, weight, bias, window: Window, act: str) -> Step:
        """Conv + bias + act of ``x`` into ``y``: cuDNN's fused epilogue for its activations (relu, tanh,
        sigmoid); any other activation (relu6, hardswish, silu) runs after it, in place, as our kernel."""
        n, c, h, w = x.shape
        k, _, kh, kw = weight.shape
        cudnn_act = act if act in CUDNN_ACTIVATIONS else "identity"
        key = ConvKey(n, c, h, w, batch_stride(x), k, kh, kw, window.stride, window.padding, window.groups,
                      batch_stride(y), cudnn_act, window.dilation, window.pad_end)
        cg = self.ctx.conv_plans.get(key)
        if (n, k, *key.out_hw) != tuple(y.shape):
            raise GpuRuntimeError(f"conv output view has shape {y.shape}, expected {(n, k, *key.out_hw)}")
        ws_ptr = 0
        if cg.workspace_size:
            import cupy
            ws = cupy.empty(cg.workspace_size, dtype=cupy.uint8)
            self._keep.append(ws)
            ws_ptr = ws.data.ptr
        handles = self.ctx.handles
        kernels = self.ctx.kernels
        ptrs = (x.data.ptr, weight.data.ptr, bias.data.ptr, y.data.ptr)

        def step(si: int) -> None:
            cg.execute(*ptrs, ws_ptr, handles[si])
            if not cg.fused:
                kernels.bias_act(y, bias, act)
            elif cudnn_act != act:
                kernels.nary(y, [y], "add", act)
        return step

    def _lower(self, node: Node) -> List[Step]:
        steps: List[Step] = []
        out = self.output(node)
        lower = LOWERINGS.get(node.type)
        if lower is None:
            raise GpuRuntimeError(f"{node.display()}: the GPU runtime has no kernel for op type {node.type!r}")
        lower(self, node, out, steps)
        return steps

    # Each lowering appends the steps computing ``node`` into its output view ``out``.
    @LOWERINGS.register("conv")
    def _lower_conv(self, node: Conv, out, steps: List[Step]) -> None:
        x = self._gather(node, "identity", steps, for_cudnn=True)
        wshape = node.weight_shapes()
        weight = self._param(node, "weight", wshape["weight"])
        bias = self._param(node, "bias", wshape["bias"])
        steps.append(self._conv_step(x, out, weight, bias, Window.of(node), node.act))

    @LOWERINGS.register("sepconv")
    def _lower_sepconv(self, node: SepConv, out, steps: List[Step]) -> None:
        x = self._gather(node, node.pre_act, steps, for_cudnn=True)
        c = x.shape[1]
        shapes = node.weight_shapes()
        _, oh, ow = node.output_shape
        mid = self._scratch(c, oh, ow)
        dw_w = self._param(node, "dw_weight", shapes["dw_weight"])
        dw_b = self._param(node, "dw_bias", shapes["dw_bias"])
        pw_w = self._param(node, "pw_weight", shapes["pw_weight"])
        pw_b = self._param(node, "pw_bias", shapes["pw_bias"])
        steps.append(self._conv_step(x, mid, dw_w, dw_b, Window(tuple(node.stride), tuple(node.padding), c),
                                     "identity"))
        steps.append(self._conv_step(mid, out, pw_w, pw_b, Window(), node.act))

    @LOWERINGS.register("pool")
    def _lower_pool(self, node: Pool, out, steps: List[Step]) -> None:
        kernels = self.ctx.kernels
        x = self._gather(node, "identity", steps, for_cudnn=False)
        window = Window.of(node)
        steps.append(lambda si: kernels.pool2d(x, out, node.pool_type, node.kernel, window, node.count_include_pad))

    @LOWERINGS.register("relu")
    @LOWERINGS.register("activation")
    def _lower_activation(self, node: Node, out, steps: List[Step]) -> None:
        # Relu, or an Activation (with its parameters, for hardsigmoid and clip)
        act, args = (node.act_type, node.act_args()) if isinstance(node, Activation) else ("relu", (0.0, 0.0))
        self._write_terms(node, out, act, steps, args)

    @LOWERINGS.register("sequential")
    def _lower_sequential(self, node: Node, out, steps: List[Step]) -> None:
        """The inner nodes in turn on the group's stream: each one before the last writes a storage of its
        own, registered in the plan so the next reads it like any producer; the last writes ``out``."""
        last = len(node.nodes) - 1
        for i, inner in enumerate(node.nodes):
            if i == last:
                self.plan.locations[inner.name] = self.plan.loc(node)
                inner_out = out
            else:
                c, h, w = inner.output_shape
                self.plan.locations[inner.name] = Loc(self._add_storage(c, h, w), 0, c)
                inner_out = self.output(inner)
            LOWERINGS[inner.type](self, inner, inner_out, steps)

    def _operand(self, locs: List[Loc], steps: List[Step]):
        """One input term as a view: the value itself, or a scratch buffer its values are summed into."""
        if len(locs) == 1:
            return self.view(locs[0])
        _, h, w = self._storage_shapes[locs[0].storage]
        tmp = self._scratch(locs[0].channels, h, w)
        srcs = [self.view(l) for l in locs]
        kernels = self.ctx.kernels
        steps.append(lambda si: kernels.nary(tmp, srcs, "add"))
        return tmp

    @LOWERINGS.register("element")
    def _lower_element(self, node: Element, out, steps: List[Step]) -> None:
        kernels = self.ctx.kernels
        operands = [self._operand(locs, steps) for locs in term_locs(node, self.plan)]
        steps.append(lambda si: kernels.nary(out, operands, node.op_type))

    @LOWERINGS.register("channel_mul")
    def _lower_channel_mul(self, node: ChannelMul, out, steps: List[Step]) -> None:
        kernels = self.ctx.kernels
        x, gate = (self._operand(locs, steps) for locs in term_locs(node, self.plan))
        steps.append(lambda si: kernels.channel_mul(x, gate, out))

    @LOWERINGS.register("scale_shift")
    def _lower_scale_shift(self, node: ScaleShift, out, steps: List[Step]) -> None:
        kernels = self.ctx.kernels
        x = self._gather(node, "identity", steps, for_cudnn=False)
        shapes = node.weight_shapes()
        scale = self._param(node, "scale", shapes["scale"])
        shift = self._param(node, "shift", shapes["shift"])
        steps.append(lambda si: kernels.scale_shift(x, out, scale, shift, node.act))

    @LOWERINGS.register("linear")
    def _lower_linear(self, node: Linear, out, steps: List[Step]) -> None:
        """A cuDNN conv whose kernel covers the whole (C, H, W) input (the weight (O, C*H*W) seen as
        (O, C, H, W), which is ONNX's flattening order). cuDNN writes a packed output; where the planner
        placed this one inside a concat, it writes a scratch buffer that our kernel copies into place."""
        x = self._gather(node, "identity", steps, for_cudnn=True)
        c, h, w = node.input_shape()
        shapes = node.weight_shapes()
        weight = self._param(node, "weight", shapes["weight"]).reshape(node.out_features, c, h, w)
        bias = self._param(node, "bias", shapes["bias"])
        loc = self.plan.loc(node)
        packed = loc.offset == 0 and self._storage_shapes[loc.storage][0] == loc.channels
        y = out if packed else self._scratch(node.out_features, 1, 1)
        steps.append(self._conv_step(x, y, weight, bias, Window(), node.act))
        if not packed:
            kernels = self.ctx.kernels
            steps.append(lambda si: kernels.nary(out, [y], "add"))

    @LOWERINGS.register("identity")
    def _lower_identity(self, node: Identity, out, steps: List[Step]) -> None:
        kernels = self.ctx.kernels
        if node.name not in self.plan.in_place:
            base = self.plan.loc(node)
            offset = 0
            for locs in term_locs(node, self.plan):
                length = locs[0].channels
                dest = Loc(base.storage, base.offset + offset, length)
                if not (len(locs) == 1 and locs[0] == dest):
                    dst = self.view(dest)
                    srcs = [self.view(l) for l in locs]
                    steps.append(lambda si, dst=dst, srcs=srcs: kernels.nary(dst, srcs, "add"))
                offset += length

    # ----- running ----------------------------------------------------------------------------------
    def enqueue(self, stage_indices: Optional[Sequence[int]] = None) -> None:
        """Enqueue the stages (all by default) on the context's streams, starting from stream 0."""
        import cupy
        streams = self.ctx.streams
        main = streams[0]
        indices = range(len(self.stages)) if stage_indices is None else stage_indices
        for si in indices:
            groups = self.stages[si]
            if len(groups) == 1:
                with main:
                    for n in groups[0]:
                        for step in self._lowered[id(n)].steps:
                            step(0)
                continue
            start = cupy.cuda.Event(disable_timing=True)
            start.record(main)
            self._events.append(start)
            for gi, group in enumerate(groups):
                stream = streams[gi]
                if gi:
                    stream.wait_event(start)
                with stream:
                    for n in group:
                        for step in self._lowered[id(n)].steps:
                            step(gi)
                if gi:
                    done = cupy.cuda.Event(disable_timing=True)
                    done.record(stream)
                    main.wait_event(done)
                    self._events.append(done)

    def run_eager(self) -> None:
        """Run every stage once without a graph (loads modules, warms plans) and wait for it."""
        with self.ctx.device:
            self.enqueue()
            self.ctx.main_stream.synchronize()
            self._events.clear()

    def capture(self, stage_indices: Optional[Sequence[int]] = None, upload: bool = True):
        """A CUDA graph of the stages (all by default), launched on stream 0 with ``graph.launch``;
        uploaded to the device now, or (``upload=False``: capturing runs nothing on the device) by its
        first launch."""
        main = self.ctx.main_stream
        with self.ctx.device:
            main.begin_capture()
            try:
                self.enqueue(stage_indices)
            finally:
                graph = main.end_capture()
            if upload:
                graph.upload(main)
        self._graphs.append(graph)
        return graph

    def close(self) -> None:
        """Drop every graph and buffer (their memory returns to CuPy's pool)."""
        self._graphs.clear()
        self._events.clear()
        self._keep.clear()
        self._lowered = {}
        self.storages = []


def time_graph(graph, stream, warmup: int, number: int, repeat: int) -> List[float]:
    """Per-repeat latency in ms: ``warmup`` replays, then ``repeat`` times ``number`` replays timed with events."""
    if warmup < 0 or number < 1 or repeat < 1:
        raise GpuRuntimeError(f"need warmup >= 0, number >= 1, repeat >= 1; got {warmup}, {number}, {repeat}")
    repeats = _timed_repeats(graph, stream, warmup, number)
    return [next(repeats) for _ in range(repeat)]


MIN_REPEATS = 3          # adaptive timing never stops before this many repeats
STABLE_FRACTION = 0.01   # ... and stops once one more repeat moves the median by less than this
MIN_SAMPLES = 5      # single-replay timing never stops before this many samples
FIRST_BLOCK = 3      # replays timed before the first look at the median, then ``BLOCK`` more per look
BLOCK = 2


MIN_STAGE_MS = 1e-3   # 1 us: the least a sample is taken to cost once the launch is off
# A cold median is of at least this many samples, as a warm one. At least 9 made NASNet's stages 25 % dearer
# to time (4.15 against 3.31 ms a stage in one process on the H200, ``benchmarks/cold_samples.py``), moved
# their sum by 0.8 % and their 10th-90th percentile stage by -4.5 % to +5.6 %, and left SqueezeNet's
# predictions as far off (-5 to -8 % at 9 against -7 to +7 % at 5, one run each).
COLD_MIN_SAMPLES = MIN_SAMPLES


def _tiny_graphs(stream):
    """Two captured graphs on ``stream``: one tiny node, and two dependent ones; and what they use."""
    import cupy
    tiny = cupy.zeros(1, dtype=cupy.float32)
    graphs = []
    for nodes in (1, 2):
        stream.begin_capture()
        try:
            with stream:
                for _ in range(nodes):
                    tiny += 1.0
        finally:
            graphs.append(stream.end_capture())
        graphs[-1].upload(stream)
    return tiny, graphs


def launch_less_node(t1_ms: float, t2_ms: float) -> Tuple[float, float]:
    """``(launch_ms, node_ms)`` from a protocol's timings of a one-node (T1) and a two-node (T2) graph.

    A timed replay holds a graph launch (and, cold, its own pair of events); inside a whole schedule a stage
    pays instead one dependency on the stage before it. ``node_ms = T2 - T1`` is what one more dependent node
    costs in a graph, ``launch_ms = T1 - node_ms`` what the launch adds beyond it: taken off every sample,
    it leaves the stage plus one in-graph dependency, as the stage runs inside the schedule."""
    node = max(t2_ms - t1_ms, 0.0)
    return max(t1_ms - node, 0.0), node


class ColdL2:
    """Replays of one graph timed the way it runs inside a whole schedule, not warm from its own replays.

    Before each timed replay ``flush_bytes`` of scratch memory are overwritten (the default, twice the L2's
    size, evicts everything: the weights and whatever earlier replays left are gone, as the rest of a big
    graph evicts them; less evicts as much as a smaller graph's other traffic does) and the stage's inputs
    are read once (``touch``: the stages before it just wrote them, so they sit in L2).

    Each replay is timed by its own pair of events; ``launch_ms`` (``launch_less_node``, calibrated with this
    protocol) is taken off every sample. Taking off a whole one-node graph instead (before) also took off
    that node's dependency and run, which put Sequential and Greedy stage sums 17-27 % under SqueezeNet's
    whole graphs (``benchmarks/cost_protocols.py``, ``error_t1``).
    """

    def __init__(self, stream, l2_bytes: int, flush_bytes: Optional[int] = None):
        import cupy
        self.stream = stream
        self.flush_bytes = self.flush_size(l2_bytes, flush_bytes)
        self.scratch = cupy.empty(self.flush_bytes, dtype=cupy.uint8)
        self._sink = None      # what the reads of a stage's inputs copy into (grown on demand)
        self._events: List[tuple] = []
        self._tick = 0
        self.launch_ms = 0.0
        self.stable_fraction = STABLE_FRACTION   # when ``time_until_stable`` stops (see there)
        self.min_samples = COLD_MIN_SAMPLES
        self.max_samples: Optional[int] = None   # a cap below ``number * max_repeat``, if any
        tiny, graphs = _tiny_graphs(stream)
        t1, t2 = (float(np.median(self.samples(g, (), 60))) for g in graphs)
        self.launch_ms, self.node_ms = launch_less_node(t1, t2)
        self._keep = (tiny, graphs)

    @staticmethod
    def flush_size(l2_bytes: int, flush_bytes: Optional[int] = None) -> int:
        """The scratch size: ``flush_bytes``, by default twice the L2's size; at least 1 MiB."""
        return max(int(flush_bytes if flush_bytes is not None else 2 * int(l2_bytes)), 1 << 20)

    def samples(self, graph, touch: Sequence, count: int) -> List[float]:
        """``count`` single replays of ``graph``, each after a flush and a read of ``touch``, in ms less
        ``launch_ms`` (never below ``MIN_STAGE_MS``: a stage always costs something).

        The flush is one ``cudaMemsetAsync`` and each read one device-to-device copy into ``sink`` (raw
        runtime calls, a few microseconds of host time each, and events reused): with CuPy's ``fill`` and
        a reduction per input, NASNet's stages took 6.87 ms each to time cold against 4.04 ms warm in one
        process on the H200, with these calls 3.31 against 3.27 ms in a later one
        (``benchmarks/cold_samples.py``)."""
        import cupy
        rt = cupy.cuda.runtime
        reads = [self._readable(a) for a in touch]
        need = max((a.nbytes for a in reads), default=0)
        if self._sink is None or self._sink.nbytes < need:
            self._sink = cupy.empty(max(need, 1 << 10), dtype=cupy.uint8)
        while len(self._events) < count:
            self._events.append((cupy.cuda.Event(), cupy.cuda.Event()))
        events = self._events[:count]
        stream = self.stream.ptr
        for start, end in events:
            self._tick ^= 1
            rt.memsetAsync(self.scratch.data.ptr, self._tick, self.flush_bytes, stream)
            for arr in reads:
                rt.memcpyAsync(self._sink.data.ptr, arr.data.ptr, arr.nbytes, rt.memcpyDeviceToDevice, stream)
            start.record(self.stream)
            graph.launch(self.stream)
            end.record(self.stream)
        events[-1][1].synchronize()
        return [max(cupy.cuda.get_elapsed_time(a, b) - self.launch_ms, MIN_STAGE_MS) for a, b in events]

    @staticmethod
    def _readable(arr):
        """``arr``, or the contiguous storage it is a view of (a channel slice), for one copy to read it."""
        while not arr.flags.c_contiguous and arr.base is not None:
            arr = arr.base
        return arr

    def time_until_stable(self, graph, touch: Sequence, warmup: int, number: int, max_repeat: int) -> List[float]:
        """Single cold replays, as ``time_replays_until_stable`` takes warm ones: ``warmup`` untimed, then
        blocks until there are ``min_samples`` (``COLD_MIN_SAMPLES``) and the last block moved their median
        by less than ``stable_fraction``, or ``number * max_repeat`` samples (at most ``max_samples``).
        Every sample is its own flushed replay between its own events, so a median of single samples
        needs no repeats of ``number``."""
        if warmup < 0 or number < 1 or max_repeat < 1:
            raise GpuRuntimeError(f"need warmup >= 0, number >= 1, repeat >= 1; got {warmup}, {number}, {max_repeat}")
        if warmup:
            self.samples(graph, touch, warmup)
        cap = number * max_repeat if self.max_samples is None else min(number * max_repeat, self.max_samples)
        return samples_until_stable(lambda size, _first: self.samples(graph, touch, size), cap, self.min_samples,
                                    self.stable_fraction)


def time_graph_until_stable(graph, stream, warmup: int, number: int, max_repeat: int) -> List[float]:
    """As ``time_graph``, but stops before ``max_repeat`` repeats once the median is stable: after at
    least ``MIN_REPEATS`` repeats, when the last repeat moved the median by less than ``STABLE_FRACTION``.

    A stage replayed on an otherwise idle GPU is steady after a few repeats; the rest of a fixed count is
    profiling time spent for nothing (most of a NASNet stage's 7.9 ms were its 38 replays).
    """
    if warmup < 0 or number < 1 or max_repeat < 1:
        raise GpuRuntimeError(f"need warmup >= 0, number >= 1, repeat >= 1; got {warmup}, {number}, {max_repeat}")
    repeats = _timed_repeats(graph, stream, warmup, number)
    out: List[float] = []
    median = None
    while len(out) < max_repeat:
        out.append(next(repeats))
        previous, median = median, float(np.median(out))
        if len(out) >= MIN_REPEATS and previous is not None and abs(median - previous) <= STABLE_FRACTION * previous:
            break
    return out



def time_replays_until_stable(graph, stream, warmup: int, number: int, max_repeat: int) -> List[float]:
    """Latencies (ms) of single replays: ``warmup`` untimed replays, then replays launched back to back
    with an event after each (a sample is the time between two events), looked at in blocks; stops once
    there are ``MIN_SAMPLES`` samples and the last block moved their median by less than
    ``STABLE_FRACTION``, or after ``number * max_repeat`` samples (the replays ``time_graph`` would time).

    ``time_graph_until_stable`` times whole repeats of ``number`` replays and needs at least
    ``warmup + MIN_REPEATS * number`` replays (20 at IOS's defaults), most of a NASNet stage's profiling
    time; the median of single replays needs 8 when it is steady. Each block after the first begins with
    one untimed replay, so the device is busy when its first event is recorded: no sample holds the idle
    time between blocks or a launch's host latency.
    """
    import cupy
    if warmup < 0 or number < 1 or max_repeat < 1:
        raise GpuRuntimeError(f"need warmup >= 0, number >= 1, repeat >= 1; got {warmup}, {number}, {max_repeat}")
    for _ in range(warmup):
        graph.launch(stream)

    def block(size: int, first: bool) -> List[float]:
        if not first:
            graph.launch(stream)   # lead-in: keeps the device busy while the timed ones are launched
        events = [cupy.cuda.Event() for _ in range(size + 1)]
        events[0].record(stream)
        for e in events[1:]:
            graph.launch(stream)
            e.record(stream)
        events[-1].synchronize()
        return [cupy.cuda.get_elapsed_time(a, b) for a, b in zip(events, events[1:])]
    return samples_until_stable(block, number * max_repeat, MIN_SAMPLES, STABLE_FRACTION)


def samples_until_stable(block: Callable[[int, bool], List[float]], cap: int, least: int,
                         fraction: float) -> List[float]:
    """Samples taken in blocks (``block(size, first)``: ``FIRST_BLOCK``, then ``BLOCK`` at a time) until
    there are ``least`` of them and the last block moved their median by at most ``fraction``, or ``cap``."""
    floor = min(least, cap)
    out: List[float] = []
    median = None
    while len(out) < cap:
        out.extend(block(min(cap - len(out), BLOCK if out else FIRST_BLOCK), not out))
        previous, median = median, float(np.median(out))
        if len(out) >= floor and previous is not None and abs(median - previous) <= fraction * previous:
            break
    return out


def _timed_repeats(graph, stream, warmup: int, number: int):
    """Replays ``graph`` ``warmup`` times, then yields the ms per replay of each further ``number`` replays."""
    import cupy
    for _ in range(warmup):
        graph.launch(stream)
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    while True:
        start.record(stream)
        for _ in range(number):
            graph.launch(stream)
        end.record(stream)
        end.synchronize()
        yield cupy.cuda.get_elapsed_time(start, end) / number

"""GPU runtime and profiler against the numpy reference runtime.

Split by need: the buffer planner (``runtime/gpu/plan.py``) is pure and tested everywhere; every other
test is marked ``gpu`` and skipped cleanly without CuPy, a CUDA device or the cuDNN frontend.

Tolerances (strict fp32, TF32 off): element-wise ops and pools match to rtol 1e-6; a single conv is
within 1e-5 relative (L2) of a float64 reference (TF32 would be ~3e-4); whole graphs match the
float32 reference to rtol 1e-3 / atol 1e-4 and 1e-4 relative L2 error.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from ios_ray.graph import Block, Graph, Stage, conv2d, identity, placeholder, pool2d, relu, sep_conv
from ios_ray.graph.builder import add, mul
from ios_ray.graph.ir import Value
from ios_ray.runtime.gpu import available, unavailable_reason
from ios_ray.runtime.gpu.plan import input_slice, plan_buffers

GPU_OK = available()
gpu = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(not GPU_OK, reason=f"GPU runtime unavailable: {unavailable_reason() or 'ok'}")


def rel_l2(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


# ---------------------------------------------------------------------------------------------------
# Graphs used below
# ---------------------------------------------------------------------------------------------------

def concat_graph(c1: int = 8, c2: int = 12) -> Graph:
    """conv1 and conv2 read the input; their concat is read by conv3 (zero-copy placement)."""
    x = placeholder((6, 9, 9), name="x")
    b = Block(x.node)
    a = conv2d(b, [[x]], c1, kernel=3, padding=1, name="c1")
    d = conv2d(b, [[x]], c2, kernel=1, name="c2")
    cat = identity(b, [[a], [d]], name="cat")
    conv2d(b, [[cat]], 8, kernel=3, padding=1, is_exit=True, name="c3")
    return Graph("concat", x.node, [b])


def mixed_graph() -> Graph:
    """Every op type, summed terms, channel slices, nested concats, misaligned concat offsets."""
    x = placeholder((5, 12, 12), name="x")
    b1 = Block(x.node)
    a = conv2d(b1, [[x]], 7, kernel=(1, 7), padding=(0, 3), act="relu", name="a")         # 7 ch: misaligned
    c = conv2d(b1, [[x]], 7, kernel=(7, 1), padding=(3, 0), act="tanh", name="c")
    s = add(b1, [[a], [c]], name="s")
    m = mul(b1, [[a, c], [s]], name="m")                                                  # a summed term
    r = relu(b1, [[m[0:3]], [s[2:7]]], name="r")                                          # slices, concat
    p = pool2d(b1, [[r], [x[0:2]]], "max", kernel=3, stride=2, padding=1, name="p")         # 10 x 6 x 6
    q = pool2d(b1, [[a]], "avg", kernel=3, stride=2, padding=1, name="q")                   # 7 x 6 x 6
    dw = conv2d(b1, [[p]], 10, kernel=3, padding=1, groups=10, act="sigmoid", name="dw")   # depthwise
    g = conv2d(b1, [[p]], 12, kernel=3, padding=1, groups=2, name="g")
    inner = identity(b1, [[dw], [q]], name="inner")                                       # nested concat
    identity(b1, [[g], [inner]], is_exit=True, name="outer")
    b2 = Block(b1.exit_node)
    v = Value(b1.exit_node, 0, b1.exit_node.output_shape[0])
    sc = sep_conv(b2, [[v]], 16, kernel=5, padding=2, stride=2, name="sc")
    sc2 = sep_conv(b2, [[v[0:12], v[12:24]]], 16, kernel=3, padding=1, stride=2, pre_act="identity",
                   act="relu", name="sc2")
    gp = pool2d(b2, [[sc], [sc2]], "global_avg", name="gp")
    identity(b2, [[gp]], is_exit=True, name="out")
    return Graph("mixed", x.node, [b1, b2])


# ---------------------------------------------------------------------------------------------------
# Buffer planning (pure)
# ---------------------------------------------------------------------------------------------------

def test_plan_places_concat_producers_in_the_concat_buffer():
    g = concat_graph()
    nodes = g.blocks[0].nodes
    plan = plan_buffers(nodes, [g.input], batch_size=1)
    by = g.node_by_name()
    cat = plan.loc(by["cat"])
    assert plan.loc(by["c1"]) == type(cat)(cat.storage, 0, 8)
    assert plan.loc(by["c2"]) == type(cat)(cat.storage, 8, 12)
    assert "cat" in plan.in_place
    assert input_slice(by["c3"], plan) == cat   # conv3 reads the concat in place
    assert len(plan.storages) == 3              # input, the concat, conv3's output


def test_plan_refuses_placements_cudnn_cannot_write():
    # 7 channels of 9x9 = 567 floats: the second producer would start misaligned for cuDNN
    x = placeholder((6, 9, 9), name="x")
    b = Block(x.node)
    a = conv2d(b, [[x]], 7, kernel=1, name="a")
    d = conv2d(b, [[x]], 5, kernel=1, name="d")
    identity(b, [[a], [d]], is_exit=True, name="cat")
    g = Graph("mis", x.node, [b])
    by = g.node_by_name()
    plan = plan_buffers(g.blocks[0].nodes, [g.input], batch_size=1)
    assert plan.loc(by["a"]).storage == plan.loc(by["cat"]).storage
    assert plan.loc(by["d"]).storage != plan.loc(by["cat"]).storage
    assert "cat" not in plan.in_place


def test_plan_keeps_cudnn_outputs_packed_beyond_one_image():
    """With a batch, a conv placed in a concat would write batch-strided output (far slower in cuDNN than
    the packed output the profiler measures): only batch 1 places cuDNN writers."""
    g = concat_graph()
    by = g.node_by_name()
    plan = plan_buffers(g.blocks[0].nodes, [g.input], batch_size=2)
    cat = plan.loc(by["cat"])
    assert plan.loc(by["c1"]).storage != cat.storage and plan.loc(by["c2"]).storage != cat.storage
    assert "cat" not in plan.in_place
    one = plan_buffers(g.blocks[0].nodes, [g.input], batch_size=1)
    assert one.loc(by["c1"]).storage == one.loc(by["cat"]).storage


def test_cudnn_reads_a_slice_in_place_only_where_it_is_packed_and_aligned():
    from ios_ray.runtime.gpu.plan import cudnn_reads_in_place
    assert cudnn_reads_in_place(8, 16, 48, 25, batch_size=1)        # batch 1: any aligned slice is contiguous
    assert not cudnn_reads_in_place(3, 16, 48, 25, batch_size=1)    # 75 floats in: misaligned
    assert not cudnn_reads_in_place(8, 16, 48, 25, batch_size=16)   # a merged conv's part: strided, copied packed
    assert cudnn_reads_in_place(0, 48, 48, 25, batch_size=16)       # the whole storage
    assert cudnn_reads_in_place(8, 16, 48, 25, batch_size=16, strided=True)   # TF32: strided reads are fast


def test_plan_places_a_profiled_concat_stages_inputs_as_the_runtime_places_its_producers():
    """A profiled stage holding a concat of whole externals copies nothing at batch 1 (the runtime's
    producers write into the concat); not at batch 2, nor where a cuDNN writer could not be aligned."""
    from ios_ray.graph.ir import Identity, Placeholder
    a, b = Placeholder("a", (8, 5, 5)), Placeholder("b", (4, 5, 5))
    cat = Identity("cat", [[Value(a, 0, 8)], [Value(b, 0, 4)]])
    cat.set_shape()
    plan = plan_buffers([cat], [a, b], batch_size=1, place_external=True)
    assert plan.loc(a) == type(plan.loc(a))(plan.loc(cat).storage, 0, 8)
    assert plan.loc(b).storage == plan.loc(cat).storage and "cat" in plan.in_place
    assert "cat" not in plan_buffers([cat], [a, b], batch_size=2, place_external=True).in_place
    assert "cat" not in plan_buffers([cat], [a, b], batch_size=1).in_place
    odd = Placeholder("odd", (3, 5, 5))          # b would start at 3 x 25 floats: misaligned
    cat2 = Identity("cat2", [[Value(odd, 0, 3)], [Value(b, 0, 4)]])
    cat2.set_shape()
    plan2 = plan_buffers([cat2], [odd, b], batch_size=1, place_external=True)
    assert plan2.loc(b).storage != plan2.loc(cat2).storage and "cat2" not in plan2.in_place


def test_plan_lets_a_merged_conv_write_the_concat_of_its_parts_in_place():
    """SqueezeNet's fire module merged: one conv whose two parts, in order, are the whole concat. It writes
    the concat as the unmerged convs did (the DP measured that concat as free), unless the parts are out
    of order or only part of it is concatenated."""
    from ios_ray.graph.ir import Conv, Identity, Placeholder
    x = Placeholder("x", (8, 5, 5))
    merged = Conv("merged", [[Value(x, 0, 8)]], out_channels=12, kernel=(3, 3), padding=(1, 1))
    merged.set_shape()

    def cat_of(*slices):
        cat = Identity("cat", [[Value(merged, b, e)] for b, e in slices])
        cat.set_shape()
        return cat

    cat = cat_of((0, 4), (4, 12))
    plan = plan_buffers([merged, cat], [x], batch_size=1)
    assert plan.loc(merged) == type(plan.loc(merged))(plan.loc(cat).storage, 0, 12) and "cat" in plan.in_place
    for slices in (((4, 12), (0, 4)), ((0, 4), (4, 8))):
        cat = cat_of(*slices)
        plan = plan_buffers([merged, cat], [x], batch_size=1)
        assert plan.loc(merged).storage != plan.loc(cat).storage and "cat" not in plan.in_place
    assert "cat" not in plan_buffers([merged, cat_of((0, 4), (4, 12))], [x], batch_size=2).in_place


def test_plan_nested_concat_offsets_add_up():
    g = mixed_graph()
    by = g.node_by_name()
    nodes = [n for b in g.blocks for n in b.nodes]
    plan = plan_buffers(nodes, [g.input], batch_size=2)
    outer, inner, q = plan.loc(by["outer"]), plan.loc(by["inner"]), plan.loc(by["q"])
    assert inner.storage == outer.storage and inner.offset == 12
    assert q.storage == outer.storage and q.offset == 12 + 10
    # every node has exactly its own channel count
    for n in nodes:
        assert plan.loc(n).channels == n.output_shape[0]


def test_gpu_package_imports_without_cupy():
    import importlib
    import sys
    mod = importlib.import_module("ios_ray.runtime.gpu")
    assert isinstance(mod.available(), bool)
    if "cupy" not in sys.modules:
        assert mod.unavailable_reason() != ""


# ---------------------------------------------------------------------------------------------------
# GPU: kernels and convolutions
# ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ctx():
    from ios_ray.runtime.gpu.context import GpuContext
    return GpuContext(0, tf32=False)


def _slice_of_bigger(cp, host: np.ndarray, before: int = 3, after: int = 2):
    """``host`` uploaded as a channel slice of a bigger NaN-filled buffer (exercises batch strides)."""
    n, c, h, w = host.shape
    big = cp.full((n, before + c + after, h, w), np.nan, dtype=cp.float32)
    view = big[:, before:before + c]
    view[...] = cp.asarray(host)
    cp.cuda.Device().synchronize()   # our kernels run on non-blocking streams
    return big, view


@gpu
@needs_gpu
@pytest.mark.parametrize("pool_type,kernel,stride,padding", [
    ("max", (3, 3), (2, 2), (1, 1)), ("avg", (3, 3), (1, 1), (1, 1)), ("max", (2, 3), (1, 2), (0, 1)),
    ("avg", (5, 5), (3, 3), (2, 2)), ("global_avg", (1, 1), (1, 1), (0, 0))])
def test_pool_kernels_match_reference(ctx, pool_type, kernel, stride, padding):
    import cupy as cp
    from ios_ray.runtime.reference import Window, pool2d as ref_pool
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5, 13, 11), dtype=np.float32)
    window = Window(stride, padding)
    ref = ref_pool(x, pool_type, kernel, window)
    _, xv = _slice_of_bigger(cp, x)
    ybig = cp.full((2, ref.shape[1] + 4, *ref.shape[2:]), np.nan, dtype=cp.float32)
    yv = ybig[:, 1:1 + ref.shape[1]]
    cp.cuda.Device().synchronize()
    with ctx.main_stream:
        ctx.kernels.pool2d(xv, yv, pool_type, kernel, window)
    ctx.main_stream.synchronize()
    np.testing.assert_allclose(yv.get(), ref, rtol=1e-6, atol=1e-6)
    assert np.isnan(ybig[:, 0].get()).all() and np.isnan(ybig[:, -3:].get()).all()   # nothing else written


@gpu
@needs_gpu
@pytest.mark.parametrize("op,act,count", [("add", "identity", 1), ("add", "relu", 6), ("mul", "identity", 2),
                                          ("mul", "sigmoid", 5), ("add", "tanh", 4)])
def test_nary_kernel(ctx, op, act, count):
    import cupy as cp
    from ios_ray.runtime.reference import activation
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((3, 4, 5, 7), dtype=np.float32) for _ in range(count)]
    ref = xs[0].copy()
    for x in xs[1:]:
        ref = ref + x if op == "add" else ref * x
    ref = activation(ref, act)
    keep = [_slice_of_bigger(cp, x, before=i % 3, after=1) for i, x in enumerate(xs)]
    out = cp.full((3, 4, 5, 7), np.nan, dtype=cp.float32)
    cp.cuda.Device().synchronize()
    with ctx.main_stream:
        ctx.kernels.nary(out, [v for _, v in keep], op, act)
    ctx.main_stream.synchronize()
    np.testing.assert_allclose(out.get(), ref, rtol=1e-5, atol=1e-6)


@gpu
@needs_gpu
def test_kernels_reject_bad_layout_before_launch():
    import cupy as cp
    from ios_ray.runtime.gpu.errors import GpuRuntimeError
    from ios_ray.graph.ops import Window
    from ios_ray.runtime.gpu.kernels import Kernels
    k = Kernels(0)
    x = cp.zeros((2, 3, 4, 5), dtype=cp.float32)
    with pytest.raises(GpuRuntimeError, match="float32"):
        k.nary(x, [x.astype(cp.float64)])
    with pytest.raises(GpuRuntimeError, match="contiguous"):
        k.nary(x[:, :, :, ::2], [x[:, :, :, ::2]])
    with pytest.raises(GpuRuntimeError, match="output must be"):
        k.pool2d(x, x, "max", (3, 3), Window((1, 1), (0, 0)))


CONV_CASES = [
    # n, c, h, w, k, kernel, stride, padding, groups, act
    (1, 16, 17, 17, 32, (3, 3), (1, 1), (1, 1), 1, "relu"),
    (2, 24, 15, 13, 40, (1, 7), (1, 1), (0, 3), 1, "identity"),
    (1, 24, 15, 13, 24, (7, 1), (1, 1), (3, 0), 1, "tanh"),
    (2, 32, 16, 16, 32, (3, 3), (2, 2), (1, 1), 32, "identity"),        # depthwise
    (1, 16, 11, 11, 32, (5, 5), (1, 1), (2, 2), 4, "sigmoid"),          # grouped
    (3, 64, 8, 8, 96, (1, 1), (1, 1), (0, 0), 1, "relu"),
]


def _conv_on_device(ctx, cp, x, wt, bias, stride, padding, groups, act):
    from ios_ray.runtime.gpu.conv import ConvKey
    from ios_ray.runtime.gpu.kernels import batch_stride
    assert x.dtype == wt.dtype == bias.dtype == np.float32   # raw pointers: cuDNN would misread others
    n, c, h, w = x.shape
    k, _, kh, kw = wt.shape
    xbig, xv = _slice_of_bigger(cp, x, before=4, after=4)
    key = ConvKey(n, c, h, w, batch_stride(xv), k, kh, kw, stride, padding, groups, 0, act)
    oh, ow = key.out_hw
    ybig = cp.full((n, k + 8, oh, ow), np.nan, dtype=cp.float32)
    yv = ybig[:, 4:4 + k]
    key = ConvKey(n, c, h, w, batch_stride(xv), k, kh, kw, stride, padding, groups, batch_stride(yv), act)
    cg = ctx.conv_plans.get(key)
    wd, bd = cp.asarray(wt), cp.asarray(bias)
    ws = cp.empty(max(cg.workspace_size, 1), dtype=cp.uint8)
    cp.cuda.Device().synchronize()
    cg.execute(xv.data.ptr, wd.data.ptr, bd.data.ptr, yv.data.ptr, ws.data.ptr, ctx.handles[0])
    if not cg.fused:
        with ctx.main_stream:
            ctx.kernels.bias_act(yv, bd, act)
    ctx.main_stream.synchronize()
    assert np.isnan(ybig[:, :4].get()).all() and np.isnan(ybig[:, 4 + k:].get()).all()
    return yv.get(), cg


@gpu
@needs_gpu
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[5]}s{c[6][0]}g{c[8]}{c[9]}n{c[0]}")
def test_cudnn_conv_is_strict_fp32(ctx, case):
    import cupy as cp
    from ios_ray.runtime.reference import Window, conv2d as ref_conv
    n, c, h, w, k, kernel, stride, padding, groups, act = case
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    fan_in = c // groups * kernel[0] * kernel[1]
    wt = (rng.standard_normal((k, c // groups, *kernel)) / np.sqrt(fan_in)).astype(np.float32)
    bias = rng.standard_normal(k, dtype=np.float32)
    out, _ = _conv_on_device(ctx, cp, x, wt, bias, stride, padding, groups, act)
    ref64 = ref_conv(x.astype(np.float64), wt.astype(np.float64), bias.astype(np.float64),
                     Window(stride, padding, groups), act)
    assert rel_l2(out, ref64) < 1e-5, "error of TF32 size: tensor-core plans were not excluded"
    np.testing.assert_allclose(out, ref64, rtol=1e-3, atol=1e-4)


@gpu
@needs_gpu
def test_tf32_is_an_explicit_option():
    import cupy as cp
    from ios_ray.runtime.gpu.context import GpuContext
    from ios_ray.runtime.reference import Window, conv2d as ref_conv
    tctx = GpuContext(0, tf32=True)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 256, 28, 28), dtype=np.float32)
    wt = (rng.standard_normal((256, 256, 3, 3)) / 48).astype(np.float32)
    bias = np.zeros(256, dtype=np.float32) + 0.1
    out, cg = _conv_on_device(tctx, cp, x, wt, bias, (1, 1), (1, 1), 1, "identity")
    ref64 = ref_conv(x.astype(np.float64), wt.astype(np.float64), bias.astype(np.float64), Window((1, 1), (1, 1)),
                     "identity")
    err = rel_l2(out, ref64)
    print(f"tf32 conv plan {cg.plan_name}: relative L2 error {err:.2e}")
    assert err < 5e-3


# ---------------------------------------------------------------------------------------------------
# GPU: executor
# ---------------------------------------------------------------------------------------------------

def _compare_executor(ctx, graph, batch, stages=None, seed=0):
    from ios_ray.runtime.gpu.executor import GpuExecutor
    from ios_ray.runtime.reference import ReferenceExecutor
    if not graph.has_weights():
        graph.init_weights(seed)
    x = np.random.default_rng(seed + 7).standard_normal((batch, *graph.input.output_shape), dtype=np.float32)
    ref = ReferenceExecutor(graph, batch, stages=stages).run(x)
    ex = GpuExecutor(graph, batch, context=ctx, stages=stages)
    out = ex.run(x)
    out2 = ex.run(x)    # replays are deterministic and leave no stale state
    ex.close()
    assert out.shape == ref.shape
    assert not np.isnan(out).any()
    np.testing.assert_array_equal(out, out2)
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-4)
    assert rel_l2(out, ref) < 1e-4
    return out


@gpu
@needs_gpu
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("schedule", ["sequential", "greedy", "custom"])
def test_executor_matches_reference_on_every_op(ctx, batch, schedule):
    g = mixed_graph()
    if schedule == "sequential":
        g.sequential_schedule()
    elif schedule == "greedy":
        g.greedy_schedule()
    else:
        # a stage of two concurrent groups, then a group of two ops run in order, the rest greedy
        g.greedy_schedule()
        rest = [n for st in g.blocks[0].stages for grp in st.groups for n in grp if n not in ("a", "c", "s", "m")]
        g.blocks[0].stages = [Stage((("a",), ("c",))), Stage((("s", "m"),))] + [Stage(((n,),)) for n in rest]
    _compare_executor(ctx, g, batch)


@gpu
@needs_gpu
def test_executor_latency_and_stage_profile(ctx):
    from ios_ray.runtime.gpu.executor import GpuExecutor
    g = concat_graph(64, 64)
    g.init_weights(0)
    g.greedy_schedule()
    ex = GpuExecutor(g, 2, context=ctx)
    seq, stages = ex.latency(warmup=1, number=5, repeat=3, profile_stage=True)
    assert len(seq) == 3 and all(t > 0 for t in seq)
    assert len(stages) == 3 * ex.num_stages and all(t > 0 for t in stages)
    seq2, none = ex.latency(warmup=0, number=2, repeat=2)
    assert len(seq2) == 2 and none == []
    with pytest.raises(ValueError, match="input has shape"):
        ex.run(np.zeros((1, 6, 9, 9), dtype=np.float32))
    ex.close()


@gpu
@needs_gpu
def test_executor_requires_a_schedule_and_weights(ctx):
    from ios_ray.runtime.gpu.executor import GpuExecutor
    g = concat_graph()
    g.sequential_schedule()
    with pytest.raises(ValueError, match="no weights"):
        GpuExecutor(g, 1, context=ctx)
    g2 = concat_graph()
    g2.init_weights(0)
    with pytest.raises(ValueError, match="no schedule"):
        GpuExecutor(g2, 1, context=ctx)


@gpu
@needs_gpu
@pytest.mark.slow
@pytest.mark.parametrize("name", ["sample", "squeezenet", "inception_v3", "randwire", "nasnet"])
@pytest.mark.parametrize("schedule", ["sequential", "greedy"])
def test_zoo_models_match_reference(ctx, name, schedule):
    from ios_ray.models import get_model
    g = get_model(name)
    g.init_weights(0)
    getattr(g, f"{schedule}_schedule")()
    _compare_executor(ctx, g, 1)


# ---------------------------------------------------------------------------------------------------
# GPU: profiler
# ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def profiler():
    from ios_ray.profile.gpu import GpuProfiler
    return GpuProfiler(0)


def _specs(name: str, limit: int):
    from ios_ray.models import get_model
    from ios_ray.space.enumerate import enumerate_graph
    from ios_ray.space.options import SpaceOptions
    space = enumerate_graph(get_model(name), SpaceOptions())
    return list(space.specs.values())[:limit]


@gpu
@needs_gpu
def test_profiler_measures_stages(profiler):
    from ios_ray.costs.measurement import CostSource, ErrorKind, MeasureSettings
    from ios_ray.space.stage import stage_spec
    assert isinstance(profiler, CostSource)
    info = profiler.device()
    assert info.kind == "gpu" and info.compute_capability and "cupy" in info.library
    g = concat_graph(128, 128)
    by = g.node_by_name()
    one = stage_spec([[by["c1"]]])
    both = stage_spec([[by["c1"]], [by["c2"]]])
    chain = stage_spec([[by["c1"], by["c2"]]])
    ms = profiler.measure([one, both, chain], 1, MeasureSettings(warmup=2, number=10, repeat=5))
    for m, spec in zip(ms, [one, both, chain]):
        assert m.error is ErrorKind.NONE, m.message
        assert m.key == spec.key and 5 <= m.samples <= 50   # single replays stop once their median is stable
        assert 0 < m.latency_ms < 50 and m.spread_ms >= 0


@gpu
@needs_gpu
def test_profiler_turns_failures_into_error_measurements(profiler):
    from ios_ray.costs.measurement import ErrorKind, MeasureSettings
    from ios_ray.space.stage import stage_spec
    x = placeholder((4096, 2048, 2048), name="huge")     # 64 GiB per image: allocation fails
    b = Block(x.node)
    conv2d(b, [[x]], 8, kernel=1, is_exit=True)
    g = Graph("huge", x.node, [b])
    spec = stage_spec([[g.blocks[0].nodes[0]]])
    [m] = profiler.measure([spec], 4, MeasureSettings(warmup=0, number=1, repeat=1))
    assert m.error is ErrorKind.RUNTIME and m.message and np.isnan(m.latency_ms)
    # and the profiler still works afterwards
    ok = stage_spec([[concat_graph().node_by_name()["c1"]]])
    [m2] = profiler.measure([ok], 1, MeasureSettings(warmup=0, number=1, repeat=1))
    assert m2.error is ErrorKind.NONE, m2.message


@gpu
@needs_gpu
@pytest.mark.slow
def test_profiler_does_not_leak_device_memory(profiler):
    from ios_ray.costs.measurement import ErrorKind, MeasureSettings
    specs = _specs("inception_v3", 200)
    settings = MeasureSettings(warmup=0, number=1, repeat=1)

    def cached_inputs() -> int:
        return profiler._input.nbytes  # noqa: SLF001

    def cached_weights() -> int:
        return profiler._weights.nbytes  # noqa: SLF001

    used_before, inputs_before, weights_before = profiler.memory_in_use(), cached_inputs(), cached_weights()
    first = profiler.measure(specs, 1, settings)
    assert sum(m.error is not ErrorKind.NONE for m in first) == 0, [m.message for m in first if m.message][:3]
    used_after_first = profiler.memory_in_use()
    profiler.measure(specs, 1, settings)
    used_after_second = profiler.memory_in_use()
    # only the per-shape input and weight caches stay allocated between stages; a second pass adds nothing
    assert used_after_second <= used_after_first
    assert used_after_first - used_before <= (cached_inputs() - inputs_before + cached_weights() - weights_before
                                              + (1 << 20))


@gpu
@needs_gpu
def test_engine_book_makes_the_runtime_run_the_profiled_engines(tmp_path):
    """The engines the profiler chose are recorded, and a later executor (another context, as another
    process would have) builds every conv with exactly the recorded plan."""
    from ios_ray.costs.measurement import MeasureSettings
    from ios_ray.models import get_model
    from ios_ray.profile.gpu import GpuProfiler, engine_book
    from ios_ray.runtime.gpu.context import GpuContext
    from ios_ray.runtime.gpu.executor import GpuExecutor
    from ios_ray.space.stage import stage_spec
    loc = str(tmp_path / "engines")
    g = get_model("squeezenet")
    g.init_weights(0)
    g.sequential_schedule()
    prof = GpuProfiler(0, engines=loc)
    specs = [stage_spec([[n]]) for b in g.blocks for n in b.nodes]
    assert all(m.error.value == "" for m in prof.measure(specs, 1, MeasureSettings(1, 1, 1)))
    book = engine_book(location=loc)
    assert len(book) > 0
    ex = GpuExecutor(g, 1, context=GpuContext(0, engines=book))
    built = {k.signature(): cg for k, cg in ex.ctx.conv_plans._cache.items()}   # noqa: SLF001
    assert built and all(book.get(sig) == f"{'fused' if cg.fused else 'plain'}:{cg.plan_name}"
                         for sig, cg in built.items())
    # batch-1 convs writing into concat slices share the profiled (packed) signature
    assert set(built) <= {sig for sig in book._choices}   # noqa: SLF001
    ex.close()


@gpu
@needs_gpu
def test_profiler_stops_timing_once_the_median_is_stable(profiler):
    """Single replays stop early on a steady stage (at least MIN_SAMPLES), never beyond ``number x repeat``;
    the original's repeats (``TIMING_REPEATS``) likewise by repeats, and both agree."""
    from ios_ray.costs.measurement import MeasureSettings
    from ios_ray.profile.gpu import TIMING_REPEATS, TIMING_REPLAYS
    from ios_ray.runtime.gpu.program import MIN_REPEATS, MIN_SAMPLES
    spec = _specs("sample", 1)[0]
    m = profiler.measure([spec], 1, MeasureSettings(warmup=5, number=10, repeat=200))[0]
    assert m.error.value == "" and MIN_SAMPLES <= m.samples < 2000
    assert profiler.measure([spec], 1, MeasureSettings(warmup=0, number=1, repeat=2))[0].samples == 2
    assert "single replays" in profiler.device().settings
    profiler.timing = TIMING_REPEATS
    try:
        assert "single replays" not in profiler.device().settings
        r = profiler.measure([spec], 1, MeasureSettings(warmup=5, number=10, repeat=200))[0]
        assert r.error.value == "" and MIN_REPEATS <= r.samples < 200
        assert r.latency_ms == pytest.approx(m.latency_ms, rel=0.25)
    finally:
        profiler.timing = TIMING_REPLAYS


@gpu
@needs_gpu
def test_cold_l2_timing_is_calibrated_and_recorded(profiler):
    import cupy

    from ios_ray.costs.measurement import MeasureSettings
    from ios_ray.profile.gpu import L2_COLD, L2_WARM
    from ios_ray.runtime.gpu.program import MIN_SAMPLES, MIN_STAGE_MS
    from ios_ray.space.stage import stage_spec
    assert profiler.l2 == L2_WARM and "warm" in profiler.device().settings
    profiler.l2 = L2_COLD
    assert "L2 flushed" in profiler.device().settings
    cold = profiler._cold_timer()
    assert 0 < cold.launch_ms < 0.05                         # two events and a graph launch: microseconds
    assert 0 < cold.node_ms < 0.02                           # one more dependent node in a graph
    assert cold.scratch.nbytes >= 2 * cupy.cuda.runtime.getDeviceProperties(0)["l2CacheSize"]
    profiler.flush_bytes = 8 << 20                           # a smaller flush: a new timer, and its own rows
    assert profiler._cold_timer().scratch.nbytes == 8 << 20 and "8 MiB flushed" in profiler.device().settings
    profiler.flush_bytes = None
    g = concat_graph(256, 256)
    spec = stage_spec([[g.node_by_name()["c1"]]])
    settings = MeasureSettings(warmup=1, number=5, repeat=4)
    try:
        [c] = profiler.measure([spec], 1, settings)
    finally:
        profiler.l2 = L2_WARM
    [w] = profiler.measure([spec], 1, settings)
    assert c.latency_ms >= MIN_STAGE_MS and w.latency_ms > 0 and MIN_SAMPLES <= c.samples <= 5 * 4


def _hold_lock(path: str, seconds: float, ready) -> None:
    from ios_ray.runtime.gpu.lock import DeviceLock
    with DeviceLock(path):
        ready.set()
        time.sleep(seconds)


@gpu
@needs_gpu
def test_profiler_waits_while_another_process_holds_the_gpu(profiler):
    """Two profiling processes on one GPU never run device work at once: the profiler's device sections
    wait for the lock another process holds (here a bare child holding it for 1 s)."""
    import multiprocessing as mp

    from ios_ray.costs.measurement import MeasureSettings
    from ios_ray.runtime.gpu.lock import device_uuid, lock_path
    spec = _specs("sample", 1)[0]
    settings = MeasureSettings(warmup=1, number=2, repeat=3)
    alone = profiler.measure([spec], 1, settings)[0]
    assert profiler.lock.path == lock_path(device_uuid(0))
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    child = ctx.Process(target=_hold_lock, args=(profiler.lock.path, 1.0, ready))
    child.start()
    try:
        assert ready.wait(30)
        waited = profiler.lock.waited_s
        t0 = time.perf_counter()
        shared = profiler.measure([spec], 1, settings)[0]
        assert time.perf_counter() - t0 > 0.5 and profiler.lock.waited_s - waited > 0.5
    finally:
        child.join(30)
    assert alone.error.value == "" and shared.error.value == ""
    assert shared.latency_ms == pytest.approx(alone.latency_ms, rel=0.25)


@gpu
@needs_gpu
def test_stages_whose_conv_plans_ran_before_skip_the_eager_run():
    """Only a stage that builds a new cuDNN plan runs eagerly before its capture; the others are captured
    at once and measure the same."""
    from ios_ray.costs.measurement import MeasureSettings
    from ios_ray.profile.gpu import GpuProfiler
    from ios_ray.space.stage import stage_spec
    prof = GpuProfiler(0)
    by = concat_graph(128, 128).node_by_name()
    one, two = stage_spec([[by["c1"]]]), stage_spec([[by["c2"]]])
    both = stage_spec([[by["c1"]], [by["c2"]]])
    settings = MeasureSettings(warmup=2, number=6, repeat=6)
    first = prof.measure([one, two], 1, settings)[0]
    runs = prof.eager_runs
    assert runs == 2 and first.error.value == ""
    again = prof.measure([one, one, both], 1, settings)
    assert prof.eager_runs == runs   # c1's and c2's plans exist: nothing new to load
    assert all(m.error.value == "" for m in again)
    assert again[0].latency_ms == pytest.approx(first.latency_ms, rel=0.25)

"""The numpy reference runtime against slow, obviously-correct loop implementations.

Float32 kernels are compared with float64 loop references at rtol=1e-4, atol=1e-5 (``assert_close``).
"""
import numpy as np
import pytest

import ios_ray as ios
from ios_ray import ios_runtime
from ios_ray.graph.ir import Conv, Value
from ios_ray.graph.schedule import Stage, Strategy, greedy_schedule, sequential_schedule
from ios_ray import models
from ios_ray.runtime import (ReferenceExecutor, UnsupportedOpError, Window, conv2d, gather_inputs,
                             merged_conv_weights, pool2d, run_node)

RTOL, ATOL = 1e-4, 1e-5


def assert_close(got, want):
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# ----- naive references (loops over every output position; tiny sizes only) ---------------------

def naive_act(y, act):
    return {"relu": lambda v: np.maximum(v, 0), "identity": lambda v: v, "tanh": np.tanh,
            "sigmoid": lambda v: 1 / (1 + np.exp(-v))}[act](y)


def naive_conv(x, w, b, stride=(1, 1), padding=(0, 0), groups=1, act="identity"):
    x, w = x.astype(np.float64), w.astype(np.float64)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    og = o // groups
    xp = np.zeros((n, c, h + 2 * padding[0], wd + 2 * padding[1]))
    xp[:, :, padding[0]:padding[0] + h, padding[1]:padding[1] + wd] = x
    oh = (h + 2 * padding[0] - kh) // stride[0] + 1
    ow = (wd + 2 * padding[1] - kw) // stride[1] + 1
    y = np.zeros((n, o, oh, ow))
    for ni in range(n):
        for oi in range(o):
            g = oi // og
            for yi in range(oh):
                for xi in range(ow):
                    win = xp[ni, g * cg:(g + 1) * cg, yi * stride[0]:yi * stride[0] + kh,
                             xi * stride[1]:xi * stride[1] + kw]
                    y[ni, oi, yi, xi] = np.sum(win * w[oi]) + (b[oi] if b is not None else 0.0)
    return naive_act(y, act)


def naive_pool(x, pool_type, kernel, stride, padding):
    x = x.astype(np.float64)
    n, c, h, w = x.shape
    if pool_type == "global_avg":
        return np.array([[[[x[i, j].sum() / (h * w)]] for j in range(c)] for i in range(n)])
    fill = -np.inf if pool_type == "max" else 0.0
    xp = np.full((n, c, h + 2 * padding[0], w + 2 * padding[1]), fill)
    xp[:, :, padding[0]:padding[0] + h, padding[1]:padding[1] + w] = x
    oh = (h + 2 * padding[0] - kernel[0]) // stride[0] + 1
    ow = (w + 2 * padding[1] - kernel[1]) // stride[1] + 1
    y = np.zeros((n, c, oh, ow))
    for i in range(n):
        for j in range(c):
            for yi in range(oh):
                for xi in range(ow):
                    win = xp[i, j, yi * stride[0]:yi * stride[0] + kernel[0], xi * stride[1]:xi * stride[1] + kernel[1]]
                    y[i, j, yi, xi] = win.max() if pool_type == "max" else win.sum() / (kernel[0] * kernel[1])
    return y


# ----- kernels ------------------------------------------------------------------------------------

CONV_CASES = [
    # (C, O, kernel, stride, padding, groups, act)
    (4, 6, (3, 3), (1, 1), (1, 1), 1, "relu"),
    (4, 6, (3, 3), (2, 2), (1, 1), 1, "identity"),
    (3, 5, (5, 5), (1, 1), (2, 2), 1, "tanh"),
    (4, 6, (3, 3), (1, 1), (0, 0), 2, "sigmoid"),        # grouped
    (6, 6, (3, 3), (1, 1), (1, 1), 6, "relu"),           # depthwise
    (4, 8, (3, 3), (2, 2), (1, 1), 4, "identity"),       # depthwise, multiplier 2, stride 2
    (5, 3, (1, 7), (1, 1), (0, 3), 1, "relu"),           # asymmetric 1x7
    (5, 3, (7, 1), (1, 1), (3, 0), 1, "relu"),           # asymmetric 7x1
    (4, 6, (1, 1), (1, 1), (0, 0), 1, "relu"),           # pointwise
    (4, 6, (1, 1), (2, 2), (0, 0), 2, "identity"),       # pointwise, strided, grouped
    (4, 3, (1, 1), (1, 1), (1, 1), 1, "identity"),       # 1x1 with padding
    (3, 4, (3, 2), (2, 1), (1, 0), 1, "relu"),           # rectangular kernel, mixed stride
]


@pytest.mark.parametrize("c,o,kernel,stride,padding,groups,act", CONV_CASES)
def test_conv2d_matches_naive(c, o, kernel, stride, padding, groups, act):
    rng = np.random.default_rng(1)
    x = rand(rng, 2, c, 7, 8)
    w = rand(rng, o, c // groups, *kernel)
    b = rand(rng, o)
    got = conv2d(x, w, b, Window(stride, padding, groups), act)
    assert_close(got, naive_conv(x, w, b, stride, padding, groups, act))


def test_conv2d_reads_channel_slice_views():
    rng = np.random.default_rng(2)
    big = rand(rng, 2, 10, 6, 6)
    x = big[:, 3:7]  # non-contiguous view, as gather_inputs hands out
    w, b = rand(rng, 5, 4, 1, 1), rand(rng, 5)
    assert_close(conv2d(x, w, b), naive_conv(np.ascontiguousarray(x), w, b))
    w3 = rand(rng, 5, 4, 3, 3)
    assert_close(conv2d(x, w3, b, Window(padding=(1, 1))), naive_conv(np.ascontiguousarray(x), w3, b, padding=(1, 1)))


def test_conv2d_rejects_mismatched_weight():
    with pytest.raises(ValueError, match="channels"):
        conv2d(np.zeros((1, 4, 5, 5), np.float32), np.zeros((2, 3, 3, 3), np.float32))


def test_sigmoid_is_stable_for_large_inputs():
    x = np.array([-200.0, -20.0, 0.0, 20.0, 200.0], np.float32).reshape(1, 5, 1, 1)
    w = np.eye(5, dtype=np.float32).reshape(5, 5, 1, 1)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = conv2d(x, w, None, act="sigmoid")
    assert_close(y.ravel(), np.array([0.0, 2.0611537e-09, 0.5, 1.0, 1.0], np.float32))


POOL_CASES = [
    ("max", (3, 3), (1, 1), (1, 1)),
    ("max", (3, 3), (2, 2), (0, 0)),
    ("max", (2, 2), (2, 2), (1, 1)),
    ("avg", (3, 3), (1, 1), (1, 1)),   # padding counted in the divisor
    ("avg", (3, 3), (2, 2), (1, 1)),
    ("avg", (2, 3), (1, 2), (0, 1)),
    ("global_avg", (1, 1), (1, 1), (0, 0)),
]


@pytest.mark.parametrize("pool_type,kernel,stride,padding", POOL_CASES)
def test_pool2d_matches_naive(pool_type, kernel, stride, padding):
    x = rand(np.random.default_rng(3), 2, 3, 7, 6)
    assert_close(pool2d(x, pool_type, kernel, Window(stride, padding)), naive_pool(x, pool_type, kernel, stride, padding))


def test_max_pool_padding_is_minus_infinity():
    x = np.full((1, 1, 3, 3), -5.0, np.float32)
    assert np.all(pool2d(x, "max", (3, 3), Window((1, 1), (1, 1))) == -5.0)  # zero padding would give 0
    assert np.allclose(pool2d(x, "avg", (3, 3), Window((1, 1), (1, 1)))[0, 0, 0, 0], -5.0 * 4 / 9)


# ----- nodes: gather semantics, sepconv, element --------------------------------------------------

def _block_with_input(shape=(6, 5, 5)):
    v = ios.placeholder(shape, name="x")
    return v, ios.Block(enter_node=v.node)


def test_gather_sums_terms_concats_and_slices():
    rng = np.random.default_rng(4)
    v, block = _block_with_input((6, 5, 5))
    a = ios.relu(block, [[v]], name="a")
    b = ios.pool2d(block, [[v]], "max", (3, 3), (1, 1), (1, 1), name="b")
    out = ios.identity(block, [[a[0:2], b[2:4], v[4:6]], [b], [a[1:4]]], is_exit=True, name="out")
    x = rand(rng, 2, 6, 5, 5)
    xa, xb = np.maximum(x, 0), rand(rng, 2, 6, 5, 5)
    env = {v.node: x, a.node: xa, b.node: xb}
    want = np.concatenate([xa[:, 0:2] + xb[:, 2:4] + x[:, 4:6], xb, xa[:, 1:4]], axis=1)
    got = gather_inputs(out.node, env)
    assert got.shape == (2, 2 + 6 + 3, 5, 5)
    assert_close(got, want)
    assert_close(run_node(out.node, env), want)
    # the inputs were not modified by summing
    assert_close(env[a.node], np.maximum(x, 0))


def test_gather_of_uncomputed_input_names_it():
    v, block = _block_with_input()
    a = ios.relu(block, [[v]], name="a")
    out = ios.identity(block, [[a]], is_exit=True, name="out")
    with pytest.raises(ValueError, match="Relu a"):
        run_node(out.node, {v.node: np.zeros((1, 6, 5, 5), np.float32)})


def test_relu_of_concat_and_conv_of_term_sum():
    rng = np.random.default_rng(5)
    v, block = _block_with_input((6, 5, 5))
    r = ios.relu(block, [[v[0:3]], [v[3:6], v[0:3]]], name="r")
    c = ios.conv2d(block, [[v[0:3], v[3:6]]], 4, (3, 3), padding=(1, 1), act="tanh", is_exit=True, name="c")
    rng_w = np.random.default_rng(0)
    c.node.init_weights(rng_w)
    x = rand(rng, 1, 6, 5, 5)
    env = {v.node: x}
    assert_close(run_node(r.node, env), np.maximum(np.concatenate([x[:, :3], x[:, 3:] + x[:, :3]], 1), 0))
    want = naive_conv(x[:, :3] + x[:, 3:], c.node.weight, c.node.bias, (1, 1), (1, 1), 1, "tanh")
    assert_close(run_node(c.node, env), want)


@pytest.mark.parametrize("pre_act,act,stride", [("relu", "identity", (1, 1)), ("identity", "relu", (2, 2))])
def test_sep_conv_matches_naive(pre_act, act, stride):
    rng = np.random.default_rng(6)
    v, block = _block_with_input((4, 7, 7))
    s = ios.sep_conv(block, [[v]], 6, (5, 5), stride, (2, 2), act=act, pre_act=pre_act, is_exit=True, name="s")
    s.node.init_weights(np.random.default_rng(1))
    p = s.node.params
    x = rand(rng, 2, 4, 7, 7)
    xin = np.maximum(x, 0) if pre_act == "relu" else x
    dw = naive_conv(xin, p["dw_weight"], p["dw_bias"], stride, (2, 2), groups=4)
    want = naive_conv(dw.astype(np.float32), p["pw_weight"], p["pw_bias"], act=act)
    assert_close(run_node(s.node, {v.node: x}), want)


def test_element_mul_and_add_use_each_term_as_an_operand():
    rng = np.random.default_rng(7)
    v, block = _block_with_input((6, 4, 4))
    m = ios.multiply(block, [[v[0:2]], [v[2:4], v[4:6]], [v[0:2]]], name="m")
    s = ios.add(block, [[v[0:2]], [v[2:4]]], is_exit=True, name="s")
    x = rand(rng, 2, 6, 4, 4)
    env = {v.node: x}
    assert_close(run_node(m.node, env), x[:, 0:2] * (x[:, 2:4] + x[:, 4:6]) * x[:, 0:2])
    assert_close(run_node(s.node, env), x[:, 0:2] + x[:, 2:4])


def test_missing_weights_name_the_node_and_the_fix():
    v, block = _block_with_input()
    c = ios.conv2d(block, [[v]], 4, (3, 3), padding=(1, 1), is_exit=True, name="conv_a")
    with pytest.raises(ValueError, match=r"conv_a.*init_weights"):
        run_node(c.node, {v.node: np.zeros((1, 6, 5, 5), np.float32)})


def test_placeholder_is_not_run():
    v, _ = _block_with_input()
    with pytest.raises(UnsupportedOpError):
        run_node(v.node, {})


# ----- merged conv weights ------------------------------------------------------------------------

MERGE_CASES = [
    [((1, 1), (0, 0)), ((3, 3), (1, 1))],
    [((1, 7), (0, 3)), ((7, 1), (3, 0)), ((3, 3), (1, 1))],
    [((5, 5), (2, 2)), ((1, 1), (0, 0)), ((3, 3), (1, 1))],
]


@pytest.mark.parametrize("members", MERGE_CASES)
@pytest.mark.parametrize("stride", [(1, 1), (2, 2)])
def test_merged_conv_output_split_equals_member_outputs(members, stride):
    from ios_ray.graph.merge import merged_conv_params
    v, block = _block_with_input((5, 9, 9))
    convs = [ios.conv2d(block, [[v]], 3 + i, k, stride, p, name=f"c{i}").node for i, (k, p) in enumerate(members)]
    rng = np.random.default_rng(8)
    for c in convs:
        c.init_weights(rng)
    params = merged_conv_params(convs)
    weight, bias = merged_conv_weights(convs, params)
    merged = Conv("merged", [[Value(v.node)]], **params)
    merged.set_shape()
    merged.weight, merged.bias = weight, bias
    x = rand(rng, 2, 5, 9, 9)
    env = {v.node: x}
    out = run_node(merged, env)
    begin = 0
    for c in convs:
        assert_close(out[:, begin:begin + c.out_channels], run_node(c, env))
        begin += c.out_channels
    assert begin == out.shape[1]


def test_merged_conv_weights_need_member_weights():
    v, block = _block_with_input((5, 9, 9))
    convs = [ios.conv2d(block, [[v]], 3, (3, 3), padding=(1, 1), name=f"c{i}").node for i in range(2)]
    with pytest.raises(ValueError, match="init_weights"):
        merged_conv_weights(convs)


# ----- executor -----------------------------------------------------------------------------------

def sample_network(c=375, hw=15):
    """The IOS sample network with weights; ``c``/``hw`` shrink it with the same topology."""
    graph = models.sample_network(c, hw)
    graph.init_weights()
    return graph


def sample_expected(graph, x):
    """The sample network computed by hand from its weights (naive convs for tiny sizes)."""
    n = graph.node_by_name()
    conv = naive_conv if x.shape[1] <= 8 else (lambda x, w, b, s, p, g, a: conv2d(x, w, b, Window(s, p, g), a))

    def c(name, inp):
        node = n[name]
        return np.asarray(conv(inp, node.weight, node.bias, (1, 1), (1, 1), 1, "relu"), np.float32)
    return np.concatenate([c("conv4", c("conv1", x)), c("conv2", x), c("conv3", x)], axis=1)


IOS_STAGES = [Stage((("conv1",), ("conv2",))), Stage((("conv4",), ("conv3",))), Stage((("concat",),))]
CHAIN_STAGES = [Stage((("conv1", "conv4"), ("conv2",), ("conv3",))), Stage((("concat",),))]


def _schedules():
    return {"sequential": lambda g: sequential_schedule(g), "greedy": lambda g: greedy_schedule(g),
            "ios": lambda g: setattr(g.blocks[0], "stages", list(IOS_STAGES)),
            "chain_in_group": lambda g: setattr(g.blocks[0], "stages", list(CHAIN_STAGES))}


@pytest.mark.parametrize("schedule", sorted(_schedules()))
def test_small_sample_network_same_output_under_every_schedule(schedule):
    graph = sample_network(c=4, hw=6)
    _schedules()[schedule](graph)
    x = rand(np.random.default_rng(9), 2, 4, 6, 6)
    out = ReferenceExecutor(graph, 2).run(x)
    assert out.shape == (2, 20, 6, 6)
    assert_close(out, sample_expected(graph, x))


def test_real_size_sample_network_schedules_agree():
    graph = sample_network()
    x = np.random.default_rng(10).standard_normal((1, 375, 15, 15))
    outs = []
    for schedule in ("sequential", "greedy", "ios"):
        _schedules()[schedule](graph)
        outs.append(ios_runtime.graph_inference(graph, batch_size=1, input=x))
    assert outs[0].shape == (1, 1875, 15, 15)
    want = sample_expected(graph, x.astype(np.float32))
    for out in outs:
        assert_close(out, want)


def test_profiled_run_reports_one_time_per_stage():
    graph = sample_network(c=4, hw=6)
    graph.blocks[0].stages = list(IOS_STAGES)
    ex = ReferenceExecutor(graph, 1)
    out, times = ex.run_profiled(np.ones((1, 4, 6, 6)))
    assert ex.num_stages == 3 and len(times) == 3 and all(t > 0 for t in times)
    assert_close(out, ex.run(np.ones((1, 4, 6, 6))))


@pytest.mark.parametrize("stages,match", [
    ([Stage((("conv1",), ("conv2",))), Stage((("conv4",), ("conv3",)))], "misses"),
    ([Stage((("conv1",), ("conv2",), ("conv3",))), Stage((("conv4", "conv1"),)), Stage((("concat",),))], "twice"),
    ([Stage((("conv1",), ("conv4",))), Stage((("conv2",), ("conv3",))), Stage((("concat",),))], "dependency"),
    ([Stage((("conv1", "nope"),))], "not in this block"),
])
def test_bad_schedule_raises(stages, match):
    graph = sample_network(c=4, hw=6)
    graph.blocks[0].stages = stages
    with pytest.raises(ValueError, match=match):
        ReferenceExecutor(graph, 1)
    with pytest.raises(ValueError, match=match):
        ios_runtime.graph_inference(graph, 1, np.zeros((1, 4, 6, 6)))


def test_missing_weights_and_wrong_input_shape():
    graph = sample_network(c=4, hw=6)
    graph.node_by_name()["conv3"].params["bias"] = None
    with pytest.raises(ValueError, match=r"conv3.*init_weights\(\)"):
        ReferenceExecutor(graph, 1, stages=[IOS_STAGES])
    graph.init_weights()
    ex = ReferenceExecutor(graph, 2, stages=[IOS_STAGES])
    with pytest.raises(ValueError, match=r"\(1, 4, 6, 6\).*expected \(2, 4, 6, 6\)"):
        ex.run(np.zeros((1, 4, 6, 6)))


def test_unscheduled_graph_runs_sequentially_without_being_modified():
    graph = sample_network(c=4, hw=6)
    assert graph.blocks[0].stages is None
    x = rand(np.random.default_rng(11), 1, 4, 6, 6)
    assert_close(ios_runtime.graph_inference(graph, 1, x), sample_expected(graph, x))
    seq, stage = ios_runtime.graph_latency(graph, batch_size=1, warmup=0, number=2, repeat=3, profile_stage=True)
    assert len(seq) == 3 and len(stage) == 3 * 5
    assert graph.blocks[0].stages is None
    with pytest.raises(ValueError, match="no schedule"):
        ReferenceExecutor(graph, 1)


def test_graph_latency_shapes_like_ios():
    graph = sample_network(c=4, hw=6)
    graph.blocks[0].stages = list(IOS_STAGES)
    # the reference runtime's stages run back to back, so their times add up to at most the whole run
    seq = ios_runtime.graph_latency(graph, batch_size=2, warmup=1, number=2, repeat=4, device="cpu")
    assert isinstance(seq, list) and len(seq) == 4 and all(np.isfinite(t) and t > 0 for t in seq)
    seq, stage = ios_runtime.graph_latency(graph, batch_size=1, repeat=2, number=1, profile_stage=True, device="cpu")
    assert np.reshape(stage, (2, -1)).shape == (2, 3)
    assert sum(stage[:3]) <= seq[0] * 1.0 + 1e-9


def test_device_selection():
    graph = sample_network(c=4, hw=6)
    from ios_ray.runtime.gpu import available
    assert ios_runtime.device_name(graph, 1).startswith("gpu" if available() else "cpu:")  # AUTO: the GPU if one works
    assert ios_runtime.device_name(graph, 1, device="gpu").startswith("gpu")
    with pytest.raises(ValueError, match="device must be one of"):
        ios_runtime.graph_inference(graph, 1, np.zeros((1, 4, 6, 6)), device="tpu")
    x = rand(np.random.default_rng(13), 1, 4, 6, 6)
    assert_close(ios_runtime.graph_inference(graph, 1, x, device="cpu"),
                 ios_runtime.graph_inference(graph, 1, x, device=ios_runtime.Device.AUTO))


def test_gpu_device_without_cuda_is_a_clear_error():
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed: the GPU executor may run here")
    except ImportError:
        pass
    graph = sample_network(c=4, hw=6)
    with pytest.raises((ValueError, RuntimeError), match="CuPy|GPU|gpu"):
        ios_runtime.graph_inference(graph, 1, np.zeros((1, 4, 6, 6)), device="gpu")


def test_two_blocks_and_merge_stage():
    rng = np.random.default_rng(12)
    v = ios.placeholder((3, 8, 8), name="x")
    b1 = ios.Block(enter_node=v.node)
    p = ios.pool2d(b1, [[v]], "max", (3, 3), (2, 2), (1, 1), name="pool")
    s = ios.sep_conv(b1, [[p]], 5, (3, 3), name="sep")
    out1 = ios.identity(b1, [[p], [s]], is_exit=True, name="cat1")
    b2 = ios.Block(enter_node=out1.node)
    merged = ios.conv2d(b2, [[out1]], 6, (3, 3), padding=(1, 1), act="sigmoid", name="merged")
    g = ios.pool2d(b2, [[merged[0:3]], [merged[3:6]]], "global_avg", name="gap")
    ios.add(b2, [[g[0:3]], [g[3:6]]], is_exit=True, name="out")
    graph = ios.Graph("two_blocks", v.node, [b1, b2])
    graph.init_weights(3)
    graph.sequential_schedule()
    graph.blocks[1].stages = [Stage((("merged",),), Strategy.MERGE), Stage((("gap",),)), Stage((("out",),))]
    x = rand(rng, 2, 3, 8, 8)
    got = ReferenceExecutor(graph, 2).run(x)
    n = graph.node_by_name()
    px = naive_pool(x, "max", (3, 3), (2, 2), (1, 1)).astype(np.float32)
    sp = n["sep"].params
    sx = naive_conv(naive_conv(np.maximum(px, 0), sp["dw_weight"], sp["dw_bias"], (1, 1), (1, 1), 3).astype(np.float32),
                    sp["pw_weight"], sp["pw_bias"]).astype(np.float32)
    cat = np.concatenate([px, sx], axis=1)
    m = naive_conv(cat, n["merged"].weight, n["merged"].bias, (1, 1), (1, 1), 1, "sigmoid")
    gap = m.mean(axis=(2, 3), keepdims=True)
    assert got.shape == (2, 3, 1, 1)
    assert_close(got, gap[:, :3] + gap[:, 3:])


def test_identity_exit_does_not_alias_the_callers_input():
    v = ios.placeholder((3, 4, 4), name="x")
    block = ios.Block(enter_node=v.node)
    ios.identity(block, [[v]], is_exit=True, name="same")
    graph = ios.Graph("passthrough", v.node, [block])
    x = np.ones((1, 3, 4, 4), np.float32)
    out = ios_runtime.graph_inference(graph, 1, x)
    assert_close(out, x)
    out[...] = 5.0
    assert np.all(x == 1.0)


def test_stage_latency_times_a_stage_without_touching_its_weights():
    graph = sample_network(c=4, hw=6)
    n = graph.node_by_name()
    before = n["conv1"].weight.copy()
    lat = ios_runtime.stage_latency([[n["conv1"], n["conv4"]], [n["conv2"]]], batch_size=2, warmup=0, number=2,
                                    repeat=3)
    assert len(lat) == 3 and all(np.isfinite(t) and t > 0 for t in lat)
    seq, per_stage = ios_runtime.stage_latency([[n["conv3"]]], repeat=2, profile_stage=True)
    assert seq == per_stage and len(seq) == 2
    np.testing.assert_array_equal(n["conv1"].weight, before)


@pytest.mark.parametrize("bad", [[], [[]], "flat"])
def test_stage_latency_of_an_empty_or_flat_stage_is_a_clear_error(bad):
    """Regression: [] timed nothing and returned latencies; a flat [node] raised TypeError deep inside."""
    n = sample_network(c=4, hw=6).node_by_name()
    stage = [n["conv1"]] if bad == "flat" else bad
    with pytest.raises(ValueError, match="non-empty list of non-empty groups"):
        ios_runtime.stage_latency(stage, warmup=0, number=1, repeat=1)

"""ONNX import: outputs equal ONNX Runtime's (CPU) before and after ``optimize``; blocks found
automatically; folding; every unsupported case gets its one error."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import ios_ray
from ios_ray.graph.ir import Conv
from ios_ray.graph.ops_extra import ChannelMul, Linear, ScaleShift
from ios_ray.ios_runtime import graph_inference
from ios_ray.onnx_import import OnnxImportError, from_onnx, supported_op_types

from onnx_models import MODELS, ModelBuilder

RTOL = 1e-4


def ort_run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def assert_close(y: np.ndarray, expected: np.ndarray) -> None:
    y = y.reshape(expected.shape)
    err = np.abs(y - expected).max() / max(np.abs(expected).max(), 1e-30)
    assert err <= RTOL, f"relative error {err:.2e}"


def _input(graph, batch: int = 2) -> np.ndarray:
    return np.random.default_rng(7).standard_normal((batch, *graph.input.output_shape)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_outputs_equal_onnx_runtime_before_and_after_optimize(name):
    model = MODELS[name]()
    graph = from_onnx(model)
    x = _input(graph)
    expected = ort_run(model, x)
    assert_close(graph_inference(graph, 2, x, device="cpu"), expected)
    opt = ios_ray.optimize(graph, batch_size=2, cost="analytic:H200", compute_weight=True)
    assert_close(graph_inference(opt, 2, x, device="cpu"), expected)


def test_the_test_models_use_every_supported_op_type():
    """The ORT comparisons cover every converter (Constant is covered by its own test below)."""
    used = {n.op_type for build in MODELS.values() for n in build().graph.node}
    assert set(supported_op_types()) - used == {"Constant"}


def test_constant_nodes_feed_like_initializers():
    b = ModelBuilder()
    shift = b.op("Constant", [], value=helper.make_tensor("c", TensorProto.FLOAT, [1, 4, 1, 1], [1, 2, 3, 4]))
    y = b.op("Add", [b.conv("x", 2, 4, k=1), shift])
    model = b.model(["N", 2, 5, 5], y, ["N", 4, 5, 5])
    graph = from_onnx(model)
    x = _input(graph)
    assert_close(graph_inference(graph, 2, x, device="cpu"), ort_run(model, x))
    assert [type(n) for n in graph.nodes()[1:]] == [Conv]   # the per-channel Add folds into the conv's bias


def test_batch_norm_and_activations_fold_into_their_conv():
    graph = from_onnx(MODELS["mobile_block"]())
    kinds = [type(n).__name__ for n in graph.nodes()[1:]]
    # the input's BN stays a ScaleShift; conv+BN+ReLU is one conv; x * sigmoid(x) is one SiLU
    assert kinds[0] == "ScaleShift" and kinds.count("ScaleShift") == 1
    convs = [n for n in graph.nodes() if isinstance(n, Conv)]
    assert [c.act for c in convs] == ["relu", "relu6", "hardswish", "relu", "identity"]
    assert [c.groups for c in convs][1] == 8 and convs[2].dilation == (2, 2) and convs[0].pad_end == (2, 1)
    assert sum(getattr(n, "act_type", None) == "silu" for n in graph.nodes()) == 1
    assert any(isinstance(n, ChannelMul) for n in graph.nodes())
    assert isinstance(graph.blocks[-1].exit_node, Linear)


def test_blocks_are_the_single_entry_single_exit_regions():
    graph = from_onnx(MODELS["resnet_inception"]())
    exits = [b.exit_node for b in graph.blocks]
    # cuts: stem conv, max pool, each residual add's ReLU, the concat, ... the head
    types = [type(e).__name__ for e in exits]
    # stem conv | max pool | two convs + the residual add | its ReLU | the projection block | its ReLU
    assert types[:6] == ["Conv", "Pool", "Element", "Relu", "Element", "Relu"]
    assert [len(b.nodes) for b in graph.blocks[:6]] == [1, 1, 3, 1, 3, 1]
    # the Inception module: branches of 1, 2, 1 and 3 operators (ReLU and Tanh folded into their convs,
    # the general Clip kept) and their concat
    assert types[6] == "Identity" and len(graph.blocks[6].nodes) == 8
    # the constants after the concat: four ScaleShifts composed into one
    assert types[7:] == ["ScaleShift", "Pool", "Linear"]
    for block in graph.blocks:   # nothing inside a block is read from outside it
        inside = {id(n) for n in block.nodes}
        for later in graph.blocks[graph.blocks.index(block) + 1:]:
            for n in later.nodes:
                assert all(id(v.node) not in inside or v.node is block.exit_node for t in n.inputs for v in t)


def test_long_blocks_split_into_parts():
    from ios_ray.space.options import SpaceOptions
    from ios_ray.space.parts import graph_parts
    graph = from_onnx(MODELS["resnet_inception"]())
    longest = max(range(len(graph.blocks)), key=lambda i: len(graph.blocks[i].nodes))
    parts = graph_parts(graph, SpaceOptions(max_part_size=3))[longest]
    assert len(parts) >= 3 and all(len(p.names) <= 3 for p in parts)


def test_import_from_a_file_names_the_graph_after_it(tmp_path):
    path = tmp_path / "tiny_net.onnx"
    onnx.save(MODELS["mobile_block"](), str(path))
    graph = from_onnx(str(path))
    assert graph.name == "tiny_net" and graph.has_weights()
    with pytest.raises(OnnxImportError, match="no such file"):
        from_onnx(str(tmp_path / "missing.onnx"))


# ----- errors ----------------------------------------------------------------------------------------

def _one_op(op_type: str, inputs, shape=("N", 4, 6, 6), out=("N", 4, 6, 6), **attrs) -> onnx.ModelProto:
    b = ModelBuilder()
    y = b.op(op_type, [i if isinstance(i, str) else b.const(i) for i in inputs], **attrs)
    return b.model(shape, y, out)


def _two_inputs() -> onnx.ModelProto:
    b = ModelBuilder()
    y = b.op("Add", ["x", "z"])
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4, 6, 6]) for n in ("x", "z")]
    return b.model(None, y, ["N", 4, 6, 6], inputs=vi)


W4 = np.ones((4, 4, 3, 3), np.float32)
UNSUPPORTED = {
    "an unknown op type": (lambda: _one_op("Softmax", ["x"]), r"'Softmax_\d+' \(Softmax\): op type not supported; "
                                                              r"supported op types: Add, AveragePool"),
    "a 1-d convolution": (lambda: _one_op("Conv", ["x", np.ones((4, 4, 3), np.float32)]), "2-d convolutions only"),
    "a 3-d input": (lambda: _one_op("Relu", ["x"], shape=("N", 4, 6), out=("N", 4, 6)), r"float32 \(N, C, H, W\)"),
    "a weight computed at run time": (lambda: _one_op("Conv", ["x", "x"]), "the weight .* must be a constant"),
    "concat along H": (lambda: _one_op("Concat", ["x", "x"], out=("N", 4, 12, 6), axis=2), "axis 1"),
    "a spatial broadcast": (lambda: _one_op("Mul", ["x", np.ones((1, 1, 6, 6), np.float32)]),
                            "does not broadcast per channel"),
    "two inputs": (_two_inputs, "exactly one input"),
    "int64 input": (lambda: _int_input(), "must be a float32"),
    "Gemm transA": (lambda: _gemm_trans_a(), "transA=1"),
    "avg pool ceil mode counting pads": (lambda: _one_op("AveragePool", ["x"], out=("N", 4, 4, 4), kernel_shape=[3, 3],
                                                         strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1,
                                                         count_include_pad=1), "ceil_mode with count_include_pad"),
    "training BN": (lambda: _training_bn(), "training_mode"),
    "a reshape to 4-d": (lambda: _one_op("Reshape", ["x", np.array([0, 2, 12, 6], np.int64)], out=("N", 2, 12, 6)),
                         "only a reshape to"),
    "a pool padding over half its kernel": (lambda: _one_op("MaxPool", ["x"], out=("N", 4, 8, 8), kernel_shape=[3, 3],
                                                            pads=[2, 2, 2, 2]), r"\(MaxPool\): pool2d .*at most half the kernel"),
    "flatten axis 2": (lambda: _one_op("Flatten", ["x"], out=("N", 24, 6), axis=2), "axis=1"),
}


def _int_input():
    b = ModelBuilder()
    y = b.op("Relu", ["x"])
    vi = [helper.make_tensor_value_info("x", TensorProto.INT64, ["N", 4, 6, 6])]
    return b.model(None, y, ["N", 4, 6, 6], inputs=vi)


def _gemm_trans_a():
    b = ModelBuilder()
    y = b.op("Gemm", [b.op("Flatten", ["x"]), b.weight(144, 3)], transA=1)
    return b.model(["N", 4, 6, 6], y, ["N", 3])


def _training_bn():
    b = ModelBuilder()
    y = b.op("BatchNormalization", ["x", b.weight(4), b.weight(4), b.weight(4), b.weight(4, positive=True)],
             training_mode=0)
    m = b.model(["N", 4, 6, 6], y, ["N", 4, 6, 6])
    for a in m.graph.node[0].attribute:
        if a.name == "training_mode":
            a.i = 1
    return m


@pytest.mark.parametrize("case", sorted(UNSUPPORTED))
def test_unsupported_cases_get_one_clear_error(case):
    build, match = UNSUPPORTED[case]
    model = build()
    with pytest.raises(OnnxImportError, match=match):
        from_onnx(model)


def test_mismatched_shapes_name_the_node():
    b = ModelBuilder()
    pooled = b.op("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2])
    y = b.op("Add", [pooled, b.op("Relu", [b.conv("x", 4, 4, k=1)])])
    model = helper.make_model(helper.make_graph(
        b.nodes, "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6, 6])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)], b.inits),
        opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(OnnxImportError, match=r"'Add_\d+' \(Add\): shapes \(N, 4, 3, 3\) and \(N, 4, 6, 6\)"):
        from_onnx(model)


# ----- the command line ------------------------------------------------------------------------------

def test_cli_optimizes_an_onnx_file_and_runs_it_with_its_weights(tmp_path, capsys):
    from ios_ray.cli import main
    from ios_ray.graph.serialize import load_graph, load_weights
    path = tmp_path / "net.onnx"
    model = MODELS["resnet_inception"]()
    onnx.save(model, str(path))
    out = tmp_path / "net.json"
    assert main(["optimize", str(path), "--workers", "0", "--cost", "analytic", "--no-progress",
                 "--out", str(out)]) == 0
    opt = load_graph(str(out))
    load_weights(opt, str(tmp_path / "net.npz"))   # the model's own weights, written beside the schedule
    x = _input(opt, 1)
    assert_close(graph_inference(opt, 1, x, device="cpu"), ort_run(model, x))
    assert main(["run", str(out), "--weights", str(tmp_path / "net.npz"), "--number", "1", "--repeat", "1"]) == 0


def test_cli_refuses_an_unsupported_onnx_file_in_one_line(tmp_path, capsys):
    from ios_ray.cli import main
    path = tmp_path / "bad.onnx"
    onnx.save(UNSUPPORTED["an unknown op type"][0](), str(path))
    assert main(["optimize", str(path), "--workers", "0", "--cost", "analytic", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ios-ray: error: ONNX node") and "Softmax" in err and "\n" not in err

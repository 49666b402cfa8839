"""Small ONNX models written with ``onnx.helper`` for the import tests (no PyTorch needed).

``ModelBuilder`` keeps the nodes and initializers; each model function returns an ``onnx.ModelProto``
that ``onnx.checker`` accepts and ONNX Runtime runs. Together the models use every op type
``ios_ray.onnx_import`` supports (``test_onnx_import`` checks that).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8


class ModelBuilder:
    """Nodes and initializers of one ONNX graph, with generated tensor names."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: List[onnx.NodeProto] = []
        self.inits: List[onnx.TensorProto] = []
        self._count = 0

    def _name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def const(self, value: np.ndarray, prefix: str = "k") -> str:
        name = self._name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, *shape: int, positive: bool = False) -> str:
        a = self.rng.standard_normal(shape).astype(np.float32) * np.float32(1.0 / np.sqrt(max(1, np.prod(shape[1:]))))
        return self.const(np.abs(a) + np.float32(0.5) if positive else a, "w")

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, **attrs) -> str:
        outs = [self._name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self._name(f"{op_type}_"), **attrs))
        return outs[0]

    def conv(self, x: str, cin: int, cout: int, k: int = 3, bias: bool = True, **attrs) -> str:
        group = attrs.get("group", 1)
        ins = [x, self.weight(cout, cin // group, k, k)] + ([self.weight(cout)] if bias else [])
        return self.op("Conv", ins, **attrs)

    def bn(self, x: str, c: int) -> str:
        return self.op("BatchNormalization", [x, self.weight(c, positive=True), self.weight(c), self.weight(c),
                                              self.weight(c, positive=True)], epsilon=1e-3)

    def model(self, input_shape: Sequence, output: str, out_shape: Sequence, name: str = "m",
              inputs: Optional[List[onnx.ValueInfoProto]] = None) -> onnx.ModelProto:
        ins = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))]
        outs = [helper.make_tensor_value_info(output, TensorProto.FLOAT, list(out_shape))]
        graph = helper.make_graph(self.nodes, name, ins, outs, self.inits)
        # IR version 8 (opset 17's era): an older ONNX Runtime (1.30 refuses IR 14) reads it too
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
        onnx.checker.check_model(m)
        return m


def mobile_block() -> onnx.ModelProto:
    """A MobileNet/EfficientNet-like net: standalone BN, depthwise path with ReLU6, dilated conv with
    HardSwish, SiLU, an SE block (HardSigmoid gate), ceil-mode MaxPool beside an AveragePool without the
    padding, a concat, Flatten and a Gemm head with bias."""
    b = ModelBuilder(1)
    x = b.bn("x", 3)                                              # nothing before it: a ScaleShift
    c1 = b.op("Relu", [b.bn(b.conv(x, 3, 8, bias=False, pads=[1, 0, 2, 1]), 8)])
    dw = b.conv(c1, 8, 8, group=8, pads=[1, 1, 1, 1])
    dw6 = b.op("Clip", [dw, b.const(np.float32(0)), b.const(np.float32(6))])
    dil = b.op("HardSwish", [b.conv(c1, 8, 8, pads=[2, 2, 2, 2], dilations=[2, 2])])
    s = b.op("Add", [dw6, dil])
    silu = b.op("Mul", [s, b.op("Sigmoid", [s])])
    gap = b.op("GlobalAveragePool", [silu])
    gate = b.op("HardSigmoid", [b.conv(b.op("Relu", [b.conv(gap, 8, 4, k=1)]), 4, 8, k=1)], alpha=1 / 6, beta=0.5)
    se = b.op("Mul", [silu, gate])
    mp = b.op("MaxPool", [se], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    ap = b.op("AveragePool", [se], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=0)
    cat = b.op("Concat", [mp, ap], axis=1)
    y = b.op("Gemm", [b.op("Flatten", [cat]), b.weight(10, 16 * 6 * 6), b.weight(10)], transB=1)
    return b.model(["N", 3, 11, 13], y, ["N", 10], "mobile_block")


def resnet_inception() -> onnx.ModelProto:
    """Residual adds, an Inception-like module of four branches (one a padded AveragePool counting its
    padding), SAME_UPPER padding, Tanh, a general Clip, constants (per-channel Mul, scalar Sub and Div,
    per-channel Add), Identity, Dropout, a Reshape to (N, C) and a MatMul + Add head followed by Relu."""
    b = ModelBuilder(2)
    stem = b.op("Relu", [b.bn(b.conv("x", 3, 16, k=3, strides=[2, 2], auto_pad="SAME_UPPER"), 16)])
    mp = b.op("MaxPool", [stem], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    # a residual block, then one with a projection shortcut
    r = b.bn(b.conv(b.op("Relu", [b.bn(b.conv(mp, 16, 16, bias=False, pads=[1, 1, 1, 1]), 16)]), 16, 16,
                    bias=False, pads=[1, 1, 1, 1]), 16)
    r1 = b.op("Relu", [b.op("Add", [r, mp])])
    main = b.bn(b.conv(r1, 16, 24, pads=[1, 1, 1, 1]), 24)
    proj = b.bn(b.conv(r1, 16, 24, k=1), 24)
    r2 = b.op("Relu", [b.op("Add", [main, proj])])
    # an Inception-like module
    b1 = b.op("Relu", [b.conv(r2, 24, 8, k=1)])
    b2 = b.op("Relu", [b.conv(b.op("Relu", [b.conv(r2, 24, 6, k=1)]), 6, 8, k=3, pads=[1, 1, 1, 1])])
    b3 = b.op("Tanh", [b.conv(r2, 24, 8, k=5, pads=[2, 2, 2, 2])])
    b4 = b.op("Clip", [b.conv(b.op("AveragePool", [r2], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1),
                              24, 8, k=1), b.const(np.float32(-0.5)), b.const(np.float32(0.75))])
    cat = b.op("Concat", [b1, b2, b3, b4], axis=1)
    scaled = b.op("Mul", [cat, b.const(b.rng.uniform(0.5, 1.5, (1, 32, 1, 1)).astype(np.float32))])
    shifted = b.op("Div", [b.op("Sub", [scaled, b.const(np.float32(0.25))]), b.const(np.float32(2.0))])
    biased = b.op("Add", [b.const(b.rng.standard_normal((32, 1, 1)).astype(np.float32)), shifted])
    gap = b.op("Identity", [b.op("GlobalAveragePool", [biased])])
    flat = b.op("Reshape", [b.op("Dropout", [gap]), b.const(np.array([0, -1], np.int64))])
    head = b.op("Add", [b.op("MatMul", [flat, b.weight(32, 7)]), b.const(b.rng.standard_normal(7).astype(np.float32))])
    y = b.op("Relu", [head])
    return b.model(["N", 3, 15, 15], y, ["N", 7], "resnet_inception")


MODELS = {"mobile_block": mobile_block, "resnet_inception": resnet_inception}

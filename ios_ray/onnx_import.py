"""ONNX models as ios_ray graphs: ``from_onnx(path_or_model) -> Graph``.

Data flow::

    .onnx file / ModelProto --onnx.load--> nodes in dependency order, initializers (real weights)
      --one converter per op type (CONVERTERS)--> flat IR nodes (Conv, Pool, Element, Linear, ...),
                                                   constants folded where both operands are constant
      --graph/fuse.py--> BatchNormalization, activations and SiLU folded into their producers
      --graph/blocks.py--> the live operators cut into IOS blocks (single-entry, single-exit regions)
      --> Graph (long blocks are split into parts later, by the state space's ``max_part_size``)

A tensor of the model is either a constant (an initializer or a ``Constant`` node: numpy) or an
activation: an IR ``Value`` of shape (C, H, W) per image, with the ONNX shape it stands for (without the
batch): ``(C, H, W)``, or ``(F,)`` for a flattened tensor, whose Value is the unflattened (C, H, W) with
C*H*W = F (ONNX flattens in C, H, W order, which is the order the IR's channels-outermost layout keeps,
so concatenating, adding or feeding such a Value to a ``Linear`` needs no copy).

Unsupported operators and attributes raise one ``OnnxImportError`` naming the node, its op type and what
is supported, before any graph is returned. Pure: imports onnx and numpy, never ray or cupy.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .graph.blocks import live_nodes, split_blocks
from .graph.compound import Activation
from .graph.fuse import fuse
from .graph.ir import Conv, Element, Graph, Identity, Node, Placeholder, Pool, Relu, Value
from .graph.ops_extra import ChannelMul, Linear, ScaleShift

FLOAT_MAX = float(np.finfo(np.float32).max)   # an absent Clip bound (JSON has no infinity)


class OnnxImportError(ValueError):
    """A model ios_ray cannot import: names the node, its op type and what is supported."""


@dataclass(frozen=True)
class Act:
    """An activation tensor: the IR value holding it and its ONNX shape without the batch dimension."""
    value: Value
    shape: Tuple[int, ...]

    @property
    def ir_shape(self) -> Tuple[int, int, int]:
        return (self.value.length, *self.value.node.output_shape[1:])


Tensor = Union[Act, np.ndarray]


@dataclass
class _Node:
    """What a converter sees of one ONNX node: its name, op type, inputs (None where omitted), attributes."""
    name: str
    op_type: str
    inputs: List[Optional[Tensor]]
    attrs: Dict[str, object]

    def error(self, message: str) -> OnnxImportError:
        return OnnxImportError(f"ONNX node {self.name!r} ({self.op_type}): {message}")

    def act(self, i: int = 0) -> Act:
        t = self.inputs[i] if i < len(self.inputs) else None
        if not isinstance(t, Act):
            raise self.error(f"input {i} must be a computed tensor, got {'nothing' if t is None else 'a constant'}")
        return t

    def const(self, i: int, what: str) -> Optional[np.ndarray]:
        """Input ``i`` as a constant (None when omitted); a computed tensor there is an error."""
        t = self.inputs[i] if i < len(self.inputs) else None
        if isinstance(t, Act):
            raise self.error(f"{what} (input {i}) must be a constant (an initializer), not a computed tensor")
        return t

    def image(self, i: int = 0) -> Act:
        """Input ``i`` as an (N, C, H, W) activation."""
        t = self.act(i)
        if len(t.shape) != 3:
            raise self.error(f"input {i} must be a 4-d (N, C, H, W) tensor, got shape (N, {_dims(t.shape)})")
        return t


def _dims(shape: Sequence[int]) -> str:
    return ", ".join(str(d) for d in shape)


class _Builder:
    """The IR nodes made so far, with unique names derived from the ONNX node names."""

    def __init__(self):
        self.nodes: List[Node] = []
        self._names: Dict[str, int] = {}

    def add(self, node: Node) -> Value:
        node.set_shape()
        self.nodes.append(node)
        return Value(node, 0, node.output_shape[0])

    def name(self, onnx_name: str, op_type: str) -> str:
        base = onnx_name or op_type.lower()
        count = self._names.get(base, 0)
        self._names[base] = count + 1
        return base if count == 0 else f"{base}_{count}"


Converter = Callable[[_Builder, _Node], List[Optional[Tensor]]]
CONVERTERS: Dict[str, Converter] = {}


def _converter(*op_types: str):
    def register(fn: Converter) -> Converter:
        for op in op_types:
            CONVERTERS[op] = fn
        return fn
    return register


def supported_op_types() -> List[str]:
    return sorted(CONVERTERS)


# ----- windows (Conv, MaxPool, AveragePool) ------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    """A sliding window in IR terms: kernel, stride, dilation, (top, left) and (bottom, right) padding."""
    kernel: Tuple[int, int]
    stride: Tuple[int, int]
    dilation: Tuple[int, int]
    pad: Tuple[int, int]
    pad_end: Tuple[int, int]


def _window(nd: _Node, hw: Tuple[int, int], kernel: Sequence[int]) -> Window:
    """The window of a Conv or pool from its attributes (auto_pad, pads, strides, dilations, ceil_mode)."""
    if len(kernel) != 2:
        raise nd.error(f"only 2-d windows are supported, got kernel_shape {list(kernel)}")
    k = (int(kernel[0]), int(kernel[1]))
    s = tuple(int(v) for v in nd.attrs.get("strides", (1, 1)))
    d = tuple(int(v) for v in nd.attrs.get("dilations", (1, 1)))
    auto_pad = nd.attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("NOTSET", "VALID"):
        pads = [int(v) for v in nd.attrs.get("pads", (0, 0, 0, 0))] if auto_pad == "NOTSET" else [0, 0, 0, 0]
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * 4
        for i in range(2):
            out = -(-hw[i] // s[i])
            total = max(0, (out - 1) * s[i] + (k[i] - 1) * d[i] + 1 - hw[i])
            small, big = total // 2, total - total // 2
            pads[i], pads[i + 2] = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
    else:
        raise nd.error(f"auto_pad {auto_pad!r} is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER")
    if len(pads) != 4 or len(s) != 2 or len(d) != 2:
        raise nd.error(f"pads, strides and dilations must be 2-d, got {pads}, {list(s)}, {list(d)}")
    pad, pad_end = (pads[0], pads[1]), [pads[2], pads[3]]
    if int(nd.attrs.get("ceil_mode", 0)):
        # ceil_mode: as many outputs as windows that start inside the input or its top/left padding;
        # the IR rounds down, so the missing windows' room is added to the bottom/right padding
        for i in range(2):
            span = hw[i] + pad[i] + pad_end[i] - (k[i] - 1) * d[i] - 1
            out = -(-span // s[i]) + 1
            if (out - 1) * s[i] >= hw[i] + pad[i]:
                out -= 1
            pad_end[i] += max(0, (out - 1) * s[i] - span)
    return Window(k, s, d, pad, (pad_end[0], pad_end[1]))


# ----- converters ------------------------------------------------------------------------------------

@_converter("Conv")
def _conv(b: _Builder, nd: _Node):
    x = nd.image(0)
    weight = nd.const(1, "the weight")
    if weight is None or weight.ndim != 4:
        raise nd.error("the weight must be a 4-d constant (2-d convolutions only)")
    bias = nd.const(2, "the bias")
    out_c = weight.shape[0]
    win = _window(nd, x.shape[1:], nd.attrs.get("kernel_shape", weight.shape[2:]))
    node = Conv(b.name(nd.name, "conv"), [[x.value]], out_c, win.kernel, win.stride, win.pad,
                int(nd.attrs.get("group", 1)), "identity", dilation=win.dilation, pad_end=win.pad_end)
    node.params["weight"] = np.ascontiguousarray(weight, dtype=np.float32)
    node.params["bias"] = (np.zeros(out_c, np.float32) if bias is None else bias.astype(np.float32).reshape(out_c))
    return [_image(b.add(node))]


def _image(v: Value) -> Act:
    return Act(v, tuple(v.node.output_shape))


def _scale_shift(b: _Builder, nd: _Node, x: Act, scale: np.ndarray, shift: np.ndarray) -> Act:
    """``x * scale + shift`` per channel (scale and shift: scalars or one value per channel)."""
    c = x.ir_shape[0]
    node = ScaleShift(b.name(nd.name, nd.op_type), [[x.value]])
    node.params["scale"] = np.broadcast_to(np.asarray(scale, np.float32).reshape(-1), (c,)).copy()
    node.params["shift"] = np.broadcast_to(np.asarray(shift, np.float32).reshape(-1), (c,)).copy()
    return Act(b.add(node), x.shape)


@_converter("BatchNormalization")
def _batch_norm(b: _Builder, nd: _Node):
    if int(nd.attrs.get("training_mode", 0)):
        raise nd.error("training_mode=1 is not inference; export the model in eval mode")
    x = nd.image(0)
    gamma, beta, mean, var = (nd.const(i, w) for i, w in ((1, "scale"), (2, "B"), (3, "mean"), (4, "var")))
    scale = gamma / np.sqrt(var + np.float32(nd.attrs.get("epsilon", 1e-5)))
    return [_scale_shift(b, nd, x, scale, beta - mean * scale)]


def _unary(b: _Builder, nd: _Node, act: str, **params: float) -> List[Tensor]:
    x = nd.act(0)
    if act == "relu":
        node: Node = Relu(b.name(nd.name, "relu"), [[x.value]])
    else:
        node = Activation(b.name(nd.name, act), [[x.value]], act, **params)
    return [Act(b.add(node), x.shape)]


@_converter("Relu")
def _relu(b, nd):
    return _unary(b, nd, "relu")


@_converter("Sigmoid", "Tanh", "HardSwish")
def _plain_activation(b, nd):
    return _unary(b, nd, {"Sigmoid": "sigmoid", "Tanh": "tanh", "HardSwish": "hardswish"}[nd.op_type])


@_converter("HardSigmoid")
def _hard_sigmoid(b, nd):
    return _unary(b, nd, "hardsigmoid", alpha=float(nd.attrs.get("alpha", 0.2)), beta=float(nd.attrs.get("beta", 0.5)))


@_converter("Clip")
def _clip(b, nd):
    lo, hi = nd.attrs.get("min"), nd.attrs.get("max")            # opset < 11: attributes
    if len(nd.inputs) > 1 and nd.const(1, "min") is not None:    # opset >= 11: optional inputs
        lo = float(nd.const(1, "min"))
    if len(nd.inputs) > 2 and nd.const(2, "max") is not None:
        hi = float(nd.const(2, "max"))
    lo = -FLOAT_MAX if lo is None else max(float(lo), -FLOAT_MAX)
    hi = FLOAT_MAX if hi is None else min(float(hi), FLOAT_MAX)
    if lo == 0.0 and hi == 6.0:
        return _unary(b, nd, "relu6")
    if lo == 0.0 and hi == FLOAT_MAX:
        return _unary(b, nd, "relu")
    return _unary(b, nd, "clip", lo=lo, hi=hi)


@_converter("Identity", "Dropout")
def _pass_through(b, nd):
    """Identity, and Dropout at inference: the input itself (Dropout's mask output must go unused)."""
    if len(nd.inputs) > 1 and nd.op_type == "Dropout":
        training = nd.const(2, "training_mode") if len(nd.inputs) > 2 else None
        if training is not None and bool(training):
            raise nd.error("training_mode=True is not inference")
    return [nd.inputs[0], None]


@_converter("Constant")
def _constant(b, nd):
    from onnx import numpy_helper
    for key, value in nd.attrs.items():
        if key == "value":
            return [numpy_helper.to_array(value)]
        if key in ("value_float", "value_floats"):
            return [np.asarray(value, np.float32)]
        if key in ("value_int", "value_ints"):
            return [np.asarray(value, np.int64)]
    raise nd.error(f"a Constant holding {sorted(nd.attrs)} is not supported (value, value_float(s), value_int(s))")


_FOLD = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}


@_converter("Add", "Sub", "Mul", "Div")
def _binary(b, nd):
    """Two computed tensors (same shape, or Mul's channel broadcast); one with a per-channel or scalar
    constant (a ScaleShift); two constants (folded)."""
    if len(nd.inputs) != 2 or any(t is None for t in nd.inputs):
        raise nd.error("needs two inputs")
    x, y = nd.inputs
    if not isinstance(x, Act) and not isinstance(y, Act):
        return [_FOLD[nd.op_type](x, y)]
    if isinstance(x, Act) and isinstance(y, Act):
        return [_two_tensors(b, nd, x, y)]
    act, c = (x, y) if isinstance(x, Act) else (y, x)
    c = _channel_constant(nd, act, c)
    if nd.op_type in ("Sub", "Div") and act is not x:
        raise nd.error("a constant minus or divided by a computed tensor is not supported")
    scale, shift = {"Add": (1.0, c), "Sub": (1.0, -c), "Mul": (c, 0.0), "Div": (1.0 / c, 0.0)}[nd.op_type]
    return [_scale_shift(b, nd, act, scale, shift)]


def _channel_constant(nd: _Node, x: Act, c: np.ndarray) -> np.ndarray:
    """``c`` as one value per channel of ``x`` (or one scalar), if it broadcasts that way."""
    c = np.asarray(c, np.float32)
    if c.size == 1:
        return c.reshape(())
    channels = x.ir_shape[0]
    rank = len(x.shape) + 1
    full = (1,) * (rank - c.ndim) + c.shape            # ONNX broadcasting aligns the trailing dimensions
    # per channel: (C, H, W), or (F,) held as (F, 1, 1); not a flattened (C, H, W) with H * W > 1
    if x.shape[0] == channels and c.ndim <= rank and full[1] == channels \
            and all(d == 1 for i, d in enumerate(full) if i != 1):
        return c.reshape(channels)
    raise nd.error(f"a constant of shape {list(c.shape)} does not broadcast per channel over a tensor of shape "
                   f"(N, {_dims(x.shape)}); only scalars and per-channel constants are supported")


def _two_tensors(b: _Builder, nd: _Node, x: Act, y: Act) -> Act:
    if nd.op_type not in ("Add", "Mul"):
        raise nd.error("only Add and Mul of two computed tensors are supported")
    if x.shape == y.shape and x.ir_shape == y.ir_shape:
        op = "add" if nd.op_type == "Add" else "mul"
        return Act(b.add(Element(b.name(nd.name, op), [[x.value], [y.value]], op)), x.shape)
    if nd.op_type == "Mul" and len(x.shape) == len(y.shape) == 3:
        big, gate = (x, y) if y.shape[1:] == (1, 1) else (y, x)
        if gate.shape == (big.shape[0], 1, 1):   # squeeze-and-excitation: a (C, 1, 1) gate scales (C, H, W)
            return Act(b.add(ChannelMul(b.name(nd.name, "channel_mul"), [[big.value], [gate.value]])), big.shape)
    raise nd.error(f"shapes (N, {_dims(x.shape)}) and (N, {_dims(y.shape)}) do not match; only equal shapes and "
                   f"Mul's (N, C, 1, 1) channel broadcast are supported")


@_converter("MaxPool", "AveragePool")
def _pool(b, nd):
    x = nd.image(0)
    if any(int(d) != 1 for d in nd.attrs.get("dilations", (1, 1))):
        raise nd.error("dilated pooling is not supported")
    win = _window(nd, x.shape[1:], nd.attrs.get("kernel_shape", ()))
    include_pad = True
    if nd.op_type == "AveragePool":
        padded = win.pad != (0, 0) or win.pad_end != (0, 0)
        include_pad = not padded or bool(int(nd.attrs.get("count_include_pad", 0)))
        if include_pad and padded and int(nd.attrs.get("ceil_mode", 0)):
            raise nd.error("ceil_mode with count_include_pad=1 is not supported")
    node = Pool(b.name(nd.name, nd.op_type.lower()), [[x.value]], "max" if nd.op_type == "MaxPool" else "avg",
                win.kernel, win.stride, win.pad, pad_end=win.pad_end, count_include_pad=include_pad)
    return [_image(b.add(node)), None]


@_converter("GlobalAveragePool")
def _global_avg(b, nd):
    x = nd.image(0)
    return [_image(b.add(Pool(b.name(nd.name, "global_avg"), [[x.value]], "global_avg")))]


@_converter("Concat")
def _concat(b, nd):
    xs = [nd.act(i) for i in range(len(nd.inputs))]
    rank = len(xs[0].shape) + 1
    axis = int(nd.attrs.get("axis", 1))
    if axis not in (1, 1 - rank) or any(len(x.shape) + 1 != rank for x in xs):
        raise nd.error(f"only a concatenation along axis 1 of tensors of equal rank is supported, got axis {axis}")
    if any(x.ir_shape[1:] != xs[0].ir_shape[1:] or x.shape[1:] != xs[0].shape[1:] for x in xs):
        raise nd.error("the inputs' sizes beyond the concatenated axis differ")
    v = b.add(Identity(b.name(nd.name, "concat"), [[x.value] for x in xs]))
    shape = (sum(x.shape[0] for x in xs), *xs[0].shape[1:])
    return [Act(v, shape)]


def _flat(x: Act) -> Act:
    return Act(x.value, (int(np.prod(x.shape)),))


@_converter("Flatten")
def _flatten(b, nd):
    x = nd.act(0)
    if int(nd.attrs.get("axis", 1)) != 1:
        raise nd.error("only Flatten with axis=1 (to (N, C*H*W)) is supported")
    return [_flat(x)]


@_converter("Reshape")
def _reshape(b, nd):
    x = nd.act(0)
    target = nd.const(1, "the shape")
    if target is None:
        raise nd.error("needs its target shape as a constant")
    target = [int(v) for v in np.asarray(target).reshape(-1)]
    features = int(np.prod(x.shape))
    # the batch dimension copied (0), inferred (-1) or the export's fixed batch (the IR computes per image)
    batch_kept = target[0] in (0, -1) or target[0] >= 1
    if len(target) == 2 and batch_kept and (target[1] == features or target[1] == -1 and target[0] != -1):
        return [_flat(x)]
    if len(target) == len(x.shape) + 1 and batch_kept and tuple(target[1:]) == x.shape:
        return [x]
    raise nd.error(f"only a reshape to (N, C*H*W) = (N, {features}) is supported, got target {target}")


@_converter("Gemm")
def _gemm(b, nd):
    x = nd.act(0)
    if len(x.shape) != 1:
        raise nd.error(f"input 0 must be 2-d (N, F) (flatten it first), got (N, {_dims(x.shape)})")
    if int(nd.attrs.get("transA", 0)):
        raise nd.error("transA=1 is not supported")
    weight = nd.const(1, "B")
    weight = weight if int(nd.attrs.get("transB", 0)) else weight.T
    bias = nd.const(2, "C") if len(nd.inputs) > 2 else None
    alpha, beta = float(nd.attrs.get("alpha", 1.0)), float(nd.attrs.get("beta", 1.0))
    bias = None if bias is None else beta * np.broadcast_to(np.asarray(bias, np.float32).reshape(-1), (weight.shape[0],))
    return [_linear(b, nd, x, alpha * weight, bias)]


@_converter("MatMul")
def _matmul(b, nd):
    x = nd.act(0)
    weight = nd.const(1, "the second operand")
    if len(x.shape) != 1 or weight is None or weight.ndim != 2:
        raise nd.error("only (N, F) @ constant (F, O) is supported")
    return [_linear(b, nd, x, weight.T, None)]


def _linear(b: _Builder, nd: _Node, x: Act, weight: np.ndarray, bias: Optional[np.ndarray]) -> Act:
    """A Linear node of ``weight`` (O, F) and ``bias`` (O,) or None on the flattened ``x``."""
    out_f, in_f = weight.shape
    if in_f != x.shape[0]:
        raise nd.error(f"the weight takes {in_f} features, the input has {x.shape[0]}")
    node = Linear(b.name(nd.name, "linear"), [[x.value]], out_f)
    node.params["weight"] = np.ascontiguousarray(weight, dtype=np.float32)
    node.params["bias"] = np.zeros(out_f, np.float32) if bias is None else np.asarray(bias, np.float32).copy()
    return Act(b.add(node), (out_f,))


# ----- the model ----------------------------------------------------------------------------------

def _load(path_or_model):
    import onnx
    if isinstance(path_or_model, (str, os.PathLike)):
        if not os.path.exists(path_or_model):
            raise OnnxImportError(f"ONNX model {str(path_or_model)!r}: no such file")
        try:
            return onnx.load(os.fspath(path_or_model)), os.path.splitext(os.path.basename(path_or_model))[0]
        except Exception as exc:
            raise OnnxImportError(f"ONNX model {str(path_or_model)!r} cannot be read: {exc}") from None
    if isinstance(path_or_model, onnx.ModelProto):
        return path_or_model, None
    raise OnnxImportError(f"from_onnx takes a path or an onnx.ModelProto, got {type(path_or_model).__name__}")


def _input(graph, initializers) -> Tuple[str, Tuple[int, int, int]]:
    """The one real input (not an initializer): its name and (C, H, W)."""
    from onnx import TensorProto
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise OnnxImportError(f"ONNX graph {graph.name!r}: needs exactly one input tensor, got "
                              f"{[i.name for i in inputs]}")
    t = inputs[0].type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    if t.elem_type != TensorProto.FLOAT or len(dims) != 4 or any(d is None or d <= 0 for d in dims[1:]):
        raise OnnxImportError(f"ONNX input {inputs[0].name!r}: must be a float32 (N, C, H, W) tensor with fixed "
                              f"C, H, W; got elem_type {t.elem_type}, shape {dims}")
    return inputs[0].name, (dims[1], dims[2], dims[3])


def _output_value(b: _Builder, out: Optional[Tensor], name: str) -> Node:
    """The node whose whole output is the model's output (an Identity where it is a slice or the input)."""
    if not isinstance(out, Act):
        raise OnnxImportError(f"ONNX output {name!r}: must be computed from the input, not a constant")
    v = out.value
    if isinstance(v.node, Placeholder) or v.begin != 0 or v.end != v.node.output_shape[0]:
        b.add(Identity(b.name(name, "output"), [[v]]))
        return b.nodes[-1]
    return v.node


def from_onnx(path_or_model, name: Optional[str] = None) -> Graph:
    """Import an ONNX CNN as an ios_ray Graph with its weights, blocks found automatically.

    Args:
        path_or_model: a ``.onnx`` path or an ``onnx.ModelProto``.
        name: the graph's name (default: the file's stem, else the ONNX graph's name).
    Returns:
        The Graph: one placeholder (C, H, W), its blocks, every parameter from the model's initializers.
    Raises:
        OnnxImportError: an unreadable file, not one float32 (N, C, H, W) input and one output, or a node
            whose op type or attributes are not supported (naming it, its op type and the supported ones).
    """
    from onnx import helper, numpy_helper
    model, stem = _load(path_or_model)
    g = model.graph
    env: Dict[str, Optional[Tensor]] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    in_name, in_shape = _input(g, env)
    placeholder = Placeholder(in_name, in_shape)
    env[in_name] = Act(Value(placeholder, 0, in_shape[0]), in_shape)
    b = _Builder()
    for i, node in enumerate(g.node):
        nd = _Node(node.name or f"{node.op_type}_{i}", node.op_type, [],
                   {a.name: helper.get_attribute_value(a) for a in node.attribute})
        for n in node.input:
            if n and n not in env:
                raise nd.error(f"reads {n!r}, which no earlier node produces (is the graph topologically sorted?)")
            nd.inputs.append(env[n] if n else None)
        convert = CONVERTERS.get(node.op_type)
        if convert is None or node.domain not in ("", "ai.onnx"):
            raise nd.error(f"op type not supported; supported op types: {', '.join(supported_op_types())}")
        try:
            outputs = convert(b, nd)
        except OnnxImportError:
            raise
        except ValueError as exc:   # the IR refused the node (e.g. a pool's padding over half its kernel)
            raise nd.error(str(exc)) from None
        for out_name, value in zip(node.output, outputs):
            if out_name:
                env[out_name] = value
    if len(g.output) != 1:
        raise OnnxImportError(f"ONNX graph {g.name!r}: needs exactly one output, got {[o.name for o in g.output]}")
    output = _output_value(b, env.get(g.output[0].name), g.output[0].name)
    nodes, output = fuse(b.nodes, output)
    nodes = live_nodes(nodes, output)
    graph_name = name or stem or g.name or "onnx_model"
    return Graph(graph_name, placeholder, split_blocks(placeholder, nodes, output))


__all__ = ["CONVERTERS", "OnnxImportError", "from_onnx", "supported_op_types"]

"""Op types that imported models (ONNX) need beyond the IOS ones; declared in the op registry like the others.

* ``ScaleShift`` (``scale_shift``): ``act(x[:, c] * scale[c] + shift[c])``: a BatchNormalization with no
  convolution before it to fold into (DenseNet's pre-activation BN-ReLU), or an Add/Mul of a per-channel
  constant.
* ``ChannelMul`` (``channel_mul``): ``x[n, c, h, w] * gate[n, c]``: the squeeze-and-excitation gate. Its
  first input term is the ``(C, H, W)`` tensor, its second the ``(C, 1, 1)`` gate; like ``Element``, each
  term is one operand (values within a term are summed, terms are not concatenated).
* ``Linear`` (``linear``): ``act(weight @ flatten(x) + bias)`` as an ``(out_features, 1, 1)`` output: a
  Gemm/MatMul head. Its ``(C, H, W)`` input is flattened in C, H, W order, as ONNX's Flatten does; the
  weight is ``(out_features, C * H * W)``. (On the GPU: one cuDNN convolution whose kernel covers the input.)

How each backend runs them: ``runtime/reference.py`` (``KERNELS``), ``runtime/gpu/program.py``
(``LOWERINGS``); the analytic model uses ``Node.kernels`` (one kernel each). Pure: imports nothing but numpy.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from .ops import ACTIVATIONS, Node, PerElement, Shape, Terms, register_op


def _check_act(desc: str, act: str) -> str:
    if act not in ACTIVATIONS:
        raise ValueError(f"{desc}: act must be one of {ACTIVATIONS}, got {act!r}")
    return act


@register_op
class ScaleShift(Node):
    """Per-channel ``x * scale + shift``, then ``act``; parameters ``scale`` and ``shift`` of shape ``(C,)``."""

    type = "scale_shift"
    display_type = "ScaleShift"
    attr_names = ("act",)
    param_names = ("scale", "shift")

    def __init__(self, name: Optional[str], inputs: Terms, act: str = "identity",
                 output_shape: Optional[Shape] = None, hint_name: Optional[str] = None):
        super().__init__(name, inputs, output_shape, hint_name)
        self.act = _check_act(self.describe(name), act)

    def infer_shape(self) -> Shape:
        return self.input_shape()

    def weight_shapes(self) -> Dict[str, Tuple[int, ...]]:
        c = self.input_shape()[0]
        return {"scale": (c,), "shift": (c,)}

    @staticmethod
    def op_flops(attrs: Mapping, terms: Sequence[int], in_hw: Tuple[int, int], out_shape: Shape) -> float:
        c, h, w = out_shape
        return 2.0 * c * h * w


@register_op
class ChannelMul(PerElement):
    """``x * gate`` with the ``(C, 1, 1)`` gate broadcast over the ``(C, H, W)`` tensor (squeeze-and-excitation).

    Raises (shape inference):
        ValueError: not exactly two input terms, or a second term that is not ``(C, 1, 1)`` of the first's C.
    """

    type = "channel_mul"
    display_type = "ChannelMul"

    def input_shape(self) -> Shape:
        """The shape of the tensor (the first term); checks the gate (the second term) fits it."""
        shapes = self.term_shapes()
        if len(shapes) != 2:
            raise ValueError(f"{self.display()}: needs two input terms, the tensor and its (C, 1, 1) gate; "
                             f"got {len(shapes)}")
        (c, h, w), gate = shapes
        if gate != (c, 1, 1):
            raise ValueError(f"{self.display()}: the gate (second term) must have shape {(c, 1, 1)} to scale a "
                             f"{(c, h, w)} tensor, got {gate}")
        return c, h, w

    def schedule_text(self, args: str) -> str:
        return f"{self.display_type}({args})"  # its terms are operands, not concatenated


@register_op
class Linear(Node):
    """A fully connected layer on the flattened input: ``(C, H, W) -> (out_features, 1, 1)``, then ``act``."""

    type = "linear"
    display_type = "Linear"
    attr_names = ("out_features", "act")
    param_names = ("weight", "bias")

    def __init__(self, name: Optional[str], inputs: Terms, out_features: int, act: str = "identity",
                 output_shape: Optional[Shape] = None, hint_name: Optional[str] = None):
        super().__init__(name, inputs, output_shape, hint_name)
        desc = self.describe(name)
        self.out_features = int(out_features)
        if self.out_features <= 0:
            raise ValueError(f"{desc}: out_features must be positive, got {out_features!r}")
        self.act = _check_act(desc, act)

    def infer_shape(self) -> Shape:
        self.input_shape()  # checks the terms
        return self.out_features, 1, 1

    def in_features(self) -> int:
        c, h, w = self.input_shape()
        return c * h * w

    def weight_shapes(self) -> Dict[str, Tuple[int, ...]]:
        return {"weight": (self.out_features, self.in_features()), "bias": (self.out_features,)}

    def fan_in(self, pname: str, shape: Tuple[int, ...]) -> int:
        return self.in_features()

    @staticmethod
    def op_flops(attrs: Mapping, terms: Sequence[int], in_hw: Tuple[int, int], out_shape: Shape) -> float:
        return 2.0 * attrs["out_features"] * sum(terms) * in_hw[0] * in_hw[1]


EXTRA_OPS: List[type] = [ScaleShift, ChannelMul, Linear]

__all__ = ["ChannelMul", "EXTRA_OPS", "Linear", "ScaleShift"]

"""The IOS-style graph-building API: ``placeholder``, ``conv2d``, ``pool2d``, ``identity`` and friends.

Each call creates one node in ``block``, infers its shape at once (so a bad shape fails at the line that
made it) and returns a ``Value`` covering the node's whole output.
"""
from __future__ import annotations

from typing import Optional, Sequence

from .ir import Block, Conv, Element, Identity, Node, Placeholder, Pool, Relu, SepConv, Terms, Value


def _terms(inputs, who: str) -> Terms:
    if isinstance(inputs, Value):
        raise ValueError(f"{who}: inputs is a list of terms, e.g. inputs=[[v]], not a bare Value")
    try:
        if any(not isinstance(term, (list, tuple)) for term in inputs):
            raise TypeError
        terms = [list(term) for term in inputs]
    except TypeError:
        raise ValueError(f"{who}: inputs must be a list of terms (lists of Values), got {inputs!r}") from None
    for term in terms:
        for v in term:
            if not isinstance(v, Value):
                raise ValueError(f"{who}: every input must be a Value (what a builder call returns), "
                                 f"got {type(v).__name__}")
    if not terms or any(not t for t in terms):
        raise ValueError(f"{who}: inputs must be a non-empty list of non-empty terms")
    return terms


def _add(block: Block, node: Node, is_exit: bool) -> Value:
    if not isinstance(block, Block):
        raise ValueError(f"{node.display()}: the first argument must be a Block, got {type(block).__name__}")
    node.set_shape()
    block.add(node, is_exit)
    return Value(node, 0, node.output_shape[0])


def placeholder(output_shape: Sequence[int], name: Optional[str] = None) -> Value:
    """The graph input, shape ``(C, H, W)`` without the batch dimension."""
    node = Placeholder(name, output_shape)
    return Value(node, 0, node.output_shape[0])


def conv2d(block: Block, inputs, out_channels: int, kernel=(1, 1), stride=(1, 1), padding=(0, 0), groups: int = 1,
           act: str = "relu", is_exit: bool = False, name: Optional[str] = None) -> Value:
    """Convolution with bias and activation (``relu``, ``identity``, ``tanh``, ``sigmoid``)."""
    node = Conv(name, _terms(inputs, "conv2d"), out_channels, kernel, stride, padding, groups, act)
    return _add(block, node, is_exit)


def sep_conv(block: Block, inputs, out_channels: int, kernel=(3, 3), stride=(1, 1), padding=(1, 1),
             act: str = "identity", pre_act: str = "relu", is_exit: bool = False, name: Optional[str] = None) -> Value:
    """Separable convolution as one fused node: [pre_act] -> depthwise -> pointwise -> act."""
    node = SepConv(name, _terms(inputs, "sep_conv"), out_channels, kernel, stride, padding, act, pre_act)
    return _add(block, node, is_exit)


def pool2d(block: Block, inputs, pool_type: str, kernel=(1, 1), stride=(1, 1), padding=(0, 0),
           is_exit: bool = False, name: Optional[str] = None) -> Value:
    """Pooling: ``max``, ``avg`` (padding counted, as PyTorch's default) or ``global_avg``."""
    node = Pool(name, _terms(inputs, "pool2d"), pool_type, kernel, stride, padding)
    return _add(block, node, is_exit)


def identity(block: Block, inputs, is_exit: bool = False, name: Optional[str] = None) -> Value:
    """Concatenate (and sum) the input terms."""
    return _add(block, Identity(name, _terms(inputs, "identity")), is_exit)


def relu(block: Block, inputs, is_exit: bool = False, name: Optional[str] = None) -> Value:
    return _add(block, Relu(name, _terms(inputs, "relu")), is_exit)


def element(block: Block, inputs, op_type: str, is_exit: bool = False, name: Optional[str] = None) -> Value:
    """Element-wise ``add``/``mul``; each term is one operand."""
    return _add(block, Element(name, _terms(inputs, "element"), op_type), is_exit)


def add(block: Block, inputs, is_exit: bool = False, name: Optional[str] = None) -> Value:
    return element(block, inputs, "add", is_exit, name)


def multiply(block: Block, inputs, is_exit: bool = False, name: Optional[str] = None) -> Value:
    return element(block, inputs, "mul", is_exit, name)


mul = multiply

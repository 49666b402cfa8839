"""The original IOS's model-building module (``ios.models.common``) on ios_ray's IR.

A model file written for the original (``from .common import *``) builds unchanged against
``from ios_ray.models.common import *``: every name that module exported is here, with its arguments,
defaults and meaning, including the IR classes it re-exported (their constructors take the original's
arguments, see ``_OriginalSignature``) and ``typing.Tuple``/``List``, which model files annotate with.

Names: as in the original, each operator is named by a process-wide counter ("0", "1", ...), so call
``reset_name()`` before building a network; ``get_parts`` reads those numbers. A builder that the original
made of several nodes takes as many numbers as the original's did, so node names equal the original's.

How the original's compound builders map onto our IR (each is one operator of the graph, as there):

=================  ==================================================  ==============================
builder            the original's nodes                                ours
=================  ==================================================  ==============================
``sep_conv``       Sequential[depthwise conv, pointwise conv]          ``SepConv`` (pre_act identity)
``relu_sep_conv``  Sequential[Relu, depthwise conv, pointwise conv]    ``SepConv`` (pre_act relu)
``rwconv2d``       ``relu_sep_conv`` 3x3, padding 1                    ``SepConv`` (pre_act relu)
``relu_conv``      Sequential[Relu, conv]                              ``Sequential`` [Relu, Conv]
``activation``     Activation                                          ``Relu`` or ``Activation``
=================  ==================================================  ==============================

The separable convolutions compute exactly what the original's Sequential did (both convs with bias, no
activation after either) with the fused node every backend runs.
"""
from __future__ import annotations

import bisect
from typing import List, Optional, Sequence, Tuple

from ..graph import ir
from ..graph.builder import _add, _terms
from ..graph.compound import Activation as _Activation
from ..graph.compound import Sequential as _Sequential
from ..graph.ir import Block, Graph, Node, Value


class _NameCounter:
    """The original's operator-name counter: process-wide by design (``reset_name`` restarts it)."""

    def __init__(self) -> None:
        self.next = 0

    def reset(self) -> None:
        self.next = 0

    def take(self) -> str:
        name = str(self.next)
        self.next += 1
        return name


_NAMES = _NameCounter()


def new_name() -> str:
    """The next operator name ("0", "1", ...)."""
    return _NAMES.take()


def reset_name() -> None:
    """Restart operator names at "0"; call it before building each network (the zoo's builders do)."""
    _NAMES.reset()


def _names(count: int) -> str:
    """Take ``count`` names and return the last: the original named a compound's inner nodes first."""
    for _ in range(count - 1):
        _NAMES.take()
    return _NAMES.take()


def _append(block: Block, node: Node, is_exit: bool) -> Value:
    node.hint_name = node.hint_name or node.name
    return _add(block, node, is_exit)


# ----- builders -----------------------------------------------------------------------------------

def placeholder(output_shape: Sequence[int]) -> Value:
    """The graph input, shape ``(C, H, W)``."""
    name = new_name()
    node = ir.Placeholder(name, output_shape, hint_name=name)
    return Value(node, 0, node.output_shape[0])


def conv2d(block: Block, inputs, out_channels: int, kernel=(1, 1), stride=(1, 1), padding=(0, 0), groups: int = 1,
           act: str = "relu", is_exit: bool = False) -> Value:
    """Convolution with bias and activation (``relu``, ``identity``, ``tanh``, ``sigmoid``)."""
    node = ir.Conv(new_name(), _terms(inputs, "conv2d"), out_channels, kernel, stride, padding, groups, act)
    return _append(block, node, is_exit)


def sep_conv(block: Block, inputs, out_channels: int, kernel=(3, 3), stride=(1, 1), padding=(1, 1),
             is_exit: bool = False, *, act: str = "identity", pre_act: str = "identity",
             name: Optional[str] = None) -> Value:
    """Separable convolution: depthwise ``kernel`` conv then pointwise 1x1 conv, no activation (the original's).

    Beyond the original: ``pre_act='relu'`` puts a ReLU first, ``act`` follows the pointwise conv, and
    ``name`` names the node instead of the counter.
    """
    node_name = name if name is not None else _names(3)
    node = ir.SepConv(node_name, _terms(inputs, "sep_conv"), out_channels, kernel, stride, padding, act, pre_act,
                      hint_name=name if name is not None else "SepConv")
    return _append(block, node, is_exit)


def relu_sep_conv(block: Block, inputs, out_channels: int, kernel, stride, padding, is_exit: bool = False) -> Value:
    """ReLU, then a separable convolution (one operator)."""
    node = ir.SepConv(_names(4), _terms(inputs, "relu_sep_conv"), out_channels, kernel, stride, padding,
                      act="identity", pre_act="relu", hint_name="ReluSepConv")
    return _append(block, node, is_exit)


def rwconv2d(block: Block, inputs, out_channels: int, stride=(1, 1), is_exit: bool = False) -> Value:
    """A RandWire node: ReLU, then a 3x3 separable convolution with padding 1."""
    return relu_sep_conv(block, inputs, out_channels, (3, 3), stride, (1, 1), is_exit)


def relu_conv(block: Block, inputs, out_channels: int, kernel=(1, 1), stride=(1, 1), padding=(0, 0), groups: int = 1,
              is_exit: bool = False) -> Value:
    """ReLU, then a convolution without activation: a ``Sequential`` of the two (one operator)."""
    names = [new_name(), new_name()]
    nodes = [ir.Relu(names[0], _terms(inputs, "relu_conv"), hint_name=names[0]),
             ir.Conv(names[1], [], out_channels, kernel, stride, padding, groups, "identity", hint_name=names[1])]
    return sequential(block, "ReluConv", nodes, is_exit)


def sequential(block: Block, hint_name: Optional[str], nodes: List[Node], is_exit: bool = False) -> Value:
    """A compound operator: ``nodes`` run one after another, scheduled as one operator.

    ``nodes[0]`` carries the inputs; each later node reads the whole output of the one before (its own
    inputs are replaced, as in the original).
    """
    name = new_name()
    if isinstance(nodes, (list, tuple)) and nodes and isinstance(nodes[0], Node):
        _terms(nodes[0].inputs, "sequential")  # the clear message for a bare Value or an empty input
    return _append(block, _Sequential(name, None, nodes, hint_name=hint_name or name), is_exit)


def identity(block: Block, inputs, is_exit: bool = False) -> Value:
    """Concatenation of the input terms (each term's values summed)."""
    return _append(block, ir.Identity(new_name(), _terms(inputs, "identity")), is_exit)


def relu(block: Block, inputs, is_exit: bool = False) -> Value:
    return _append(block, ir.Relu(new_name(), _terms(inputs, "relu")), is_exit)


def activation(block: Block, inputs, act_type: str, inplace: bool = False, is_exit: bool = False) -> Value:
    """``relu``, ``tanh`` or ``sigmoid`` of the input; ``inplace`` is accepted and has no effect here."""
    name = new_name()
    terms = _terms(inputs, "activation")
    node = ir.Relu(name, terms) if act_type == "relu" else _Activation(name, terms, act_type)
    return _append(block, node, is_exit)


def sigmoid(block: Block, inputs, inplace: bool = False, is_exit: bool = False) -> Value:
    return activation(block, inputs, "sigmoid", inplace, is_exit)


def tanh(block: Block, inputs, inplace: bool = False, is_exit: bool = False) -> Value:
    return activation(block, inputs, "tanh", inplace, is_exit)


def element(block: Block, inputs, op_type: str, is_exit: bool = False, *, name: Optional[str] = None) -> Value:
    """Element-wise ``add`` or ``mul``.

    The original's form is one term whose values are the operands, ``[[a, b]]``; ours, several terms,
    each one operand (its values summed), ``[[a], [b]]``, is accepted too. Beyond the original: ``name``
    names the node instead of the counter.
    """
    node = ir.Element(name if name is not None else new_name(), element_operands(_terms(inputs, "element")),
                      op_type)
    return _append(block, node, is_exit)


def element_operands(terms: List[List[Value]]) -> List[List[Value]]:
    """The original's element inputs (one term, its values the operands) as ours (one term per operand)."""
    return [[v] for v in terms[0]] if len(terms) == 1 else terms


def multiply(block: Block, inputs, is_exit: bool = False, *, name: Optional[str] = None) -> Value:
    return element(block, inputs, "mul", is_exit, name=name)


def addition(block: Block, inputs, is_exit: bool = False, *, name: Optional[str] = None) -> Value:
    return element(block, inputs, "add", is_exit, name=name)


def pool2d(block: Block, inputs, pool_type: str, kernel=(1, 1), stride=(1, 1), padding=(0, 0),
           is_exit: bool = False) -> Value:
    """Pooling: ``max``, ``avg``, ``global_avg`` or ``global_max`` (a max pool over the whole input)."""
    terms = _terms(inputs, "pool2d")
    if pool_type == "global_max":
        _, h, w = terms[0][0].node.output_shape
        pool_type, kernel, stride, padding = "max", (h, w), (1, 1), (0, 0)
    return _append(block, ir.Pool(new_name(), terms, pool_type, kernel, stride, padding), is_exit)


def get_parts(block: Block, split_vars: Sequence[Value]) -> List[List[Node]]:
    """The operators of ``block`` split into parts at ``split_vars`` (for ``block.parts``).

    Part ``i`` holds the operators numbered after ``split_vars[i]``'s node, up to and including
    ``split_vars[i + 1]``'s, by the counter numbers of their names: the operators built between two
    split values, when the block was built by these builders in order.

    Raises:
        ValueError: a name that is not a counter number, split values out of order, or an operator
            outside every part.
    """
    indices = [_number(v.node) for v in split_vars]
    if len(indices) < 2 or any(a >= b for a, b in zip(indices, indices[1:])):
        raise ValueError(f"get_parts: split_vars must be at least two values of increasing names, got "
                         f"{[v.node.name for v in split_vars]}")
    parts: List[List[Node]] = [[] for _ in indices[1:]]
    for node in block.nodes:
        position = bisect.bisect_left(indices, _number(node))  # indices[position - 1] < number <= indices[position]
        if not 1 <= position < len(indices):
            raise ValueError(f"get_parts: {node.display()} lies outside the split values "
                             f"{split_vars[0].node.name}..{split_vars[-1].node.name}")
        parts[position - 1].append(node)
    return parts


def _number(node: Node) -> int:
    try:
        return int(node.name)
    except (TypeError, ValueError):
        raise ValueError(f"get_parts: {node.display()} is not named by the counter (new_name); build the block "
                         f"with ios_ray.models.common") from None


# ----- the original's IR constructors -------------------------------------------------------------

def _given(inputs, who: str) -> List[List[Value]]:
    """A constructor's inputs: None (a sequential's later nodes, wired by ``sequential``) or checked terms."""
    return [] if inputs is None else _terms(inputs, who)


class _OriginalSignature(type):
    """Metaclass of the IR names this module exports: calling the class takes the original's constructor
    arguments (``name, hint_name, inputs, ...``) and returns our IR node (``build``); ``isinstance``
    checks against our IR class (``ir_class``). Model files build ``sequential`` nodes with them."""

    def __call__(cls, *args, **kwargs):
        return cls.build(*args, **kwargs)

    def __instancecheck__(cls, obj) -> bool:
        return isinstance(obj, cls.ir_class)


class Placeholder(metaclass=_OriginalSignature):
    ir_class = ir.Placeholder

    @staticmethod
    def build(name, hint_name, output_shape):
        return ir.Placeholder(name, output_shape, hint_name=hint_name)


class Conv(metaclass=_OriginalSignature):
    ir_class = ir.Conv

    @staticmethod
    def build(name, hint_name, inputs, out_channels, kernel, stride, padding, groups, act, output_shape):
        return ir.Conv(name, _given(inputs, "Conv"), out_channels, kernel, stride, padding, groups, act, output_shape,
                       hint_name)


class Pool(metaclass=_OriginalSignature):
    ir_class = ir.Pool

    @staticmethod
    def build(name, hint_name, inputs, pool_type, kernel, stride, padding, output_shape):
        return ir.Pool(name, _given(inputs, "Pool"), pool_type, kernel, stride, padding, output_shape, hint_name)


class Relu(metaclass=_OriginalSignature):
    ir_class = ir.Relu

    @staticmethod
    def build(name, hint_name, inputs, output_shape):
        return ir.Relu(name, _given(inputs, "Relu"), output_shape, hint_name)


class Identity(metaclass=_OriginalSignature):
    ir_class = ir.Identity

    @staticmethod
    def build(name, hint_name, inputs, output_shape):
        return ir.Identity(name, _given(inputs, "Identity"), output_shape, hint_name)


class Element(metaclass=_OriginalSignature):
    ir_class = ir.Element

    @staticmethod
    def build(name, hint_name, inputs, op_type, output_shape):
        return ir.Element(name, element_operands(_given(inputs, "Element")), op_type, output_shape, hint_name)


class Activation(metaclass=_OriginalSignature):
    ir_class = _Activation

    @staticmethod
    def build(name, hint_name, inputs, act_type, inplace, output_shape):
        terms = _given(inputs, "Activation")
        if act_type == "relu":
            return ir.Relu(name, terms, output_shape, hint_name)
        return _Activation(name, terms, act_type, output_shape, hint_name)


class Sequential(metaclass=_OriginalSignature):
    ir_class = _Sequential

    @staticmethod
    def build(name, hint_name, nodes, output_shape):
        return _Sequential(name, None, nodes, output_shape, hint_name)


__all__ = [
    # typing names and IR classes, as the original's ``from .common import *`` gave them
    "Tuple", "List", "Value", "Node", "Block", "Graph", "Placeholder", "Conv", "Pool", "Relu", "Identity",
    "Element", "Activation", "Sequential",
    # the builders
    "new_name", "reset_name", "placeholder", "conv2d", "sep_conv", "relu_sep_conv", "rwconv2d", "relu_conv",
    "sequential", "identity", "relu", "activation", "sigmoid", "tanh", "element", "multiply", "addition", "pool2d",
    "get_parts",
]

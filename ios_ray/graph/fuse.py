"""Operator fusion on a flat list of IR nodes (an imported model, before it is cut into blocks).

Data flow: nodes in dependency order + the output node --``fuse``--> fewer nodes, same outputs.

An exported model spells out what the IR's operators fold in: a BatchNormalization after a convolution,
the activation after it, SiLU as ``x * sigmoid(x)``. Left apart they would be separate DP operators,
each a kernel launch and a round trip through memory, and the schedule IOS finds would compare against
a slower baseline than the one a real runtime sees. The rewrites, each applied where the producer's only
reader is the node folded into it (and the producer is not the graph output):

* ``Conv``/``Linear`` (no activation) then ``ScaleShift`` -> the conv with ``weight * scale`` and
  ``bias * scale + shift``, and the ScaleShift's activation (BatchNormalization folding); two
  ScaleShifts in a row compose the same way.
* ``Conv``/``Linear``/``ScaleShift`` (no activation) then ``Relu`` or an ``Activation`` whose type the
  producer applies itself (``ops.ACTIVATIONS``) -> the producer with that activation.
* ``Element(mul)`` of ``x`` and ``Activation(sigmoid)`` of the same ``x`` -> ``Activation(silu)`` of ``x``.

Pure: imports only the IR.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from .compound import Activation
from .ir import Conv, Element, Node, Relu, Value
from .ops import ACTIVATIONS
from .ops_extra import Linear, ScaleShift


class _Rewriter:
    """The node list, its readers, and the output, kept consistent through replacements."""

    def __init__(self, nodes: List[Node], output: Node):
        self.nodes = list(nodes)
        self.output = output

    def readers(self, node: Node) -> List[Node]:
        """The nodes reading ``node`` (one entry per reading value)."""
        return [n for n in self.nodes for term in n.inputs for v in term if v.node is node]

    def sole_reader(self, producer: Node, reader: Node) -> bool:
        """Whether ``reader`` is the only use of ``producer`` (reading it once) and it is not the output."""
        return producer is not self.output and self.readers(producer) == [reader]

    def replace(self, old: Node, new: Node) -> None:
        """Readers of ``old`` read ``new`` (same shape) instead; ``old`` leaves the list."""
        for n in self.nodes:
            n.inputs = [[Value(new, v.begin, v.end) if v.node is old else v for v in term] for term in n.inputs]
        if self.output is old:
            self.output = new
        self.nodes.remove(old)


def _whole_input(node: Node) -> Optional[Node]:
    """The producer when ``node`` reads exactly one whole output, else None."""
    if len(node.inputs) != 1 or len(node.inputs[0]) != 1:
        return None
    v = node.inputs[0][0]
    return v.node if v.begin == 0 and v.end == v.node.output_shape[0] else None


def _fold_scale_shift(rw: _Rewriter, node: Node) -> bool:
    """BatchNormalization folding: ``node`` is a ScaleShift after a Conv, Linear or ScaleShift without
    activation."""
    prod = _whole_input(node) if isinstance(node, ScaleShift) else None
    if not isinstance(prod, (Conv, Linear, ScaleShift)) or prod.act != "identity" or not rw.sole_reader(prod, node):
        return False
    scale, shift = node.params["scale"], node.params["shift"]
    mul, add = ("scale", "shift") if isinstance(prod, ScaleShift) else ("weight", "bias")
    weight = prod.params[mul]
    prod.params[mul] = (weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))).astype(np.float32)
    prod.params[add] = (prod.params[add] * scale + shift).astype(np.float32)
    prod.act = node.act
    rw.replace(node, prod)
    return True


def _act_of(node: Node) -> Optional[str]:
    """The activation a Relu or a non-parametric Activation applies, if a producer can apply it itself."""
    if isinstance(node, Relu):
        return "relu"
    if isinstance(node, Activation) and node.act_type in ACTIVATIONS:
        return node.act_type
    return None


def _fold_activation(rw: _Rewriter, node: Node) -> bool:
    """``node`` is an activation of a Conv, Linear or ScaleShift that applies none yet."""
    act = _act_of(node)
    prod = _whole_input(node) if act else None
    if not isinstance(prod, (Conv, Linear, ScaleShift)) or prod.act != "identity" or not rw.sole_reader(prod, node):
        return False
    prod.act = act
    rw.replace(node, prod)
    return True


def _silu(rw: _Rewriter, node: Node) -> Optional[Node]:
    """``Activation(silu)`` of ``x`` replacing ``node`` when it is ``x * sigmoid(x)``, else None."""
    if not (isinstance(node, Element) and node.op_type == "mul" and len(node.inputs) == 2
            and all(len(t) == 1 for t in node.inputs)):
        return None
    a, b = node.inputs[0][0], node.inputs[1][0]
    for x, s in ((a, b), (b, a)):
        gate = s.node
        if (isinstance(gate, Activation) and gate.act_type == "sigmoid" and s.begin == 0
                and s.end == gate.output_shape[0] and gate.inputs == [[x]] and rw.sole_reader(gate, node)):
            silu = Activation(node.name, [[x]], "silu", hint_name=node.hint_name)
            silu.set_shape()
            rw.nodes.insert(rw.nodes.index(node), silu)
            rw.replace(node, silu)
            rw.nodes.remove(gate)
            return silu
    return None


def fuse(nodes: List[Node], output: Node) -> Tuple[List[Node], Node]:
    """Fold BatchNormalization, activations and SiLU into the operators before them (module docstring).

    Args:
        nodes: the operators in dependency order, shapes set, weights present where folding reads them.
        output: the graph's output node.
    Returns:
        The remaining nodes (same order) and the output node (the producer it was folded into, if it was).
    """
    rw = _Rewriter(nodes, output)
    for node in list(rw.nodes):
        if node not in rw.nodes:   # already folded away (a sigmoid absorbed by its SiLU)
            continue
        node = _silu(rw, node) or node
        if not _fold_scale_shift(rw, node):
            _fold_activation(rw, node)
    return rw.nodes, rw.output


__all__ = ["fuse"]

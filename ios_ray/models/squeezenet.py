"""SqueezeNet (Iandola et al. 2016) with complex bypass, 3x224x224 input: 50 operators in 12 blocks.

Data flow: placeholder -> conv1 + max pool -> fire2..fire4 -> max pool -> fire5..fire8 -> max pool ->
fire9 -> conv10 + global average pool (output 1000x1x1).

How operators are counted (as in the IOS paper's 50):
- a convolution with bias and fused ReLU is one ``conv2d``; a pooling layer is one ``pool2d``;
- a fire module is squeeze 1x1, expand 3x3 and expand 1x1 (three convs), one ``identity`` that
  concatenates the two expands, then an ``identity`` exit that adds the bypass: the module input
  itself when channels agree (5 operators), or a 1x1 bypass conv when they do not (6 operators);
- each max pool between fire stages is a block of its own, so every block reads one tensor.
"""
from __future__ import annotations

from typing import Tuple

from ..graph import Block, Graph, Value, conv2d, identity, placeholder, pool2d


def _front(x: Value) -> Tuple[Value, Block]:
    block = Block(x.node)
    v = conv2d(block, [[x]], 96, kernel=7, stride=2, padding=3)  # 96 x 112 x 112
    v = pool2d(block, [[v]], "max", kernel=3, stride=2, is_exit=True)  # 96 x 55 x 55
    return v, block


def _fire(x: Value, squeeze: int, expand: int) -> Tuple[Value, Block]:
    block = Block(x.node)
    s = conv2d(block, [[x]], squeeze, kernel=1)
    e3 = conv2d(block, [[s]], expand, kernel=3, padding=1)
    e1 = conv2d(block, [[s]], expand, kernel=1)
    expanded = identity(block, [[e3], [e1]])
    if x.length == 2 * expand:
        bypass = x
    else:  # complex bypass: a 1x1 conv brings the input to the expanded width
        bypass = conv2d(block, [[x]], 2 * expand, kernel=1, act="identity")
    return identity(block, [[expanded, bypass]], is_exit=True), block


def _max_pool(x: Value) -> Tuple[Value, Block]:
    block = Block(x.node)
    return pool2d(block, [[x]], "max", kernel=3, stride=2, is_exit=True), block


def _head(x: Value, num_classes: int) -> Tuple[Value, Block]:
    block = Block(x.node)
    v = conv2d(block, [[x]], num_classes, kernel=1)
    return pool2d(block, [[v]], "global_avg", is_exit=True), block


def squeezenet(num_classes: int = 1000) -> Graph:
    """SqueezeNet with complex bypass, without weights (call ``graph.init_weights(seed)``)."""
    x = placeholder((3, 224, 224), name="input")
    v, first = _front(x)
    blocks = [first]
    plan = [(16, 64), (16, 64), (32, 128), None, (32, 128), (48, 192), (48, 192), (64, 256), None, (64, 256)]
    for step in plan:
        v, b = _max_pool(v) if step is None else _fire(v, *step)
        blocks.append(b)
    v, b = _head(v, num_classes)
    blocks.append(b)
    return Graph("squeezenet", x.node, blocks)

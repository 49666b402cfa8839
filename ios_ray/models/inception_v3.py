"""Inception-v3 (Szegedy et al. 2016) for 3x299x299 inputs: 119 operators in 13 blocks.

Data flow: placeholder -> stem block -> 3 x Inception-A -> Inception-B -> 4 x Inception-C ->
Inception-D -> 2 x Inception-E -> global average pool. Each Inception module is one block: it reads one
tensor and ends in the concat that the next module reads, so the blocks chain on single tensors.

How operators are counted (as in the IOS paper's 119):
- a convolution with its batch norm folded into the bias and its ReLU fused is one ``conv2d``;
- a pooling layer is one ``pool2d``; a module's concatenation is one ``identity`` (Inception-E's
  inner concats of its 1x3/3x1 pairs are folded into the module's final concat: same channel order);
- the classifier ends at the global average pool (no fully connected layer, as in the original IOS).

Per-block counts: stem 7, A 9 (x3), B 6, C 12 (x4), D 8, E 11 (x2), head 1.
"""
from __future__ import annotations

from typing import Tuple

from ..graph import Block, Graph, Value, conv2d, identity, placeholder, pool2d


def _stem(x: Value) -> Tuple[Value, Block]:
    block = Block(x.node)
    v = conv2d(block, [[x]], 32, kernel=3, stride=2)  # 32 x 149 x 149
    v = conv2d(block, [[v]], 32, kernel=3)  # 32 x 147 x 147
    v = conv2d(block, [[v]], 64, kernel=3, padding=1)  # 64 x 147 x 147
    v = pool2d(block, [[v]], "max", kernel=3, stride=2)  # 64 x 73 x 73
    v = conv2d(block, [[v]], 80, kernel=1)
    v = conv2d(block, [[v]], 192, kernel=3)  # 192 x 71 x 71
    v = pool2d(block, [[v]], "max", kernel=3, stride=2, is_exit=True)  # 192 x 35 x 35
    return v, block


def _inception_a(x: Value, pool_features: int) -> Tuple[Value, Block]:
    block = Block(x.node)
    b1 = conv2d(block, [[x]], 64, kernel=1)
    b5 = conv2d(block, [[x]], 48, kernel=1)
    b5 = conv2d(block, [[b5]], 64, kernel=5, padding=2)
    b3 = conv2d(block, [[x]], 64, kernel=1)
    b3 = conv2d(block, [[b3]], 96, kernel=3, padding=1)
    b3 = conv2d(block, [[b3]], 96, kernel=3, padding=1)
    bp = pool2d(block, [[x]], "avg", kernel=3, stride=1, padding=1)
    bp = conv2d(block, [[bp]], pool_features, kernel=1)
    return identity(block, [[b1], [b5], [b3], [bp]], is_exit=True), block


def _inception_b(x: Value) -> Tuple[Value, Block]:
    block = Block(x.node)
    b3 = conv2d(block, [[x]], 384, kernel=3, stride=2)
    bd = conv2d(block, [[x]], 64, kernel=1)
    bd = conv2d(block, [[bd]], 96, kernel=3, padding=1)
    bd = conv2d(block, [[bd]], 96, kernel=3, stride=2)
    bp = pool2d(block, [[x]], "max", kernel=3, stride=2)
    return identity(block, [[b3], [bd], [bp]], is_exit=True), block


def _inception_c(x: Value, c7: int) -> Tuple[Value, Block]:
    block = Block(x.node)
    b1 = conv2d(block, [[x]], 192, kernel=1)
    b7 = conv2d(block, [[x]], c7, kernel=1)
    b7 = conv2d(block, [[b7]], c7, kernel=(1, 7), padding=(0, 3))
    b7 = conv2d(block, [[b7]], 192, kernel=(7, 1), padding=(3, 0))
    bd = conv2d(block, [[x]], c7, kernel=1)
    bd = conv2d(block, [[bd]], c7, kernel=(7, 1), padding=(3, 0))
    bd = conv2d(block, [[bd]], c7, kernel=(1, 7), padding=(0, 3))
    bd = conv2d(block, [[bd]], c7, kernel=(7, 1), padding=(3, 0))
    bd = conv2d(block, [[bd]], 192, kernel=(1, 7), padding=(0, 3))
    bp = pool2d(block, [[x]], "avg", kernel=3, stride=1, padding=1)
    bp = conv2d(block, [[bp]], 192, kernel=1)
    return identity(block, [[b1], [b7], [bd], [bp]], is_exit=True), block


def _inception_d(x: Value) -> Tuple[Value, Block]:
    block = Block(x.node)
    b3 = conv2d(block, [[x]], 192, kernel=1)
    b3 = conv2d(block, [[b3]], 320, kernel=3, stride=2)
    b7 = conv2d(block, [[x]], 192, kernel=1)
    b7 = conv2d(block, [[b7]], 192, kernel=(1, 7), padding=(0, 3))
    b7 = conv2d(block, [[b7]], 192, kernel=(7, 1), padding=(3, 0))
    b7 = conv2d(block, [[b7]], 192, kernel=3, stride=2)
    bp = pool2d(block, [[x]], "max", kernel=3, stride=2)
    return identity(block, [[b3], [b7], [bp]], is_exit=True), block


def _inception_e(x: Value) -> Tuple[Value, Block]:
    block = Block(x.node)
    b1 = conv2d(block, [[x]], 320, kernel=1)
    b3 = conv2d(block, [[x]], 384, kernel=1)
    b3a = conv2d(block, [[b3]], 384, kernel=(1, 3), padding=(0, 1))
    b3b = conv2d(block, [[b3]], 384, kernel=(3, 1), padding=(1, 0))
    bd = conv2d(block, [[x]], 448, kernel=1)
    bd = conv2d(block, [[bd]], 384, kernel=3, padding=1)
    bda = conv2d(block, [[bd]], 384, kernel=(1, 3), padding=(0, 1))
    bdb = conv2d(block, [[bd]], 384, kernel=(3, 1), padding=(1, 0))
    bp = pool2d(block, [[x]], "avg", kernel=3, stride=1, padding=1)
    bp = conv2d(block, [[bp]], 192, kernel=1)
    return identity(block, [[b1], [b3a], [b3b], [bda], [bdb], [bp]], is_exit=True), block


def _head(x: Value) -> Tuple[Value, Block]:
    block = Block(x.node)
    return pool2d(block, [[x]], "global_avg", is_exit=True), block


def inception_v3(batch_size: int = 1) -> Graph:
    """Inception-v3 without weights (call ``graph.init_weights(seed)``); output 2048x1x1.

    Args:
        batch_size: kept for the original's signature; shapes in the IR exclude the batch, which the
            runtime and the optimizer take separately. Must be a positive int.
    Raises:
        ValueError: for a batch size that is not a positive int.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"inception_v3: batch_size must be a positive int, got {batch_size!r}")
    x = placeholder((3, 299, 299), name="input")
    blocks = []
    v, b = _stem(x)
    blocks.append(b)
    for pool_features in (32, 64, 64):
        v, b = _inception_a(v, pool_features)
        blocks.append(b)
    v, b = _inception_b(v)
    blocks.append(b)
    for c7 in (128, 160, 160, 192):
        v, b = _inception_c(v, c7)
        blocks.append(b)
    v, b = _inception_d(v)
    blocks.append(b)
    for _ in range(2):
        v, b = _inception_e(v)
        blocks.append(b)
    v, b = _head(v)
    blocks.append(b)
    return Graph("inception_v3", x.node, blocks)

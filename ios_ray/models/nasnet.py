"""NASNet-A large (Zoph et al. 2018) as benchmarked in the IOS paper: 374 operators in one block.

Data flow: placeholder (3x331x331) -> conv 3x3/2 (96) -> stem cells 0 and 1 -> a first cell and five
normal cells at 42x42 (f = 168) -> a reduction cell -> a first cell and five normal cells at 21x21 (2f)
-> a reduction cell -> a first cell and five normal cells at 11x11 (4f) -> ReLU -> global average pool
(output 4f * 5 = 3360 x 1 x 1).

Built with the original's builders (``common``), in the original's order, so the graph (node names
included) is the one the original's ``nasnet_large`` builds, without its random weights. Like the
original, the whole network is one block with one explicit part per cell (``get_parts``): 25 parts
(the stem conv, two stems, 18 first/normal cells, two reduction cells, the ReLU, the pool).

Each cell reads the outputs of the two cells before it: ``x`` (the last) and ``x_prev``. Operators:
- ``relu_conv`` (ReLU -> 1x1 conv) brings ``x`` and ``x_prev`` to the cell's width; a first cell halves
  ``x_prev``'s resolution with two strided ones, concatenated;
- a "branch" is two ``relu_sep_conv`` (ReLU -> depthwise -> pointwise), the first one possibly strided;
- additions are summed input terms; an ``identity`` makes an addition that several operators read, and
  the cell's output concatenation.
Per cell: stem 0 18, stem 1 21, first cell 18, normal cell 16, reduction cell 19; 1 + 18 + 21 + 3 x 18
+ 15 x 16 + 2 x 19 + ReLU + pool = 374.
"""
from __future__ import annotations

from typing import List

from ..graph import Block, Graph, Value
from .common import (conv2d, get_parts, identity, placeholder, pool2d, relu, relu_conv, relu_sep_conv, reset_name)

STEM_FILTERS = 96
FILTERS = 168  # penultimate filters 4032 // 24


def _branch(block: Block, x: Value, out: int, kernel: int, stride: int, keep_width: bool = True) -> Value:
    """Two ReLU-separable convs, the first strided. ``keep_width``: the first keeps ``x``'s channels
    (cells); otherwise it already has ``out`` (the stem's branches on the stem conv)."""
    pad = (kernel // 2, kernel // 2)
    first = x.length if keep_width else out
    v = relu_sep_conv(block, [[x]], first, (kernel, kernel), (stride, stride), pad)
    return relu_sep_conv(block, [[v]], out, (kernel, kernel), (1, 1), pad)


def _pool(block: Block, x: Value, pool_type: str, stride: int) -> Value:
    return pool2d(block, [[x]], pool_type, kernel=(3, 3), stride=(stride, stride), padding=(1, 1))


def _squeeze(block: Block, x: Value, out: int, stride: int = 1) -> Value:
    """ReLU then a 1x1 conv: how a cell adapts an input to its width."""
    return relu_conv(block, [[x]], out, kernel=(1, 1), stride=(stride, stride))


def _stem0(block: Block, x: Value, f: int) -> Value:
    x1 = _squeeze(block, x, f)
    c0 = identity(block, [[_branch(block, x1, f, 5, 2), _branch(block, x, f, 7, 2, keep_width=False)]])
    c1 = identity(block, [[_pool(block, x1, "max", 2), _branch(block, x, f, 7, 2, keep_width=False)]])
    c2 = [_pool(block, x1, "avg", 2), _branch(block, x, f, 5, 2, keep_width=False)]
    c3 = [_pool(block, c0, "avg", 1), c0]
    c4 = [_branch(block, c0, f, 3, 1), _pool(block, x1, "max", 2)]
    return identity(block, [[c1], c2, c3, c4])


def _stem1(block: Block, x: Value, x_prev: Value, f: int) -> Value:
    left = _squeeze(block, x, f)
    right = identity(block, [[_squeeze(block, x_prev, f // 2, 2), _squeeze(block, x_prev, f // 2, 2)]])
    c0 = identity(block, [[_branch(block, left, f, 5, 2), _branch(block, right, f, 7, 2)]])
    c1 = identity(block, [[_pool(block, left, "max", 2), _branch(block, right, f, 7, 2)]])
    c2 = [_pool(block, left, "avg", 2), _branch(block, right, f, 5, 2)]
    c3 = [_pool(block, c0, "avg", 1), c1]
    c4 = [_branch(block, c0, f, 3, 1), _pool(block, left, "max", 2)]
    return identity(block, [[c1], c2, c3, c4])


def _cell(block: Block, x: Value, x_prev: Value, f_left: int, f_right: int, first: bool = False) -> Value:
    """A normal cell, or (``first``) the first cell after a reduction: there ``x_prev`` has twice ``x``'s
    resolution, so the left input is two strided 1x1 convs, concatenated, and the output starts with it."""
    if first:
        left = identity(block, [[_squeeze(block, x_prev, f_left, 2)], [_squeeze(block, x_prev, f_left, 2)]])
        f_branch = f_right  # the left input is 2 * f_left == f_right wide
    else:
        left = _squeeze(block, x_prev, f_left)
        f_branch = f_left
    right = _squeeze(block, x, f_right)
    c0 = [_branch(block, right, f_right, 5, 1), _branch(block, right if first else left, f_branch, 3, 1)]
    c1 = [_branch(block, left, f_branch, 5, 1), _branch(block, left, f_branch, 3, 1)]
    c2 = [_pool(block, right, "avg", 1), left]
    c3 = [_pool(block, left, "avg", 1), _pool(block, left, "avg", 1)]
    c4 = [_branch(block, right, f_right, 3, 1), right]
    return identity(block, ([[left]] if first else []) + [c0, c1, c2, c3, c4])


def _reduction_cell(block: Block, x: Value, x_prev: Value, f_left: int, f_right: int) -> Value:
    left = _squeeze(block, x_prev, f_left)
    right = _squeeze(block, x, f_right)
    c0 = identity(block, [[_branch(block, right, f_right, 5, 2), _branch(block, left, f_right, 7, 2)]])
    c1_terms = [_pool(block, right, "max", 2), _branch(block, left, f_right, 7, 2)]
    c1 = identity(block, [c1_terms])
    c2 = [_pool(block, right, "avg", 2), _branch(block, left, f_right, 5, 2)]
    c3 = [c1, _pool(block, c0, "avg", 1)]
    c4 = [_branch(block, c0, f_right, 3, 1), _pool(block, right, "max", 2)]
    return identity(block, [c1_terms, c2, c3, c4])


def nasnet_large() -> Graph:
    """NASNet-A large without weights (call ``graph.init_weights(seed)``); node names restart at "0"."""
    reset_name()
    f = FILTERS
    x = placeholder((3, 331, 331))
    block = Block(x.node)
    conv0 = conv2d(block, [[x]], STEM_FILTERS, kernel=(3, 3), stride=(2, 2), act="identity")
    stem0 = _stem0(block, conv0, f // 4)
    cells: List[Value] = [x, conv0, stem0, _stem1(block, stem0, conv0, f // 2)]
    # three stacks: a first cell, five normal cells, then (except after the last) a reduction cell
    cells.append(_cell(block, cells[-1], cells[-2], f // 2, f, first=True))
    for stack, width in enumerate((f, 2 * f, 4 * f)):
        if stack:
            cells.append(_cell(block, cells[-1], cells[-3], width // 2, width, first=True))
        for _ in range(5):
            cells.append(_cell(block, cells[-1], cells[-2], width, width))
        if stack < 2:
            cells.append(_reduction_cell(block, cells[-1], cells[-2], 2 * width, 2 * width))
    cells.append(relu(block, [[cells[-1]]]))
    cells.append(pool2d(block, [[cells[-1]]], "global_avg", is_exit=True))
    block.parts = get_parts(block, cells)
    return Graph("nasnet_large", x.node, [block])

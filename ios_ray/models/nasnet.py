"""NASNet-A large (Zoph et al. 2018), 3x331x331 input: 374 operators in 9 blocks.

Data flow: placeholder -> conv 3x3/2 (96) -> stem cells 0 and 1 (reduction cells) -> cell 0 (first
cell) + normal cells 1-5 at 42x42 -> reduction cell 0 -> cell 6 + cells 7-11 at 21x21 -> reduction
cell 1 -> cell 12 + cells 13-17 at 11x11 -> global average pool -> fully connected (output 1000x1x1).
Filters follow the public NASNet-A large (penultimate 4032, so f = 168 per cell branch at 42x42).

Every cell reads the outputs of the two cells before it (``x`` and ``x_prev``), so a network-wide
single-tensor cut point does not exist. A block therefore ends in a *carry* ``identity`` that
concatenates ``[x_prev | x]`` for the next block, which reads the two back as channel slices of its
enter node. Carries sit after normal or first cells only, where ``x_prev`` and ``x`` agree in size.

How operators are counted (the IOS paper's 374):
- batch norm is folded into the preceding conv; a 1x1 conv (or a 1x1 stride-2 path conv) is one
  ``conv2d``; one separable conv (ReLU -> depthwise -> pointwise) is one ``sep_conv`` with
  ``pre_act='relu'``, so a NASNet "branch separables" (two of them) is two operators;
- every consumer of a cell output applies ReLU first, so a cell's output concat is one ``relu``
  (ReLU of the concat) and the cell-input 1x1 convs need no ReLU node of their own;
- a combination's addition is free when its sum is read only by the cell's output concat (it
  becomes a summed input term there, also where comb 3 re-adds comb 1); it is one ``add`` when a
  pool or separable conv reads the sum (comb 0 of stem and reduction cells);
- the first cell's factorised reduction path is two 1x1 stride-2 convs whose outputs are read as
  concatenated terms (no concat node). The original shifts the second path by one pixel; the IR has
  no crop, so both paths sample the same pixels (same cost, different weights).
- average pools count padding in the divisor (the original excludes it; same cost).

Per-cell counts: conv0 1; stem 0: 17; stem 1: 19; first cell 17; normal cell 16; reduction cell 18;
head (global pool + FC as 1x1 conv) 2; carries 8. Total 1+17+19+3*17+15*16+2*18+2+8 = 374.
Blocks (operators): conv0, stems, cell 0 (55) | cells 1-3 (49) | 4-5 (33) | red 0, cells 6-7 (52) |
8-9 (33) | 10-11 (33) | red 1, cells 12-13 (52) | 14-15 (33) | 16-17, head (34).
"""
from __future__ import annotations

from typing import List, Tuple

from ..graph import Block, Graph, Value, add, conv2d, identity, placeholder, pool2d, relu, sep_conv

STEM_FILTERS = 96
FILTERS = 168  # penultimate_filters 4032 // 24
NUM_CLASSES = 1000

Terms = List[List[Value]]


def _branch(block: Block, inputs: Terms, mid: int, out: int, kernel: int, stride: int) -> Value:
    """NASNet 'branch separables': two ReLU-separable convs, the first carrying the stride."""
    pad = kernel // 2
    v = sep_conv(block, inputs, mid, kernel=kernel, stride=stride, padding=pad, pre_act="relu")
    return sep_conv(block, [[v]], out, kernel=kernel, stride=1, padding=pad, pre_act="relu")


def _avg3(block: Block, inputs: Terms, stride: int = 1) -> Value:
    return pool2d(block, inputs, "avg", kernel=3, stride=stride, padding=1)


def _max3(block: Block, inputs: Terms, stride: int = 2) -> Value:
    return pool2d(block, inputs, "max", kernel=3, stride=stride, padding=1)


def _reduction(block: Block, left: Terms, right: Terms, f: int) -> Value:
    """The reduction pattern shared by both stem cells and both reduction cells.

    ``left`` plays the original's ``x1``/``x_right`` (pools and 5x5 read it); ``right`` the other input.
    The right branches narrow to f in their first separable conv (stem 0's start from 96 channels).
    Output: ReLU of the concat of combinations 1-4, 4f channels at half resolution.
    """
    c0 = add(block, [[_branch(block, left, f, f, 5, 2)], [_branch(block, right, f, f, 7, 2)]])
    c1 = [_max3(block, left), _branch(block, right, f, f, 7, 2)]  # read by the concat only
    c2_left = _avg3(block, left, stride=2)
    c2_right = _branch(block, right, f, f, 5, 2)
    c3 = _avg3(block, [[c0]])
    c4_left = _branch(block, [[c0]], f, f, 3, 1)
    c4_right = _max3(block, left)
    return relu(block, [c1, [c2_left, c2_right], [c3, *c1], [c4_left, c4_right]])


def _stem0(block: Block, x: Value) -> Value:
    x1 = conv2d(block, [[x]], FILTERS // 4, kernel=1, act="identity")
    # The stem branches read the conv0 output, already ReLU'd; their own pre-ReLU is then a no-op.
    return _reduction(block, [[x1]], [[x]], FILTERS // 4)


def _stem1(block: Block, conv0: Value, stem0: Value) -> Value:
    f = FILTERS // 2
    x_left = conv2d(block, [[stem0]], f, kernel=1, act="identity")
    paths = _paths(block, conv0, f)
    return _reduction(block, [[x_left]], paths, f)


def _paths(block: Block, x_prev: Value, out: int) -> Terms:
    """Factorised reduction of ``x_prev`` to half resolution: two 1x1 stride-2 convs, concatenated."""
    p1 = conv2d(block, [[x_prev]], out // 2, kernel=1, stride=2, act="identity")
    p2 = conv2d(block, [[x_prev]], out // 2, kernel=1, stride=2, act="identity")
    return [[p1], [p2]]


def _normal(block: Block, x: Value, x_prev: Value, f_left: int, f: int, first: bool) -> Value:
    """Normal cell (``first``: the cell after a reduction, whose x_prev has twice the resolution).

    Output: ReLU of concat[x_left, c0..c4], f_left + 5f channels (first cell: 2 f_left + 5f).
    """
    if first:
        left = _paths(block, x_prev, 2 * f_left)
    else:
        left = [[conv2d(block, [[x_prev]], f_left, kernel=1, act="identity")]]
    right = conv2d(block, [[x]], f, kernel=1, act="identity")
    c0_left = _branch(block, [[right]], f, f, 5, 1)
    c0_right = _branch(block, left, f, f, 3, 1)
    c1_left = _branch(block, left, f, f, 5, 1)
    c1_right = _branch(block, left, f, f, 3, 1)
    c2_left = _avg3(block, [[right]])
    c3_left = _avg3(block, left)
    c3_right = _avg3(block, left)
    c4_left = _branch(block, [[right]], f, f, 3, 1)
    # c2 = avg(right) + x_left: x_left may be two path terms, so split the pool output to match them.
    c2_terms, offset = [], 0
    for term in left:
        width = term[0].length
        c2_terms.append([c2_left[offset:offset + width], *term])
        offset += width
    return relu(block, [*left, [c0_left, c0_right], [c1_left, c1_right], *c2_terms, [c3_left, c3_right],
                        [c4_left, right]])


class _Builder:
    """Lays cells into blocks, tracking the last two cell outputs across carry cuts."""

    def __init__(self, x: Value):
        self.block = Block(x.node)
        self.blocks: List[Block] = []
        self.prev: Value = x
        self.cur: Value = x

    def push(self, out: Value) -> None:
        self.prev, self.cur = self.cur, out

    def cut(self) -> None:
        """End the block with a carry concat [prev | cur]; the next block reads them as slices."""
        carry = identity(self.block, [[self.prev], [self.cur]], is_exit=True)
        self.blocks.append(self.block)
        self.block = Block(carry.node)
        self.prev = carry[0:self.prev.length]
        self.cur = carry[self.prev.length:carry.length]


def nasnet_large() -> Graph:
    """NASNet-A large without weights (call ``graph.init_weights(seed)``)."""
    x = placeholder((3, 331, 331), name="input")
    b = _Builder(x)
    conv0 = conv2d(b.block, [[x]], STEM_FILTERS, kernel=3, stride=2)  # ReLU'd: every reader starts with ReLU
    stem0 = _stem0(b.block, conv0)
    stem1 = _stem1(b.block, conv0, stem0)
    b.prev, b.cur = stem0, stem1
    f = FILTERS
    # (cell kind, f_left, f) per cell; 'cut' ends a block.
    plan = [("first", f // 2, f), "cut",
            ("normal", f, f), ("normal", f, f), ("normal", f, f), "cut",
            ("normal", f, f), ("normal", f, f), "cut",
            ("reduction", 2 * f, 2 * f), ("first", f, 2 * f), ("normal", 2 * f, 2 * f), "cut",
            ("normal", 2 * f, 2 * f), ("normal", 2 * f, 2 * f), "cut",
            ("normal", 2 * f, 2 * f), ("normal", 2 * f, 2 * f), "cut",
            ("reduction", 4 * f, 4 * f), ("first", 2 * f, 4 * f), ("normal", 4 * f, 4 * f), "cut",
            ("normal", 4 * f, 4 * f), ("normal", 4 * f, 4 * f), "cut",
            ("normal", 4 * f, 4 * f), ("normal", 4 * f, 4 * f)]
    for step in plan:
        if step == "cut":
            b.cut()
            continue
        kind, f_left, f_right = step
        if kind == "reduction":
            x_left = conv2d(b.block, [[b.prev]], f_left, kernel=1, act="identity")
            x_right = conv2d(b.block, [[b.cur]], f_right, kernel=1, act="identity")
            out = _reduction(b.block, [[x_right]], [[x_left]], f_right)
        else:
            out = _normal(b.block, b.cur, b.prev, f_left, f_right, first=(kind == "first"))
        b.push(out)
    pooled = pool2d(b.block, [[b.cur]], "global_avg")
    conv2d(b.block, [[pooled]], NUM_CLASSES, kernel=1, act="identity", is_exit=True)
    b.blocks.append(b.block)
    return Graph("nasnet_large", x.node, b.blocks)

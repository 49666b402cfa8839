"""NASNet-A large (Zoph et al. 2018), 3x331x331 input: 374 operators in 23 blocks.

Data flow: placeholder -> conv 3x3/2 (96) -> stem cells 0 and 1 -> cell 0 (first cell) + normal cells
1-5 at 42x42 -> reduction cell 0 -> cell 6 (first) + cells 7-11 at 21x21 -> reduction cell 1 -> cell 12
(first) + cells 13-17 at 11x11 -> head: global average pool + fully connected (output 1000x1x1).
Filters follow the public NASNet-A large (penultimate 4032: f = 168 per branch at 42x42).

Blocks: one block per cell (the stem conv shares stem 0's block), plus the head. A cell reads the
outputs of the two cells before it (``x`` and ``x_prev``), so a block's exit carries both, concatenated
``[x | cell output]``, and the next block reads them back as channel slices of its enter node:
- after a normal or first cell the carry is free: the cell's output concat is a ``relu`` node (see
  below) whose first term is ``x``; ``x`` is already ReLU'd, so ReLU leaves it unchanged;
- after a stem or reduction cell, ``x_prev`` of the next cell has twice the resolution, so the next
  cell's factorised-reduction path convs (two 1x1 stride-2 convs on it) move into this block and an
  ``identity`` carry concatenates ``[path 1 | path 2 | cell output]`` (4 such carries).

How operators are counted (the IOS paper's 374):
- batch norm is folded into the preceding conv; a 1x1 conv (or 1x1 stride-2 path conv) is one
  ``conv2d``; a separable conv (ReLU -> depthwise -> pointwise) is one ``sep_conv`` with
  ``pre_act='relu'``, so a NASNet "branch separables" (two of them) is two operators;
- every reader of a cell's output applies ReLU first, so the cell's output concat is one ``relu``
  node and the convs reading it need no ReLU of their own (the stem conv likewise has ``act='relu'``);
- an addition is free (a summed input term) when only the cell's output concat reads it; it is one
  ``add`` when it is read twice: combinations 0 and 1 of stem and reduction cells;
- average pools count padding in the divisor (the original excludes it; same cost), and both path
  convs sample the same pixels (the original shifts the second path by one pixel; the IR has no crop).

Per cell: conv0 1; stem 0 18; stem 1 20; first cell 17; normal cell 16; reduction cell 19; head 2;
carries 4. Total 1 + 18 + 20 + 3*17 + 15*16 + 2*19 + 2 + 4 = 374. Block sizes: 22 (conv0, stem 0,
stem 1's paths, carry), 21 (stem 1, cell 0's paths, carry), 15 (first cells: their paths sit in the
block before), 16 (normal cells), 22 (reduction cell, next cell's paths, carry), 2 (head).
"""
from __future__ import annotations

from typing import List, Tuple

from ..graph import Block, Graph, Value, add, conv2d, identity, placeholder, pool2d, relu, sep_conv

STEM_FILTERS = 96
FILTERS = 168  # penultimate_filters 4032 // 24
NUM_CLASSES = 1000

Terms = List[List[Value]]


def _branch(block: Block, inputs: Terms, out: int, kernel: int, stride: int) -> Value:
    """NASNet 'branch separables': two ReLU-separable convs, the first one striding."""
    pad = kernel // 2
    v = sep_conv(block, inputs, out, kernel=kernel, stride=stride, padding=pad, pre_act="relu")
    return sep_conv(block, [[v]], out, kernel=kernel, stride=1, padding=pad, pre_act="relu")


def _avg3(block: Block, inputs: Terms, stride: int = 1) -> Value:
    return pool2d(block, inputs, "avg", kernel=3, stride=stride, padding=1)


def _max3(block: Block, inputs: Terms) -> Value:
    return pool2d(block, inputs, "max", kernel=3, stride=2, padding=1)


def _paths(block: Block, x_prev: Value, out: int) -> Terms:
    """Factorised reduction of ``x_prev`` to half resolution: two 1x1 stride-2 convs, as two terms."""
    p1 = conv2d(block, [[x_prev]], out // 2, kernel=1, stride=2, act="identity")
    p2 = conv2d(block, [[x_prev]], out // 2, kernel=1, stride=2, act="identity")
    return [[p1], [p2]]


def _reduction_terms(block: Block, left: Terms, right: Terms, f: int) -> Terms:
    """The combinations shared by the stem and reduction cells, as the terms of their output concat.

    ``left`` is what the pools and the 5x5 of combination 0 read (the original's ``x1``/``x_right``),
    ``right`` the other input. Output: combinations 1-4, 4f channels at half resolution.
    """
    c0 = add(block, [[_branch(block, left, f, 5, 2)], [_branch(block, right, f, 7, 2)]])
    c1 = add(block, [[_max3(block, left)], [_branch(block, right, f, 7, 2)]])
    c2 = [_avg3(block, left, stride=2), _branch(block, right, f, 5, 2)]
    c3 = [_avg3(block, [[c0]]), c1]
    c4 = [_branch(block, [[c0]], f, 3, 1), _max3(block, left)]
    return [[c1], c2, c3, c4]


def _normal_terms(block: Block, x: Value, left: Terms, f: int) -> Terms:
    """A normal cell's combinations given its x_left terms; output concat [x_left, c0..c4] as terms."""
    right = conv2d(block, [[x]], f, kernel=1, act="identity")
    c0 = [_branch(block, [[right]], f, 5, 1), _branch(block, left, f, 3, 1)]
    c1 = [_branch(block, left, f, 5, 1), _branch(block, left, f, 3, 1)]
    c2_pool = _avg3(block, [[right]])
    c3 = [_avg3(block, left), _avg3(block, left)]
    c4 = [_branch(block, [[right]], f, 3, 1), right]
    # c2 = avg(right) + x_left; x_left may be two path terms, so the pool output is split to match.
    c2, offset = [], 0
    for term in left:
        width = term[0].length
        c2.append([c2_pool[offset:offset + width], *term])
        offset += width
    return [*left, c0, c1, *c2, c3, c4]


def _split(carry: Value, widths: Tuple[int, ...]) -> List[Value]:
    """The channel slices of a carry concat, one per width."""
    out, offset = [], 0
    for w in widths:
        out.append(carry[offset:offset + w])
        offset += w
    return out


def nasnet_large() -> Graph:
    """NASNet-A large without weights (call ``graph.init_weights(seed)``)."""
    f = FILTERS
    x_in = placeholder((3, 331, 331), name="input")
    blocks: List[Block] = []

    # Block: conv0 + stem 0, then stem 1's paths on conv0. Carry [p1 | p2 | stem0].
    block = Block(x_in.node)
    conv0 = conv2d(block, [[x_in]], STEM_FILTERS, kernel=3, stride=2)  # ReLU: all its readers start with one
    x1 = conv2d(block, [[conv0]], f // 4, kernel=1, act="identity")
    stem0 = relu(block, _reduction_terms(block, [[x1]], [[conv0]], f // 4))
    paths = _paths(block, conv0, f // 2)
    carry = identity(block, [*paths, [stem0]], is_exit=True)
    blocks.append(block)

    # Block: stem 1, then cell 0's paths on stem 0. Carry [p1 | p2 | stem1].
    block = Block(carry.node)
    p1, p2, stem0 = _split(carry, (f // 4, f // 4, 4 * (f // 4)))
    x_left = conv2d(block, [[stem0]], f // 2, kernel=1, act="identity")
    stem1 = relu(block, _reduction_terms(block, [[x_left]], [[p1], [p2]], f // 2))
    carry = identity(block, [*_paths(block, stem0, f), [stem1]], is_exit=True)
    blocks.append(block)

    # Three stacks of cells: a first cell (its paths came in the carry), normal cells, then (except for
    # the last stack) a reduction cell. Each cell is a block; its exit carries [x | output].
    widths = (f // 2, f // 2, 4 * (f // 2))  # the carry's parts: path 1, path 2, x
    for stack, mult in enumerate((1, 2, 4)):
        fc = f * mult
        p1, p2, x = _split(carry, widths)
        block = Block(carry.node)
        out = relu(block, [[x], *_normal_terms(block, x, [[p1], [p2]], fc)], is_exit=True)
        blocks.append(block)
        x_width = x.length
        for i in range(5):
            last = stack == 2 and i == 4
            x_prev, x = _split(out, (x_width, out.length - x_width))
            block = Block(out.node)
            left = [[conv2d(block, [[x_prev]], fc, kernel=1, act="identity")]]
            terms = _normal_terms(block, x, left, fc)
            out = relu(block, terms if last else [[x], *terms], is_exit=True)
            blocks.append(block)
            x_width = x.length
        if stack == 2:
            break
        # Reduction cell, then the next first cell's paths on this cell's x. Carry [p1 | p2 | reduced].
        x_prev, x = _split(out, (x_width, out.length - x_width))
        block = Block(out.node)
        x_left = conv2d(block, [[x_prev]], 2 * fc, kernel=1, act="identity")
        x_right = conv2d(block, [[x]], 2 * fc, kernel=1, act="identity")
        reduced = relu(block, _reduction_terms(block, [[x_right]], [[x_left]], 2 * fc))
        carry = identity(block, [*_paths(block, x, 2 * fc), [reduced]], is_exit=True)
        blocks.append(block)
        widths = (fc, fc, reduced.length)

    block = Block(out.node)
    pooled = pool2d(block, [[out]], "global_avg")
    conv2d(block, [[pooled]], NUM_CLASSES, kernel=1, act="identity", is_exit=True)
    blocks.append(block)
    return Graph("nasnet_large", x_in.node, blocks)

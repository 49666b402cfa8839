"""Split blocks into parts and describe each part as bitmasks; enumerate a part's DP states.

Data flow: ``Graph`` -> ``graph_parts`` (a block's explicit ``parts``, or the whole block; runs of at most
``max_part_size`` nodes) -> one ``PartGraph`` per part (nodes in dependency order, bit i
is node i, precomputed predecessor and descendant masks) -> ``part_states`` -> the DP states.

A DP state is the set of a part's operators not yet scheduled (stages are peeled off the end of the
schedule). Scheduling an operator means its descendants are scheduled too, so every state is
ancestor-closed (an "ideal" of the part's DAG), and, as a single sink is always a valid stage, every
ideal is reachable from the full part: the states are exactly the ideals.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..graph.ir import Block, Graph, Node, topo_order
from .options import SpaceOptions


@dataclass(frozen=True, eq=False)
class PartGraph:
    """One part of a block as a DAG over bit positions.

    Attributes:
        block_index, part_index: where the part lives in the graph.
        nodes: the part's operators in dependency order; bit ``i`` of a state is ``nodes[i]``.
        preds: ``preds[i]`` is the mask of ``nodes[i]``'s inputs inside the part.
        desc: ``desc[i]`` is the mask of ``nodes[i]`` and all its descendants inside the part.
    Edges to nodes of other parts are ignored: those outputs are external inputs of the part.
    """

    block_index: int
    part_index: int
    nodes: Tuple[Node, ...]
    preds: Tuple[int, ...]
    desc: Tuple[int, ...]
    fixed: int = 0  # nodes that must keep their own output (the block's exit): never merged
    names: Tuple[str, ...] = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(n.name for n in self.nodes))

    @property
    def size(self) -> int:
        return len(self.nodes)

    @property
    def full(self) -> int:
        """The state holding every operator of the part (where the DP starts)."""
        return (1 << len(self.nodes)) - 1

    def names_of(self, mask: int) -> Tuple[str, ...]:
        """Node names of the bits of ``mask``, in dependency order."""
        return mask_names(self.names, mask)


def mask_names(names: Tuple[str, ...], mask: int) -> Tuple[str, ...]:
    """``names[i]`` for every set bit ``i`` of ``mask``, lowest bit first."""
    out = []
    while mask:
        low = mask & -mask
        out.append(names[low.bit_length() - 1])
        mask ^= low
    return tuple(out)


def make_part(block_index: int, part_index: int, nodes: List[Node], keep: Optional[Node] = None) -> PartGraph:
    """Bitmask description of ``nodes`` (which must be in dependency order); ``keep`` is never merged."""
    index = {id(n): i for i, n in enumerate(nodes)}
    preds = []
    for i, node in enumerate(nodes):
        mask = 0
        for p in node.input_nodes():
            j = index.get(id(p))
            if j is not None:
                if j >= i:
                    raise ValueError(f"part {block_index}.{part_index}: {node.display()} comes before its input "
                                     f"{p.display()}; part nodes must be in dependency order")
                mask |= 1 << j
        preds.append(mask)
    desc = [1 << i for i in range(len(nodes))]
    for i in range(len(nodes) - 1, -1, -1):  # reverse dependency order: successors are final
        pm = preds[i]
        while pm:
            low = pm & -pm
            desc[low.bit_length() - 1] |= desc[i]
            pm ^= low
    fixed = sum(1 << i for i, n in enumerate(nodes) if n is keep)
    return PartGraph(block_index, part_index, tuple(nodes), tuple(preds), tuple(desc), fixed)


def graph_parts(graph: Graph, opts: SpaceOptions) -> List[List[PartGraph]]:
    """Per block, its parts: the block's own ``parts`` when it has them, else all its nodes; either way
    cut into consecutive runs of at most ``opts.max_part_size`` nodes in dependency order.

    Raises:
        ValueError: explicit parts that name an operator outside the block, leave one out, hold one
            twice, or read a later part (see ``explicit_parts``).
    """
    out = []
    size = opts.max_part_size
    for bi, block in enumerate(graph.blocks):
        order = topo_order(block)
        groups = [order] if block.parts is None else explicit_parts(block, bi, order)
        runs = [group[start:start + size] for group in groups for start in range(0, len(group), size)]
        out.append([make_part(bi, pi, run, keep=block.exit_node) for pi, run in enumerate(runs)])
    return out


def explicit_parts(block: Block, block_index: int, order: Sequence[Node]) -> List[List[Node]]:
    """``block.parts`` (lists of nodes or node names, e.g. from ``get_parts``) as lists of nodes, each in
    the dependency order ``order``.

    The DP schedules parts one after another, so every operator must be in exactly one part and no
    operator may read one of a later part.

    Raises:
        ValueError: naming the block, the part and the operator at fault.
    """
    position = {id(n): i for i, n in enumerate(order)}
    by_name = {n.name: n for n in order}
    part_of: Dict[int, int] = {}
    parts = []
    for pi, items in enumerate(block.parts):
        nodes = []
        for item in items:
            node = by_name.get(item) if isinstance(item, str) else item
            if not isinstance(node, Node) or id(node) not in position:
                raise ValueError(f"block {block_index} part {pi}: {item!r} is not an operator of the block")
            if id(node) in part_of:
                raise ValueError(f"block {block_index}: {node.display()} is in parts {part_of[id(node)]} and {pi}")
            part_of[id(node)] = pi
            nodes.append(node)
        if not nodes:
            raise ValueError(f"block {block_index} part {pi} is empty")
        parts.append(sorted(nodes, key=lambda n: position[id(n)]))
    missing = [n.display() for n in order if id(n) not in part_of]
    if missing:
        raise ValueError(f"block {block_index}: its parts leave out {len(missing)} operators, e.g. {missing[:3]}")
    for node in order:
        for src in node.input_nodes():
            if part_of.get(id(src), -1) > part_of[id(node)]:
                raise ValueError(f"block {block_index}: {node.display()} in part {part_of[id(node)]} reads "
                                 f"{src.display()} of the later part {part_of[id(src)]}; parts run in order")
    return parts


def part_states(part: PartGraph) -> List[int]:
    """Every DP state of ``part`` (its ideals), ordered by size then mask value, the empty state first.

    Each ideal's complement F (the scheduled tail) is descendant-closed; adding F's nodes in
    decreasing index order keeps every intermediate set descendant-closed, so a DFS that only adds
    nodes of smaller index than the last one added builds each F exactly once.
    """
    n = part.size
    full = part.full
    # strict successors inside the part: node u may join F once they are all in F
    succ_strict = [part.desc[i] & ~(1 << i) for i in range(n)]
    found = [full]
    stack = [(0, n)]  # (F, the index of F's smallest node or n)
    while stack:
        f, last = stack.pop()
        for u in range(last - 1, -1, -1):
            if succ_strict[u] & ~f == 0:
                g = f | (1 << u)
                found.append(full ^ g)
                stack.append((g, u))
    found.sort(key=lambda s: (s.bit_count(), s))
    return found


def part_width(part: PartGraph) -> int:
    """The largest set of mutually independent operators of the part (its maximum antichain).

    By Dilworth's theorem it is ``size - (maximum matching of u -> v for v a strict descendant of u)``.
    """
    n = part.size
    later = [[v for v in range(n) if v != u and part.desc[u] >> v & 1] for u in range(n)]
    match_of: List[int] = [-1] * n  # descendant v -> the u it is matched with

    def augment(u: int, seen: List[bool]) -> bool:
        for v in later[u]:
            if not seen[v]:
                seen[v] = True
                if match_of[v] < 0 or augment(match_of[v], seen):
                    match_of[v] = u
                    return True
        return False

    return n - sum(augment(u, [False] * n) for u in range(n))

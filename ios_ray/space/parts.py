"""Split blocks into parts and describe each part as bitmasks; enumerate a part's DP states.

Data flow: ``Graph`` -> ``graph_parts`` -> one ``PartGraph`` per part (nodes in dependency order, bit i
is node i, precomputed predecessor and descendant masks) -> ``part_states`` -> the DP states.

A DP state is the set of a part's operators not yet scheduled (stages are peeled off the end of the
schedule). Scheduling an operator means its descendants are scheduled too, so every state is
ancestor-closed (an "ideal" of the part's DAG), and, as a single sink is always a valid stage, every
ideal is reachable from the full part: the states are exactly the ideals.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from ..graph.ir import Graph, Node, topo_order
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
    """Per block, its parts: consecutive runs of ``opts.max_part_size`` nodes of ``topo_order(block)``."""
    out = []
    for bi, block in enumerate(graph.blocks):
        order = topo_order(block)
        size = opts.max_part_size
        out.append([make_part(bi, pi, order[start:start + size], keep=block.exit_node)
                    for pi, start in enumerate(range(0, len(order), size))])
    return out


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

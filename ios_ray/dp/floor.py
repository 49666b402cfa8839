"""The critical-path floor of a graph: no schedule of its operators, as they are, can beat it (pure).

Data flow: ``{node name: ms}`` (every operator timed alone, as a one-operator stage, the way the profiler
measures it) + the graph's blocks --> per block, the longest path through the block's DAG weighted by
those times --> summed over blocks (blocks run one after another).

It assumes perfect concurrency (operators on a path wait only for their inputs) and no slowdown from
sharing the device, so a measured schedule at the floor has nothing left to gain from inter-operator
parallelism; merging convolutions changes the operators and can go below it.
"""
from __future__ import annotations

from typing import List, Mapping

from ..graph.ir import Block, Graph, topo_order


def block_critical_path(block: Block, op_ms: Mapping[str, float]) -> float:
    """The longest path through ``block``'s operators, each weighted by ``op_ms[name]``.

    Raises:
        ValueError: an operator of the block has no time, or a time that is negative or not a number.
    """
    # finish[name]: the earliest time the operator can end = its own time + the latest end among the
    # block's operators it reads (the block's enter node is ready at 0). Topological order fills it.
    finish = {}
    for node in topo_order(block):
        if node.name not in op_ms:
            raise ValueError(f"no time for operator {node.name!r} of the block entered at "
                             f"{block.enter_node.name!r}: time every operator alone first")
        ms = float(op_ms[node.name])
        if not ms >= 0:
            raise ValueError(f"operator {node.name!r}: time {ms} is not a non-negative number")
        ready = max((finish[p.name] for p in node.input_nodes() if p.name in finish), default=0.0)
        finish[node.name] = ready + ms
    return max(finish.values(), default=0.0)


def block_floors(graph: Graph, op_ms: Mapping[str, float]) -> List[float]:
    """``block_critical_path`` of every block, in order (see ``critical_path_floor``)."""
    return [block_critical_path(b, op_ms) for b in graph.blocks]


def critical_path_floor(graph: Graph, op_ms: Mapping[str, float]) -> float:
    """The graph's critical-path floor in ms: the blocks' critical paths summed.

    Args:
        graph: the graph (its blocks and their operators; schedules are ignored).
        op_ms: every operator's latency alone, by node name (extra names are ignored).
    Returns:
        The floor, in the unit of ``op_ms``.
    Raises:
        ValueError: an operator has no time, or a negative or NaN one.
    """
    return float(sum(block_floors(graph, op_ms)))

"""IOS blocks of a flat DAG: cut at the operators every path from the input to the output goes through.

Data flow: a placeholder, the operators in dependency order and the output operator (an imported model)
--``live_nodes``--> the operators the output needs --``split_blocks``--> the Blocks a ``Graph`` chains.

A block boundary ("cut") is an operator that dominates everything after it and post-dominates everything
before it, like the ends of IOS's hand-made blocks (an Inception module's concat). With every operator
on some path from the input to the output, an operator at position ``i`` of any dependency order is a
cut exactly when no edge jumps over it (from a position before ``i`` to one after): such an edge would be a
path around it, and without one every path has to step through position ``i``. So one sweep over the
edges finds the cuts, and no operator after a cut can run concurrently with one before it: cutting there
loses the DP no schedule. Each block runs from the previous cut (its enter node; the placeholder for the
first) to the next cut (its exit node), which keeps every block at one operator or more. Long blocks are
split into parts later, by the state space (``space/parts.py``, ``max_part_size``).

Pure: imports only the IR.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

from .ir import Block, Node, Placeholder


def live_nodes(nodes: Sequence[Node], output: Node) -> List[Node]:
    """The operators of ``nodes`` that ``output`` depends on (itself included), in the given order."""
    needed = {id(output)}
    for node in reversed(list(nodes)):
        if id(node) in needed:
            needed.update(id(p) for p in node.input_nodes())
    return [n for n in nodes if id(n) in needed]


def split_blocks(input_node: Placeholder, nodes: Sequence[Node], output: Node) -> List[Block]:
    """Blocks of the DAG of ``nodes`` fed by ``input_node``, cut where every input-to-output path meets.

    Args:
        input_node: the graph's placeholder.
        nodes: every operator, in dependency order, each needed by ``output`` (see ``live_nodes``).
        output: the graph's output operator; it must be the last of ``nodes``.
    Returns:
        The blocks in order; the first enters at ``input_node``, each next one at the previous one's exit,
        and the last one's exit is ``output``.
    Raises:
        ValueError: ``output`` is not the last node, a node reads one that comes after it or is not given,
            or a node is not needed by the output.
    """
    nodes = list(nodes)
    if not nodes or nodes[-1] is not output:
        raise ValueError(f"split_blocks: the output {output.display()} must be the last of the nodes")
    position: Dict[int, int] = {id(input_node): 0}
    for i, node in enumerate(nodes, start=1):
        position[id(node)] = i
    # cover[i]: how many edges jump over position i (a difference array: +1 after the source, -1 at the target)
    cover = [0] * (len(nodes) + 2)
    for i, node in enumerate(nodes, start=1):
        for src in node.input_nodes():
            j = position.get(id(src))
            if j is None or j >= i:
                raise ValueError(f"split_blocks: {node.display()} reads {src.display()}, which is not an earlier "
                                 f"node of the graph")
            cover[j + 1] += 1
            cover[i] -= 1
    if len(live_nodes(nodes, output)) != len(nodes):
        raise ValueError("split_blocks: some nodes are not needed by the output; drop them first (live_nodes)")
    blocks: List[Block] = []
    enter: Node = input_node
    members: List[Node] = []
    jumping = 0
    for i, node in enumerate(nodes, start=1):
        jumping += cover[i]
        if jumping == 0:   # a cut: every path from the input to the output goes through it
            blocks.append(Block(enter, node, members))
            enter, members = node, []
        else:
            members.append(node)
    return blocks


__all__ = ["live_nodes", "split_blocks"]

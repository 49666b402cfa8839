"""RandWire (Xie et al. 2019) as benchmarked in the IOS paper: 120 operators in 6 blocks.

Data flow: placeholder (3x224x224) -> conv 3x3/2 (77 channels) -> four random-graph stages (16, 32, 32,
32 nodes; 154, 308, 616, 1232 channels; each halves the resolution) -> ReLU -> 1x1 conv to 1280 ->
global average pool (output 1280x1x1).

The stages are wired by the four Watts-Strogatz graphs WS(n, 4, 0.75) the original IOS ships, stored in
``randwire_graphs/`` (line 1: node count, line 2: edge count, then one ``u v`` edge per line, u -> v).
Built with the original's builders (``common``), in the original's order, so the graph (node names
included) is the one the original's ``randwire_large`` builds, without its random weights.

How operators are counted (the IOS paper's 120):
- a graph node is one ``rwconv2d`` (ReLU -> depthwise 3x3 -> pointwise); its predecessors' outputs are
  summed in its one input term. Nodes without predecessors read the stage input with stride 2;
- a stage ends in one ``identity`` that sums the outputs of the nodes without successors;
- front conv 1 + stages (16+1) + 3 x (32+1) + tail (ReLU, 1x1 conv, pool) 3 = 120.
Each stage is one block (17 or 33 operators): its input and output are single tensors.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from ..graph import Block, Graph, Value
from .common import conv2d, identity, placeholder, pool2d, relu, reset_name, rwconv2d

GRAPH_DIR = Path(__file__).resolve().parent / "randwire_graphs"
STAGE_GRAPHS = ("ws-16-4-0.75-2.txt", "ws-32-4-0.75-3.txt", "ws-32-4-0.75-4.txt", "ws-32-4-0.75-5.txt")
BASE_CHANNELS = 154

Edge = Tuple[int, int]


def read_graph(path: Path) -> Tuple[int, Tuple[Edge, ...]]:
    """The node count and directed edges of a stored graph file, edges in file order.

    Raises:
        ValueError: a malformed file (naming it and the line), an edge outside ``0..n-1``, or a cycle.
    """
    lines = Path(path).read_text().split("\n")
    try:
        n, m = int(lines[0]), int(lines[1])
        edges = []
        for lineno in range(3, 3 + m):
            u, v = (int(x) for x in lines[lineno - 1].split())
            edges.append((u, v))
    except (IndexError, ValueError):
        raise ValueError(f"{path}: expected the node count, the edge count, then one 'u v' edge per line") from None
    bad = [e for e in edges if not (0 <= e[0] < n and 0 <= e[1] < n and e[0] != e[1])]
    if bad:
        raise ValueError(f"{path}: edges {bad[:3]} are not between two distinct nodes of 0..{n - 1}")
    if len(build_order(n, edges)) != n:
        raise ValueError(f"{path}: the graph has a cycle")
    return n, tuple(edges)


def build_order(n: int, edges: Sequence[Edge]) -> List[int]:
    """The order the stage's nodes are built in: Kahn's algorithm with a stack (the last ready node next,
    successors readied in edge order), as the original builds them, so names match its."""
    indegree = [0] * n
    succ: List[List[int]] = [[] for _ in range(n)]
    for u, v in edges:
        indegree[v] += 1
        succ[u].append(v)
    ready = [u for u in range(n) if indegree[u] == 0]
    order = []
    while ready:
        u = ready.pop()
        order.append(u)
        for v in succ[u]:
            indegree[v] -= 1
            if indegree[v] == 0:
                ready.append(v)
    return order


def _stage(x: Value, channels: int, n: int, edges: Sequence[Edge]) -> Tuple[Value, Block]:
    """One random-graph stage; node ``v`` sums the outputs of its predecessors in edge order."""
    block = Block(x.node)
    preds: List[List[int]] = [[] for _ in range(n)]
    has_succ = [False] * n
    for u, v in edges:
        preds[v].append(u)
        has_succ[u] = True
    out: List[Optional[Value]] = [None] * n
    for node in build_order(n, edges):
        if preds[node]:
            out[node] = rwconv2d(block, [[out[u] for u in preds[node]]], channels, stride=(1, 1))
        else:
            out[node] = rwconv2d(block, [[x]], channels, stride=(2, 2))
    sinks = [out[u] for u in range(n) if not has_succ[u]]
    return identity(block, [sinks], is_exit=True), block


def randwire_large() -> Graph:
    """RandWire-large without weights (call ``graph.init_weights(seed)``); node names restart at "0"."""
    reset_name()
    x = placeholder((3, 224, 224))
    front = Block(x.node)
    v = conv2d(front, [[x]], BASE_CHANNELS // 2, kernel=(3, 3), stride=(2, 2), padding=(1, 1), act="identity",
               is_exit=True)
    blocks = [front]
    for si, fname in enumerate(STAGE_GRAPHS):
        v, block = _stage(v, BASE_CHANNELS * 2 ** si, *read_graph(GRAPH_DIR / fname))
        blocks.append(block)
    tail = Block(v.node)
    v = relu(tail, [[v]])
    v = conv2d(tail, [[v]], 1280, kernel=(1, 1), act="identity")
    pool2d(tail, [[v]], "global_avg", is_exit=True)
    blocks.append(tail)
    return Graph("randwire_large", x.node, blocks)

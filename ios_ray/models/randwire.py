"""RandWire (Xie et al. 2019), the large "regular regime" network of the IOS paper: 120 operators.

Data flow: placeholder (3x224x224) -> conv 3x3/2 (77 channels) -> four random-graph stages
(16, 32, 32, 32 nodes; 154, 308, 616, 1232 channels; each halves the resolution) -> ReLU -> 1x1
conv to 1280 -> global average pool (output 1280x1x1).

Each stage's wiring is a Watts-Strogatz graph WS(n, k=4, p=0.75) drawn by ``watts_strogatz`` with
``random.Random(seed)`` from the fixed seeds in ``STAGES``, so every build yields the same network
(no files, no networkx). Edges point from the lower to the higher node index, which makes a DAG.

How operators are counted (as in the IOS paper's 120):
- a graph node is one ``sep_conv`` with ``pre_act='relu'`` (ReLU -> depthwise 3x3 -> pointwise,
  batch norm folded); its aggregation is free: its predecessors' outputs are summed in one input
  term. Nodes without predecessors read the stage input with stride 2;
- a stage ends in one ``identity`` that sums the outputs of the nodes without successors;
- front conv 1 + stages (16+1) + 3 x (32+1) + tail (ReLU, 1x1 conv, pool) 3 = 120.
Each stage is one block (17 or 33 operators): its input and output are single tensors.
"""
from __future__ import annotations

import random
from typing import List, Sequence, Tuple

from ..graph import Block, Graph, Value, conv2d, identity, placeholder, pool2d, relu, sep_conv

# (nodes, neighbours k, rewiring probability p, seed) of each stage's Watts-Strogatz graph.
STAGES: Tuple[Tuple[int, int, float, int], ...] = ((16, 4, 0.75, 2), (32, 4, 0.75, 3), (32, 4, 0.75, 4),
                                                   (32, 4, 0.75, 5))
BASE_CHANNELS = 154
MAX_TRIES = 100

Edge = Tuple[int, int]


def watts_strogatz(n: int, k: int, p: float, seed: int) -> Tuple[Edge, ...]:
    """A connected Watts-Strogatz small-world graph as sorted edges ``(u, v)`` with ``u < v``.

    Ring lattice (each node joined to its k/2 nearest neighbours on each side), then every lattice edge
    ``(i, i+j)`` is, with probability p, moved to a uniformly chosen node not yet adjacent to i. Draws
    continue from the same generator until the graph is connected, so the result depends only on
    ``(n, k, p, seed)``.

    Raises:
        ValueError: for k odd, k not in (0, n), p outside [0, 1], or no connected graph in MAX_TRIES draws.
    """
    if k % 2 or not 0 < k < n:
        raise ValueError(f"watts_strogatz: k must be even and 0 < k < n, got n={n}, k={k}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"watts_strogatz: p must be in [0, 1], got {p}")
    rng = random.Random(seed)
    for _ in range(MAX_TRIES):
        adj: List[set] = [set() for _ in range(n)]
        for i in range(n):
            for j in range(1, k // 2 + 1):
                adj[i].add((i + j) % n)
                adj[(i + j) % n].add(i)
        for i in range(n):
            for j in range(1, k // 2 + 1):
                if rng.random() >= p:
                    continue
                free = [x for x in range(n) if x != i and x not in adj[i]]
                if not free:
                    continue
                old, new = (i + j) % n, rng.choice(free)
                adj[i].discard(old)
                adj[old].discard(i)
                adj[i].add(new)
                adj[new].add(i)
        if _connected(adj):
            return tuple(sorted((u, v) for u in range(n) for v in adj[u] if u < v))
    raise ValueError(f"watts_strogatz: no connected WS({n}, {k}, {p}) graph in {MAX_TRIES} draws from seed {seed}")


def _connected(adj: Sequence[set]) -> bool:
    seen = {0}
    stack = [0]
    while stack:
        for v in adj[stack.pop()]:
            if v not in seen:
                seen.add(v)
                stack.append(v)
    return len(seen) == len(adj)


def _front(x: Value, channels: int) -> Tuple[Value, Block]:
    block = Block(x.node)
    v = conv2d(block, [[x]], channels, kernel=3, stride=2, padding=1, act="identity", is_exit=True)
    return v, block


def _stage(x: Value, channels: int, n: int, edges: Sequence[Edge]) -> Tuple[Value, Block]:
    """One random-graph stage; nodes are built in index order, a topological order of the DAG."""
    block = Block(x.node)
    preds: List[List[int]] = [[] for _ in range(n)]
    has_succ = [False] * n
    for u, v in edges:
        preds[v].append(u)
        has_succ[u] = True
    out: List[Value] = []
    for node in range(n):
        if preds[node]:
            term, stride = [out[u] for u in preds[node]], 1
        else:
            term, stride = [x], 2
        out.append(sep_conv(block, [term], channels, kernel=3, stride=stride, padding=1, pre_act="relu"))
    sinks = [out[u] for u in range(n) if not has_succ[u]]
    return identity(block, [sinks], is_exit=True), block


def _tail(x: Value) -> Tuple[Value, Block]:
    block = Block(x.node)
    v = relu(block, [[x]])
    v = conv2d(block, [[v]], 1280, kernel=1, act="identity")
    return pool2d(block, [[v]], "global_avg", is_exit=True), block


def randwire_large() -> Graph:
    """RandWire-large without weights (call ``graph.init_weights(seed)``); deterministic."""
    x = placeholder((3, 224, 224), name="input")
    v, first = _front(x, BASE_CHANNELS // 2)
    blocks = [first]
    for si, (n, k, p, seed) in enumerate(STAGES):
        v, b = _stage(v, BASE_CHANNELS * 2 ** si, n, watts_strogatz(n, k, p, seed))
        blocks.append(b)
    v, b = _tail(v)
    blocks.append(b)
    return Graph("randwire_large", x.node, blocks)

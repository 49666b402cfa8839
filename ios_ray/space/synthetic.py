"""Small random graphs of real IR nodes with valid shapes, for tests and benchmarks of the state space.

Each block reads its enter value; operators are 1x1/3x3/5x5 convs (many on the enter value, so they are
merge candidates), concats, adds, max pools and ReLUs on earlier values, all at one resolution; the exit
concatenates every value nothing else reads.
"""
from __future__ import annotations

import random
from typing import List

from ..graph import builder as B
from ..graph.ir import Block, Graph, Value


def random_graph(seed: int, num_ops: int, num_blocks: int = 1, channels: int = 8, size: int = 6,
                 enter_conv: float = 0.5) -> Graph:
    """A random graph of ``num_blocks`` blocks of ``num_ops`` operators each (exit included).

    ``enter_conv`` is the probability that a conv reads the block's enter value (raise it for more
    merge candidates).

    Raises:
        ValueError: ``num_ops`` < 1 or ``num_blocks`` < 1.
    """
    if num_ops < 1 or num_blocks < 1:
        raise ValueError(f"need num_ops >= 1 and num_blocks >= 1, got {num_ops} and {num_blocks}")
    rng = random.Random(seed)
    x = B.placeholder((channels, size, size), name="input")
    blocks = []
    enter = x
    for bi in range(num_blocks):
        block = Block(enter.node)
        enter = _random_block(rng, block, enter, num_ops, f"b{bi}_", enter_conv)
        blocks.append(block)
    return Graph(f"random{seed}", x.node, blocks)


def _random_block(rng: random.Random, block: Block, enter: Value, num_ops: int, prefix: str,
                  enter_conv: float) -> Value:
    values: List[Value] = [enter]
    used = set()

    def pick() -> Value:
        v = rng.choice(values)
        used.add(id(v.node))
        return v

    def conv(name: str) -> Value:
        src = enter if rng.random() < enter_conv else pick()
        used.add(id(src.node))
        k = rng.choice((1, 1, 3, 3, 5))
        out = rng.choice((4, 8))
        act = "relu" if rng.random() < 0.85 else "identity"
        return B.conv2d(block, [[src]], out, (k, k), padding=(k // 2, k // 2), act=act, name=name)

    for k in range(num_ops - 1):
        name = f"{prefix}{k}"
        kind = rng.random()
        if kind < 0.55 or len(values) < 2:
            v = conv(name)
        elif kind < 0.70:
            a, b = rng.sample(values, 2)
            used.update((id(a.node), id(b.node)))
            v = B.identity(block, [[a], [b]], name=name)
        elif kind < 0.80:
            a = pick()
            same = [w for w in values if w.length == a.length and w is not a]
            if same:
                b = rng.choice(same)
                used.add(id(b.node))
                v = B.add(block, [[a], [b]], name=name)
            else:
                v = B.relu(block, [[a]], name=name)
        elif kind < 0.90:
            v = B.pool2d(block, [[pick()]], "max", (3, 3), padding=(1, 1), name=name)
        else:
            v = B.relu(block, [[pick()]], name=name)
        values.append(v)
    sinks = [v for v in values[1:] if id(v.node) not in used] or [enter]
    return B.identity(block, [[v] for v in sinks], is_exit=True, name=f"{prefix}exit")

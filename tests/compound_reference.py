"""Forward passes on the numpy reference kernels for graphs holding Sequential and Activation nodes.

Until the reference runtime's op registry runs these node types itself (``test_compound`` holds the
strict xfail that says when it does), the tests run them as the registration will: through each node's
``run_reference``, every other node through ``reference.run_node``.
"""
from typing import Dict

import numpy as np

from ios_ray.graph.compound import Activation, Sequential
from ios_ray.graph.ir import Graph, Node, topo_order
from ios_ray.runtime.reference import run_node


def run_any(node: Node, env) -> np.ndarray:
    if isinstance(node, (Sequential, Activation)):
        return node.run_reference(env, run_any)
    return run_node(node, env)


def forward(graph: Graph, x: np.ndarray) -> np.ndarray:
    """The graph's output for ``x`` (batch, C, H, W), nodes in dependency order, block by block."""
    env: Dict[Node, np.ndarray] = {graph.input: np.asarray(x, dtype=np.float32)}
    for block in graph.blocks:
        for node in topo_order(block):
            env[node] = run_any(node, env)
    return env[graph.blocks[-1].exit_node]


def random_input(graph: Graph, batch: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, *graph.input.output_shape), dtype=np.float32)

"""Forward passes node by node on the numpy reference kernels (``reference.run_node``), with no schedule:
what the builder tests compare against."""
from typing import Dict

import numpy as np

from ios_ray.graph.ir import Graph, Node, topo_order
from ios_ray.runtime.reference import run_node


def run_any(node: Node, env) -> np.ndarray:
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

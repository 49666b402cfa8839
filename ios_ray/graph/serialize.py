"""Graph files: JSON for graphs and schedules, ``.npz`` for weights; nothing the project reads is unpickled.

The JSON form itself (``graph_to_dict``/``graph_from_dict``, re-exported here) is defined in ``ir.py``,
next to ``Graph.export_config``/``Graph.from_config``; this module reads and writes files atomically.
"""
from __future__ import annotations

import json
import os

import numpy as np

from .ir import FORMAT, VERSION, Graph, graph_from_dict, graph_to_dict


def save_graph(graph: Graph, path: str) -> None:
    """Write the graph (with its schedule, if any) as JSON, atomically."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(graph_to_dict(graph), f, indent=1)
    os.replace(tmp, path)


def load_graph(path: str) -> Graph:
    try:
        with open(path) as f:
            obj = json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    try:
        return graph_from_dict(obj)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: malformed graph file ({type(exc).__name__}: {exc})") from None


def save_weights(graph: Graph, path: str) -> None:
    """Save every parameter as ``<node name>/<param>`` in an ``.npz``."""
    arrays = {f"{n.name}/{p}": v for n in graph.nodes() for p, v in n.params.items() if v is not None}
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_weights(graph: Graph, path: str) -> None:
    """Load weights saved by ``save_weights``; shapes and names must match the graph exactly."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    expected = {}
    for n in graph.nodes():
        for p, shape in n.weight_shapes().items():
            expected[f"{n.name}/{p}"] = tuple(shape)
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise ValueError(f"{path}: weights do not match graph {graph.name!r}: missing {missing[:5]}, "
                         f"unexpected {extra[:5]}")
    for k, shape in expected.items():
        if tuple(arrays[k].shape) != shape:
            raise ValueError(f"{path}: {k} has shape {tuple(arrays[k].shape)}, the graph needs {shape}")
    by_name = graph.node_by_name()
    for k, arr in arrays.items():
        name, _, p = k.rpartition("/")
        by_name[name].params[p] = np.ascontiguousarray(arr, dtype=np.float32)


__all__ = ["FORMAT", "VERSION", "graph_to_dict", "graph_from_dict", "save_graph", "load_graph", "save_weights", "load_weights"]

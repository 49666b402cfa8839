"""JSON for graphs and schedules, ``.npz`` for weights; nothing the project reads is unpickled.

Format (``"format": "ios_ray.graph"``, ``"version": 1``)::

    {"format": ..., "version": 1, "name": str, "input": <placeholder config>,
     "blocks": [{"enter": name, "exit": name, "nodes": [<node config>, ...],   # exit node last
                 "stages": [{"strategy": "parallel"|"merge", "groups": [[name, ...], ...]}, ...] | null}]}

A node config is ``Node.export_config()``: type, name, hint_name, inputs ``[[[name, begin, end], ...], ...]``,
output_shape, and the op's attributes. Loading checks everything a builder call checks, plus cycles and
the schedule.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List

import numpy as np

from .ios_json import from_ios_config, is_ios_config
from .ir import Block, Graph, Node, node_from_config
from .schedule import Stage, check_schedule

FORMAT = "ios_ray.graph"
VERSION = 1


def graph_to_dict(graph: Graph) -> dict:
    blocks = []
    for block in graph.blocks:
        blocks.append({
            "enter": block.enter_node.name,
            "exit": block.exit_node.name,
            "nodes": [n.export_config() for n in block.nodes],
            "stages": None if block.stages is None else [s.to_json() for s in block.stages],
        })
    return {"format": FORMAT, "version": VERSION, "name": graph.name, "input": graph.input.export_config(),
            "blocks": blocks}


def graph_from_dict(obj: dict) -> Graph:
    """Rebuild a graph (and its schedule); raises ValueError naming what is wrong."""
    if is_ios_config(obj):  # written by the original IOS (its Graph.export_config)
        obj = {"format": FORMAT, "version": VERSION, **from_ios_config(obj)}
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"not an ios_ray graph file (format {obj.get('format') if isinstance(obj, dict) else None!r},"
                         f" expected {FORMAT!r})")
    if obj.get("version") != VERSION:
        raise ValueError(f"graph file version {obj.get('version')!r} is not supported (expected {VERSION})")
    if not isinstance(obj.get("input"), dict):
        raise ValueError(f"graph file has no input placeholder config (got {obj.get('input')!r})")
    name2node: Dict[str, Node] = {}
    inp = node_from_config(obj["input"], name2node)
    name2node[inp.name] = inp
    blocks: List[Block] = []
    prev = inp
    for bi, bcfg in enumerate(obj.get("blocks") or []):
        if bcfg.get("enter") != prev.name:
            raise ValueError(f"block {bi} enters at {bcfg.get('enter')!r}, expected {prev.name!r}")
        cfgs = bcfg.get("nodes") or []
        if not cfgs:
            raise ValueError(f"block {bi} has no nodes")
        for cfg in _dependency_order(cfgs, set(name2node), bi):
            if cfg.get("name") in name2node:
                raise ValueError(f"block {bi}: node name {cfg.get('name')!r} is used twice")
            node = node_from_config(cfg, name2node)
            name2node[node.name] = node
            node.set_shape()
            if cfg.get("output_shape") is not None and tuple(cfg["output_shape"]) != node.output_shape:
                raise ValueError(f"{node.display()}: stored output shape {tuple(cfg['output_shape'])} disagrees "
                                 f"with the inferred {node.output_shape}")
        ordered = [name2node[c["name"]] for c in cfgs]
        exit_name = bcfg.get("exit")
        if ordered[-1].name != exit_name:
            raise ValueError(f"block {bi}: exit node {exit_name!r} must be the last node listed")
        block = Block(prev, ordered[-1], ordered[:-1])
        if bcfg.get("stages") is not None:
            block.stages = [Stage.from_json(s) for s in bcfg["stages"]]
        blocks.append(block)
        prev = block.exit_node
    graph = Graph(obj.get("name", "graph"), inp, blocks)
    if all(b.stages is not None for b in blocks):
        check_schedule(graph)
    elif any(b.stages is not None for b in blocks):
        raise ValueError("some blocks have a schedule and others do not")
    return graph


def _dependency_order(cfgs: List[dict], known: set, bi: int) -> List[dict]:
    """Order node configs so inputs come first; a cycle is reported with the nodes on it."""
    by_name = {}
    for c in cfgs:
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            raise ValueError(f"block {bi}: every node needs a string name, got {c!r}")
        if c["name"] in by_name:  # else the first config would be silently dropped
            raise ValueError(f"block {bi}: node name {c['name']!r} is used twice")
        by_name[c["name"]] = c
    deps = {}
    for name, c in by_name.items():
        refs = set()
        for term in c.get("inputs") or []:
            for ref in term:
                if not (isinstance(ref, list) and ref and isinstance(ref[0], str)):
                    raise ValueError(f"node {name!r}: bad input reference {ref!r}")
                if ref[0] in by_name:
                    refs.add(ref[0])
                elif ref[0] not in known:
                    raise ValueError(f"node {name!r}: input {ref[0]!r} does not exist in block {bi} or before it")
        deps[name] = refs
    order, done, visiting = [], set(), []

    def visit(n: str) -> None:
        if n in done:
            return
        if n in visiting:
            cycle = visiting[visiting.index(n):] + [n]
            raise ValueError(f"block {bi} has a cycle: {' -> '.join(cycle)}")
        visiting.append(n)
        for d in sorted(deps[n]):
            visit(d)
        visiting.pop()
        done.add(n)
        order.append(by_name[n])

    for c in cfgs:
        visit(c["name"])
    return order


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


__all__ = ["graph_to_dict", "graph_from_dict", "save_graph", "load_graph", "save_weights", "load_weights"]

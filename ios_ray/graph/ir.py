"""Blocks and graphs (IOS-compatible), and their JSON form.

Data flow: the builder functions (``builder.py``) create nodes (``ops.py``: the op registry) inside a
``Block``; a ``Graph`` chains blocks (each block's ``enter_node`` is the previous block's ``exit_node`` or
the graph input), numbers the nodes, infers and checks shapes, and checks each block is a DAG.
Schedules (``schedule.py``) refer to nodes by name.

JSON form (``graph_to_dict``/``graph_from_dict``, ``"format": "ios_ray.graph"``, ``"version": 1``)::

    {"format": ..., "version": 1, "name": str, "input": <placeholder config>,
     "blocks": [{"enter": name, "exit": name, "nodes": [<node config>, ...],   # exit node last
                 "stages": [{"strategy": "parallel"|"merge", "groups": [[name, ...], ...]}, ...] | null}]}

A node config is ``Node.export_config()``: type, name, hint_name, inputs ``[[[name, begin, end], ...], ...]``,
output_shape, and the op's attributes. Loading checks everything a builder call checks, plus cycles and
the schedule. Files (and weights) are ``serialize.py``'s.

Imports go one way: ``ops`` and ``schedule`` <- ``ir`` <- ``serialize``, ``builder``. The op classes and
``topo_order`` are re-exported here, where callers have always found them.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from .ops import (ACTIVATIONS, ELEMENT_OPS, NODE_TYPES, POOL_TYPES, Conv, Element, Identity, Node, Placeholder, Pool,
                  Relu, SepConv, Shape, Terms, Value, node_from_config)
from .ios_json import from_ios_config, is_ios_config
from .schedule import Stage, check_schedule, format_schedule, greedy_schedule, sequential_schedule, topo_order

FORMAT = "ios_ray.graph"
VERSION = 1


class Block:
    """A DAG of operators between an enter node and an exit node; the unit the DP schedules."""

    def __init__(self, enter_node: Node, exit_node: Optional[Node] = None, inner_nodes: Optional[List[Node]] = None,
                 stages=None, parts: Optional[List[List[str]]] = None):
        if not isinstance(enter_node, Node):
            raise ValueError(f"Block(enter_node=...) needs a Node (pass v.node), got {type(enter_node).__name__}")
        self.enter_node = enter_node
        self.exit_node = exit_node
        self.inner_nodes: List[Node] = list(inner_nodes or [])
        self.stages = list(stages) if stages is not None else None  # List[schedule.Stage]
        self.parts = parts

    @property
    def nodes(self) -> List[Node]:
        """Scheduled nodes: inner nodes then the exit node."""
        return self.inner_nodes + ([self.exit_node] if self.exit_node is not None else [])

    def add(self, node: Node, is_exit: bool = False) -> None:
        if self.exit_node is not None:
            raise ValueError(f"{node.display()}: block already has exit node {self.exit_node.display()}; "
                             f"the exit node must be added last")
        if is_exit:
            self.exit_node = node
        else:
            self.inner_nodes.append(node)


class Graph:
    """A chain of blocks fed by one placeholder; numbers nodes and validates the whole graph."""

    def __init__(self, name: str, input: Node, blocks: List[Block], validate: bool = True):
        self.name = name
        self.input = input
        self.enter_node = input
        self.blocks = list(blocks)
        if validate:
            self.check()

    # ----- structure ---------------------------------------------------------------------------
    def nodes(self) -> List[Node]:
        out = [self.input]
        for b in self.blocks:
            out.extend(b.nodes)
        return out

    def node_by_name(self) -> Dict[str, Node]:
        return {n.name: n for n in self.nodes()}

    def check(self) -> None:
        """Name and number nodes, check block chaining, acyclicity, references and shapes."""
        if not isinstance(self.input, Placeholder):
            raise ValueError(f"graph {self.name}: input must be a placeholder node, got {self.input!r}")
        if not self.blocks:
            raise ValueError(f"graph {self.name}: needs at least one block")
        prev = self.input
        counter = 1
        if self.input.name is None:
            self.input.name = "input"
        if self.input.hint_name is None:
            self.input.hint_name = "0"
        seen_names = {self.input.name: self.input}
        for bi, block in enumerate(self.blocks):
            if block.enter_node is not prev:
                raise ValueError(f"graph {self.name}: block {bi} enters at {block.enter_node.display()} but "
                                 f"must enter at {prev.display()} (the graph input or the previous block's exit)")
            if block.exit_node is None:
                raise ValueError(f"graph {self.name}: block {bi} has no exit node (pass is_exit=True to its "
                                 f"last operator)")
            for node in block.nodes:
                if isinstance(node, Placeholder):
                    raise ValueError(f"graph {self.name}: block {bi} contains a placeholder {node.display()}")
                if node.hint_name is None:  # keep numbers across optimize() and JSON round trips
                    node.hint_name = str(counter)
                if node.name is None:
                    node.name = f"{node.type}_{counter}"
                if node.name in seen_names and seen_names[node.name] is not node:
                    raise ValueError(f"graph {self.name}: two nodes are named {node.name!r}")
                seen_names[node.name] = node
                counter += 1
            members = {id(n) for n in block.nodes}
            for node in block.nodes:
                for term in node.inputs:
                    for v in term:
                        if v.node is not block.enter_node and id(v.node) not in members:
                            raise ValueError(f"{node.display()} in block {bi} reads {v.node.display()}, which "
                                             f"is neither in the block nor its enter node")
            for node in topo_order(block):
                node.set_shape()
            prev = block.exit_node

    def init_weights(self, seed: int = 0) -> None:
        """Random weights for every parameterised node, reproducible from ``seed``."""
        rng = np.random.default_rng(seed)
        for node in self.nodes():
            node.init_weights(rng)

    def has_weights(self) -> bool:
        return all(p is not None for n in self.nodes() for p in n.params.values())

    @property
    def output_shape(self) -> Shape:
        return self.blocks[-1].exit_node.output_shape

    def flops(self) -> float:
        return sum(n.flops() for n in self.nodes()[1:])

    def working_set_bytes(self, batch_size: int = 1, dtype_bytes: int = 4) -> int:
        """Bytes one inference touches: every parameter once, and every node's output at ``batch_size``
        (the input included). Against the GPU's L2 it says whether a stage's weights are still cached
        when the next inference reaches it (``profile.gpu``: how stages are timed)."""
        params = sum(n.param_count() for n in self.nodes())
        outputs = sum(int(np.prod(n.output_shape)) for n in self.nodes())
        return int((params + batch_size * outputs) * dtype_bytes)

    def num_operators(self) -> int:
        return sum(len(b.nodes) for b in self.blocks)

    # ----- IOS compatibility: schedules (schedule.py) and the JSON form (below) --------------------
    def sequential_schedule(self) -> None:
        sequential_schedule(self)

    def greedy_schedule(self, max_num_streams: int = 8) -> None:
        greedy_schedule(self, max_num_streams)

    def has_schedule(self) -> bool:
        return all(b.stages is not None for b in self.blocks)

    def __str__(self) -> str:
        return format_schedule(self)

    def export_config(self) -> dict:
        return graph_to_dict(self)

    @staticmethod
    def from_config(config: dict) -> "Graph":
        return graph_from_dict(config)


def graph_to_dict(graph: Graph) -> dict:
    """The JSON-able form of ``graph`` and its schedule (``FORMAT`` above)."""
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


__all__ = ["ACTIVATIONS", "ELEMENT_OPS", "NODE_TYPES", "POOL_TYPES", "Block", "Conv", "Element", "FORMAT", "Graph",
           "Identity", "Node", "Placeholder", "Pool", "Relu", "SepConv", "Shape", "Terms", "VERSION", "Value",
           "graph_from_dict", "graph_to_dict", "node_from_config", "topo_order"]

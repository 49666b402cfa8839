"""Schedules: a block's ordered list of stages, each a set of groups run concurrently.

A ``Stage`` names its nodes; a group's nodes run one after another on one stream, the groups of a stage
run on concurrent streams, and stages run in order. ``MERGE`` marks a stage holding one merged conv (the
optimizer already replaced the merged convs by one node). ``check_schedule`` is the one validator every
consumer of a schedule (runtime, JSON loader, optimizer) goes through.

Imports: this module needs nothing from ``ir.py`` at run time (it reads blocks and nodes through their
attributes), so ``ir.py`` can import it for ``Graph``'s IOS-style schedule methods: ``schedule`` <- ``ir``
<- ``serialize``, one direction.
"""
from __future__ import annotations

import enum
import heapq
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

if TYPE_CHECKING:  # annotations only: ir.py imports this module
    from .ir import Block, Graph, Node


class Strategy(enum.Enum):
    PARALLEL = "parallel"
    MERGE = "merge"


@dataclass(frozen=True)
class Stage:
    groups: Tuple[Tuple[str, ...], ...]
    strategy: Strategy = Strategy.PARALLEL

    def node_names(self) -> List[str]:
        return [n for g in self.groups for n in g]

    def to_json(self) -> dict:
        return {"strategy": self.strategy.value, "groups": [list(g) for g in self.groups]}

    @staticmethod
    def from_json(obj) -> "Stage":
        if isinstance(obj, list):  # the original's [[names...], ...] form
            if not all(isinstance(g, list) and all(isinstance(n, str) for n in g) for g in obj):
                raise ValueError(f"bad stage record {obj!r}: a stage is a list of groups, each a list of node names")
            return Stage(tuple(tuple(g) for g in obj))
        try:
            strategy = Strategy(obj.get("strategy", "parallel"))
            groups = tuple(tuple(str(n) for n in g) for g in obj["groups"])
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"bad stage record {obj!r}: {exc}") from None
        return Stage(groups, strategy)


def topo_order(block: Block) -> List[Node]:
    """Block nodes in a dependency order (stable: creation order when it is valid); raises on a cycle."""
    nodes = block.nodes
    index = {id(n): i for i, n in enumerate(nodes)}
    indeg = [0] * len(nodes)
    succ: List[List[int]] = [[] for _ in nodes]
    for i, n in enumerate(nodes):
        preds = {index[id(p)] for p in n.input_nodes() if id(p) in index}
        if i in preds:
            raise ValueError(f"{n.display()} reads its own output (a cycle)")
        for p in preds:
            succ[p].append(i)
        indeg[i] = len(preds)
    ready = [i for i in range(len(nodes)) if indeg[i] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(nodes[i])
        for j in succ[i]:
            indeg[j] -= 1
            if indeg[j] == 0:
                heapq.heappush(ready, j)
    if len(order) != len(nodes):
        stuck = [nodes[i].display() for i in range(len(nodes)) if indeg[i] > 0]
        raise ValueError(f"block has a cycle through: {', '.join(stuck[:6])}")
    return order


def sequential_schedule(graph: Graph) -> None:
    """One operator per stage, in dependency order."""
    for block in graph.blocks:
        block.stages = [Stage(((n.name,),)) for n in topo_order(block)]


def greedy_schedule(graph: Graph, max_num_streams: int = 8) -> None:
    """Each stage runs every ready operator (up to ``max_num_streams``), one per stream."""
    if max_num_streams < 1:
        raise ValueError(f"max_num_streams must be at least 1, got {max_num_streams}")
    for block in graph.blocks:
        order = topo_order(block)
        members = {id(n) for n in order}
        done: set = set()
        stages = []
        while len(done) < len(order):
            ready = [n for n in order if id(n) not in done
                     and all(id(p) in done for p in n.input_nodes() if id(p) in members)]
            ready = ready[:max_num_streams]
            stages.append(Stage(tuple((n.name,) for n in ready)))
            done.update(id(n) for n in ready)
        block.stages = stages


def check_schedule(graph: Graph) -> None:
    """Raise ValueError unless every block's stages cover its nodes exactly once in dependency order."""
    for bi, block in enumerate(graph.blocks):
        check_block_schedule(block, bi)


def check_block_schedule(block: Block, bi: int = 0) -> None:
    """Raise ValueError unless ``block.stages`` cover the block's nodes exactly once in dependency order."""
    _check_stages(block.nodes, block.stages, bi)


def _check_stages(nodes: Sequence[Node], stages: Optional[Sequence[Stage]], bi: int) -> None:
    if stages is None:
        raise ValueError(f"block {bi} has no schedule (call optimize, sequential_schedule or greedy_schedule)")
    by_name: Dict[str, Node] = {n.name: n for n in nodes}
    members = {id(n) for n in nodes}
    scheduled = {n for s in stages if isinstance(s, Stage) for g in s.groups for n in g}
    seen: Dict[str, int] = {}
    for si, stage in enumerate(stages):
        if not isinstance(stage, Stage):
            raise ValueError(f"block {bi} stage {si}: expected a Stage, got {type(stage).__name__} {stage!r} "
                             f"(wrap name lists with Stage.from_json)")
        if not stage.groups or any(not g for g in stage.groups):
            raise ValueError(f"block {bi} stage {si}: a stage needs at least one non-empty group")
        in_stage: Dict[str, int] = {}
        for gi, group in enumerate(stage.groups):
            for name in group:
                if name not in by_name:
                    raise ValueError(f"block {bi} stage {si}: node {name!r} is not in this block")
                if name in seen or name in in_stage:
                    raise ValueError(f"block {bi} stage {si}: node {name!r} is scheduled twice")
                node = by_name[name]
                for p in node.input_nodes():
                    if id(p) not in members:
                        continue
                    if p.name in seen or p.name not in scheduled:  # an unscheduled input: reported below
                        continue
                    if in_stage.get(p.name) == gi:
                        continue
                    raise ValueError(f"block {bi} stage {si}: {node.display()} runs before its input "
                                     f"{p.display()} (a dependency is violated)")
                in_stage[name] = gi
        if stage.strategy is Strategy.MERGE and len(stage.node_names()) != 1:
            raise ValueError(f"block {bi} stage {si}: a merge stage holds exactly one (merged) conv")
        seen.update({n: si for n in in_stage})
    missing = [n for n in by_name if n not in seen]
    if missing:
        raise ValueError(f"block {bi}: the schedule misses nodes {missing[:8]}")


def scheduled_groups(graph: Graph, stages: Optional[Sequence[Sequence[Stage]]] = None) -> List[List[List[Node]]]:
    """Every stage of every block, in run order, as its groups of nodes; the schedule is checked first.

    ``stages`` (one stage list per block) overrides the blocks' own schedules without modifying the graph:
    executors run the same graph under several schedules.
    """
    if stages is not None and len(stages) != len(graph.blocks):
        raise ValueError(f"stages has {len(stages)} block schedules, the graph has {len(graph.blocks)} blocks")
    out: List[List[List[Node]]] = []
    for bi, block in enumerate(graph.blocks):
        block_stages = block.stages if stages is None else list(stages[bi])
        _check_stages(block.nodes, block_stages, bi)
        by_name = {n.name: n for n in block.nodes}
        out.extend([[by_name[name] for name in g] for g in stage.groups] for stage in block_stages)
    return out


def format_schedule(graph: Graph, indent: int = 2) -> str:
    """Print like the original IOS: ``Sequential( Parallel( [1]Conv2d(0) ... ) ... )``."""
    lines = ["Sequential("]
    pad = " " * indent
    for block in graph.blocks:
        by_name = {n.name: n for n in block.nodes}
        stages = block.stages if block.stages is not None else [Stage(((n.name,),)) for n in topo_order(block)]
        for stage in stages:
            groups = [[_node_line(by_name[name]) for name in g] for g in stage.groups]
            if len(groups) == 1 and len(groups[0]) == 1:
                lines.append(pad + groups[0][0])
                continue
            if len(groups) == 1:
                lines.append(pad + "Sequential(")
                lines.extend(pad * 2 + ln for ln in groups[0])
                lines.append(pad + ")")
                continue
            lines.append(pad + "Parallel(")
            for g in groups:
                if len(g) == 1:
                    lines.append(pad * 2 + g[0])
                else:
                    lines.append(pad * 2 + "Sequential(")
                    lines.extend(pad * 3 + ln for ln in g)
                    lines.append(pad * 2 + ")")
            lines.append(pad + ")")
    lines.append(")")
    return "\n".join(lines)


def _node_line(node: Node) -> str:
    args = ",".join("+".join(v.node.hint_name for v in term) for term in node.inputs)
    return f"[{node.hint_name}]{node.schedule_text(args)}"

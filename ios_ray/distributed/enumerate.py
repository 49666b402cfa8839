"""Distributed state-space enumeration: the same ``GraphSpace`` as ``enumerate_graph``, built on actors.

Data flow::

    Graph --graph_parts, part_states (driver: cheap)--> states per part
          --plan_shards: small parts whole, large parts cut into strided state subsets-->
          EnumerateWorker.shard(task) on actors (each holds the graph once, and one StageKeyer per
          options, so a stage key is computed once per actor)
          --PartShard (numpy arrays)--> assemble_part + canonical_stage_order (driver)
          --assemble_graph--> GraphSpace{blocks, specs (built lazily in the driver from the parts)}

States are dealt to shards with a stride (shard j of k gets ``states[j::k]``): states are sorted by
size and large states have far more transitions, so strided shards carry similar work. The DP cannot
tell the result from a local ``enumerate_graph``: each assembled part's stage table is renumbered in
the order a local enumeration discovers stages, so parts are equal array for array.
"""
from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass, replace
from typing import Deque, Dict, List, Sequence, Tuple

import numpy as np
import ray

from ..costs.factory import CostConfig
from ..graph.ir import Graph
from ..space.enumerate import (GraphSpace, PartShard, PartSpace, assemble_graph, assemble_part,
                               enumerate_transitions, graph_parts, part_states)
from ..space.keys import StageKeyer
from ..space.options import SpaceOptions
from .cluster import check_resources
from .profiler_pool import WORKER_LOST_ERRORS


class EnumerationError(RuntimeError):
    """A shard could not be enumerated (its worker kept dying)."""


@dataclass(frozen=True)
class ShardTask:
    """States ``states`` of part ``(block_index, part_index)``, to expand on one worker."""
    block_index: int
    part_index: int
    shard_index: int
    states: Tuple[int, ...]

    @property
    def weight(self) -> float:
        """Rough work: a state's transitions grow fast with its size."""
        return float(sum(1 + s.bit_count() ** 2 for s in self.states))


@dataclass(frozen=True)
class EnumerateReport:
    num_parts: int
    num_shards: int
    per_worker: Dict[str, int]   # shards expanded by each worker id
    retries: int
    seconds: Dict[str, float]    # plan, enumerate (on workers, incl. start-up), assemble


class EnumerateWorker:
    """Expands state subsets of the parts of one graph. A plain class made remote by the driver."""

    def __init__(self, graph: Graph, worker_id: str):
        self._graph = graph
        self._worker_id = worker_id
        self._parts: Dict[SpaceOptions, list] = {}
        self._keyers: Dict[SpaceOptions, StageKeyer] = {}

    def shard(self, task: ShardTask, opts: SpaceOptions) -> Tuple[str, int, PartShard]:
        """``(worker id, shard index, PartShard)`` of the task's states (plain arrays: cheap to ship)."""
        parts = self._parts.get(opts)
        if parts is None:
            parts = self._parts[opts] = graph_parts(self._graph, opts)
            self._keyers[opts] = StageKeyer()
        part = parts[task.block_index][task.part_index]
        return self._worker_id, task.shard_index, enumerate_transitions(part, task.states, opts,
                                                                        self._keyers[opts])


def canonical_stage_order(space: PartSpace) -> PartSpace:
    """Renumber a part's stage table by first use in its transitions (states in order).

    That is the order a single-process enumeration discovers stages in, so a part assembled from
    shards becomes identical to the locally enumerated one, stage ids included.
    """
    if space.num_stages == 0:
        return space
    used, first = np.unique(space.stage_index, return_index=True)
    order = used[np.argsort(first, kind="stable")]
    if len(order) != space.num_stages:   # a stage no transition uses: keep it, after the used ones
        order = np.concatenate([order, np.setdiff1d(np.arange(space.num_stages), order)])
    if np.array_equal(order, np.arange(space.num_stages)):
        return space
    new_id = np.empty(space.num_stages, dtype=np.int32)
    new_id[order] = np.arange(space.num_stages, dtype=np.int32)
    ids = order.tolist()
    return replace(space, stage_index=new_id[space.stage_index],
                   stage_groups=tuple(space.stage_groups[i] for i in ids),
                   stage_strategies=tuple(space.stage_strategies[i] for i in ids),
                   stage_keys=tuple(space.stage_keys[i] for i in ids))


def plan_shards(states_by_part: Dict[Tuple[int, int], Sequence[int]], num_workers: int, *,
                shards_per_worker: int = 4, min_shard_states: int = 64) -> List[ShardTask]:
    """Cut parts into shard tasks, heaviest first.

    A part whose estimated work exceeds ``total / (num_workers * shards_per_worker)`` is split into
    strided state subsets (never smaller than ``min_shard_states`` states); smaller parts go whole.

    Args:
        states_by_part: ``part_states`` of each part, by (block index, part index).
        num_workers: workers that will run the tasks.
        shards_per_worker: how finely the total work is cut.
        min_shard_states: states below which a shard is not worth a round trip.

    Returns:
        Tasks ordered by decreasing estimated work.
    """
    if num_workers < 1 or shards_per_worker < 1 or min_shard_states < 1:
        raise ValueError(f"need num_workers, shards_per_worker, min_shard_states >= 1; got {num_workers}, "
                         f"{shards_per_worker}, {min_shard_states}")
    whole = {pid: ShardTask(pid[0], pid[1], 0, tuple(states)) for pid, states in states_by_part.items()}
    total = sum(t.weight for t in whole.values())
    target = total / (num_workers * shards_per_worker)
    tasks: List[ShardTask] = []
    for pid, task in whole.items():
        states = task.states
        k = 1
        if target > 0 and task.weight > target:
            k = min(math.ceil(task.weight / target), max(1, len(states) // min_shard_states))
        if k <= 1:
            tasks.append(task)
        else:
            tasks.extend(ShardTask(pid[0], pid[1], j, states[j::k]) for j in range(k))
    tasks.sort(key=lambda t: (-t.weight, t.block_index, t.part_index, t.shard_index))
    return tasks


def enumerate_graph_distributed(graph: Graph, opts: SpaceOptions, *, num_workers: int,
                                cpus_per_worker: float = 1.0, shards_per_worker: int = 4,
                                min_shard_states: int = 64, max_retries: int = 2, return_report: bool = False):
    """Enumerate ``graph``'s state space on ``num_workers`` Ray actors.

    Args:
        graph: the graph (sent once, through the object store, to each actor).
        opts: pruning and strategies, as for ``enumerate_graph``.
        num_workers: actors to start (Ray must be connected: ``cluster.connect``).
        cpus_per_worker: CPUs each actor reserves.
        shards_per_worker: how finely the work is cut (more shards: better balance, more round trips).
        min_shard_states: a large part is not cut into shards of fewer states than this.
        max_retries: times a shard is retried after its worker died.
        return_report: also return an ``EnumerateReport``.

    Returns:
        The ``GraphSpace`` (equal to ``enumerate_graph(graph, opts)``), and the report if asked for.

    Raises:
        InsufficientResourcesError: the cluster lacks ``num_workers * cpus_per_worker`` CPUs.
        EnumerationError: a shard's worker died more than ``max_retries`` times.
    """
    check_resources(num_workers, CostConfig(), cpus_per_worker=cpus_per_worker)
    seconds: Dict[str, float] = {}
    t0 = time.perf_counter()
    parts = graph_parts(graph, opts)
    states = {(p.block_index, p.part_index): part_states(p) for ps in parts for p in ps}
    tasks = plan_shards(states, num_workers, shards_per_worker=shards_per_worker,
                        min_shard_states=min_shard_states)
    seconds["plan"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    workers = max(1, min(num_workers, len(tasks)))
    actor_cls = ray.remote(EnumerateWorker).options(num_cpus=cpus_per_worker, max_restarts=0)
    graph_ref = ray.put(graph)
    actors = [actor_cls.remote(graph_ref, f"e{i}") for i in range(workers)]
    try:
        shards, per_worker, retries = _run(tasks, actors, actor_cls, graph_ref, opts, max_retries)
    finally:
        for a in actors:
            ray.kill(a, no_restart=True)
    seconds["enumerate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    by_part: Dict[Tuple[int, int], List[Tuple[int, PartShard]]] = collections.defaultdict(list)
    for (pid, j), shard in shards.items():
        by_part[pid].append((j, shard))
    spaces = [[canonical_stage_order(assemble_part(
                   part, [sh for _, sh in sorted(by_part[(part.block_index, part.part_index)], key=lambda t: t[0])]))
               for part in block_parts] for block_parts in parts]
    space = assemble_graph(opts, parts, spaces)
    seconds["assemble"] = time.perf_counter() - t0
    if return_report:
        return space, EnumerateReport(len(states), len(tasks), per_worker, retries, seconds)
    return space


def _run(tasks: List[ShardTask], actors: list, actor_cls, graph_ref, opts: SpaceOptions, max_retries: int):
    """Hand tasks to idle actors (one at a time each); replace a dead actor and retry its task."""
    queue: Deque[ShardTask] = collections.deque(tasks)
    inflight: Dict["ray.ObjectRef", Tuple[int, ShardTask]] = {}
    idle = list(range(len(actors)))
    losses: Dict[Tuple[int, int, int], int] = collections.Counter()
    shards: Dict[Tuple[Tuple[int, int], int], PartShard] = {}
    per_worker: Dict[str, int] = collections.Counter()
    retries = 0
    generation = [0] * len(actors)
    while queue or inflight:
        while queue and idle:
            i = idle.pop()
            task = queue.popleft()
            inflight[actors[i].shard.remote(task, opts)] = (i, task)
        ready, _ = ray.wait(list(inflight), num_returns=1)
        for ref in ready:
            i, task = inflight.pop(ref)
            try:
                worker_id, shard_index, shard = ray.get(ref)
            except WORKER_LOST_ERRORS as exc:
                ident = (task.block_index, task.part_index, task.shard_index)
                losses[ident] += 1
                if losses[ident] > max_retries:
                    raise EnumerationError(f"part {task.block_index}.{task.part_index} shard {task.shard_index}: "
                                           f"its worker died {losses[ident]} times ({exc})") from exc
                retries += 1
                queue.appendleft(task)
                generation[i] += 1
                actors[i] = actor_cls.remote(graph_ref, f"e{i}.r{generation[i]}")
                idle.append(i)
                continue
            shards[((shard.block_index, shard.part_index), shard_index)] = shard
            per_worker[worker_id] += 1
            idle.append(i)
    return shards, dict(per_worker), retries

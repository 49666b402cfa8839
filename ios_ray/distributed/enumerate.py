"""Distributed state-space enumeration: the same ``GraphSpace`` as ``enumerate_graph``, built on actors.

Data flow::

    Graph --graph_parts, part_states (driver: cheap)--> states per part
          --plan_shards: small parts whole, large parts cut into runs of consecutive states-->
          EnumerateWorker.expand(task) on actors (each holds the graph once, and one StageKeyer per
          options, so a stage key is computed once per actor)
              whole part  --> assemble_part + canonical_stage_order on the worker --> PartSpace
              one shard   --> PartShard, left in the object store
          --all shards of a part done--> EnumerateWorker.assemble(part, *shard refs) on an idle actor
              (the shards go worker to worker; the driver never unpickles them) --> PartSpace
          --assemble_graph (driver)--> GraphSpace{blocks, specs (built lazily from the parts)}

A large part is cut into runs of consecutive states (states are sorted by size) of equal estimated
work. Consecutive states share most of their candidate stages, and computing a stage's key is most of
the work, so runs repeat far less of it across workers than dealing states out with a stride: on
RandWire's largest part, 8 runs cost 1.8x the unsharded time in total, 8 strided shards 3.5x. The DP cannot
tell the result from a local ``enumerate_graph``: each assembled part's stage table is renumbered in
the order a local enumeration discovers stages, so parts are equal array for array.
"""
from __future__ import annotations

import collections
import logging
import math
import time
from dataclasses import dataclass, replace
from typing import Deque, Dict, List, Sequence, Tuple, Union

import numpy as np
import ray

from ..graph.ir import Graph
from ..space.enumerate import (PartShard, PartSpace, assemble_graph, assemble_part,
                               enumerate_transitions, graph_parts, part_states)
from ..space.keys import StageKeyer
from ..space.options import SpaceOptions
from .actors import WORKER_LOST_ERRORS, ActorSlots, Slot, describe
from .cluster import WorkerResources, check_resources

logger = logging.getLogger(__name__)


class EnumerationError(RuntimeError):
    """A shard could not be enumerated (its worker kept dying)."""


@dataclass(frozen=True)
class ShardTask:
    """States ``states`` of part ``(block_index, part_index)``, to expand on one worker."""
    block_index: int
    part_index: int
    shard_index: int
    states: Tuple[int, ...]
    num_shards: int = 1   # shards of this part; 1: the task covers the whole part

    @property
    def part_id(self) -> Tuple[int, int]:
        return self.block_index, self.part_index

    @property
    def weight(self) -> float:
        return float(sum(_state_weight(s) for s in self.states))


@dataclass(frozen=True)
class EnumerateReport:
    num_parts: int
    num_shards: int
    per_worker: Dict[str, int]   # tasks (shards, whole parts, assemblies) done by each worker id
    retries: int
    seconds: Dict[str, float]    # plan, enumerate (on workers, incl. start-up), assemble


class EnumerateWorker:
    """Expands state subsets of the parts of one graph and assembles parts. A plain class made remote
    by ``enumerate_graph_distributed``."""

    def __init__(self, graph: Graph, worker_id: str):
        self._graph = graph
        self._worker_id = worker_id
        self._parts: Dict[SpaceOptions, list] = {}
        self._keyers: Dict[SpaceOptions, StageKeyer] = {}

    def _part(self, opts: SpaceOptions, block_index: int, part_index: int):
        parts = self._parts.get(opts)
        if parts is None:
            parts = self._parts[opts] = graph_parts(self._graph, opts)
            self._keyers[opts] = StageKeyer()
        return parts[block_index][part_index]

    def expand(self, task: ShardTask, opts: SpaceOptions) -> Tuple[str, Union[PartSpace, PartShard]]:
        """``(worker id, PartSpace)`` for a whole part, ``(worker id, PartShard)`` for one shard of it."""
        part = self._part(opts, task.block_index, task.part_index)
        shard = enumerate_transitions(part, task.states, opts, self._keyers[opts])
        if task.num_shards == 1:
            return self._worker_id, canonical_stage_order(assemble_part(part, [shard]))
        return self._worker_id, shard

    def assemble(self, block_index: int, part_index: int, opts: SpaceOptions, *shards: PartShard
                 ) -> Tuple[str, PartSpace]:
        """``(worker id, PartSpace)`` of a part from all its shards (Ray resolves the shard refs here)."""
        part = self._part(opts, block_index, part_index)
        return self._worker_id, canonical_stage_order(assemble_part(part, list(shards)))


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


def _state_weight(state: int) -> int:
    """Rough work of expanding a state: its transitions grow fast with its size."""
    return 1 + state.bit_count() ** 2


def plan_shards(states_by_part: Dict[Tuple[int, int], Sequence[int]], num_workers: int, *,
                shards_per_worker: int = 4, min_shard_states: int = 64) -> List[ShardTask]:
    """Cut parts into shard tasks, heaviest first.

    A part whose estimated work exceeds ``total / (num_workers * shards_per_worker)`` is cut into runs
    of consecutive states of about that much work each (never fewer than ``min_shard_states`` states);
    smaller parts go whole.

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
    weights = {pid: np.cumsum([_state_weight(s) for s in states], dtype=np.float64)
               for pid, states in states_by_part.items()}
    total = sum(float(w[-1]) for w in weights.values() if len(w))
    target = total / (num_workers * shards_per_worker)
    tasks: List[ShardTask] = []
    for pid, states in states_by_part.items():
        states = tuple(states)
        work = float(weights[pid][-1]) if states else 0.0
        k = 1
        if target > 0 and work > target:
            k = min(math.ceil(work / target), max(1, len(states) // min_shard_states))
        if k <= 1:
            tasks.append(ShardTask(pid[0], pid[1], 0, states))
            continue
        # cut where the running work crosses j/k of the part's work
        cuts = [0] + [int(np.searchsorted(weights[pid], work * j / k)) for j in range(1, k)] + [len(states)]
        cuts = sorted(set(cuts))
        k = len(cuts) - 1
        tasks.extend(ShardTask(pid[0], pid[1], j, states[cuts[j]:cuts[j + 1]], k) for j in range(k))
    tasks.sort(key=lambda t: (-t.weight, t.block_index, t.part_index, t.shard_index))
    return tasks


@dataclass(frozen=True)
class ShardOptions:
    """How the distributed enumeration cuts and runs its work.

    Attributes:
        cpus_per_worker: CPUs each actor reserves.
        shards_per_worker: how finely the work is cut (more shards: better balance, more round trips).
        min_shard_states: a large part is not cut into shards of fewer states than this.
        max_retries: times a shard is retried after its worker died.
    """
    cpus_per_worker: float = 1.0
    shards_per_worker: int = 4
    min_shard_states: int = 64
    max_retries: int = 2


def enumerate_graph_distributed(graph: Graph, opts: SpaceOptions, *, num_workers: int,
                                shards: ShardOptions = ShardOptions(), return_report: bool = False):
    """Enumerate ``graph``'s state space on ``num_workers`` Ray actors.

    Args:
        graph: the graph (sent once, through the object store, to each actor).
        opts: pruning and strategies, as for ``enumerate_graph``.
        num_workers: actors to start (Ray must be connected: ``cluster.connect``).
        shards: how the work is cut and retried (``ShardOptions``).
        return_report: also return an ``EnumerateReport``.

    Returns:
        The ``GraphSpace`` (equal to ``enumerate_graph(graph, opts)``), and the report if asked for.

    Raises:
        InsufficientResourcesError: the cluster lacks ``num_workers * shards.cpus_per_worker`` CPUs.
        EnumerationError: a shard's worker died more than ``shards.max_retries`` times.
    """
    check_resources(num_workers, WorkerResources(num_cpus=shards.cpus_per_worker))
    seconds: Dict[str, float] = {}
    t0 = time.perf_counter()
    parts = graph_parts(graph, opts)
    states = {(p.block_index, p.part_index): part_states(p) for ps in parts for p in ps}
    tasks = plan_shards(states, num_workers, shards_per_worker=shards.shards_per_worker,
                        min_shard_states=shards.min_shard_states)
    seconds["plan"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    actor_cls = ray.remote(EnumerateWorker).options(num_cpus=shards.cpus_per_worker, max_restarts=0)
    # no restart budget: each item's retries are bounded instead (max_retries)
    with ActorSlots(actor_cls, (ray.put(graph),), max(1, min(num_workers, len(tasks))), prefix="e") as slots:
        slots.start()
        done, per_worker, retries = _run(tasks, slots, opts, shards.max_retries)
    seconds["enumerate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    spaces = [[done[(p.block_index, p.part_index)] for p in block_parts] for block_parts in parts]
    space = assemble_graph(opts, parts, spaces)
    seconds["assemble"] = time.perf_counter() - t0
    if return_report:
        return space, EnumerateReport(len(states), len(tasks), per_worker, retries, seconds)
    return space


@dataclass(frozen=True)
class _Assemble:
    """Assemble part ``part_id`` from its finished shards (refs in shard order)."""
    part_id: Tuple[int, int]
    shard_refs: Tuple["ray.ObjectRef", ...]


def _run(tasks: List[ShardTask], slots: ActorSlots, opts: SpaceOptions, max_retries: int):
    """Hand work to idle actors (one item at a time each): shard tasks, then each part's assembly as soon
    as its last shard is done. A dead actor is replaced and its item retried (bounded)."""
    queue: Deque[Union[ShardTask, _Assemble]] = collections.deque(tasks)
    inflight: Dict["ray.ObjectRef", Tuple[Slot, Union[ShardTask, _Assemble], "ray.ObjectRef"]] = {}
    idle = slots.live()
    losses: Dict[tuple, int] = collections.Counter()
    shard_refs: Dict[Tuple[int, int], Dict[int, "ray.ObjectRef"]] = collections.defaultdict(dict)
    done: Dict[Tuple[int, int], PartSpace] = {}
    per_worker: Dict[str, int] = collections.Counter()
    retries = 0
    while queue or inflight:
        while queue and idle:
            slot = idle.pop()
            item = queue.popleft()
            if isinstance(item, ShardTask):
                # two returns: the worker id (small: fetched, surfaces errors) and the payload, which for
                # a shard stays in the object store until an assembling worker reads it
                meta, payload = slot.handle.expand.options(num_returns=2).remote(item, opts)
            else:
                meta, payload = slot.handle.assemble.options(num_returns=2).remote(*item.part_id, opts,
                                                                                    *item.shard_refs)
            inflight[meta] = (slot, item, payload)
        ready, _ = ray.wait(list(inflight), num_returns=1)
        for ref in ready:
            slot, item, payload = inflight.pop(ref)
            try:
                worker_id = ray.get(ref)
            except WORKER_LOST_ERRORS as exc:
                kind = f"shard {item.shard_index}" if isinstance(item, ShardTask) else "assembly"
                what = f"part {item.part_id[0]}.{item.part_id[1]} ({kind})"
                ident = (item.part_id, kind)
                losses[ident] += 1
                if losses[ident] > max_retries:
                    raise EnumerationError(f"{what}: its worker died {losses[ident]} times ({exc})") from exc
                logger.warning("%s: worker %s died (%s); retry %d of %d", what, slot.worker_id, describe(exc),
                               losses[ident], max_retries)
                retries += 1
                queue.appendleft(item)
                idle.append(slots.replace(slot, f"{type(exc).__name__} during {what}"))
                continue
            per_worker[worker_id] += 1
            idle.append(slot)
            if isinstance(item, ShardTask) and item.num_shards > 1:
                refs = shard_refs[item.part_id]
                refs[item.shard_index] = payload
                if len(refs) == item.num_shards:   # the part's last shard: assemble it next
                    queue.appendleft(_Assemble(item.part_id, tuple(refs[j] for j in range(item.num_shards))))
                    del shard_refs[item.part_id]
            else:
                done[item.part_id] = ray.get(payload)
    return done, dict(per_worker), retries

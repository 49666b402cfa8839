"""Enumerate the IOS state space: per part, its states, transitions and candidate stages with keys.

Data flow::

    Graph --graph_parts--> PartGraph (bitmasks) --part_states--> states (ideals)
          --enumerate_transitions(part, states)--> PartShard (plain, picklable; one per worker)
          --assemble_part(part, shards)--> PartSpace --> GraphSpace (+ specs of distinct keys)

A transition ``S -> S - S'`` removes an ending ``S'`` of ``S`` (no edge from ``S'`` back into
``S - S'``), run as the *last* stage of ``S``:

* PARALLEL: ``S'`` is a union of disjoint groups, each ``closure_S(u) = desc(u) & S`` for a generator
  ``u``, with at most ``max_group_size`` ops per group and ``max_num_groups`` groups. A union of
  descendant-closed sets is an ending, and the generators of ``S'`` are exactly its minimal nodes, so
  every ending is produced once and the group split depends on ``S'`` alone.
* MERGE: ``S'`` is a set of at least two sink convolutions of ``S`` that ``can_merge`` (same input
  value, stride, activation, output size, centrable kernels). Single ops are PARALLEL stages.

A stage is identified by (group masks, strategy) within its part and specced once per identity; its
cost is the latency of ``stage_spec(...).key``, shared by identical stages anywhere in the graph.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..graph.ir import Conv, Graph, Node
from ..graph.schedule import Strategy
from .keys import GroupInfo, StageKeyer, group_info
from .options import SpaceOptions
from .parts import PartGraph, graph_parts, part_states
from .stage import StageSpec, can_merge

__all__ = ["StageCandidate", "PartShard", "PartSpace", "SpaceCounts", "GraphSpace", "enumerate_transitions",
           "assemble_part", "enumerate_graph", "enumerate_part", "graph_parts", "part_states"]


@dataclass(frozen=True)
class StageCandidate:
    """A candidate stage by node names: groups run concurrently, each group's nodes in order.

    For MERGE every member conv is its own one-node group; the optimizer replaces them by one conv.
    """

    groups: Tuple[Tuple[str, ...], ...]
    strategy: Strategy
    key: str


# A stage's identity inside a part: (masks of its groups in generator order, strategy).
StageIdentity = Tuple[Tuple[int, ...], Strategy]


@dataclass(frozen=True)
class PartShard:
    """Transitions of some states of one part: plain data, so workers can return it.

    ``states[i]`` has ``counts[i]`` transitions; they are the next run of ``next_states`` and
    ``stage_refs`` (indices into ``stages``). ``specs`` holds a spec for every key in ``stages``.
    """

    block_index: int
    part_index: int
    states: Tuple[int, ...]
    counts: Tuple[int, ...]
    next_states: Tuple[int, ...]
    stage_refs: Tuple[int, ...]
    stages: Tuple[Tuple[Tuple[int, ...], Strategy, str], ...]
    specs: Mapping[str, StageSpec]


@dataclass(frozen=True, eq=False)
class PartSpace:
    """The DP graph of one part.

    Attributes:
        names: node names; bit ``i`` of a state is ``names[i]``.
        states: every state, ordered by size then mask (``states[0]`` is empty, the last is full).
        offsets: transitions of ``states[i]`` are ``offsets[i]:offsets[i+1]`` of the two arrays below.
        next_index: index (into ``states``) of the state left after the transition.
        stage_index: index into the stage table (``stage_groups``/``stage_strategies``/``stage_keys``).
        stage_groups: per stage, the masks of its groups.
        level_offsets: states of size ``k`` are ``level_offsets[k]:level_offsets[k+1]``.
    """

    block_index: int
    part_index: int
    names: Tuple[str, ...]
    states: Tuple[int, ...]
    offsets: np.ndarray
    next_index: np.ndarray
    stage_index: np.ndarray
    stage_groups: Tuple[Tuple[int, ...], ...]
    stage_strategies: Tuple[Strategy, ...]
    stage_keys: Tuple[str, ...]
    level_offsets: Tuple[int, ...]

    @property
    def num_states(self) -> int:
        return len(self.states)

    @property
    def num_transitions(self) -> int:
        return int(self.next_index.shape[0])

    @property
    def num_stages(self) -> int:
        return len(self.stage_keys)

    def names_of(self, mask: int) -> Tuple[str, ...]:
        out = []
        while mask:
            low = mask & -mask
            out.append(self.names[low.bit_length() - 1])
            mask ^= low
        return tuple(out)

    def stage(self, stage_id: int) -> StageCandidate:
        """The stage table's entry ``stage_id`` with node names."""
        return StageCandidate(tuple(self.names_of(g) for g in self.stage_groups[stage_id]),
                              self.stage_strategies[stage_id], self.stage_keys[stage_id])

    def transitions(self, state_index: int) -> List[Tuple[int, int]]:
        """``(next state index, stage id)`` pairs of ``states[state_index]``."""
        lo, hi = int(self.offsets[state_index]), int(self.offsets[state_index + 1])
        return list(zip(self.next_index[lo:hi].tolist(), self.stage_index[lo:hi].tolist()))


@dataclass(frozen=True)
class SpaceCounts:
    states: int
    transitions: int
    unique_stages: int       # distinct spec keys: what has to be measured
    stage_identities: int    # stages by identity (group masks + strategy) summed over parts
    max_groups: int          # the most groups in one candidate stage


@dataclass(frozen=True, eq=False)
class GraphSpace:
    """The whole graph's state space: ``blocks[b]`` lists the parts of block ``b``."""

    options: SpaceOptions
    blocks: Tuple[Tuple[PartSpace, ...], ...]
    specs: Mapping[str, StageSpec]

    @property
    def counts(self) -> SpaceCounts:
        parts = [p for b in self.blocks for p in b]
        max_groups = max((len(g) for p in parts for g in p.stage_groups), default=0)
        return SpaceCounts(sum(p.num_states for p in parts), sum(p.num_transitions for p in parts),
                           len(self.specs), sum(p.num_stages for p in parts), max_groups)


class _PartEnumerator:
    """Transitions of one part's states; caches stage ids, group signatures and merge checks."""

    def __init__(self, part: PartGraph, opts: SpaceOptions, keyer: StageKeyer):
        self.part = part
        self.keyer = keyer
        parallel = opts.opt_type.parallel
        self.r = opts.max_group_size if parallel else 1
        self.s = opts.max_num_groups if parallel else 1
        self.merge = opts.opt_type.merge
        self.stage_ids: Dict[StageIdentity, int] = {}
        self.stages: List[Tuple[Tuple[int, ...], Strategy, str]] = []
        self.parallel_ids: Dict[int, int] = {}           # union mask -> stage id
        self.merge_ids: Dict[int, Optional[int]] = {}    # member mask -> stage id, None if not mergeable
        self.group_infos: Dict[int, GroupInfo] = {}
        # merge class per node: convs that could merge share (input value, stride, act, output size)
        classes: Dict[tuple, int] = {}
        self.merge_class = [-1] * part.size
        self.mergeable = 0
        for i, node in enumerate(part.nodes):
            if isinstance(node, Conv) and node.groups == 1 and len(node.inputs) == 1 and len(node.inputs[0]) == 1:
                v = node.inputs[0][0]
                key = (id(v.node), v.begin, v.end, node.stride, node.act, tuple(node.output_shape[1:]))
                self.merge_class[i] = classes.setdefault(key, len(classes))
                self.mergeable |= 1 << i

    # ----- stage table -------------------------------------------------------------------------
    def _nodes(self, mask: int) -> List[Node]:
        nodes = self.part.nodes
        out = []
        while mask:
            low = mask & -mask
            out.append(nodes[low.bit_length() - 1])
            mask ^= low
        return out

    def _info(self, gmask: int) -> GroupInfo:
        info = self.group_infos.get(gmask)
        if info is None:
            info = self.group_infos[gmask] = group_info(self._nodes(gmask))
        return info

    def _add_stage(self, groups: Tuple[int, ...], strategy: Strategy, key: str) -> int:
        sid = len(self.stages)
        self.stage_ids[(groups, strategy)] = sid
        self.stages.append((groups, strategy, key))
        return sid

    def parallel_stage(self, union: int) -> int:
        """Stage id of the PARALLEL stage removing ``union`` (groups: closures of its minimal nodes)."""
        preds, desc = self.part.preds, self.part.desc
        groups = []
        m = union
        while m:
            low = m & -m
            i = low.bit_length() - 1
            if preds[i] & union == 0:
                groups.append(desc[i] & union)
            m ^= low
        groups_t = tuple(groups)
        key = self.keyer.parallel_key([self._info(g) for g in groups_t], [self._nodes(g) for g in groups_t])
        sid = self._add_stage(groups_t, Strategy.PARALLEL, key)
        self.parallel_ids[union] = sid
        return sid

    def merge_stage(self, members: int) -> Optional[int]:
        """Stage id of merging the convs of ``members``, or None if they can't merge."""
        convs = self._nodes(members)
        sid = None
        if can_merge(convs):
            groups = []
            m = members
            while m:
                low = m & -m
                groups.append(low)
                m ^= low
            key = self.keyer.merge_key([self._info(g) for g in groups], convs)
            sid = self._add_stage(tuple(groups), Strategy.MERGE, key)
        self.merge_ids[members] = sid
        return sid

    # ----- transitions -------------------------------------------------------------------------
    def transitions(self, state: int, next_states: List[int], stage_refs: List[int]) -> None:
        """Append every transition of ``state`` to the two lists."""
        desc = self.part.desc
        r, s = self.r, self.s
        cands = []   # closures small enough to be a group
        m = state
        while m:
            low = m & -m
            c = desc[low.bit_length() - 1] & state
            if c.bit_count() <= r:
                cands.append(c)
            m ^= low
        k = len(cands)
        parallel_ids = self.parallel_ids
        parallel_stage = self.parallel_stage
        append_next, append_ref = next_states.append, stage_refs.append

        def extend(start: int, used: int, depth: int) -> None:
            # every choice of further disjoint closures from cands[start:], with used already taken
            for j in range(start, k):
                c = cands[j]
                if c & used:
                    continue
                union = used | c
                sid = parallel_ids.get(union)
                if sid is None:
                    sid = parallel_stage(union)
                append_next(state ^ union)
                append_ref(sid)
                if depth < s:
                    extend(j + 1, union, depth + 1)

        extend(0, 0, 1)
        if self.merge:
            self._merge_transitions(state, append_next, append_ref)

    def _merge_transitions(self, state: int, append_next, append_ref) -> None:
        desc = self.part.desc
        buckets: Dict[int, int] = defaultdict(int)   # merge class -> mask of its sink convs in state
        m = state & self.mergeable
        while m:
            low = m & -m
            i = low.bit_length() - 1
            if desc[i] & state == low:
                buckets[self.merge_class[i]] |= low
            m ^= low
        merge_ids = self.merge_ids
        for members in buckets.values():
            if members & (members - 1) == 0:
                continue
            sub = members
            while sub:   # every subset of the bucket with at least two convs
                if sub & (sub - 1):
                    if sub in merge_ids:
                        sid = merge_ids[sub]
                    else:
                        sid = self.merge_stage(sub)
                    if sid is not None:
                        append_next(state ^ sub)
                        append_ref(sid)
                sub = (sub - 1) & members


def enumerate_transitions(part: PartGraph, states: Sequence[int], opts: SpaceOptions,
                          keyer: Optional[StageKeyer] = None) -> PartShard:
    """Transitions of ``states`` (a subset of ``part_states(part)``), independent of other subsets.

    Args:
        part: the part (from ``graph_parts``).
        states: the states to expand; shards of one part may be computed by different workers.
        opts: pruning and strategies.
        keyer: a key cache to share across calls in one process (a new one if None).
    Returns:
        A ``PartShard``; combine the shards of a part with ``assemble_part``.
    """
    keyer = keyer if keyer is not None else StageKeyer()
    enumerator = _PartEnumerator(part, opts, keyer)
    next_states: List[int] = []
    stage_refs: List[int] = []
    counts = []
    for state in states:
        before = len(next_states)
        if state:
            enumerator.transitions(state, next_states, stage_refs)
        counts.append(len(next_states) - before)
    keys = {key for _, _, key in enumerator.stages}
    return PartShard(part.block_index, part.part_index, tuple(states), tuple(counts), tuple(next_states),
                     tuple(stage_refs), tuple(enumerator.stages), {k: keyer.specs[k] for k in keys})


def assemble_part(part: PartGraph, shards: Sequence[PartShard]) -> PartSpace:
    """Combine the shards of ``part`` (covering each of its states once) into its ``PartSpace``.

    Raises:
        ValueError: a shard belongs to another part, or the shards miss or repeat states.
    """
    where: Dict[int, Tuple[int, int, int]] = {}   # state -> (shard, first transition, count)
    for si, shard in enumerate(shards):
        if (shard.block_index, shard.part_index) != (part.block_index, part.part_index):
            raise ValueError(f"shard of part {shard.block_index}.{shard.part_index} given for part "
                             f"{part.block_index}.{part.part_index}")
        pos = 0
        for state, count in zip(shard.states, shard.counts):
            if state in where:
                raise ValueError(f"part {part.block_index}.{part.part_index}: state {state:#x} is in two shards")
            where[state] = (si, pos, count)
            pos += count
    states = part_states(part)
    if len(where) != len(states) or any(s not in where for s in states):
        missing = [s for s in states if s not in where]
        raise ValueError(f"part {part.block_index}.{part.part_index}: shards cover {len(where)} states, the part "
                         f"has {len(states)} ({len(missing)} missing, e.g. {[hex(s) for s in missing[:3]]})")
    index = {s: i for i, s in enumerate(states)}
    # the union of the shards' stage tables, each identity once
    ids: Dict[StageIdentity, int] = {}
    table: List[Tuple[Tuple[int, ...], Strategy, str]] = []
    remap: List[List[int]] = []
    for shard in shards:
        local = []
        for entry in shard.stages:
            ident = (entry[0], entry[1])
            gid = ids.get(ident)
            if gid is None:
                gid = ids[ident] = len(table)
                table.append(entry)
            local.append(gid)
        remap.append(local)
    offsets = [0]
    next_index: List[int] = []
    stage_index: List[int] = []
    for state in states:
        si, pos, count = where[state]
        shard = shards[si]
        next_index.extend(map(index.__getitem__, shard.next_states[pos:pos + count]))
        stage_index.extend(map(remap[si].__getitem__, shard.stage_refs[pos:pos + count]))
        offsets.append(len(next_index))
    level_offsets = [0] * (part.size + 2)
    for state in states:
        level_offsets[state.bit_count() + 1] += 1
    for k in range(1, len(level_offsets)):
        level_offsets[k] += level_offsets[k - 1]
    return PartSpace(part.block_index, part.part_index, part.names, tuple(states),
                     np.asarray(offsets, dtype=np.int64), np.asarray(next_index, dtype=np.int32),
                     np.asarray(stage_index, dtype=np.int32), tuple(e[0] for e in table),
                     tuple(e[1] for e in table), tuple(e[2] for e in table), tuple(level_offsets))


def enumerate_part(part: PartGraph, opts: SpaceOptions, keyer: Optional[StageKeyer] = None
                   ) -> Tuple[PartSpace, Mapping[str, StageSpec]]:
    """The whole ``PartSpace`` of one part in this process, and the specs of its keys."""
    shard = enumerate_transitions(part, part_states(part), opts, keyer)
    return assemble_part(part, [shard]), shard.specs


def enumerate_graph(graph: Graph, opts: SpaceOptions) -> GraphSpace:
    """Enumerate every part of every block of ``graph`` in this process.

    Returns:
        A ``GraphSpace``: its ``specs`` has one ``StageSpec`` per distinct key (what to measure).
    """
    keyer = StageKeyer()
    blocks = []
    specs: Dict[str, StageSpec] = {}
    for parts in graph_parts(graph, opts):
        spaces = []
        for part in parts:
            space, part_specs = enumerate_part(part, opts, keyer)
            specs.update(part_specs)
            spaces.append(space)
        blocks.append(tuple(spaces))
    return GraphSpace(opts, tuple(blocks), specs)

"""Enumerate the IOS state space: per part, its states, transitions and candidate stages with keys.

Data flow::

    Graph --graph_parts--> PartGraph (bitmasks) --part_states--> states (ideals)
          --enumerate_transitions(part, some states)--> PartShard (plain data; one per worker)
          --assemble_part(part, shards)--> PartSpace --assemble_graph--> GraphSpace (+ specs by key)

``enumerate_graph`` runs all of it in this process.

A transition ``S -> S - S'`` removes an ending ``S'`` of ``S`` (no edge from ``S'`` back into
``S - S'``), run as the *last* stage of ``S``:

* PARALLEL: ``S'`` is a union of disjoint groups, each ``closure_S(u) = desc(u) & S`` for a generator
  ``u``, with at most ``max_group_size`` ops per group and ``max_num_groups`` groups. A union of
  descendant-closed sets is an ending, and the generators of ``S'`` are exactly its minimal nodes, so
  every such ending is produced once and its split into groups depends on ``S'`` alone.
* MERGE: ``S'`` is a set of at least two sink convolutions of ``S`` that ``can_merge`` (same input
  value, stride, activation, output size, centrable kernels). Single ops are PARALLEL stages.

A stage is identified by (group masks, strategy) within its part and keyed once per identity; its cost
is the latency of ``stage_spec(...).key``, shared by identical stages anywhere in the graph.
"""
from __future__ import annotations

import collections
from array import array
from collections import defaultdict
from dataclasses import dataclass
from itertools import repeat
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..graph.ir import Conv, Graph, Node
from ..graph.merge import can_merge
from ..graph.schedule import Strategy
from .keys import GroupTemplate, StageKeyer
from .options import OptType, SpaceOptions
from .parts import PartGraph, graph_parts, mask_names, part_states
from .stage import StageSpec, stage_spec

__all__ = ["OptType", "SpaceOptions", "StageCandidate", "PartShard", "PartSpace", "SpaceCounts", "SpecTable",
           "GraphSpace", "enumerate_transitions", "assemble_part", "assemble_graph", "enumerate_part",
           "enumerate_graph", "graph_parts", "part_states"]

# A stage table entry: (masks of its groups in generator order, strategy, spec key).
StageEntry = Tuple[Tuple[int, ...], Strategy, str]


@dataclass(frozen=True)
class StageCandidate:
    """A candidate stage by node names: groups run concurrently, each group's nodes in order.

    For MERGE every member conv is its own one-node group; the optimizer replaces them by one conv.
    """

    groups: Tuple[Tuple[str, ...], ...]
    strategy: Strategy
    key: str


@dataclass(frozen=True, eq=False)
class PartShard:
    """Transitions of some states of one part: plain data (ints, tuples, numpy arrays) for workers.

    ``states[i]`` has ``counts[i]`` transitions; they are the next run of ``next_index`` (positions in
    ``part_states(part)``) and ``stage_refs`` (indices into this shard's ``stages``).
    """

    block_index: int
    part_index: int
    states: Tuple[int, ...]
    counts: np.ndarray
    next_index: np.ndarray
    stage_refs: np.ndarray
    stages: Tuple[StageEntry, ...]


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
        return mask_names(self.names, mask)

    def stage(self, stage_id: int) -> StageCandidate:
        """The stage table's entry ``stage_id`` with node names."""
        return StageCandidate(tuple(self.names_of(g) for g in self.stage_groups[stage_id]),
                              self.stage_strategies[stage_id], self.stage_keys[stage_id])

    def transitions(self, state_index: int) -> List[Tuple[int, int]]:
        """``(next state index, stage id)`` pairs of ``states[state_index]``."""
        lo, hi = int(self.offsets[state_index]), int(self.offsets[state_index + 1])
        return list(zip(self.next_index[lo:hi].tolist(), self.stage_index[lo:hi].tolist()))


class SpecTable(Mapping[str, StageSpec]):
    """``key -> StageSpec`` of every distinct stage of a space, built on access.

    Holding one spec object per distinct key would cost more than the enumeration itself (RandWire
    has ~10^5-10^6), so each key keeps one representative stage and its spec is rebuilt on demand.
    """

    RECENT = 4096   # specs kept after a build: profiling reads each one a few times in a row

    def __init__(self, sources: Dict[str, Tuple[PartGraph, Tuple[int, ...], Strategy]]):
        self._sources = sources
        self._recent: "collections.OrderedDict[str, StageSpec]" = collections.OrderedDict()

    def __getitem__(self, key: str) -> StageSpec:
        spec = self._recent.get(key)
        if spec is not None:
            return spec
        part, groups, strategy = self._sources[key]
        nodes = part.nodes
        spec = stage_spec([[nodes[i] for i in range(g.bit_length()) if g >> i & 1] for g in groups], strategy)
        self._recent[key] = spec
        while len(self._recent) > self.RECENT:
            try:
                self._recent.popitem(last=False)
            except KeyError:   # another thread emptied it meanwhile
                break
        return spec

    def __getstate__(self):
        return {"_sources": self._sources}   # the recent specs stay behind (rebuilt on demand)

    def __setstate__(self, state):
        self._sources = state["_sources"]
        self._recent = collections.OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._sources

    def __iter__(self) -> Iterator[str]:
        return iter(self._sources)

    def __len__(self) -> int:
        return len(self._sources)


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
    specs: SpecTable

    @property
    def counts(self) -> SpaceCounts:
        parts = [p for b in self.blocks for p in b]
        max_groups = max((len(g) for p in parts for g in p.stage_groups), default=0)
        return SpaceCounts(sum(p.num_states for p in parts), sum(p.num_transitions for p in parts),
                           len(self.specs), sum(p.num_stages for p in parts), max_groups)


class _PartEnumerator:
    """Expands states of one part; caches stage ids, group templates and merge checks."""

    def __init__(self, part: PartGraph, opts: SpaceOptions, keyer: StageKeyer):
        self.part = part
        self.keyer = keyer
        parallel = opts.opt_type.parallel
        self.r = opts.max_group_size if parallel else 1
        self.s = opts.max_num_groups if parallel else 1
        self.merge = opts.opt_type.merge
        self.stages: List[StageEntry] = []
        self.parallel_ids: Dict[int, int] = {}           # union mask -> stage id
        self.merge_ids: Dict[int, Optional[int]] = {}    # member mask -> stage id, None if not mergeable
        self.templates: Dict[int, GroupTemplate] = {}    # group mask -> template
        # merge class per node: convs that could merge share (input value, stride, act, output size)
        classes: Dict[tuple, int] = {}
        self.merge_class = [-1] * part.size
        self.mergeable = 0
        for i, node in enumerate(part.nodes):
            if (part.fixed >> i) & 1:
                continue  # the block's exit keeps its own output: the next block reads all of it
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

    def _template(self, gmask: int) -> GroupTemplate:
        t = self.templates.get(gmask)
        if t is None:
            t = self.templates[gmask] = self.keyer.template(self._nodes(gmask))
        return t

    def parallel_stage(self, union: int) -> int:
        """Stage id of the PARALLEL stage removing ``union``, added to the table if new."""
        desc = self.part.desc
        groups = []
        m = union
        while m:  # the lowest node left is a generator: it precedes the rest of its closure
            low = m & -m
            g = desc[low.bit_length() - 1] & union
            groups.append(g)
            m &= ~g
        groups_t = tuple(groups)
        known = self.templates.get
        key = self.keyer.parallel_key([known(g) or self._template(g) for g in groups_t])
        sid = self.parallel_ids[union] = len(self.stages)
        self.stages.append((groups_t, Strategy.PARALLEL, key))
        return sid

    def merge_stage(self, members: int) -> Optional[int]:
        """Stage id of merging the convs of ``members`` (None if they can't merge), added if new."""
        convs = self._nodes(members)
        sid = None
        if can_merge(convs):
            groups = []
            m = members
            while m:
                low = m & -m
                groups.append(low)
                m ^= low
            key = self.keyer.merge_key([self._template(g) for g in groups], convs)
            sid = len(self.stages)
            self.stages.append((tuple(groups), Strategy.MERGE, key))
        self.merge_ids[members] = sid
        return sid

    # ----- transitions -------------------------------------------------------------------------
    def expand(self, states: Sequence[int], index: Mapping[int, int]) -> PartShard:
        """Transitions of ``states``; ``index`` maps every state of the part to its position."""
        desc = self.part.desc
        r, s = self.r, self.s
        n = self.part.size
        full = self.part.full
        # A union of chosen closures carries its number of groups above the node bits: closures
        # are disjoint, so adding one is ``u + c + one`` and "fewer than s groups" is ``u < limit``.
        one = 1 << n
        limit = s << n
        ids_get = self.parallel_ids.get
        counts = array("i")
        next_masks = array("q") if n <= 62 else []   # next states, mapped to indices at the end
        stage_refs = array("i")
        for state in states:
            if not state:
                counts.append(0)
                continue
            cands = []  # closures small enough to be a group
            m = state
            while m:
                low = m & -m
                c = desc[low.bit_length() - 1] & state
                if c.bit_count() <= r:
                    cands.append(c)
                m ^= low
            # Every set of pairwise disjoint closures, each built once: closure j is only added to
            # sets made of closures before it. unions[0] (nothing chosen) is dropped afterwards.
            unions = [0]
            if s >= len(cands):  # the group count cannot exceed s
                for c in cands:
                    unions += [u | c for u in unions if not u & c]
                del unions[0]
            else:
                for c in cands:
                    cc = c + one
                    unions += [u + cc for u in unions if not u & c and u < limit]
                del unions[0]
                unions = [u & full for u in unions]
            sids = list(map(ids_get, unions))
            if None in sids:
                for k, sid in enumerate(sids):
                    if sid is None:
                        sids[k] = self.parallel_stage(unions[k])
            nexts = [state ^ u for u in unions]
            if self.merge:
                self._merges(state, nexts, sids)
            counts.append(len(nexts))
            next_masks.extend(nexts)
            stage_refs.extend(sids)
        if isinstance(next_masks, array):
            by_mask = np.array(sorted(index), dtype=np.int64)
            positions = np.array([index[m] for m in by_mask.tolist()], dtype=np.int32)
            found = np.searchsorted(by_mask, np.frombuffer(next_masks, dtype=np.int64))
            next_index = positions[found] if len(next_masks) else np.empty(0, dtype=np.int32)
        else:
            next_index = np.array([index[m] for m in next_masks], dtype=np.int32)
        return PartShard(self.part.block_index, self.part.part_index, tuple(states),
                         np.frombuffer(counts, dtype=np.int32).copy(), next_index,
                         np.frombuffer(stage_refs, dtype=np.int32).copy(), tuple(self.stages))

    def _merges(self, state: int, nexts: List[int], sids: List[int]) -> None:
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
                    sid = merge_ids[sub] if sub in merge_ids else self.merge_stage(sub)
                    if sid is not None:
                        nexts.append(state ^ sub)
                        sids.append(sid)
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
    Raises:
        ValueError: a state is not a state of the part.
    """
    index = {s: i for i, s in enumerate(part_states(part))}
    bad = [s for s in states if s not in index]
    if bad:
        raise ValueError(f"part {part.block_index}.{part.part_index}: {len(bad)} given states are not states of "
                         f"the part (not ancestor-closed or outside it), e.g. {hex(bad[0])}")
    return _PartEnumerator(part, opts, keyer if keyer is not None else StageKeyer()).expand(states, index)


def assemble_part(part: PartGraph, shards: Sequence[PartShard]) -> PartSpace:
    """Combine the shards of ``part`` (covering each of its states once) into its ``PartSpace``.

    Raises:
        ValueError: a shard belongs to another part, or the shards miss or repeat states.
    """
    states = part_states(part)
    index = {s: i for i, s in enumerate(states)}
    where: List[Optional[Tuple[int, int, int]]] = [None] * len(states)   # (shard, first transition, count)
    for si, shard in enumerate(shards):
        if (shard.block_index, shard.part_index) != (part.block_index, part.part_index):
            raise ValueError(f"shard of part {shard.block_index}.{shard.part_index} given for part "
                             f"{part.block_index}.{part.part_index}")
        starts = np.concatenate(([0], np.cumsum(shard.counts)))
        for k, state in enumerate(shard.states):
            i = index.get(state)
            if i is None:
                raise ValueError(f"part {part.block_index}.{part.part_index}: shard state {state:#x} is not a state")
            if where[i] is not None:
                raise ValueError(f"part {part.block_index}.{part.part_index}: state {state:#x} is in two shards")
            where[i] = (si, int(starts[k]), int(shard.counts[k]))
    missing = [states[i] for i, w in enumerate(where) if w is None]
    if missing:
        raise ValueError(f"part {part.block_index}.{part.part_index}: the shards miss {len(missing)} of its "
                         f"{len(states)} states, e.g. {[hex(s) for s in missing[:3]]}")
    # the union of the shards' stage tables, each identity once
    ids: Dict[Tuple[Tuple[int, ...], Strategy], int] = {}
    table: List[StageEntry] = []
    remaps = []
    for shard in shards:
        local = np.empty(len(shard.stages), dtype=np.int32)
        for k, entry in enumerate(shard.stages):
            ident = (entry[0], entry[1])
            gid = ids.get(ident)
            if gid is None:
                gid = ids[ident] = len(table)
                table.append(entry)
            local[k] = gid
        remaps.append(local)
    global_refs = [remap[shard.stage_refs] for remap, shard in zip(remaps, shards)]
    counts = np.array([w[2] for w in where], dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(counts)))
    if len(shards) == 1 and shards[0].states == tuple(states):
        next_index, stage_index = shards[0].next_index, global_refs[0]
    else:
        next_index = np.concatenate([shards[si].next_index[a:a + c] for si, a, c in where])
        stage_index = np.concatenate([global_refs[si][a:a + c] for si, a, c in where])
    level_offsets = [0] * (part.size + 2)
    for state in states:
        level_offsets[state.bit_count() + 1] += 1
    for k in range(1, len(level_offsets)):
        level_offsets[k] += level_offsets[k - 1]
    return PartSpace(part.block_index, part.part_index, part.names, tuple(states), offsets.astype(np.int64),
                     next_index.astype(np.int32, copy=False), stage_index.astype(np.int32, copy=False),
                     tuple(e[0] for e in table), tuple(e[1] for e in table), tuple(e[2] for e in table),
                     tuple(level_offsets))


def assemble_graph(opts: SpaceOptions, parts: Sequence[Sequence[PartGraph]],
                   spaces: Sequence[Sequence[PartSpace]]) -> GraphSpace:
    """The ``GraphSpace`` of per-block parts (``graph_parts``) and their assembled ``PartSpace``s."""
    sources: Dict[str, Tuple[PartGraph, Tuple[int, ...], Strategy]] = {}
    for block_parts, block_spaces in zip(parts, spaces):
        for part, space in zip(block_parts, block_spaces):
            if (part.block_index, part.part_index) != (space.block_index, space.part_index):
                raise ValueError(f"part {part.block_index}.{part.part_index} paired with the space of part "
                                 f"{space.block_index}.{space.part_index}")
            # any stage with a key represents it: they all have that spec
            sources.update(zip(space.stage_keys, zip(repeat(part), space.stage_groups, space.stage_strategies)))
    return GraphSpace(opts, tuple(tuple(b) for b in spaces), SpecTable(sources))


def enumerate_part(part: PartGraph, opts: SpaceOptions, keyer: Optional[StageKeyer] = None) -> PartSpace:
    """The whole ``PartSpace`` of one part, in this process."""
    return assemble_part(part, [enumerate_transitions(part, part_states(part), opts, keyer)])


def enumerate_graph(graph: Graph, opts: SpaceOptions) -> GraphSpace:
    """Enumerate every part of every block of ``graph`` in this process.

    Returns:
        A ``GraphSpace``; its ``specs`` has one ``StageSpec`` per distinct key (what to measure).
    """
    keyer = StageKeyer()
    parts = graph_parts(graph, opts)
    spaces = [[enumerate_part(part, opts, keyer) for part in block_parts] for block_parts in parts]
    return assemble_graph(opts, parts, spaces)

"""Definition-level reference of valid stages and schedules, by brute force (exponential; tests only).

It follows the stage definition literally, over sets of node indices of a part (nodes in dependency
order), without the enumerator's bitmask shortcuts: a stage is an ending ``T`` of the remaining set
``R`` (no edge from ``T`` into ``R - T``) that is either

* PARALLEL: ``T`` is the disjoint union of the closures within ``R`` (node plus descendants in ``R``) of
  its minimal nodes, with at most r nodes per closure and s closures; or
* MERGE: at least two convs, each without successor in ``R``, that ``can_merge``.

With opt_type ``dp_merge``, PARALLEL stages are single operators (r = s = 1).
"""
from __future__ import annotations

from itertools import combinations
from typing import Dict, FrozenSet, Iterator, List, Sequence, Tuple

from ..graph.ir import Node
from ..graph.merge import can_merge
from ..graph.schedule import Strategy
from .options import SpaceOptions

RefStage = Tuple[Tuple[Tuple[int, ...], ...], Strategy]   # groups of node indices (sorted), strategy


def successors(nodes: Sequence[Node]) -> List[FrozenSet[int]]:
    """``successors(nodes)[i]``: indices of the nodes that read ``nodes[i]`` (within ``nodes``)."""
    index = {id(n): i for i, n in enumerate(nodes)}
    succ: List[set] = [set() for _ in nodes]
    for j, n in enumerate(nodes):
        for p in n.input_nodes():
            if id(p) in index:
                succ[index[id(p)]].add(j)
    return [frozenset(s) for s in succ]


def valid_stages(nodes: Sequence[Node], remaining: FrozenSet[int], opts: SpaceOptions) -> List[RefStage]:
    """Every valid stage that can run last among ``remaining``."""
    succ = successors(nodes)
    parallel = opts.opt_type.parallel
    r = opts.max_group_size if parallel else 1
    s = opts.max_num_groups if parallel else 1
    out: List[RefStage] = []
    members = sorted(remaining)
    for size in range(1, len(members) + 1):
        for combo in combinations(members, size):
            t = frozenset(combo)
            if any((succ[i] & remaining) - t for i in t):
                continue  # not an ending
            minimal = [i for i in combo if not any(i in succ[j] for j in t)]
            groups = [_closure(i, succ, remaining) for i in minimal]
            disjoint = sum(len(g) for g in groups) == len(frozenset().union(*groups))
            if disjoint and frozenset().union(*groups) == t and len(groups) <= s and all(len(g) <= r for g in groups):
                out.append((tuple(tuple(sorted(g)) for g in groups), Strategy.PARALLEL))
            if opts.opt_type.merge and size >= 2 and all(not (succ[i] & remaining) for i in t) \
                    and can_merge([nodes[i] for i in combo]):
                out.append((tuple((i,) for i in combo), Strategy.MERGE))
    return out


def _closure(i: int, succ: List[FrozenSet[int]], remaining: FrozenSet[int]) -> FrozenSet[int]:
    seen = {i}
    todo = [i]
    while todo:
        for j in succ[todo.pop()] & remaining:
            if j not in seen:
                seen.add(j)
                todo.append(j)
    return frozenset(seen)


def all_schedules(nodes: Sequence[Node], opts: SpaceOptions) -> Iterator[Tuple[RefStage, ...]]:
    """Every valid schedule of ``nodes`` (first stage first), each stage valid for what is left."""
    cache: Dict[FrozenSet[int], List[RefStage]] = {}

    def stages_of(rem: FrozenSet[int]) -> List[RefStage]:
        if rem not in cache:
            cache[rem] = valid_stages(nodes, rem, opts)
        return cache[rem]

    def schedules(rem: FrozenSet[int]) -> Iterator[Tuple[RefStage, ...]]:
        if not rem:
            yield ()
            return
        for stage in stages_of(rem):
            used = frozenset(i for g in stage[0] for i in g)
            for head in schedules(rem - used):
                yield head + (stage,)

    yield from schedules(frozenset(range(len(nodes))))


def is_ideal(nodes: Sequence[Node], subset: FrozenSet[int]) -> bool:
    """True when every input (within ``nodes``) of a node of ``subset`` is in ``subset``."""
    succ = successors(nodes)
    return all(j not in subset or i in subset for i in range(len(nodes)) for j in succ[i])

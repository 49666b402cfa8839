"""The IOS dynamic program over an enumerated state space and a stage-cost lookup (pure).

Data flow: ``GraphSpace`` (``space.enumerate``) + ``cost[key]`` (latency of each distinct stage, e.g.
from the cost table) -> ``solve`` -> ``Solution``: per block the optimal stage list and its predicted
latency. No measurement happens here: the DP can be run, and tested, on any cost mapping.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..graph.schedule import Stage
from ..space.enumerate import GraphSpace, PartSpace


class MissingCostError(KeyError):
    """The cost lookup has no latency for some stage keys of the space."""

    def __init__(self, missing: List[str], total: int):
        self.missing = missing
        super().__init__(f"{len(missing)} of {total} stage keys have no cost (e.g. {missing[:3]}); measure "
                         f"them first or give them math.inf to forbid them")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class NoFeasibleScheduleError(ValueError):
    """Every schedule of a part uses a stage whose cost is infinite (or not a number)."""


@dataclass(frozen=True)
class Solution:
    """Optimal schedule: ``block_stages[b]`` are block ``b``'s stages, first stage first.

    MERGE stages list their member convs as separate one-node groups (strategy MERGE); the optimizer
    replaces them by the merged conv. Latencies are the sums of the stage costs (the cost's unit).
    """

    block_stages: Tuple[Tuple[Stage, ...], ...]
    block_latency: Tuple[float, ...]
    total_latency: float

    @property
    def num_stages(self) -> int:
        return sum(len(s) for s in self.block_stages)


def solve(space: GraphSpace, cost: Mapping[str, float]) -> Solution:
    """Minimum-latency schedule of every block.

    Args:
        space: from ``enumerate_graph`` (or parts assembled from shards).
        cost: latency of each stage key; ``math.inf`` forbids a stage.
    Returns:
        The ``Solution``.
    Raises:
        MissingCostError: some key of ``space.specs`` has no cost.
        ValueError: a cost is NaN or negative.
        NoFeasibleScheduleError: a part has no schedule of finite cost.
    """
    missing = [k for k in space.specs if k not in cost]
    if missing:
        raise MissingCostError(missing, len(space.specs))
    key_cost = {k: checked_cost(k, cost[k]) for k in space.specs}
    return _solution(space, [solve_part(part, [key_cost[k] for k in part.stage_keys])
                             for parts in space.blocks for part in parts])


def _solution(space: GraphSpace, per_part: Sequence[Tuple[float, List[Stage]]]) -> Solution:
    """The Solution of every part's (cost, stages), the parts in the space's block order."""
    block_stages, block_latency, done = [], [], 0
    for parts in space.blocks:
        mine = per_part[done:done + len(parts)]
        done += len(parts)
        block_stages.append(tuple(stage for _, stages in mine for stage in stages))
        block_latency.append(float(sum(c for c, _ in mine)))
    return Solution(tuple(block_stages), tuple(block_latency), float(sum(block_latency)))


def runner_up(space: GraphSpace, cost: Mapping[str, float]) -> Optional[Solution]:
    """The DP's next-best schedule: the optimum in every part but one, which runs its runner-up
    (``part_runner_up``: a schedule with a stage key the optimum's part does not run, so not the optimum
    with alike operators swapped), in the part where that costs least extra. None if no part has another
    schedule of finite cost. Stages without a cost (e.g. left unmeasured by lazy profiling) are forbidden.

    Raises:
        ValueError: a cost is NaN or negative.
        NoFeasibleScheduleError: a part has no schedule of finite cost.
    """
    parts = [p for block in space.blocks for p in block]
    paths, totals, swap = [], [], None       # swap: (extra cost, part index, runner-up path)
    for i, part in enumerate(parts):
        sc = np.array([checked_cost(k, cost[k]) if k in cost else math.inf for k in part.stage_keys],
                      dtype=np.float64)
        best = part_best(part, sc)
        paths.append(part_path(part, sc, best))
        totals.append(float(best[-1]))
        kinds = np.unique(np.array(part.stage_keys), return_inverse=True)[1]
        got = part_runner_up(part, sc, best, PartReverse.of(part), kinds, paths[-1])
        if got is not None and (swap is None or got[0] - totals[i] < swap[0]):
            swap = (got[0] - totals[i], i, got[1])
    if swap is None:
        return None
    extra, j, path = swap
    paths[j], totals[j] = path, totals[j] + extra
    return _solution(space, [(t, part_stages(part, ids)) for part, ids, t in zip(parts, paths, totals)])


def checked_cost(key: str, value: float) -> float:
    """``value`` as a float.

    Raises:
        ValueError: it is NaN or negative (naming the stage ``key``).
    """
    c = float(value)
    if math.isnan(c) or c < 0:
        raise ValueError(f"stage {key}: cost {c} is not a non-negative number (use math.inf to forbid it)")
    return c


def solve_part(part: PartSpace, stage_cost: List[float]) -> Tuple[float, List[Stage]]:
    """Optimal cost and stage list of one part; ``stage_cost[i]`` is the cost of stage id ``i``."""
    sc = np.asarray(stage_cost, dtype=np.float64)
    best = part_best(part, sc)
    ids = part_path(part, sc, best)
    return float(best[-1]), part_stages(part, ids)


def part_best(part: PartSpace, sc: np.ndarray, reuse: Optional[np.ndarray] = None, from_size: int = 1
              ) -> np.ndarray:
    """``best[i]``: the least total cost of running the operators of ``part.states[i]`` (see below).

    Args:
        part: the part's DP graph.
        sc: float64 cost per stage id of the part.
        reuse: a ``best`` of an earlier call whose stage costs equal ``sc`` on every stage that has a
            transition out of a state of fewer than ``from_size`` operators: those states keep their values
            and only the larger ones are solved again, in place (the lazy DP, whose rounds change a few
            stage costs of a part at a time).
        from_size: see ``reuse``; 1 (or no ``reuse``): every state solved.
    """
    n = part.num_states
    offsets, nxt, sid = part.offsets, part.next_index, part.stage_index
    # best[i]: least total latency of running the operators of states[i] (the ones not yet
    # scheduled; everything else runs after them). Base: best[empty] = 0. Recurrence:
    # best[S] = min over transitions S -> S - S' by stage t of best[S - S'] + cost[t]  (t runs last).
    # A transition leads to a smaller state, so solving level by level (state size) is in order.
    # np.take rather than fancy indexing: the lazy DP solves NASNet's parts tens of thousands of times.
    # Per level, not into one buffer of every transition: a fresh multi-megabyte buffer per call made
    # some processes 2-3x slower (measured; the likely cause, not checked: allocations that large are
    # mapped afresh by malloc and fault their pages in on every call).
    if reuse is None:
        best = np.full(n, np.inf)
        best[0] = 0.0
        from_size = 1
    else:
        best = reuse
    for size, (a, b, lo, hi) in part_sized_levels(part):
        if size < from_size:
            continue
        vals = np.take(best, nxt[lo:hi])
        vals += np.take(sc, sid[lo:hi])
        best[a:b] = np.minimum.reduceat(vals, offsets[a:b] - lo)
    return best


def part_stage_sizes(part: PartSpace) -> np.ndarray:
    """Per stage id, the size of the smallest state with a transition by it (``len(part.stage_index)`` is
    the part's transitions): a change of that stage's cost changes ``best`` of that size and up only."""
    size_of = np.full(part.num_stages, np.iinfo(np.int64).max, dtype=np.int64)
    for size, (a, b, lo, hi) in part_sized_levels(part):
        np.minimum.at(size_of, part.stage_index[lo:hi], size)
    return size_of


def part_levels(part: PartSpace) -> Iterator[Tuple[int, int, int, int]]:
    """``(a, b, lo, hi)`` per state size, smallest first (the empty state left out): states ``a..b-1`` have
    that size and their transitions are ``lo..hi-1``. A transition leads to a smaller state, so a DP over
    the states solved in this order finds every next state already solved."""
    for _, level in part_sized_levels(part):
        yield level


def part_sized_levels(part: PartSpace) -> Iterator[Tuple[int, Tuple[int, int, int, int]]]:
    """``part_levels`` with each level's state size."""
    offsets, levels = part.offsets, part.level_offsets
    for size in range(1, len(levels) - 1):
        a, b = int(levels[size]), int(levels[size + 1])
        if a < b:
            yield size, (a, b, int(offsets[a]), int(offsets[b]))


def part_path(part: PartSpace, sc: np.ndarray, best: np.ndarray) -> List[int]:
    """Stage ids of the optimal schedule ``best`` (from ``part_best(part, sc)``) describes, first stage first;
    at each state the first transition achieving the minimum.

    Raises:
        NoFeasibleScheduleError: every schedule of the part has infinite cost.
    """
    n = part.num_states
    full = n - 1
    if not math.isfinite(best[full]):
        stuck = next(i for i in range(n) if not math.isfinite(best[i]))
        raise NoFeasibleScheduleError(
            f"block {part.block_index} part {part.part_index}: no schedule of finite cost; e.g. every stage "
            f"that can run last among {list(part.names_of(part.states[stuck]))} has infinite cost")
    return _path_from(part, sc, best, full)


@dataclass(frozen=True, eq=False)
class PartReverse:
    """A part's transitions ordered by the state they lead to, and by their stage (``part_through`` reads
    them; built once per part: a sort of every transition)."""

    source: np.ndarray        # per transition, the index of the state it leaves
    into: np.ndarray          # transition indices sorted by next state: into[into_starts[i]:into_starts[i+1]] reach states[i]
    into_starts: np.ndarray
    by_stage: np.ndarray      # transition indices sorted by stage id, cut the same way by stage_starts
    stage_starts: np.ndarray

    @staticmethod
    def of(part: PartSpace) -> "PartReverse":
        n = part.num_states
        source = np.repeat(np.arange(n, dtype=np.int64), np.diff(part.offsets))
        into = np.argsort(part.next_index, kind="stable")
        into_starts = np.searchsorted(part.next_index[into], np.arange(n + 1))
        by_stage = np.argsort(part.stage_index, kind="stable")
        stage_starts = np.searchsorted(part.stage_index[by_stage], np.arange(part.num_stages + 1))
        return PartReverse(source, into, into_starts, by_stage, stage_starts)


def part_reach(part: PartSpace, sc: np.ndarray, rev: PartReverse) -> np.ndarray:
    """``reach[i]``: the least cost of the stages that run after ``states[i]``'s operators (a path peels
    stages off the end: from the full state down to ``states[i]``; ``inf`` where no finite way leads)."""
    n = part.num_states
    sid, source = part.stage_index, rev.source
    reach = np.full(n, np.inf)
    reach[n - 1] = 0.0
    levels = part.level_offsets
    # the transitions into a state leave larger states, so the levels are solved largest first (every size
    # below the full state's; the empty state's value would be the optimum, which ``part_best`` has)
    for size in range(len(levels) - 3, 0, -1):
        a, b = int(levels[size]), int(levels[size + 1])
        lo, hi = int(rev.into_starts[a]), int(rev.into_starts[b])
        if a == b or lo == hi:
            continue
        t = rev.into[lo:hi]
        vals = np.take(reach, np.take(source, t)) + np.take(sc, np.take(sid, t))
        starts = rev.into_starts[a:b] - lo
        empty = rev.into_starts[a + 1:b + 1] - lo == starts
        got = np.minimum.reduceat(vals, np.minimum(starts, vals.size - 1))
        got[empty] = np.inf
        reach[a:b] = got
    return reach


def _transition_through(part: PartSpace, sc: np.ndarray, best: np.ndarray, rev: PartReverse,
                        reach: np.ndarray) -> np.ndarray:
    """Per transition, the least cost of a whole schedule that takes it."""
    return np.take(reach, rev.source) + np.take(sc, part.stage_index) + np.take(best, part.next_index)


def part_through(part: PartSpace, sc: np.ndarray, best: np.ndarray, rev: PartReverse) -> np.ndarray:
    """Per stage id, the least cost of a whole schedule of the part that runs that stage (``inf`` if none
    is finite): the best way from the full state to one the stage leaves, the stage, then ``best`` of what
    is left. The part's optimum is the least of them; the lazy DP ranks unknown stages by it.

    Args:
        part: the part's DP graph.
        sc: float64 cost per stage id.
        best: ``part_best(part, sc)``.
        rev: ``PartReverse.of(part)``.
    """
    through = _transition_through(part, sc, best, rev, part_reach(part, sc, rev))
    starts = rev.stage_starts[:-1]
    out = np.minimum.reduceat(np.take(through, rev.by_stage), np.minimum(starts, max(through.size - 1, 0)))
    out[rev.stage_starts[1:] == starts] = np.inf    # a stage no transition takes
    return out


def part_runner_up(part: PartSpace, sc: np.ndarray, best: np.ndarray, rev: PartReverse,
                   stage_kinds: Optional[np.ndarray] = None, path: Optional[List[int]] = None
                   ) -> Optional[Tuple[float, List[int]]]:
    """The cheapest schedule of the part that runs a stage its optimal path (``part_path``) does not: its
    cost and stage ids, first stage first; None when every such schedule costs ``inf``.

    Any other schedule runs some stage off the optimal path (one with the same stages only orders them
    otherwise), so this is the next-best schedule up to such reorderings. With ``stage_kinds`` (an integer
    per stage id, e.g. its stage key's), "off the path" means of a kind the path does not run: schedules
    that only swap alike operators (the same keys, the same costs) are left out too. ``path``: the optimal
    path when the caller has it already.
    """
    if path is None:
        path = part_path(part, sc, best)
    reach = part_reach(part, sc, rev)
    through = _transition_through(part, sc, best, rev, reach)
    if stage_kinds is None:
        off = np.ones(part.num_stages, dtype=bool)
        off[path] = False
    else:
        off = ~np.isin(stage_kinds, stage_kinds[path])
    through = np.where(off[part.stage_index], through, np.inf)
    k = int(np.argmin(through)) if through.size else -1
    if k < 0 or not math.isfinite(through[k]):
        return None
    # the way down to the state transition k leaves, along transitions achieving its reach
    sid, nxt, source = part.stage_index, part.next_index, rev.source
    head: List[int] = []
    state = int(source[k])
    while state != part.num_states - 1:
        lo, hi = int(rev.into_starts[state]), int(rev.into_starts[state + 1])
        t = rev.into[lo:hi]
        hits = np.flatnonzero(reach[source[t]] + sc[sid[t]] == reach[state])
        if hits.size == 0:  # pragma: no cover - reach was computed from these very sums
            raise AssertionError("runner-up reconstruction found no transition")
        step = int(t[hits[0]])
        head.append(int(sid[step]))
        state = int(source[step])
    # head holds the stages that run after k's, in run order (the first found runs right after it); the
    # best way down from the state k leads to runs before it
    tail = _path_from(part, sc, best, int(nxt[k]))
    return float(through[k]), tail + [int(sid[k])] + head


def _path_from(part: PartSpace, sc: np.ndarray, best: np.ndarray, state: int) -> List[int]:
    """Stage ids of ``best``'s optimal schedule of ``states[state]``'s operators, first stage first; at each
    state the first transition achieving the minimum (the same float sums as ``part_best``'s)."""
    offsets, nxt, sid = part.offsets, part.next_index, part.stage_index
    ids: List[int] = []
    i = state
    while i != 0:
        lo, hi = int(offsets[i]), int(offsets[i + 1])
        hits = np.flatnonzero(best[nxt[lo:hi]] + sc[sid[lo:hi]] == best[i])
        if hits.size == 0:  # pragma: no cover - the minimum was computed from these very sums
            raise AssertionError("DP reconstruction found no optimal transition")
        k = lo + int(hits[0])
        ids.append(int(sid[k]))
        i = int(nxt[k])
    ids.reverse()
    return ids


def part_stages(part: PartSpace, stage_ids: List[int]) -> List[Stage]:
    """The ``Stage`` records (node names) of a part's stage ids."""
    stages = []
    for t in stage_ids:
        cand = part.stage(t)
        stages.append(Stage(cand.groups, cand.strategy))
    return stages

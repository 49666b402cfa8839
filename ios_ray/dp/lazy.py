"""Lazy profiling: the DP's optimum measuring only the stages that can be on an optimal path (pure).

Data flow::

    GraphSpace, known costs (e.g. cost-table hits), measure(keys) -> {key: cost}
      singles: every operator alone (the one-op stage of each node) is measured first
      bounds:  every other stage gets a lower bound from those (a ``StageBound``; ``OpSumBound`` by default)
      round:   each part is solved on (known costs, bounds elsewhere); the unknown stages on every part's
               optimal path (and on its next best paths, ``paths_per_part``, or the ``fill`` unknown stages
               whose cheapest schedules cost least) are measured in one batch;
               the parts holding a newly measured stage are solved again
      until:   every part's optimal path uses known stages only  ->  LazyResult(Solution, costs, LazyReport)

Why the result is exact: let ``C`` be the true costs and ``L`` the costs of the final round's DP, with
``L(t) = C(t)`` for every known stage and ``L(t) <= C(t)`` for the others (the bounds hold). The final path
``P*`` minimises ``L`` and uses known stages only, so ``L(P*) = C(P*)``; for any schedule ``P``,
``C(P) >= L(P) >= L(P*) = C(P*)``: ``P*`` is optimal for ``C``. Parts are independent (their costs add),
so this holds part by part. Termination: every round measures at least one stage that was unknown (or
the loop has ended), and there are finitely many: at worst every stage gets measured, i.e. exhaustive
profiling. If a bound is violated (a stage measures below its bound) the loop still ends with a schedule of
measured stages only, which may then not be optimal; ``LazyReport.violations`` counts such stages.

The schedule does not depend on how ``measure`` spreads a batch over workers: a round's batch is fixed
by the costs known before it, so any number of workers (with deterministic costs) gives the same rounds.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, Union, runtime_checkable

import numpy as np

from ..graph.schedule import Strategy
from ..space.enumerate import GraphSpace, PartSpace
from .solve import (PartReverse, Solution, checked_cost, part_best, part_levels, part_path, part_stage_sizes,
                    part_stages, part_through)

Measure = Callable[[List[str]], Mapping[str, float]]


@runtime_checkable
class StreamingMeasure(Protocol):
    """A ``measure`` that takes a round's keys as the DP finds them (``submit``, part after part), so the
    stages of the parts solved first are being measured while the DP solves the others; ``collect``
    returns the costs of every key submitted since the last ``collect`` (``profile.rounds.ProfileRounds``
    over the Ray pool). The rounds, the keys and the schedule are those of a plain ``Measure``."""

    def submit(self, keys: List[str]) -> None: ...

    def collect(self) -> Mapping[str, float]: ...


class _Batched:
    """A plain ``Measure`` as a ``StreamingMeasure``: the keys gathered, measured in one call at ``collect``."""

    def __init__(self, measure: Measure):
        self.measure = measure
        self.keys: List[str] = []

    def submit(self, keys: List[str]) -> None:
        self.keys.extend(keys)

    def collect(self) -> Mapping[str, float]:
        keys, self.keys = self.keys, []
        return self.measure(keys) if keys else {}


@dataclass(frozen=True, eq=False)
class PartOps:
    """The operators of every stage of one part, as flat arrays (what a bound reads).

    Stage ``t``'s groups are ``group_ids[stage_offsets[t]:stage_offsets[t + 1]]`` (indices of the part's
    distinct groups); group ``g``'s operators (bit positions) are
    ``op_nodes[group_offsets[g]:group_offsets[g + 1]]``; ``merge[t]`` says stage ``t`` runs its one-conv
    groups as one merged conv; ``single[i]`` is the stage id running node ``i`` alone.
    """

    stage_offsets: np.ndarray
    group_ids: np.ndarray
    group_offsets: np.ndarray
    op_nodes: np.ndarray
    merge: np.ndarray
    single: np.ndarray

    @staticmethod
    def of(part: PartSpace) -> "PartOps":
        """The arrays of ``part``'s stage table.

        Raises:
            ValueError: a node of the part has no one-op stage (it cannot be bounded).
        """
        group_index: Dict[int, int] = {}
        group_offsets = [0]
        op_nodes: List[int] = []
        stage_offsets = [0]
        group_ids: List[int] = []
        single = [-1] * len(part.names)
        for t, (groups, strategy) in enumerate(zip(part.stage_groups, part.stage_strategies)):
            for g in groups:
                gid = group_index.get(g)
                if gid is None:
                    gid = group_index[g] = len(group_offsets) - 1
                    op_nodes.extend(i for i in range(g.bit_length()) if g >> i & 1)
                    group_offsets.append(len(op_nodes))
                group_ids.append(gid)
            stage_offsets.append(len(group_ids))
            if strategy is Strategy.PARALLEL and len(groups) == 1 and groups[0] & (groups[0] - 1) == 0:
                single[groups[0].bit_length() - 1] = t
        missing = [part.names[i] for i, t in enumerate(single) if t < 0]
        if missing:
            raise ValueError(f"block {part.block_index} part {part.part_index}: nodes {missing[:5]} have no "
                             f"one-op stage to bound their stages from")
        return PartOps(np.array(stage_offsets, dtype=np.int64), np.array(group_ids, dtype=np.int64),
                       np.array(group_offsets, dtype=np.int64), np.array(op_nodes, dtype=np.int64),
                       np.array([s is Strategy.MERGE for s in part.stage_strategies], dtype=bool),
                       np.array(single, dtype=np.int64))


class StageBound(Protocol):
    """A lower bound of every stage of a part from its operators' one-op costs (the replaceable piece)."""

    def __call__(self, ops: PartOps, op_cost: np.ndarray, min_op_cost: float) -> np.ndarray:
        """Lower bounds of the part's stages.

        Args:
            ops: the part's stages as arrays.
            op_cost: ``op_cost[i]``: the measured cost of node ``i`` alone (``inf`` when that failed).
            min_op_cost: the smallest finite one-op cost of the whole graph (``inf`` if none).
        Returns:
            One finite, non-negative bound per stage id.
        """
        ...


@dataclass(frozen=True)
class OpSumBound:
    """A parallel stage takes at least as long as its slowest group's operators run back to back, and a
    merged conv at least ``merge_factor`` times its slowest member conv.

    Each one-op cost holds the operator's own time plus a per-stage ``overhead`` (launch, synchronisation)
    that a group of operators pays once, so a group takes at least ``overhead + sum(cost - overhead)``:

        parallel stage >= max over groups of (overhead + sum over its ops of max(0, one-op cost - overhead))
        merge stage    >= merge_factor x max over its member convs of their one-op cost

    A larger ``overhead`` gives a weaker (safer) bound; 0 is "the slowest group back to back". By default
    it is the smallest one-op cost of the graph: no stage costs less than the cheapest operator alone, so
    that is the largest the overhead can be. An operator whose one-op measurement failed adds nothing.

    Where the groups of a stage run one after another (``serial_groups``: the CPU reference runtime has
    no concurrency), the stage takes at least all of its operators back to back, one overhead paid:

        parallel stage >= overhead + sum over all its ops of max(0, one-op cost - overhead)

    which is as tight for a wide stage as for a chain (with the concurrent bound, lazy profiling measured
    98.7 % of Inception-v3's stages on the CPU).

    Args:
        overhead: the per-stage overhead in cost units (>= 0); None: the smallest one-op cost.
        merge_factor: in (0, 1]; below 1 leaves room for a merged conv's kernel being faster per channel.
        serial_groups: the device runs a stage's groups one after another.
    Raises:
        ValueError: a parameter out of range.
    """

    overhead: Optional[float] = None
    merge_factor: float = 0.9
    serial_groups: bool = False

    def __post_init__(self):
        if self.overhead is not None and not (self.overhead >= 0 and math.isfinite(self.overhead)):
            raise ValueError(f"overhead must be a finite number >= 0 or None, got {self.overhead}")
        if not 0 < self.merge_factor <= 1:
            raise ValueError(f"merge_factor must be in (0, 1], got {self.merge_factor}")

    def __call__(self, ops: PartOps, op_cost: np.ndarray, min_op_cost: float) -> np.ndarray:
        if self.overhead is not None:
            d = self.overhead
        else:
            d = min_op_cost if math.isfinite(min_op_cost) else 0.0
        c = np.where(np.isfinite(op_cost), op_cost, 0.0)
        starts = ops.group_offsets[:-1]
        group_sum = d + np.add.reduceat(np.maximum(c - d, 0.0)[ops.op_nodes], starts)
        group_max = np.maximum.reduceat(c[ops.op_nodes], starts)
        stage_starts = ops.stage_offsets[:-1]
        if self.serial_groups:
            parallel = d + np.add.reduceat(group_sum[ops.group_ids] - d, stage_starts)
        else:
            parallel = np.maximum.reduceat(group_sum[ops.group_ids], stage_starts)
        merged = self.merge_factor * np.maximum.reduceat(group_max[ops.group_ids], stage_starts)
        return np.where(ops.merge, merged, parallel)


@dataclass(frozen=True)
class LazyOptions:
    """How the lazy DP bounds and batches.

    Args:
        bound: lower bounds of the unmeasured stages (``OpSumBound()`` by default).
        paths_per_part: per round, measure the unknown stages of this many best paths of each unfinished
            part (1: the optimal one only; more: bigger, fewer rounds, some stages measured needlessly).
        stream_factor: 0 (the default) leaves the bounds as ``bound`` gives them. Above 0, each extra group
            of an unmeasured parallel stage adds ``stream_factor`` x the least per-extra-group slack seen so
            far, ``min((cost - bound) / (groups - 1))`` over the measured stages of several groups: a
            learned stand-in for the cost of one more stream, which the operator-sum bound does not know
            (on the GPU it made NASNet's rounds measure most of the space: ``benchmarks/lazy_overheads.py``).
            It is learned, not proved: below 1 leaves a margin, and a stage measured below its bound is
            counted in ``LazyReport.violations`` as always.
        tolerance: 0 (the default) measures until the optimum is proved. Above 0, a part stops as soon as
            its best schedule of measured stages costs at most ``1 + tolerance`` times its optimum on
            bounds, a lower bound of its true optimum: the schedule returned is then proved within
            ``tolerance`` of the optimum (while the bounds hold), and where many schedules lie within a few
            percent of each other (NASNet on a GPU, any network on the CPU) most of them go unmeasured.
        fill: per round, each part whose optimal path still holds unknown stages also sends
            ``ceil(fill x its transitions / 1000)`` of its other unknown stages: those whose cheapest schedule
            (``part_through``: the best way to the stage, the stage, the best way on, on known costs and
            bounds) costs least, i.e. the ones later rounds would most likely ask for. Fewer, fuller rounds
            for a few stages more, in proportion to what solving the part again costs. Replayed on the H200's
            tables (``benchmarks/lazy_fill.py``), 0.5 took NASNet's rounds from 3,083 to 112 and RandWire's
            from 24,177 to 176, for 3.3 % and 0.9 % more stages, with the same schedules. The result
            stays exact: the proof above does not depend on which unknown stages a round measures. None (the
            default) is 0 here; ``optimize`` picks by device (``optimizer.GPU_FILL`` on a GPU, where a round
            costs many stages' worth).
    Raises:
        ValueError: ``paths_per_part`` < 1, ``stream_factor`` outside [0, 1], ``tolerance`` < 0, or
            ``fill`` negative or not finite.
    """

    bound: StageBound = OpSumBound()
    paths_per_part: int = 1
    stream_factor: float = 0.0
    tolerance: float = 0.0
    fill: Optional[float] = None

    def __post_init__(self):
        if self.paths_per_part < 1:
            raise ValueError(f"paths_per_part must be at least 1, got {self.paths_per_part}")
        if not 0 <= self.stream_factor <= 1:
            raise ValueError(f"stream_factor must be in [0, 1], got {self.stream_factor}")
        if not (self.tolerance >= 0 and math.isfinite(self.tolerance)):
            raise ValueError(f"tolerance must be a finite number >= 0, got {self.tolerance}")
        if self.fill is not None and not (self.fill >= 0 and math.isfinite(self.fill)):
            raise ValueError(f"fill must be a finite number >= 0, got {self.fill}")


@dataclass(frozen=True)
class LazyReport:
    """What the lazy DP measured.

    Attributes:
        unique_stages: distinct stage keys of the space.
        given: keys whose cost was given up front (e.g. cost-table hits).
        measured: keys passed to ``measure`` (the one-op stages included).
        rounds: measurement batches after the one-op stages.
        batch_sizes: keys per ``measure`` call, the one-op batch first (0 if all were given).
        violations: measured stages whose cost fell below their bound (the bound did not hold there).
        fill: ``LazyOptions.fill`` as used (None counts as 0).
    """

    unique_stages: int
    given: int
    measured: int
    rounds: int
    batch_sizes: Tuple[int, ...]
    violations: int
    fill: float = 0.0

    @property
    def known(self) -> int:
        """Stages with a cost at the end."""
        return self.given + self.measured

    @property
    def fraction(self) -> float:
        """The share of the space's stages that got a cost (given or measured)."""
        return self.known / self.unique_stages if self.unique_stages else 1.0


@dataclass(frozen=True)
class LazyResult:
    solution: Solution
    costs: Dict[str, float]      # every known cost: given and measured
    report: LazyReport


def lazy_solve(space: GraphSpace, measure: Union[Measure, StreamingMeasure], known: Optional[Mapping[str, float]] = None,
               options: LazyOptions = LazyOptions()) -> LazyResult:
    """The optimal schedule of every block, measuring stages only as the DP needs them.

    Args:
        space: from ``enumerate_graph`` (or assembled from shards).
        measure: ``measure(keys) -> {key: cost}`` for a batch of stage keys (``math.inf``: the stage
            failed); called once for the one-op stages, then once per round. Or a ``StreamingMeasure``,
            given each part's unknown keys as soon as that part is solved and collected once per round.
        known: costs known up front (keys outside the space are ignored).
        options: the bound and the paths measured per round.
    Returns:
        A ``LazyResult``: the ``Solution`` (its latencies are measured costs), every known cost, the report.
    Raises:
        ValueError: a cost is NaN or negative, ``measure`` left a key without a cost, or the bound
            returned something other than one non-negative number per stage.
        NoFeasibleScheduleError: a part has no schedule of finite cost.
    """
    return _LazyRun(space, measure, known or {}, options).run()


def k_best_paths(part: PartSpace, sc: np.ndarray, k: int) -> List[Tuple[float, List[int]]]:
    """The ``k`` cheapest schedules of a part (fewer if it has fewer of finite cost), cheapest first.

    Args:
        part: the part's DP graph.
        sc: float64 cost per stage id.
        k: how many.
    Returns:
        ``(cost, stage ids first stage first)`` per schedule.
    """
    n = part.num_states
    offsets, nxt, sid = part.offsets, part.next_index, part.stage_index
    # best[i, r]: the (r+1)-th least cost of running states[i]'s operators (as part_best's, over distinct
    # paths); back[i, r]: the transition taken first from states[i] on that path and the rank of the rest
    # of the path in its next state. Base: best[empty, 0] = 0. Recurrence: the k least of
    # best[next, r'] + cost[t] over the transitions (t, next) of the state and r' < k.
    best = np.full((n, k), np.inf)
    best[0, 0] = 0.0
    back_t = np.full((n, k), -1, dtype=np.int64)
    back_r = np.zeros((n, k), dtype=np.int64)
    for a, b, lo, hi in part_levels(part):
        cand = (best[nxt[lo:hi]] + sc[sid[lo:hi]][:, None]).ravel()
        state = np.repeat(np.arange(a, b), np.diff(offsets[a:b + 1]) * k)
        order = np.lexsort((cand, state))
        first = np.searchsorted(state[order], np.arange(a, b))
        rank = np.arange(order.size) - first[state[order] - a]
        keep = rank < k
        chosen = order[keep]
        rows, ranks = state[chosen], rank[keep]
        best[rows, ranks] = cand[chosen]
        back_t[rows, ranks] = lo + chosen // k
        back_r[rows, ranks] = chosen % k
    paths = []
    for r in range(k):
        if not math.isfinite(best[n - 1, r]):
            break
        ids, i, rr = [], n - 1, r
        while i != 0:
            t = int(back_t[i, rr])
            ids.append(int(sid[t]))
            i, rr = int(nxt[t]), int(back_r[i, rr])
        ids.reverse()
        paths.append((float(best[n - 1, r]), ids))
    return paths


def _part_signature(part: PartSpace, key_index: np.ndarray) -> bytes:
    """A digest of what a part's DP depends on: its stages' keys and its transitions."""
    h = hashlib.blake2b(digest_size=16)
    for arr in (key_index, part.offsets, part.next_index, part.stage_index):
        a = np.ascontiguousarray(arr)
        h.update(str(a.dtype).encode() + len(a).to_bytes(8, "little"))
        h.update(a.tobytes())
    return h.digest()


class _LazyRun:
    """The state of one ``lazy_solve``: costs by key index (NaN: unknown), bounds, each part's path."""

    def __init__(self, space: GraphSpace, measure: Union[Measure, StreamingMeasure], known: Mapping[str, float],
                 options: LazyOptions):
        self.stream = measure if isinstance(measure, StreamingMeasure) else _Batched(measure)
        self.options = options
        self.blocks = space.blocks
        self.keys: List[str] = list(space.specs)
        self.index = {k: i for i, k in enumerate(self.keys)}
        self.cost = np.full(len(self.keys), np.nan)     # NaN: not known yet
        for key, value in known.items():
            i = self.index.get(key)
            if i is not None:
                self.cost[i] = checked_cost(key, value)
        self.given = int(np.count_nonzero(~np.isnan(self.cost)))
        self.parts = [p for block in space.blocks for p in block]
        self.key_index = [np.fromiter(map(self.index.__getitem__, p.stage_keys), np.int64, p.num_stages)
                          for p in self.parts]
        self.bound = np.zeros(len(self.keys))
        self.base_bound = self.bound      # the bound's own values (before any learned stream term)
        # groups beyond the first of each parallel stage (0 for a merge: one conv), from the parts' stage
        # tables rather than the specs, which would be rebuilt for every key
        self.extra_groups = np.zeros(len(self.keys))
        for part, ki in zip(self.parts, self.key_index):
            extra = np.fromiter((len(g) - 1 if st is Strategy.PARALLEL else 0
                                 for g, st in zip(part.stage_groups, part.stage_strategies)), np.float64,
                                part.num_stages)
            np.maximum.at(self.extra_groups, ki, extra)
        self.stream_slack = math.inf      # least (cost - base bound) / extra groups measured so far
        # Parts alike (a network's repeated cells: the same stage keys over the same DP graph) have the same
        # optimum: each is solved once, on its first part, and the others take its path.
        first: Dict[bytes, int] = {}
        self.same_as = [first.setdefault(_part_signature(p, ki), i)
                        for i, (p, ki) in enumerate(zip(self.parts, self.key_index))]
        self.distinct = sorted(set(self.same_as))
        self.paths: List[List[int]] = [[] for _ in self.parts]    # each part's optimal path (stage ids)
        self.totals: List[float] = [0.0] * len(self.parts)        # and its cost
        self.batch_sizes: List[int] = []
        self.violations = 0
        self._last: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}   # part -> (stage costs, best) last solved
        self._stage_sizes: Dict[int, np.ndarray] = {}
        self._reverse: Dict[int, PartReverse] = {}

    def run(self) -> LazyResult:
        ops = [PartOps.of(p) for p in self.parts]
        singles = [ki[o.single] for ki, o in zip(self.key_index, ops)]
        first = np.unique(np.concatenate(singles)) if singles else np.empty(0, np.int64)
        self._submit(first)
        self._measure(first)
        self._bounds(ops, singles)
        self.base_bound = self.bound.copy()
        # A part none of whose stages got a cost in the last round keeps its path, which then uses known
        # stages only (its unknown ones would have been measured in that round).
        dirty: Sequence[int] = self.distinct
        while True:
            need: Dict[int, None] = {}    # key indices to measure, in a deterministic order
            for i in dirty:
                found = [k for k in self._solve(i) if k not in need]
                need.update(dict.fromkeys(found))
                self._submit(found)       # measured (on a streaming pool) while the next parts are solved
            if not need:
                break
            new = np.fromiter(need, np.int64, len(need))
            self._measure(new)
            fresh = np.zeros(len(self.keys), dtype=bool)
            fresh[new] = True
            if self._learn_streams(new):   # every unmeasured parallel stage's bound moved
                dirty = self.distinct
                continue
            # Measured costs only rise above their bounds, so a part whose path holds no fresh stage keeps
            # it: every other schedule of it got dearer or stayed. A fresh cost below its bound (a
            # violation) can make another path cheaper: every part holding such a stage is solved again.
            below = np.zeros(len(self.keys), dtype=bool)
            below[new[self.cost[new] < self.bound[new]]] = True
            dirty = [i for i in self.distinct
                     if fresh[self.key_index[i][self.paths[i]]].any() or below[self.key_index[i]].any()]
        return self._result()

    def _costs(self, i: int) -> np.ndarray:
        """Part ``i``'s stage costs for the DP: the known ones, else the bounds."""
        ki = self.key_index[i]
        c = self.cost[ki]
        return np.where(np.isnan(c), self.bound[ki], c)

    def _solve(self, i: int) -> List[int]:
        """Part ``i``'s optimal path and cost (on the costs ``_costs`` gives); returns the key indices of its
        unknown stages (and of its next best paths' unknown stages), in path order, without repeats."""
        part, ki = self.parts[i], self.key_index[i]
        sc = self._costs(i)
        best = self._best(i, sc)
        ids = self.paths[i] = part_path(part, sc, best)
        self.totals[i] = float(best[-1])
        unknown = [k for k in dict.fromkeys(ki[ids].tolist()) if math.isnan(self.cost[k])]
        if not unknown or (self.options.tolerance > 0 and self._close_enough(i)):
            return []
        if self.options.paths_per_part > 1:
            for _, more in k_best_paths(part, sc, self.options.paths_per_part):
                unknown.extend(k for k in ki[more].tolist() if math.isnan(self.cost[k]))
        if self.options.fill:
            count = math.ceil(self.options.fill * part.num_transitions / 1000)
            unknown.extend(self._nearest(i, sc, best, count))
        return list(dict.fromkeys(unknown))

    def _nearest(self, i: int, sc: np.ndarray, best: np.ndarray, count: int) -> List[int]:
        """Up to ``count`` key indices of part ``i``'s unknown stages off its path, those whose cheapest
        schedule (``part_through``) costs least."""
        rev = self._reverse.get(i)
        if rev is None:
            rev = self._reverse[i] = PartReverse.of(self.parts[i])
        through = part_through(self.parts[i], sc, best, rev)
        ki = self.key_index[i]
        open_ = np.flatnonzero(np.isnan(self.cost[ki]) & np.isfinite(through))
        if open_.size == 0:
            return []
        take = min(open_.size, 4 * count)     # alike stage ids share a key: some slack before the dedup
        pick = open_[np.argpartition(through[open_], take - 1)[:take]] if take < open_.size else open_
        pick = pick[np.argsort(through[pick], kind="stable")]
        return list(dict.fromkeys(ki[pick].tolist()))[:count]

    def _best(self, i: int, sc: np.ndarray) -> np.ndarray:
        """``part_best`` of part ``i`` on ``sc``, solving again only the states at or above the smallest
        whose transitions' costs changed since the part's last solve (a round changes a few)."""
        last = self._last.get(i)
        if last is None:
            best = part_best(self.parts[i], sc)
        else:
            changed = sc != last[0]
            if not changed.any():
                best = last[1]
            else:
                sizes = self._stage_sizes.get(i)
                if sizes is None:
                    sizes = self._stage_sizes[i] = part_stage_sizes(self.parts[i])
                best = part_best(self.parts[i], sc, last[1], int(sizes[changed].min()))
        self._last[i] = (sc, best)
        return best

    def _close_enough(self, i: int) -> bool:
        """With a tolerance: whether part ``i``'s best schedule of known stages costs at most ``1 +
        tolerance`` times its optimum on bounds (``self.totals[i]``); if so, that schedule becomes its path."""
        part, ki = self.parts[i], self.key_index[i]
        c = self.cost[ki]
        c = np.where(np.isnan(c), np.inf, c)
        best = part_best(part, c)
        if not best[-1] <= (1 + self.options.tolerance) * self.totals[i]:
            return False
        self.paths[i] = part_path(part, c, best)
        self.totals[i] = float(best[-1])
        return True

    def _submit(self, key_index: Sequence[int]) -> None:
        todo = [self.keys[k] for k in key_index if math.isnan(self.cost[k])]
        if todo:
            self.stream.submit(todo)

    def _measure(self, key_index: np.ndarray) -> None:
        """Collects the round: the costs of the unknown keys of ``key_index`` (``_submit``ted already)."""
        todo = [int(k) for k in key_index if math.isnan(self.cost[k])]
        self.batch_sizes.append(len(todo))
        if not todo:
            return
        keys = [self.keys[k] for k in todo]
        got = self.stream.collect()
        missing = [k for k in keys if k not in got]
        if missing:
            raise ValueError(f"measure returned no cost for {len(missing)} of the {len(keys)} stages asked "
                             f"(e.g. {missing[:3]})")
        for key, value in got.items():
            i = self.index.get(key)
            if i is not None and math.isnan(self.cost[i]):
                self.cost[i] = checked_cost(key, value)
        measured = self.cost[todo]
        self.violations += int(np.count_nonzero(measured < self.bound[todo] * (1 - 1e-9)))

    def _learn_streams(self, measured: np.ndarray) -> bool:
        """With ``stream_factor`` > 0: the least per-extra-group slack, taking in ``measured``; when it
        changed, every bound of several groups is rebuilt from it. Returns whether the bounds changed."""
        factor = self.options.stream_factor
        if factor <= 0 or measured.size == 0:
            return False
        extra = self.extra_groups[measured]
        cost = self.cost[measured]
        use = (extra > 0) & np.isfinite(cost)
        if not use.any():
            return False
        slack = float(np.min((cost[use] - self.base_bound[measured][use]) / extra[use]))
        if slack >= self.stream_slack:
            return False
        self.stream_slack = slack
        self.bound = self.base_bound + self.extra_groups * max(0.0, factor * slack)
        return True

    def _bounds(self, ops: Sequence[PartOps], singles: Sequence[np.ndarray]) -> None:
        """Every key's bound: the largest its stage identities get (each is a valid lower bound)."""
        single_costs = self.cost[np.concatenate(singles)] if singles else np.empty(0)
        finite = single_costs[np.isfinite(single_costs)]
        min_op = float(finite.min()) if finite.size else math.inf
        for part, o, ki, si in zip(self.parts, ops, self.key_index, singles):
            b = np.asarray(self.options.bound(o, self.cost[si], min_op), dtype=np.float64)
            if b.shape != (part.num_stages,) or not np.all(np.isfinite(b) & (b >= 0)):
                raise ValueError(f"the stage bound {self.options.bound!r} must return {part.num_stages} finite "
                                 f"non-negative numbers for block {part.block_index} part {part.part_index}, "
                                 f"got shape {b.shape}")
            np.maximum.at(self.bound, ki, b)

    def _result(self) -> LazyResult:
        for i, j in enumerate(self.same_as):
            self.paths[i], self.totals[i] = self.paths[j], self.totals[j]
        block_stages, block_latency = [], []
        done = iter(zip(self.parts, self.paths, self.totals))
        for block in self.blocks:
            stages, total = [], 0.0
            for _ in block:
                part, ids, cost = next(done)
                stages.extend(part_stages(part, ids))
                total += cost
            block_stages.append(tuple(stages))
            block_latency.append(total)
        solution = Solution(tuple(block_stages), tuple(block_latency), float(sum(block_latency)))
        known = np.flatnonzero(~np.isnan(self.cost)).tolist()
        costs = {self.keys[i]: float(self.cost[i]) for i in known}
        report = LazyReport(len(self.keys), self.given, sum(self.batch_sizes), len(self.batch_sizes) - 1,
                            tuple(self.batch_sizes), self.violations,
                            float(self.options.fill or 0.0))
        return LazyResult(solution, costs, report)

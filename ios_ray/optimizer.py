"""``optimize``: the IOS entry point, local or distributed on Ray.

Data flow::

    optimize(IOS keywords) --checked once--> OptimizeOptions (space, cost-source recipe, profiling, Ray)
    Graph --enumerate (space/, local or on actors)--> GraphSpace{states, transitions, unique StageSpecs}
          --lazy (default): table hits, then the one-op stages, then rounds of the stages on the DP's
            optimal paths, each through profile_stages on one pool (dp.lazy, profile.rounds)
          --exhaustive: profile_stages of every stage, then solve (dp/, pure)
          --> Solution{stages per block}
          --construct (merges applied, weights laid out)--> new Graph with its schedule
          --final check (measured sources): the DP's schedule, its next-best (dp.solve.runner_up), the
            Sequential and the Greedy schedule timed as whole graphs on the same device (``measure_graph``)
            --> the fastest measured, with its report

The DP never touches hardware: it reads a ``{key: latency}`` mapping. Where the latencies come from is
the ``cost`` argument: a name from the registry (``costs.factory.KINDS``), a recipe, or any
``CostSource`` object; the same profiling function runs in-process (a pool of one) and on Ray.
"""
from __future__ import annotations

import contextlib
import dataclasses
import enum
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .costs.factory import CostArg, SourceRecipe, resolve_cost
from .costs.measurement import CostSource, DeviceInfo, MeasureSettings, Measurement
from .graph.ir import Block, Conv, Graph, Node, Placeholder, Terms, Value, topo_order
from .graph.merge import merged_conv_params
from .graph.schedule import Stage, Strategy, check_schedule
from .dp.lazy import LazyOptions, LazyReport, OpSumBound
from .dp.solve import Solution, runner_up
from .profile.stages import LocalPool, ProfileOptions, ProfileReport, profile_stages
from .space.options import SpaceOptions
from .space.stage import StageSpec, stage_spec

# Lazy profiling on a GPU: per round, each unsolved part also sends its unknown stages nearest its optimum,
# this many per 1,000 of its transitions (LazyOptions.fill; replays in benchmarks/lazy_fill.py).
GPU_FILL = 0.5
DP_SCHEDULE = "IOS"   # the DP's schedule among the final check's candidates (the others: Sequential, Greedy)
NEXT_BEST = "IOS next-best"   # the DP's next-best schedule (dp.solve.runner_up), a final-check candidate too


@dataclass(frozen=True)
class CheckedSchedule:
    """One candidate of ``optimize``'s final check: whole-graph latency predicted (the sum of its stage
    costs; None when some stage was never measured) and measured (median over repeats; nan on error)."""
    schedule: str
    predicted_ms: Optional[float]
    measured_ms: float
    spread_ms: float = 0.0
    error: str = ""


class Profiling(enum.Enum):
    """Which stages are measured."""
    LAZY = "lazy"              # only those that can be on an optimal path (exact while the bounds hold)
    EXHAUSTIVE = "exhaustive"  # every stage of the space (e.g. to build a shared cost table)


@dataclass
class OptimizeReport:
    """What an optimization did and where its time went."""
    model: str
    opt_type: str
    batch_size: int
    device: str
    estimated: bool
    num_workers: int
    dtype: str = "float32"
    states: int = 0
    transitions: int = 0
    unique_stages: int = 0
    cache_hits: int = 0
    stale: int = 0                   # stages whose table rows came from other software: measured again
    measured: int = 0                # stages this run measured (estimated, for an analytic source)
    from_other_runs: int = 0         # stages a concurrent run into the same table measured meanwhile
    errors: int = 0
    per_worker: Dict[str, int] = field(default_factory=dict)
    retries: int = 0
    predicted_latency_ms: float = 0.0    # the DP's schedule
    # [ray start,] enumerate, profile, solve, construct, final check
    seconds: Dict[str, float] = field(default_factory=dict)
    table: str = ""
    in_process: bool = False             # profiled in this process (no Ray)
    software: str = ""                   # the cost source's software fingerprint (``DeviceInfo.software``)
    device_kind: str = ""                # "gpu", "cpu" or "analytic": where the runtime runs it by default
    cpu_threads: Optional[int] = None    # BLAS threads of CPU measurements; the reference runtime uses them
    stage_predicted_ms: List[Optional[float]] = field(default_factory=list)  # the returned schedule, run order
    final_check: List[CheckedSchedule] = field(default_factory=list)
    final_check_note: str = ""           # why the final check did not run, or what went wrong
    returned: str = DP_SCHEDULE          # the schedule the returned graph carries
    profiling: str = Profiling.EXHAUSTIVE.value
    known_stages: int = 0            # stages with a cost at the end: cache hits + measured now
    rounds: int = 0                  # lazy: measurement rounds after the one-op stages
    bound_violations: int = 0        # lazy: stages measured below their lower bound
    tolerance: float = 0.0           # lazy: the schedule is proved within this fraction of the optimum
    fill: float = 0.0                # lazy: unknown stages nearest the optimum per part and round, per 1,000 transitions

    @property
    def measured_fraction(self) -> float:
        """The share of the unique stages that got a cost (all of them when profiling exhaustively)."""
        return self.known_stages / self.unique_stages if self.unique_stages else 1.0

    def to_json(self) -> dict:
        """A JSON-ready dict (``from_json`` reads it back)."""
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(obj: Mapping[str, Any]) -> "OptimizeReport":
        """The report ``to_json`` wrote; keys it does not know are ignored.

        Raises:
            ValueError: not a report (a required field is missing or a candidate is malformed).
        """
        names = {f.name for f in dataclasses.fields(OptimizeReport)}
        if not isinstance(obj, Mapping):
            raise ValueError(f"an optimization report is a JSON object, got {type(obj).__name__}")
        kwargs = {k: v for k, v in obj.items() if k in names}
        try:
            kwargs["final_check"] = [CheckedSchedule(**c) for c in kwargs.get("final_check", [])]
            return OptimizeReport(**kwargs)
        except TypeError as exc:
            raise ValueError(f"not an optimization report: {exc}") from None

    def format(self) -> str:
        kind = "estimated (analytic model)" if self.estimated else "measured"
        now = "estimated now" if self.estimated else "measured now"
        workers = "in-process" if self.in_process else f"{self.num_workers} Ray workers"
        shared = f"   from other runs: {self.from_other_runs:,}" if self.from_other_runs else ""
        lines = [
            f"ios_ray optimize: {self.model}  opt_type={self.opt_type}  batch={self.batch_size}  workers={workers}",
            f"  cost source     : {self.device} ({kind}, {self.dtype})",
            f"  states          : {self.states:,}   transitions: {self.transitions:,}",
            f"  unique stages   : {self.unique_stages:,}   cache hits: {self.cache_hits:,}   "
            f"stale rows: {self.stale:,}   {now}: {self.measured:,}{shared}   errors: {self.errors}",
        ]
        if self.profiling == Profiling.LAZY.value:
            lines.append(f"  profiling       : lazy: {self.known_stages:,} of {self.unique_stages:,} stages have a cost "
                         f"({100 * self.measured_fraction:.1f}%), {self.rounds} rounds, "
                         f"{self.bound_violations} below their bound"
                         + (f", rounds filled with {self.fill:g} stages per 1,000 transitions" if self.fill else "")
                         + (f", within {100 * self.tolerance:g}% of the optimum" if self.tolerance else ""))
        else:
            lines.append(f"  profiling       : {self.profiling}")
        if self.per_worker:
            lines.append("  per worker      : " + ", ".join(f"{w}={n}" for w, n in sorted(self.per_worker.items())))
        if self.table:
            lines.append(f"  cost table      : {self.table}")
        lines.append(f"  predicted       : {self.predicted_latency_ms:.3f} ms ({kind})")
        lines.extend(self._format_check())
        total = sum(self.seconds.values())
        parts = "  ".join(f"{k} {v:.2f}s" for k, v in self.seconds.items())
        lines.append(f"  time            : {parts}  (total {total:.2f}s)")
        return "\n".join(lines)

    def _format_check(self) -> List[str]:
        if not self.final_check:
            return [f"  final check     : {self.final_check_note or 'not run'}"]
        lines = ["  final check     : whole graph measured on the profiling device (median ms)"]
        for c in self.final_check:
            predicted = "-" if c.predicted_ms is None else f"{c.predicted_ms:.3f}"
            measured = f"error: {c.error}" if c.error else f"{c.measured_ms:.3f} (spread {c.spread_ms:.3f})"
            mark = "  <- returned" if c.schedule == self.returned else ""
            lines.append(f"    {c.schedule:<12s} predicted {predicted:>10s}   measured {measured}{mark}")
        if self.final_check_note:
            lines.append(f"    note: {self.final_check_note}")
        return lines


@dataclass(frozen=True)
class OptimizeOptions:
    """Everything ``optimize`` was asked, checked once at the entry and passed down.

    Args:
        space: the state space's strategies and pruning.
        source: the cost-source recipe (its ``dtype`` is the math mode rows are filed under).
        profile: batch size, timing settings and progress bar.
        compute_weight: lay out the merged convolutions' weights.
        num_workers: Ray actors to profile (and enumerate) on; None or 0: everything in this process.
        cost_table: a ``CostTable``, a path/URI, None (the default table, for sources cached by default)
            or False (none).
        address: the Ray cluster to join.
        wait_for_autoscaler: wait for the cluster to grow instead of failing at once.
        verbose: print the report.
        final_check: time the DP's, the Sequential and the Greedy schedule as whole graphs on the
            profiling device and return the fastest (measured sources only).
        profiling: ``Profiling.LAZY`` or ``EXHAUSTIVE`` (or its string value).
        lazy: the lazy DP's bound and paths per round.
    """
    space: SpaceOptions
    source: SourceRecipe
    profile: ProfileOptions
    compute_weight: bool = False
    num_workers: Optional[int] = None
    cost_table: Any = None
    address: Optional[str] = None
    wait_for_autoscaler: bool = False
    verbose: bool = False
    final_check: bool = True
    profiling: Profiling = Profiling.LAZY
    lazy: LazyOptions = LazyOptions()

    def __post_init__(self):
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(f"num_workers must be 0 (in this process) or more, got {self.num_workers}")
        if self.num_workers == 0:
            object.__setattr__(self, "num_workers", None)
        if not isinstance(self.profiling, Profiling):
            try:
                object.__setattr__(self, "profiling", Profiling(str(self.profiling).strip().lower()))
            except ValueError:
                raise ValueError(f"profiling must be one of {[p.value for p in Profiling]}, got "
                                 f"{self.profiling!r}") from None


def optimize(graph: Graph, batch_size: int = 1, opt_type: str = "dp_parallel_merge", compute_weight: bool = False,
             cost: CostArg = None, max_group_size: int = 3, max_num_groups: int = 8, max_part_size: int = 50,
             warmup: int = 2, number: int = 6, repeat: int = 6, verbose: bool = False,
             num_workers: Optional[int] = None, cost_table=None, address: Optional[str] = None,
             progress: Optional[bool] = None, cost_model=None, wait_for_autoscaler: bool = False,
             final_check: bool = True, profiling: str = "lazy", lazy: Optional[LazyOptions] = None) -> Graph:
    """Find the IOS schedule of ``graph`` and return a new Graph carrying it.

    Args:
        graph: the graph to optimize (not modified).
        batch_size: the batch size stages are measured at.
        opt_type: ``dp_parallel`` (concurrent groups), ``dp_merge`` (merged convs) or ``dp_parallel_merge``.
        compute_weight: lay out weights of merged convolutions (needs ``graph.init_weights`` first).
        cost: where stage latencies come from: a registry name (``"cpu"``, ``"gpu"``, ``"gpu-tf32"``,
            ``"analytic:H200"``, ``"analytic-tf32:A100"``; see ``costs.factory.KINDS``), a ``SourceRecipe``,
            or any ``CostSource`` object with its ``dtype`` (picklable when ``num_workers`` is set).
            Default: the GPU if present, else the CPU.
        max_group_size, max_num_groups, max_part_size: the original's pruning (r, s) and part size.
        warmup, number, repeat: how each stage is timed (see ``MeasureSettings``).
        verbose: print the report.
        num_workers: profile on this many Ray actors (enumeration is sharded across them too);
            ``None`` or ``0`` runs everything in this process (``default_num_workers`` is the CLI's choice).
        cost_table: a ``CostTable``, a path/URI, ``None`` for the default table (for the cpu and gpu
            sources; analytic estimates and custom objects are stored only in a table named here), or
            ``False`` for none.
        address: a Ray cluster address (``auto`` or ``ray://...``); default starts a local instance.
        progress: show a progress bar (default: when ``verbose`` or on a TTY).
        cost_model: the original's name for ``cost``.
        wait_for_autoscaler: when the cluster lacks the workers' CPUs/GPUs, wait for an autoscaler to
            add them instead of failing at once.
        profiling: ``"lazy"`` measures the one-op stages, bounds every other stage from them, and then
            measures only the stages on the DP's optimal paths until the optimum uses measured stages
            alone (the same optimum as ``"exhaustive"`` while the bounds hold: ``dp.lazy``);
            ``"exhaustive"`` measures every stage (e.g. to fill a shared cost table).
        lazy: the lazy DP's options (``dp.lazy.LazyOptions``: its bound, paths per round, stream factor);
            default ``LazyOptions()``.
        final_check: after the DP, measure the whole-graph latency of its schedule and of the Sequential
            and Greedy schedules on the profiling device, timed like the stages (``warmup``, ``number``,
            ``repeat``; on the CPU with the same BLAS threads; with ``num_workers``, on one Ray worker),
            and return the fastest measured: stage costs add up to a prediction, and this checks it. The
            report lists each candidate (predicted and measured ms) and which was returned. Skipped for
            analytic costs and for cost sources without ``measure_graph``; ``False`` skips it.

    Returns:
        A new Graph with the optimized schedule (the DP's, or the Sequential or Greedy one when the final
        check measured it faster); ``graph.optimization_report`` holds an OptimizeReport.

    Raises:
        ValueError: bad arguments, a graph without weights when ``compute_weight`` is set, or no
            finite-cost schedule. ``InsufficientResourcesError`` when the cluster can't host the workers.
    """
    options = OptimizeOptions(
        space=SpaceOptions(opt_type=opt_type, max_group_size=max_group_size, max_num_groups=max_num_groups,
                           max_part_size=max_part_size),
        source=resolve_cost(cost if cost is not None else cost_model),
        profile=ProfileOptions(batch_size=batch_size, settings=MeasureSettings(warmup, number, repeat),
                               progress=progress if progress is not None else (verbose or sys.stderr.isatty())),
        compute_weight=compute_weight, num_workers=num_workers, cost_table=cost_table, address=address,
        wait_for_autoscaler=wait_for_autoscaler, verbose=verbose, final_check=final_check, profiling=profiling,
        lazy=lazy if lazy is not None else LazyOptions())
    return optimize_with(graph, options)


def optimize_with(graph: Graph, options: OptimizeOptions) -> Graph:
    """``optimize`` with its arguments already checked (see ``optimize``)."""
    if options.compute_weight and not graph.has_weights():
        raise ValueError("compute_weight=True needs weights: call graph.init_weights() (or load_weights) first")
    seconds: Dict[str, float] = {}
    if options.num_workers is not None:
        t0 = time.perf_counter()
        _start_ray(options)
        seconds["ray start"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    space = _enumerate(graph, options)
    seconds["enumerate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    table = _open_table(options)
    if hasattr(options.source, "with_table"):   # e.g. the GPU's engine book goes beside the table
        options = dataclasses.replace(options, source=options.source.with_table(table))
    if hasattr(options.source, "for_graph"):    # e.g. the GPU times stages cold when the graph outgrows its L2
        options = dataclasses.replace(options, source=options.source.for_graph(graph, options.profile.batch_size))
    # in-process, one live source serves the profiling and the final check (a GPU context is built once)
    source = options.source.build() if options.num_workers is None else None
    opt_type = options.space.opt_type.value
    t1 = time.perf_counter()
    baselines = _baselines(graph, options.compute_weight, opt_type) if options.final_check else {}
    construct_s = time.perf_counter() - t1
    # lazily, the baselines' stages are measured too, so that the final check can compare predictions
    also = [k for _, stages in baselines.values() for k in _stage_keys(graph, stages)]
    solution, measurements, profiled, lazy = _profile_and_solve(space, table, options, source, also)
    elapsed = time.perf_counter() - t0 - construct_s
    seconds["profile"] = sum(profiled.seconds.values())
    seconds["solve"] = max(0.0, elapsed - seconds["profile"])

    t0 = time.perf_counter()
    dp_stages = [list(b) for b in solution.block_stages]
    candidates = {DP_SCHEDULE: (construct(graph, dp_stages, options.compute_weight, opt_type), dp_stages)}
    if options.final_check and profiled.device.kind != "analytic":
        # the DP's next-best schedule of measured stages: where predictions miss the whole graph by more than
        # the two differ, only timing both says which is faster
        second = runner_up(space, {k: m.cost for k, m in measurements.items()})
        if second is not None and second.block_stages != solution.block_stages:
            stages = [list(b) for b in second.block_stages]
            candidates[NEXT_BEST] = (construct(graph, stages, options.compute_weight, opt_type), stages)
    candidates.update(baselines)
    seconds["construct"] = time.perf_counter() - t0 + construct_s

    t0 = time.perf_counter()
    checked, note = _final_check(candidates, graph, measurements, profiled, options, source)
    returned = _fastest(checked)
    if checked:
        seconds["final check"] = time.perf_counter() - t0
    new_graph, block_stages = candidates[returned]

    counts = space.counts
    report = OptimizeReport(
        model=graph.name, opt_type=opt_type, batch_size=options.profile.batch_size, device=profiled.device.name,
        estimated=profiled.device.kind == "analytic", num_workers=options.num_workers or 1, dtype=profiled.dtype,
        states=counts.states, transitions=counts.transitions, unique_stages=counts.unique_stages,
        cache_hits=profiled.cache_hits, stale=profiled.stale, measured=profiled.measured,
        from_other_runs=profiled.from_other_runs, errors=profiled.errors,
        per_worker=dict(profiled.per_worker), retries=profiled.retries,
        predicted_latency_ms=solution.total_latency, seconds=seconds,
        table=str(table.location) if table is not None else "", software=profiled.device.software,
        device_kind=profiled.device.kind,
        cpu_threads=options.source.cpu_threads, stage_predicted_ms=_stage_costs(graph, block_stages, measurements),
        final_check=checked, final_check_note=note, returned=returned,
        in_process=options.num_workers is None, profiling=options.profiling.value,
        known_stages=len(measurements), rounds=lazy.rounds if lazy else 0,
        bound_violations=lazy.violations if lazy else 0,
        tolerance=options.lazy.tolerance if lazy else 0.0, fill=lazy.fill if lazy else 0)
    new_graph.optimization_report = report
    if options.verbose:
        print(report.format())
    return new_graph


def _start_ray(options: OptimizeOptions) -> None:
    """Connect to Ray and check the cluster can host the profiling workers, so that a shortfall fails
    before any work is done."""
    from .distributed.cluster import check_local_resources, check_resources, connect, starts_local_instance
    need = options.source.resources()
    if starts_local_instance(options.address):
        check_local_resources(options.num_workers, need)  # before Ray starts: a local instance cannot grow
    connect(options.address)
    check_resources(options.num_workers, need, wait_for_autoscaler=options.wait_for_autoscaler)


def _enumerate(graph: Graph, options: OptimizeOptions):
    """The graph's state space: here, or sharded over actors (Ray already started by ``_start_ray``)."""
    from .space.enumerate import enumerate_graph
    if options.num_workers is None:
        return enumerate_graph(graph, options.space)
    import ray

    from .distributed.enumerate import enumerate_graph_distributed
    cpus = int(ray.cluster_resources().get("CPU", 1))
    return enumerate_graph_distributed(graph, options.space, num_workers=max(1, min(options.num_workers, cpus)))


def default_num_workers(cost: CostArg = None) -> int:
    """The CLI's worker count for ``cost``: ``workers_per_gpu`` Ray actors per local GPU for a GPU source;
    0 (in this process) for analytic estimates, which cost microseconds a stage, far less than starting
    Ray and shipping the stages to actors; else 2 CPU actors (1 on a one-core machine).

    Raises:
        ValueError: ``cost`` is not a known cost source.
    """
    from .costs.factory import AnalyticRecipe
    recipe = resolve_cost(cost)
    if isinstance(recipe, AnalyticRecipe):
        return 0
    from .distributed.cluster import local_resources
    have = local_resources()
    if recipe.resources().num_gpus > 0:   # none here: the resource check says so in one line
        return max(1, int(have["GPU"])) * getattr(recipe, "workers_per_gpu", 1)
    return max(1, min(2, int(have["CPU"])))


def _profile_and_solve(space, table, options: OptimizeOptions, source: Optional[CostSource],
                       also: Sequence[str] = ()
                       ) -> Tuple[Solution, Mapping[str, Measurement], ProfileReport, Optional[LazyReport]]:
    """The optimal schedule, the measurements it rests on and what profiling it took: every stage measured,
    then solved (exhaustive), or the lazy DP's rounds and then the stages of ``also`` that the space holds
    and the rounds left out (for a measuring source: the final check's other candidates); either way
    through ``profile_stages`` on one pool: of one (the live ``source``) here, or of Ray actors that each
    build the recipe ``options.source`` (``source`` is None then)."""
    from .dp import solve
    from .dp.lazy import lazy_solve
    from .profile.rounds import ProfileRounds
    pool = _open_pool(space, options, source)
    try:
        if options.profiling is Profiling.EXHAUSTIVE:
            measurements, profiled = profile_stages(space.specs, pool, table, options.profile)
            return solve(space, {k: m.cost for k, m in measurements.items()}), measurements, profiled, None
        rounds = ProfileRounds(space.specs, pool, table, options.profile)
        known = rounds.lookup()
        try:
            result = lazy_solve(space, rounds, known, _lazy_options(options.lazy, rounds.device()))
            more = [k for k in dict.fromkeys(also) if k in space.specs and k not in rounds.measurements]
            if more and rounds.device().kind != "analytic":
                rounds.measure(more)
        finally:
            profiled = rounds.close()
        return result.solution, rounds.measurements, profiled, result.report
    finally:
        pool.shutdown()


def _lazy_options(lazy: LazyOptions, device: DeviceInfo) -> LazyOptions:
    """``lazy`` as given, but with the default bound made serial where the device runs a stage's groups one
    after another (the CPU reference runtime): a much tighter bound for wide stages there; and ``fill``, when
    not given, ``GPU_FILL`` on a GPU (stages of a few microseconds, rounds of milliseconds) and 0 elsewhere
    (a CPU stage costs more than a round)."""
    if device.kind == "cpu" and lazy.bound == OpSumBound():
        lazy = dataclasses.replace(lazy, bound=OpSumBound(serial_groups=True))
    if lazy.fill is None:
        lazy = dataclasses.replace(lazy, fill=GPU_FILL if device.kind == "gpu" else 0)
    return lazy


def _open_pool(space, options: OptimizeOptions, source: Optional[CostSource]):
    """A pool of one in this process (over the live ``source``), or of Ray actors that each build the recipe
    ``options.source`` (started when first needed; the space's specs go to each actor once)."""
    if options.num_workers is None:
        return LocalPool(source)
    from .distributed.driver import RayPoolOptions, open_ray_pool
    return open_ray_pool(options.source, RayPoolOptions(options.num_workers, address=options.address), space)


Candidates = Dict[str, Tuple[Graph, List[List[Stage]]]]   # name -> (graph, its stages on the original graph)


def _baselines(graph: Graph, compute_weight: bool, opt_type: str) -> Candidates:
    """The Sequential and Greedy schedules (the final check's candidates beside the DP's, which do not depend
    on it), each as a new graph (the original untouched) with its stage list over the original graph's node
    names (what its stage costs are keyed by)."""
    from .runtime.reference import sequential_stages
    sequential = [sequential_stages(b) for b in graph.blocks]
    greedy = construct(graph, sequential, compute_weight, opt_type)
    greedy.greedy_schedule()  # names are kept by construct, so these stages read on the original too
    return {"Sequential": (construct(graph, sequential, compute_weight, opt_type), sequential),
            "Greedy": (greedy, [list(b.stages) for b in greedy.blocks])}


def stage_specs(graph: Graph, block_stages: Sequence[Sequence[Stage]]) -> List[StageSpec]:
    """Each stage's spec (what the profiler measures, and its key) in run order."""
    out: List[StageSpec] = []
    for block, stages in zip(graph.blocks, block_stages):
        by_name = {n.name: n for n in block.nodes}
        out.extend(stage_spec([[by_name[n] for n in g] for g in stage.groups], stage.strategy) for stage in stages)
    return out


def _stage_keys(graph: Graph, block_stages: Sequence[Sequence[Stage]]) -> List[str]:
    """Each stage's key in run order."""
    return [spec.key for spec in stage_specs(graph, block_stages)]


def _stage_costs(graph: Graph, block_stages: Sequence[Sequence[Stage]],
                 measurements: Mapping[str, Measurement]) -> List[Optional[float]]:
    """Each stage's measured cost in run order (None where the stage was never measured), by its key."""
    got = [measurements.get(k) for k in _stage_keys(graph, block_stages)]
    return [None if m is None else m.cost for m in got]


GraphTimer = Callable[[Graph, int, MeasureSettings], Optional[List[float]]]


@contextlib.contextmanager
def _graph_timer(options: OptimizeOptions, source: Optional[CostSource]) -> Iterator[Optional[GraphTimer]]:
    """What times a whole graph: the live source's ``measure_graph`` in-process (None if it has none), or
    one Ray worker built from the recipe (answering None when its source has none), stopped on exit."""
    if options.num_workers is None:
        yield getattr(source, "measure_graph", None)
        return
    import ray

    from .distributed.cluster import connect
    from .distributed.profiler_pool import ProfileWorker
    connect(options.address)
    need = options.source.resources()
    actor = ray.remote(ProfileWorker).options(num_cpus=need.num_cpus, num_gpus=need.num_gpus, max_restarts=0,
                                              max_task_retries=0).remote(options.source, "final-check")
    try:
        yield lambda g, batch, settings: ray.get(actor.measure_graph.remote(g, batch, settings))
    finally:
        ray.kill(actor, no_restart=True)


def _final_check(candidates: Candidates, graph: Graph, measurements: Mapping[str, Measurement],
                 profiled: ProfileReport, options: OptimizeOptions,
                 source: Optional[CostSource]) -> Tuple[List[CheckedSchedule], str]:
    """Each candidate timed as a whole graph on the profiling device, or none and the reason."""
    if not options.final_check:
        return [], "off (final_check=False)"
    if profiled.device.kind == "analytic":
        return [], "skipped: analytic costs are estimates, there is no device to measure on"
    batch, settings = options.profile.batch_size, options.profile.settings
    cannot = f"skipped: the cost source {options.source} cannot time a whole graph (it has no measure_graph)"
    checked: List[CheckedSchedule] = []
    with _graph_timer(options, source) as timer:
        if timer is None:
            return [], cannot
        for name, (candidate, stages) in candidates.items():
            predicted = _stage_costs(graph, stages, measurements)
            total = None if any(p is None for p in predicted) else float(sum(predicted))
            try:
                # sent without weights: the source times a copy with random ones
                samples = timer(Graph.from_config(candidate.export_config()), batch, settings)
            except Exception as exc:  # noqa: BLE001 -- a schedule that cannot run is not returned
                checked.append(CheckedSchedule(name, total, math.nan, error=f"{type(exc).__name__}: {exc}"[:500]))
                continue
            if samples is None:  # a Ray worker whose source has no measure_graph
                return [], cannot
            checked.append(CheckedSchedule(name, total, float(np.median(samples)),
                                           float(max(samples) - min(samples))))
    if all(c.error for c in checked):
        return checked, "no candidate could be measured: the DP's schedule is returned unchecked"
    return checked, ""


def _fastest(checked: Sequence[CheckedSchedule]) -> str:
    """The candidate with the least measured latency (the DP's on a tie, or when none was measured)."""
    timed = [c for c in checked if not c.error]
    if not timed:
        return DP_SCHEDULE
    best = min(timed, key=lambda c: c.measured_ms)
    dp = next((c for c in timed if c.schedule == DP_SCHEDULE), None)
    return DP_SCHEDULE if dp is not None and dp.measured_ms <= best.measured_ms else best.schedule


def _open_table(options: OptimizeOptions):
    """The cost table to use, or None: ``False`` is none; ``None`` is the default table for sources whose
    rows are cached by default (analytic estimates and custom objects are not)."""
    from .costs.table import CostTable
    cost_table = options.cost_table
    if cost_table is False or (cost_table is None and not options.source.cached_by_default):
        return None
    if isinstance(cost_table, CostTable):
        return cost_table
    return CostTable(cost_table)


def construct(graph: Graph, block_stages: List[List[Stage]], compute_weight: bool = False,
              opt_type: str = "optimized") -> Graph:
    """A new Graph running ``block_stages``; each MERGE stage becomes one merged conv node.

    Consumers of a merged conv read their slice of the merged output, so the runtime never needs to
    know about merges. Other nodes are new nodes of the same class sharing the original's weight arrays.

    Raises:
        ValueError: the schedule names nodes outside their block, does not cover a block, merges
            something other than mergeable convs or merges a block's exit node; a block count mismatch.
    """
    if len(block_stages) != len(graph.blocks):
        raise ValueError(f"block_stages has {len(block_stages)} block schedules, graph {graph.name!r} has "
                         f"{len(graph.blocks)} blocks")
    name = graph.name if graph.name.endswith(opt_type) else f"{graph.name}_{opt_type}"
    new_input = Placeholder(graph.input.name, graph.input.output_shape, hint_name=graph.input.hint_name)
    # old node (by id) -> (its new node, channel offset of its output within the new node's output)
    remap: Dict[int, Tuple[Node, int]] = {id(graph.input): (new_input, 0)}
    blocks = [_construct_block(bi, block, stages, remap, compute_weight)
              for bi, (block, stages) in enumerate(zip(graph.blocks, block_stages))]
    new_graph = Graph(name, new_input, blocks)
    check_schedule(new_graph)
    return new_graph


def _construct_block(bi: int, block: Block, stages: List[Stage], remap: Dict[int, Tuple[Node, int]],
                     compute_weight: bool) -> Block:
    """Block ``bi`` rebuilt with its stages, merged convs replaced by one node each; fills ``remap``."""
    by_name = {n.name: n for n in block.nodes}
    merges: Dict[str, List[Conv]] = {}           # merged name -> member convs, in output order
    member_of: Dict[str, Tuple[str, int]] = {}   # member name -> (merged name, channel offset)
    order: List[str] = []                        # the new block's node names, in schedule order
    new_stages: List[Stage] = []
    for stage in stages:
        names = stage.node_names()
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ValueError(f"block {bi}: the schedule names {unknown[:5]}, which are not in this block")
        if stage.strategy is Strategy.MERGE and len(names) > 1:
            convs = [by_name[n] for n in names]
            if any(not isinstance(c, Conv) for c in convs):
                raise ValueError(f"block {bi}: merge stage holds non-conv nodes {names}")
            mname = "+".join(names)
            offsets = [sum(c.out_channels for c in convs[:i]) for i in range(len(convs))]
            member_of.update((c.name, (mname, off)) for c, off in zip(convs, offsets))
            merges[mname] = convs
            order.append(mname)
            new_stages.append(Stage(((mname,),), Strategy.MERGE))
        else:
            order.extend(names)
            new_stages.append(Stage(stage.groups, Strategy.PARALLEL))
    if sorted(n for s in stages for n in s.node_names()) != sorted(by_name):
        raise ValueError(f"block {bi}: the schedule does not cover the block's nodes")
    exit_name = block.exit_node.name
    if exit_name in member_of:
        raise ValueError(f"block {bi}: the exit node {exit_name!r} cannot be merged")

    built: Dict[str, Node] = {}
    for old in topo_order(block):  # inputs are rebuilt before their consumers
        mname, offset = member_of.get(old.name, (None, 0))
        if mname is None:
            built[old.name] = _copy_node(old, _remapped(old.inputs, remap))
            remap[id(old)] = (built[old.name], 0)
            continue
        if mname not in built:
            built[mname] = _merged_conv(mname, merges[mname], _remapped(old.inputs, remap), compute_weight)
        remap[id(old)] = (built[mname], offset)
    inner = [built[n] for n in order if n != exit_name]
    return Block(remap[id(block.enter_node)][0], built[exit_name], inner, stages=new_stages)


def _remapped(terms: Terms, remap: Dict[int, Tuple[Node, int]]) -> Terms:
    """``terms`` reading the new nodes: a merged member's value becomes its slice of the merged output."""
    out = []
    for term in terms:
        values = []
        for v in term:
            node, offset = remap[id(v.node)]
            values.append(Value(node, v.begin + offset, v.end + offset))
        out.append(values)
    return out


def _copy_node(old: Node, inputs: Terms) -> Node:
    """A node of ``old``'s class and attributes reading ``inputs``, sharing its weight arrays."""
    new = type(old)(old.name, inputs, **old.attrs(), hint_name=old.hint_name)
    new.params = dict(old.params)
    return new


def _merged_conv(name: str, convs: List[Conv], inputs: Terms, compute_weight: bool) -> Conv:
    """The conv computing ``convs`` at once (their outputs concatenated), reading ``inputs``."""
    p = merged_conv_params(convs)
    node = Conv(name, inputs, p["out_channels"], p["kernel"], p["stride"], p["padding"], groups=1, act=p["act"],
                hint_name=" ".join(c.hint_name for c in convs))
    if compute_weight:
        from .runtime.weights import merged_conv_weights
        node.params["weight"], node.params["bias"] = merged_conv_weights(convs, p)
    return node

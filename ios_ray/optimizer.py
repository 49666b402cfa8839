"""``optimize``: the IOS entry point, local or distributed on Ray.

Data flow::

    Graph --enumerate (space/, local or on actors)--> GraphSpace{states, transitions, unique StageSpecs}
          --costs (cost table hits + cost source / Ray profiler pool)--> {key: Measurement}
          --solve (dp/, pure)--> Solution{stages per block}
          --construct (merges applied, weights laid out)--> new Graph with its schedule

The DP never touches hardware: it reads a ``{key: latency}`` mapping. Where the latencies come from is
the ``cost`` argument (a ``CostConfig``, its string form, or any ``CostSource`` object).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Union

from .costs.factory import CostConfig, CostKind, gpu_available, make_cost_source
from .costs.measurement import CostSource, DeviceInfo, ErrorKind, MeasureSettings, Measurement
from .graph.ir import Conv, Graph
from .graph.schedule import Stage, Strategy, check_schedule
from .graph.serialize import graph_from_dict, graph_to_dict
from .graph.merge import merged_conv_params

CostArg = Union[None, str, CostConfig, CostSource]


@dataclass
class OptimizeReport:
    """What an optimization did and where its time went."""
    model: str
    opt_type: str
    batch_size: int
    device: str
    estimated: bool
    num_workers: int
    states: int = 0
    transitions: int = 0
    unique_stages: int = 0
    cache_hits: int = 0
    measured: int = 0
    errors: int = 0
    per_worker: Dict[str, int] = field(default_factory=dict)
    retries: int = 0
    predicted_latency_ms: float = 0.0
    seconds: Dict[str, float] = field(default_factory=dict)  # enumerate, profile, solve, construct
    table: str = ""

    def format(self) -> str:
        kind = "estimated (analytic model)" if self.estimated else "measured"
        lines = [
            f"ios_ray optimize: {self.model}  opt_type={self.opt_type}  batch={self.batch_size}  workers={self.num_workers}",
            f"  cost source     : {self.device} ({kind})",
            f"  states          : {self.states:,}   transitions: {self.transitions:,}",
            f"  unique stages   : {self.unique_stages:,}   cache hits: {self.cache_hits:,}   "
            f"measured now: {self.measured:,}   errors: {self.errors}",
        ]
        if self.per_worker:
            lines.append("  per worker      : " + ", ".join(f"{w}={n}" for w, n in sorted(self.per_worker.items())))
        if self.table:
            lines.append(f"  cost table      : {self.table}")
        lines.append(f"  predicted       : {self.predicted_latency_ms:.3f} ms ({kind})")
        total = sum(self.seconds.values())
        parts = "  ".join(f"{k} {v:.2f}s" for k, v in self.seconds.items())
        lines.append(f"  time            : {parts}  (total {total:.2f}s)")
        return "\n".join(lines)


def resolve_cost(cost: CostArg) -> Union[CostConfig, CostSource]:
    """``None`` means: the GPU when there is one, else the CPU reference runtime."""
    if cost is None:
        return CostConfig(CostKind.GPU) if gpu_available() else CostConfig(CostKind.CPU)
    if isinstance(cost, str):
        return CostConfig.parse(cost)
    if isinstance(cost, CostConfig):
        return cost
    if isinstance(cost, CostSource):
        return cost
    raise ValueError(f"cost must be None, a string (cpu, gpu, analytic:H200), a CostConfig or a CostSource; "
                     f"got {type(cost).__name__}")


def optimize(graph: Graph, batch_size: int = 1, opt_type: str = "dp_parallel_merge", compute_weight: bool = False,
             cost: CostArg = None, max_group_size: int = 3, max_num_groups: int = 8, max_part_size: int = 50,
             warmup: int = 2, number: int = 6, repeat: int = 6, verbose: bool = False,
             num_workers: Optional[int] = None, cost_table=None, address: Optional[str] = None,
             progress: Optional[bool] = None, cost_model=None, wait_for_autoscaler: bool = False) -> Graph:
    """Find the IOS schedule of ``graph`` and return a new Graph carrying it.

    Args:
        graph: the graph to optimize (not modified).
        batch_size: the batch size stages are measured at.
        opt_type: ``dp_parallel`` (concurrent groups), ``dp_merge`` (merged convs) or ``dp_parallel_merge``.
        compute_weight: lay out weights of merged convolutions (needs ``graph.init_weights`` first).
        cost: where stage latencies come from: ``"cpu"``, ``"gpu"``, ``"gpu-tf32"``, ``"analytic:H200"``,
            a ``CostConfig`` or any ``CostSource`` object. Default: the GPU if present, else the CPU.
        max_group_size, max_num_groups, max_part_size: the original's pruning (r, s) and part size.
        warmup, number, repeat: how each stage is timed (see ``MeasureSettings``).
        verbose: print the report.
        num_workers: profile on this many Ray actors (enumeration is sharded across them too);
            ``None`` runs everything in this process.
        cost_table: a ``CostTable``, a path/URI, ``None`` for the default table (measured costs only),
            or ``False`` for none.
        address: a Ray cluster address (``auto`` or ``ray://...``); default starts a local instance.
        progress: show a progress bar (default: when ``verbose`` or on a TTY).
        cost_model: the original's name for ``cost``.
        wait_for_autoscaler: when the cluster lacks the workers' CPUs/GPUs, wait for an autoscaler to
            add them instead of failing at once.

    Returns:
        A new Graph with the optimized schedule; ``graph.optimization_report`` holds an OptimizeReport.

    Raises:
        ValueError: bad arguments, a graph without weights when ``compute_weight`` is set, or no
            finite-cost schedule. ``InsufficientResourcesError`` when the cluster can't host the workers.
    """
    from .dp import solve
    from .space.enumerate import SpaceOptions, enumerate_graph

    if cost is None and cost_model is not None:
        cost = cost_model
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if num_workers is not None and num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {num_workers}")
    if compute_weight and not graph.has_weights():
        raise ValueError("compute_weight=True needs weights: call graph.init_weights() (or load_weights) first")
    opts = SpaceOptions(opt_type=opt_type, max_group_size=max_group_size, max_num_groups=max_num_groups,
                        max_part_size=max_part_size)
    settings = MeasureSettings(warmup=warmup, number=number, repeat=repeat)
    resolved = resolve_cost(cost)
    if num_workers is not None and not isinstance(resolved, CostConfig):  # before Ray starts or work is done
        raise ValueError("with num_workers, cost must be a CostConfig or its string form (actors build "
                         "their own cost source), not a cost-source object")
    show = progress if progress is not None else (verbose or sys.stderr.isatty())
    seconds: Dict[str, float] = {}

    t0 = time.perf_counter()
    if num_workers is None:
        space = enumerate_graph(graph, opts)
    else:
        import ray

        from .distributed.cluster import check_resources, connect
        from .distributed.enumerate import enumerate_graph_distributed
        connect(address)
        if isinstance(resolved, CostConfig):  # fail (or wait) before any work, not after enumeration
            check_resources(num_workers, resolved, wait_for_autoscaler=wait_for_autoscaler)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        space = enumerate_graph_distributed(graph, opts, num_workers=max(1, min(num_workers, cpus)))
    seconds["enumerate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    table = _open_table(cost_table, resolved)
    if num_workers is None:
        measurements, device, hits, per_worker, retries = _measure_local(
            space.specs, resolved, batch_size, settings, table, show)
    else:
        from .distributed.driver import profile_graph_space
        measurements, drep = profile_graph_space(space, num_workers=num_workers, cost_cfg=resolved,
                                                 batch_size=batch_size, settings=settings, table=table,
                                                 progress=show, address=address)
        device, hits, per_worker, retries = drep.device, drep.cache_hits, dict(drep.per_worker), drep.retries
    seconds["profile"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    costs = {k: m.cost for k, m in measurements.items()}
    solution = solve(space, costs)
    seconds["solve"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    new_graph = construct(graph, [list(b) for b in solution.block_stages], compute_weight, opts.opt_type.value)
    seconds["construct"] = time.perf_counter() - t0

    counts = space.counts
    report = OptimizeReport(
        model=graph.name, opt_type=opts.opt_type.value, batch_size=batch_size, device=device.name,
        estimated=device.kind == "analytic", num_workers=num_workers or 1, states=counts.states,
        transitions=counts.transitions, unique_stages=counts.unique_stages, cache_hits=hits,
        measured=len(space.specs) - hits, errors=sum(1 for m in measurements.values() if m.error.value),
        per_worker=per_worker, retries=retries, predicted_latency_ms=solution.total_latency, seconds=seconds,
        table=str(table.location) if table is not None else "")
    new_graph.optimization_report = report
    if verbose:
        print(report.format())
    return new_graph


def _open_table(cost_table, resolved):
    """The cost table to use, or None (analytic estimates are never cached: they are cheap)."""
    if cost_table is False:
        return None
    kind = resolved.kind if isinstance(resolved, CostConfig) else None
    if cost_table is None and kind is CostKind.ANALYTIC:
        return None
    from .costs.table import CostTable
    if isinstance(cost_table, CostTable):
        return cost_table
    if cost_table is None and kind is None:
        return None  # a custom cost source object: no implicit caching
    return CostTable(cost_table)


def _measure_local(specs, resolved, batch_size, settings, table, show):
    source = make_cost_source(resolved) if isinstance(resolved, CostConfig) else resolved
    device: DeviceInfo = source.device()
    dtype = resolved.dtype if isinstance(resolved, CostConfig) else source_dtype(source)
    found: Dict[str, Measurement] = {}
    if table is not None:
        found = {k: m for k, m in table.lookup(list(specs), device.name, batch_size, dtype).items()
                 if m.error is not ErrorKind.WORKER_DIED}  # as the driver: a dead worker is no verdict on the stage
    todo = [k for k in specs if k not in found]
    bar = _progress(len(todo), len(found), show)
    chunk = 64
    for i in range(0, len(todo), chunk):
        keys = todo[i:i + chunk]
        ms = source.measure([specs[k] for k in keys], batch_size, settings)
        if table is not None:
            table.append(ms, {k: specs[k] for k in keys}, device, batch_size, dtype, settings)
        for m in ms:
            found[m.key] = m
        if bar is not None:
            bar.update(len(keys))
    if bar is not None:
        bar.close()
    per_worker = {"local": len(todo)} if todo else {}
    return found, device, len(specs) - len(todo), per_worker, 0


def source_dtype(source: CostSource) -> str:
    """The math mode a cost-source object measures in (the cost table keys rows by it)."""
    return str(getattr(source, "dtype", "float32"))


def _progress(total: int, hits: int, show: bool):
    if not show or total == 0:
        return None
    from .distributed.progress import ProgressBar
    return ProgressBar(total=total, cache_hits=hits, desc="profiling stages")


def construct(graph: Graph, block_stages: List[List[Stage]], compute_weight: bool = False,
              opt_type: str = "optimized") -> Graph:
    """A new Graph running ``block_stages``; each MERGE stage becomes one merged conv node.

    Consumers of a merged conv read their slice of the merged output, so the runtime never needs to
    know about merges. Other nodes share the original's weight arrays.
    """
    src_nodes = graph.node_by_name()
    d = graph_to_dict(graph)
    d["name"] = f"{graph.name}_{opt_type}" if not graph.name.endswith(opt_type) else graph.name
    merged_weights = {}
    if len(block_stages) != len(d["blocks"]):
        raise ValueError(f"block_stages has {len(block_stages)} block schedules, graph {graph.name!r} has "
                         f"{len(d['blocks'])} blocks")
    for bi, (bcfg, stages) in enumerate(zip(d["blocks"], block_stages)):
        cfg_by_name = {c["name"]: c for c in bcfg["nodes"]}
        rename: Dict[str, tuple] = {}  # member name -> (merged name, channel offset)
        new_nodes, new_stages = [], []
        for stage in stages:
            names = stage.node_names()
            unknown = [n for n in names if n not in cfg_by_name]
            if unknown:
                raise ValueError(f"block {bi}: the schedule names {unknown[:5]}, which are not in this block")
            if stage.strategy is Strategy.MERGE and len(names) > 1:
                convs = [src_nodes[n] for n in names]
                if any(not isinstance(c, Conv) for c in convs):
                    raise ValueError(f"block {bi}: merge stage holds non-conv nodes {names}")
                p = merged_conv_params(convs)
                mname = "+".join(names)
                offset = 0
                for c in convs:
                    rename[c.name] = (mname, offset)
                    offset += c.out_channels
                first = cfg_by_name[names[0]]
                new_nodes.append({"type": "conv", "name": mname,
                                  "hint_name": " ".join(src_nodes[n].hint_name for n in names),
                                  "inputs": first["inputs"], "out_channels": p["out_channels"],
                                  "kernel": list(p["kernel"]), "stride": list(p["stride"]),
                                  "padding": list(p["padding"]), "groups": 1, "act": p["act"], "output_shape": None})
                new_stages.append(Stage(((mname,),), Strategy.MERGE))
                if compute_weight:
                    from .runtime.weights import merged_conv_weights
                    merged_weights[mname] = merged_conv_weights(convs)
            else:
                new_nodes.extend(cfg_by_name[n] for n in names)
                new_stages.append(Stage(stage.groups, Strategy.PARALLEL))
        if len(new_nodes) != len(bcfg["nodes"]) - sum(len(s.node_names()) - 1 for s in stages
                                                       if s.strategy is Strategy.MERGE):
            raise ValueError(f"block {bi}: the schedule does not cover the block's nodes")
        for cfg in new_nodes:
            cfg["output_shape"] = None
            for term in cfg.get("inputs", []):
                for ref in term:
                    if ref[0] in rename:
                        mname, off = rename[ref[0]]
                        ref[0], ref[1], ref[2] = mname, ref[1] + off, ref[2] + off
        exit_name = bcfg["exit"]
        if exit_name in rename:
            raise ValueError(f"block {bi}: the exit node {exit_name!r} cannot be merged")
        new_nodes.sort(key=lambda c: c["name"] == exit_name)  # exit last, others in schedule order
        bcfg["nodes"] = new_nodes
        bcfg["stages"] = [s.to_json() for s in new_stages]
    new_graph = graph_from_dict(d)
    for node in new_graph.nodes():
        if node.name in merged_weights:
            node.params["weight"], node.params["bias"] = merged_weights[node.name]
        elif node.name in src_nodes:
            node.params = dict(src_nodes[node.name].params)
    check_schedule(new_graph)
    return new_graph

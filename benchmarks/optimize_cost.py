"""What a whole optimization costs: cold (a fresh cost table) and warm (the same table again), end to end.

For each model and math mode, ``optimize`` runs with ``r``/``s`` (IOS's defaults 3/8) and ``--profiling``
(lazy by default) into a fresh temporary cost table -- cold: enumeration, profiling and the DP, timed as a
user sees them -- and then again on that table -- warm: a re-run that should measure nothing. Each row:

    {model, math, r, s, device, cold_s, unique_stages, measured_stages, warm_s, ...}

With ``--compare``, Inception-v3 and SqueezeNet (``--compare-models``) are also optimized exhaustively
(every stage measured, a fresh table): the row records both predictions, whether the schedules are the
same, and -- for measured costs (gpu, cpu) -- both schedules' latency on the same device
(``ios_runtime.graph_latency``; a GPU executor in TF32 for TF32 rows), timed in alternation, to check
that lazy profiling finds as fast a schedule. Analytic costs are exact, so there the predictions decide.

    python benchmarks/optimize_cost.py --cost gpu --models inception_v3,nasnet,randwire --compare
    python benchmarks/optimize_cost.py --cost cpu --models sample,squeezenet --compare   # no GPU needed

``--cost gpu`` means ``gpu`` (fp32) and ``gpu-tf32`` for ``--math fp32,tf32``; ``analytic:H200`` means
``analytic:H200`` and ``analytic-tf32:H200``; ``cpu`` has fp32 only. Results: a table on stdout and
``benchmarks/results/optimize_cost.json`` (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from ios_ray import ios_runtime
from ios_ray.models import MODELS, get_model
from ios_ray.optimizer import optimize

RESULTS = Path(__file__).resolve().parent / "results"
COMPARED = ("inception_v3", "squeezenet")   # --compare's default models


def cost_name(cost: str, math: str) -> str:
    """The registry name of ``cost`` in math mode ``math`` (``fp32`` or ``tf32``).

    Raises:
        ValueError: a math mode the cost source does not have.
    """
    if math == "fp32":
        return cost
    if math != "tf32":
        raise ValueError(f"math must be fp32 or tf32, got {math!r}")
    kind, sep, arg = cost.partition(":")
    if kind in ("gpu", "cuda"):
        return "gpu-tf32"
    if kind == "analytic":
        return f"analytic-tf32{sep}{arg}"
    raise ValueError(f"cost source {cost!r} has no tf32 mode")


def _optimize(args, model: str, cost: str, table: str, profiling: str):
    graph = get_model(model)
    t0 = time.perf_counter()
    opt = optimize(graph, batch_size=args.batch_size, cost=cost, max_group_size=args.r, max_num_groups=args.s,
                   warmup=args.warmup, number=args.number, repeat=args.repeat, num_workers=args.workers,
                   cost_table=table, profiling=profiling, progress=args.progress)
    return opt, time.perf_counter() - t0


def _latencies(args, graphs: List, math: str, gpu: bool) -> List[float]:
    """Median latency (ms) of each graph's schedule on this machine, measured in alternation."""
    samples: List[List[float]] = [[] for _ in graphs]
    for g in graphs:
        g.init_weights(0)
    for _ in range(args.compare_rounds):
        for i, g in enumerate(graphs):
            samples[i].extend(_timing(g, args, math, gpu))
    return [statistics.median(s) for s in samples]


def _timing(graph, args, math: str, gpu: bool) -> List[float]:
    if not gpu:
        return ios_runtime.graph_latency(graph, args.batch_size, warmup=1, number=args.time_number,
                                         repeat=args.time_repeat, device="cpu")
    if math == "fp32":
        return ios_runtime.graph_latency(graph, args.batch_size, warmup=2, number=args.time_number,
                                         repeat=args.time_repeat, device="gpu")
    from ios_ray.runtime.gpu.executor import GpuExecutor   # graph_latency runs strict fp32 only
    executor = GpuExecutor(graph, args.batch_size, tf32=True)
    try:
        return executor.latency(2, args.time_number, args.time_repeat)[0]
    finally:
        executor.close()


def run_one(args, model: str, math: str) -> Dict:
    cost = cost_name(args.cost, math)
    with tempfile.TemporaryDirectory(prefix="ios_ray_cost_") as tmp:
        table = os.path.join(tmp, "costs")
        opt, cold_s = _optimize(args, model, cost, table, args.profiling)
        warm, warm_s = _optimize(args, model, cost, table, args.profiling)
        rep, again = opt.optimization_report, warm.optimization_report
        row = {"model": model, "math": math, "r": args.r, "s": args.s, "device": rep.device, "cold_s": cold_s,
               "unique_stages": rep.unique_stages, "measured_stages": rep.measured, "warm_s": warm_s,
               "cost": cost, "profiling": rep.profiling, "rounds": rep.rounds,
               "measured_fraction": rep.measured_fraction, "bound_violations": rep.bound_violations,
               "warm_measured": again.measured, "predicted_ms": rep.predicted_latency_ms,
               "seconds": rep.seconds, "workers": rep.num_workers, "batch_size": args.batch_size}
        if args.compare and model in args.compare_models and args.profiling == "lazy":
            full, full_s = _optimize(args, model, cost, os.path.join(tmp, "exhaustive"), "exhaustive")
            row.update({"exhaustive_cold_s": full_s, "exhaustive_measured": full.optimization_report.measured,
                        "exhaustive_predicted_ms": full.optimization_report.predicted_latency_ms,
                        "same_schedule": str(opt) == str(full)})
            if not rep.estimated:
                gpu = args.cost.startswith(("gpu", "cuda"))
                lazy_ms, full_ms = _latencies(args, [opt, full], math, gpu)
                row.update({"lazy_latency_ms": lazy_ms, "exhaustive_latency_ms": full_ms,
                            "latency_ratio": lazy_ms / full_ms,
                            "latency_device": ios_runtime.device_name(opt, args.batch_size, "gpu" if gpu else "cpu")})
    return row


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="inception_v3,nasnet,randwire", help="comma-separated model names")
    p.add_argument("--math", default="fp32,tf32", help="fp32, tf32 or both")
    p.add_argument("--cost", default="gpu", help="gpu, analytic[:GPU] or cpu")
    p.add_argument("--profiling", default="lazy", choices=["lazy", "exhaustive"])
    p.add_argument("-r", type=int, default=3, help="max operators per group")
    p.add_argument("-s", type=int, default=8, help="max groups per stage")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--warmup", type=int, default=2, help="profiling: warm-up runs per stage")
    p.add_argument("--number", type=int, default=6, help="profiling: runs per repeat")
    p.add_argument("--repeat", type=int, default=6, help="profiling: repeats")
    p.add_argument("--workers", type=int, default=None, help="Ray profiling actors (default: in this process)")
    p.add_argument("--compare", action="store_true",
                   help=f"also optimize {', '.join(COMPARED)} exhaustively and time both schedules")
    p.add_argument("--compare-models", default=",".join(COMPARED), help="the models --compare applies to")
    p.add_argument("--compare-rounds", type=int, default=5, help="alternating timing rounds per schedule")
    p.add_argument("--time-number", type=int, default=20, help="timing: runs per repeat")
    p.add_argument("--time-repeat", type=int, default=5, help="timing: repeats per round")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--out", default=None, help="JSON output (default benchmarks/results/optimize_cost.json)")
    args = p.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.compare_models = [m.strip() for m in args.compare_models.split(",") if m.strip()]
    unknown = [m for m in models + args.compare_models if m not in MODELS]
    if unknown:
        p.error(f"unknown models {unknown}; known: {', '.join(sorted(MODELS))}")
    maths = [m.strip() for m in args.math.split(",") if m.strip()]
    if args.cost.split(":")[0] == "cpu":
        maths = [m for m in maths if m == "fp32"]
    for m in maths:
        cost_name(args.cost, m)   # fails before any work on a math mode the source lacks

    rows = []
    print(f"{'model':<13} {'math':<5} {'device':<22} {'cold s':>8} {'unique':>8} {'measured':>8} {'frac':>6} "
          f"{'rounds':>6} {'warm s':>7} {'warm meas':>9} {'same':>5} {'exh measured':>12} {'lazy/exh latency':>16}")
    for model in models:
        for math in maths:
            r = run_one(args, model, math)
            rows.append(r)
            ratio = f"{r['latency_ratio']:.3f}" if "latency_ratio" in r else "-"
            same = str(r["same_schedule"]).lower() if "same_schedule" in r else "-"
            print(f"{r['model']:<13} {r['math']:<5} {r['device'][:22]:<22} {r['cold_s']:>8.2f} {r['unique_stages']:>8,} "
                  f"{r['measured_stages']:>8,} {r['measured_fraction']:>6.1%} {r['rounds']:>6} {r['warm_s']:>7.2f} "
                  f"{r['warm_measured']:>9} {same:>5} {r.get('exhaustive_measured', '-'):>12} {ratio:>16}",
                  flush=True)
    out = Path(args.out) if args.out else RESULTS / "optimize_cost.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
              "machine": {"host_cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()},
              "rows": rows}
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

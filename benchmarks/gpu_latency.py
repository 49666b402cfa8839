"""GPU latency of the IOS benchmark networks under each schedule, on our runtime and on PyTorch.

One run on one GPU::

    python benchmarks/gpu_latency.py [--models inception_v3,randwire,nasnet,squeezenet] [--big inception_v3:16]
                                     [--math fp32,tf32] [--budget-s 480] [--out benchmarks/results/gpu_latency.json]

For each network and batch size (batch 1 for all, plus batch 16 for Inception-v3) and each math mode
(strict fp32, TF32): the latency of the Sequential and Greedy schedules and, when ``ios_ray.optimize``
exists, of IOS-Merge / IOS-Parallel / IOS-Both (profiled on this GPU by GpuProfiler, one cost table per
math mode, so the three optimizations share measurements; the DP's own schedules, ``final_check=False``,
with the DP's prediction beside each) and "IOS-Both checked" (IOS-Both as ``optimize`` returns it by
default, after its final check, on the same table: the schedule returned and each candidate's figures are in
the row), all on our runtime (one CUDA graph per schedule); the
critical-path *floor* measured in the same run (every operator timed alone as a one-operator stage,
then per block the longest path through its DAG, summed: ``ios_ray.dp.floor``; the operators timed
the way the stages are, ``--l2``); and PyTorch eager,
PyTorch CUDA-graph and ``torch.compile(mode="max-autotune")`` latency of the same architecture and
weights (benchmarks/torch_from_ir.py, cudnn.benchmark on). Latency: median over ``repeat`` repeats of
``number`` replays after ``warmup``, timed with CUDA events. Every schedule's output is compared with
the Sequential one and PyTorch's with ours (relative L2 error, reported).

Rows (``results`` in the JSON): ``{model, batch, math, schedule, median_ms, predicted_ms, ...}``, with
``predicted_ms`` set for the DP's schedules (None elsewhere) and one ``schedule: "floor"`` row per
model/batch/math whose ``median_ms`` is the floor.

Large search spaces are pruned per network (``PRUNING``: the paper's r and s) and the whole run keeps
to ``--budget-s``: IOS optimizations that would start after it are skipped and say so.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ios_ray.dp.floor import critical_path_floor  # noqa: E402
from ios_ray.models import get_model  # noqa: E402
from ios_ray.space.stage import stage_spec  # noqa: E402

# (max_group_size r, max_num_groups s) per network: the paper's defaults (3, 8); RandWire's row fits a 10-minute
# device call with --workers 3 (its IOS-Parallel optimization took 237 s so, one math mode per call)
PRUNING = {"squeezenet": (3, 8), "inception_v3": (3, 8), "randwire": (3, 8), "nasnet": (3, 8), "sample": (3, 8)}
OPT_TYPES = [("IOS-Merge", "dp_merge"), ("IOS-Parallel", "dp_parallel"), ("IOS-Both", "dp_parallel_merge")]
FLOOR = "floor"
CHECKED = "IOS-Both checked"   # IOS-Both as ``optimize`` returns it by default: after its final check
COLUMNS = ["Sequential", "Greedy", "IOS-Merge", "IOS-Parallel", "IOS-Both", CHECKED, FLOOR, "PyTorch eager",
           "PyTorch CUDA graph", "torch.compile"]


def rel_l2(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def find_optimize():
    try:
        from ios_ray.optimizer import optimize
        return optimize
    except ImportError:
        return None


def stats(samples):
    return {"median_ms": float(np.median(samples)), "min_ms": float(min(samples)), "max_ms": float(max(samples)),
            "samples": len(samples)}


def result_row(base, schedule, samples, predicted_ms=None, **extra):
    """One result row: ``base`` (model, batch, math, ...), the schedule, the statistics of ``samples``
    (per-repeat ms) and the DP's prediction (None for schedules the DP did not choose)."""
    return {**base, "schedule": schedule, **stats(samples), "predicted_ms": predicted_ms, **extra}


def op_times(graph, measure):
    """Every operator of ``graph`` timed alone, as a one-operator stage (the way the profiler measures it).

    Args:
        graph: the graph.
        measure: ``specs -> [Measurement]`` (a cost source's ``measure`` with batch and settings bound);
            operators with the same stage key are measured once.
    Returns:
        ``{node name: ms}``, or None when some operator could not be measured.
    """
    keys = {}
    specs = {}
    for node in graph.nodes()[1:]:
        spec = stage_spec([[node]])
        keys[node.name] = spec.key
        specs.setdefault(spec.key, spec)
    measured = {m.key: m for m in measure(list(specs.values()))}
    if any(m.error.value for m in measured.values()):
        return None
    return {name: measured[key].latency_ms for name, key in keys.items()}


def floor_row(base, graph, op_ms):
    """The critical-path floor row of ``graph`` from its operators' times alone (``op_times``)."""
    floor = critical_path_floor(graph, op_ms)
    return {**base, "runtime": "ios_ray", "schedule": FLOOR, "median_ms": floor, "predicted_ms": None,
            "operator_sum_ms": float(sum(op_ms.values()))}


def ours(ctx, graph, batch, x, settings):
    from ios_ray.runtime.gpu.executor import GpuExecutor
    t0 = time.perf_counter()
    ex = GpuExecutor(graph, batch, context=ctx)
    build_s = time.perf_counter() - t0
    out = ex.run(x)
    seq, _ = ex.latency(*settings, x=x)
    n_stages = ex.num_stages
    ex.close()
    return stats(seq), out, build_s, n_stages


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="squeezenet,inception_v3,randwire,nasnet")
    p.add_argument("--big", default="inception_v3:16", help="extra model:batch runs, comma separated")
    p.add_argument("--math", default="fp32,tf32")
    p.add_argument("--ios-math", default="fp32,tf32", help="math modes in which IOS schedules are optimized")
    p.add_argument("--ios-models", default="", help="only these networks get IOS schedules (default: all)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--number", type=int, default=20)
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--budget-s", type=float, default=480.0)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile (it autotunes for minutes)")
    p.add_argument("--workers", type=int, default=None,
                   help="profile the IOS optimizations on this many Ray actors sharing the GPU (default: in this "
                        "process)")
    p.add_argument("--pruning", default="", help="model:r:s overrides of PRUNING, comma separated (e.g. randwire:1:4)")
    p.add_argument("--l2", default="auto", choices=("auto", "warm", "cold"),
                   help="how stages (and the floor's operators) are timed: as each graph runs them (auto), or "
                        "all warm or all cold (GpuRecipe.l2)")
    p.add_argument("--compile-conv-backends", default=None, metavar="LIST",
                   help="inductor's max_autotune_conv_backends for the torch.compile column (default: inductor's, "
                        "ATEN,TRITON; ATEN keeps cuDNN's convolutions and skips autotuning Triton conv templates, "
                        "~30 s per conv signature)")
    p.add_argument("--no-checked", action="store_true",
                   help="skip the 'IOS-Both checked' row (IOS-Both again with optimize's final check)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_latency.json"))
    args = p.parse_args(argv)
    pruning = dict(PRUNING)
    for item in filter(None, args.pruning.split(",")):
        model, r, s = item.split(":")
        pruning[model] = (int(r), int(s))
    t_start = time.perf_counter()

    import cupy
    from ios_ray.costs.measurement import MeasureSettings
    from ios_ray.profile.gpu import GpuProfiler, gpu_device_info
    from ios_ray.runtime.gpu.context import GpuContext
    optimize = find_optimize()
    runs = [(m, 1) for m in args.models.split(",") if m]
    runs += [(m.split(":")[0], int(m.split(":")[1])) for m in args.big.split(",") if m]
    settings = (args.warmup, args.number, args.repeat)
    info = gpu_device_info(0)
    doc = {"command": " ".join([os.path.basename(sys.executable)] + sys.argv),
           "device": info.__dict__, "python": platform.python_version(), "cupy": cupy.__version__,
           "timing": {"warmup": args.warmup, "number": args.number, "repeat": args.repeat,
                      "statistic": "median over repeats of (elapsed / number), CUDA events"},
           "pruning": pruning, "workers": args.workers, "l2": args.l2, "optimize_available": optimize is not None,
           "results": [], "skipped": []}
    try:
        import torch
        doc["torch"] = torch.__version__
        doc["torch_cudnn"] = torch.backends.cudnn.version()
        if args.compile_conv_backends:
            import torch._inductor.config as inductor_config
            inductor_config.max_autotune_conv_backends = args.compile_conv_backends
        doc["compile_conv_backends"] = args.compile_conv_backends or "inductor's default"
    except ImportError:
        args.no_torch = True

    def save():
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(doc, indent=1))
        if os.environ.get("OUT"):
            Path(os.environ["OUT"], Path(args.out).name).write_text(json.dumps(doc, indent=1))

    def add(row):
        row.setdefault("predicted_ms", None)
        doc["results"].append(row)
        extra = f"  optimize {row['optimize_s']:.1f}s ({row.get('unique_stages', '?')} stages)" if "optimize_s" in row else ""
        print(f"[{time.perf_counter() - t_start:6.1f}s] {row['model']} b{row['batch']} {row['math']} "
              f"{row['schedule']}: {row['median_ms']:.3f} ms{extra}", flush=True)
        save()

    tables = tempfile.mkdtemp(prefix="ios_ray_costs_")
    for math in args.math.split(","):
        tf32 = math == "tf32"
        ctx = GpuContext(0, tf32=tf32)
        profiler = GpuProfiler(0, tf32=tf32)
        profiler.l2 = args.l2
        for model, batch in runs:
            g = get_model(model)
            g.init_weights(0)
            x = np.random.default_rng(0).standard_normal((batch, *g.input.output_shape), dtype=np.float32)
            base = {"model": model, "batch": batch, "math": math, "ops": g.num_operators()}
            g.sequential_schedule()
            st, ref_out, build_s, n = ours(ctx, g, batch, x, settings)
            add({**base, "runtime": "ios_ray", "schedule": "Sequential", **st, "stages": n, "build_s": build_s,
                 "rel_err_vs_sequential": 0.0})
            g.greedy_schedule()
            st, out, build_s, n = ours(ctx, g, batch, x, settings)
            add({**base, "runtime": "ios_ray", "schedule": "Greedy", **st, "stages": n, "build_s": build_s,
                 "rel_err_vs_sequential": rel_l2(out, ref_out)})
            profiler.for_graph(g, batch)   # the floor's operators timed as the stages are (``--l2``)
            base["l2"] = profiler.protocol()
            op_ms = op_times(g, functools.partial(profiler.measure, batch_size=batch,
                                                  settings=MeasureSettings(*settings)))
            if op_ms is None:
                doc["skipped"].append(f"{FLOOR} {model} b{batch} {math}: some operator failed alone")
            else:
                add(floor_row(base, g, op_ms))
            ios_models = [m for m in args.ios_models.split(",") if m]
            if optimize is not None and math in args.ios_math.split(",") and (not ios_models or model in ios_models):
                from ios_ray.costs.table import CostTable
                table = CostTable(os.path.join(tables, math))
                r, s = pruning.get(model, (3, 8))
                if args.workers:   # Ray actors sharing this GPU, each building the cost source
                    from ios_ray.costs.factory import gpu_options
                    source = gpu_options("gpu-tf32" if tf32 else "gpu", workers_per_gpu=args.workers, l2=args.l2)
                else:
                    source = profiler
                runs_here = OPT_TYPES + ([] if args.no_checked else [(CHECKED, "dp_parallel_merge")])
                for label, opt_type in runs_here:
                    if time.perf_counter() - t_start > args.budget_s:
                        doc["skipped"].append(f"{label} {model} b{batch} {math}: over the time budget")
                        continue
                    t0 = time.perf_counter()
                    try:  # the DP's own schedule (no final check: this benchmark shows its gap); then, on the
                        # same table, IOS-Both as optimize returns it by default (its final check on)
                        og = optimize(g, batch, opt_type, compute_weight=True, cost=source, cost_table=table,
                                      max_group_size=r, max_num_groups=s, final_check=label == CHECKED,
                                      num_workers=args.workers)
                    except Exception as exc:  # noqa: BLE001 -- report and go on
                        doc["skipped"].append(f"{label} {model} b{batch} {math}: {type(exc).__name__}: {exc}")
                        print("skipped:", doc["skipped"][-1], flush=True)
                        continue
                    opt_s = time.perf_counter() - t0
                    rep = getattr(og, "optimization_report", None)
                    st, out, build_s, n = ours(ctx, og, batch, x, settings)
                    row = {**base, "runtime": "ios_ray", "schedule": label, **st, "stages": n, "build_s": build_s,
                           "rel_err_vs_sequential": rel_l2(out, ref_out), "optimize_s": opt_s, "r": r, "s": s}
                    if rep is not None:
                        if label == CHECKED:
                            row["returned"] = rep.returned
                            row["final_check"] = [{"schedule": c.schedule, "predicted_ms": c.predicted_ms,
                                                   "measured_ms": c.measured_ms} for c in rep.final_check]
                        row.update({"predicted_ms": rep.predicted_latency_ms, "unique_stages": rep.unique_stages,
                                    "measured_stages": rep.measured, "cache_hits": rep.cache_hits,
                                    "workers": rep.num_workers, "rounds": rep.rounds, "fill": rep.fill,
                                    "errors": rep.errors, "seconds": rep.seconds})
                        if label == CHECKED:   # the prediction of the schedule it returned
                            row["predicted_ms"] = next((c.predicted_ms for c in rep.final_check
                                                        if c.schedule == rep.returned), rep.predicted_latency_ms)
                    add(row)
            if not args.no_torch:
                from torch_from_ir import TORCH_MODES, torch_latency
                for mode, label in TORCH_MODES.items():
                    if mode == "compile" and (args.no_compile or time.perf_counter() - t_start > args.budget_s):
                        doc["skipped"].append(f"{label} {model} b{batch} {math}: "
                                              f"{'--no-compile' if args.no_compile else 'over the time budget'}")
                        continue
                    t0 = time.perf_counter()
                    try:
                        times, out, _ = torch_latency(g, batch, tf32, mode, settings)
                    except Exception as exc:  # noqa: BLE001 -- a failure becomes a skipped note
                        doc["skipped"].append(f"{label} {model} b{batch} {math}: {type(exc).__name__}: {exc}"[:400])
                        continue
                    add(result_row({**base, "runtime": "pytorch"}, label, times,
                                   rel_err_vs_sequential=rel_l2(out, ref_out), wall_s=time.perf_counter() - t0))
        del ctx, profiler
        cupy.get_default_memory_pool().free_all_blocks()
    doc["wall_s"] = time.perf_counter() - t_start
    save()
    print_table(doc)
    return 0


def format_table(doc) -> str:
    """The summary table: one line of median ms per model/batch/math (columns ``COLUMNS``), and under it
    the DP's predictions for the IOS columns; then the largest output difference and the skipped runs."""
    rows = doc["results"]
    keys = []
    for r in rows:
        k = (r["model"], r["batch"], r["math"])
        if k not in keys:
            keys.append(k)
    lines = [f"device: {doc['device']['name']} ({doc['device']['library']}); median ms (floor: critical path of "
             f"the operators timed alone; 'predicted': the DP's stage-cost sum)",
             f"{'model':14s} {'b':>3s} {'math':5s} " + " ".join(f"{c[:13]:>13s}" for c in COLUMNS) + "  opt(s)"]
    for k in keys:
        by = {r["schedule"]: r for r in rows if (r["model"], r["batch"], r["math"]) == k}
        cells = [f"{by[c]['median_ms']:13.3f}" if c in by else f"{'-':>13s}" for c in COLUMNS]
        opt = sum(r.get("optimize_s", 0.0) for r in by.values())
        lines.append(f"{k[0]:14s} {k[1]:3d} {k[2]:5s} " + " ".join(cells) + f"  {opt:6.1f}")
        predicted = [by[c].get("predicted_ms") if c in by else None for c in COLUMNS]
        if any(p is not None for p in predicted):
            cells = [f"{p:13.3f}" if p is not None else f"{'':13s}" for p in predicted]
            lines.append(f"{'  predicted':24s} " + " ".join(cells))
    worst = max((r.get("rel_err_vs_sequential", 0.0) for r in rows), default=0.0)
    lines.append(f"largest relative L2 difference from the Sequential output: {worst:.2e}")
    lines.extend(f"skipped: {s}" for s in doc["skipped"])
    return "\n".join(lines)


def print_table(doc) -> None:
    print(format_table(doc))


if __name__ == "__main__":
    sys.exit(main())

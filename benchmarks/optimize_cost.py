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

    python benchmarks/optimize_cost.py --cost gpu --compare                # the four zoo models, fp32 + TF32
    python benchmarks/optimize_cost.py --cost gpu --models nasnet --budget-s 280   # one model per device call
    python benchmarks/optimize_cost.py --cost cpu --models sample,squeezenet --compare   # no GPU needed
    python benchmarks/optimize_cost.py --simulate 16,64 --sim-ms 1 --sim-model nasnet   # the driver's scaling

``--cost gpu`` means ``gpu`` (fp32) and ``gpu-tf32`` for ``--math fp32,tf32``; ``analytic:H200`` means
``analytic:H200`` and ``analytic-tf32:H200``; ``cpu`` has fp32 only. ``optimize`` runs as a user calls it
(its final check included; ``--no-final-check`` leaves it out). ``--budget-s`` runs each (model, math)
row in a child process killed after that many seconds; the row then says ``timed_out`` and keeps what
finished (the cold run, say). Results: a table on stdout and ``benchmarks/results/optimize_cost.json``
(``--out``), rewritten after every row: a row replaces the one of the same model, math, r, s, batch size,
cost and profiling and others are kept, so runs of a few models each add up to one file; with ``$OUT``
set (the GPU machine's result folder) a copy goes there too. ``--simulate`` runs ``scaling.py``'s
simulated profiling instead (sleeping-only workers: the driver's and Ray's overhead per stage; NASNet's
48,871 stages give 64 workers 0.76 s of work each, Inception-v3's 3,846 only 60 ms).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import platform
import queue
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from ios_ray import ios_runtime
from ios_ray.models import MODELS, get_model
from ios_ray.costs.factory import gpu_options
from ios_ray.dp.lazy import LazyOptions
from ios_ray.optimizer import optimize
from outputs import copy_to_out  # noqa: E402  (benchmarks/ is on the path: this file's folder)

RESULTS = Path(__file__).resolve().parent / "results"
MODELS_DEFAULT = ("inception_v3", "squeezenet", "randwire", "nasnet")
COMPARED = ("inception_v3", "squeezenet")   # --compare's default models
ROW_ID = ("model", "math", "r", "s", "batch_size", "cost", "profiling", "stream_factor", "tolerance", "timing",
          "fill")   # a row replaces the one with these


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
    cost = gpu_options(cost, workers_per_gpu=args.workers_per_gpu, timing=args.timing)
    t0 = time.perf_counter()
    opt = optimize(graph, batch_size=args.batch_size, cost=cost, max_group_size=args.r, max_num_groups=args.s,
                   warmup=args.warmup, number=args.number, repeat=args.repeat, num_workers=args.workers,
                   cost_table=table, profiling=profiling, progress=args.progress, final_check=args.final_check,
                   lazy=LazyOptions(stream_factor=args.stream_factor, tolerance=args.tolerance,
                                    fill=args.fill))
    return opt, time.perf_counter() - t0


def _cold(args, model: str, cost: str, table: str):
    """The cold optimization; with ``--cprofile DIR`` under cProfile, its 40 costliest functions (by own
    time) written to ``DIR/<model>_<cost>.prof.txt`` (where a stage's host time goes)."""
    if not args.cprofile:
        return _optimize(args, model, cost, table, args.profiling)
    import cProfile
    import io
    import pstats
    prof = cProfile.Profile()
    result = prof.runcall(_optimize, args, model, cost, table, args.profiling)
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(40)
    pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(40)
    Path(args.cprofile).mkdir(parents=True, exist_ok=True)
    (Path(args.cprofile) / f"{model}_{cost}.prof.txt").write_text(text.getvalue())
    return result


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


def run_one(args, model: str, math: str, emit=None) -> Dict:
    """One row: ``model`` optimized cold and warm in math mode ``math`` (and exhaustively with ``--compare``).

    ``emit(row)``, if given, gets the row as it grows (after the cold run, the warm run, the comparison), so
    a caller that stops this midway keeps what finished.
    """
    emit = emit or (lambda row: None)
    cost = cost_name(args.cost, math)
    with tempfile.TemporaryDirectory(prefix="ios_ray_cost_") as tmp:
        table = os.path.join(tmp, "costs")
        opt, cold_s = _cold(args, model, cost, table)
        rep = opt.optimization_report
        row = {"model": model, "math": math, "r": args.r, "s": args.s, "device": rep.device, "cold_s": cold_s,
               "unique_stages": rep.unique_stages, "measured_stages": rep.measured, "warm_s": None,
               "cost": cost, "profiling": rep.profiling, "rounds": rep.rounds,
               "measured_fraction": rep.measured_fraction, "bound_violations": rep.bound_violations,
               "predicted_ms": rep.predicted_latency_ms, "returned": rep.returned,
               "final_check": [dataclasses.asdict(c) for c in rep.final_check], "seconds": rep.seconds,
               "workers": rep.num_workers, "workers_per_gpu": args.workers_per_gpu, "tolerance": args.tolerance,
               "timing": args.timing,
               "batch_size": args.batch_size, "stream_factor": args.stream_factor, "fill": rep.fill}
        if args.export_costs:
            row["exported_costs"] = export_costs(table, Path(args.export_costs), model, math, args)
        emit(dict(row))
        warm, warm_s = _optimize(args, model, cost, table, args.profiling)
        row.update({"warm_s": warm_s, "warm_measured": warm.optimization_report.measured,
                    "warm_seconds": warm.optimization_report.seconds})
        emit(dict(row))
        if args.compare and model in args.compare_models and args.profiling == "lazy":
            full, full_s = _optimize(args, model, cost, os.path.join(tmp, "exhaustive"), "exhaustive")
            row.update({"exhaustive_cold_s": full_s, "exhaustive_measured": full.optimization_report.measured,
                        "exhaustive_predicted_ms": full.optimization_report.predicted_latency_ms,
                        "exhaustive_returned": full.optimization_report.returned,
                        "same_schedule": str(opt) == str(full)})
            emit(dict(row))
            if not rep.estimated:
                gpu = args.cost.startswith(("gpu", "cuda"))
                lazy_ms, full_ms = _latencies(args, [opt, full], math, gpu)
                row.update({"lazy_latency_ms": lazy_ms, "exhaustive_latency_ms": full_ms,
                            "latency_ratio": lazy_ms / full_ms,
                            "latency_device": ios_runtime.device_name(opt, args.batch_size, "gpu" if gpu else "cpu")})
                emit(dict(row))
    return row


def export_costs(table: str, folder: Path, model: str, math: str, args) -> str:
    """The cold run's measured stages as ``<model>_<math>_stage_costs.parquet`` in ``folder`` (``key,
    latency_ms, strategy, num_ops``, the device and software in its metadata): a table to replay the lazy
    DP on (``lazy_overheads.py --costs``) after the device is gone. Returns the file's path."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from ios_ray.costs.table import CostTable

    rows = CostTable(table).read_all()
    cols = rows.select(["key", "latency_ms", "strategy", "num_ops"])
    first = rows.slice(0, 1).to_pylist()[0] if rows.num_rows else {}
    meta = {"device": str(first.get("device", "")), "software": str(first.get("software", "")),
            "dtype": str(first.get("dtype", "")), "batch_size": str(args.batch_size),
            "model": f"{model} r={args.r} s={args.s}", "math": math, "profiling": args.profiling}
    cols = cols.replace_schema_metadata({**(cols.schema.metadata or {}), **{k: v.encode() for k, v in meta.items()}})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{model}_{math}_stage_costs.parquet"
    pq.write_table(cols, path)
    copy_to_out(path)
    return str(path)


def _child(args, model: str, math: str, out: "mp.Queue") -> None:
    """``run_one`` in a child process, each stage of the row put on ``out``; then ``None`` (done) or an error."""
    try:
        run_one(args, model, math, out.put)
        out.put(None)
    except BaseException as exc:  # noqa: BLE001 -- reported in the row, the next row still runs
        out.put({"error": f"{type(exc).__name__}: {exc}"[:2000]})


def run_budgeted(args, model: str, math: str) -> Dict:
    """``run_one`` in a child process stopped after ``args.budget_s`` seconds: the row as far as it got.

    The child builds its own cost source (and GPU context), so a cold row is as cold as a fresh process.
    """
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_child, args=(args, model, math, out), daemon=True)
    t0 = time.monotonic()
    child.start()
    row: Dict = {"model": model, "math": math, "r": args.r, "s": args.s, "batch_size": args.batch_size,
                 "cost": cost_name(args.cost, math), "profiling": args.profiling, "stream_factor": args.stream_factor,
                 "fill": "auto" if args.fill is None else args.fill}
    done = False
    while not done:
        left = args.budget_s - (time.monotonic() - t0)
        if left <= 0:
            break
        try:
            got = out.get(timeout=min(left, 5.0))
        except queue.Empty:
            if not child.is_alive() and out.empty():
                row.setdefault("error", f"the child process ended with code {child.exitcode}")
                break
            continue
        if got is None:
            done = True
        else:
            row.update(got)
            done = "error" in got
    if not done and "error" not in row:
        row.update({"timed_out": True, "budget_s": args.budget_s})
    if child.is_alive():
        child.kill()
    child.join(10)
    return row


def _row_id(row: Dict) -> tuple:
    """A row's ``ROW_ID`` values (rows written before ``stream_factor``, ``tolerance`` or ``fill`` existed
    ran with them off: 0)."""
    return tuple(row.get(k, 0.0 if k in ("stream_factor", "tolerance", "fill") else None) for k in ROW_ID)


def save(rows: List[Dict], out: Path, command: str) -> None:
    """Write ``rows`` into ``out`` (replacing rows of the same ``ROW_ID``, keeping others), and a copy into
    ``$OUT`` when that is set."""
    old: List[Dict] = []
    if out.exists():
        try:
            old = json.loads(out.read_text()).get("rows", [])
        except (ValueError, AttributeError):
            old = []
    ids = {_row_id(r) for r in rows}
    kept = [r for r in old if _row_id(r) not in ids]
    result = {"command": command,
              "machine": {"host_cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()},
              "rows": kept + rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    os.replace(tmp, out)
    copy_to_out(out)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_row(r: Dict) -> None:
    ratio = _fmt(r.get("latency_ratio"), ".3f")
    same = str(r["same_schedule"]).lower() if "same_schedule" in r else "-"
    note = " timed out" if r.get("timed_out") else (f" error: {r['error'][:80]}" if r.get("error") else "")
    print(f"{r['model']:<13} {r['math']:<5} {str(r.get('device', '-'))[:22]:<22} {_fmt(r.get('cold_s'), '8.2f'):>8} "
          f"{_fmt(r.get('unique_stages'), ','):>8} {_fmt(r.get('measured_stages'), ','):>8} "
          f"{_fmt(r.get('measured_fraction'), '.1%'):>6} {_fmt(r.get('rounds'), 'd'):>6} "
          f"{_fmt(r.get('warm_s'), '.2f'):>7} {_fmt(r.get('warm_measured'), 'd'):>9} {same:>5} "
          f"{_fmt(r.get('exhaustive_measured'), ','):>12} {ratio:>16}{note}", flush=True)


HEADER = (f"{'model':<13} {'math':<5} {'device':<22} {'cold s':>8} {'unique':>8} {'measured':>8} {'frac':>6} "
          f"{'rounds':>6} {'warm s':>7} {'warm meas':>9} {'same':>5} {'exh measured':>12} {'lazy/exh latency':>16}")


def simulate(args) -> int:
    """``scaling.py --simulate``: sleeping-only workers, efficiency and driver CPU per stage."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import scaling
    passed = ["--simulate", args.simulate, "--sim-ms", str(args.sim_ms), "--model", args.sim_model,
              "--max-group-size", str(args.r), "--max-num-groups", str(args.s)]
    if args.out:
        passed += ["--out", args.out]
    return scaling.main(passed)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS_DEFAULT), help="comma-separated model names")
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
    p.add_argument("--workers-per-gpu", type=int, default=None,
                   help="GPU costs: Ray actors sharing each GPU (give --workers too)")
    p.add_argument("--timing", choices=["replays", "repeats"], default=None,
                   help="GPU costs: single replays (the default) or the original's repeats of --number replays")
    p.add_argument("--tolerance", type=float, default=0.0,
                   help="lazy profiling: stop a part once proved within 1 + t of its optimum (default 0: optimal)")
    p.add_argument("--no-final-check", dest="final_check", action="store_false",
                   help="leave optimize's final check (whole-graph timings of three schedules) out")
    p.add_argument("--budget-s", type=float, default=None,
                   help="run each (model, math) row in a child process stopped after this many seconds")
    p.add_argument("--compare", action="store_true",
                   help=f"also optimize {', '.join(COMPARED)} exhaustively and time both schedules")
    p.add_argument("--compare-models", default=",".join(COMPARED), help="the models --compare applies to")
    p.add_argument("--compare-rounds", type=int, default=5, help="alternating timing rounds per schedule")
    p.add_argument("--time-number", type=int, default=20, help="timing: runs per repeat")
    p.add_argument("--time-repeat", type=int, default=5, help="timing: repeats per round")
    p.add_argument("--simulate", default=None, metavar="N,N",
                   help="instead: simulated profiling with sleeping-only workers, for these worker counts")
    p.add_argument("--sim-ms", type=float, default=1.0, help="--simulate: milliseconds per stage")
    p.add_argument("--sim-model", default="inception_v3", help="--simulate: the model whose stages are simulated")
    p.add_argument("--stream-factor", type=float, default=0.0,
                   help="lazy: LazyOptions.stream_factor (a learned per-extra-group bound term; 0 = off)")
    p.add_argument("--export-costs", default=None, metavar="DIR",
                   help="write each cold run's measured stages to DIR/<model>_<math>_stage_costs.parquet")
    p.add_argument("--fill", type=float, default=None,
                   help="lazy: LazyOptions.fill (stages nearest the optimum added per part and round, per 1,000 "
                        "transitions; default: optimize's choice by device)")
    p.add_argument("--cprofile", default=None, metavar="DIR", help="profile the cold optimization's host time")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--out", default=None, help="JSON output (default benchmarks/results/optimize_cost.json)")
    args = p.parse_args(argv)
    if args.simulate is not None:
        return simulate(args)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.compare_models = [m.strip() for m in args.compare_models.split(",") if m.strip()]
    unknown = [m for m in models + args.compare_models if m not in MODELS]
    if unknown:
        p.error(f"unknown models {unknown}; known: {', '.join(sorted(MODELS))}")
    if args.budget_s is not None and args.budget_s <= 0:
        p.error(f"--budget-s must be positive, got {args.budget_s}")
    maths = [m.strip() for m in args.math.replace("both", "fp32,tf32").split(",") if m.strip()]
    if args.cost.split(":")[0] == "cpu":
        maths = [m for m in maths if m == "fp32"]
    for m in maths:
        cost_name(args.cost, m)   # fails before any work on a math mode the source lacks

    out = Path(args.out) if args.out else RESULTS / "optimize_cost.json"
    command = " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:]))
    rows: List[Dict] = []
    print(HEADER)
    for model in models:
        for math in maths:
            row = run_budgeted(args, model, math) if args.budget_s else run_one(args, model, math)
            rows.append(row)
            print_row(row)
            save(rows, out, command)
    print(f"saved {out}" + (f" (and a copy in {os.environ['OUT']})" if os.environ.get("OUT") else ""))
    return 1 if any(r.get("error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

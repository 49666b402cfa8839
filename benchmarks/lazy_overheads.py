"""How much of a space does lazy profiling measure when stages carry GPU-like fixed overheads? (no device)

    python benchmarks/lazy_overheads.py [--model nasnet] [--stage-us 0,5] [--group-us 0,3,10] [--noise 0]
    python benchmarks/lazy_overheads.py --costs benchmarks/results/nasnet_h200_fp32_stage_costs.parquet

With ``--costs``, the lazy DP is replayed on a real, exhaustively measured cost table instead (a Parquet
file of ``key, latency_ms`` covering the model's space, e.g. NASNet's 48,871 stages measured on one H200):
what it would have measured on that device, and how far each stage's cost sits above its bound, by the
number of groups of the stage.

Costs are the analytic H200 model's estimates plus a fixed per-stage overhead (a replay's launch and
events) plus a per-extra-group overhead (the fork and join of one more stream), optionally times a
uniform noise of +-``noise``. The lazy DP (``dp/lazy.py``, default ``OpSumBound``) runs on them as it
would on measurements; the table gives the fraction of the space it measured and its rounds. This is the
diagnosis of NASNet's 70 % on the H200: its operators take microseconds, so a stream's overhead, which
the operator-sum bound does not know about, makes every wide parallel stage look cheap until measured.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ios_ray.costs.factory import resolve_cost  # noqa: E402
from ios_ray.costs.measurement import MeasureSettings  # noqa: E402
from ios_ray.dp.lazy import LazyOptions, lazy_solve  # noqa: E402
from ios_ray.dp.solve import solve  # noqa: E402
from ios_ray.models import get_model  # noqa: E402
from ios_ray.space.enumerate import enumerate_graph  # noqa: E402
from ios_ray.space.options import SpaceOptions  # noqa: E402


def synthetic_costs(space, overheads: tuple) -> dict:
    """Every stage's cost: the analytic H200 estimate plus a per-stage and a per-extra-group overhead (ms),
    times a seeded uniform noise of +-``noise`` (``overheads`` = (stage_ms, group_ms, noise))."""
    stage_ms, group_ms, noise = overheads
    specs = list(space.specs.values())
    rnd = random.Random(0)
    out = resolve_cost("analytic:H200").build().measure(specs, 1, MeasureSettings())
    return {m.key: (m.latency_ms + stage_ms + group_ms * (len(s.groups) - 1)) * (1 + noise * rnd.uniform(-1, 1))
            for m, s in zip(out, specs)}


def measured_costs(space, path: str) -> dict:
    """Every stage's cost from a measured table at ``path`` (``key``, ``latency_ms``).

    Raises:
        ValueError: the table lacks stages of the space (measured for another model or settings).
    """
    import pyarrow.parquet as pq
    table = pq.read_table(path, columns=["key", "latency_ms"])
    got = dict(zip(table["key"].to_pylist(), table["latency_ms"].to_pylist()))
    missing = [k for k in space.specs if k not in got]
    if missing:
        raise ValueError(f"{path}: {len(missing):,} of the space's {len(space.specs):,} stages have no cost "
                         f"(another model, batch size or r, s?)")
    return {k: got[k] for k in space.specs}


def bound_ratios(space, costs: dict) -> list:
    """Per number of groups: how many stages, and the least and median ratio of cost to the default bound
    (``OpSumBound`` from the one-op costs) -- where the bound is loose, lazy profiling measures much."""
    import numpy as np

    from ios_ray.dp.lazy import PartOps, _LazyRun
    run_ = _LazyRun(space, lambda keys: {k: costs[k] for k in keys}, {}, LazyOptions())
    ops = [PartOps.of(p) for p in run_.parts]
    singles = [ki[o.single] for ki, o in zip(run_.key_index, ops)]
    run_._measure(np.unique(np.concatenate(singles)))
    run_._bounds(ops, singles)
    cost = np.array([costs[k] for k in run_.keys])
    ratio = cost / np.maximum(run_.bound, 1e-12)
    rows = []
    for extra in np.unique(run_.extra_groups).astype(int):
        pick = run_.extra_groups == extra
        rows.append({"groups": int(extra) + 1, "stages": int(pick.sum()), "min_ratio": float(ratio[pick].min()),
                     "median_ratio": float(np.median(ratio[pick])), "median_ms": float(np.median(cost[pick]))})
    return rows


def run(space, costs: dict, optimum: float, options: LazyOptions = LazyOptions()) -> dict:
    """One lazy solve on ``costs`` with ``options``: what it measured, in what rounds, and its schedule's
    cost against the optimum (``lazy_fill.py`` replays through this too)."""
    t0 = time.perf_counter()
    res = lazy_solve(space, lambda keys: {k: costs[k] for k in keys}, options=options)
    seconds = time.perf_counter() - t0
    report = res.report
    sizes = report.batch_sizes[1:] or (0,)
    return {"stream_factor": options.stream_factor, "tolerance": options.tolerance, "fill": report.fill,
            "known": report.known, "measured": report.measured, "unique_stages": report.unique_stages,
            "fraction": report.fraction, "rounds": report.rounds, "mean_round": sum(sizes) / len(sizes),
            "largest_round": max(sizes), "violations": report.violations,
            "latency": res.solution.total_latency, "vs_optimum": res.solution.total_latency / optimum,
            "seconds": seconds}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="nasnet")
    p.add_argument("--stage-us", default="0,5")
    p.add_argument("--group-us", default="0,3,10")
    p.add_argument("--noise", type=float, default=0.0)
    p.add_argument("--stream-factor", default="0,0.5", help="LazyOptions.stream_factor values to compare")
    p.add_argument("--costs", default=None, help="replay on a measured cost table (Parquet: key, latency_ms)")
    p.add_argument("--tolerance", default="0", help="--costs: LazyOptions.tolerance values to compare too")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lazy_overheads.json"))
    args = p.parse_args()
    space = enumerate_graph(get_model(args.model), SpaceOptions())
    if args.costs:
        return replay(args, space)
    rows = []
    print(f"{'stage us':>9} {'group us':>9} {'noise':>6} {'stream f':>8} {'measured':>16} {'fraction':>9} "
          f"{'rounds':>7} {'violations':>10} {'vs optimum':>10}")
    for s_us in (float(v) for v in args.stage_us.split(",")):
        for g_us in (float(v) for v in args.group_us.split(",")):
            costs = synthetic_costs(space, (s_us / 1e3, g_us / 1e3, args.noise))
            optimum = solve(space, costs).total_latency
            for factor in (float(v) for v in args.stream_factor.split(",")):
                row = {"model": args.model, "stage_us": s_us, "group_us": g_us, "noise": args.noise,
                       **run(space, costs, optimum, LazyOptions(stream_factor=factor))}
                rows.append(row)
                print(f"{s_us:9.1f} {g_us:9.1f} {args.noise:6.2f} {factor:8.2f} {row['known']:>7,} of "
                      f"{row['unique_stages']:>6,} {row['fraction']:9.1%} {row['rounds']:7d} {row['violations']:10d} "
                      f"{row['vs_optimum']:10.4f}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=1))
    print(f"wrote {args.out}")
    return 0


def replay(args, space) -> int:
    """``--costs``: the lazy DP on a measured table, and the cost/bound ratios by group count."""
    costs = measured_costs(space, args.costs)
    optimum = solve(space, costs).total_latency
    ratios = bound_ratios(space, costs)
    print(f"{'groups':>6} {'stages':>7} {'least cost/bound':>16} {'median':>7} {'median ms':>9}")
    for r in ratios:
        print(f"{r['groups']:6d} {r['stages']:7,} {r['min_ratio']:16.3f} {r['median_ratio']:7.3f} {r['median_ms']:9.4f}")
    rows = []
    settings = [(float(f), 0.0) for f in args.stream_factor.split(",")]
    settings += [(0.0, float(t)) for t in args.tolerance.split(",") if float(t) > 0]
    for factor, tolerance in settings:
        row = {"model": args.model, "costs": args.costs,
               **run(space, costs, optimum, LazyOptions(stream_factor=factor, tolerance=tolerance))}
        rows.append(row)
        print(f"stream factor {factor:.2f}, tolerance {tolerance:.2f}: measured {row['known']:,} of {row['unique_stages']:,} ({row['fraction']:.1%}), "
              f"{row['rounds']} rounds, {row['violations']} below their bound, vs optimum {row['vs_optimum']:.4f}, "
              f"lazy_solve {row['seconds']:.1f} s",
              flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "optimum_ms": optimum,
                                          "bound_ratios": ratios, "rows": rows}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How much of a space does lazy profiling measure when stages carry GPU-like fixed overheads? (no device)

    python benchmarks/lazy_overheads.py [--model nasnet] [--stage-us 0,5] [--group-us 0,3,10] [--noise 0]

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


def run(space, costs: dict, stream_factor: float, optimum: float) -> dict:
    """One lazy solve on ``costs``: what it measured, and its schedule's cost against the optimum."""
    t0 = time.perf_counter()
    res = lazy_solve(space, lambda keys: {k: costs[k] for k in keys}, options=LazyOptions(stream_factor=stream_factor))
    report = res.report
    return {"stream_factor": stream_factor, "known": report.known, "unique_stages": report.unique_stages,
            "fraction": report.fraction, "rounds": report.rounds, "violations": report.violations,
            "latency": res.solution.total_latency, "vs_optimum": res.solution.total_latency / optimum,
            "seconds": time.perf_counter() - t0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="nasnet")
    p.add_argument("--stage-us", default="0,5")
    p.add_argument("--group-us", default="0,3,10")
    p.add_argument("--noise", type=float, default=0.0)
    p.add_argument("--stream-factor", default="0,0.5", help="LazyOptions.stream_factor values to compare")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lazy_overheads.json"))
    args = p.parse_args()
    space = enumerate_graph(get_model(args.model), SpaceOptions())
    rows = []
    print(f"{'stage us':>9} {'group us':>9} {'noise':>6} {'stream f':>8} {'measured':>16} {'fraction':>9} "
          f"{'rounds':>7} {'violations':>10} {'vs optimum':>10}")
    for s_us in (float(v) for v in args.stage_us.split(",")):
        for g_us in (float(v) for v in args.group_us.split(",")):
            costs = synthetic_costs(space, (s_us / 1e3, g_us / 1e3, args.noise))
            optimum = solve(space, costs).total_latency
            for factor in (float(v) for v in args.stream_factor.split(",")):
                row = {"model": args.model, "stage_us": s_us, "group_us": g_us, "noise": args.noise,
                       **run(space, costs, factor, optimum)}
                rows.append(row)
                print(f"{s_us:9.1f} {g_us:9.1f} {args.noise:6.2f} {factor:8.2f} {row['known']:>7,} of "
                      f"{row['unique_stages']:>6,} {row['fraction']:9.1%} {row['rounds']:7d} {row['violations']:10d} "
                      f"{row['vs_optimum']:10.4f}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

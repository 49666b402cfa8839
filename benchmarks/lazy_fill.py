"""Lazy profiling's rounds against its fill, replayed on measured cost tables (no device).

    python benchmarks/lazy_fill.py                                   # NASNet and RandWire, H200 fp32 tables
    python benchmarks/lazy_fill.py --tables nasnet:benchmarks/results/nasnet_h200_fp32_stage_costs.parquet \\
                                   --fills 0,0.5,2

``LazyOptions.fill`` sends, with each part's optimal path, its unknown stages whose cheapest schedule costs
least (``fill`` per 1,000 of the part's transitions). For each table (every stage of the model's space
measured on one H200: ``optimize_cost.py --profiling exhaustive --export-costs``) and fill, the lazy DP runs
on the table's costs as it would on the device: the stages it measured, its rounds, the DP's own seconds on
this machine, and its schedule's cost against the exhaustive optimum. ``projected_s`` is a projection, not a
measurement: ``stages x --stage-ms + rounds x --round-ms + seconds`` (the lazy DP's own; defaults: the
H200's 2.37 ms a stage with 3 actors from RandWire's exhaustive run, and 6 ms a round: what is left of RandWire's unfilled cold run,
471 s for 91,025 stages in 24,251 rounds, after its stages and its 99 s of DP), to pick a default by; the
device's own figures come from ``optimize_cost.py``. Results: a table on stdout and
``benchmarks/results/lazy_fill.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ios_ray.dp.lazy import LazyOptions  # noqa: E402
from ios_ray.dp.solve import solve  # noqa: E402
from ios_ray.models import get_model  # noqa: E402
from ios_ray.space.enumerate import enumerate_graph  # noqa: E402
from ios_ray.space.options import SpaceOptions  # noqa: E402
from lazy_overheads import measured_costs, run  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TABLES = (f"nasnet:{RESULTS / 'nasnet_h200_fp32_stage_costs.parquet'},"
          f"randwire:{RESULTS / 'randwire_h200_fp32_stage_costs.parquet'}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tables", default=TABLES, help="model:parquet pairs, comma separated")
    p.add_argument("--fills", default="0,0.1,0.5,2", help="LazyOptions.fill values")
    p.add_argument("--stage-ms", type=float, default=2.37, help="projection: device ms per stage measured")
    p.add_argument("--round-ms", type=float, default=6.0, help="projection: a round's fixed ms")
    p.add_argument("--out", default=str(RESULTS / "lazy_fill.json"))
    args = p.parse_args(argv)
    fills = [float(f) for f in args.fills.split(",") if f.strip()]
    rows = []
    print(f"{'model':<9} {'fill':>5} {'measured':>17} {'rounds':>7} {'mean':>7} {'largest':>7} {'dp s':>6} "
          f"{'vs optimum':>10} {'projected s':>11}")
    for pair in args.tables.split(","):
        model, _, path = pair.partition(":")
        space = enumerate_graph(get_model(model), SpaceOptions())
        costs = measured_costs(space, path)
        optimum = solve(space, costs).total_latency
        for fill in fills:
            row = {"model": model, "table": str(Path(path).name), **run(space, costs, optimum, LazyOptions(fill=fill))}
            row["projected_s"] = (row["measured"] * args.stage_ms + row["rounds"] * args.round_ms) / 1e3 + row["seconds"]
            rows.append(row)
            print(f"{model:<9} {fill:5g} {row['measured']:>7,} of {row['unique_stages']:>7,} {row['rounds']:7,} "
                  f"{row['mean_round']:7.1f} {row['largest_round']:7,} {row['seconds']:6.1f} {row['vs_optimum']:10.5f} "
                  f"{row['projected_s']:11.1f}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(["lazy_fill.py"] + (argv if argv is not None else sys.argv[1:])),
                               "stage_ms": args.stage_ms, "round_ms": args.round_ms, "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

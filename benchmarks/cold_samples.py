"""What cold stage timing costs per stage, and how few samples keep its figures: one GPU, one process.

    python benchmarks/cold_samples.py [--model nasnet] [--stages 1000] [--out cold_samples.json]

Draws ``--stages`` of the model's stages (a fixed seed) and measures them all under each variant: warm
(back-to-back replays), and cold (``ColdL2``: flush, inputs read, single replays) with its stopping rule
as shipped and with looser ones (``stable_fraction``, ``max_samples``) or a smaller flush. Per variant:
wall ms a stage, mean samples a stage, and the sum of the stage latencies against the shipped cold
rule's sum (how much a looser rule moves what the DP adds up). Results: a table and
``benchmarks/results/cold_samples_<model>.json`` (copied under ``$OUT``).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from outputs import copy_to_out  # noqa: E402

# (label, l2, min_samples, stable_fraction, max_samples, flush in L2 sizes (None: ColdL2's default))
VARIANTS = [("warm", "warm", None, None, None, None),
            ("cold (shipped)", "cold", None, 0.01, None, None),
            ("cold >= 9 samples", "cold", 9, 0.01, None, None),
            ("cold 3%, <= 9", "cold", 5, 0.03, 9, None),
            ("cold, 1x L2 flush", "cold", None, 0.01, None, 1.0)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="nasnet")
    p.add_argument("--stages", type=int, default=1000)
    p.add_argument("--math", default="fp32", choices=("fp32", "tf32"))
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    from ios_ray.costs.measurement import MeasureSettings
    from ios_ray.models import get_model
    from ios_ray.profile.gpu import GpuProfiler
    from ios_ray.space.enumerate import enumerate_graph
    from ios_ray.space.options import SpaceOptions

    g = get_model(args.model)
    t0 = time.perf_counter()
    space = enumerate_graph(g, SpaceOptions())
    keys = sorted(space.specs.keys())
    chosen = random.Random(0).sample(keys, min(args.stages, len(keys)))
    specs = [space.specs[k] for k in chosen]
    print(f"{args.model}: {len(keys)} stages, {len(specs)} drawn ({time.perf_counter() - t0:.1f} s)", flush=True)
    profiler = GpuProfiler(0, tf32=args.math == "tf32")
    settings = MeasureSettings(2, 6, 6)   # optimize's defaults
    profiler.measure(specs[:50], 1, settings)   # plans built, kernels loaded: every variant starts warm
    rows = []
    from ios_ray.runtime.gpu.program import COLD_MIN_SAMPLES
    for label, l2, least, fraction, cap, flush in VARIANTS:
        profiler.l2 = l2
        profiler.flush_bytes = None if flush is None else int(flush * profiler.l2_bytes())
        if l2 == "cold":
            timer = profiler._cold_timer()   # noqa: SLF001 -- the stopping rule under test
            timer.stable_fraction, timer.max_samples = fraction, cap
            timer.min_samples = COLD_MIN_SAMPLES if least is None else least
        t0 = time.perf_counter()
        got = profiler.measure(specs, 1, settings)
        wall = time.perf_counter() - t0
        ok = [m for m in got if not m.error.value]
        rows.append({"variant": label, "ms_per_stage": wall * 1e3 / len(specs),
                     "samples_per_stage": float(np.mean([m.samples for m in ok])),
                     "sum_ms": float(sum(m.latency_ms for m in ok)), "errors": len(got) - len(ok),
                     "latencies": {m.key[:16]: m.latency_ms for m in ok}})
        print(f"{label:22s} {rows[-1]['ms_per_stage']:7.2f} ms/stage {rows[-1]['samples_per_stage']:5.1f} samples "
              f"sum {rows[-1]['sum_ms']:9.3f} ms", flush=True)
    ref = rows[1]
    for r in rows:
        common = [k for k in r["latencies"] if k in ref["latencies"]]
        ratios = np.array([r["latencies"][k] / ref["latencies"][k] for k in common])
        r["sum_vs_shipped_cold"] = r["sum_ms"] / ref["sum_ms"]
        r["stage_ratio_p10_p50_p90"] = [float(x) for x in np.percentile(ratios, [10, 50, 90])]
    for r in rows:
        del r["latencies"]
    print(f"{'variant':22s} {'ms/stage':>9s} {'samples':>8s} {'sum/shipped':>12s}  stage ratio p10/p50/p90")
    for r in rows:
        q = r["stage_ratio_p10_p50_p90"]
        print(f"{r['variant']:22s} {r['ms_per_stage']:9.2f} {r['samples_per_stage']:8.1f} "
              f"{r['sum_vs_shipped_cold']:12.3f}  {q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f}")
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"cold_samples_{args.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "math": args.math, "stages": len(specs), "rows": rows}, indent=1))
    copy_to_out(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

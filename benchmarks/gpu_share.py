"""Several profiling actors on one GPU: stages per second, and whether their timings still agree.

A GPU profiler spends much of a stage on the host (building, lowering, capturing) and the rest running
it; actors sharing a GPU (``GpuRecipe(workers_per_gpu=k)``) overlap the host parts and take turns on
the device under one lock per GPU (``runtime.gpu.lock``). This measures, on ``--stages`` stages drawn
at random (seeded) from ``--model``'s space at r, s:

- ``in-process``: one ``GpuProfiler`` in this process (``optimize``'s default), four passes alternating
  the warm timing protocols: single replays (the default) and the original IOS's repeats of ``number``
  replays; the first pass builds the cuDNN plans as a cold run does, the last two re-measure (the noise
  floor of the agreement columns);
- ``k`` for each ``--shares`` value: a Ray pool of ``k`` actors on the one GPU (actors started before the
  clock starts), every stage measured once;
- ``k, lock off`` (``--unlocked k``): the same with ``IOS_RAY_GPU_LOCK=off`` in a fresh Ray instance,
  showing what the lock prevents.

Agreement with the in-process first pass (single replays) and second (repeats), per stage: the median and 90th percentile of |ratio - 1|, and
the ratio of the sums. Output: a table, and ``benchmarks/results/gpu_share_<model>_<math>.json`` (and
under ``$OUT`` when set).

    python benchmarks/gpu_share.py --model nasnet --stages 3000 --shares 1,2,3 --unlocked 3
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ios_ray.costs.factory import GpuRecipe
from ios_ray.costs.measurement import MeasureSettings
from ios_ray.models import get_model
from ios_ray.space.enumerate import enumerate_graph
from ios_ray.space.options import SpaceOptions
from outputs import copy_to_out  # noqa: E402  (benchmarks/ is on the path: this file's folder)

RESULTS = Path(__file__).resolve().parent / "results"


def agreement(lat: Dict[str, float], ref: Dict[str, float]) -> Dict[str, float]:
    """Per-stage |ratio - 1| (median, 90th percentile, max) and the ratio of sums, over stages both timed."""
    keys = [k for k in ref if np.isfinite(ref[k]) and np.isfinite(lat.get(k, np.nan)) and ref[k] > 0]
    if not keys:
        return {"stages_compared": 0}
    dev = np.abs(np.array([lat[k] / ref[k] for k in keys]) - 1.0)
    return {"stages_compared": len(keys), "median_abs_dev": float(np.median(dev)),
            "p90_abs_dev": float(np.percentile(dev, 90)), "max_abs_dev": float(dev.max()),
            "sum_ratio": float(sum(lat[k] for k in keys) / sum(ref[k] for k in keys))}


def sample_specs(model: str, r: int, s: int, count: int, seed: int):
    """``count`` stage specs of ``model``'s space, drawn at random (seeded), and the space's size."""
    space = enumerate_graph(get_model(model), SpaceOptions(max_group_size=r, max_num_groups=s))
    keys = sorted(space.specs)
    picked = random.Random(seed).sample(keys, min(count, len(keys)))
    return {k: space.specs[k] for k in picked}, len(keys)


def in_process(specs, tf32: bool, settings: MeasureSettings) -> List[Dict]:
    """Four passes of one in-process profiler over ``specs``, alternating the warm timing protocols
    (single replays, the default, and the original's repeats): rows with the latencies by key. The first
    pass builds the cuDNN plans, as a cold run does; the third and fourth re-measure (the noise floor)."""
    from ios_ray.profile.gpu import TIMING_REPEATS, TIMING_REPLAYS, GpuProfiler
    prof = GpuProfiler(0, tf32=tf32)
    rows = []
    for label, timing in (("in-process, replays", TIMING_REPLAYS), ("in-process, repeats", TIMING_REPEATS),
                          ("in-process, replays, again", TIMING_REPLAYS),
                          ("in-process, repeats, again", TIMING_REPEATS)):
        prof.timing = timing
        held0 = prof.lock.held_s
        samples: Dict[str, List[float]] = {}
        t0 = time.perf_counter()
        for key, spec in specs.items():   # what ``measure`` does, keeping every sample
            try:
                samples[key] = [float(x) for x in prof.time_stage(spec.build(), 1, settings)]
            except Exception:  # noqa: BLE001 -- counted as an error, as ``measure`` would
                samples[key] = []
        wall = time.perf_counter() - t0
        rows.append({"config": label, "workers": 0, "wall_s": wall, "eager_runs": prof.eager_runs,
                     "device_share": (prof.lock.held_s - held0) / wall,
                     "mean_samples": float(np.mean([len(v) for v in samples.values()])),
                     "latency": {k: float(np.median(v)) if v else float("nan") for k, v in samples.items()},
                     "samples": samples, "errors": sum(not v for v in samples.values())})
    return rows


def pooled(specs, tf32: bool, k: int, settings: MeasureSettings, label: str) -> Dict:
    """``specs`` measured once by a Ray pool of ``k`` actors sharing the GPU."""
    from ios_ray.distributed import ProfilerPool
    with ProfilerPool(k, GpuRecipe(tf32=tf32, workers_per_gpu=k)) as pool:
        t0 = time.perf_counter()
        pool.actor_handles()   # every actor up (CUDA, cuDNN) before the clock starts
        start_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        results, report = pool.measure(specs, 1, settings)
        wall = time.perf_counter() - t0
    return {"config": label, "workers": k, "wall_s": wall, "actor_start_s": start_s,
            "latency": {key: results[key].latency_ms for key in specs},
            "errors": report.errors, "per_worker": dict(report.per_worker)}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="nasnet")
    p.add_argument("--stages", type=int, default=3000)
    p.add_argument("--shares", default="1,2,3", help="actors per GPU to try")
    p.add_argument("--unlocked", type=int, default=0, help="also this many actors with the lock off (0: skip)")
    p.add_argument("--math", choices=["fp32", "tf32"], default="fp32")
    p.add_argument("-r", type=int, default=3)
    p.add_argument("-s", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument("--samples", default=None, help="also write every in-process sample to this JSON file")
    args = p.parse_args(argv)
    import ray

    from ios_ray.distributed import connect
    from ios_ray.runtime.gpu.lock import LOCK_ENV
    tf32 = args.math == "tf32"
    settings = MeasureSettings()   # optimize()'s defaults: warmup 2, number 6, repeat up to 6
    t0 = time.perf_counter()
    specs, space_size = sample_specs(args.model, args.r, args.s, args.stages, args.seed)
    print(f"{args.model}: {len(specs)} of {space_size} stages drawn ({time.perf_counter() - t0:.1f} s)", flush=True)
    rows = in_process(specs, tf32, settings)
    ref = rows[0]["latency"]
    for k in [int(x) for x in args.shares.split(",") if x]:
        connect()
        rows.append(pooled(specs, tf32, k, settings, f"{k} per GPU"))
        print(f"  {rows[-1]['config']}: {rows[-1]['wall_s']:.1f} s", flush=True)
    if args.unlocked:
        ray.shutdown()
        os.environ[LOCK_ENV] = "off"   # the local instance's workers inherit it
        try:
            connect()
            rows.append(pooled(specs, tf32, args.unlocked, settings, f"{args.unlocked} per GPU, lock off"))
        finally:
            ray.shutdown()
            os.environ.pop(LOCK_ENV, None)
    base = rows[1]["wall_s"]   # the original's protocol in this process: what profiling cost before
    old = rows[1]["latency"]
    print(f"\n{'config':<30}{'wall s':>8}{'ms/stage':>10}{'speedup':>9}  vs replays: med/p90 |dev|, sum"
          f"   vs repeats: med/p90 |dev|, sum")
    for row in rows:
        row["vs_replays"] = agreement(row["latency"], ref) if row is not rows[0] else None
        row["vs_repeats"] = agreement(row["latency"], old) if row is not rows[1] else None
        row["ms_per_stage"] = 1e3 * row["wall_s"] / len(specs)
        row["speedup"] = base / row["wall_s"]

        def cols(a):
            return f"{'-':>24}" if a is None else \
                f"{a['median_abs_dev']:>8.4f}{a['p90_abs_dev']:>8.4f}{a['sum_ratio']:>8.4f}"
        print(f"{row['config']:<30}{row['wall_s']:>8.2f}{row['ms_per_stage']:>10.2f}{row['speedup']:>8.2f}x"
              f"  {cols(row['vs_replays'])}   {cols(row['vs_repeats'])}  errors {row['errors']}")
    out = Path(args.out or RESULTS / f"gpu_share_{args.model}_{args.math}.json")
    doc = {"model": args.model, "math": args.math, "r": args.r, "s": args.s, "stages": len(specs),
           "space_stages": space_size, "seed": args.seed, "settings": [settings.warmup, settings.number,
                                                                       settings.repeat],
           "host": platform.node(), "cpus": os.cpu_count(), "python": sys.version.split()[0],
           "median_stage_ms": statistics.median(v for v in ref.values() if np.isfinite(v)),
           "rows": [{k: v for k, v in row.items() if k not in ("latency", "samples")} for row in rows]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    if args.samples:   # every in-process sample and each stage's shape, for a closer look
        stages = {k: {"groups": [len(g) for g in spec.groups], "strategy": spec.strategy.value}
                  for k, spec in specs.items()}
        Path(args.samples).write_text(json.dumps({"stages": stages, "passes": {
            row["config"]: row["samples"] for row in rows if "samples" in row}}))
    copy_to_out(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

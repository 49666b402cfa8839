"""Host cost of a cuDNN execute, operands by dict vs by position (``tensor_uids``), and what it does to
profiling: one GPU, two child processes per mode, the same stages.

    python benchmarks/cudnn_execute.py [--model nasnet] [--stages 400] [--calls 3000] [--out FILE]

Per mode (``dict``: ``IOS_RAY_CUDNN_DICT_EXECUTE=1``; ``ordered``: the default), a fresh process
  1. executes one conv (1x672x11x11, 1x1 conv, fused bias) ``--calls`` times and reports host us per call,
     and checks the output against the other mode's (the same weights, inputs: bit-identical expected);
  2. profiles the first ``--stages`` stages of the model's space (r=3, s=8) with ``GpuProfiler`` and
     reports ms per stage (wall) and the median stage latency (the GPU's time must not move).
Prints a table and writes JSON (``benchmarks/results/cudnn_execute.json`` or ``--out``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def child(model: str, stages: int, calls: int) -> dict:
    """One mode's figures, in this process (the mode comes from the environment)."""
    import cupy
    import numpy as np

    from ios_ray.costs.measurement import MeasureSettings
    from ios_ray.models import get_model
    from ios_ray.profile.gpu import GpuProfiler
    from ios_ray.runtime.gpu.conv import ConvKey
    from ios_ray.space.enumerate import enumerate_graph
    from ios_ray.space.options import SpaceOptions

    prof = GpuProfiler(engines="/tmp/ios_ray_cudnn_execute_engines")
    ctx = prof.ctx
    with ctx.device:
        rng = cupy.random.default_rng(0)
        x = rng.standard_normal((1, 672, 11, 11), dtype=cupy.float32)
        w = rng.standard_normal((672, 672, 1, 1), dtype=cupy.float32) * 0.05
        b = rng.standard_normal((672,), dtype=cupy.float32)
        y = cupy.zeros((1, 672, 11, 11), dtype=cupy.float32)
        key = ConvKey(1, 672, 11, 11, 672 * 121, 672, 1, 1, (1, 1), (0, 0), 1, 672 * 121, "relu")
        cg = ctx.conv_plans.get(key)
        ws = cupy.empty(max(1, cg.workspace_size), dtype=cupy.uint8)
        handle = ctx.handles[0]
        with ctx.main_stream:
            cg.execute(x.data.ptr, w.data.ptr, b.data.ptr, y.data.ptr, ws.data.ptr, handle)
            ctx.main_stream.synchronize()
            t0 = time.perf_counter()
            for _ in range(calls):
                cg.execute(x.data.ptr, w.data.ptr, b.data.ptr, y.data.ptr, ws.data.ptr, handle)
            host_us = (time.perf_counter() - t0) / calls * 1e6
            ctx.main_stream.synchronize()
        out = cupy.asnumpy(y)
    space = enumerate_graph(get_model(model), SpaceOptions())
    specs = [space.specs[k] for k in list(space.specs)[:stages]]
    prof.measure(specs[:20], 1, MeasureSettings())            # plans built, kernels loaded: not timed
    t0 = time.perf_counter()
    ms = prof.measure(specs, 1, MeasureSettings())
    wall = time.perf_counter() - t0
    lat = [m.latency_ms for m in ms if math.isfinite(m.cost)]
    return {"ordered": bool(cg.ordered), "host_us_per_execute": host_us, "stages": len(specs),
            "ms_per_stage": wall / len(specs) * 1e3, "median_stage_ms": float(np.median(lat)),
            "errors": sum(not math.isfinite(m.cost) for m in ms), "checksum": float(np.abs(out).sum()),
            "output": out.ravel()[:64].tolist()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="nasnet")
    p.add_argument("--stages", type=int, default=400)
    p.add_argument("--calls", type=int, default=3000)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cudnn_execute.json"))
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.model, args.stages, args.calls)))
        return 0
    rows = []
    for mode in ("dict", "ordered", "dict", "ordered"):
        env = {**os.environ, "IOS_RAY_CUDNN_DICT_EXECUTE": "1" if mode == "dict" else "0"}
        got = subprocess.run([sys.executable, __file__, "--child", "--model", args.model, "--stages",
                              str(args.stages), "--calls", str(args.calls)], env=env, capture_output=True,
                             text=True, check=False)
        if got.returncode:
            print(got.stderr[-3000:])
            return 1
        rows.append({"mode": mode, **json.loads(got.stdout.strip().splitlines()[-1])})
    same = all(r["output"] == rows[0]["output"] for r in rows)
    print(f"{'mode':8} {'positional':>10} {'host us/execute':>15} {'ms/stage':>9} {'median stage ms':>15} {'errors':>6}")
    for r in rows:
        print(f"{r['mode']:8} {str(r['ordered']):>10} {r['host_us_per_execute']:15.1f} {r['ms_per_stage']:9.2f} "
              f"{r['median_stage_ms']:15.4f} {r['errors']:6d}")
    print(f"conv outputs identical across modes: {same}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "model": args.model,
                                          "outputs_identical": same, "rows": rows}, indent=1))
    print(f"wrote {args.out}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

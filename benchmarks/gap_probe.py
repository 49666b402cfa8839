"""Where do isolated stage costs and whole-graph latency part ways? One GPU, evidence for the README.

    python benchmarks/gap_probe.py [--model inception_v3] [--math fp32] [--procs 3] [--out gap_probe.json]

The parent process runs ``--procs`` child processes, each of which, for the Sequential schedule:

* W       whole-graph latency (the executor's one CUDA graph);
* S_same  the same program's stages, each captured as its own graph and replayed alone, summed
          (same buffers, same cuDNN plans: differs from W only by what replaying in isolation changes);
* S_cold  as S_same, but the L2 cache is flushed before every timed replay;
* S_prof  the profiler's figure: each stage as the DP sees it (its own program and buffers), summed;
* the cuDNN plan chosen for every conv signature, by the executor and by the profiler.

Comparing plans across processes shows whether autotuning picks different engines per process;
W / S_same / S_cold / S_prof show what warm L2, launch gaps and plan choice each contribute.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _plans(ctx) -> dict:
    return {repr(k): cg.plan_name for k, cg in ctx.conv_plans._cache.items()}  # noqa: SLF001


def _cold_times(graph, stream, flush, number: int) -> list:
    """Per-replay ms with the L2 flushed (a 256 MiB write) before each replay."""
    return _ctx_times(graph, stream, flush, (), number)


def _ctx_times(graph, stream, flush, inputs, number: int) -> list:
    """Per-replay ms with the L2 flushed, then the stage's inputs read (as the previous stage left them)."""
    import cupy
    pairs = []
    for i in range(number):
        with stream:
            flush.fill(i & 1)
            for a in inputs:
                a.sum()
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record(stream)
        graph.launch(stream)
        end.record(stream)
        pairs.append((start, end))
    stream.synchronize()
    return [cupy.cuda.get_elapsed_time(s, e) for s, e in pairs]


def _stage_inputs(program, stage) -> list:
    """The storages the stage's nodes read that it does not write itself."""
    inside = {id(n) for g in stage for n in g}
    idx = []
    for g in stage:
        for n in g:
            for term in n.inputs:
                for v in term:
                    if id(v.node) not in inside:
                        s = program.plan.loc(v.node).storage
                        if s not in idx:
                            idx.append(s)
    return [program.storages[s] for s in idx]


def _in_context(ex, main, replays: int = 15) -> list:
    """Per-stage ms inside the whole captured graph: events recorded between stages during capture."""
    import cupy
    from cuda.bindings import runtime as cudart
    prog = ex.program
    events = [cupy.cuda.Event() for _ in range(ex.num_stages + 1)]

    def record(ev):  # an event record node in the graph (plain cudaEventRecord only orders the capture)
        err, = cudart.cudaEventRecordWithFlags(ev.ptr, main.ptr, cudart.cudaEventRecordExternal)
        assert int(err) == 0, err
    main.begin_capture()
    try:
        record(events[0])
        for i in range(ex.num_stages):
            prog.enqueue([i])
            record(events[i + 1])
    finally:
        g = main.end_capture()
    g.upload(main)
    per = []
    for r in range(replays):
        g.launch(main)
        main.synchronize()
        per.append([cupy.cuda.get_elapsed_time(events[i], events[i + 1]) for i in range(ex.num_stages)])
    return np.median(np.array(per[3:]), axis=0).tolist()


def _diff_times(prog, i, stream, flush, number: int) -> float:
    """Stage ``i`` in context: median of T(flush; touch inputs + stage) - median of T(flush; touch inputs).

    ``touch`` rewrites the stage's inputs in place (x *= 1), leaving them dirty in L2 as their producers
    would; the stage's launch overlaps the touch kernels, as it overlaps the previous stage in the graph.
    """
    import cupy
    inputs = _stage_inputs(prog, prog.stages[i])
    one = cupy.float32(1)

    def capture(with_stage: bool):
        stream.begin_capture()
        try:
            for a in inputs:
                a *= one
            if with_stage:
                prog.enqueue([i])
        finally:
            g = stream.end_capture()
        g.upload(stream)
        return g

    both, touch = capture(True), capture(False)

    def timed(g):
        out = []
        for r in range(number):
            flush.sum()
            start, end = cupy.cuda.Event(), cupy.cuda.Event()
            start.record(stream)
            g.launch(stream)
            end.record(stream)
            out.append((start, end))
        stream.synchronize()
        return float(np.median([cupy.cuda.get_elapsed_time(s, e) for s, e in out]))
    with stream:
        return timed(both) - timed(touch)


def _graph_tune(self, g, key, x, w, b, y, max_plans: int = 8):
    """Candidate plans timed as captured CUDA graphs (host overhead excluded), fastest index."""
    import cupy
    from ios_ray.runtime.gpu.conv import import_cudnn
    count = int(g.get_execution_plan_count())
    oh, ow = key.out_hw
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        xs = cupy.random.default_rng(0).standard_normal((key.n - 1) * key.x_bstride + key.c * key.h * key.w,
                                                        dtype=cupy.float32)
        ws = cupy.random.default_rng(1).standard_normal(key.k * (key.c // key.groups) * key.kh * key.kw,
                                                        dtype=cupy.float32)
        bs = cupy.zeros(key.k, dtype=cupy.float32)
        ys = cupy.empty((key.n - 1) * key.y_bstride + key.k * oh * ow, dtype=cupy.float32)
    pack = {x.get_uid(): xs.data.ptr, w.get_uid(): ws.data.ptr, y.get_uid(): ys.data.ptr}
    if b is not None:
        pack[b.get_uid()] = bs.data.ptr
    cudnn = import_cudnn()
    cudnn.set_stream(self.handle, stream.ptr)
    best, best_ms, tried = None, float("inf"), 0
    try:
        for i in range(count):
            if tried >= max_plans:
                break
            try:
                g.build_plan_at_index(i)
                size = int(g.get_workspace_size_plan_at_index(i))
            except Exception:
                continue
            tried += 1
            try:
                with stream:
                    scratch = cupy.empty(max(size, 1), dtype=cupy.uint8)
                ptr = scratch.data.ptr if size else None
                g.execute_plan_at_index(pack, ptr, index=i, handle=self.handle)
                stream.begin_capture()
                try:
                    for _ in range(10):
                        g.execute_plan_at_index(pack, ptr, index=i, handle=self.handle)
                finally:
                    cg = stream.end_capture()
                cg.upload(stream)
                cg.launch(stream)
                times = []
                for _ in range(5):
                    start, end = cupy.cuda.Event(), cupy.cuda.Event()
                    start.record(stream)
                    cg.launch(stream)
                    end.record(stream)
                    end.synchronize()
                    times.append(cupy.cuda.get_elapsed_time(start, end) / 10)
                ms = float(np.median(times))
            except Exception:
                continue
            if ms < best_ms:
                best, best_ms = i, ms
    finally:
        stream.synchronize()
        cudnn.set_stream(self.handle, 0)
    return best


def child(model: str, math: str, autotune: bool, batch: int, schedule: str) -> dict:
    import cupy

    from ios_ray.costs.measurement import MeasureSettings
    from ios_ray.models import get_model
    from ios_ray.profile.gpu import GpuProfiler
    from ios_ray.runtime.gpu.executor import GpuExecutor
    from ios_ray.runtime.gpu.program import time_graph
    from ios_ray.space.stage import stage_spec

    tf32 = math == "tf32"
    if os.environ.get("PROBE_PACKED"):   # cuDNN writers never placed inside concat buffers
        from ios_ray.graph.ir import Conv, SepConv
        from ios_ray.runtime.gpu import plan as plan_mod
        orig = plan_mod._placements

        def packed(order, fed):
            by_id = {id(n): n for n in order}
            return {k: v for k, v in orig(order, fed).items() if not isinstance(by_id.get(k), (Conv, SepConv))}
        plan_mod._placements = packed
    if autotune == "gtune":
        from ios_ray.runtime.gpu.conv import ConvPlans
        ConvPlans._tune = _graph_tune
    autotune = autotune in ("tune", "gtune")
    graph = get_model(model)
    graph.init_weights(0)
    graph.sequential_schedule() if schedule == "sequential" else graph.greedy_schedule()
    t0 = time.perf_counter()
    from ios_ray.runtime.gpu.context import GpuContext
    ex = GpuExecutor(graph, batch, context=GpuContext(0, tf32=tf32, autotune=autotune))
    main = ex.ctx.main_stream
    with ex.ctx.device:
        whole = ex.latency(warmup=10, number=20, repeat=15)[0]
        stage_graphs = [ex.program.capture([i]) for i in range(ex.num_stages)]
        same = [float(np.median(time_graph(g, main, 5, 20, 7))) for g in stage_graphs]
        flush = cupy.empty(256 << 20, dtype=cupy.uint8)
        cold = [float(np.median(_cold_times(g, main, flush, 40))) for g in stage_graphs]
        ctxt = [float(np.median(_ctx_times(g, main, flush, _stage_inputs(ex.program, st), 40)))
                for g, st in zip(stage_graphs, ex.program.stages)]
        incontext = _in_context(ex, main)
        with main:
            rflush = cupy.ones(128 << 20, dtype=cupy.float32)   # 512 MiB, read before each replay
        diff = [_diff_times(ex.program, i, main, rflush, 30) for i in range(ex.num_stages)]
    exec_plans = _plans(ex.ctx)
    prof = GpuProfiler(tf32=tf32, autotune=autotune)
    specs = [stage_spec(stage_nodes(b, s)) for b in graph.blocks for s in b.stages]
    ms = prof.measure(specs, batch, MeasureSettings(warmup=2, number=6, repeat=6))
    prof_plans = _plans(prof.ctx)
    return {"pid": os.getpid(), "autotune": autotune, "whole_ms": float(np.median(whole)),
            "whole_spread": float(max(whole) - min(whole)), "sum_same_ms": float(sum(same)),
            "sum_cold_ms": float(sum(cold)), "sum_ctx_ms": float(sum(ctxt)), "sum_prof_ms": float(sum(m.latency_ms for m in ms)),
            "per_stage": {"same": same, "ctx": ctxt, "cold": cold, "in_graph": incontext, "diff": diff,
                          "prof": [m.latency_ms for m in ms],
                          "names": [" ".join(n for g in s.groups for n in g) for b in graph.blocks for s in b.stages]},
            "sum_in_graph_ms": float(sum(incontext)), "sum_diff_ms": float(sum(diff)),
            "stages": len(same), "exec_plans": exec_plans, "prof_plans": prof_plans,
            "seconds": time.perf_counter() - t0}


def stage_nodes(block, stage):
    by_name = {n.name: n for n in block.nodes}
    return [[by_name[n] for n in g] for g in stage.groups]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="inception_v3")
    ap.add_argument("--math", default="fp32", choices=["fp32", "tf32"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--procs", type=int, default=3)
    ap.add_argument("--gtune", type=int, default=0)
    ap.add_argument("--schedule", default="sequential", choices=["sequential", "greedy"])
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default="gap_probe.json")
    ns = ap.parse_args()
    if ns.child is not None:
        print(json.dumps(child(ns.model, ns.math, ns.child, ns.batch, ns.schedule)))
        return 0
    runs = []
    for mode in ["tune"] * ns.procs + ["heur"] * 2 + ["gtune"] * ns.gtune:
        if ns.procs == 0 and mode == "tune":
            continue
        cmd = [sys.executable, __file__, "--model", ns.model, "--math", ns.math, "--batch", str(ns.batch),
               "--schedule", ns.schedule, "--child", mode]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            print(res.stderr[-3000:], file=sys.stderr)
            continue
        run = json.loads(res.stdout.strip().splitlines()[-1])
        runs.append(run)
        print(f"{mode}: whole {run['whole_ms']:.3f}  same-stages {run['sum_same_ms']:.3f}  cold-stages "
              f"{run['sum_cold_ms']:.3f}  ctx-stages {run['sum_ctx_ms']:.3f}  in-graph {run['sum_in_graph_ms']:.3f}  diff {run['sum_diff_ms']:.3f}  profiler {run['sum_prof_ms']:.3f} ms  ({run['seconds']:.0f}s)", flush=True)
    tuned = [r for r in runs if r["autotune"]]
    if len(tuned) >= 2:
        a = tuned[0]["exec_plans"]
        for r in tuned[1:]:
            diff = sum(1 for k in a if r["exec_plans"].get(k) != a[k])
            print(f"executor plans differing between process 1 and pid {r['pid']}: {diff} of {len(a)}")
        for r in tuned:
            e, p = r["exec_plans"], r["prof_plans"]
            print(f"pid {r['pid']}: executor conv keys {len(e)}, profiler conv keys {len(p)}, shared keys "
                  f"{len(set(e) & set(p))}, plan names used by executor {len(set(e.values()))}")
    Path(ns.out).write_text(json.dumps({"model": ns.model, "math": ns.math, "batch": ns.batch, "schedule": ns.schedule, "runs": runs},
                                       indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

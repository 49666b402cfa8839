"""Where a GPU profiler's time per stage goes, alone and with other profiling processes on the same GPU.

``gpu_share.py`` showed that three actors on one H200 measure NASNet's stages at 2.6-2.7 ms each while
one in-process profiler holds the GPU's lock for only ~1.2-1.5 ms a stage: the lock is not what limits
them. This splits each stage's wall time into its phases, in ``--procs`` plain processes (no Ray)
profiling disjoint shares of the same ``--stages`` stages of ``--model`` (drawn as ``gpu_share.py``
draws them), each with one ``GpuProfiler``:

- ``build``: the stage's nodes from its spec (host); ``setup``: ``Program`` (buffers, lowering, cuDNN
  plans, its set-up's device section); ``capture``: the CUDA graph captured (host);
- ``first launch``: the host time of the first replay (it uploads the graph), ``launches``: the host
  time of the other replays, ``sync``: the rest of the timing function (waiting for events, reading them);
  ``replays``: their number; ``gpu``: the sum of the timed samples (device time of the timed replays);
- ``close``: the program's graphs and buffers dropped; ``lock wait`` and ``lock held``: the GPU's lock.

``--nice`` runs the processes at that niceness (Ray starts its workers at 15). Output: a table (ms per
stage, mean over each configuration's processes) and ``benchmarks/results/gpu_phases_<model>.json``.

    python benchmarks/gpu_phases.py --model nasnet --stages 1500 --procs 1,3 --nice 0,15
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from outputs import copy_to_out  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PHASES = ("build", "setup", "capture", "first launch", "launches", "sync", "gpu", "close", "lock wait",
          "lock held", "other")


class _Timed:
    """A graph stand-in that times its launches' host time (the first, which uploads, apart)."""

    def __init__(self, graph, acc: Dict[str, float], counts: Dict[str, int]):
        self.graph, self.acc, self.counts = graph, acc, counts
        self.first = True

    def launch(self, stream):
        t0 = time.perf_counter()
        self.graph.launch(stream)
        self.acc["first launch" if self.first else "launches"] += time.perf_counter() - t0
        self.counts["replays"] += 1
        self.first = False


def _child(specs: list, tf32: bool, nice: int, barrier, queue) -> None:
    """A spawned process: ``profile_share`` after the others are ready; its row on ``queue``."""
    queue.put(profile_share(specs, tf32, nice, barrier.wait))


def profile_share(specs: list, tf32: bool, nice: Optional[int], ready) -> Dict:
    """Profile ``specs`` with phase timers (``ready()`` called once warm, before the clock starts):
    ``{phase: seconds}``, counts and wall time. ``nice``: this process's niceness (None: as it is)."""
    if nice is not None:
        os.nice(nice - os.nice(0))
    import ios_ray.runtime.gpu.program as program
    from ios_ray.costs.measurement import MeasureSettings
    from ios_ray.profile.gpu import GpuProfiler

    acc: Dict[str, float] = defaultdict(float)
    counts: Dict[str, int] = defaultdict(int)

    def timed(name, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                acc[name] += time.perf_counter() - t0
        return wrapper

    init, capture, close = program.Program.__init__, program.Program.capture, program.Program.close
    program.Program.__init__ = timed("setup", init)
    program.Program.capture = timed("capture", capture)
    program.Program.close = timed("close", close)
    replays = program.time_replays_until_stable

    def timer(graph, stream, *rest):
        proxy = _Timed(graph, acc, counts)
        t0 = time.perf_counter()
        out = replays(proxy, stream, *rest)
        total = time.perf_counter() - t0
        acc["sync"] += total   # the launches' share is taken out below
        acc["gpu"] += sum(out) / 1e3
        counts["samples"] += len(out)
        return out
    program.time_replays_until_stable = timer

    prof = GpuProfiler(0, tf32=tf32)
    settings = MeasureSettings()
    for spec in specs[:20]:   # CUDA, cuDNN and the first plans up before the clock starts
        prof.measure_one(spec, 1, settings)
    acc.clear(), counts.clear()
    waited0, held0 = prof.lock.waited_s, prof.lock.held_s
    ready()
    t0 = time.perf_counter()
    errors = 0
    for spec in specs[20:]:
        t1 = time.perf_counter()
        built = spec.build()
        acc["build"] += time.perf_counter() - t1
        try:
            prof.time_stage(built, 1, settings)
        except Exception:  # noqa: BLE001 -- counted, as measure would
            errors += 1
    wall = time.perf_counter() - t0
    acc["sync"] -= acc["first launch"] + acc["launches"]
    acc["lock wait"] = prof.lock.waited_s - waited0
    acc["lock held"] = prof.lock.held_s - held0
    return {"pid": os.getpid(), "nice": os.nice(0), "stages": len(specs) - 20, "wall_s": wall,
            "errors": errors, "seconds": dict(acc), "counts": dict(counts)}


def run_config(specs: list, procs: int, nice: int, tf32: bool) -> Dict:
    """``specs`` split over ``procs`` spawned processes; each process's phases and the stages a second."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(procs + 1), ctx.Queue()
    shares = [specs[i::procs] for i in range(procs)]
    children = [ctx.Process(target=_child, args=(share, tf32, nice, barrier, queue)) for share in shares]
    for c in children:
        c.start()
    barrier.wait()
    t0 = time.perf_counter()
    rows = [queue.get(timeout=900) for _ in children]
    wall = time.perf_counter() - t0
    for c in children:
        c.join()
    return summary(rows, wall, {"procs": procs, "nice": nice, "how": "processes"})


def run_ray(specs: list, procs: int, nice: Optional[int], tf32: bool) -> Dict:
    """The same in ``procs`` Ray actors sharing the GPU (fractional GPUs, as ``GpuRecipe`` asks), each
    running ``profile_share`` on its share: Ray's worker processes without the pool's batching."""
    import ray

    @ray.remote(num_gpus=round(1 / procs, 4) - 1e-4 if procs > 1 else 1)
    class Phases:

        def run(self, share):
            return profile_share(share, tf32, nice, lambda: None)

    actors = [Phases.remote() for _ in range(procs)]
    t0 = time.perf_counter()
    rows = ray.get([a.run.remote(specs[i::procs]) for i, a in enumerate(actors)])
    wall = time.perf_counter() - t0
    for a in actors:
        ray.kill(a)
    # each actor warms up on its first 20 stages inside ``wall``: count the slowest one's own clock too
    out = summary(rows, max(r["wall_s"] for r in rows), {"procs": procs, "nice": nice, "how": "ray actors"})
    out["wall_with_warmup_s"] = wall
    return out


def run_pool(specs: list, procs: int, tf32: bool, round_size: int) -> Dict:
    """``specs`` through ``ProfilerPool`` (``procs`` actors on the GPU) in rounds of ``round_size``
    stages, as lazy rounds send them (0: one call): ms per stage and per round."""
    from ios_ray.costs.factory import GpuRecipe
    from ios_ray.costs.measurement import MeasureSettings
    from ios_ray.distributed import ProfilerPool
    settings = MeasureSettings()
    with ProfilerPool(procs, GpuRecipe(tf32=tf32, workers_per_gpu=procs)) as pool:
        pool.actor_handles()
        pool.measure({x.key: x for x in specs[:60]}, 1, settings)   # CUDA, cuDNN, first plans up before the clock starts
        rest = specs[60:]
        size = round_size or len(rest)
        t0 = time.perf_counter()
        rounds = 0
        for i in range(0, len(rest), size):
            pool.measure({x.key: x for x in rest[i:i + size]}, 1, settings)
            rounds += 1
        wall = time.perf_counter() - t0
    return {"procs": procs, "how": f"pool, rounds of {round_size or 'all'}", "stages": len(rest), "rounds": rounds,
            "wall_s": wall, "ms_per_stage": wall / len(rest) * 1e3, "ms_per_round": wall / rounds * 1e3}


def summary(rows: List[Dict], wall: float, head: Dict) -> Dict:
    """Per-phase ms per stage (mean over processes) of ``rows``, ``wall`` their common wall time."""
    stages = sum(r["stages"] for r in rows)
    per_stage = {}
    for phase in PHASES[:-1]:
        per_stage[phase] = sum(r["seconds"].get(phase, 0.0) for r in rows) / stages * 1e3
    timed = sum(per_stage[p] for p in ("build", "setup", "capture", "first launch", "launches", "sync", "close"))
    per_stage["other"] = sum(r["wall_s"] for r in rows) / stages * 1e3 - timed
    return {**head, "stages": stages, "wall_s": wall, "ms_per_stage": wall / stages * 1e3,
            "ms_per_stage_per_proc": per_stage, "replays_per_stage": sum(r["counts"].get("replays", 0) for r in rows) / stages,
            "samples_per_stage": sum(r["counts"].get("samples", 0) for r in rows) / stages,
            "errors": sum(r["errors"] for r in rows), "processes": rows}


def main(argv: Optional[List[str]] = None) -> int:
    from gpu_share import sample_specs
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="nasnet")
    p.add_argument("--stages", type=int, default=1500)
    p.add_argument("--procs", default="1,3")
    p.add_argument("--nice", default="0", help="niceness values to try (Ray's workers run at 15)")
    p.add_argument("--ray", default="", help="actor counts to try as Ray actors (each at --nice's values and as Ray leaves it)")
    p.add_argument("--pool", default="", help="actor counts to try through ProfilerPool, in rounds of --round-sizes")
    p.add_argument("--round-sizes", default="10,0", help="stages per pool call (0: all in one)")
    p.add_argument("--math", choices=["fp32", "tf32"], default="fp32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    specs, unique = sample_specs(args.model, 3, 8, args.stages, args.seed)
    specs = list(specs.values())
    rows = []
    print(f"{args.model}: {len(specs)} of {unique:,} stages, {args.math}; ms per stage in each process")
    head = f"{'procs':>5} {'nice':>4} {'ms/stage':>8} " + " ".join(f"{p[:10]:>10}" for p in PHASES) + f" {'replays':>7}"
    print(head)
    tf32 = args.math == "tf32"
    nices = [int(v) for v in args.nice.split(",")]

    def show(row):
        rows.append(row)
        ph = row["ms_per_stage_per_proc"]
        print(f"{row['procs']:5d} {str(row['nice']):>4} {row['ms_per_stage']:8.3f} "
              + " ".join(f"{ph[p]:10.3f}" for p in PHASES) + f" {row['replays_per_stage']:7.2f}  {row['how']}", flush=True)
    for nice in nices:
        for procs in (int(v) for v in args.procs.split(",") if v):
            show(run_config(specs, procs, nice, tf32))
    if args.ray or args.pool:
        import ray
        ray.init(include_dashboard=False, log_to_driver=False)
    for procs in (int(v) for v in args.ray.split(",") if v):
        for nice in [None] + nices:
            show(run_ray(specs, procs, nice, tf32))
    for procs in (int(v) for v in args.pool.split(",") if v):
        for size in (int(v) for v in args.round_sizes.split(",")):
            row = run_pool(specs, procs, tf32, size)
            rows.append(row)
            print(f"{procs:5d} {'':>4} {row['ms_per_stage']:8.3f}  {row['how']}: {row['rounds']} calls, "
                  f"{row['ms_per_round']:.2f} ms each", flush=True)
    out = Path(args.out) if args.out else RESULTS / f"gpu_phases_{args.model}_{args.math}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=1))
    copy_to_out(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Lazy profiling's rounds against its overlapped rounds, on a measured table, with simulated Ray workers.

    python benchmarks/lazy_overlap.py --costs benchmarks/results/nasnet_h200_fp32_stage_costs.parquet \
        --model nasnet --workers 3 --sim-ms 7.8 --modes rounds,overlap

The lazy DP (``dp/lazy.py``) runs on the stored costs of a model's whole space (measured once on a device);
every batch it asks for goes to real Ray actors (``ProfilerPool``) that only sleep ``--sim-ms`` per stage,
so the run has the driver's real work (the DP, Ray's dispatch, the interpreter shared between the DP and
the measuring thread) and the workers' time, with no device. ``--sim-ms 7.8`` on 3 workers is NASNet's
measured rate on one H200 with 3 actors sharing it (2.6 ms a stage); ``--host-ms 1.1 --device-ms 2.64``
models that sharing itself (one actor alone took 3.74 ms a stage, three 2.64: ``gpu_share.py``), the
device's part under one lock all workers share, as the GPU profiler's. ``rounds``: each round's batch
measured, then solved (``lazy_solve(space, measure)``); ``overlap``: parts solved while other parts'
batches are measured (``lazy_solve(space, BackgroundRounds(measure))``). Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import ray
import ray.cloudpickle

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import scaling  # noqa: E402
from ios_ray.costs.measurement import DeviceInfo, Measurement, MeasureSettings  # noqa: E402
from ios_ray.distributed import PoolOptions, ProfilerPool  # noqa: E402
from ios_ray.dp.lazy import lazy_solve  # noqa: E402
from ios_ray.models import get_model  # noqa: E402
from ios_ray.profile.rounds import BackgroundRounds  # noqa: E402
from ios_ray.space.enumerate import enumerate_graph  # noqa: E402
from ios_ray.space.options import SpaceOptions  # noqa: E402

sys.path.remove(str(ROOT / "benchmarks"))
from lazy_overheads import measured_costs  # noqa: E402  (benchmarks/ is on the path: this file's folder)


class SharedDeviceSource:
    """A simulated profiler of a device shared by the host's workers: per stage it sleeps ``host_ms``, then
    ``device_ms`` holding the one lock all of them open (``runtime.gpu.lock``, as the GPU profiler holds
    the GPU's), so the device's time bounds the rate however many workers there are."""

    dtype = "float32"

    def __init__(self, host_ms: float, device_ms: float, lock_file: str):
        self.host_ms, self.device_ms, self.lock_file = host_ms, device_ms, lock_file

    def device(self):
        return DeviceInfo(name="simulated shared device", kind="cpu", library="sleep")

    def measure(self, specs, batch_size, settings):
        from ios_ray.runtime.gpu.lock import shared_lock
        lock, out = shared_lock(self.lock_file), []
        for spec in specs:
            time.sleep(self.host_ms / 1e3)
            with lock:
                time.sleep(self.device_ms / 1e3)
            out.append(Measurement(spec.key, self.host_ms + self.device_ms, 0.0, 1))
        return out


def one_run(mode: str, space, costs: dict, args) -> dict:
    ray.cloudpickle.register_pickle_by_value(scaling)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    stubs = scaling.KeyStubs(space.specs)
    if args.device_ms:
        source = SharedDeviceSource(args.host_ms, args.device_ms, str(Path(tempfile.gettempdir()) / "lazy_overlap.lock"))
    else:
        source = scaling.SleepingSource(args.sim_ms)
    pool = ProfilerPool(args.workers, source, PoolOptions(cpus_per_worker=min(1.0, 1.0 / (4 * args.workers))))
    busy = [0.0, 0]
    try:
        pool.devices()
        pool.use_catalog(stubs)
        pool.devices()

        def measure(keys):
            t0 = time.perf_counter()
            pool.measure({k: stubs[k] for k in keys}, 1, MeasureSettings(0, 1, 1))
            busy[0] += time.perf_counter() - t0
            busy[1] += 1
            return {k: costs[k] for k in keys}

        t0, cpu0 = time.perf_counter(), time.process_time()
        if mode == "rounds":
            result = lazy_solve(space, measure)
        else:
            with BackgroundRounds(measure) as batches:
                result = lazy_solve(space, batches)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        pool.shutdown()
    rep = result.report
    return {"mode": mode, "wall_s": wall, "measuring_s": busy[0], "driver_cpu_s": cpu, "batches": busy[1],
            "measured": rep.measured, "unique_stages": rep.unique_stages,
            "ideal_measuring_s": rep.measured * (max(args.device_ms, (args.host_ms + args.device_ms) / args.workers)
                                                 if args.device_ms else args.sim_ms / args.workers) / 1e3,
            "latency": result.solution.total_latency, "stages": [[str(s) for s in b] for b in result.solution.block_stages]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--costs", required=True, help="a measured table of the model's whole space (Parquet: key, latency_ms)")
    p.add_argument("--model", default="nasnet")
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--sim-ms", type=float, default=7.8, help="each simulated worker's sleep per stage")
    p.add_argument("--device-ms", type=float, default=0.0,
                   help="instead of --sim-ms: per stage, this long holding a lock every worker shares ...")
    p.add_argument("--host-ms", type=float, default=0.0, help="... after this long without it")
    p.add_argument("--modes", default="rounds,overlap")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lazy_overlap.json"))
    args = p.parse_args()
    space = enumerate_graph(get_model(args.model), SpaceOptions())
    costs = measured_costs(space, args.costs)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    rows = [one_run(mode, space, costs, args) for mode in args.modes.split(",")]
    print(f"{'mode':>8} {'wall s':>7} {'measuring s':>11} {'ideal s':>8} {'driver cpu s':>12} {'batches':>8} "
          f"{'measured':>9} {'latency':>8}")
    for r in rows:
        print(f"{r['mode']:>8} {r['wall_s']:7.1f} {r['measuring_s']:11.1f} {r['ideal_measuring_s']:8.1f} "
              f"{r['driver_cpu_s']:12.1f} {r['batches']:8d} {r['measured']:9,} {r['latency']:8.4f}")
    same = len({json.dumps(r["stages"]) for r in rows}) == 1
    print("same schedule in every mode:", same)
    Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "machine": platform.node(),
                                          "cpus": __import__("os").cpu_count(), "same_schedule": same,
                                          "rows": [{k: v for k, v in r.items() if k != "stages"} for r in rows]},
                                         indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

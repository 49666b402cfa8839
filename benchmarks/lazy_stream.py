"""Lazy profiling's rounds, batch by batch or streamed, on a measured table with simulated GPU actors.

    python benchmarks/lazy_stream.py --costs benchmarks/results/nasnet_h200_fp32_stage_costs.parquet \
        --model nasnet --workers 3 --host-ms 1.5 --device-ms 1.45 --modes batch,stream

The lazy DP runs on the stored costs of a model's whole space (measured once on a device), through the
path ``optimize`` takes: ``ProfileRounds`` over a Ray pool (``open_ray_pool``, the space's stage table
given to the actors once, batches as keys). Each actor's source plays the GPU profiler: per stage it
sleeps ``--host-ms`` (building, lowering, capturing), then ``--device-ms`` holding one lock all the
actors share (the GPU's, ``runtime.gpu.lock``), and returns the stored cost, so the DP takes the rounds
it took on the device. The defaults are ``gpu_phases.py``'s figures for NASNet on one H200 (1.5 ms of
host work and 1.45 ms under the lock a stage, three processes). ``batch``: each round measured as one
``ProfileRounds.measure`` call once the DP has solved every part (``lazy_solve(space, rounds.measure)``,
as before streaming); ``stream``: each part's stages sent as soon as it is solved
(``lazy_solve(space, rounds)``). Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ios_ray.costs.measurement import DeviceInfo, Measurement  # noqa: E402
from ios_ray.distributed.driver import RayPoolOptions, open_ray_pool  # noqa: E402
from ios_ray.dp.lazy import lazy_solve  # noqa: E402
from ios_ray.models import get_model  # noqa: E402
from ios_ray.profile.rounds import ProfileRounds  # noqa: E402
from ios_ray.profile.stages import ProfileOptions  # noqa: E402
from ios_ray.space.enumerate import enumerate_graph  # noqa: E402
from ios_ray.space.options import SpaceOptions  # noqa: E402
from lazy_overheads import measured_costs  # noqa: E402


class SharedDeviceSource:
    """A simulated GPU profiler: per stage ``host_ms`` asleep, then ``device_ms`` asleep under the lock every
    actor of the host opens (``lock_file``); the stage's stored cost is its latency."""

    dtype = "float32"

    def __init__(self, costs: dict, host_ms: float, device_ms: float, lock_file: str):
        self.costs, self.host_ms, self.device_ms, self.lock_file = costs, host_ms, device_ms, lock_file

    def device(self):
        return DeviceInfo(name="simulated shared device", kind="cpu", library="sleep")

    def measure(self, specs, batch_size, settings):
        from ios_ray.runtime.gpu.lock import shared_lock
        lock, out = shared_lock(self.lock_file), []
        for spec in specs:
            time.sleep(self.host_ms / 1e3)
            with lock:
                time.sleep(self.device_ms / 1e3)
            out.append(Measurement(spec.key, self.costs[spec.key], 0.0, 1))
        return out


def one_run(mode: str, space, costs: dict, args) -> dict:
    source = SharedDeviceSource(costs, args.host_ms, args.device_ms,
                                str(Path(tempfile.gettempdir()) / "lazy_stream.lock"))
    pool = open_ray_pool(source, RayPoolOptions(args.workers, cpus_per_worker=min(1.0, 1.0 / args.workers)), space)
    try:
        pool.devices()   # every actor up before the clock starts
        rounds = ProfileRounds(space.specs, pool, None, ProfileOptions())
        t0, cpu0 = time.perf_counter(), time.process_time()
        result = lazy_solve(space, rounds.measure if mode == "batch" else rounds, rounds.lookup())
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        report = rounds.close()
    finally:
        pool.shutdown()
    rep = result.report
    return {"mode": mode, "wall_s": wall, "driver_cpu_s": cpu, "in_pool_calls_s": sum(report.seconds.values()),
            "measured": rep.measured, "rounds": rep.rounds, "unique_stages": rep.unique_stages,
            "device_bound_s": rep.measured * args.device_ms / 1e3, "latency": result.solution.total_latency,
            "stages": [[str(s) for s in b] for b in result.solution.block_stages]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--costs", required=True, help="a measured table of the model's whole space (Parquet: key, latency_ms)")
    p.add_argument("--model", default="nasnet")
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--host-ms", type=float, default=1.5)
    p.add_argument("--device-ms", type=float, default=1.45)
    p.add_argument("--modes", default="batch,stream")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lazy_stream.json"))
    args = p.parse_args()
    space = enumerate_graph(get_model(args.model), SpaceOptions())
    costs = measured_costs(space, args.costs)
    rows = []
    print(f"{'mode':>7} {'wall s':>8} {'in pool calls s':>15} {'driver CPU s':>12} {'measured':>9} {'rounds':>7} "
          f"{'device-bound s':>14}")
    for mode in args.modes.split(","):
        row = one_run(mode, space, costs, args)
        rows.append(row)
        print(f"{mode:>7} {row['wall_s']:8.1f} {row['in_pool_calls_s']:15.1f} {row['driver_cpu_s']:12.1f} "
              f"{row['measured']:9,} {row['rounds']:7,} {row['device_bound_s']:14.1f}", flush=True)
    same = all(r["stages"] == rows[0]["stages"] and r["measured"] == rows[0]["measured"] for r in rows)
    print("same schedule and stages measured in every mode:", same)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "host": platform.node(),
                                          "same": same, "rows": rows}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Profiling wall time and speedup against the number of Ray workers, and the driver's own overhead.

Profile mode (default): for each worker count, profile every distinct stage of ``--model`` into a
fresh (cold) cost table, then run again on the same table (warm: everything is a cache hit). The
speedup is the cold wall time at the smallest worker count divided by the cold wall time at N.

    python benchmarks/scaling.py --model squeezenet --workers 1,2 --cost cpu
    python benchmarks/scaling.py --model inception_v3 --workers 1,2,4 --cost analytic

Simulate mode: simulated workers that only *sleep* ``--sim-ms`` per stage, as a stand-in for a real
profiler's time per stage; they reserve a small fraction of a CPU each, so many fit on a small machine,
and do no other work, so the efficiency measures the driver and Ray, not the host's cores. With the
ideal wall time being (stages x sim-ms) / N, what remains is the driver's and Ray's overhead;
``driver_us_per_stage`` is the driver's own CPU time per stage in the pool (ordering, batching,
submission, ray.wait/get, bookkeeping), ``process_time`` around ``ProfilerPool.measure`` (Ray's threads
in the driver process included), ``driver_thread_us_per_stage`` the calling thread's alone;
``efficiency_busy`` compares with the workers' own busy time instead (a 1 ms sleep takes a little
more). Only the keys of the space are enumerated (timed apart, never part of the efficiency), so
NASNet (48,871 stages at r=3, s=8) and RandWire fit: with 64 workers Inception-v3's 3,846 stages of
1 ms are 60 ms of work each, too little to amortize Ray's latency per batch. By default
the batches travel as keys of a catalog shipped once (``--transport keys``: what ``optimize`` does with a
GraphSpace; the simulated workers resolve a key to a stub, where a real worker builds the spec);
``--transport specs`` pickles every spec in the driver instead.

    python benchmarks/scaling.py --model inception_v3 --simulate 16,64 --sim-ms 1
    python benchmarks/scaling.py --model nasnet --simulate 16,64 --sim-ms 1

Enumerate mode: wall time of the distributed state-space enumeration against the local one.

    python benchmarks/scaling.py --model randwire --enumerate 1,4,8,15

Results are printed as a table and saved as JSON under ``benchmarks/results/``.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import ray
import ray.cloudpickle

from ios_ray.costs.factory import parse_cost
from ios_ray.costs.measurement import DeviceInfo, MeasureSettings, Measurement
from ios_ray.costs.table import CostTable
from ios_ray.distributed import (PoolOptions, ProfileOptions, ProfilerPool, connect, enumerate_graph_distributed,
                                 profile_graph_space)
from ios_ray.models import MODELS, get_model
from ios_ray.space.enumerate import enumerate_graph
from ios_ray.space.options import SpaceOptions

RESULTS = Path(__file__).resolve().parent / "results"


class SleepingSource:
    """A simulated profiler: sleeps ``sim_ms`` per stage and reports that as its latency; nothing else, so
    the simulated workers need no CPU. A plain picklable CostSource object: the pool ships it as it is.
    """

    dtype = "float32"

    def __init__(self, sim_ms: float):
        self.sim_ms = sim_ms

    def device(self):
        return DeviceInfo(name="simulated", kind="cpu", library="sleep")

    def measure(self, specs, batch_size, settings):
        out = []
        for spec in specs:
            if self.sim_ms:
                time.sleep(self.sim_ms / 1e3)
            out.append(Measurement(spec.key, self.sim_ms, 0.0, 1))
        return out


@dataclass(frozen=True)
class KeyStub:
    """What a simulated worker needs of a spec: its key."""
    key: str


class KeyStubs(Mapping):
    """A catalog of stubs by key, small to ship: stands in for a GraphSpace's SpecTable in the simulation."""

    def __init__(self, keys):
        self._keys = list(keys)
        self._set = frozenset(self._keys)

    def __getitem__(self, key):
        if key not in self._set:
            raise KeyError(key)
        return KeyStub(key)

    def __contains__(self, key):
        return key in self._set

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)


def _ints(text: str) -> List[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"worker counts must be >= 1, got {text!r}")
    return values


def _specs(args) -> Dict:
    specs = dict(_space(args).specs)
    if args.max_stages and len(specs) > args.max_stages:
        specs = dict(sorted(specs.items())[: args.max_stages])  # a fixed, reproducible subset
    return specs


def _space(args):
    opts = SpaceOptions(max_group_size=args.max_group_size, max_num_groups=args.max_num_groups)
    return enumerate_graph(get_model(args.model), opts)


def _keys(args) -> List[str]:
    """The space's stage keys only (no spec is built: NASNet's and RandWire's would take minutes)."""
    keys = list(_space(args).specs)
    return sorted(keys)[: args.max_stages] if args.max_stages and len(keys) > args.max_stages else keys


def _machine() -> dict:
    return {"host_cpus": os.cpu_count(), "ray_cpus": ray.cluster_resources().get("CPU", 0),
            "ray_gpus": ray.cluster_resources().get("GPU", 0), "ray": ray.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def run_profile(args) -> dict:
    recipe = parse_cost(args.cost)
    specs = _specs(args)
    settings = MeasureSettings(args.warmup, args.number, args.repeat)
    rows = []
    for n in args.workers:
        with tempfile.TemporaryDirectory(prefix="ios_ray_scaling_") as tmp:
            table = CostTable(os.path.join(tmp, "costs"))
            t0 = time.perf_counter()
            _, cold = profile_graph_space(specs, recipe, n, table,
                                          ProfileOptions(args.batch_size, settings, progress=args.progress))
            cold_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            _, warm = profile_graph_space(specs, recipe, n, table, ProfileOptions(args.batch_size, settings))
            warm_s = time.perf_counter() - t0
        rows.append({"workers": n, "stages": len(specs), "cold_s": cold_s, "cold_measure_s": cold.seconds["measure"],
                     "cold_start_s": cold.seconds.get("probe", 0) + cold.seconds.get("start", 0),
                     "append_s": cold.seconds.get("append", 0.0), "warm_s": warm_s, "warm_measured": warm.measured,
                     "warm_cache_hits": warm.cache_hits, "errors": cold.errors, "per_worker": cold.per_worker,
                     "device": cold.device.name})
    base = rows[0]
    for r in rows:
        r["speedup"] = base["cold_s"] / r["cold_s"]
        r["speedup_measure"] = base["cold_measure_s"] / r["cold_measure_s"]
    header = (f"{'workers':>7} {'stages':>7} {'cold s':>8} {'measure s':>9} {'start s':>8} {'speedup':>8} "
              f"{'speedup(measure)':>16} {'warm s':>7} {'warm measured':>13}")
    print(f"model {args.model}, cost {args.cost} ({base['device']}), batch {args.batch_size}, settings {settings}")
    print(header)
    for r in rows:
        print(f"{r['workers']:>7} {r['stages']:>7} {r['cold_s']:>8.2f} {r['cold_measure_s']:>9.2f} "
              f"{r['cold_start_s']:>8.2f} {r['speedup']:>7.2f}x {r['speedup_measure']:>15.2f}x {r['warm_s']:>7.2f} "
              f"{r['warm_measured']:>13}")
    return {"mode": "profile", "model": args.model, "cost": args.cost, "batch_size": args.batch_size,
            "settings": {"warmup": args.warmup, "number": args.number, "repeat": args.repeat},
            "machine": _machine(), "rows": rows}


def run_simulate(args) -> dict:
    if __name__ != "__main__":   # imported (optimize_cost.py --simulate): the workers cannot import this file
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    t0 = time.perf_counter()   # enumeration: timed apart, never part of the efficiency
    specs = stubs = KeyStubs(_keys(args))
    if args.transport == "specs":   # real specs: their pickling is what this transport costs
        specs = _specs(args)
    enumerate_s = time.perf_counter() - t0
    rows = []
    for n in args.simulate:
        # 1/(4n) CPU each: the workers sleep, so they need no real CPU, and any count fits on this machine.
        pool = ProfilerPool(n, SleepingSource(args.sim_ms), PoolOptions(
            cpus_per_worker=min(1.0, 1.0 / (4 * n)), min_batch=args.min_batch,
            batches_per_worker=args.batches_per_worker, driver_load=args.driver_load))
        try:
            t0 = time.perf_counter()
            pool.devices()  # wait until every actor is up: start-up is not dispatch overhead
            if args.transport == "keys":
                pool.use_catalog(stubs)
                pool.devices()   # answered after the catalog is loaded (an actor runs its calls in order)
            start_s = time.perf_counter() - t0
            gc.collect()   # the enumeration's garbage is not the driver's
            cpu0, thread0, t0 = time.process_time(), time.thread_time(), time.perf_counter()
            results, report = pool.measure(specs, args.batch_size, MeasureSettings(0, 1, 1))
            wall = time.perf_counter() - t0
            cpu, thread = time.process_time() - cpu0, time.thread_time() - thread0
        finally:
            pool.shutdown()
        ideal = len(specs) * args.sim_ms / 1e3 / n
        rows.append({"workers": n, "stages": len(specs), "start_s": start_s, "wall_s": wall, "ideal_s": ideal,
                     "efficiency": ideal / wall if wall > 0 else math.nan,
                     # the same against the workers' own busy time (a 1 ms sleep takes a little longer)
                     "worker_busy_s": report.worker_s, "efficiency_busy": report.worker_s / n / wall,
                     "overhead_ms_per_stage": (wall - ideal) * 1e3 / len(specs),
                     "driver_us_per_stage": cpu * 1e6 / len(specs),
                     "driver_loop_us_per_stage": report.driver_cpu_s * 1e6 / len(specs),
                     "driver_thread_us_per_stage": thread * 1e6 / len(specs), "batches": report.batches,
                     "errors": report.errors, "per_worker_min": min(report.per_worker.values()),
                     "per_worker_max": max(report.per_worker.values())})
    print(f"simulated profiling: model {args.model}, {len(specs)} stages (enumerated in {enumerate_s:.1f} s, not "
          f"timed below), {args.sim_ms} ms per stage, batches as {args.transport}")
    print(f"{'workers':>7} {'start s':>8} {'wall s':>8} {'ideal s':>8} {'efficiency':>10} {'(busy)':>6} "
          f"{'overhead ms/stage':>17} "
          f"{'driver CPU us/stage':>19} {'(its thread)':>12} {'batches':>7} {'stages/worker':>13}")
    for r in rows:
        print(f"{r['workers']:>7} {r['start_s']:>8.2f} {r['wall_s']:>8.2f} {r['ideal_s']:>8.2f} {r['efficiency']:>9.0%} "
              f"{r['efficiency_busy']:>6.0%} "
              f"{r['overhead_ms_per_stage']:>17.3f} {r['driver_us_per_stage']:>19.1f} "
              f"{r['driver_thread_us_per_stage']:>12.1f} {r['batches']:>7} "
              f"{r['per_worker_min']:>6}-{r['per_worker_max']:<6}")
    return {"mode": "simulate", "model": args.model, "sim_ms": args.sim_ms, "transport": args.transport,
            "r": args.max_group_size, "s": args.max_num_groups, "enumerate_s": enumerate_s,
            "driver_load": args.driver_load,
            "what_ran": (f"{max(args.simulate)} simulated actors at {min(1.0, 1 / (4 * max(args.simulate))):.4f} CPU "
                         f"each on a {os.cpu_count()}-core host; each sleeps sim_ms per stage and does nothing "
                         f"else; wall_s is ProfilerPool.measure alone (actors started and the catalog loaded "
                         f"before, the enumeration's garbage collected); driver CPU is process_time around it "
                         f"(Ray's threads in the driver process included), its thread: thread_time of the "
                         f"calling thread alone"),
            "machine": _machine(), "rows": rows}


def run_enumerate(args) -> dict:
    graph = get_model(args.model)
    opts = SpaceOptions(max_group_size=args.max_group_size, max_num_groups=args.max_num_groups)
    t0 = time.perf_counter()
    local = enumerate_graph(graph, opts)
    local_s = time.perf_counter() - t0
    counts = local.counts
    del local
    rows = []
    for n in args.enumerate:
        t0 = time.perf_counter()
        _, rep = enumerate_graph_distributed(graph, opts, num_workers=n, return_report=True)
        wall = time.perf_counter() - t0
        rows.append({"workers": n, "wall_s": wall, "speedup_vs_local": local_s / wall, "shards": rep.num_shards,
                     "seconds": rep.seconds, "per_worker": rep.per_worker})
    print(f"enumeration: model {args.model}, r={opts.max_group_size} s={opts.max_num_groups}: {counts.states:,} "
          f"states, {counts.transitions:,} transitions, {counts.unique_stages:,} unique stages; "
          f"local {local_s:.2f} s")
    print(f"{'workers':>7} {'wall s':>8} {'speedup':>8} {'shards':>6} {'plan s':>7} {'workers s':>9} {'assemble s':>10}")
    for r in rows:
        sec = r["seconds"]
        print(f"{r['workers']:>7} {r['wall_s']:>8.2f} {r['speedup_vs_local']:>7.2f}x {r['shards']:>6} "
              f"{sec['plan']:>7.2f} {sec['enumerate']:>9.2f} {sec['assemble']:>10.2f}")
    return {"mode": "enumerate", "model": args.model, "local_s": local_s, "counts": counts.__dict__,
            "machine": _machine(), "rows": rows}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="squeezenet", choices=sorted(MODELS))
    p.add_argument("--workers", type=_ints, default=[1, 2, 4], help="worker counts, e.g. 1,2,4")
    p.add_argument("--cost", default="cpu", help="cpu, analytic[:GPU] or gpu")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--max-group-size", type=int, default=3, help="r")
    p.add_argument("--max-num-groups", type=int, default=8, help="s")
    p.add_argument("--max-stages", type=int, default=0, help="profile only this many stages (0: all)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--number", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--simulate", type=_ints, default=None, help="worker counts for the simulated-profiler mode")
    p.add_argument("--enumerate", type=_ints, default=None,
                   help="worker counts for timing distributed state-space enumeration instead of profiling")
    p.add_argument("--sim-ms", type=float, default=1.0, help="simulated profiling time per stage")
    p.add_argument("--min-batch", type=int, default=8, help="simulate: the pool's min_batch")
    p.add_argument("--batches-per-worker", type=int, default=2, help="simulate: the pool's batches_per_worker")
    p.add_argument("--driver-load", type=float, default=0.25, help="simulate: the pool's driver_load")
    p.add_argument("--transport", choices=["keys", "specs"], default="keys",
                   help="simulate: batches as keys of a catalog shipped once (as optimize does) or as pickled specs")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance")
    p.add_argument("--address", default=None, help="join this Ray cluster instead of starting one")
    p.add_argument("--progress", action="store_true", help="show the progress bar during cold runs")
    p.add_argument("--out", default=None, help="JSON output path (default: benchmarks/results/scaling_*.json)")
    args = p.parse_args(argv)

    counts = args.enumerate or args.workers if args.simulate is None else [1]
    num_cpus = args.num_cpus or (None if args.address else max(max(counts), os.cpu_count() or 1))
    connect(args.address, num_cpus=num_cpus)
    if args.simulate is not None:
        result, suffix = run_simulate(args), f"simulate_{args.model}_{args.sim_ms:g}ms"
    elif args.enumerate is not None:
        result, suffix = run_enumerate(args), f"enumerate_{args.model}"
    else:
        result, suffix = run_profile(args), f"{args.model}_{args.cost.replace(':', '-')}"
    out = Path(args.out) if args.out else RESULTS / f"scaling_{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result["command"] = " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:]))
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

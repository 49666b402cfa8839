"""Which stage-timing protocol predicts the whole graph? One GPU, the evidence behind ``profile.gpu``'s default.

    python benchmarks/cost_protocols.py [--runs squeezenet:1,inception_v3:1] [--math fp32,tf32]
                                        [--optimize squeezenet:1,inception_v3:1] [--out cost_protocols.json]

For each model, batch and math mode, the Sequential and Greedy schedules are each timed whole (``W``: the
runtime's one CUDA graph, as the final check times it) and as the sum of their stages measured by the
profiler (``S``, what the DP adds up) under each protocol:

* ``warm``      back-to-back replays of the stage (its weights stay in L2 from its own replays);
* ``cold``      L2 flushed (twice its size overwritten) and the stage's inputs read before every replay,
                the graph launch less one graph node taken off (``runtime.gpu.program.ColdL2``); from the
                same samples, ``cold-T1`` takes the whole one-node graph off (the protocol before) and
                ``cold-raw`` nothing;
* ``cold@N``    as ``cold`` with only N MiB flushed (the graph's own working set, half the L2), where the
                graph's working set is below twice the L2.

``S / W - 1`` is the prediction error of each protocol. With ``--optimize``, those runs are also optimized
(lazy, final check on) under each protocol into a fresh table, and every final-check candidate's
predicted and measured latency is recorded: the prediction error of the DP's own schedule.
Results: a table on stdout and ``benchmarks/results/cost_protocols.json`` (copied under ``$OUT``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ios_ray.costs.measurement import MeasureSettings  # noqa: E402
from ios_ray.models import get_model  # noqa: E402
from ios_ray.optimizer import _baselines, stage_specs  # noqa: E402
from outputs import copy_to_out  # noqa: E402

MIB = 1 << 20


def protocols(ws: int, l2: int):
    """(label, l2 mode, flush bytes) to compare for a graph of working set ``ws`` on an L2 of ``l2`` bytes."""
    out = [("warm", "warm", None), ("cold", "cold", None)]
    if ws < 2 * l2:
        out += [(f"cold@{ws // MIB}", "cold", ws), (f"cold@{l2 // 2 // MIB}", "cold", l2 // 2)]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default="squeezenet:1,inception_v3:1,inception_v3:16,randwire:1,nasnet:1")
    p.add_argument("--math", default="fp32,tf32")
    p.add_argument("--optimize", default="squeezenet:1,inception_v3:1", help="model:batch runs also optimized")
    p.add_argument("--opt-protocols", default="warm,cold", help="protocol labels the optimizations run under "
                                                              "(cold@ws: the graph's working set)")
    p.add_argument("--budget-s", type=float, default=540.0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cost_protocols.json"))
    args = p.parse_args(argv)
    t_start = time.perf_counter()

    import cupy

    from ios_ray.optimizer import optimize
    from ios_ray.profile.gpu import GpuProfiler, gpu_device_info
    runs = [(m.split(":")[0], int(m.split(":")[1])) for m in args.runs.split(",") if m]
    to_optimize = {(m.split(":")[0], int(m.split(":")[1])) for m in args.optimize.split(",") if m}
    stage_settings = MeasureSettings(2, 6, 6)        # optimize's defaults
    whole_settings = MeasureSettings(10, 20, 10)
    doc = {"command": " ".join([os.path.basename(sys.executable)] + sys.argv),
           "device": gpu_device_info(0).__dict__, "python": platform.python_version(), "cupy": cupy.__version__,
           "stage_settings": stage_settings.__dict__, "whole_settings": whole_settings.__dict__,
           "sums": [], "optimized": [], "skipped": []}

    def save():
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(doc, indent=1))
        copy_to_out(Path(args.out))

    def over() -> bool:
        return time.perf_counter() - t_start > args.budget_s

    tables = tempfile.mkdtemp(prefix="ios_ray_protocols_")
    for math in args.math.split(","):
        profiler = GpuProfiler(0, tf32=math == "tf32")
        l2 = profiler.l2_bytes()
        doc["l2_bytes"] = l2
        for model, batch in runs:
            if over():
                doc["skipped"].append(f"{model} b{batch} {math}: over the time budget")
                continue
            g = get_model(model)
            ws = g.working_set_bytes(batch)
            base = {"model": model, "batch": batch, "math": math, "working_set_mib": ws / MIB}
            cands = _baselines(g, False, "dp_parallel_merge")
            whole = {}
            for name, (cg, _) in cands.items():
                whole[name] = float(np.median(profiler.measure_graph(cg, batch, whole_settings)))
            per_schedule = {name: stage_specs(g, stages) for name, (_, stages) in cands.items()}
            specs = {s.key: s for ss in per_schedule.values() for s in ss}
            for label, mode, flush in protocols(ws, l2):
                profiler.l2, profiler.flush_bytes = mode, flush
                t0 = time.perf_counter()
                got = {m.key: m for m in profiler.measure(list(specs.values()), batch, stage_settings)}
                bad = [k for k, m in got.items() if m.error.value]
                cold = profiler._cold if mode == "cold" else None   # noqa: SLF001 -- its calibration
                for name, ss in per_schedule.items():
                    total = float(sum(got[s.key].latency_ms for s in ss))
                    row = {**base, "schedule": name, "protocol": label, "whole_ms": whole[name], "sum_ms": total,
                           "error": total / whole[name] - 1, "stages": len(ss), "errors": len(bad),
                           "seconds": time.perf_counter() - t0}
                    if cold is not None:
                        row.update(launch_ms=cold.launch_ms, node_ms=cold.node_ms, flush_mib=cold.flush_bytes / MIB,
                                   sum_t1_ms=total - len(ss) * cold.node_ms,
                                   sum_raw_ms=total + len(ss) * cold.launch_ms)
                        row["error_t1"] = row["sum_t1_ms"] / whole[name] - 1
                        row["error_raw"] = row["sum_raw_ms"] / whole[name] - 1
                    doc["sums"].append(row)
                    print(f"[{time.perf_counter() - t_start:6.1f}s] {model} b{batch} {math} {name:10s} {label:9s} "
                          f"whole {whole[name]:.3f}  sum {total:.3f} ms ({row['error']:+.1%})"
                          + (f"  T1-off {row['error_t1']:+.1%} raw {row['error_raw']:+.1%}" if cold else ""),
                          flush=True)
                save()
            if (model, batch) not in to_optimize:
                continue
            for label, mode, flush in protocols(ws, l2):
                wanted = args.opt_protocols.split(",")
                if label not in wanted and not (label.startswith("cold@") and "cold@ws" in wanted
                                                and flush == ws):
                    continue
                if over():
                    doc["skipped"].append(f"optimize {model} b{batch} {math} {label}: over the time budget")
                    continue
                profiler.l2, profiler.flush_bytes = mode, flush
                t0 = time.perf_counter()
                og = optimize(g, batch, "dp_parallel_merge", cost=profiler,
                              cost_table=os.path.join(tables, f"{math}-{label}"))
                rep = og.optimization_report
                row = {**base, "protocol": label, "optimize_s": time.perf_counter() - t0,
                       "predicted_ms": rep.predicted_latency_ms, "returned": rep.returned,
                       "measured_stages": rep.measured,
                       "candidates": [{"schedule": c.schedule, "predicted_ms": c.predicted_ms,
                                       "measured_ms": c.measured_ms} for c in rep.final_check]}
                doc["optimized"].append(row)
                print(f"[{time.perf_counter() - t_start:6.1f}s] optimize {model} b{batch} {math} {label}: "
                      + "; ".join(f"{c['schedule']} {c['measured_ms']:.3f} (pred {c['predicted_ms'] or 0:.3f}, "
                                  f"{(c['predicted_ms'] or 0) / c['measured_ms'] - 1:+.1%})" for c in row["candidates"])
                      + f" -> {rep.returned}", flush=True)
                save()
        del profiler
        cupy.get_default_memory_pool().free_all_blocks()
    doc["wall_s"] = time.perf_counter() - t_start
    save()
    print(f"done in {doc['wall_s']:.0f} s; skipped: {doc['skipped']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The ``ios-ray`` command: ``optimize``, ``run``, ``table``, ``models``.

``ios-ray optimize`` with no arguments is the project's main job: a real optimization of the default
model on a local Ray instance, measured on the GPU when there is one, else on the CPU reference runtime.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import List, Optional

DEFAULT_MODEL = "squeezenet"


def _load_graph_arg(arg: str):
    """A zoo model by name, an ``.onnx`` file (imported with its weights) or a graph JSON file."""
    from .graph.serialize import load_graph
    from .models import MODELS, get_model
    if arg in MODELS:
        return get_model(arg)
    if arg.endswith(".onnx"):
        from .onnx_import import from_onnx
        return from_onnx(arg)   # OnnxImportError is a ValueError: one line, exit 2
    if os.path.exists(arg):
        return load_graph(arg)
    raise SystemExit(f"ios-ray: {arg!r} is neither a model ({', '.join(sorted(MODELS))}), an .onnx file nor a "
                     f"graph JSON file")


def cmd_optimize(ns: argparse.Namespace) -> int:
    from .graph.serialize import save_graph, save_weights
    from .optimizer import optimize

    graph = _load_graph_arg(ns.model)
    out = ns.out or f"{graph.name}_schedule.json"
    # a model with its own weights (ONNX) keeps them, and the optimized graph's are written beside the schedule
    weights_out = ns.weights_out or (os.path.splitext(out)[0] + ".npz" if graph.has_weights() else None)
    if weights_out and not graph.has_weights():
        graph.init_weights(ns.seed)
    table = False if ns.table == "none" else ns.table
    workers = _auto_workers(ns.cost) if ns.workers is None else (None if ns.workers == 0 else ns.workers)
    t0 = time.perf_counter()
    opt = optimize(graph, batch_size=ns.batch_size, opt_type=ns.opt_type, cost=ns.cost,
                   max_group_size=ns.r, max_num_groups=ns.s, max_part_size=ns.part_size,
                   warmup=ns.warmup, number=ns.number, repeat=ns.repeat, num_workers=workers,
                   cost_table=table, address=ns.address, progress=not ns.no_progress,
                   compute_weight=bool(weights_out), wait_for_autoscaler=ns.wait_for_autoscaler,
                   final_check=not ns.no_final_check)
    print(opt.optimization_report.format())
    print(opt)
    save_graph(opt, out)
    with open(report_path(out), "w") as f:  # what `run` needs: threads, per-stage predictions
        json.dump(opt.optimization_report.to_json(), f, indent=1)
    print(f"schedule written to {out}, its report to {report_path(out)}  ({time.perf_counter() - t0:.1f}s in all)")
    if weights_out:
        save_weights(opt, weights_out)
        print(f"weights written to {weights_out}")
    return 0


def _auto_workers(cost) -> int:
    """One actor per local GPU for a source whose workers own a GPU each, else two CPU workers."""
    from .costs.factory import resolve_cost
    if resolve_cost(cost).resources().num_gpus > 0:
        try:
            import cupy
            return max(1, cupy.cuda.runtime.getDeviceCount())
        except Exception:
            return 1
    return 2


def report_path(schedule_path: str) -> str:
    """Where ``optimize`` writes the report of a schedule JSON (``x.json`` -> ``x.report.json``)."""
    return os.path.splitext(schedule_path)[0] + ".report.json"


def cmd_run(ns: argparse.Namespace) -> int:
    import numpy as np

    from . import ios_runtime
    from .graph.serialize import load_graph, load_weights
    from .optimizer import OptimizeReport

    graph = load_graph(ns.schedule)
    if os.path.exists(report_path(ns.schedule)):  # run it the way it was measured (threads), beside its predictions
        with open(report_path(ns.schedule)) as f:
            graph.optimization_report = OptimizeReport.from_json(json.load(f))
    if ns.weights:
        load_weights(graph, ns.weights)
    else:
        graph.init_weights(ns.seed)
    x = np.random.default_rng(ns.seed).standard_normal((ns.batch_size, *graph.input.output_shape)).astype(np.float32)
    y = ios_runtime.graph_inference(graph, batch_size=ns.batch_size, input=x, threads=ns.threads)
    lat = ios_runtime.graph_latency(graph, batch_size=ns.batch_size, warmup=ns.warmup, number=ns.number,
                                    repeat=ns.repeat, threads=ns.threads)
    print(graph)
    print(f"output shape {tuple(y.shape)}, mean {float(np.mean(y)):.6f}")
    where = ios_runtime.device_name(graph, ns.batch_size, threads=ns.threads)
    report = getattr(graph, "optimization_report", None)
    stage_ms = getattr(report, "stage_predicted_ms", None)
    predicted = "" if not stage_ms or None in stage_ms else \
        f"; predicted {sum(stage_ms):.3f} ms ({report.returned} schedule, {report.device})"
    print(f"latency ({where}): median {float(np.median(lat)):.3f} ms over {ns.repeat} repeats of {ns.number}"
          f"{predicted}")
    if ns.trace:
        trace = ios_runtime.graph_trace(graph, ns.batch_size, ns.trace, threads=ns.threads, x=x)
        other = trace["otherData"]
        versus = f", predicted {other['predicted_ms']:.3f} ms" if "predicted_ms" in other else ""
        print(f"trace of one inference ({other['measured_ms']:.3f} ms measured{versus}) written to {ns.trace}: "
              f"open it in ui.perfetto.dev or chrome://tracing")
    return 0


def cmd_table(ns: argparse.Namespace) -> int:
    from .costs.table import CostTable, format_summary
    print(format_summary(CostTable(ns.path).summary()))
    return 0


def cmd_models(ns: argparse.Namespace) -> int:
    from .models import MODELS, get_model
    for name in sorted(MODELS):
        g = get_model(name)
        print(f"{name:14s} operators={g.num_operators():4d} blocks={len(g.blocks):3d} "
              f"input={g.input.output_shape} GFLOPs={g.flops() / 1e9:.2f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .costs.factory import known_cost_names
    p = argparse.ArgumentParser(prog="ios-ray", description="Inter-operator scheduling for CNN inference on Ray")
    sub = p.add_subparsers(dest="cmd")

    o = sub.add_parser("optimize", help="find the IOS schedule of a model or graph JSON")
    o.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=f"model name, graph JSON or .onnx file (default {DEFAULT_MODEL})")
    o.add_argument("--workers", type=int, default=None,
                   help="Ray profiling actors; 0 = no Ray, in this process (default: one per local GPU, else 2)")
    o.add_argument("--wait-for-autoscaler", action="store_true",
                   help="wait for the cluster to grow instead of failing when it lacks the workers' GPUs/CPUs")
    o.add_argument("--batch-size", type=int, default=1)
    o.add_argument("--cost", default=None,
                   help=f"one of {known_cost_names()} (default: gpu if present, else cpu)")
    o.add_argument("--opt-type", default="dp_parallel_merge", choices=["dp_parallel", "dp_merge", "dp_parallel_merge"])
    o.add_argument("-r", type=int, default=3, help="max operators per group (default 3)")
    o.add_argument("-s", type=int, default=8, help="max groups per stage (default 8)")
    o.add_argument("--part-size", type=int, default=50)
    o.add_argument("--warmup", type=int, default=2)
    o.add_argument("--number", type=int, default=6)
    o.add_argument("--repeat", type=int, default=6)
    o.add_argument("--table", default=None, help="cost table path or pyarrow.fs URI (default: user cache); 'none' to disable")
    o.add_argument("--address", default=None, help="Ray cluster address (default: start a local instance)")
    o.add_argument("--out", default=None, help="schedule JSON to write (default <model>_schedule.json)")
    o.add_argument("--weights-out", default=None, help="write the optimized graph's .npz (weights are random, seeded, unless the model has its "
                        "own: a .onnx model's are always written, by default beside the schedule)")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--no-progress", action="store_true")
    o.add_argument("--no-final-check", action="store_true",
                   help="skip timing the DP's, Sequential and Greedy schedules as whole graphs (measured sources)")
    o.set_defaults(func=cmd_optimize)

    r = sub.add_parser("run", help="inference and latency of a schedule JSON on the local runtime")
    r.add_argument("schedule")
    r.add_argument("--weights", default=None, help=".npz weights (default: random, seeded)")
    r.add_argument("--batch-size", type=int, default=1)
    r.add_argument("--warmup", type=int, default=2)
    r.add_argument("--number", type=int, default=3)
    r.add_argument("--repeat", type=int, default=3)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=None,
                   help="CPU BLAS threads (default: those the schedule was measured with, from its report, else 1)")
    r.add_argument("--trace", default=None, metavar="PATH",
                   help="also write a Chrome/Perfetto trace of one inference (stages and groups per stream)")
    r.set_defaults(func=cmd_run)

    t = sub.add_parser("table", help="summary of a cost table")
    t.add_argument("path", nargs="?", default=None)
    t.set_defaults(func=cmd_table)

    m = sub.add_parser("models", help="list the model zoo")
    m.set_defaults(func=cmd_models)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not getattr(ns, "func", None):
        parser.print_help()
        return 2
    try:
        return ns.func(ns)
    except (ValueError, OSError) as exc:  # bad input or a missing/unreadable/unwritable file: no traceback
        print(f"ios-ray: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

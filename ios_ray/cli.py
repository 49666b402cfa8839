"""The ``ios-ray`` command: ``optimize``, ``run``, ``table``, ``models``.

``ios-ray optimize`` with no arguments is the project's main job: a real optimization of the default
model on a local Ray instance, measured on the GPU when there is one, else on the CPU reference runtime.

Every error ends in one line on stderr, ``ios-ray: error: ...``, and exit status 2 (``ios-ray --traceback
...`` shows the traceback instead); bad arguments are refused before any work, and output paths are
checked before the optimization starts.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import List, Optional

DEFAULT_MODEL = "squeezenet"
EXIT_ERROR = 2
MAX_ERROR_CHARS = 1000


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (its default prints the whole usage first)."""

    def error(self, message: str):
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default, unless it has none (None, False) or its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" not in text and action.option_strings and action.default is not None
                and action.default is not False and action.default != argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum {low}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def _tolerance(text: str) -> float:
    """A finite number >= 0 (a lazy-profiling tolerance or fill)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{value} is not a finite number >= 0")
    return value


def _load_graph_arg(arg: str):
    from .graph.serialize import load_graph
    from .models import MODELS, get_model
    if arg in MODELS:
        return get_model(arg)
    if arg.endswith(".onnx"):
        from .onnx_import import from_onnx
        return from_onnx(arg)   # OnnxImportError is a ValueError: one line, exit 2
    if os.path.isfile(arg):
        return load_graph(arg)
    raise ValueError(f"{arg!r} is neither a model ({', '.join(sorted(MODELS))}), an .onnx file nor a graph JSON file")


def _check_output(path: str, what: str) -> None:
    """Refuse an output path whose directory is missing or not writable, before any work is done."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{what} {path!r} is a directory; give a file name")
    if not os.path.isdir(folder):
        raise ValueError(f"{what} {path!r}: directory {folder!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{what} {path!r}: directory {folder!r} is not writable")


def cmd_optimize(ns: argparse.Namespace) -> int:
    from .graph.serialize import save_graph, save_weights
    from .dp.lazy import LazyOptions
    from .costs.factory import gpu_options
    from .optimizer import default_num_workers, optimize

    graph = _load_graph_arg(ns.model)
    out = ns.out or f"{graph.name}_schedule.json"
    _check_output(out, "--out")
    # a model with its own weights (ONNX) keeps them, and the optimized graph's are written beside the schedule
    weights_out = ns.weights_out or (os.path.splitext(out)[0] + ".npz" if graph.has_weights() else None)
    if weights_out:
        _check_output(weights_out, "--weights-out")
    if weights_out and not graph.has_weights():
        graph.init_weights(ns.seed)
    table = False if ns.table == "none" else ns.table
    cost = gpu_options(ns.cost, workers_per_gpu=ns.workers_per_gpu)
    workers = default_num_workers(cost) if ns.workers is None else ns.workers
    t0 = time.perf_counter()
    opt = optimize(graph, batch_size=ns.batch_size, opt_type=ns.opt_type, cost=cost,
                   max_group_size=ns.r, max_num_groups=ns.s, max_part_size=ns.part_size,
                   warmup=ns.warmup, number=ns.number, repeat=ns.repeat, num_workers=workers,
                   cost_table=table, address=ns.address, progress=not ns.no_progress,
                   compute_weight=bool(weights_out), wait_for_autoscaler=ns.wait_for_autoscaler,
                   final_check=not ns.no_final_check, profiling=ns.profiling,
                   lazy=LazyOptions(tolerance=ns.tolerance, fill=ns.fill))
    print(opt.optimization_report.format())
    print(opt)
    save_graph(opt, out)
    with open(report_path(out), "w") as f:  # what `run` needs: threads, per-stage predictions
        json.dump(opt.optimization_report.to_json(), f, indent=1)
    print(f"schedule written to {os.path.abspath(out)}, its report to {report_path(out)}  ({time.perf_counter() - t0:.1f}s in all)")
    if weights_out:
        save_weights(opt, weights_out)
        print(f"weights written to {os.path.abspath(weights_out)}")
    return 0


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
    y = ios_runtime.graph_inference(graph, batch_size=ns.batch_size, input=x, device=ns.device,
                                     threads=ns.threads)
    lat = ios_runtime.graph_latency(graph, batch_size=ns.batch_size, warmup=ns.warmup, number=ns.number,
                                    repeat=ns.repeat, device=ns.device, threads=ns.threads)
    print(graph)
    print(f"output shape {tuple(y.shape)}, mean {float(np.mean(y)):.6f}")
    where = ios_runtime.device_name(graph, ns.batch_size, device=ns.device, threads=ns.threads)
    report = getattr(graph, "optimization_report", None)
    stage_ms = getattr(report, "stage_predicted_ms", None)
    predicted = "" if not stage_ms or None in stage_ms else \
        f"; predicted {sum(stage_ms):.3f} ms ({report.returned} schedule, {report.device})"
    print(f"latency ({where}): median {float(np.median(lat)):.3f} ms over {ns.repeat} repeats of {ns.number}"
          f"{predicted}")
    if ns.trace:
        trace = ios_runtime.graph_trace(graph, ns.batch_size, ns.trace, device=ns.device, threads=ns.threads, x=x)
        other = trace["otherData"]
        versus = f", predicted {other['predicted_ms']:.3f} ms" if "predicted_ms" in other else ""
        print(f"trace of one inference ({other['measured_ms']:.3f} ms measured{versus}) written to {ns.trace}: "
              f"open it in ui.perfetto.dev or chrome://tracing")
    return 0


def cmd_table(ns: argparse.Namespace) -> int:
    from .costs.table import CostTable, format_summary
    table = CostTable(ns.path)
    if not table.exists():
        raise ValueError(f"no cost table at {table.location}: nothing has been written there"
                         + ("" if ns.path else " yet (the default table; --table names another)"))
    print(format_summary(table.summary()))
    return 0


def cmd_models(ns: argparse.Namespace) -> int:
    from .models import MODELS, get_model
    for name in sorted(MODELS):
        g = get_model(name)
        print(f"{name:14s} operators={g.num_operators():4d} blocks={len(g.blocks):3d} "
              f"input={g.input.output_shape} GFLOPs={g.flops() / 1e9:.2f}")
    return 0


def _add_timing(parser: argparse.ArgumentParser, warmup: int, number: int, repeat: int) -> None:
    parser.add_argument("--warmup", type=_int_at_least(0), default=warmup, help="untimed runs first")
    parser.add_argument("--number", type=_int_at_least(1), default=number, help="runs per timed repeat")
    parser.add_argument("--repeat", type=_int_at_least(1), default=repeat, help="timed repeats (the median is kept)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .costs.factory import known_cost_names
    from .costs.table import default_table_path
    p = _Parser(prog="ios-ray", description="Inter-operator scheduling for CNN inference on Ray",
                formatter_class=_HelpFormatter)
    p.add_argument("--version", action="version", version=f"ios-ray {__version__}")
    p.add_argument("--traceback", action="store_true", help="on an error, show the traceback, not one line")
    sub = p.add_subparsers(dest="cmd", metavar="{optimize,run,table,models}")

    o = sub.add_parser("optimize", help="find the IOS schedule of a model or graph JSON",
                       formatter_class=_HelpFormatter)
    o.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=f"model name, graph JSON or .onnx file (default {DEFAULT_MODEL})")
    o.add_argument("--workers", type=_int_at_least(0), default=None,
                   help="Ray profiling actors; 0 = no Ray, in this process (default: one per local GPU for gpu "
                        "costs, in this process for analytic estimates, else 2)")
    o.add_argument("--workers-per-gpu", type=_int_at_least(1), default=None,
                   help="GPU costs: Ray actors sharing each GPU; they overlap host work and take turns on the "
                        "device, so timings stay alone (default: the gpu source's)")
    o.add_argument("--wait-for-autoscaler", action="store_true",
                   help="wait for the cluster to grow instead of failing when it lacks the workers' GPUs/CPUs")
    o.add_argument("--batch-size", type=_int_at_least(1), default=1, help="batch size stages are measured at")
    o.add_argument("--cost", default=None,
                   help=f"one of {known_cost_names()} (default: gpu if present, else cpu)")
    o.add_argument("--opt-type", default="dp_parallel_merge", choices=["dp_parallel", "dp_merge", "dp_parallel_merge"],
                   help="concurrent groups, merged convolutions, or both")
    o.add_argument("-r", type=_int_at_least(1), default=3, help="max operators per group")
    o.add_argument("-s", type=_int_at_least(1), default=8, help="max groups per stage")
    o.add_argument("--part-size", type=_int_at_least(1), default=50, help="max operators per part of a block")
    o.add_argument("--profiling", default="lazy", choices=["lazy", "exhaustive"],
                   help="lazy: measure only the stages the DP's optimum can use; exhaustive: every stage")
    o.add_argument("--tolerance", type=_tolerance, default=0.0,
                   help="lazy: stop once the schedule is proved within this fraction of the optimum, e.g. 0.1 "
                        "(0: proved optimal)")
    o.add_argument("--fill", type=_tolerance, default=None,
                   help="lazy: per round, also measure each part's unknown stages nearest its optimum, this many "
                        "per 1,000 of its transitions (fewer, fuller rounds; default: 0.5 on a GPU, 0 elsewhere)")
    _add_timing(o, warmup=2, number=6, repeat=6)
    o.add_argument("--table", default=None,
                   help=f"cost table path or pyarrow.fs URI; 'none' to use none (default: {default_table_path()})")
    o.add_argument("--address", default=None, help="Ray cluster address (default: start a local instance)")
    o.add_argument("--out", default=None,
                   help="schedule JSON to write (default: <graph name>_schedule.json in the current directory)")
    o.add_argument("--weights-out", default=None,
                   help="write the optimized graph's .npz (weights are random, seeded, unless the model has its "
                        "own: a .onnx model's are always written, by default beside the schedule)")
    o.add_argument("--seed", type=int, default=0, help="seed of the weights --weights-out writes")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    o.add_argument("--no-final-check", action="store_true",
                   help="skip timing the DP's, Sequential and Greedy schedules as whole graphs (measured sources)")
    o.set_defaults(func=cmd_optimize)

    r = sub.add_parser("run", help="inference and latency of a schedule JSON on the local runtime",
                       formatter_class=_HelpFormatter)
    r.add_argument("schedule", help="a schedule JSON written by ios-ray optimize")
    r.add_argument("--weights", default=None, help=".npz weights (default: random, seeded)")
    r.add_argument("--batch-size", type=_int_at_least(1), default=1, help="batch size of the input")
    _add_timing(r, warmup=2, number=3, repeat=3)
    r.add_argument("--seed", type=int, default=0, help="seed of the input and of random weights")
    r.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto",
                   help="where to run (auto: the device the schedule was measured on, from its report; else the "
                        "GPU when one works, else the CPU)")
    r.add_argument("--threads", type=_int_at_least(1), default=None,
                   help="CPU BLAS threads (default: those the schedule was measured with, from its report, else 1)")
    r.add_argument("--trace", default=None, metavar="PATH",
                   help="also write a Chrome/Perfetto trace of one inference (stages and groups per stream)")
    r.set_defaults(func=cmd_run)

    t = sub.add_parser("table", help="summary of a cost table", formatter_class=_HelpFormatter)
    t.add_argument("path", nargs="?", default=None,
                   help=f"cost table path or pyarrow.fs URI (default: {default_table_path()})")
    t.set_defaults(func=cmd_table)

    m = sub.add_parser("models", help="list the model zoo", formatter_class=_HelpFormatter)
    m.set_defaults(func=cmd_models)
    return p


def _one_line(exc: BaseException) -> str:
    """The error as one line: the message of an expected error, else also its type."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > MAX_ERROR_CHARS:  # e.g. a worker's remote traceback folded into one line
        text = text[:MAX_ERROR_CHARS] + " ... (`ios-ray --traceback ...` shows all)"
    if isinstance(exc, (ValueError, OSError)) or type(exc).__module__.startswith("ios_ray."):
        return text
    return f"{type(exc).__name__}: {text} (unexpected; `ios-ray --traceback ...` shows where)"


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version, or a bad argument (its one line already printed)
        return stop.code if isinstance(stop.code, int) else EXIT_ERROR
    if not getattr(ns, "func", None):
        parser.print_help()
        return EXIT_ERROR
    ray_was_up = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    try:
        return ns.func(ns)
    except KeyboardInterrupt:
        print("ios-ray: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if ns.traceback:
            raise
        print(f"ios-ray: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        ray = sys.modules.get("ray")
        if ray is not None and not ray_was_up and ray.is_initialized():
            ray.shutdown()  # the instance this command started (a caller's own Ray is left running)


if __name__ == "__main__":
    sys.exit(main())

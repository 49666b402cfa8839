"""torchvision CNNs through ONNX: export, import, optimize, check against PyTorch, time against PyTorch.

One model or several, on one GPU (each model fits a 10-minute device call)::

    python benchmarks/onnx_zoo.py --models resnet50,googlenet [--math fp32,tf32] [--budget-s 540]
    python benchmarks/onnx_zoo.py --table            # the README table from benchmarks/results/onnx_zoo/*.json
    python benchmarks/onnx_zoo.py --device cpu --models squeezenet1_1 --tiny       # the CPU path, a smoke run

For each model (``MODELS``: torchvision's, random weights, eval mode, batch 1): ``torch.onnx.export``
(the TorchScript exporter, ``dynamo=False``, where the installed torch has it: it needs no onnxscript)
-> ``ios_ray.from_onnx`` -> for each math mode (strict fp32; TF32 convolutions): our Sequential schedule,
IOS-Both (``optimize``, ``dp_parallel_merge``, r=3, s=8, profiled on this GPU, one cost table per math
mode; the returned graph, i.e. after the final check), PyTorch CUDA graph and ``torch.compile`` of the
torchvision module itself, all timed the same way (median over ``repeat`` repeats of ``number`` runs
after ``warmup``, CUDA events; benchmarks/torch_from_ir.module_latency for PyTorch). Every output is
compared with PyTorch's fp32 eager output (relative L2 error, ``rel_err``; fp32 rows should be ~1e-6).

Writes one JSON per model to ``benchmarks/results/onnx_zoo/<model>.json`` (and ``$OUT`` when set) after
every row, so a run cut short keeps what it measured; steps that would start after ``--budget-s``
are skipped and listed. Imports torch, torchvision and CuPy lazily: ``--help`` and ``--table`` need none.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

RESULTS = ROOT / "benchmarks" / "results" / "onnx_zoo"
# torchvision builder name -> (input H = W, extra constructor arguments)
MODELS: Dict[str, tuple] = {
    "resnet50": (224, {}),
    "googlenet": (224, {"aux_logits": False, "init_weights": True}),
    "inception_v3": (299, {"aux_logits": False, "init_weights": True}),
    "squeezenet1_1": (224, {}),
    "densenet121": (224, {}),
    "mobilenet_v2": (224, {}),
    "mobilenet_v3_large": (224, {}),
    "efficientnet_b0": (224, {}),
}
COLUMNS = ["Sequential", "IOS-Both", "PyTorch CUDA graph", "torch.compile"]


def rel_l2(a, b) -> float:
    """Relative L2 error of ``a`` against ``b``; NaN when ``b`` carries no signal (a void check is no pass)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    ref = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / ref) if ref > 1e-20 else float("nan")


def stats(samples) -> dict:
    return {"median_ms": float(np.median(samples)), "min_ms": float(min(samples)), "max_ms": float(max(samples)),
            "samples": len(samples)}


@dataclass(frozen=True)
class Settings:
    """What one run does: timing (warmup, number, repeat), the pruning, the device and the time budget."""
    warmup: int = 20
    number: int = 20
    repeat: int = 15
    r: int = 3
    s: int = 8
    device: str = "gpu"
    budget_s: float = 540.0
    compile: bool = True            # torch.compile rows
    compile_mode: str = "max-autotune"   # torch.compile's mode (max-autotune autotunes for minutes a network)


class Recorder:
    """The JSON document of one model, written after every row (a run cut short keeps its rows)."""

    def __init__(self, model: str, doc: dict, t_start: float, out_dir: Path):
        self.model = model
        self.doc = {**doc, "model": model, "results": [], "skipped": []}
        self.t_start = t_start
        self.path = out_dir / f"{model}.json"

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.doc, indent=1)
        self.path.write_text(text)
        if os.environ.get("OUT"):
            Path(os.environ["OUT"], self.path.name).write_text(text)

    def add(self, row: dict) -> None:
        self.doc["results"].append(row)
        err = f"  rel_err {row['rel_err']:.1e}" if row.get("rel_err") is not None else ""
        print(f"[{self.elapsed():6.1f}s] {self.model} {row['math']} {row['schedule']}: {row['median_ms']:.3f} ms{err}",
              flush=True)
        self.save()

    def skip(self, what: str) -> None:
        self.doc["skipped"].append(what[:400])
        print(f"[{self.elapsed():6.1f}s] skipped: {what[:400]}", flush=True)
        self.save()


# ----- export and import -------------------------------------------------------------------------------

def torch_model(name: str):
    """The torchvision model ``name`` with random weights, in eval mode, and its input size."""
    import torch
    import torchvision
    size, kwargs = MODELS[name]
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None, **kwargs)
    # torchvision's own random init (e.g. GoogLeNet's truncated normal, std 0.01) shrinks the activations
    # layer by layer until the output is all zeros, which would make the output check void: He init keeps
    # their scale, so the comparison with PyTorch means something
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return model.eval(), size


def export_onnx(model, x, path: str) -> str:
    """``torch.onnx.export`` with the TorchScript exporter (``dynamo=False`` where the argument exists);
    returns which exporter wrote ``path``."""
    import torch
    kwargs = dict(input_names=["x"], output_names=["y"], opset_version=17, do_constant_folding=True)
    try:
        torch.onnx.export(model, (x,), path, dynamo=False, **kwargs)
        return "torchscript (dynamo=False)"
    except TypeError:   # an older torch without the dynamo argument: its only exporter is TorchScript
        torch.onnx.export(model, (x,), path, **kwargs)
        return "torchscript"


# ----- timing ------------------------------------------------------------------------------------------

def ours_gpu(ctx, graph, x: np.ndarray, st: Settings):
    """(statistics, output) of ``graph`` (its schedule) on our GPU runtime."""
    from ios_ray.runtime.gpu.executor import GpuExecutor
    ex = GpuExecutor(graph, x.shape[0], context=ctx)
    try:
        out = ex.run(x)
        seq, _ = ex.latency(st.warmup, st.number, st.repeat, x=x)
        return {**stats(seq), "stages": ex.num_stages}, out
    finally:
        ex.close()


def ours_cpu(graph, x: np.ndarray, st: Settings):
    """(statistics, output) of ``graph`` on the numpy reference runtime."""
    from ios_ray import ios_runtime
    out = ios_runtime.graph_inference(graph, x.shape[0], x, device="cpu")
    seq = ios_runtime.graph_latency(graph, x.shape[0], st.warmup, st.number, st.repeat, device="cpu")
    return stats(seq), out


def torch_cpu_latency(model, x, st: Settings):
    """(per-repeat ms, output) of PyTorch eager on the CPU, timed like ours (perf_counter)."""
    import torch
    with torch.no_grad():
        for _ in range(st.warmup):
            model(x)
        times = []
        for _ in range(st.repeat):
            t0 = time.perf_counter()
            for _ in range(st.number):
                y = model(x)
            times.append((time.perf_counter() - t0) * 1e3 / st.number)
    return times, y.numpy()


def cost_source(st: Settings, tf32: bool):
    """The stage cost source for ``optimize``: this GPU's profiler (strict fp32 or TF32), or the CPU's."""
    if st.device == "cpu":
        return "cpu"
    from ios_ray.profile.gpu import GpuProfiler
    return GpuProfiler(0, tf32=tf32)


def run_model(name: str, st: Settings, rec: Recorder, tables: str) -> None:
    """Every row of one model (see the module docstring)."""
    import onnx
    import torch
    from ios_ray import from_onnx
    model, size = torch_model(name)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32))
    path = os.path.join(tables, f"{name}.onnx")
    t0 = time.perf_counter()
    rec.doc["exporter"] = export_onnx(model, x, path)
    graph = from_onnx(path, name=name)
    rec.doc.update(export_import_s=time.perf_counter() - t0, operators=graph.num_operators(),
                   blocks=len(graph.blocks), onnx_nodes=len(onnx.load(path).graph.node))
    dev = "cuda" if st.device == "gpu" else "cpu"
    model = model.to(dev)
    xd = x.to(dev)
    with torch.no_grad():   # the reference: PyTorch fp32 eager
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        expected = model(xd).float().cpu().numpy()
    xn = x.numpy()
    for math in (["fp32"] if st.device == "cpu" else rec.doc["math"]):
        tf32 = math == "tf32"
        ctx = None
        if st.device == "gpu":
            from ios_ray.runtime.gpu.context import GpuContext
            ctx = GpuContext(0, tf32=tf32)
        base = {"model": name, "batch": 1, "math": math}

        def ours(g):
            return ours_gpu(ctx, g, xn, st) if ctx is not None else ours_cpu(g, xn, st)

        graph.sequential_schedule()
        res, out = ours(graph)
        rec.add({**base, "runtime": "ios_ray", "schedule": "Sequential", **res, "rel_err": rel_l2(out, expected)})
        if rec.elapsed() > st.budget_s:
            rec.skip(f"IOS-Both {math}: over the time budget")
        else:
            try:
                _ios_row(graph, st, rec, base, (ours, expected, tables))
            except Exception as exc:  # noqa: BLE001 -- recorded, PyTorch's rows still run
                rec.skip(f"IOS-Both {math}: {type(exc).__name__}: {exc}")
        _torch_rows(model, xd, st, rec, base, expected)


def _ios_row(graph, st: Settings, rec: Recorder, base: dict, run) -> None:
    """IOS-Both: ``graph`` optimized (profiled here, one cost table per math mode) and run; ``run`` is
    (our runner, PyTorch's fp32 output, the scratch directory)."""
    from ios_ray import optimize
    from ios_ray.costs.table import CostTable
    ours, expected, tables = run
    t0 = time.perf_counter()
    opt = optimize(graph, 1, "dp_parallel_merge", compute_weight=True, cost=cost_source(st, base["math"] == "tf32"),
                   cost_table=CostTable(os.path.join(tables, f"costs_{base['math']}")), max_group_size=st.r,
                   max_num_groups=st.s, warmup=min(st.warmup, 2), number=min(st.number, 6), repeat=min(st.repeat, 6))
    opt_s = time.perf_counter() - t0
    rep = opt.optimization_report
    res, out = ours(opt)
    rec.add({**base, "runtime": "ios_ray", "schedule": "IOS-Both", **res, "rel_err": rel_l2(out, expected),
             "optimize_s": opt_s, "r": st.r, "s": st.s, "predicted_ms": rep.predicted_latency_ms,
             "returned": rep.returned, "unique_stages": rep.unique_stages, "errors": rep.errors,
             "seconds": rep.seconds})


def _torch_rows(model, xd, st: Settings, rec: Recorder, base: dict, expected: np.ndarray) -> None:
    """PyTorch's rows: CUDA graph and torch.compile on the GPU, eager on the CPU."""
    tf32 = base["math"] == "tf32"
    if st.device == "cpu":
        times, out = torch_cpu_latency(model, xd, st)
        rec.add({**base, "runtime": "pytorch", "schedule": "PyTorch eager (CPU)", **stats(times),
                 "rel_err": rel_l2(out, expected)})
        return
    from torch_from_ir import TORCH_MODES, module_latency
    for mode in ("cuda_graph", "compile"):
        label = TORCH_MODES[mode]
        if mode == "compile" and (not st.compile or rec.elapsed() > st.budget_s):
            rec.skip(f"{label} {base['math']}: {'over the time budget' if st.compile else '--no-compile'}")
            continue
        t0 = time.perf_counter()
        try:
            times, out = module_latency(model, xd, tf32, mode, (st.warmup, st.number, st.repeat), st.compile_mode)
        except Exception as exc:  # noqa: BLE001 -- recorded, the run goes on
            rec.skip(f"{label} {base['math']}: {type(exc).__name__}: {exc}")
            continue
        extra = {"compile_mode": st.compile_mode} if mode == "compile" else {}
        rec.add({**base, "runtime": "pytorch", "schedule": label, **stats(times), "wall_s": time.perf_counter() - t0,
                 "rel_err": rel_l2(out, expected), **extra})


# ----- the table ---------------------------------------------------------------------------------------

def format_table(docs: List[dict]) -> str:
    """The README table: per model and math mode, the median ms of each column, IOS-Both's speedup over
    Sequential and over the faster PyTorch, and IOS-Both's error against PyTorch."""
    lines = ["| model | math | operators (blocks) | " + " | ".join(COLUMNS) +
             " | IOS-Both vs Sequential | IOS-Both vs best PyTorch | IOS-Both rel. err. |",
             "|---|---|---|" + "---|" * (len(COLUMNS) + 3)]
    for doc in docs:
        for math in doc.get("math", ["fp32"]):
            rows = {r["schedule"]: r for r in doc["results"] if r["math"] == math}
            if not rows:
                continue
            ms: Dict[str, Optional[float]] = {c: rows[c]["median_ms"] if c in rows else None for c in COLUMNS}
            cells = [f"{v:.3f}" if v is not None else "–" for v in ms.values()]
            ios, seq = ms["IOS-Both"], ms["Sequential"]
            torch_best = min([v for k, v in ms.items() if k.startswith(("PyTorch", "torch")) and v], default=None)
            speed = f"{seq / ios:.2f}x" if ios and seq else "–"
            vs_torch = f"{torch_best / ios:.2f}x" if ios and torch_best else "–"
            err = rows["IOS-Both"].get("rel_err") if "IOS-Both" in rows else None
            lines.append(f"| {doc['model']} | {math} | {doc.get('operators', '?')} ({doc.get('blocks', '?')}) | "
                         + " | ".join(cells) + f" | {speed} | {vs_torch} | "
                         + (f"{err:.1e}" if err is not None else "–") + " |")
    return "\n".join(lines)


def load_docs(names: List[str]) -> List[dict]:
    docs = []
    for name in names:
        path = RESULTS / f"{name}.json"
        if path.exists():
            docs.append(json.loads(path.read_text()))
    return docs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma separated, of {', '.join(MODELS)}")
    p.add_argument("--math", default="fp32,tf32")
    p.add_argument("--device", default="gpu", choices=["gpu", "cpu"])
    p.add_argument("-r", type=int, default=3)
    p.add_argument("-s", type=int, default=8)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--number", type=int, default=20)
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--budget-s", type=float, default=540.0, help="steps starting after this are skipped")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile (it autotunes for minutes)")
    p.add_argument("--compile-mode", default="max-autotune", choices=["max-autotune", "reduce-overhead"],
                   help="torch.compile's mode (reduce-overhead: CUDA graphs without autotuning, compiles in a minute)")
    p.add_argument("--tiny", action="store_true", help="a smoke run: warmup 1, number 1, repeat 2, r=1, s=2")
    p.add_argument("--table", action="store_true", help="print the table of the stored results and stop")
    p.add_argument("--out-dir", default=str(RESULTS))
    args = p.parse_args(argv)
    names = [m for m in args.models.split(",") if m]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        p.error(f"unknown models {unknown}; known: {', '.join(MODELS)}")
    if args.table:
        print(format_table(load_docs(names)))
        return 0
    st = Settings(warmup=args.warmup, number=args.number, repeat=args.repeat, r=args.r, s=args.s, device=args.device,
                  budget_s=args.budget_s, compile=not args.no_compile, compile_mode=args.compile_mode)
    if args.tiny:
        st = Settings(warmup=1, number=1, repeat=2, r=1, s=2, device=args.device, budget_s=args.budget_s,
                      compile=False)
    import torch
    t_start = time.perf_counter()
    doc = {"command": " ".join([os.path.basename(sys.executable)] + sys.argv), "python": platform.python_version(),
           "torch": torch.__version__, "device": args.device, "math": args.math.split(","),
           "timing": {"warmup": st.warmup, "number": st.number, "repeat": st.repeat,
                      "statistic": "median over repeats of (elapsed / number)"}}
    if args.device == "gpu":
        from ios_ray.profile.gpu import gpu_device_info
        doc["gpu"] = gpu_device_info(0).__dict__
    tables = tempfile.mkdtemp(prefix="ios_ray_onnx_zoo_")
    docs = []
    for name in names:
        rec = Recorder(name, doc, t_start, Path(args.out_dir))
        if rec.elapsed() > st.budget_s:
            rec.skip(f"{name}: over the time budget")
            continue
        try:
            run_model(name, st, rec, tables)
        except Exception as exc:  # noqa: BLE001 -- one model failing does not stop the others
            rec.skip(f"{name}: {type(exc).__name__}: {exc}")
        rec.doc["wall_s"] = rec.elapsed()
        rec.save()
        docs.append(rec.doc)
    print(format_table(docs))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Translate an ios_ray Graph into a ``torch.nn.Module`` with the same shapes and weights (a baseline).

Data flow: Graph (weights set) -> TorchFromIR(graph): every node's parameters registered as buffers
-> forward(x): nodes in block / dependency order, inputs gathered with IOS term semantics (values of a
term summed, terms concatenated on channels) -> the last block's exit node.

This is PyTorch's eager execution of exactly our architecture (captured with ``torch.cuda.CUDAGraph``,
its CUDA-graph execution; through ``torch.compile(mode="max-autotune")``, inductor's generated kernels
replayed as CUDA graphs, what a PyTorch user picks today): the comparison points for our runtime.
Only imported by the benchmark; torch is not a dependency of ios_ray.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F

from ios_ray.graph.compound import Sequential
from ios_ray.graph.ir import Conv, Element, Graph, Identity, Node, Pool, Relu, SepConv, topo_order


def _act(x: torch.Tensor, act: str) -> torch.Tensor:
    if act == "relu":
        return F.relu(x)
    if act == "tanh":
        return torch.tanh(x)
    if act == "sigmoid":
        return torch.sigmoid(x)
    if act == "identity":
        return x
    raise ValueError(f"unknown activation {act!r}")


class TorchFromIR(torch.nn.Module):
    """``graph`` as a torch module; weights copied from ``node.params`` (call graph.init_weights first)."""

    def __init__(self, graph: Graph):
        super().__init__()
        if not graph.has_weights():
            raise ValueError(f"graph {graph.name} has no weights; call graph.init_weights() first")
        self.graph = graph
        self.order: List[Node] = [n for b in graph.blocks for n in topo_order(b)]
        self._names: Dict[int, Dict[str, str]] = {}
        for i, node in enumerate(self.order):
            # a Sequential's own params are its inner nodes' ("<j>.<param>"): each inner node gets its own
            inner = node.nodes if isinstance(node, Sequential) else [node]
            for j, n in enumerate(inner):
                names = {}
                for pname, value in n.params.items():
                    buf = f"p{i}_{j}_{pname}"
                    self.register_buffer(buf, torch.from_numpy(value.copy()))
                    names[pname] = buf
                self._names[id(n)] = names

    def _p(self, node: Node, pname: str) -> torch.Tensor:
        return getattr(self, self._names[id(node)][pname])

    @staticmethod
    def _terms(node: Node, env: Dict[int, torch.Tensor]) -> List[torch.Tensor]:
        out = []
        for term in node.inputs:
            acc = None
            for v in term:
                t = env[id(v.node)]
                if v.begin != 0 or v.end != t.shape[1]:
                    t = t[:, v.begin:v.end]
                acc = t if acc is None else acc + t
            out.append(acc)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env: Dict[int, torch.Tensor] = {id(self.graph.input): x}
        for node in self.order:
            terms = self._terms(node, env)
            if isinstance(node, Sequential):   # its inner nodes in turn, each on the whole previous output
                for inner in node.nodes:
                    terms = [self._compute(inner, terms)]
                env[id(node)] = terms[0]
            else:
                env[id(node)] = self._compute(node, terms)
        return env[id(self.graph.blocks[-1].exit_node)]

    def _compute(self, node: Node, terms: List[torch.Tensor]) -> torch.Tensor:
        """``node``'s output from its input terms (each already summed)."""
        h = terms[0] if len(terms) == 1 else torch.cat(terms, dim=1)
        if isinstance(node, Conv):
            y = F.conv2d(h, self._p(node, "weight"), self._p(node, "bias"), node.stride,
                         node.padding, 1, node.groups)
            y = _act(y, node.act)
        elif isinstance(node, SepConv):
            if node.pre_act == "relu":
                h = F.relu(h)
            h = F.conv2d(h, self._p(node, "dw_weight"), self._p(node, "dw_bias"), node.stride, node.padding, 1,
                         h.shape[1])
            y = _act(F.conv2d(h, self._p(node, "pw_weight"), self._p(node, "pw_bias")), node.act)
        elif isinstance(node, Pool):
            if node.pool_type == "global_avg":
                y = F.adaptive_avg_pool2d(h, 1)
            elif node.pool_type == "max":
                y = F.max_pool2d(h, node.kernel, node.stride, node.padding)
            else:
                y = F.avg_pool2d(h, node.kernel, node.stride, node.padding, count_include_pad=True)
        elif isinstance(node, Relu):
            y = F.relu(h)
        elif isinstance(node, Element):
            y = terms[0]
            for t in terms[1:]:
                y = y + t if node.op_type == "add" else y * t
        elif isinstance(node, Identity):
            y = h
        else:
            raise ValueError(f"{node.display()}: no torch translation for op type {node.type!r}")
        return y


TORCH_MODES = {"eager": "PyTorch eager", "cuda_graph": "PyTorch CUDA graph", "compile": "torch.compile"}


def _cuda_graph_runner(model, x):
    """``model(x)`` captured once as a ``torch.cuda.CUDAGraph`` (after warm-up on a side stream):
    (replay, the static output)."""
    static_x = x.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            model(static_x)
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        static_y = model(static_x)
    return g.replay, lambda: static_y


COMPILE_MODES = ("max-autotune", "reduce-overhead")   # torch.compile modes; both replay CUDA graphs


def _compiled_runner(model, x, compile_mode: str = "max-autotune"):
    """``torch.compile(model, mode=compile_mode)`` (inductor and CUDA graphs; ``max-autotune`` also autotunes
    its kernels, for minutes): (run, last output). Compiling happens in the first calls, i.e. in the warm-up.
    Dynamo's caches are reset first, so a compile under other TF32 flags starts afresh."""
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"compile_mode must be one of {COMPILE_MODES}, got {compile_mode!r}")
    torch._dynamo.reset()
    compiled = torch.compile(model, mode=compile_mode)
    mark_step = getattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin", None)
    holder = {}

    def run():
        if mark_step is not None:  # each call is a new inference: CUDA-graph trees may reuse its buffers
            mark_step()
        holder["y"] = compiled(x)
    return run, lambda: holder["y"]


def torch_latency(graph: Graph, batch_size: int, tf32: bool, mode: str, settings: Tuple[int, int, int] = (10, 20, 10)):
    """(per-repeat latencies in ms, output for a fixed input, that input) of PyTorch running ``graph``.

    Args:
        mode: ``eager``, ``cuda_graph`` (one ``torch.cuda.CUDAGraph`` replayed) or ``compile``
            (``torch.compile(mode="max-autotune")``); see ``TORCH_MODES``.
        settings: (warmup, number, repeat), as our runtime's timings: CUDA events around ``number`` runs.
    cuDNN autotuning (``cudnn.benchmark``) is on; ``tf32`` sets PyTorch's cuDNN and matmul TF32 flags.

    Raises:
        ValueError: an unknown mode; whatever PyTorch raises (the benchmark records it as skipped).
    """
    import numpy as np
    dev = torch.device("cuda")
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((batch_size, *graph.input.output_shape),
                                                                    dtype=np.float32)).to(dev)
    times, out = module_latency(TorchFromIR(graph).to(dev).eval(), x, tf32, mode, settings)
    return times, out, x.cpu().numpy()


def module_latency(model, x, tf32: bool, mode: str, settings: Tuple[int, int, int] = (10, 20, 10),
                   compile_mode: str = "max-autotune"):
    """(per-repeat latencies in ms, output as numpy) of the CUDA module ``model`` on the CUDA tensor ``x``;
    ``mode``, ``settings`` and the cuDNN/TF32 flags as ``torch_latency`` says; ``compile_mode`` is
    torch.compile's mode (``COMPILE_MODES``) for ``mode="compile"``.

    Raises:
        ValueError: an unknown mode; whatever PyTorch raises.
    """
    if mode not in TORCH_MODES:
        raise ValueError(f"mode must be one of {sorted(TORCH_MODES)}, got {mode!r}")
    warmup, number, repeat = settings
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = bool(tf32)
    torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
    with torch.no_grad():
        if mode == "cuda_graph":
            run, output = _cuda_graph_runner(model, x)
        elif mode == "compile":
            run, output = _compiled_runner(model, x, compile_mode)
        else:
            holder = {}

            def run():
                holder["y"] = model(x)
            output = lambda: holder["y"]  # noqa: E731
        for _ in range(max(warmup, 3 if mode == "compile" else 0)):
            run()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(repeat):
            start.record()
            for _ in range(number):
                run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / number)
        out = output().float().cpu().numpy()
    return times, out

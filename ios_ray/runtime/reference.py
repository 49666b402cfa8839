"""NumPy reference runtime: float32 kernels for every IR operator and a stage-by-stage executor.

Data flow::

    Graph (weights + schedule) --ReferenceExecutor--> check_schedule, check weights, plan stages
    run(x): env = {graph.input: x}
        for block, for stage, for group (one after another), for node in group:
            env[node] = run_node(node, env)   # KERNELS[node.type](node, env): gather inputs, compute
        -> env[last block's exit node]

``env`` maps a ``Node`` (nodes hash by identity) to its output, a float32 array ``(N, C, H, W)``.

The kernels are batch-first NCHW and never loop over pixels in Python: convolutions are im2col
(``sliding_window_view``) + one batched matmul over the groups, depthwise convolutions and pools loop
only over kernel positions. The reference has no concurrency: the groups of a stage run in order, so
its stage latency is the sum of its groups' latencies. It is the correctness oracle for the GPU runtime
and the CPU cost source, not a fast runtime.

``KERNELS`` maps each op type (declared in ``graph/ops.py``) to its kernel here; a new op adds one entry.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..graph.ir import Block, Conv, Element, Graph, Identity, Node, Placeholder, Pool, Relu, SepConv, topo_order
from ..graph.ops import Registry, Window, window_out_hw
from ..graph.ops_extra import ChannelMul, Linear, ScaleShift
from ..graph.schedule import Stage, scheduled_groups

Env = Dict[Node, np.ndarray]
Pair = Tuple[int, int]


class UnsupportedOpError(ValueError):
    """The reference runtime has no kernel for this node type."""


# ---------------------------------------------------------------------------------------------------
# Kernels (pure functions of arrays)
# ---------------------------------------------------------------------------------------------------

def _sigmoid(y: np.ndarray) -> np.ndarray:
    # exp(-|y|) never overflows; pick the stable form per sign
    z = np.exp(-np.abs(y))
    return np.where(y >= 0, 1.0 / (1.0 + z), z / (1.0 + z)).astype(np.float32, copy=False)


def _act_inplace(y: np.ndarray, act: str, args: Sequence[float] = (0.0, 0.0)) -> np.ndarray:
    """Apply ``act`` to a freshly computed array, reusing its memory where it can.

    ``args`` are the parametric activations' two parameters (``Activation.act_args``): hardsigmoid's
    ``(alpha, beta)``, clip's ``(lo, hi)``.
    """
    if act == "identity":
        return y
    if act == "relu":
        return np.maximum(y, 0, out=y)
    if act == "tanh":
        return np.tanh(y, out=y)
    if act == "sigmoid":
        return _sigmoid(y)
    if act == "relu6":
        return np.clip(y, 0, 6, out=y)
    if act == "clip":
        return np.clip(y, np.float32(args[0]), np.float32(args[1]), out=y)
    if act == "hardsigmoid":
        return np.clip(y * np.float32(args[0]) + np.float32(args[1]), 0, 1).astype(np.float32, copy=False)
    if act == "hardswish":
        return y * np.clip(y * np.float32(1 / 6) + np.float32(0.5), 0, 1)
    if act == "silu":
        return y * _sigmoid(y)
    raise ValueError(f"unknown activation {act!r}; expected relu, identity, tanh, sigmoid, relu6, hardswish, silu, "
                     f"hardsigmoid or clip")


def activation(x: np.ndarray, act: str, args: Sequence[float] = (0.0, 0.0)) -> np.ndarray:
    """``act`` of ``x`` as a new array (``x`` is left untouched); ``args`` as for ``_act_inplace``."""
    return _act_inplace(np.array(x, dtype=np.float32, copy=True), act, args)


def _pad(x: np.ndarray, window: Window, value: float = 0.0) -> np.ndarray:
    top, left, bottom, right = window.quad
    if not (top or left or bottom or right):
        return x
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), mode="constant", constant_values=value)


def _shifted(xp: np.ndarray, i: int, j: int, out_hw: Pair, stride: Pair) -> np.ndarray:
    """The view of padded input ``xp`` read by kernel tap (i, j) for every output position."""
    (oh, ow), (sh, sw) = out_hw, stride
    return xp[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]


def _depthwise(x: np.ndarray, weight: np.ndarray, window: Window, out_hw: Pair) -> np.ndarray:
    """groups == C_in: each output channel o reads input channel o // multiplier; loops over taps only."""
    c = x.shape[1]
    mult = weight.shape[0] // c
    dilation = window.dilation
    xp = _pad(x, window)
    if mult > 1:
        xp = np.repeat(xp, mult, axis=1)
    kh, kw = weight.shape[2:]
    y = np.zeros((x.shape[0], weight.shape[0], *out_hw), dtype=np.float32)
    scratch = np.empty_like(y)
    for i in range(kh):
        for j in range(kw):
            tap = weight[:, 0, i, j].reshape(1, -1, 1, 1)
            np.multiply(_shifted(xp, i * dilation[0], j * dilation[1], out_hw, window.stride), tap, out=scratch)
            y += scratch
    return y


def conv2d(x: np.ndarray, weight: np.ndarray, bias: Optional[np.ndarray] = None, window: Window = Window(),
           act: str = "identity") -> np.ndarray:
    """Grouped (and dilated) 2-D convolution + bias + activation on NCHW float32.

    Args:
        x: ``(N, C, H, W)``; weight: ``(O, C // groups, KH, KW)``; bias: ``(O,)`` or None.
        window: stride, padding (``pad_end``: bottom and right, when they differ), groups and dilation.
        act: the activation applied to the output.
    Returns:
        ``(N, O, OH, OW)`` float32.
    Raises:
        ValueError: channels or groups inconsistent with the weight, or the kernel does not fit.
    """
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    stride, groups, dilation = window.stride, window.groups, window.dilation
    if groups < 1 or c != cg * groups or o % groups:
        raise ValueError(f"conv2d: input has {c} channels, weight {weight.shape} with groups={groups} "
                         f"expects {cg * groups} and out channels divisible by groups")
    oh, ow = window_out_hw(h, w, (kh, kw), window)
    if oh <= 0 or ow <= 0:
        raise ValueError(f"conv2d: kernel {(kh, kw)} with padding {window.quad} does not fit a {h}x{w} input")
    og = o // groups
    if cg == 1 and groups == c and groups > 1:
        y = _depthwise(x, weight, window, (oh, ow))
    else:
        wm = weight.reshape(groups, og, cg * kh * kw)
        if kh == 1 and kw == 1 and not any(window.quad):
            # 1x1: a matmul over channels, no im2col
            xs = x[:, :, ::stride[0], ::stride[1]][:, :, :oh, :ow]
            cols = xs.reshape(n, groups, cg, oh * ow)
        else:
            span = ((kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1)
            win = sliding_window_view(_pad(x, window), span, axis=(2, 3))[..., ::dilation[0], ::dilation[1]]
            win = win[:, :, ::stride[0], ::stride[1]][:, :, :oh, :ow]          # (N, C, OH, OW, KH, KW)
            cols = (win.reshape(n, groups, cg, oh, ow, kh, kw)
                    .transpose(0, 1, 2, 5, 6, 3, 4)                            # (N, G, cg, KH, KW, OH, OW)
                    .reshape(n, groups, cg * kh * kw, oh * ow))
        y = np.matmul(wm, cols).reshape(n, o, oh, ow)                          # (N, G, og, P) -> NCHW
    y = np.ascontiguousarray(y, dtype=np.float32)
    if bias is not None:
        y += bias.reshape(1, o, 1, 1)
    return _act_inplace(y, act)


def pool2d(x: np.ndarray, pool_type: str, kernel: Pair = (1, 1), window: Window = Window(),
           count_include_pad: bool = True) -> np.ndarray:
    """Max (pads with -inf), avg or global_avg (-> (N, C, 1, 1)).

    ``window`` gives the stride and padding (``pad_end``: bottom and right, when they differ); a pool has
    no groups or dilation. An avg pool divides by KH*KW (the padding counted) unless ``count_include_pad``
    is False, when it divides by the window's input elements.
    """
    if pool_type == "global_avg":
        return x.mean(axis=(2, 3), keepdims=True, dtype=np.float32)
    if pool_type not in ("max", "avg"):
        raise ValueError(f"pool2d: pool_type must be max, avg or global_avg, got {pool_type!r}")
    if window.groups != 1 or tuple(window.dilation) != (1, 1):
        raise ValueError(f"pool2d: a pool has no groups or dilation, got {window}")
    n, c, h, w = x.shape
    kh, kw = kernel
    stride = window.stride
    oh, ow = window_out_hw(h, w, kernel, window)
    if oh <= 0 or ow <= 0:
        raise ValueError(f"pool2d: kernel {kernel} with padding {window.quad} does not fit a {h}x{w} input")
    is_max = pool_type == "max"
    xp = _pad(x, window, -np.inf if is_max else 0.0)
    y = np.array(_shifted(xp, 0, 0, (oh, ow), stride), dtype=np.float32, copy=True)
    for i in range(kh):
        for j in range(kw):
            if i == 0 and j == 0:
                continue
            tap = _shifted(xp, i, j, (oh, ow), stride)
            if is_max:
                np.maximum(y, tap, out=y)
            else:
                y += tap
    if is_max:
        return y
    if count_include_pad:
        y *= np.float32(1.0 / (kh * kw))
    else:
        y /= pool2d(np.ones((1, 1, h, w), dtype=np.float32), "avg", kernel, window) * np.float32(kh * kw)
    return y


@dataclass(frozen=True, eq=False)
class SepWeights:
    """A separable convolution's parameters (``SepConv.param_names``): the depthwise weight ``(C, 1, KH, KW)``
    and bias ``(C,)``, the pointwise weight ``(O, C, 1, 1)`` and bias ``(O,)``."""
    dw_weight: np.ndarray
    dw_bias: np.ndarray
    pw_weight: np.ndarray
    pw_bias: np.ndarray

    @staticmethod
    def of(params: Mapping[str, np.ndarray]) -> "SepWeights":
        """From a SepConv's ``params`` (by name)."""
        return SepWeights(params["dw_weight"], params["dw_bias"], params["pw_weight"], params["pw_bias"])


def sep_conv(x: np.ndarray, weights: SepWeights, window: Window = Window(), act: str = "identity",
             pre_act: str = "relu") -> np.ndarray:
    """[relu] -> depthwise conv (+dw_bias) -> pointwise 1x1 conv (+pw_bias) -> act.

    ``window`` is the depthwise conv's stride and padding; its groups are the input's channels.
    """
    if pre_act == "relu":
        x = np.maximum(x, 0)
    elif pre_act != "identity":
        raise ValueError(f"sep_conv: pre_act must be relu or identity, got {pre_act!r}")
    c = x.shape[1]
    y = conv2d(x, weights.dw_weight, weights.dw_bias, dataclasses.replace(window, groups=c), act="identity")
    return conv2d(y, weights.pw_weight, weights.pw_bias, act=act)


def element(operands: Sequence[np.ndarray], op_type: str) -> np.ndarray:
    """Element-wise ``add`` or ``mul`` of equally shaped operands."""
    if op_type not in ("add", "mul"):
        raise ValueError(f"element: op_type must be add or mul, got {op_type!r}")
    y = np.array(operands[0], dtype=np.float32, copy=True)
    for other in operands[1:]:
        if op_type == "add":
            y += other
        else:
            y *= other
    return y


# ---------------------------------------------------------------------------------------------------
# Input gathering and node execution
# ---------------------------------------------------------------------------------------------------

def gather_terms(node: Node, env: Mapping[Node, np.ndarray]) -> List[np.ndarray]:
    """One array per input term: the sum of the term's channel slices (a view when the term has one value).

    Raises:
        ValueError: an input node has not been computed (is not in ``env``).
    """
    terms = []
    for term in node.inputs:
        acc = None
        for v in term:
            try:
                arr = env[v.node]
            except KeyError:
                raise ValueError(f"{node.display()} reads {v.node.display()}, which has not been computed "
                                 f"yet (schedule order or missing input)") from None
            part = arr if (v.begin == 0 and v.end == arr.shape[1]) else arr[:, v.begin:v.end]
            acc = part if acc is None else acc + part  # the first addition allocates; inputs stay intact
        terms.append(acc)
    return terms


def gather_inputs(node: Node, env: Mapping[Node, np.ndarray]) -> np.ndarray:
    """The node's input: each term summed, the terms concatenated on channels (IOS term semantics)."""
    terms = gather_terms(node, env)
    return terms[0] if len(terms) == 1 else np.concatenate(terms, axis=1)


def _params(node: Node) -> Dict[str, np.ndarray]:
    missing = [k for k, v in node.params.items() if v is None]
    if missing:
        raise ValueError(f"{node.display()} has no weights ({', '.join(missing)}); call graph.init_weights() "
                         f"or set node.params before running")
    return node.params


def checked_input(graph: Graph, input_shape: Tuple[int, ...], x) -> np.ndarray:
    """``x`` as contiguous float32 if it has the executor's ``(batch, C, H, W)`` shape; else ValueError."""
    x = np.asarray(x)
    if tuple(x.shape) != tuple(input_shape):
        raise ValueError(f"graph {graph.name}: input has shape {tuple(x.shape)}, expected "
                         f"{tuple(input_shape)} (batch, C, H, W)")
    return np.ascontiguousarray(x, dtype=np.float32)


def check_weights(node: Node) -> None:
    """Raise ValueError if a parameter of ``node`` is missing or has the wrong shape."""
    params = _params(node)
    for pname, shape in node.weight_shapes().items():
        got = tuple(params[pname].shape)
        if got != tuple(shape):
            raise ValueError(f"{node.display()}: parameter {pname!r} has shape {got}, expected {tuple(shape)}")


# op type -> kernel(node, env) -> its output (N, C, H, W) float32, computed from env and node.params
KERNELS: Registry[Callable[[Node, Mapping[Node, np.ndarray]], np.ndarray]] = Registry("reference kernel")


@KERNELS.register("conv")
def _run_conv(node: Conv, env: Mapping[Node, np.ndarray]) -> np.ndarray:
    p = _params(node)
    return conv2d(gather_inputs(node, env), p["weight"], p["bias"], Window.of(node), node.act)


@KERNELS.register("sepconv")
def _run_sepconv(node: SepConv, env: Mapping[Node, np.ndarray]) -> np.ndarray:
    p = _params(node)
    return sep_conv(gather_inputs(node, env), SepWeights.of(p), Window.of(node), node.act, node.pre_act)


@KERNELS.register("pool")
def _run_pool(node: Pool, env: Mapping[Node, np.ndarray]) -> np.ndarray:
    return pool2d(gather_inputs(node, env), node.pool_type, node.kernel, Window.of(node), node.count_include_pad)


@KERNELS.register("relu")
def _run_relu(node: Relu, env: Mapping[Node, np.ndarray]) -> np.ndarray:
    return np.maximum(gather_inputs(node, env), 0)


@KERNELS.register("element")
def _run_element(node: Element, env: Mapping[Node, np.ndarray]) -> np.ndarray:
    return element(gather_terms(node, env), node.op_type)


@KERNELS.register("identity")
def _run_identity(node: Identity, env: Mapping[Node, np.ndarray]) -> np.ndarray:
    return gather_inputs(node, env)


@KERNELS.register("activation")
@KERNELS.register("sequential")
def _run_compound(node: Node, env: Mapping[Node, np.ndarray]) -> np.ndarray:
    return node.run_reference(env, run_node)   # Sequential runs its inner nodes with run_node


@KERNELS.register("scale_shift")
def _run_scale_shift(node: ScaleShift, env: Mapping[Node, np.ndarray]) -> np.ndarray:
    p = _params(node)
    y = gather_inputs(node, env) * p["scale"].reshape(1, -1, 1, 1) + p["shift"].reshape(1, -1, 1, 1)
    return _act_inplace(y.astype(np.float32, copy=False), node.act)


@KERNELS.register("channel_mul")
def _run_channel_mul(node: ChannelMul, env: Mapping[Node, np.ndarray]) -> np.ndarray:
    x, gate = gather_terms(node, env)
    return x * gate   # gate (N, C, 1, 1) broadcasts over H and W


@KERNELS.register("linear")
def _run_linear(node: Linear, env: Mapping[Node, np.ndarray]) -> np.ndarray:
    p = _params(node)
    x = gather_inputs(node, env)
    y = x.reshape(x.shape[0], -1) @ p["weight"].T + p["bias"]
    return _act_inplace(np.ascontiguousarray(y, dtype=np.float32), node.act).reshape(x.shape[0], -1, 1, 1)


def run_node(node: Node, env: Mapping[Node, np.ndarray]) -> np.ndarray:
    """Execute one IR node on its inputs in ``env`` (Node -> (N, C, H, W) float32) with ``node.params``.

    Returns a new array (inputs are never modified), except Identity of a single whole value, which
    returns its input array itself.

    Raises:
        ValueError: missing weights, or an input not yet computed.
        UnsupportedOpError: no kernel for this node type (placeholders are fed, not run).
    """
    if isinstance(node, Placeholder):
        raise UnsupportedOpError(f"{node.display()} is a placeholder: feed it in env, it is not run")
    kernel = KERNELS.get(node.type)
    if kernel is None:
        raise UnsupportedOpError(f"{node.display()}: the reference runtime has no kernel for op type {node.type!r}")
    return kernel(node, env)


# ---------------------------------------------------------------------------------------------------
# Executor
# ---------------------------------------------------------------------------------------------------

def sequential_stages(block: Block) -> List[Stage]:
    """The sequential schedule of ``block`` (one operator per stage), computed without assigning it."""
    return [Stage(((n.name,),)) for n in topo_order(block)]


def stages_or_sequential(graph: Graph) -> List[List[Stage]]:
    """Each block's stages, or its sequential schedule where it has none; the graph is not modified."""
    return [list(b.stages) if b.stages is not None else sequential_stages(b) for b in graph.blocks]


StagePlan = Tuple[Tuple[Node, ...], ...]  # a stage's groups, as nodes


class ReferenceExecutor:
    """Runs a scheduled graph stage by stage with the numpy kernels (groups one after another).

    Args:
        graph: a checked Graph whose nodes all have weights.
        batch_size: the batch the input must have.
        stages: per-block stage lists overriding ``block.stages`` (the graph is not modified); by
            default every block must have a schedule.
        clock: seconds, read before and after what ``latency`` and ``run_profiled`` time: the wall clock by
            default; the CPU profiler passes its own (``profile.cpu.timing_clock``).
    Raises:
        ValueError: a block has no schedule, the schedule does not match the graph (``check_schedule``),
            or a node lacks weights (call ``graph.init_weights()``).
    """

    def __init__(self, graph: Graph, batch_size: int, stages: Optional[Sequence[Sequence[Stage]]] = None,
                 clock: Callable[[], float] = time.perf_counter):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.graph = graph
        self.clock = clock
        self.batch_size = int(batch_size)
        self.input_shape: Tuple[int, int, int, int] = (self.batch_size, *graph.input.output_shape)
        self._plan: List[StagePlan] = [tuple(tuple(g) for g in groups) for groups in scheduled_groups(graph, stages)]
        for node in graph.nodes()[1:]:
            check_weights(node)
        self._release = self._release_plan()

    def _release_plan(self) -> List[Tuple[Node, ...]]:
        """For each stage, the outputs read for the last time there (dropped after it to bound memory)."""
        last_use: Dict[Node, int] = {}
        for si, groups in enumerate(self._plan):
            for group in groups:
                for node in group:
                    for src in node.input_nodes():
                        last_use[src] = si
        keep = self.graph.blocks[-1].exit_node
        release: List[List[Node]] = [[] for _ in self._plan]
        for node, si in last_use.items():
            if node is not keep:
                release[si].append(node)
        return [tuple(r) for r in release]

    @property
    def num_stages(self) -> int:
        return len(self._plan)

    def close(self) -> None:
        """Nothing to free (numpy arrays are collected); here for the executor interface."""

    def _check_input(self, x) -> np.ndarray:
        return checked_input(self.graph, self.input_shape, x)

    def run(self, x) -> np.ndarray:
        """The graph output ``(N, C, H, W)`` for input ``x`` of shape ``(batch_size, C, H, W)``.

        Raises:
            ValueError: ``x`` does not have shape ``(batch_size, C, H, W)``.
        """
        return self._own(self._run(self._check_input(x), None), x)

    def run_profiled(self, x) -> Tuple[np.ndarray, List[float]]:
        """The output and each stage's wall time in ms (stages of all blocks in order)."""
        times: List[float] = []
        out = self._run(self._check_input(x), times)
        return self._own(out, x), times

    @staticmethod
    def _own(out: np.ndarray, x) -> np.ndarray:
        # an Identity exit can hand back (a view of) the caller's input: never alias it
        return out.copy() if isinstance(x, np.ndarray) and np.may_share_memory(out, x) else out

    def _run(self, x: np.ndarray, stage_ms: Optional[List[float]]) -> np.ndarray:
        env: Env = {self.graph.input: x}
        for groups, release in zip(self._plan, self._release):
            t0 = self.clock() if stage_ms is not None else 0.0
            for group in groups:
                for node in group:
                    env[node] = run_node(node, env)
            if stage_ms is not None:
                stage_ms.append((self.clock() - t0) * 1e3)
            for node in release:
                del env[node]
        return env[self.graph.blocks[-1].exit_node]

    def latency(self, warmup: int = 2, number: int = 6, repeat: int = 6, x: Optional[np.ndarray] = None,
                profile_stage: bool = False) -> Tuple[List[float], List[float]]:
        """Time the whole graph: ``warmup`` runs, then ``repeat`` repeats of ``number`` runs each.

        Returns:
            (per-repeat latency in ms, i.e. elapsed / number;
             per-stage latency in ms, repeat-major and averaged over the ``number`` runs of the repeat,
             empty unless ``profile_stage``).
        """
        if warmup < 0 or number < 1 or repeat < 1:
            raise ValueError(f"need warmup >= 0, number >= 1, repeat >= 1; got {warmup}, {number}, {repeat}")
        if x is None:
            x = np.random.default_rng(0).standard_normal(self.input_shape, dtype=np.float32)
        x = self._check_input(x)
        for _ in range(warmup):
            self._run(x, None)
        seq: List[float] = []
        stages: List[float] = []
        for _ in range(repeat):
            acc = np.zeros(self.num_stages)
            t0 = self.clock()
            for _ in range(number):
                if profile_stage:
                    times: List[float] = []
                    self._run(x, times)
                    acc += times
                else:
                    self._run(x, None)
            seq.append((self.clock() - t0) * 1e3 / number)
            if profile_stage:
                stages.extend((acc / number).tolist())
        return seq, stages

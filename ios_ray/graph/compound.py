"""The original IOS's node types beyond the core IR: ``Sequential`` (a compound operator) and ``Activation``.

``Sequential`` runs its inner nodes one after another as *one* operator of the graph: the state space,
the DP and schedules see one node. Its first inner node reads the Sequential's inputs (the terms of
``node.inputs`` are the first inner node's), every later one reads the whole output of the one before,
and the last one's output is the Sequential's output. The original builds its ``relu_conv`` (ReLU then a
convolution) this way.

``Activation`` is the original's ``activation`` node (``tanh`` or ``sigmoid``; its ``relu`` is our
``Relu`` node), and the element-wise activations of imported models: ``relu6``, ``hardswish``, ``silu``
(``x * sigmoid(x)``), and the parametric ``hardsigmoid`` (``alpha``, ``beta``) and ``clip`` (``lo``, ``hi``).

Both follow the core IR's conventions (``ir.Node``): ``attrs()`` is name-free and JSON-able (stage keys
and ``node_from_config`` use it), ``export_config()`` adds names. How a backend runs them:

- both are registered ops (``ops.register_op``), so JSON, stage keys and the coverage test see them;
- reference runtime (``KERNELS``): ``node.run_reference(env, run_node)`` (``run_node`` runs the inner nodes);
- GPU runtime (``LOWERINGS``) and analytic model (``kernels``): a Sequential is its ``nodes`` run in
  order on the group's stream; an Activation is a ReLU-like element-wise kernel with ``act_type``.
"""
from __future__ import annotations

import functools
import json
from collections import ChainMap
from collections.abc import MutableMapping
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .ops import KernelCost, Node, PerElement, Placeholder, Shape, Terms, Value, node_from_config, register_op

Env = Mapping[Node, np.ndarray]
RunNode = Callable[[Node, Env], np.ndarray]
InnerSpec = Union[Node, Mapping]

ACT_TYPES = ("tanh", "sigmoid", "relu6", "hardswish", "silu", "hardsigmoid", "clip")
# the parametric act types -> their parameters, in the order the kernels take them:
# hardsigmoid(x) = min(max(alpha * x + beta, 0), 1); clip(x) = min(max(x, lo), hi)
ACT_PARAMS: Dict[str, Tuple[str, str]] = {"hardsigmoid": ("alpha", "beta"), "clip": ("lo", "hi")}


@register_op
class Sequential(Node):
    """A compound operator: ``nodes`` run one after another, scheduled as one node.

    Args:
        name: the node's name (None: the Graph names it).
        inputs: the terms the first inner node reads; None keeps ``nodes[0]``'s own inputs.
        nodes: the inner nodes, as nodes or as configs (``{"type": ..., **attrs}``, optionally with
            ``name``/``hint_name``: what ``attrs()``/``export_config()`` give). Inner inputs after the
            first are set here: each reads the whole output of the one before (as in the original).
        output_shape, hint_name: as for every node.
    Raises:
        ValueError: no inner nodes, an inner placeholder or Sequential, or an unknown inner type.
    """

    type = "sequential"
    display_type = "Sequential"

    def __init__(self, name: Optional[str], inputs: Optional[Terms], nodes: Sequence[InnerSpec],
                 output_shape: Optional[Shape] = None, hint_name: Optional[str] = None):
        desc = f"sequential {name or ''}".strip()
        if not isinstance(nodes, (list, tuple)) or not nodes:
            raise ValueError(f"{desc}: nodes must be a non-empty list of inner nodes, got {nodes!r}")
        self.nodes: List[Node] = [_inner_node(spec, i, desc) for i, spec in enumerate(nodes)]
        if inputs is None:
            inputs = self.nodes[0].inputs
        super().__init__(name, inputs, output_shape, hint_name)

    # The first inner node's inputs are the Sequential's: one list, so neither can go stale.
    @property
    def inputs(self) -> Terms:
        return self.nodes[0].inputs

    @inputs.setter
    def inputs(self, terms: Terms) -> None:
        self.nodes[0].inputs = terms

    # Parameters live in the inner nodes; seen from outside they are ``"<inner index>.<param>"``.
    @property
    def params(self) -> "InnerParams":
        return InnerParams(self)

    @params.setter
    def params(self, values: Mapping[str, Optional[np.ndarray]]) -> None:
        view = InnerParams(self)
        for key, value in values.items():
            view[key] = value

    def attrs(self) -> dict:
        return {"nodes": [{"type": node.type, **node.attrs()} for node in self.nodes]}

    def export_config(self) -> dict:
        config = super().export_config()
        config["nodes"] = [{"type": node.type, "name": node.name, "hint_name": node.hint_name, **node.attrs()}
                           for node in self.nodes]
        return config

    def infer_shape(self) -> Shape:
        """Each inner node's shape in order, wiring each to the whole output of the one before (and
        naming unnamed inner nodes ``<name>.<index>`` once the Sequential has a name)."""
        prev = None
        for i, node in enumerate(self.nodes):
            if node.name is None and self.name is not None:
                node.name = f"{self.name}.{i}"
            if prev is not None:
                node.inputs = [[Value(prev, 0, prev.output_shape[0])]]
            try:
                node.set_shape()
            except ValueError as exc:
                raise ValueError(f"{self.display()}: inner {exc}") from None
            prev = node
        return prev.output_shape

    # ----- costs: the inner nodes run one after another ------------------------------------------
    @staticmethod
    def op_flops(attrs: Mapping, terms: Sequence[int], in_hw: Tuple[int, int], out_shape: Shape) -> float:
        """The inner nodes' FLOPs, built once per configuration and input shape (the profiler pool
        prices specs from their attributes alone)."""
        return _sequential_flops(json.dumps(attrs, sort_keys=True), tuple(int(t) for t in terms),
                                 tuple(int(d) for d in in_hw))

    def flops(self) -> float:
        return sum(node.flops() for node in self.nodes)

    def kernels(self, dtype_bytes: int) -> List[KernelCost]:
        return [k for node in self.nodes for k in node.kernels(dtype_bytes)]

    def bytes_accessed(self, dtype_bytes: int = 4) -> float:
        return sum(node.bytes_accessed(dtype_bytes) for node in self.nodes)

    def param_count(self) -> int:
        return sum(node.param_count() for node in self.nodes)

    def weight_shapes(self) -> Dict[str, Tuple[int, ...]]:
        return {f"{i}.{p}": shape for i, node in enumerate(self.nodes) for p, shape in node.weight_shapes().items()}

    def init_weights(self, rng: np.random.Generator) -> None:
        for node in self.nodes:
            node.init_weights(rng)

    # ----- execution --------------------------------------------------------------------------------
    def run_reference(self, env: Env, run_node: RunNode) -> np.ndarray:
        """The output on the numpy reference runtime: ``run_node`` runs each inner node in turn.

        Inner outputs go to a local layer over ``env``, so the caller's ``env`` only gets the result.
        """
        local = ChainMap({}, env)
        out = None
        for node in self.nodes:
            out = local[node] = run_node(node, local)
        return out


@functools.lru_cache(maxsize=4096)
def _sequential_flops(attrs_json: str, terms: Tuple[int, ...], in_hw: Tuple[int, int]) -> float:
    x = Placeholder("x", (sum(terms), *in_hw))
    seq = Sequential("s", [[Value(x, 0, sum(terms))]], json.loads(attrs_json)["nodes"])
    seq.set_shape()
    return seq.flops() - seq.nodes[0].input_flops()


class InnerParams(MutableMapping):
    """The parameters of a Sequential's inner nodes as one live mapping: ``"<inner index>.<param>"``."""

    def __init__(self, seq: Sequential):
        self._seq = seq

    def _locate(self, key: str) -> Tuple[Optional[Node], str]:
        index, _, pname = str(key).partition(".")
        nodes = self._seq.nodes
        if not index.isdigit() or int(index) >= len(nodes) or pname not in nodes[int(index)].params:
            return None, pname
        return nodes[int(index)], pname

    def __getitem__(self, key: str) -> Optional[np.ndarray]:
        node, pname = self._locate(key)
        if node is None:
            raise KeyError(key)
        return node.params[pname]

    def __setitem__(self, key: str, value: Optional[np.ndarray]) -> None:
        node, pname = self._locate(key)
        if node is None:
            raise ValueError(f"{self._seq.display()} has no parameter {key!r}; it has {sorted(self)}")
        node.params[pname] = value

    def __delitem__(self, key: str) -> None:
        raise TypeError(f"{self._seq.display()}: parameters cannot be removed, only set")

    def __iter__(self) -> Iterator[str]:
        return (f"{i}.{p}" for i, node in enumerate(self._seq.nodes) for p in node.params)

    def __len__(self) -> int:
        return sum(len(node.params) for node in self._seq.nodes)


def _inner_node(spec: InnerSpec, index: int, desc: str) -> Node:
    """An inner node from a node or a config; inputs of a config are set later (see Sequential)."""
    if isinstance(spec, Mapping):
        if spec.get("type") in ("placeholder", Sequential.type):
            raise ValueError(f"{desc}: inner node {index} cannot be a {spec.get('type')}")
        node = node_from_config({**spec, "name": spec.get("name") or "inner", "inputs": []}, {})
        node.name = spec.get("name")  # None: named after the Sequential in infer_shape
        return node
    if not isinstance(spec, Node):
        raise ValueError(f"{desc}: inner node {index} must be a Node or a node config, got {type(spec).__name__}")
    if isinstance(spec, (Placeholder, Sequential)):
        raise ValueError(f"{desc}: inner node {index} cannot be a {spec.display()}")
    if spec.inputs is None:  # the original's inner nodes after the first are made with inputs=None
        spec.inputs = []
    return spec


@register_op
class Activation(PerElement):
    """An element-wise activation of the input (the original's ``activation``; ReLU is ``Relu``).

    Args:
        act_type: one of ``ACT_TYPES``.
        alpha, beta: ``hardsigmoid``'s slope and offset (ONNX's defaults are 0.2 and 0.5, PyTorch's 1/6 and 0.5).
        lo, hi: ``clip``'s bounds.
    Raises:
        ValueError: an unknown ``act_type``, or parameters missing for a parametric type or given to another.
    """

    type = "activation"
    attr_names = ("act_type",)

    def __init__(self, name: Optional[str], inputs: Terms, act_type: str, output_shape: Optional[Shape] = None,
                 hint_name: Optional[str] = None, *, alpha: Optional[float] = None, beta: Optional[float] = None,
                 lo: Optional[float] = None, hi: Optional[float] = None):
        desc = f"activation {name or ''}".strip()
        if act_type not in ACT_TYPES:
            raise ValueError(f"{desc}: act_type must be one of {ACT_TYPES} (relu is a Relu node), got {act_type!r}")
        given = {k: v for k, v in (("alpha", alpha), ("beta", beta), ("lo", lo), ("hi", hi)) if v is not None}
        wanted = ACT_PARAMS.get(act_type, ())
        if sorted(given) != sorted(wanted):
            raise ValueError(f"{desc}: act_type {act_type!r} takes the parameters {list(wanted)}, got {sorted(given)}")
        self.act_type = act_type
        self.act_params: Tuple[float, ...] = tuple(float(given[k]) for k in wanted)
        if act_type == "clip" and self.act_params[0] > self.act_params[1]:
            raise ValueError(f"{desc}: clip bounds lo={lo} > hi={hi}")
        self.display_type = act_type.capitalize()
        super().__init__(name, inputs, output_shape, hint_name)

    def attrs(self) -> dict:
        """``act_type``, and the parameters of a parametric one (so tanh/sigmoid keep their keys)."""
        return {"act_type": self.act_type, **dict(zip(ACT_PARAMS.get(self.act_type, ()), self.act_params))}

    def act_args(self) -> Tuple[float, float]:
        """The two parameters the kernels take (``(0, 0)`` for the act types without any)."""
        return (self.act_params + (0.0, 0.0))[:2]

    def run_reference(self, env: Env, run_node: RunNode) -> np.ndarray:
        """The output on the numpy reference runtime (``run_node`` is unused: no inner nodes)."""
        from ..runtime.reference import activation, gather_inputs  # the kernels live in the runtime
        return activation(gather_inputs(self, env), self.act_type, self.act_args())


__all__ = ["Sequential", "Activation", "ACT_PARAMS", "ACT_TYPES"]

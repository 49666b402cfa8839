"""The graph IR: values, operators, blocks and graphs (IOS-compatible).

Data flow: the builder functions (``builder.py``) create nodes inside a ``Block``; a ``Graph`` chains
blocks (each block's ``enter_node`` is the previous block's ``exit_node`` or the graph input), numbers
the nodes, infers and checks shapes, and checks each block is a DAG. Schedules (``schedule.py``) refer
to nodes by name.

Input semantics (as in IOS): ``node.inputs`` is a list of *terms*; the values in a term are summed,
the terms are concatenated along channels. A ``Value`` is a channel slice ``[begin, end)`` of a node's
output. Shapes exclude the batch dimension: ``(C, H, W)``.
"""
from __future__ import annotations

import inspect
import numbers
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

Shape = Tuple[int, int, int]

ACTIVATIONS = ("relu", "identity", "tanh", "sigmoid")
POOL_TYPES = ("max", "avg", "global_avg")
ELEMENT_OPS = ("add", "mul")


class Value:
    """A channel slice ``[begin, end)`` of a node's output."""

    __slots__ = ("node", "begin", "end")

    def __init__(self, node: "Node", begin: Optional[int] = None, end: Optional[int] = None):
        if not isinstance(node, Node):
            raise ValueError(f"Value needs a Node, got {type(node).__name__}")
        self.node = node
        channels = node.output_shape[0] if node.output_shape is not None else None
        self.begin = 0 if begin is None else int(begin)
        self.end = channels if end is None else int(end)
        if self.end is None:
            raise ValueError(f"Value of node {node.display()}: end is required before the shape is known")
        if channels is not None and not (0 <= self.begin < self.end <= channels):
            raise ValueError(
                f"Value of node {node.display()}: channel slice [{self.begin}, {self.end}) is outside its "
                f"{channels} channels")

    @property
    def length(self) -> int:
        return self.end - self.begin

    def __getitem__(self, item: slice) -> "Value":
        if not isinstance(item, slice) or item.step not in (None, 1):
            raise ValueError("a Value is sliced along channels with a plain slice, e.g. v[0:32]")
        begin = 0 if item.start is None else item.start
        end = self.length if item.stop is None else item.stop
        if not (0 <= begin < end <= self.length):
            raise ValueError(f"slice [{begin}:{end}] of {self!r} is outside its {self.length} channels")
        return Value(self.node, self.begin + begin, self.begin + end)

    def __eq__(self, other) -> bool:
        return (isinstance(other, Value) and self.node is other.node and self.begin == other.begin
                and self.end == other.end)

    def __hash__(self) -> int:
        return hash((id(self.node), self.begin, self.end))

    def export_config(self) -> list:
        return [self.node.name, self.begin, self.end]

    def __repr__(self) -> str:
        return f"({self.node.display()}:{self.begin}:{self.end})"


Terms = List[List[Value]]


def _int(x, what: str, node_desc: str) -> int:
    """``x`` as an int; strings ("64") and booleans are refused, not converted."""
    if isinstance(x, (str, bytes, bool)) or not isinstance(x, (numbers.Integral, float)) or x != int(x):
        raise ValueError(f"{node_desc}: {what} must be an int, got {x!r}")
    return int(x)


def _pair(x, what: str, node_desc: str) -> Tuple[int, int]:
    if isinstance(x, numbers.Integral) and not isinstance(x, bool):
        x = (x, x)
    try:
        a, b = (_int(v, what, node_desc) for v in x)
    except (TypeError, ValueError):
        raise ValueError(f"{node_desc}: {what} must be an int or a pair of ints, got {x!r}") from None
    return a, b


class Node:
    """Base class of operators. ``hint_name`` is the number shown in printed schedules."""

    type: str = "node"
    display_type: str = "Node"
    param_names: Tuple[str, ...] = ()

    def __init__(self, name: Optional[str], inputs: Terms, output_shape: Optional[Shape] = None,
                 hint_name: Optional[str] = None):
        self.name = name
        self.hint_name = hint_name
        self.inputs: Terms = [list(term) for term in inputs]
        self.output_shape: Optional[Shape] = tuple(output_shape) if output_shape is not None else None
        self.params: Dict[str, Optional[np.ndarray]] = {p: None for p in self.param_names}

    # ----- description -------------------------------------------------------------------------
    def display(self) -> str:
        label = self.name or "?"
        if self.hint_name is not None and self.hint_name != self.name:
            label = f"{self.name}[{self.hint_name}]"
        return f"{self.display_type} {label}"

    def attrs(self) -> dict:
        """The operator's configuration, without name, inputs and shape (JSON-able)."""
        return {}

    def input_nodes(self) -> List["Node"]:
        seen: Dict[int, Node] = {}
        for term in self.inputs:
            for v in term:
                seen.setdefault(id(v.node), v.node)
        return list(seen.values())

    # ----- shapes --------------------------------------------------------------------------------
    def input_shape(self) -> Shape:
        """Shape after summing each term and concatenating terms; checks consistency."""
        if not self.inputs or any(len(t) == 0 for t in self.inputs):
            raise ValueError(f"{self.display()}: inputs must be a non-empty list of non-empty terms")
        hw = None
        channels = 0
        for ti, term in enumerate(self.inputs):
            length = None
            for v in term:
                if not isinstance(v, Value):
                    raise ValueError(f"{self.display()}: input term {ti} holds {type(v).__name__}, not a Value")
                shape = v.node.output_shape
                if shape is None:
                    raise ValueError(f"{self.display()}: input {v.node.display()} has no shape yet")
                if not (0 <= v.begin < v.end <= shape[0]):
                    raise ValueError(f"{self.display()}: slice [{v.begin}, {v.end}) of {v.node.display()} is "
                                     f"outside its {shape[0]} channels")
                if hw is None:
                    hw = (shape[1], shape[2])
                elif hw != (shape[1], shape[2]):
                    raise ValueError(f"{self.display()}: spatial size mismatch: {v.node.display()} is "
                                     f"{shape[1]}x{shape[2]}, other inputs are {hw[0]}x{hw[1]}")
                if length is None:
                    length = v.length
                elif length != v.length:
                    raise ValueError(f"{self.display()}: term {ti} sums values of {length} and {v.length} "
                                     f"channels; summed values need equal channels")
            channels += length
        return channels, hw[0], hw[1]

    def infer_shape(self) -> Shape:
        raise NotImplementedError

    def set_shape(self) -> None:
        self.output_shape = self.infer_shape()
        if any(d <= 0 for d in self.output_shape):
            raise ValueError(f"{self.display()}: output shape {self.output_shape} has a non-positive size")

    # ----- costs ---------------------------------------------------------------------------------
    def input_flops(self) -> float:
        """Additions done to sum multi-value terms."""
        total = 0
        for term in self.inputs:
            v = term[0]
            total += (len(term) - 1) * v.length * v.node.output_shape[1] * v.node.output_shape[2]
        return float(total)

    def flops(self) -> float:
        """Floating-point operations for batch 1 (a multiply-add counts 2)."""
        return self.input_flops()

    def param_count(self) -> int:
        return 0

    def bytes_accessed(self, dtype_bytes: int = 4) -> float:
        """Bytes read and written for batch 1: every input value, the output and the parameters."""
        read = sum(v.length * v.node.output_shape[1] * v.node.output_shape[2] for t in self.inputs for v in t)
        c, h, w = self.output_shape
        return float((read + c * h * w + self.param_count()) * dtype_bytes)

    def weight_shapes(self) -> Dict[str, Tuple[int, ...]]:
        return {}

    def init_weights(self, rng: np.random.Generator) -> None:
        for pname, shape in self.weight_shapes().items():
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else max(1, self._fan_in())
            bound = 1.0 / np.sqrt(max(1, fan_in))
            self.params[pname] = rng.uniform(-bound, bound, size=shape).astype(np.float32)

    def _fan_in(self) -> int:
        return 1

    def __repr__(self) -> str:
        return f"<{self.display()}>"

    # ----- IOS compatibility -------------------------------------------------------------------
    def export_config(self) -> dict:
        return {"type": self.type, "name": self.name, "hint_name": self.hint_name,
                "inputs": [[v.export_config() for v in term] for term in self.inputs],
                "output_shape": list(self.output_shape) if self.output_shape else None, **self.attrs()}


class Placeholder(Node):
    type = "placeholder"
    display_type = "Placeholder"

    def __init__(self, name: Optional[str], output_shape: Sequence[int], hint_name: Optional[str] = None):
        shape = tuple(int(d) for d in output_shape)
        if len(shape) != 3 or any(d <= 0 for d in shape):
            raise ValueError(f"placeholder {name or ''}: output_shape must be three positive ints (C, H, W), "
                             f"got {tuple(output_shape)!r}")
        super().__init__(name, [], shape, hint_name)

    def infer_shape(self) -> Shape:
        return self.output_shape

    def input_shape(self) -> Shape:
        return self.output_shape

    def bytes_accessed(self, dtype_bytes: int = 4) -> float:
        return 0.0


class Conv(Node):
    type = "conv"
    display_type = "Conv2d"
    param_names = ("weight", "bias")

    def __init__(self, name, inputs, out_channels, kernel, stride=(1, 1), padding=(0, 0), groups=1, act="relu",
                 output_shape=None, hint_name=None):
        super().__init__(name, inputs, output_shape, hint_name)
        desc = f"conv {name or ''}".strip()
        self.out_channels = _int(out_channels, "out_channels", desc)
        self.kernel = _pair(kernel, "kernel", desc)
        self.stride = _pair(stride, "stride", desc)
        self.padding = _pair(padding, "padding", desc)
        self.groups = _int(groups, "groups", desc)
        self.act = act
        if act not in ACTIVATIONS:
            raise ValueError(f"{desc}: act must be one of {ACTIVATIONS}, got {act!r}")
        if self.out_channels <= 0 or min(self.kernel) <= 0 or min(self.stride) <= 0 or self.groups <= 0:
            raise ValueError(f"{desc}: out_channels, kernel, stride and groups must be positive")
        if min(self.padding) < 0:
            raise ValueError(f"{desc}: padding must be non-negative, got {self.padding}")

    # weight/bias as attributes, like the original
    @property
    def weight(self):
        return self.params["weight"]

    @weight.setter
    def weight(self, value):
        self.params["weight"] = value

    @property
    def bias(self):
        return self.params["bias"]

    @bias.setter
    def bias(self, value):
        self.params["bias"] = value

    def attrs(self) -> dict:
        return {"out_channels": self.out_channels, "kernel": list(self.kernel), "stride": list(self.stride),
                "padding": list(self.padding), "groups": self.groups, "act": self.act}

    def infer_shape(self) -> Shape:
        c, h, w = self.input_shape()
        if c % self.groups or self.out_channels % self.groups:
            raise ValueError(f"{self.display()}: groups={self.groups} must divide input channels {c} and "
                             f"out_channels {self.out_channels}")
        oh = (h + 2 * self.padding[0] - self.kernel[0]) // self.stride[0] + 1
        ow = (w + 2 * self.padding[1] - self.kernel[1]) // self.stride[1] + 1
        if oh <= 0 or ow <= 0:
            raise ValueError(f"{self.display()}: kernel {self.kernel} with padding {self.padding} does not fit "
                             f"the {h}x{w} input")
        return self.out_channels, oh, ow

    def weight_shapes(self):
        c = self.input_shape()[0]
        return {"weight": (self.out_channels, c // self.groups, *self.kernel), "bias": (self.out_channels,)}

    def _fan_in(self):
        return self.input_shape()[0] // self.groups * self.kernel[0] * self.kernel[1]

    def init_weights(self, rng):
        bound = 1.0 / np.sqrt(self._fan_in())
        for pname, shape in self.weight_shapes().items():
            self.params[pname] = rng.uniform(-bound, bound, size=shape).astype(np.float32)

    def param_count(self):
        return sum(int(np.prod(s)) for s in self.weight_shapes().values())

    def flops(self):
        c, oh, ow = self.output_shape
        per_out = 2 * (self.input_shape()[0] // self.groups) * self.kernel[0] * self.kernel[1]
        return float(c * oh * ow * per_out) + self.input_flops()


class SepConv(Node):
    """Separable conv fused as one node: [relu] -> depthwise kxk -> pointwise 1x1 -> act (NASNet, RandWire)."""

    type = "sepconv"
    display_type = "SepConv"
    param_names = ("dw_weight", "dw_bias", "pw_weight", "pw_bias")

    def __init__(self, name, inputs, out_channels, kernel, stride=(1, 1), padding=(0, 0), act="identity",
                 pre_act="relu", output_shape=None, hint_name=None):
        super().__init__(name, inputs, output_shape, hint_name)
        desc = f"sep_conv {name or ''}".strip()
        self.out_channels = _int(out_channels, "out_channels", desc)
        self.kernel = _pair(kernel, "kernel", desc)
        self.stride = _pair(stride, "stride", desc)
        self.padding = _pair(padding, "padding", desc)
        self.act = act
        self.pre_act = pre_act
        if act not in ACTIVATIONS or pre_act not in ("relu", "identity"):
            raise ValueError(f"{desc}: act must be one of {ACTIVATIONS} and pre_act 'relu' or 'identity'")
        if self.out_channels <= 0 or min(self.kernel) <= 0 or min(self.stride) <= 0 or min(self.padding) < 0:
            raise ValueError(f"{desc}: sizes must be positive (padding non-negative)")

    def attrs(self):
        return {"out_channels": self.out_channels, "kernel": list(self.kernel), "stride": list(self.stride),
                "padding": list(self.padding), "act": self.act, "pre_act": self.pre_act}

    def infer_shape(self):
        c, h, w = self.input_shape()
        oh = (h + 2 * self.padding[0] - self.kernel[0]) // self.stride[0] + 1
        ow = (w + 2 * self.padding[1] - self.kernel[1]) // self.stride[1] + 1
        if oh <= 0 or ow <= 0:
            raise ValueError(f"{self.display()}: kernel {self.kernel} does not fit the {h}x{w} input")
        return self.out_channels, oh, ow

    def weight_shapes(self):
        c = self.input_shape()[0]
        return {"dw_weight": (c, 1, *self.kernel), "dw_bias": (c,),
                "pw_weight": (self.out_channels, c, 1, 1), "pw_bias": (self.out_channels,)}

    def init_weights(self, rng):
        c = self.input_shape()[0]
        for pname, shape in self.weight_shapes().items():
            fan_in = self.kernel[0] * self.kernel[1] if pname.startswith("dw") else c
            bound = 1.0 / np.sqrt(fan_in)
            self.params[pname] = rng.uniform(-bound, bound, size=shape).astype(np.float32)

    def param_count(self):
        return sum(int(np.prod(s)) for s in self.weight_shapes().values())

    def flops(self):
        c = self.input_shape()[0]
        _, oh, ow = self.output_shape
        dw = 2 * c * oh * ow * self.kernel[0] * self.kernel[1]
        pw = 2 * self.out_channels * oh * ow * c
        return float(dw + pw) + self.input_flops()


class Pool(Node):
    type = "pool"
    display_type = "Pool2d"

    def __init__(self, name, inputs, pool_type, kernel=(1, 1), stride=(1, 1), padding=(0, 0), output_shape=None,
                 hint_name=None):
        super().__init__(name, inputs, output_shape, hint_name)
        desc = f"pool2d {name or ''}".strip()
        if pool_type not in POOL_TYPES:
            raise ValueError(f"{desc}: pool_type must be one of {POOL_TYPES}, got {pool_type!r}")
        self.pool_type = pool_type
        self.kernel = _pair(kernel, "kernel", desc)
        self.stride = _pair(stride, "stride", desc)
        self.padding = _pair(padding, "padding", desc)
        if pool_type != "global_avg":
            if min(self.kernel) <= 0 or min(self.stride) <= 0 or min(self.padding) < 0:
                raise ValueError(f"{desc}: kernel and stride must be positive, padding non-negative")
            if self.padding[0] * 2 > self.kernel[0] or self.padding[1] * 2 > self.kernel[1]:
                raise ValueError(f"{desc}: padding {self.padding} must be at most half the kernel {self.kernel}")

    def attrs(self):
        return {"pool_type": self.pool_type, "kernel": list(self.kernel), "stride": list(self.stride),
                "padding": list(self.padding)}

    def infer_shape(self):
        c, h, w = self.input_shape()
        if self.pool_type == "global_avg":
            return c, 1, 1
        oh = (h + 2 * self.padding[0] - self.kernel[0]) // self.stride[0] + 1
        ow = (w + 2 * self.padding[1] - self.kernel[1]) // self.stride[1] + 1
        if oh <= 0 or ow <= 0:
            raise ValueError(f"{self.display()}: kernel {self.kernel} does not fit the {h}x{w} input")
        return c, oh, ow

    def flops(self):
        c, oh, ow = self.output_shape
        if self.pool_type == "global_avg":
            _, h, w = self.input_shape()
            return float(c * h * w) + self.input_flops()
        return float(c * oh * ow * self.kernel[0] * self.kernel[1]) + self.input_flops()


class Identity(Node):
    """Concatenation (and summation) of its input terms, nothing else."""

    type = "identity"
    display_type = "Identity"

    def infer_shape(self):
        return self.input_shape()


class Relu(Node):
    type = "relu"
    display_type = "Relu"

    def infer_shape(self):
        return self.input_shape()

    def flops(self):
        c, h, w = self.output_shape
        return float(c * h * w) + self.input_flops()


class Element(Node):
    """Element-wise ``add`` or ``mul`` of its terms: each term (summed values) is one operand."""

    type = "element"
    display_type = "Element"

    def __init__(self, name, inputs, op_type, output_shape=None, hint_name=None):
        super().__init__(name, inputs, output_shape, hint_name)
        if op_type not in ELEMENT_OPS:
            raise ValueError(f"element {name or ''}: op_type must be one of {ELEMENT_OPS}, got {op_type!r}")
        self.op_type = op_type

    def attrs(self):
        return {"op_type": self.op_type}

    def infer_shape(self):
        c, h, w = self.input_shape()  # checks spatial sizes and term consistency
        lengths = {term[0].length for term in self.inputs}
        if len(lengths) != 1:
            raise ValueError(f"{self.display()}: element-wise {self.op_type} needs operands of equal channels, "
                             f"got {sorted(lengths)}")
        return lengths.pop(), h, w

    def flops(self):
        c, h, w = self.output_shape
        return float(c * h * w * (len(self.inputs) - 1)) + self.input_flops()


NODE_TYPES: Dict[str, type] = {cls.type: cls for cls in (Placeholder, Conv, SepConv, Pool, Identity, Relu, Element)}


def node_from_config(cfg: dict, name2node: Dict[str, Node]) -> Node:
    """Build a node from its exported config; raises ValueError for unknown types and names."""
    kind = cfg.get("type")
    if kind not in NODE_TYPES:
        raise ValueError(f"node {cfg.get('name')!r}: unknown op type {kind!r}; known: {sorted(NODE_TYPES)}")
    name = cfg.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"a {kind} node has no name")
    if kind == "placeholder":
        return Placeholder(name, cfg["output_shape"], hint_name=cfg.get("hint_name"))
    inputs = []
    for term in cfg.get("inputs") or []:
        vals = []
        for ref in term:
            if not (isinstance(ref, list) and len(ref) == 3):
                raise ValueError(f"node {name!r}: bad input reference {ref!r}, expected [name, begin, end]")
            src = name2node.get(ref[0])
            if src is None:
                raise ValueError(f"node {name!r}: input {ref[0]!r} is not defined before it (or at all)")
            vals.append(Value(src, ref[1], ref[2]))
        inputs.append(vals)
    attrs = {k: v for k, v in cfg.items() if k not in ("type", "name", "hint_name", "inputs", "output_shape")}
    cls = NODE_TYPES[kind]
    required = [p.name for p in list(inspect.signature(cls.__init__).parameters.values())[3:] if p.default is p.empty]
    missing = [a for a in required if a not in attrs]
    if missing:
        raise ValueError(f"node {name!r} ({kind}): missing attribute(s) {missing}")
    try:
        return cls(name, inputs, **attrs, hint_name=cfg.get("hint_name"))
    except (TypeError, ValueError) as exc:
        msg = str(exc)
        if msg.startswith(("conv", "pool2d", "sep_conv", "element", "placeholder")):
            raise  # already names the node
        raise ValueError(f"node {name!r} ({kind}): bad attributes {sorted(attrs)}: {exc}") from None


class Block:
    """A DAG of operators between an enter node and an exit node; the unit the DP schedules."""

    def __init__(self, enter_node: Node, exit_node: Optional[Node] = None, inner_nodes: Optional[List[Node]] = None,
                 stages=None, parts: Optional[List[List[str]]] = None):
        if not isinstance(enter_node, Node):
            raise ValueError(f"Block(enter_node=...) needs a Node (pass v.node), got {type(enter_node).__name__}")
        self.enter_node = enter_node
        self.exit_node = exit_node
        self.inner_nodes: List[Node] = list(inner_nodes or [])
        self.stages = list(stages) if stages is not None else None  # List[schedule.Stage]
        self.parts = parts

    @property
    def nodes(self) -> List[Node]:
        """Scheduled nodes: inner nodes then the exit node."""
        return self.inner_nodes + ([self.exit_node] if self.exit_node is not None else [])

    def add(self, node: Node, is_exit: bool = False) -> None:
        if self.exit_node is not None:
            raise ValueError(f"{node.display()}: block already has exit node {self.exit_node.display()}; "
                             f"the exit node must be added last")
        if is_exit:
            self.exit_node = node
        else:
            self.inner_nodes.append(node)


class Graph:
    """A chain of blocks fed by one placeholder; numbers nodes and validates the whole graph."""

    def __init__(self, name: str, input: Node, blocks: List[Block], validate: bool = True):
        self.name = name
        self.input = input
        self.enter_node = input
        self.blocks = list(blocks)
        if validate:
            self.check()

    # ----- structure ---------------------------------------------------------------------------
    def nodes(self) -> List[Node]:
        out = [self.input]
        for b in self.blocks:
            out.extend(b.nodes)
        return out

    def node_by_name(self) -> Dict[str, Node]:
        return {n.name: n for n in self.nodes()}

    def check(self) -> None:
        """Name and number nodes, check block chaining, acyclicity, references and shapes."""
        if not isinstance(self.input, Placeholder):
            raise ValueError(f"graph {self.name}: input must be a placeholder node, got {self.input!r}")
        if not self.blocks:
            raise ValueError(f"graph {self.name}: needs at least one block")
        prev = self.input
        counter = 1
        if self.input.name is None:
            self.input.name = "input"
        if self.input.hint_name is None:
            self.input.hint_name = "0"
        seen_names = {self.input.name: self.input}
        for bi, block in enumerate(self.blocks):
            if block.enter_node is not prev:
                raise ValueError(f"graph {self.name}: block {bi} enters at {block.enter_node.display()} but "
                                 f"must enter at {prev.display()} (the graph input or the previous block's exit)")
            if block.exit_node is None:
                raise ValueError(f"graph {self.name}: block {bi} has no exit node (pass is_exit=True to its "
                                 f"last operator)")
            for node in block.nodes:
                if isinstance(node, Placeholder):
                    raise ValueError(f"graph {self.name}: block {bi} contains a placeholder {node.display()}")
                if node.hint_name is None:  # keep numbers across optimize() and JSON round trips
                    node.hint_name = str(counter)
                if node.name is None:
                    node.name = f"{node.type}_{counter}"
                if node.name in seen_names and seen_names[node.name] is not node:
                    raise ValueError(f"graph {self.name}: two nodes are named {node.name!r}")
                seen_names[node.name] = node
                counter += 1
            members = {id(n) for n in block.nodes}
            for node in block.nodes:
                for term in node.inputs:
                    for v in term:
                        if v.node is not block.enter_node and id(v.node) not in members:
                            raise ValueError(f"{node.display()} in block {bi} reads {v.node.display()}, which "
                                             f"is neither in the block nor its enter node")
            for node in topo_order(block):
                node.set_shape()
            prev = block.exit_node

    def infer_shape(self) -> None:
        for block in self.blocks:
            for node in topo_order(block):
                node.set_shape()

    def init_weights(self, seed: int = 0) -> None:
        """Random weights for every parameterised node, reproducible from ``seed``."""
        rng = np.random.default_rng(seed)
        for node in self.nodes():
            node.init_weights(rng)

    def has_weights(self) -> bool:
        return all(p is not None for n in self.nodes() for p in n.params.values())

    @property
    def output_shape(self) -> Shape:
        return self.blocks[-1].exit_node.output_shape

    def flops(self) -> float:
        return sum(n.flops() for n in self.nodes()[1:])

    def num_operators(self) -> int:
        return sum(len(b.nodes) for b in self.blocks)

    # ----- schedules (implemented in schedule.py; methods kept here for IOS compatibility) -------
    def sequential_schedule(self) -> None:
        from .schedule import sequential_schedule
        sequential_schedule(self)

    def greedy_schedule(self, max_num_streams: int = 8) -> None:
        from .schedule import greedy_schedule
        greedy_schedule(self, max_num_streams)

    def has_schedule(self) -> bool:
        return all(b.stages is not None for b in self.blocks)

    def __str__(self) -> str:
        from .schedule import format_schedule
        return format_schedule(self)

    # ----- serialisation (serialize.py) --------------------------------------------------------
    def export_config(self) -> dict:
        from .serialize import graph_to_dict
        return graph_to_dict(self)

    @staticmethod
    def from_config(config: dict) -> "Graph":
        from .serialize import graph_from_dict
        return graph_from_dict(config)


def topo_order(block: Block) -> List[Node]:
    """Block nodes in a dependency order (stable: creation order when it is valid); raises on a cycle."""
    nodes = block.nodes
    index = {id(n): i for i, n in enumerate(nodes)}
    indeg = [0] * len(nodes)
    succ: List[List[int]] = [[] for _ in nodes]
    for i, n in enumerate(nodes):
        preds = {index[id(p)] for p in n.input_nodes() if id(p) in index}
        if i in preds:
            raise ValueError(f"{n.display()} reads its own output (a cycle)")
        for p in preds:
            succ[p].append(i)
        indeg[i] = len(preds)
    import heapq
    ready = [i for i in range(len(nodes)) if indeg[i] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(nodes[i])
        for j in succ[i]:
            indeg[j] -= 1
            if indeg[j] == 0:
                heapq.heappush(ready, j)
    if len(order) != len(nodes):
        stuck = [nodes[i].display() for i in range(len(nodes)) if indeg[i] > 0]
        raise ValueError(f"block has a cycle through: {', '.join(stuck[:6])}")
    return order

"""The operators: the ``Node`` base class, the ``Value`` edges between nodes, and the op registry.

Each op type is declared once, here, as a ``Node`` subclass registered with ``register_op``. The
declaration holds everything the layers above need from an op:

* attribute checks (the constructor) and the attributes that go into stage keys (``attr_names`` ->
  ``attrs()``; the JSON config is ``attrs()`` plus name, inputs and shape: ``node_from_config``);
* shape inference (``infer_shape``; sliding windows share one ``window_out_hw`` of a ``Window``);
* FLOPs (``op_flops``: a static function of attributes and shapes, so the profiler pool prices specs
  without building nodes) and bytes (``bytes_accessed``);
* weights (``weight_shapes``, ``fan_in`` for ``init_weights``);
* the kernels it runs for the analytic cost model (``kernels``: flops, bytes, output elements, depthwise);
* how IOS prints it in a schedule (``schedule_text``).

Backends keep their implementation in their own module, in a ``Registry`` keyed by op type: the numpy
kernels (``runtime/reference.py``: ``KERNELS``) and the GPU lowerings (``runtime/gpu/program.py``:
``LOWERINGS``). A new op is one declaration here plus one entry per backend; ``missing_backends`` (run by
``tests/test_op_registry.py``) names any op a backend lacks.

Input semantics (as in IOS): ``node.inputs`` is a list of *terms*; the values in a term are summed,
the terms are concatenated along channels (``Element`` alone takes each term as one operand). A
``Value`` is a channel slice ``[begin, end)`` of a node's output. Shapes exclude the batch dimension:
``(C, H, W)``.

This module is pure: it imports nothing but numpy.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import numbers
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, TypeVar

import numpy as np

Shape = Tuple[int, int, int]

# element-wise activations a Conv (or SepConv, ScaleShift, Linear) applies to its output; the parametric
# ones (hardsigmoid, general clip) are Activation nodes (graph/compound.py)
ACTIVATIONS = ("relu", "identity", "tanh", "sigmoid", "relu6", "hardswish", "silu")
POOL_TYPES = ("max", "avg", "global_avg")
ELEMENT_OPS = ("add", "mul")


# ---------------------------------------------------------------------------------------------------
# Registries and shared formulas
# ---------------------------------------------------------------------------------------------------

T = TypeVar("T")


class Registry(Dict[str, T]):
    """Op type -> one layer's entry for it (an op declaration, a numpy kernel, a GPU lowering).

    A dict (lookups run at dict speed: the profiler pool looks up every op of every spec) whose
    entries are added with ``register``, which refuses a second entry for a type; a missing type raises
    a KeyError that names the registry and what it holds.

    Args:
        what: what the entries are, for error messages (e.g. "reference kernel").
        entries: initial entries (``copy``).
    """

    def __init__(self, what: str, entries: Optional[Mapping[str, T]] = None):
        super().__init__(entries or {})
        self.what = what

    def register(self, op_type: str) -> Callable[[T], T]:
        """Decorator adding ``entry`` under ``op_type``.

        Raises:
            ValueError: ``op_type`` already has an entry (two definitions would silently shadow).
        """
        def add(entry: T) -> T:
            if op_type in self:
                raise ValueError(f"{self.what}: op type {op_type!r} is registered twice")
            self[op_type] = entry
            return entry
        return add

    def __missing__(self, op_type: str) -> T:
        raise KeyError(f"no {self.what} for op type {op_type!r}; registered: {sorted(self)}")

    def copy(self) -> "Registry[T]":
        """An independent registry with the same entries (tests add ops to it without touching this one)."""
        return Registry(self.what, self)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {sorted(self)})"


def missing_backends(op_types: Iterable[str], backends: Mapping[str, Registry]) -> Dict[str, List[str]]:
    """For each backend that lacks some of ``op_types``, the op types it lacks (sorted); ``{}`` when complete.

    Args:
        op_types: the op types every backend must implement (``operator_types()`` for the graph's ops).
        backends: backend name -> its registry.
    """
    wanted = sorted(set(op_types))
    gaps = {name: [t for t in wanted if t not in registry] for name, registry in backends.items()}
    return {name: types for name, types in gaps.items() if types}


@dataclass(frozen=True)
class Window:
    """A sliding window's geometry beyond its kernel size (convolutions and pools), shared by the backends.

    Attributes:
        stride: (vertical, horizontal) step between output positions.
        padding: top and left padding.
        groups: a convolution's channel groups (1 for a pool).
        dilation: the spacing of the kernel taps.
        pad_end: bottom and right padding; None: equal to ``padding``.
    """
    stride: Tuple[int, int] = (1, 1)
    padding: Tuple[int, int] = (0, 0)
    groups: int = 1
    dilation: Tuple[int, int] = (1, 1)
    pad_end: Optional[Tuple[int, int]] = None

    @property
    def quad(self) -> Tuple[int, int, int, int]:
        """The padding as (top, left, bottom, right)."""
        end = self.padding if self.pad_end is None else self.pad_end
        return self.padding[0], self.padding[1], end[0], end[1]

    @staticmethod
    def of(node: "Node") -> "Window":
        """The window of a conv, sepconv or pool node: its ``stride`` and ``padding``, and its ``groups``,
        ``dilation`` and ``pad_end`` where it has them (``pad_end`` None when equal to ``padding``)."""
        padding = tuple(node.padding)
        pad_end = tuple(getattr(node, "pad_end", padding))
        return Window(tuple(node.stride), padding, int(getattr(node, "groups", 1)),
                      tuple(getattr(node, "dilation", (1, 1))), None if pad_end == padding else pad_end)


def window_out_hw(h: int, w: int, kernel: Sequence[int], window: Window) -> Tuple[int, int]:
    """Output height and width of a sliding window (conv, pool) with ``kernel`` taps on an ``h x w`` input:
    ``(size + pad + pad_end - dilated kernel) // stride + 1``, where the dilated kernel spans
    ``(kernel - 1) * dilation + 1``."""
    top, left, bottom, right = window.quad
    (sh, sw), (dh, dw) = window.stride, window.dilation
    return ((h + top + bottom - (kernel[0] - 1) * dh - 1) // sh + 1,
            (w + left + right - (kernel[1] - 1) * dw - 1) // sw + 1)


def non_default_attrs(out: dict, values: Mapping[str, object], defaults: Mapping[str, object]) -> dict:
    """``out`` (an op's ``attrs()``) with each of ``values`` that differs from its default added (tuples as
    lists): attributes added to an op later are left out of the configurations that do not use them, so
    those keep the stage keys (and cost-table rows) they always had."""
    for name, value in values.items():
        if value != defaults[name]:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def conv_flops(out_elems: int, in_per_group: int, taps: int) -> float:
    """Multiply-adds (2 flops each) of a convolution: every output reads ``in_per_group`` x ``taps`` inputs."""
    return 2.0 * out_elems * in_per_group * taps


@dataclass(frozen=True)
class KernelCost:
    """One GPU kernel an op runs, for batch 1: what the analytic roofline needs."""
    flops: float
    act_bytes: float               # activations read and written (scale with the batch)
    param_bytes: float             # weights read (once per batch)
    out_elems: int
    depthwise: bool = False        # no reuse across channels: runs at a fraction of the dense FLOP rate


# ---------------------------------------------------------------------------------------------------
# Values and the Node base class
# ---------------------------------------------------------------------------------------------------

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
    """``x`` as an int; strings ("64"), booleans and fractions are refused, not converted."""
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
    """Base class of operators. ``hint_name`` is the number shown in printed schedules.

    A subclass declares an op type: ``type`` (its key in the registry, configs and stage keys),
    ``display_type`` (its printed name), ``attr_names`` (its configuration, in key order),
    ``param_names``, and overrides ``infer_shape`` and ``op_flops``; ``register_op`` checks this.
    """

    type: str = "node"
    display_type: str = "Node"
    builder_name: Optional[str] = None  # when error messages name it other than by its type ("pool2d")
    attr_names: Tuple[str, ...] = ()
    param_names: Tuple[str, ...] = ()
    is_input: bool = False         # the graph input: fed, never run

    def __init__(self, name: Optional[str], inputs: Terms, output_shape: Optional[Shape] = None,
                 hint_name: Optional[str] = None):
        self.name = name
        self.hint_name = hint_name
        self.inputs: Terms = [list(term) for term in inputs]
        self.output_shape: Optional[Shape] = tuple(output_shape) if output_shape is not None else None
        self.params: Dict[str, Optional[np.ndarray]] = {p: None for p in self.param_names}

    @classmethod
    def describe(cls, name: Optional[str]) -> str:
        """How constructor errors name a node of this type: ``"conv c1"``."""
        return f"{cls.builder_name or cls.type} {name or ''}".strip()

    # ----- description -------------------------------------------------------------------------
    def display(self) -> str:
        label = self.name or "?"
        if self.hint_name is not None and self.hint_name != self.name:
            label = f"{self.name}[{self.hint_name}]"
        return f"{self.display_type} {label}"

    def attrs(self) -> dict:
        """The operator's configuration (what stage keys hash), without name, inputs and shape (JSON-able)."""
        out = {}
        for name in self.attr_names:
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
        return out

    def input_nodes(self) -> List["Node"]:
        seen: Dict[int, Node] = {}
        for term in self.inputs:
            for v in term:
                seen.setdefault(id(v.node), v.node)
        return list(seen.values())

    def schedule_text(self, args: str) -> str:
        """How IOS prints this node in a schedule, given its inputs' hint names ``args`` (``a+b,c``)."""
        if len(self.inputs) > 1:
            args = f"Concat({args})"
        return f"{self.display_type}({args})"

    # ----- shapes --------------------------------------------------------------------------------
    def term_shapes(self) -> List[Shape]:
        """Each input term's shape (its values summed); checks the values of a term agree."""
        if not self.inputs or any(len(t) == 0 for t in self.inputs):
            raise ValueError(f"{self.display()}: inputs must be a non-empty list of non-empty terms")
        shapes = []
        for ti, term in enumerate(self.inputs):
            first = None
            for v in term:
                if not isinstance(v, Value):
                    raise ValueError(f"{self.display()}: input term {ti} holds {type(v).__name__}, not a Value")
                shape = v.node.output_shape
                if shape is None:
                    raise ValueError(f"{self.display()}: input {v.node.display()} has no shape yet")
                if not (0 <= v.begin < v.end <= shape[0]):
                    raise ValueError(f"{self.display()}: slice [{v.begin}, {v.end}) of {v.node.display()} is "
                                     f"outside its {shape[0]} channels")
                if first is None:
                    first = (v.length, shape[1], shape[2])
                elif first[1:] != (shape[1], shape[2]):
                    raise ValueError(f"{self.display()}: spatial size mismatch: {v.node.display()} is "
                                     f"{shape[1]}x{shape[2]}, other inputs are {first[1]}x{first[2]}")
                elif first[0] != v.length:
                    raise ValueError(f"{self.display()}: term {ti} sums values of {first[0]} and {v.length} "
                                     f"channels; summed values need equal channels")
            shapes.append(first)
        return shapes

    def input_shape(self) -> Shape:
        """Shape after summing each term and concatenating terms; checks consistency."""
        shapes = self.term_shapes()
        hw = shapes[0][1:]
        for shape, term in zip(shapes, self.inputs):
            if shape[1:] != hw:
                raise ValueError(f"{self.display()}: spatial size mismatch: {term[0].node.display()} is "
                                 f"{shape[1]}x{shape[2]}, other inputs are {hw[0]}x{hw[1]}")
        return sum(s[0] for s in shapes), hw[0], hw[1]

    def infer_shape(self) -> Shape:
        """The output shape from the input shapes; raises ValueError naming the node if they do not fit."""
        raise NotImplementedError

    def set_shape(self) -> None:
        self.output_shape = self.infer_shape()
        if any(d <= 0 for d in self.output_shape):
            raise ValueError(f"{self.display()}: output shape {self.output_shape} has a non-positive size")

    def _window_hw(self, h: int, w: int) -> Tuple[int, int]:
        """Output size of a sliding-window op (``kernel``, ``stride``, ``padding`` attributes and, where it
        has them, ``pad_end`` and ``dilation``: ``Window.of``) on ``h x w``."""
        oh, ow = window_out_hw(h, w, self.kernel, Window.of(self))
        if oh <= 0 or ow <= 0:
            raise ValueError(f"{self.display()}: kernel {self.kernel} with padding {self.padding} does not fit "
                             f"the {h}x{w} input")
        return oh, ow

    # ----- costs ---------------------------------------------------------------------------------
    @staticmethod
    def op_flops(attrs: Mapping, terms: Sequence[int], in_hw: Tuple[int, int], out_shape: Shape) -> float:
        """FLOPs of the op itself for batch 1 (a multiply-add counts 2), from its configuration and shapes.

        Args:
            attrs: ``attrs()`` (or a stage key's op attributes).
            terms: channels of each input term.
            in_hw: the inputs' spatial size.
            out_shape: the output shape.
        """
        raise NotImplementedError

    def input_flops(self) -> float:
        """Additions done to sum multi-value terms."""
        total = 0
        for term in self.inputs:
            v = term[0]
            total += (len(term) - 1) * v.length * v.node.output_shape[1] * v.node.output_shape[2]
        return float(total)

    def flops(self) -> float:
        """Floating-point operations for batch 1 (a multiply-add counts 2): the op's and its term sums'."""
        _, h, w = self.input_shape()
        return (self.op_flops(self.attrs(), [t[0].length for t in self.inputs], (h, w), self.output_shape)
                + self.input_flops())

    def param_count(self) -> int:
        return sum(int(np.prod(s)) for s in self.weight_shapes().values())

    def bytes_accessed(self, dtype_bytes: int = 4) -> float:
        """Bytes read and written for batch 1: every input value, the output and the parameters."""
        read = sum(v.length * v.node.output_shape[1] * v.node.output_shape[2] for t in self.inputs for v in t)
        c, h, w = self.output_shape
        return float((read + c * h * w + self.param_count()) * dtype_bytes)

    def kernels(self, dtype_bytes: int) -> List[KernelCost]:
        """The GPU kernels this op runs, for the analytic model: by default one, doing all of ``flops()``."""
        param_bytes = float(self.param_count() * dtype_bytes)
        c, h, w = self.output_shape
        return [KernelCost(self.flops(), self.bytes_accessed(dtype_bytes) - param_bytes, param_bytes, c * h * w)]

    # ----- weights -------------------------------------------------------------------------------
    def weight_shapes(self) -> Dict[str, Tuple[int, ...]]:
        return {}

    def fan_in(self, pname: str, shape: Tuple[int, ...]) -> int:
        """Inputs feeding one output of parameter ``pname``: sets its random init's bound 1/sqrt(fan_in)."""
        return int(np.prod(shape[1:])) if len(shape) > 1 else 1

    def init_weights(self, rng: np.random.Generator) -> None:
        for pname, shape in self.weight_shapes().items():
            bound = 1.0 / np.sqrt(max(1, self.fan_in(pname, shape)))
            self.params[pname] = rng.uniform(-bound, bound, size=shape).astype(np.float32)

    def __repr__(self) -> str:
        return f"<{self.display()}>"

    # ----- IOS compatibility -------------------------------------------------------------------
    def export_config(self) -> dict:
        return {"type": self.type, "name": self.name, "hint_name": self.hint_name,
                "inputs": [[v.export_config() for v in term] for term in self.inputs],
                "output_shape": list(self.output_shape) if self.output_shape else None, **self.attrs()}


# ---------------------------------------------------------------------------------------------------
# The op registry
# ---------------------------------------------------------------------------------------------------

OPS: Registry[type] = Registry("op declaration")


def register_op(cls: type, ops: Optional[Registry] = None) -> type:
    """Class decorator: declare ``cls`` (a Node subclass) as the op of type ``cls.type`` in ``ops`` (``OPS``).

    Raises:
        TypeError: ``cls`` is not a Node subclass with its own ``type``, ``infer_shape`` and ``op_flops``.
        ValueError: the op type is already declared.
    """
    if not (isinstance(cls, type) and issubclass(cls, Node)) or cls.type == Node.type:
        raise TypeError(f"register_op needs a Node subclass with its own type, got {cls!r}")
    lacking = [m for m in ("infer_shape", "op_flops") if getattr(cls, m) is getattr(Node, m)]
    if lacking:
        raise TypeError(f"op {cls.type!r} ({cls.__name__}) does not declare {', '.join(lacking)}")
    return (OPS if ops is None else ops).register(cls.type)(cls)


def operator_types(ops: Optional[Registry] = None) -> List[str]:
    """The op types a backend must run: every declared op but the graph input."""
    return sorted(t for t, cls in (OPS if ops is None else ops).items() if not cls.is_input)


@register_op
class Placeholder(Node):
    type = "placeholder"
    display_type = "Placeholder"
    is_input = True

    def __init__(self, name: Optional[str], output_shape: Sequence[int], hint_name: Optional[str] = None):
        shape = tuple(int(d) for d in output_shape)
        if len(shape) != 3 or any(d <= 0 for d in shape):
            raise ValueError(f"{self.describe(name)}: output_shape must be three positive ints (C, H, W), "
                             f"got {tuple(output_shape)!r}")
        super().__init__(name, [], shape, hint_name)

    def infer_shape(self) -> Shape:
        return self.output_shape

    def input_shape(self) -> Shape:
        return self.output_shape

    @staticmethod
    def op_flops(attrs, terms, in_hw, out_shape) -> float:
        return 0.0

    def bytes_accessed(self, dtype_bytes: int = 4) -> float:
        return 0.0

    def kernels(self, dtype_bytes: int) -> List[KernelCost]:
        return []  # fed, not run


@register_op
class Conv(Node):
    type = "conv"
    display_type = "Conv2d"
    attr_names = ("out_channels", "kernel", "stride", "padding", "groups", "act")
    param_names = ("weight", "bias")

    def __init__(self, name, inputs, out_channels, kernel, stride=(1, 1), padding=(0, 0), groups=1, act="relu",
                 output_shape=None, hint_name=None, *, dilation=(1, 1), pad_end=None):
        super().__init__(name, inputs, output_shape, hint_name)
        desc = self.describe(name)
        self.out_channels = _int(out_channels, "out_channels", desc)
        self.kernel = _pair(kernel, "kernel", desc)
        self.stride = _pair(stride, "stride", desc)
        self.padding = _pair(padding, "padding", desc)              # top, left
        self.pad_end = self.padding if pad_end is None else _pair(pad_end, "pad_end", desc)   # bottom, right
        self.dilation = _pair(dilation, "dilation", desc)
        self.groups = _int(groups, "groups", desc)
        self.act = act
        if act not in ACTIVATIONS:
            raise ValueError(f"{desc}: act must be one of {ACTIVATIONS}, got {act!r}")
        if self.out_channels <= 0 or min(self.kernel) <= 0 or min(self.stride) <= 0 or self.groups <= 0 \
                or min(self.dilation) <= 0:
            raise ValueError(f"{desc}: out_channels, kernel, stride, dilation and groups must be positive")
        if min(self.padding) < 0 or min(self.pad_end) < 0:
            raise ValueError(f"{desc}: padding must be non-negative, got {self.padding} (end {self.pad_end})")

    def attrs(self) -> dict:
        """The IOS attributes, plus ``dilation`` and ``pad_end`` where they are not (1, 1) and ``padding``."""
        return non_default_attrs(super().attrs(), {"dilation": self.dilation, "pad_end": self.pad_end},
                                 {"dilation": (1, 1), "pad_end": self.padding})

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

    def infer_shape(self) -> Shape:
        c, h, w = self.input_shape()
        if c % self.groups or self.out_channels % self.groups:
            raise ValueError(f"{self.display()}: groups={self.groups} must divide input channels {c} and "
                             f"out_channels {self.out_channels}")
        return (self.out_channels, *self._window_hw(h, w))

    @property
    def depthwise(self) -> bool:
        """One group per input channel: no reuse across channels (cuDNN and our numpy kernel special-case it)."""
        return 1 < self.groups == self.input_shape()[0]

    def weight_shapes(self):
        c = self.input_shape()[0]
        return {"weight": (self.out_channels, c // self.groups, *self.kernel), "bias": (self.out_channels,)}

    def fan_in(self, pname, shape):
        return self.input_shape()[0] // self.groups * self.kernel[0] * self.kernel[1]

    @staticmethod
    def op_flops(attrs, terms, in_hw, out_shape) -> float:
        c, oh, ow = out_shape
        kh, kw = attrs["kernel"]
        return conv_flops(c * oh * ow, sum(terms) // attrs["groups"], kh * kw)

    def kernels(self, dtype_bytes: int) -> List[KernelCost]:
        return [dataclasses.replace(k, depthwise=self.depthwise) for k in super().kernels(dtype_bytes)]


@register_op
class SepConv(Node):
    """Separable conv fused as one node: [relu] -> depthwise kxk -> pointwise 1x1 -> act (NASNet, RandWire)."""

    type = "sepconv"
    display_type = "SepConv"
    builder_name = "sep_conv"
    attr_names = ("out_channels", "kernel", "stride", "padding", "act", "pre_act")
    param_names = ("dw_weight", "dw_bias", "pw_weight", "pw_bias")

    def __init__(self, name, inputs, out_channels, kernel, stride=(1, 1), padding=(0, 0), act="identity",
                 pre_act="relu", output_shape=None, hint_name=None):
        super().__init__(name, inputs, output_shape, hint_name)
        desc = self.describe(name)
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

    def infer_shape(self):
        _, h, w = self.input_shape()
        return (self.out_channels, *self._window_hw(h, w))

    def weight_shapes(self):
        c = self.input_shape()[0]
        return {"dw_weight": (c, 1, *self.kernel), "dw_bias": (c,),
                "pw_weight": (self.out_channels, c, 1, 1), "pw_bias": (self.out_channels,)}

    def fan_in(self, pname, shape):
        return self.kernel[0] * self.kernel[1] if pname.startswith("dw") else self.input_shape()[0]

    @staticmethod
    def op_flops(attrs, terms, in_hw, out_shape) -> float:
        c, oh, ow = out_shape
        kh, kw = attrs["kernel"]
        return 2.0 * oh * ow * sum(terms) * (kh * kw + c)  # depthwise (kh * kw per output) + pointwise (c)

    def kernels(self, dtype_bytes: int) -> List[KernelCost]:
        """[pre-activation relu,] a depthwise conv and a pointwise conv, as the runtimes run it."""
        c, h, w = self.output_shape
        ci, hi, wi = self.input_shape()
        read = sum(v.length * v.node.output_shape[1] * v.node.output_shape[2] for t in self.inputs for v in t)
        kh, kw = self.kernel
        mid = ci * h * w
        kernels = []
        if self.pre_act == "relu":
            kernels.append(KernelCost(self.input_flops() + ci * hi * wi, (read + ci * hi * wi) * dtype_bytes, 0.0,
                                      ci * hi * wi))
            read = ci * hi * wi
        kernels.append(KernelCost(conv_flops(mid, 1, kh * kw), (read + mid) * dtype_bytes,
                                  (ci * kh * kw + ci) * dtype_bytes, mid, depthwise=True))
        kernels.append(KernelCost(conv_flops(c * h * w, ci, 1), (mid + c * h * w) * dtype_bytes,
                                  (c * ci + c) * dtype_bytes, c * h * w))
        return kernels


@register_op
class Pool(Node):
    type = "pool"
    display_type = "Pool2d"
    builder_name = "pool2d"
    attr_names = ("pool_type", "kernel", "stride", "padding")

    def __init__(self, name, inputs, pool_type, kernel=(1, 1), stride=(1, 1), padding=(0, 0), output_shape=None,
                 hint_name=None, *, pad_end=None, count_include_pad=True):
        super().__init__(name, inputs, output_shape, hint_name)
        desc = self.describe(name)
        if pool_type not in POOL_TYPES:
            raise ValueError(f"{desc}: pool_type must be one of {POOL_TYPES}, got {pool_type!r}")
        self.pool_type = pool_type
        self.kernel = _pair(kernel, "kernel", desc)
        self.stride = _pair(stride, "stride", desc)
        self.padding = _pair(padding, "padding", desc)              # top, left
        self.pad_end = self.padding if pad_end is None else _pair(pad_end, "pad_end", desc)   # bottom, right
        self.count_include_pad = bool(count_include_pad)  # avg: divide by the whole window, padding included
        if pool_type == "global_avg":
            if self.pad_end != self.padding or not self.count_include_pad:
                raise ValueError(f"{desc}: a global_avg pool takes no pad_end or count_include_pad")
        else:
            if min(self.kernel) <= 0 or min(self.stride) <= 0 or min(self.padding) < 0 or min(self.pad_end) < 0:
                raise ValueError(f"{desc}: kernel and stride must be positive, padding non-negative")
            if self.padding[0] * 2 > self.kernel[0] or self.padding[1] * 2 > self.kernel[1]:
                raise ValueError(f"{desc}: padding {self.padding} must be at most half the kernel {self.kernel}")
            if self.pad_end[0] >= self.kernel[0] or self.pad_end[1] >= self.kernel[1]:
                raise ValueError(f"{desc}: pad_end {self.pad_end} must be smaller than the kernel {self.kernel}")
        if not self.count_include_pad and pool_type != "avg":
            raise ValueError(f"{desc}: count_include_pad=False is for avg pools only")

    def attrs(self) -> dict:
        """The IOS attributes, plus ``pad_end`` where it is not ``padding`` and ``count_include_pad`` where False."""
        values = {"pad_end": self.pad_end, "count_include_pad": self.count_include_pad}
        return non_default_attrs(super().attrs(), values, {"pad_end": self.padding, "count_include_pad": True})

    def infer_shape(self):
        c, h, w = self.input_shape()
        if self.pool_type == "global_avg":
            return c, 1, 1
        return (c, *self._window_hw(h, w))

    @staticmethod
    def op_flops(attrs, terms, in_hw, out_shape) -> float:
        c, oh, ow = out_shape
        if attrs["pool_type"] == "global_avg":
            return float(c * in_hw[0] * in_hw[1])
        kh, kw = attrs["kernel"]
        return float(c * oh * ow * kh * kw)


class _InputShaped(Node):
    """An op whose output has its input's shape (terms summed and concatenated)."""

    def infer_shape(self):
        return self.input_shape()


@register_op
class Identity(_InputShaped):
    """Concatenation (and summation) of its input terms, nothing else."""

    type = "identity"
    display_type = "Identity"

    @staticmethod
    def op_flops(attrs, terms, in_hw, out_shape) -> float:
        return 0.0

    def schedule_text(self, args: str) -> str:
        return f"Concat({args})" if len(self.inputs) > 1 else f"{self.display_type}({args})"


class PerElement(_InputShaped):
    """An op of its input's shape costing one operation per output element (activations, gates)."""

    @staticmethod
    def op_flops(attrs, terms, in_hw, out_shape) -> float:
        c, h, w = out_shape
        return float(c * h * w)


@register_op
class Relu(PerElement):
    type = "relu"
    display_type = "Relu"


@register_op
class Element(Node):
    """Element-wise ``add`` or ``mul`` of its terms: each term (summed values) is one operand."""

    type = "element"
    display_type = "Element"
    attr_names = ("op_type",)

    def __init__(self, name, inputs, op_type, output_shape=None, hint_name=None):
        super().__init__(name, inputs, output_shape, hint_name)
        if op_type not in ELEMENT_OPS:
            raise ValueError(f"{self.describe(name)}: op_type must be one of {ELEMENT_OPS}, got {op_type!r}")
        self.op_type = op_type

    def infer_shape(self):
        c, h, w = self.input_shape()  # checks spatial sizes and term consistency
        lengths = {term[0].length for term in self.inputs}
        if len(lengths) != 1:
            raise ValueError(f"{self.display()}: element-wise {self.op_type} needs operands of equal channels, "
                             f"got {sorted(lengths)}")
        return lengths.pop(), h, w

    @staticmethod
    def op_flops(attrs, terms, in_hw, out_shape) -> float:
        c, h, w = out_shape
        return float(c * h * w * (len(terms) - 1))

    def schedule_text(self, args: str) -> str:
        return f"{self.display_type}({args})"  # its terms are operands, not concatenated


NODE_TYPES = OPS  # op type -> declaring Node subclass (the name IOS-era code uses)

_CONFIG_KEYS = ("type", "name", "hint_name", "inputs", "output_shape")


@functools.lru_cache(maxsize=None)
def _required_attrs(cls) -> Tuple[str, ...]:
    """The attributes an op class's constructor requires (after name and inputs); cached, since
    ``inspect.signature`` costs more than building the node (stages are rebuilt from specs by the 10^5)."""
    params = list(inspect.signature(cls.__init__).parameters.values())[3:]
    return tuple(p.name for p in params if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD)


def node_from_config(cfg: dict, name2node: Dict[str, Node], ops: Optional[Registry] = None) -> Node:
    """Build a node from its exported config (``Node.export_config``) through the op registry ``ops``.

    Args:
        cfg: the config: type, name, hint_name, inputs ``[[[name, begin, end], ...], ...]``, attributes.
        name2node: the nodes its inputs may name.
        ops: the op registry (``OPS``).
    Raises:
        ValueError: unknown type, missing name, an input that is not defined, or bad attributes.
    """
    ops = OPS if ops is None else ops
    kind = cfg.get("type")
    if kind not in ops:
        raise ValueError(f"node {cfg.get('name')!r}: unknown op type {kind!r}; known: {sorted(ops)}")
    name = cfg.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"a {kind} node has no name")
    cls = ops[kind]
    if cls.is_input:
        return cls(name, cfg["output_shape"], hint_name=cfg.get("hint_name"))
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
    attrs = {k: v for k, v in cfg.items() if k not in _CONFIG_KEYS}
    missing = [p for p in _required_attrs(cls) if p not in attrs]
    if missing:
        raise ValueError(f"node {name!r} ({kind}): missing attribute(s) {missing}")
    try:
        return cls(name, inputs, **attrs, hint_name=cfg.get("hint_name"))
    except (TypeError, ValueError) as exc:
        if str(exc).startswith(cls.describe(name)):
            raise  # already names the node
        raise ValueError(f"node {name!r} ({kind}): bad attributes {sorted(attrs)}: {exc}") from None

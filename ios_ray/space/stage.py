"""Canonical, name-independent description of a candidate stage: the unit we measure and cache.

A ``StageSpec`` says what a stage computes without naming any node: its external inputs (the outputs of
nodes outside the stage, by shape), and its groups, each a sequence of ``OpSpec`` whose inputs refer to
an external (``"e", i``) or to an earlier op of the same group (``"o", j``), with a channel slice. Two
stages that compute the same thing on the same shapes -- in different blocks or models -- get the same
spec and so the same ``key``: they are measured once.

Groups are put in a canonical order (by their own signature) and externals numbered by first use in
that order, so the spec does not depend on the order the enumerator found the groups in.

A merge stage is described by the merged convolution it becomes (one group, one conv): it shares its key
with a plain stage running that conv, which is exactly right -- they run the same kernel.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

from ..graph.ir import Conv, Node, Placeholder, Shape, Value, node_from_config
from ..graph.schedule import Strategy

Ref = Tuple[str, int, int, int]  # ("e"|"o", index, begin, end)

SPEC_VERSION = 1


def _freeze(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    return v


@dataclass(frozen=True)
class OpSpec:
    type: str
    attrs: Tuple[Tuple[str, Any], ...]
    inputs: Tuple[Tuple[Ref, ...], ...]
    output_shape: Shape

    def to_json(self) -> dict:
        return {"type": self.type, "attrs": {k: list(v) if isinstance(v, tuple) else v for k, v in self.attrs},
                "inputs": [[list(r) for r in term] for term in self.inputs], "output_shape": list(self.output_shape)}

    @staticmethod
    def from_json(obj: dict) -> "OpSpec":
        return OpSpec(obj["type"], tuple(sorted((k, _freeze(v)) for k, v in obj["attrs"].items())),
                      tuple(tuple((r[0], int(r[1]), int(r[2]), int(r[3])) for r in term) for term in obj["inputs"]),
                      tuple(obj["output_shape"]))


@dataclass(frozen=True)
class StageSpec:
    inputs: Tuple[Shape, ...]
    groups: Tuple[Tuple[OpSpec, ...], ...]
    strategy: Strategy = Strategy.PARALLEL

    def to_json(self) -> dict:
        return {"v": SPEC_VERSION, "inputs": [list(s) for s in self.inputs],
                "groups": [[op.to_json() for op in g] for g in self.groups]}

    def canonical_json(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    @property
    def key(self) -> str:
        """Content hash of the canonical JSON (strategy excluded: a merge is the conv it becomes)."""
        return hashlib.blake2b(self.canonical_json().encode(), digest_size=16).hexdigest()

    @staticmethod
    def from_json(obj, strategy: Strategy = Strategy.PARALLEL) -> "StageSpec":
        if isinstance(obj, str):
            obj = json.loads(obj)
        if obj.get("v") != SPEC_VERSION:
            raise ValueError(f"stage spec version {obj.get('v')!r} is not {SPEC_VERSION}")
        return StageSpec(tuple(tuple(s) for s in obj["inputs"]),
                         tuple(tuple(OpSpec.from_json(o) for o in g) for g in obj["groups"]), strategy)

    @property
    def num_ops(self) -> int:
        return sum(len(g) for g in self.groups)

    def build(self) -> Tuple[List[Placeholder], List[List[Node]]]:
        """Materialise as IR nodes: one placeholder per external, real nodes (shapes set) per group."""
        exts = [Placeholder(f"ext{i}", shape) for i, shape in enumerate(self.inputs)]
        groups: List[List[Node]] = []
        for gi, group in enumerate(self.groups):
            nodes: List[Node] = []
            for oi, op in enumerate(group):
                name2node = {}
                refs = []
                for term in op.inputs:
                    t = []
                    for kind, idx, b, e in term:
                        src = exts[idx] if kind == "e" else nodes[idx]
                        name2node[src.name] = src
                        t.append([src.name, b, e])
                    refs.append(t)
                cfg = {"type": op.type, "name": f"g{gi}op{oi}", "inputs": refs, **dict(op.attrs)}
                node = node_from_config(cfg, name2node)
                node.set_shape()
                nodes.append(node)
            groups.append(nodes)
        return exts, groups

    def flops(self) -> float:
        _, groups = self.build()
        return sum(n.flops() for g in groups for n in g)


def _op_signature(node: Node, local: Dict[int, int]) -> Tuple[str, tuple, tuple, Shape]:
    """Op description with inputs as ('o', j) for group-local producers, ('x', shape) for externals."""
    terms = []
    for term in node.inputs:
        refs = []
        for v in term:
            j = local.get(id(v.node))
            if j is not None:
                refs.append(("o", j, v.begin, v.end))
            else:
                refs.append(("x", tuple(v.node.output_shape), v.begin, v.end))
        terms.append(tuple(refs))
    attrs = tuple(sorted((k, _freeze(v)) for k, v in node.attrs().items()))
    return node.type, attrs, tuple(terms), tuple(node.output_shape)


def group_signature(group: Sequence[Node]) -> str:
    """Name-independent text of one group (its ops in order, externals by shape): ``stage_spec``
    orders groups by it. Enumerators use it to recognise stages that will get the same spec."""
    local = {id(n): j for j, n in enumerate(group)}
    return repr([_op_signature(n, local) for n in group])


def stage_spec(groups: Sequence[Sequence[Node]], strategy: Strategy = Strategy.PARALLEL) -> StageSpec:
    """The canonical spec of running ``groups`` concurrently (each group's nodes in the given order)."""
    if strategy is Strategy.MERGE and sum(len(g) for g in groups) > 1:
        return merged_conv_spec([n for g in groups for n in g])
    signed = [(group_signature(group), list(group)) for group in groups]
    signed.sort(key=lambda t: t[0])
    ext_index: Dict[int, int] = {}
    ext_shapes: List[Shape] = []
    out_groups = []
    for _, group in signed:
        local = {id(n): j for j, n in enumerate(group)}
        ops = []
        for node in group:
            terms = []
            for term in node.inputs:
                refs = []
                for v in term:
                    j = local.get(id(v.node))
                    if j is not None:
                        refs.append(("o", j, v.begin, v.end))
                    else:
                        if id(v.node) not in ext_index:
                            ext_index[id(v.node)] = len(ext_shapes)
                            ext_shapes.append(tuple(v.node.output_shape))
                        refs.append(("e", ext_index[id(v.node)], v.begin, v.end))
                terms.append(tuple(refs))
            attrs = tuple(sorted((k, _freeze(v)) for k, v in node.attrs().items()))
            ops.append(OpSpec(node.type, attrs, tuple(terms), tuple(node.output_shape)))
        out_groups.append(tuple(ops))
    return StageSpec(tuple(ext_shapes), tuple(out_groups), strategy)


# ---------------------------------------------------------------------------------------------------
# Operator merge
# ---------------------------------------------------------------------------------------------------

def merged_conv_params(convs: Sequence[Conv]) -> dict:
    """Parameters of the conv that computes ``convs`` at once; raises ValueError if they can't merge.

    Kernels are zero-padded and centred to the largest kernel; this is exact only when every conv's
    padding plus its centring offset equals the merged padding, which is checked here.
    """
    if len(convs) < 2:
        raise ValueError("a merge needs at least two convolutions")
    first = convs[0]
    for c in convs:
        if not isinstance(c, Conv):
            raise ValueError(f"{c.display()} is not a convolution and cannot be merged")
        if c.groups != 1:
            raise ValueError(f"{c.display()}: grouped convolutions are not merged")
        if c.act != first.act or c.stride != first.stride:
            raise ValueError(f"{c.display()}: stride and activation must match {first.display()}")
        if len(c.inputs) != 1 or len(c.inputs[0]) != 1 or c.inputs[0][0] != first.inputs[0][0] \
                or len(first.inputs) != 1 or len(first.inputs[0]) != 1:
            raise ValueError(f"{c.display()}: merged convs must read one identical input value")
        if c.output_shape[1:] != first.output_shape[1:]:
            raise ValueError(f"{c.display()}: output resolution differs from {first.display()}")
    kh = max(c.kernel[0] for c in convs)
    kw = max(c.kernel[1] for c in convs)
    ph = pw = None
    for c in convs:
        dh, dw = kh - c.kernel[0], kw - c.kernel[1]
        if dh % 2 or dw % 2:
            raise ValueError(f"{c.display()}: kernel {c.kernel} cannot be centred in {kh}x{kw}")
        h, w = c.padding[0] + dh // 2, c.padding[1] + dw // 2
        if ph is None:
            ph, pw = h, w
        elif (h, w) != (ph, pw):
            raise ValueError(f"{c.display()}: its padding does not line up with the merged {kh}x{kw} kernel")
    return {"out_channels": sum(c.out_channels for c in convs), "kernel": (kh, kw), "stride": first.stride,
            "padding": (ph, pw), "groups": 1, "act": first.act}


def can_merge(convs: Sequence[Node]) -> bool:
    try:
        merged_conv_params(convs)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


def merged_conv_spec(convs: Sequence[Conv]) -> StageSpec:
    p = merged_conv_params(convs)
    src: Value = convs[0].inputs[0][0]
    _, oh, ow = convs[0].output_shape
    attrs = tuple(sorted((k, _freeze(v)) for k, v in
                         {"out_channels": p["out_channels"], "kernel": p["kernel"], "stride": p["stride"],
                          "padding": p["padding"], "groups": 1, "act": p["act"]}.items()))
    op = OpSpec("conv", attrs, ((("e", 0, src.begin, src.end),),), (p["out_channels"], oh, ow))
    return StageSpec((tuple(src.node.output_shape),), ((op,),), Strategy.MERGE)


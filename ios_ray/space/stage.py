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

The encoding is defined once, here: ``group_records`` (one ``op_record`` per node) -> ``OpSpec.to_json``
-> ``encode_json`` per group -> ``stage_json`` -> ``stage_key``. ``stage_spec``, ``group_signature`` and
the fast per-group templates of ``space.keys`` all go through it.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

from ..graph.ir import Conv, Node, Placeholder, Shape, Value, node_from_config
from ..graph.merge import merged_conv_params
from ..graph.schedule import Strategy

Ref = Tuple[str, int, int, int]  # ("e"|"o", index, begin, end)

SPEC_VERSION = 1

_JSON = dict(sort_keys=True, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------------
# The key encoding: the one definition of how an op, a group and a stage are written. Cost tables on
# disk are indexed by the keys it gives (``tests/test_keys.py`` pins them).
# ---------------------------------------------------------------------------------------------------

def freeze(value: Any) -> Any:
    """``value`` with every list or tuple turned into a tuple, recursively: hashable, and equal whether
    it came from a node's ``attrs()`` or from parsed JSON."""
    if isinstance(value, (list, tuple)):
        return tuple(freeze(x) for x in value)
    return value


def encode_json(obj: Any) -> str:
    """Canonical JSON text (sorted keys, no spaces): what keys are hashed from."""
    return json.dumps(obj, **_JSON)


def stage_json(group_texts: Sequence[str], input_texts: Sequence[str]) -> str:
    """A stage's canonical JSON from the canonical JSON of each group (a list of op records) and of
    each external's shape: ``encode_json({"groups": ..., "inputs": ..., "v": SPEC_VERSION})``, assembled
    from the parts so that the fast keyer (``space.keys``) can reuse group texts."""
    return f'{{"groups":[{",".join(group_texts)}],"inputs":[{",".join(input_texts)}],"v":{SPEC_VERSION}}}'


def stage_key(text: str) -> str:
    """The key of a stage: a content hash of its canonical JSON."""
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def op_record(op_type: str, attrs: Mapping[str, Any], inputs: Sequence[Sequence[tuple]],
              output_shape: Sequence[int]) -> "OpSpec":
    """The canonical record of one op: attributes sorted by name and frozen, refs and shape as tuples.

    Args:
        op_type: the node type (``node.type``).
        attrs: its attributes (``node.attrs()``, or parsed JSON).
        inputs: per input term, its refs ``(kind, index, begin, end)``.
        output_shape: ``(C, H, W)``.
    Returns:
        An ``OpSpec``.
    """
    return OpSpec(op_type, tuple(sorted((k, freeze(v)) for k, v in attrs.items())),
                  tuple(tuple(term) for term in inputs), tuple(output_shape))


def group_records(group: Sequence[Node], external: Callable[[Node], tuple]) -> List["OpSpec"]:
    """Records of a group's ops (in run order): an input produced by the group's op ``j`` is the ref
    ``("o", j, begin, end)``; one produced outside the group is ``(*external(producer), begin, end)``
    (called in reading order, so a caller can number externals by first use)."""
    local = {id(n): j for j, n in enumerate(group)}
    records = []
    for node in group:
        terms = []
        for term in node.inputs:
            refs = []
            for v in term:
                j = local.get(id(v.node))
                refs.append(("o", j, v.begin, v.end) if j is not None else (*external(v.node), v.begin, v.end))
            terms.append(refs)
        records.append(op_record(node.type, node.attrs(), terms, node.output_shape))
    return records


def _by_shape(producer: Node) -> tuple:
    return "x", tuple(producer.output_shape)


def group_signature(group: Sequence[Node]) -> str:
    """Name-independent text of one group (its ops in order, externals by shape): ``stage_spec``
    orders groups by it. Enumerators use it to recognise stages that will get the same spec."""
    return repr([(r.type, r.attrs, r.inputs, r.output_shape) for r in group_records(group, _by_shape)])


@dataclass(frozen=True)
class OpSpec:
    """One op of a stage spec (build it with ``op_record``)."""
    type: str
    attrs: Tuple[Tuple[str, Any], ...]
    inputs: Tuple[Tuple[Ref, ...], ...]
    output_shape: Shape

    def to_json(self) -> dict:
        return {"type": self.type, "attrs": {k: list(v) if isinstance(v, tuple) else v for k, v in self.attrs},
                "inputs": [[list(r) for r in term] for term in self.inputs], "output_shape": list(self.output_shape)}

    @staticmethod
    def from_json(obj: dict) -> "OpSpec":
        return op_record(obj["type"], obj["attrs"],
                         [[(r[0], int(r[1]), int(r[2]), int(r[3])) for r in term] for term in obj["inputs"]],
                         obj["output_shape"])


@dataclass(frozen=True)
class StageSpec:
    inputs: Tuple[Shape, ...]
    groups: Tuple[Tuple[OpSpec, ...], ...]
    strategy: Strategy = Strategy.PARALLEL

    def canonical_json(self) -> str:
        """The spec as canonical JSON (``from_json`` reads it back); the strategy is not part of it."""
        return self._json

    @functools.cached_property
    def _json(self) -> str:
        # computed once per spec object: the key, the table's spec column and the workers all read it
        return stage_json([encode_json([op.to_json() for op in g]) for g in self.groups],
                          [encode_json(list(s)) for s in self.inputs])

    @functools.cached_property
    def key(self) -> str:
        """Content hash of the canonical JSON (strategy excluded: a merge is the conv it becomes)."""
        return stage_key(self.canonical_json())

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


def stage_spec(groups: Sequence[Sequence[Node]], strategy: Strategy = Strategy.PARALLEL) -> StageSpec:
    """The canonical spec of running ``groups`` concurrently (each group's nodes in the given order)."""
    if strategy is Strategy.MERGE and sum(len(g) for g in groups) > 1:
        return merged_conv_spec([n for g in groups for n in g])
    signed = sorted(((group_signature(group), group) for group in groups), key=lambda t: t[0])
    ext_index: Dict[int, int] = {}   # producer -> its number, by first use
    ext_shapes: List[Shape] = []

    def external(producer: Node) -> tuple:
        i = ext_index.get(id(producer))
        if i is None:
            i = ext_index[id(producer)] = len(ext_shapes)
            ext_shapes.append(tuple(producer.output_shape))
        return "e", i

    out_groups = tuple(tuple(group_records(group, external)) for _, group in signed)
    return StageSpec(tuple(ext_shapes), out_groups, strategy)


def merged_conv_spec(convs: Sequence[Conv]) -> StageSpec:
    """The spec of the one conv that merging ``convs`` gives (``graph.merge.merged_conv_params``)."""
    p = merged_conv_params(convs)
    src: Value = convs[0].inputs[0][0]
    _, oh, ow = convs[0].output_shape
    op = op_record("conv", p, [[("e", 0, src.begin, src.end)]], (p["out_channels"], oh, ow))
    return StageSpec((tuple(src.node.output_shape),), ((op,),), Strategy.MERGE)

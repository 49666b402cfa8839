"""Read a graph written by the original IOS (its ``Graph.export_config()``, saved as JSON).

Data flow: the original's config --``from_ios_config``--> ios_ray's graph dict (``serialize.FORMAT``)
--``serialize.graph_from_dict``--> Graph, checked like any graph file (names, cycles, shapes, schedule).
``graph_from_dict``, and so ``load_graph`` and ``Graph.from_config``, call it for such configs.

The original's format::

    {"name": str, "input": <placeholder config>,
     "blocks": [{"enter_name": name, "enter_node": <config>, "inner_nodes": [<config>, ...],
                 "exit_node": <config>, "stages": [[[name, ...], ...], ...] | null}, ...]}

A node config holds ``type``, ``name``, ``hint_name``, ``inputs`` (``[[[name, begin, end], ...], ...]``),
``output_shape`` and the op's attributes; a ``sequential`` holds its inner configs in ``nodes``, the
first reading the Sequential's inputs, each later one the whole output of the one before.

Mapped onto our IR: an ``element`` op's operands are the values of its one input term (ours: one term
per operand); ``activation`` with ``act_type`` relu is a ``relu`` node (``inplace`` is dropped); a
``global_max`` pool is a max pool over its whole input. Shapes are inferred again, not read: the
original stores an element-wise op's shape as the width of all its operands together.
"""
from __future__ import annotations

from typing import Dict, List

Shapes = Dict[str, list]

_ATTRS = {  # the original's attributes of each node type (all required)
    "conv": ("out_channels", "kernel", "stride", "padding", "groups", "act"),
    "pool": ("pool_type", "kernel", "stride", "padding"),
    "identity": (),
    "relu": (),
    "element": ("op_type",),
    "activation": ("act_type",),
}


def is_ios_config(obj) -> bool:
    """Whether ``obj`` is the original's graph config (and not ios_ray's format)."""
    return (isinstance(obj, dict) and "format" not in obj and isinstance(obj.get("blocks"), list)
            and bool(obj["blocks"]) and isinstance(obj["blocks"][0], dict) and "enter_name" in obj["blocks"][0])


def from_ios_config(obj: dict) -> dict:
    """The original's graph config as the body of ios_ray's graph dict (``serialize.graph_from_dict``
    adds the format and version).

    Raises:
        ValueError: a missing key or an unknown node type, naming the block and node.
    """
    inp = obj.get("input")
    if not isinstance(inp, dict) or inp.get("type") != "placeholder":
        raise ValueError(f"IOS graph {obj.get('name')!r}: its input is not a placeholder config")
    shapes: Shapes = {}
    _collect_shapes(inp, shapes)
    blocks = []
    for bi, block in enumerate(obj["blocks"]):
        try:
            configs = list(block["inner_nodes"]) + [block["exit_node"]]
            for cfg in configs:
                _collect_shapes(cfg, shapes)
            blocks.append({"enter": block["enter_name"], "exit": block["exit_node"]["name"],
                           "nodes": [_node(cfg, shapes, f"block {bi}") for cfg in configs],
                           "stages": block.get("stages")})
        except (KeyError, TypeError) as exc:
            raise ValueError(f"IOS graph {obj.get('name')!r} block {bi}: malformed ({type(exc).__name__}: {exc})") \
                from None
    return {"name": obj.get("name", "graph"),
            "input": {"type": "placeholder", "name": inp["name"], "hint_name": inp.get("hint_name"),
                      "output_shape": inp["output_shape"]},
            "blocks": blocks}


def _collect_shapes(cfg: dict, shapes: Shapes) -> None:
    """Stored output shapes by node name (a global_max pool's kernel is its input's size)."""
    if isinstance(cfg, dict):
        shapes[cfg.get("name")] = cfg.get("output_shape")
        for inner in cfg.get("nodes") or []:
            _collect_shapes(inner, shapes)


def _node(cfg: dict, shapes: Shapes, where: str) -> dict:
    kind = cfg.get("type")
    name = cfg.get("name")
    if kind == "sequential":
        return _sequential(cfg, shapes, where)
    if kind not in _ATTRS:
        raise ValueError(f"IOS graph {where}: node {name!r} has type {kind!r}; known: "
                         f"{sorted([*_ATTRS, 'sequential'])}")
    try:
        out = {"type": kind, "name": name, "hint_name": cfg.get("hint_name"), "inputs": cfg["inputs"],
               **{key: cfg[key] for key in _ATTRS[kind]}}
    except KeyError as exc:
        raise ValueError(f"IOS graph {where}: {kind} node {name!r} has no {exc.args[0]!r}") from None
    if kind == "element" and len(out["inputs"] or []) == 1:  # its operands are the values of one term
        out["inputs"] = [[ref] for ref in out["inputs"][0]]
    if kind == "activation" and out["act_type"] == "relu":
        del out["act_type"]
        out["type"] = "relu"
    if kind == "pool" and out["pool_type"] == "global_max":
        source = (out["inputs"] or [[[None]]])[0][0][0]
        shape = shapes.get(source)
        if not shape or len(shape) != 3:
            raise ValueError(f"IOS graph {where}: global_max pool {name!r} needs the stored output shape of its "
                             f"input {source!r}")
        out.update(pool_type="max", kernel=list(shape[1:]), stride=[1, 1], padding=[0, 0])
    return out


def _sequential(cfg: dict, shapes: Shapes, where: str) -> dict:
    """A Sequential: the first inner node's inputs become its own; the others must chain."""
    name = cfg.get("name")
    inner: List[dict] = cfg.get("nodes") or []
    if not inner:
        raise ValueError(f"IOS graph {where}: sequential node {name!r} has no inner nodes")
    converted = [_node(c, shapes, f"{where} sequential {name!r}") for c in inner]
    for prev, node in zip(converted, converted[1:]):
        refs = [ref for term in node["inputs"] or [] for ref in term]
        if len(refs) != 1 or refs[0][0] != prev["name"] or refs[0][1] != 0:
            raise ValueError(f"IOS graph {where}: sequential node {name!r}: inner node {node['name']!r} must read "
                             f"the whole output of {prev['name']!r}, it reads {node['inputs']!r}")
    inputs = converted[0]["inputs"]
    for node in converted:
        del node["inputs"]
    return {"type": "sequential", "name": name, "hint_name": cfg.get("hint_name"), "inputs": inputs,
            "nodes": converted}


__all__ = ["is_ios_config", "from_ios_config"]

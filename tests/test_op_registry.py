"""The op registry: every declared op type runs through every layer, and a missing piece is reported.

Each op type declared in ``graph/ops.py`` is walked through: its key attributes and JSON round trip
(``node_from_config``), shape inference, flops (the node's and the registry's ``op_flops`` the profiler
pool uses), bytes, weights, the analytic model's kernels, the numpy reference kernel and the GPU lowering
(registered; there is no GPU here). ``EXAMPLES`` holds one configuration per op type: a new op type fails
here until it has an example and every backend.
"""
import ast
import json
import math
import pathlib
import subprocess
import sys
from typing import Dict, List, Mapping

import numpy as np
import pytest

from ios_ray.costs.analytic import AnalyticCostModel
from ios_ray.distributed.profiler_pool import BYTES_WEIGHT, FIXED_OVERHEAD_FLOPS, estimate_cost
from ios_ray.graph import builder as B
from ios_ray.graph.ir import Block, Graph
from ios_ray.graph.ops import (NODE_TYPES, OPS, KernelCost, Node, Placeholder, Registry, missing_backends,
                               node_from_config, operator_types, register_op)
from ios_ray.runtime.gpu.program import LOWERINGS
from ios_ray.runtime.reference import KERNELS, UnsupportedOpError, run_node
from ios_ray.space.enumerate import enumerate_graph
from ios_ray.space.options import SpaceOptions

BACKENDS: Dict[str, Registry] = {"reference": KERNELS, "gpu": LOWERINGS}

INPUT_SHAPE = (8, 9, 9)
# two terms: the first sums two 4-channel slices, the second is one 4-channel slice (8 channels in all;
# two 4-channel operands for an element-wise op)
INPUTS = [[["x", 0, 4], ["x", 4, 8]], [["x", 2, 6]]]

EXAMPLES: Dict[str, dict] = {
    "conv": {"out_channels": 6, "kernel": [3, 3], "stride": [2, 2], "padding": [1, 1], "groups": 2, "act": "relu"},
    "sepconv": {"out_channels": 5, "kernel": [5, 5], "stride": [1, 1], "padding": [2, 2], "act": "identity",
                "pre_act": "relu"},
    "pool": {"pool_type": "avg", "kernel": [3, 3], "stride": [2, 2], "padding": [1, 1]},
    "identity": {},
    "relu": {},
    "element": {"op_type": "mul"},
    "activation": {"act_type": "tanh"},
    "sequential": {"nodes": [{"type": "relu"}, {"type": "conv", "out_channels": 6, "kernel": [3, 3],
                                                "stride": [1, 1], "padding": [1, 1], "groups": 1, "act": "identity"}]},
    "scale_shift": {"act": "relu6"},
    "channel_mul": {},
    "linear": {"out_features": 7, "act": "hardswish"},
}
# examples whose inputs differ from INPUTS; "gate" is a global average pool of x, an (8, 1, 1) value
EXAMPLE_INPUTS: Dict[str, list] = {"channel_mul": [[["x", 0, 4], ["x", 4, 8]], [["gate", 2, 6]]]}


def _placeholder() -> Placeholder:
    return Placeholder("x", INPUT_SHAPE)


def _sources() -> Dict[str, Node]:
    """The nodes examples read: the placeholder ``x`` and ``gate``, its global average (an (8, 1, 1) value)."""
    x = _placeholder()
    gate = node_from_config({"type": "pool", "name": "gate", "inputs": [[["x", 0, 8]]], "pool_type": "global_avg"},
                            {"x": x})
    gate.set_shape()
    return {"x": x, "gate": gate}


def _example(op_type: str, ops: Registry = OPS) -> Node:
    inputs = EXAMPLE_INPUTS.get(op_type, INPUTS)
    cfg = {"type": op_type, "name": f"an_{op_type}", "inputs": inputs, **EXAMPLES[op_type]}
    node = node_from_config(cfg, _sources(), ops)
    node.set_shape()
    return node


def _source_values(node: Node, x: np.ndarray) -> Dict[Node, np.ndarray]:
    """The reference runtime's environment for ``node``: ``x`` and, where it reads it, the gate."""
    env: Dict[Node, np.ndarray] = {}
    for term in node.inputs:
        for v in term:
            src = v.node
            env[src] = x if isinstance(src, Placeholder) else run_node(src, {src.inputs[0][0].node: x})
    return env


def _walk(op_type: str, ops: Registry, backends: Mapping[str, Registry]) -> List[str]:
    """What op ``op_type`` lacks on its way through every layer (empty when it is complete)."""
    if op_type not in EXAMPLES:
        return [f"{op_type}: no example configuration in tests/test_op_registry.py"]
    gaps = [f"{op_type}: no {name} implementation" for name, registry in backends.items() if op_type not in registry]
    node = _example(op_type, ops)
    c, h, w = node.output_shape
    # key attributes: the example's configuration, JSON-able, rebuilt identically from the exported config
    if node.attrs() != EXAMPLES[op_type]:
        gaps.append(f"{op_type}: attrs() {node.attrs()} differ from the configuration it was built from")
    cfg = json.loads(json.dumps(node.export_config()))
    again = node_from_config(cfg, {v.node.name: v.node for t in node.inputs for v in t}, ops)
    again.set_shape()
    if again.export_config() != cfg:
        gaps.append(f"{op_type}: the JSON round trip changes the node")
    # flops: the node's and the registry's (what the profiler pool uses on stage specs) agree
    terms = [t[0].length for t in node.inputs]
    in_hw = node.inputs[0][0].node.output_shape[1:]
    declared = ops[op_type].op_flops(dict(node.attrs()), terms, in_hw, node.output_shape)
    if node.flops() != declared + node.input_flops():
        gaps.append(f"{op_type}: flops() {node.flops()} != op_flops {declared} + term sums {node.input_flops()}")
    if not node.bytes_accessed() >= 4 * c * h * w:
        gaps.append(f"{op_type}: bytes_accessed {node.bytes_accessed()} does not cover the output")
    # weights
    node.init_weights(np.random.default_rng(0))
    shapes = {k: v.shape for k, v in node.params.items()}
    if shapes != node.weight_shapes() or node.param_count() != sum(int(np.prod(s)) for s in shapes.values()):
        gaps.append(f"{op_type}: init_weights gives {shapes}, weight_shapes says {node.weight_shapes()}")
    # analytic kernels: at least the op's flops, a positive estimate
    kernels = node.kernels(4)
    if not kernels or sum(k.flops for k in kernels) < node.flops() or any(k.out_elems <= 0 for k in kernels):
        gaps.append(f"{op_type}: analytic kernels {kernels} do not describe the op")
    latency = AnalyticCostModel("H200").stage_latency([[node]], 2)
    if not (math.isfinite(latency) and latency > 0):
        gaps.append(f"{op_type}: analytic latency {latency}")
    # the reference kernel computes the inferred shape
    if op_type in KERNELS:
        x = np.random.default_rng(1).standard_normal((2, *INPUT_SHAPE), dtype=np.float32)
        y = run_node(node, _source_values(node, x))
        if y.shape != (2, c, h, w) or y.dtype != np.float32 or not np.isfinite(y).all():
            gaps.append(f"{op_type}: the reference kernel gives {y.shape} {y.dtype}, expected {(2, c, h, w)}")
    if not node.schedule_text("1").startswith(("Concat(", node.display_type)):
        gaps.append(f"{op_type}: schedule_text {node.schedule_text('1')!r}")
    return gaps


@pytest.mark.parametrize("op_type", operator_types())
def test_every_op_type_runs_through_every_layer(op_type):
    assert _walk(op_type, OPS, BACKENDS) == []


def test_every_backend_covers_every_op_type():
    assert operator_types() == sorted(EXAMPLES)
    assert missing_backends(operator_types(), BACKENDS) == {}
    assert "placeholder" in NODE_TYPES and "placeholder" not in operator_types()  # fed, never run


class _Scale(Node):
    """An op declared in the test only: doubles its input."""
    type = "test_scale"
    display_type = "Scale"

    def infer_shape(self):
        return self.input_shape()

    @staticmethod
    def op_flops(attrs, terms, in_hw, out_shape):
        return float(out_shape[0] * out_shape[1] * out_shape[2])


def test_coverage_check_reports_an_op_without_backends():
    ops = OPS.copy()
    register_op(_Scale, ops)
    assert "test_scale" not in OPS  # the real registry is untouched
    assert missing_backends(operator_types(ops), BACKENDS) == {"reference": ["test_scale"], "gpu": ["test_scale"]}
    EXAMPLES["test_scale"] = {}
    try:
        gaps = _walk("test_scale", ops, BACKENDS)
        assert gaps == ["test_scale: no reference implementation", "test_scale: no gpu implementation"]
        kernels = KERNELS.copy()
        kernels.register("test_scale")(lambda node, env: 2 * env[node.inputs[0][0].node])
        assert missing_backends(operator_types(ops), {"reference": kernels}) == {}
    finally:
        del EXAMPLES["test_scale"]
    assert _walk("test_scale", ops, BACKENDS)[0].endswith("no example configuration in tests/test_op_registry.py")


def test_registry_refuses_incomplete_or_duplicate_declarations():
    class NoFlops(Node):
        type = "no_flops"

        def infer_shape(self):
            return self.input_shape()

    with pytest.raises(TypeError, match="does not declare op_flops"):
        register_op(NoFlops, OPS.copy())
    with pytest.raises(ValueError, match="registered twice"):
        register_op(type("Conv2", (NODE_TYPES["conv"],), {}), OPS.copy())
    with pytest.raises(KeyError, match="no op declaration for op type 'nope'"):
        OPS["nope"]


def test_unregistered_op_is_a_clear_runtime_error():
    x = B.placeholder(INPUT_SHAPE)
    node = _Scale("s", [[x]])
    with pytest.raises(UnsupportedOpError, match="no kernel for op type 'test_scale'"):
        run_node(node, {x.node: np.zeros((1, *INPUT_SHAPE), dtype=np.float32)})


def test_depthwise_conv_is_priced_like_a_sepconv_depthwise_step():
    """Regression: the analytic model priced a depthwise Conv (groups == in_channels) at the dense rate."""
    x = B.placeholder((16, 14, 14))
    block = Block(x.node)
    dw = B.conv2d(block, [[x]], 16, kernel=3, padding=1, groups=16, act="identity")
    dense = B.conv2d(block, [[x]], 16, kernel=3, padding=1, groups=1, act="identity")
    sep = B.sep_conv(block, [[x]], 16, kernel=3, padding=1, pre_act="identity", is_exit=True)
    assert dw.node.kernels(4) == [sep.node.kernels(4)[0]]
    assert dw.node.kernels(4)[0].depthwise and not dense.node.kernels(4)[0].depthwise
    model = AnalyticCostModel("V100")
    assert model.kernel_estimates(dw.node, 1) == [model.kernel_estimates(sep.node, 1)[0]]


def _all_ops_graph() -> Graph:
    """One block using every op type, at two resolutions, with summed terms and concatenations."""
    x = B.placeholder((8, 12, 12), name="x")
    b = Block(x.node)
    p = B.pool2d(b, [[x]], "max", kernel=3, stride=2, padding=1)
    s = B.sep_conv(b, [[p]], 8, kernel=3, padding=1)
    c = B.conv2d(b, [[p, s]], 8)
    e = B.mul(b, [[c], [s]])
    r = B.relu(b, [[e], [p]])
    d = B.conv2d(b, [[r]], 16, kernel=3, padding=1, groups=16)
    q = B.pool2d(b, [[d], [c]], "global_avg")
    g = B.pool2d(b, [[p]], "global_avg")
    B.identity(b, [[q], [g]], is_exit=True)
    return Graph("all_ops", x.node, [b])


def test_profiler_pool_estimate_uses_the_declared_flops():
    """``estimate_cost`` prices specs without building nodes; it must agree with the built nodes exactly."""
    space = enumerate_graph(_all_ops_graph(), SpaceOptions(max_group_size=3, max_num_groups=3))
    specs = list(space.specs.values())
    # some op reads an earlier op of its group at another resolution (e.g. a global pool of a strided pool)
    assert any(g[r[1]].output_shape[1:] != op.output_shape[1:]
               for spec in specs for g in spec.groups for op in g for t in op.inputs for r in t if r[0] == "o")
    for spec in specs:
        _, groups = spec.build()
        nodes = [n for g in groups for n in g]
        expected = sum(n.flops() - n.input_flops() + BYTES_WEIGHT * 4.0 * (n.bytes_accessed(1) - n.param_count())
                       for n in nodes) + FIXED_OVERHEAD_FLOPS
        assert estimate_cost(spec) == pytest.approx(expected, rel=1e-12), spec.canonical_json()


def test_kernel_cost_is_a_record():
    k = KernelCost(1.0, 2.0, 3.0, 4)
    assert not k.depthwise
    with pytest.raises(AttributeError):
        k.flops = 2.0


# ----- imports go one way ----------------------------------------------------------------------------

GRAPH_DIR = pathlib.Path(__file__).resolve().parents[1] / "ios_ray" / "graph"


def _graph_imports(path: pathlib.Path) -> set:
    """Sibling modules of ``ios_ray/graph`` that ``path`` imports anywhere (functions included), except
    under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and getattr(node.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(node)}
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and id(node) not in skip and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(a.name for a in node.names)
    return out


def test_graph_modules_import_in_one_direction():
    modules = {p.stem: _graph_imports(p) for p in GRAPH_DIR.glob("*.py") if p.stem != "__init__"}
    assert modules["ops"] == set() and modules["schedule"] == set()
    assert "serialize" not in modules["ir"] and "builder" not in modules["ir"]
    # a topological order exists: no cycle, lazy imports inside functions included
    done: set = set()
    while len(done) < len(modules):
        ready = [m for m, deps in modules.items() if m not in done and deps <= done | {m}]
        assert ready, f"import cycle among {sorted(set(modules) - done)}: {modules}"
        done.update(ready)


@pytest.mark.parametrize("module", ["ops", "schedule", "ir", "serialize", "builder"])
def test_graph_module_imports_alone_in_a_fresh_interpreter(module):
    code = (f"import sys, importlib; importlib.import_module('ios_ray.graph.{module}'); "
            f"bad = [m for m in ('ray', 'cupy') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)

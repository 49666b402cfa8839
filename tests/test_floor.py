"""The critical-path floor (pure, synthetic times) and the benchmark rows built from it on the CPU."""
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

from ios_ray.costs.measurement import MeasureSettings
from ios_ray.dp.floor import block_critical_path, critical_path_floor
from ios_ray.graph.ir import topo_order
from ios_ray.models import get_model
from ios_ray.models.sample import sample_network
from ios_ray.profile.cpu import CpuProfiler

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_latency  # noqa: E402


def _longest_path_brute_force(block, ms):
    """Every path from a node reading only outside the block to any node, by enumeration."""
    members = {n.name for n in block.nodes}
    succ = {n.name: [] for n in block.nodes}
    for n in block.nodes:
        for p in n.input_nodes():
            if p.name in members:
                succ[p.name].append(n.name)
    starts = [n.name for n in block.nodes if not any(p.name in members for p in n.input_nodes())]

    def walk(name):
        return ms[name] + max((walk(s) for s in succ[name]), default=0.0)
    return max(walk(s) for s in starts)


def test_sample_by_hand():
    g = sample_network(16, 6)
    ms = {"conv1": 1.0, "conv2": 5.0, "conv3": 2.0, "conv4": 3.0, "concat": 1.0}
    assert critical_path_floor(g, ms) == 6.0                 # conv2 then concat
    ms["conv4"] = 4.5
    assert critical_path_floor(g, ms) == 6.5                 # conv1, conv4, concat
    assert critical_path_floor(g, {**ms, "unused": 99.0}) == 6.5


@pytest.mark.parametrize("name", ["squeezenet", "inception_v3"])
def test_random_times_match_brute_force_and_bounds(name):
    g = get_model(name)
    rng = np.random.default_rng(7)
    ms = {n.name: float(rng.uniform(0.01, 1.0)) for n in g.nodes()[1:]}
    per_block = [block_critical_path(b, ms) for b in g.blocks]
    small = [b for b in g.blocks if len(b.nodes) <= 12]
    for b in small:
        assert block_critical_path(b, ms) == pytest.approx(_longest_path_brute_force(b, ms))
    floor = critical_path_floor(g, ms)
    assert floor == pytest.approx(sum(per_block))
    assert max(max(ms[n.name] for n in b.nodes) for b in g.blocks) <= floor <= sum(ms.values())
    chain = sum(ms[n.name] for b in g.blocks for n in itertools.islice(topo_order(b), 1))
    assert floor >= chain


def test_bad_times_are_clear_errors():
    g = sample_network(16, 6)
    with pytest.raises(ValueError, match="no time for operator 'conv4'"):
        critical_path_floor(g, {"conv1": 1, "conv2": 1, "conv3": 1, "concat": 1})
    with pytest.raises(ValueError, match="'conv2'.*not a non-negative"):
        critical_path_floor(g, {"conv1": 1, "conv2": float("nan"), "conv3": 1, "conv4": 1, "concat": 1})


def test_benchmark_floor_row_from_operators_timed_alone_on_the_cpu():
    g = sample_network(16, 6)
    profiler = CpuProfiler()
    calls = []

    def measure(specs):
        calls.append(len(specs))
        return profiler.measure(specs, 1, MeasureSettings(0, 1, 2))
    op_ms = gpu_latency.op_times(g, measure)
    assert set(op_ms) == {"conv1", "conv2", "conv3", "conv4", "concat"} and all(v > 0 for v in op_ms.values())
    assert calls == [3]       # conv1 = conv3 and conv2 = conv4 as stages (same shapes): each key measured once
    row = gpu_latency.floor_row({"model": "demo", "batch": 1, "math": "fp32"}, g, op_ms)
    assert row["schedule"] == "floor" and row["predicted_ms"] is None
    assert row["median_ms"] == pytest.approx(critical_path_floor(g, op_ms))
    assert row["median_ms"] <= row["operator_sum_ms"] == pytest.approx(sum(op_ms.values()))


def test_benchmark_table_has_floor_torch_compile_and_predictions():
    base = {"model": "squeezenet", "batch": 1, "math": "fp32", "runtime": "ios_ray"}
    rows = [gpu_latency.result_row(base, "Sequential", [1.0, 1.2, 1.1]),
            gpu_latency.result_row(base, "IOS-Both", [0.9, 0.8, 1.0], predicted_ms=0.7),
            gpu_latency.result_row(base, gpu_latency.CHECKED, [0.85, 0.8, 0.9], predicted_ms=0.75),
            {**base, "schedule": "floor", "median_ms": 0.6, "predicted_ms": None},
            gpu_latency.result_row({**base, "runtime": "pytorch"}, "torch.compile", [0.5, 0.55, 0.6])]
    assert rows[0]["predicted_ms"] is None and rows[1]["median_ms"] == 0.9 and rows[1]["samples"] == 3
    doc = {"device": {"name": "GPU", "library": "lib"}, "results": rows,
           "skipped": ["PyTorch eager squeezenet b1 fp32: RuntimeError: no"]}
    text = gpu_latency.format_table(doc)
    header, line, predicted = text.splitlines()[1:4]
    assert "floor" in header and "torch.compile" in header
    cells = line.split()
    assert cells[:3] == ["squeezenet", "1", "fp32"]
    # Sequential Greedy IOS-Merge IOS-Parallel IOS-Both IOS-Both-checked floor eager CUDA-graph torch.compile opt(s)
    assert cells[3:] == ["1.100", "-", "-", "-", "0.900", "0.850", "0.600", "-", "-", "0.550", "0.0"]
    assert predicted.split() == ["predicted", "0.700", "0.750"]
    assert "skipped: PyTorch eager" in text

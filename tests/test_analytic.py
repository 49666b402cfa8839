"""The analytic roofline cost model: labelled estimates, determinism, monotonicity, concurrency."""
from __future__ import annotations

import math

import pytest

from ios_ray.costs.analytic import GPUS, AnalyticCostModel, gpu_spec
from ios_ray.costs.factory import parse_cost
from ios_ray.costs.measurement import CostSource, ErrorKind, MeasureSettings
from ios_ray.graph import builder as b
from ios_ray.graph.ir import Block
from ios_ray.graph.schedule import Strategy
from ios_ray.models import get_model
from ios_ray.space.stage import OpSpec, StageSpec, stage_spec


def conv_stage(channels, out_channels, size, kernel=3, copies=1):
    """A stage of ``copies`` identical convs on one input, each in its own group."""
    v = b.placeholder((channels, size, size))
    block = Block(v.node)
    pad = kernel // 2
    convs = [b.conv2d(block, [[v]], out_channels, (kernel, kernel), padding=(pad, pad)) for _ in range(copies)]
    return stage_spec([[c.node] for c in convs])


def sample_network():
    """The IOS README's sample network's nodes: three convs on the input, a fourth after the first, a concat."""
    return list(get_model("sample").blocks[0].nodes)


def latency(model, spec, batch=1):
    (m,) = model.measure([spec], batch, MeasureSettings())
    assert m.error is ErrorKind.NONE, m.message
    return m.latency_ms


def test_is_a_cost_source_and_labels_estimates():
    model = AnalyticCostModel("H200")
    assert isinstance(model, CostSource)
    dev = model.device()
    assert dev.kind == "analytic" and dev.name == "analytic:H200"
    (m,) = model.measure([conv_stage(32, 32, 14)], 1, MeasureSettings())
    assert m.estimated and m.error is ErrorKind.NONE
    assert math.isfinite(m.latency_ms) and m.latency_ms > 0 and m.cost == m.latency_ms


def test_deterministic_across_instances_and_calls():
    specs = [conv_stage(c, 2 * c, s, copies=k) for c in (8, 64) for s in (7, 28) for k in (1, 3)]
    a = [m.latency_ms for m in AnalyticCostModel("H200").measure(specs, 4, MeasureSettings())]
    model = AnalyticCostModel("H200")
    b1 = [m.latency_ms for m in model.measure(specs, 4, MeasureSettings())]
    b2 = [m.latency_ms for m in model.measure(list(reversed(specs)), 4, MeasureSettings())]
    assert a == b1 == list(reversed(b2))


@pytest.mark.parametrize("gpu", sorted(GPUS))
def test_bigger_conv_is_not_faster(gpu):
    model = AnalyticCostModel(gpu)
    for grow in ("channels", "size", "kernel", "batch"):
        times = []
        for step in (1, 2, 4, 8, 16):
            if grow == "channels":
                times.append(latency(model, conv_stage(16 * step, 16 * step, 14)))
            elif grow == "size":
                times.append(latency(model, conv_stage(64, 64, 7 * step)))
            elif grow == "kernel":
                times.append(latency(model, conv_stage(64, 64, 28, kernel=2 * step - 1)))
            else:
                times.append(latency(model, conv_stage(64, 64, 28), batch=4 * step))
        assert times == sorted(times), (grow, times)
        assert times[-1] > times[0], (grow, times)


def test_concurrency_pays_for_small_convs_but_not_for_huge_ones():
    model = AnalyticCostModel("H200")
    small_single = latency(model, conv_stage(32, 32, 7))
    small_pair = latency(model, conv_stage(32, 32, 7, copies=2))
    assert small_pair < 0.7 * (2 * small_single)
    huge_single = latency(model, conv_stage(512, 512, 56))
    huge_pair = latency(model, conv_stage(512, 512, 56, copies=2))
    assert huge_pair == pytest.approx(2 * huge_single, rel=0.02)
    assert huge_pair <= 2 * huge_single  # never worse than running them one stage after another


def test_group_runs_its_ops_in_sequence():
    v = b.placeholder((64, 14, 14))
    block = Block(v.node)
    c1 = b.conv2d(block, [[v]], 64, (3, 3), padding=(1, 1))
    c2 = b.conv2d(block, [[c1]], 64, (3, 3), padding=(1, 1))
    model = AnalyticCostModel("V100")
    chain = latency(model, stage_spec([[c1.node, c2.node]]))
    first = latency(model, stage_spec([[c1.node]]))
    stage_cost = gpu_spec("V100").stage_us / 1e3
    # one stage of two chained ops = two stages of one op each, minus one stage overhead
    assert chain == pytest.approx(2 * first - stage_cost)


def test_unknown_gpu_lists_known_names():
    with pytest.raises(ValueError, match="known GPUs: .*H200.*V100"):
        AnalyticCostModel("GTX-480")
    with pytest.raises(ValueError, match="tf32"):
        AnalyticCostModel("V100", dtype="tf32")
    with pytest.raises(ValueError, match="dtype"):
        AnalyticCostModel("H200", dtype="float16")
    assert AnalyticCostModel("h200").device().name == "analytic:H200"


def test_h200_faster_than_v100_and_tf32_faster_than_fp32():
    big = conv_stage(256, 256, 56)
    assert latency(AnalyticCostModel("H200"), big) < latency(AnalyticCostModel("V100"), big)
    assert latency(AnalyticCostModel("H200", "tf32"), big) < latency(AnalyticCostModel("H200"), big)


def test_merge_spec_is_estimated_as_the_merged_conv():
    v = b.placeholder((64, 14, 14))
    block = Block(v.node)
    c1 = b.conv2d(block, [[v]], 32, (1, 1))
    c2 = b.conv2d(block, [[v]], 48, (3, 3), padding=(1, 1))
    merged = stage_spec([[c1.node], [c2.node]], Strategy.MERGE)
    single = conv_stage(64, 80, 14)
    model = AnalyticCostModel("H200")
    assert merged.key == single.key
    assert latency(model, merged) == latency(model, single)


def test_v100_sample_network_matches_ios_readme_within_20_percent():
    """IOS README (V100): sequential 0.486 ms; conv1||conv2, conv4||conv3, concat: 0.333 ms."""
    n1, n2, n3, n4, cat = sample_network()
    model = AnalyticCostModel("V100")
    seq = sum(latency(model, stage_spec([[n]])) for n in (n1, n2, n3, n4, cat))
    par = (latency(model, stage_spec([[n1], [n2]])) + latency(model, stage_spec([[n4], [n3]]))
           + latency(model, stage_spec([[cat]])))
    assert seq == pytest.approx(0.486, rel=0.2)
    assert par == pytest.approx(0.333, rel=0.2)


def test_factory_builds_the_analytic_model():
    model = parse_cost("analytic:v100").build()
    assert isinstance(model, AnalyticCostModel) and model.device().name == "analytic:V100"


def test_fast_enough_for_thousands_of_specs():
    import time
    specs = [conv_stage(8 + i % 50, 16 + i // 50, 14, copies=2) for i in range(500)]
    model = AnalyticCostModel("H200")
    start = time.perf_counter()
    out = model.measure(specs, 1, MeasureSettings())
    assert time.perf_counter() - start < 1.0  # >= 500 specs/s even on a slow shared CPU, cold cache
    assert all(m.estimated and m.error is ErrorKind.NONE for m in out)


def test_unbuildable_stage_is_an_error_measurement_not_a_raise():
    bogus = StageSpec(((8, 4, 4),), ((OpSpec("bogus", (), ((("e", 0, 0, 8),),), (8, 4, 4)),),))
    good = conv_stage(8, 8, 4)
    out = AnalyticCostModel("H200").measure([bogus, good], 1, MeasureSettings())
    assert out[0].key == bogus.key and out[0].error is ErrorKind.UNSUPPORTED and "bogus" in out[0].message
    assert out[0].cost == math.inf and out[0].estimated
    assert out[1].error is ErrorKind.NONE and out[1].key == good.key


def test_sepconv_runs_as_depthwise_plus_pointwise_kernels():
    v = b.placeholder((64, 28, 28))
    block = Block(v.node)
    with_relu = b.sep_conv(block, [[v]], 64, (3, 3), padding=(1, 1), pre_act="relu")
    without = b.sep_conv(block, [[v]], 64, (3, 3), padding=(1, 1), pre_act="identity")
    pointwise = b.conv2d(block, [[v]], 64, (1, 1), act="identity")
    model = AnalyticCostModel("V100")
    assert len(model.kernel_estimates(with_relu.node, 1)) == 3
    assert len(model.kernel_estimates(without.node, 1)) == 2
    t_relu, t_plain, t_pw = (latency(model, stage_spec([[n.node]])) for n in (with_relu, without, pointwise))
    assert t_relu > t_plain > t_pw  # the extra kernels cost at least a launch each


@pytest.mark.parametrize("name, paper_ms", [("inception_v3", 6.51), ("randwire", 8.49), ("nasnet", 22.95),
                                            ("squeezenet", 0.86)])
def test_v100_sequential_estimates_near_the_paper(name, paper_ms):
    """IOS paper, V100, sequential schedule, batch 1: the model lands within 40 % (calibration check)."""
    graph = get_model(name)
    specs = [stage_spec([[n]]) for block in graph.blocks for n in block.nodes]
    total = sum(m.latency_ms for m in AnalyticCostModel("V100").measure(specs, 1, MeasureSettings()))
    assert total == pytest.approx(paper_ms, rel=0.4)

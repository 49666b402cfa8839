"""End to end on the CPU: optimize() returns a valid schedule whose output equals the original's."""
import numpy as np
import pytest

import ios_ray as ios
from ios_ray import ios_runtime
from ios_ray.graph import check_schedule
from ios_ray.graph.schedule import Strategy
from ios_ray.models import get_model
from ios_ray.runtime import UnsupportedOpError


def _outputs_match(graph, opt, batch):
    x = np.random.default_rng(1).standard_normal((batch, *graph.input.output_shape)).astype(np.float32)
    graph.sequential_schedule()
    ref = ios_runtime.graph_inference(graph, batch_size=batch, input=x)
    out = ios_runtime.graph_inference(opt, batch_size=batch, input=x)
    assert out.shape == ref.shape
    err = np.max(np.abs(out - ref)) / max(1e-6, float(np.max(np.abs(ref))))
    assert err <= 1e-4, f"relative error {err}"


def test_sample_optimize_merges_and_matches():
    g = get_model("sample")
    g.init_weights(0)
    opt = ios.optimize(g, opt_type="dp_parallel_merge", cost="analytic:H200", compute_weight=True)
    check_schedule(opt)
    rep = opt.optimization_report
    assert rep.estimated and rep.unique_stages > 0 and rep.predicted_latency_ms > 0
    assert rep.transitions >= rep.states > 1
    _outputs_match(g, opt, 1)
    _outputs_match(g, opt, 2)
    # the original is untouched
    assert g.num_operators() == 5


def test_merge_only_uses_merged_conv():
    g = get_model("sample")
    g.init_weights(0)
    opt = ios.optimize(g, opt_type="dp_merge", cost="analytic:V100", compute_weight=True)
    merged = [s for b in opt.blocks for s in b.stages if s.strategy is Strategy.MERGE]
    assert merged, "the three input convs of the sample network should merge under the analytic model"
    node = opt.node_by_name()[merged[0].groups[0][0]]
    assert node.out_channels >= 750
    _outputs_match(g, opt, 1)


def test_parallel_only_has_no_merges():
    g = get_model("sample")
    opt = ios.optimize(g, opt_type="dp_parallel", cost="analytic:H200")
    assert all(s.strategy is Strategy.PARALLEL for b in opt.blocks for s in b.stages)
    assert any(len(s.groups) > 1 for b in opt.blocks for s in b.stages)


def test_cpu_profiler_optimize_with_table(tmp_path):
    g = get_model("sample")
    table = str(tmp_path / "costs")
    opt = ios.optimize(g, cost="cpu", warmup=0, number=1, repeat=1, cost_table=table)
    rep = opt.optimization_report
    assert not rep.estimated and rep.measured == rep.unique_stages and rep.cache_hits == 0
    again = ios.optimize(g, cost="cpu", warmup=0, number=1, repeat=1, cost_table=table)
    assert again.optimization_report.measured == 0
    assert again.optimization_report.cache_hits == rep.unique_stages
    assert str(again) == str(opt)


def test_compute_weight_without_weights_is_a_clear_error():
    g = get_model("sample")
    with pytest.raises(ValueError, match="init_weights"):
        ios.optimize(g, cost="analytic", compute_weight=True)


def test_bad_options_are_rejected():
    g = get_model("sample")
    with pytest.raises(ValueError):
        ios.optimize(g, opt_type="dp_magic", cost="analytic")
    with pytest.raises(ValueError):
        ios.optimize(g, cost="quantum")
    with pytest.raises(ValueError):
        ios.optimize(g, batch_size=0, cost="analytic")


@pytest.mark.slow
@pytest.mark.parametrize("name,batches", [("squeezenet", (1, 2)), ("inception_v3", (1,)), ("randwire", (1,)),
                                          pytest.param("nasnet", (1,), marks=pytest.mark.xfail(
                                              strict=True, raises=UnsupportedOpError,
                                              reason="Sequential is not yet registered with the reference runtime"))])
def test_zoo_optimized_output_equals_original(name, batches):
    g = get_model(name)
    g.init_weights(0)
    opt = ios.optimize(g, cost="analytic:H200", compute_weight=True, max_group_size=2, max_num_groups=4)
    check_schedule(opt)
    for b in batches:
        _outputs_match(g, opt, b)


def test_exit_conv_is_never_merged():
    """Regression: an exit conv merged with a sibling would hand the next block extra channels."""
    v = ios.placeholder((8, 6, 6))
    b1 = ios.Block(v.node)
    side = ios.conv2d(b1, [[v]], out_channels=8, kernel=1)
    ios.pool2d(b1, [[side]], pool_type="max", kernel=1)
    out = ios.conv2d(b1, [[v]], out_channels=8, kernel=1, is_exit=True)
    b2 = ios.Block(out.node)
    ios.conv2d(b2, [[out]], out_channels=4, kernel=1, is_exit=True)
    g = ios.Graph("exit_merge", v.node, [b1, b2])
    g.init_weights(0)
    opt = ios.optimize(g, opt_type="dp_merge", cost="analytic:V100", compute_weight=True)
    assert opt.blocks[0].exit_node.output_shape == (8, 6, 6)
    _outputs_match(g, opt, 1)


def test_construct_with_unknown_or_missing_block_schedules_is_a_clear_error():
    """Regression: a stage naming a node outside its block raised KeyError, and a short list of block
    schedules was silently truncated by zip."""
    from ios_ray.graph.schedule import Stage
    from ios_ray.optimizer import construct
    g = get_model("sample")
    g.sequential_schedule()
    with pytest.raises(ValueError, match="not in this block"):
        construct(g, [[Stage((("nope",),))] for _ in g.blocks])
    with pytest.raises(ValueError, match="block schedules"):
        construct(g, [list(b.stages) for b in g.blocks][:-1] if len(g.blocks) > 1 else [])


def test_local_optimize_remeasures_cached_worker_deaths(tmp_path):
    """Regression: the local path reused cached WORKER_DIED rows (the driver re-measures them), so one
    crashed worker made those stages infinitely slow in every later local run."""
    import math

    from ios_ray.costs.measurement import ErrorKind, MeasureSettings, Measurement
    from ios_ray.costs.table import CostTable
    from ios_ray.costs.analytic import AnalyticCostModel
    from ios_ray.space.enumerate import SpaceOptions, enumerate_graph
    g = get_model("sample")
    specs = enumerate_graph(g, SpaceOptions()).specs
    table = CostTable(str(tmp_path / "costs"))
    died = [Measurement(k, math.nan, error=ErrorKind.WORKER_DIED, message="worker died") for k in specs]
    table.append(died, dict(specs), AnalyticCostModel("H200").device(), 1, "float32", MeasureSettings())
    opt = ios.optimize(g, cost="analytic:H200", cost_table=table)
    rep = opt.optimization_report
    assert rep.cache_hits == 0 and rep.measured == rep.unique_stages and rep.errors == 0


def test_cost_source_object_with_workers_fails_before_ray_starts():
    """Regression: this was refused only after Ray had started and the space had been enumerated."""
    import ray

    from ios_ray.costs.analytic import AnalyticCostModel
    was_running = ray.is_initialized()
    with pytest.raises(ValueError, match="cost-source object"):
        ios.optimize(get_model("sample"), cost=AnalyticCostModel("H200"), num_workers=1)
    assert ray.is_initialized() == was_running


def test_cost_names_are_matched_exactly():
    from ios_ray.costs.factory import CostConfig
    assert CostConfig.parse("analytic:v100").gpu_model == "V100"
    with pytest.raises(ValueError, match="unknown cost source"):
        CostConfig.parse("analytics")

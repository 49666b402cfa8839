"""optimize's final check: the DP's, Sequential and Greedy schedules timed as whole graphs, the fastest returned."""
import math
from dataclasses import replace

import numpy as np
import pytest

import ios_ray as ios
from ios_ray import ios_runtime
from ios_ray.costs.measurement import DeviceInfo
from ios_ray.graph import Block, Graph, conv2d, identity, placeholder
from ios_ray.graph.schedule import Strategy
from ios_ray.models.sample import sample_network
from ios_ray.optimizer import CheckedSchedule, OptimizeReport
from ios_ray.profile.cpu import CpuProfiler

QUICK = dict(warmup=0, number=1, repeat=3, cost_table=False)


def wide_and_narrow() -> Graph:
    """A wide 1x1 conv and a narrow 7x7 conv on one input: merged, the 1x1 becomes a 7x7 (49x its work)."""
    x = placeholder((64, 28, 28), name="input")
    block = Block(x.node)
    a = conv2d(block, [[x]], 128, kernel=1, name="wide1x1")
    b = conv2d(block, [[x]], 4, kernel=7, padding=3, name="narrow7x7")
    identity(block, [[a], [b]], is_exit=True, name="concat")
    return Graph("wide_and_narrow", x.node, [block])


class LyingSource:
    """The real CPU profiler, except that it claims merged stages cost nothing (they do not)."""

    dtype = "float32"

    def __init__(self):
        self.real = CpuProfiler()

    def device(self):
        return DeviceInfo("test:lying-cpu", "cpu", library="lies 1")

    def measure(self, specs, batch_size, settings):
        got = self.real.measure(specs, batch_size, settings)
        return [replace(m, latency_ms=1e-6) if s.strategy is Strategy.MERGE else m for s, m in zip(specs, got)]

    def measure_graph(self, graph, batch_size, settings):
        return self.real.measure_graph(graph, batch_size, settings)


def test_report_lists_each_candidate_measured_on_the_cpu():
    # exhaustive: the next-best schedule is built from measured stages only, and lazily on the CPU those can
    # be the optimum's own (one-op) stages, so whether it exists would depend on the timings' noise
    opt = ios.optimize(sample_network(32, 8), cost="cpu", profiling="exhaustive", **QUICK)
    rep = opt.optimization_report
    assert [c.schedule for c in rep.final_check] == ["IOS", "IOS next-best", "Sequential", "Greedy"]
    for c in rep.final_check:
        assert not c.error and c.measured_ms > 0 and c.predicted_ms is not None and c.predicted_ms > 0
    dp, second = rep.final_check[:2]
    assert dp.predicted_ms == pytest.approx(rep.predicted_latency_ms)
    assert second.predicted_ms >= dp.predicted_ms * (1 - 1e-12)    # the DP's optimum, then its runner-up
    fastest = min(c.measured_ms for c in rep.final_check)
    assert next(c for c in rep.final_check if c.schedule == rep.returned).measured_ms == fastest
    assert sum(rep.stage_predicted_ms) == pytest.approx(
        next(c for c in rep.final_check if c.schedule == rep.returned).predicted_ms)
    assert len(rep.stage_predicted_ms) == sum(len(b.stages) for b in opt.blocks)
    text = rep.format()
    assert "final check" in text and "Sequential" in text and "Greedy" in text and "<- returned" in text
    assert "final check" in rep.seconds


def test_a_dp_schedule_measured_slower_is_replaced_by_the_fastest():
    """Regression (Greedy beat IOS-Both on SqueezeNet): a source that claims merges are free makes the DP
    merge a 1x1 conv into a 7x7; the final check measures that and returns a faster schedule."""
    g = wide_and_narrow()
    g.init_weights(0)
    opt = ios.optimize(g, opt_type="dp_merge", cost=LyingSource(), compute_weight=True, **QUICK)
    rep = opt.optimization_report
    by = {c.schedule: c for c in rep.final_check}
    assert by["IOS"].predicted_ms < by["Sequential"].predicted_ms   # the lie: the merged stage looks free
    assert by["IOS"].measured_ms > by["Sequential"].measured_ms       # the truth
    assert rep.returned != "IOS" and by[rep.returned].measured_ms < by["IOS"].measured_ms
    assert by[rep.returned].measured_ms == min(c.measured_ms for c in rep.final_check)
    assert all(s.strategy is Strategy.PARALLEL for b in opt.blocks for s in b.stages)
    assert opt.num_operators() == g.num_operators()                  # no merged conv in what is returned
    assert "<- returned" in rep.format() and opt.optimization_report is rep
    x = np.random.default_rng(0).standard_normal((1, 64, 28, 28)).astype(np.float32)
    g.sequential_schedule()
    np.testing.assert_allclose(ios_runtime.graph_inference(opt, 1, x), ios_runtime.graph_inference(g, 1, x),
                               rtol=1e-4, atol=1e-4)
    # without the check, the DP's (merged) schedule comes back
    unchecked = ios.optimize(g, opt_type="dp_merge", cost=LyingSource(), final_check=False, **QUICK)
    assert any(s.strategy is Strategy.MERGE for b in unchecked.blocks for s in b.stages)
    assert unchecked.optimization_report.final_check == []
    assert "off" in unchecked.optimization_report.format()


def test_skipped_for_analytic_costs_and_sources_that_cannot_time_a_graph():
    rep = ios.optimize(sample_network(32, 8), cost="analytic").optimization_report
    assert rep.final_check == [] and rep.returned == "IOS"
    assert "final check     : skipped: analytic costs" in rep.format()

    class StageOnly:
        dtype = "float32"

        def device(self):
            return DeviceInfo("test:stage-only", "cpu", library="x 1")

        def measure(self, specs, batch_size, settings):
            return CpuProfiler().measure(specs, batch_size, settings)

    rep = ios.optimize(sample_network(32, 8), cost=StageOnly(), **QUICK).optimization_report
    assert rep.final_check == [] and "cannot time a whole graph" in rep.format()


def test_report_json_round_trip():
    rep = ios.optimize(sample_network(32, 8), cost="cpu", **QUICK).optimization_report
    back = OptimizeReport.from_json(rep.to_json())
    assert back == rep and isinstance(back.final_check[0], CheckedSchedule)
    assert back.cpu_threads == 1 and "blas threads 1" in back.software
    with pytest.raises(ValueError, match="not an optimization report"):
        OptimizeReport.from_json({"model": "x"})


def test_a_candidate_that_fails_to_run_is_reported_not_returned():
    class FailsOnMerges(LyingSource):
        def measure_graph(self, graph, batch_size, settings):
            if any(s.strategy is Strategy.MERGE for b in graph.blocks for s in b.stages):
                raise RuntimeError("merged conv refused")
            return super().measure_graph(graph, batch_size, settings)

    rep = ios.optimize(wide_and_narrow(), opt_type="dp_merge", cost=FailsOnMerges(), **QUICK).optimization_report
    by = {c.schedule: c for c in rep.final_check}
    assert "merged conv refused" in by["IOS"].error and math.isnan(by["IOS"].measured_ms)
    assert rep.returned != "IOS" and "error: RuntimeError" in rep.format()

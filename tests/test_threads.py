"""One CPU thread setting: profiling, the cost-table row and the reference runtime all use the same one."""
import pytest

import ios_ray as ios
from ios_ray import ios_runtime
from ios_ray.cli import main
from ios_ray.costs.factory import CpuRecipe, parse_cost
from ios_ray.costs.measurement import MeasureSettings
from ios_ray.models.sample import sample_network
from ios_ray.profile import cpu as cpu_profile
from ios_ray.profile.cpu import CpuProfiler, blas_threads, cpu_threads
from ios_ray.runtime.reference import ReferenceExecutor
from ios_ray.space.stage import stage_spec

QUICK = dict(warmup=0, number=1, repeat=1)


@pytest.fixture
def latency_threads(monkeypatch):
    """The BLAS threads in effect whenever the reference executor times a graph (a spy around the real call)."""
    seen = []
    real = ReferenceExecutor.latency

    def spy(self, *args, **kwargs):
        seen.append(blas_threads())
        return real(self, *args, **kwargs)
    monkeypatch.setattr(ReferenceExecutor, "latency", spy)
    return seen


def test_cpu_threads_limits_blas_and_restores_it():
    before = blas_threads()
    with cpu_threads(1) as n:
        assert n == 1 and blas_threads() == 1
        with cpu_threads(2):
            assert blas_threads() == 2
        assert blas_threads() == 1
    assert blas_threads() == before
    with pytest.raises(ValueError, match="at least 1"):
        with cpu_threads(0):
            pass


def test_recipe_and_registry_carry_the_thread_count():
    assert parse_cost("cpu") == CpuRecipe() and CpuRecipe().threads == 1 and CpuRecipe().cpu_threads == 1
    assert parse_cost("cpu:2") == CpuRecipe(threads=2) and str(parse_cost("cpu:2")) == "cpu:2"
    with pytest.raises(ValueError, match="'cpu:0'.*at least 1"):
        parse_cost("cpu:0")
    assert parse_cost("gpu").cpu_threads is None and parse_cost("analytic").cpu_threads is None
    assert CpuProfiler(threads=2).device().software.endswith("blas threads 2")
    assert CpuProfiler().device().software != CpuProfiler(threads=2).device().software


def test_stages_are_timed_under_the_profilers_setting(monkeypatch):
    seen = []
    real = cpu_profile.time_built_stage

    def spy(*args, **kwargs):
        seen.append(blas_threads())
        return real(*args, **kwargs)
    monkeypatch.setattr(cpu_profile, "time_built_stage", spy)
    g = sample_network(16, 6)
    spec = stage_spec([[g.blocks[0].nodes[0]]])
    for threads in (2, 1):
        CpuProfiler(threads=threads).measure([spec], 1, MeasureSettings(0, 1, 1))
        assert seen[-1] == threads


def test_rows_measured_with_other_threads_are_not_reused(tmp_path):
    table = str(tmp_path / "costs")
    g = sample_network(16, 6)
    every = dict(QUICK, final_check=False, profiling="exhaustive")   # every stage: the counts are exact
    two = ios.optimize(g, cost="cpu:2", cost_table=table, **every).optimization_report
    assert two.measured == two.unique_stages and two.cpu_threads == 2
    one = ios.optimize(g, cost=CpuRecipe(threads=1), cost_table=table, **every).optimization_report
    assert one.cache_hits == 0 and one.stale == one.unique_stages and one.measured == one.unique_stages
    again = ios.optimize(g, cost="cpu:2", cost_table=table, **every).optimization_report
    assert again.cache_hits == again.unique_stages and again.measured == 0


def test_reference_runtime_runs_with_the_threads_the_graph_was_measured_with(latency_threads):
    g = sample_network(16, 6)
    g.init_weights(0)
    opt = ios.optimize(g, cost="cpu:2", cost_table=False, compute_weight=True, **QUICK)
    assert latency_threads[-1] == 2           # the final check ran under the profiling setting
    ios_runtime.graph_latency(opt, 1, warmup=0, number=1, repeat=1, device="cpu")
    assert latency_threads[-1] == 2           # and so does graph_latency of the optimized graph
    ios_runtime.graph_latency(opt, 1, warmup=0, number=1, repeat=1, device="cpu", threads=1)
    assert latency_threads[-1] == 1           # unless told otherwise
    g.sequential_schedule()
    ios_runtime.graph_latency(g, 1, warmup=0, number=1, repeat=1, device="cpu")
    assert latency_threads[-1] == 1           # a graph without a report: the CPU source's default
    assert "2 BLAS threads" in ios_runtime.device_name(opt, device="cpu")


def test_cli_run_uses_the_thread_count_of_profiling(tmp_path, capsys, latency_threads):
    """``ios-ray run`` of a CPU-optimized schedule runs with the threads its stages were measured with."""
    out = tmp_path / "sample.json"
    assert main(["optimize", "sample", "--workers", "0", "--cost", "cpu:2", "--warmup", "0", "--number", "1",
                 "--repeat", "1", "--table", "none", "--out", str(out), "--no-progress",
                 "--no-final-check"]) == 0
    assert (tmp_path / "sample.report.json").exists()
    capsys.readouterr()
    assert main(["run", str(out), "--repeat", "1", "--number", "1", "--warmup", "0"]) == 0
    assert latency_threads == [2]
    assert "2 BLAS threads" in capsys.readouterr().out
    assert main(["run", str(out), "--repeat", "1", "--number", "1", "--warmup", "0", "--threads", "1"]) == 0
    assert latency_threads == [2, 1]

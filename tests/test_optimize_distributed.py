"""optimize(num_workers=N) end to end on a local Ray instance, and concurrent writers of one table."""
import multiprocessing as mp
import sys

import pytest
import ray
import ray.cloudpickle

import ios_ray as ios
from ios_ray.costs.analytic import AnalyticCostModel
from ios_ray.costs.measurement import DeviceInfo, Measurement
from ios_ray.costs.table import CostTable
from ios_ray.distributed import InsufficientResourcesError
from ios_ray.distributed.cluster import connect
from ios_ray.models import get_model

pytestmark = pytest.mark.ray

# Workers cannot import this file (tests/ is not on their path): ship its classes by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def ray_4cpu():
    if ray.is_initialized():
        ray.shutdown()
    connect(num_cpus=4, num_gpus=0)
    yield
    ray.shutdown()


def test_same_schedule_for_1_2_4_workers_and_in_process(ray_4cpu):
    g = get_model("inception_v3")
    local = ios.optimize(g, cost="analytic:H200", cost_table=False, profiling="exhaustive")
    for n in (1, 2, 4):
        opt = ios.optimize(g, cost="analytic:H200", cost_table=False, num_workers=n, profiling="exhaustive")
        assert str(opt) == str(local), f"{n} workers gave another schedule"
        rep = opt.optimization_report
        assert rep.num_workers == n and rep.measured == rep.unique_stages
        assert "ray start" in rep.seconds and f"workers={n} Ray workers" in rep.format()  # not in "enumerate"
        assert sum(rep.per_worker.values()) == rep.unique_stages  # each unique stage measured once
        assert rep.predicted_latency_ms == pytest.approx(local.optimization_report.predicted_latency_ms)


def test_warm_table_measures_nothing_on_actors(ray_4cpu, tmp_path):
    g = get_model("squeezenet")
    table = str(tmp_path / "costs")
    first = ios.optimize(g, cost="analytic:V100", cost_table=table, num_workers=2, profiling="exhaustive")
    second = ios.optimize(g, cost="analytic:V100", cost_table=table, num_workers=2, profiling="exhaustive")
    assert first.optimization_report.measured == first.optimization_report.unique_stages
    assert second.optimization_report.measured == 0
    assert second.optimization_report.cache_hits == first.optimization_report.unique_stages
    assert str(first) == str(second)


def test_too_many_gpu_workers_fails_at_once(ray_4cpu):
    with pytest.raises(InsufficientResourcesError, match="GPU"):
        ios.optimize(get_model("sample"), cost="gpu", num_workers=2)


def test_tf32_cost_source_object_writes_tf32_rows_through_workers(ray_4cpu, tmp_path):
    """Regression: through the Ray driver a cost-source object's rows were filed as float32 whatever its
    math mode (the driver guessed instead of asking); in-process they were tf32."""
    g = get_model("sample")
    ray_table, local_table = str(tmp_path / "ray"), str(tmp_path / "local")
    opt = ios.optimize(g, cost=AnalyticCostModel("H200", dtype="tf32"), cost_table=ray_table, num_workers=2)
    local = ios.optimize(g, cost=AnalyticCostModel("H200", dtype="tf32"), cost_table=local_table)
    ray_rows, local_rows = CostTable(ray_table).read_all(), CostTable(local_table).read_all()
    assert set(ray_rows["dtype"].to_pylist()) == set(local_rows["dtype"].to_pylist()) == {"tf32"}
    assert sorted(ray_rows["key"].to_pylist()) == sorted(local_rows["key"].to_pylist())
    assert opt.optimization_report.dtype == "tf32" and str(opt) == str(local)


class LinearSource:
    """A user's picklable CostSource: latency from the spec's flops, library version from the caller."""

    dtype = "float32"

    def __init__(self, version: str = "1"):
        self.version = version

    def device(self):
        return DeviceInfo("test:linear", "cpu", library=f"linear {self.version}")

    def measure(self, specs, batch_size, settings):
        return [Measurement(s.key, s.flops() * batch_size / 1e9 + 0.001, samples=1) for s in specs]


def test_user_cost_source_object_works_with_workers(ray_4cpu, tmp_path):
    """Regression: cost-source objects were refused with num_workers; and rows of another library
    version were reused silently."""
    g = get_model("squeezenet")
    table = str(tmp_path / "costs")
    local = ios.optimize(g, cost=LinearSource("1"), cost_table=table, profiling="exhaustive")
    opt = ios.optimize(g, cost=LinearSource("2"), cost_table=table, num_workers=2, profiling="exhaustive")
    rep = opt.optimization_report
    assert str(opt) == str(local) and rep.num_workers == 2
    assert rep.cache_hits == 0 and rep.stale == rep.measured == rep.unique_stages  # version 1 rows: stale
    assert sum(rep.per_worker.values()) == rep.unique_stages and len(rep.per_worker) == 2
    assert CostTable(table).read_raw().num_rows == 2 * rep.unique_stages
    again = ios.optimize(g, cost=LinearSource("2"), cost_table=table, num_workers=2,
                         profiling="exhaustive").optimization_report
    assert again.cache_hits == again.unique_stages and again.stale == again.measured == 0


def test_final_check_runs_on_one_worker_with_the_profiling_threads(ray_4cpu):
    from ios_ray.models.sample import sample_network
    # exhaustive, so that the next-best schedule (from measured stages only) exists whatever the timings
    opt = ios.optimize(sample_network(32, 8), cost="cpu:2", cost_table=False, num_workers=2, warmup=0, number=1,
                       repeat=2, profiling="exhaustive")
    rep = opt.optimization_report
    names = ["IOS", "IOS next-best", "Sequential", "Greedy"]
    assert [c.schedule for c in rep.final_check] == names
    assert all(not c.error and c.measured_ms > 0 for c in rep.final_check)
    assert rep.cpu_threads == 2 and rep.software.endswith("blas threads 2") and rep.returned in names
    # a worker whose source cannot time a whole graph answers so: the check is skipped, the DP's schedule kept
    rep = ios.optimize(get_model("sample"), cost=LinearSource("3"), cost_table=False, num_workers=1).optimization_report
    assert rep.final_check == [] and "cannot time a whole graph" in rep.final_check_note


def _optimize_into(model, table, out):
    g = get_model(model)
    opt = ios.optimize(g, cost="analytic:H200", cost_table=table, profiling="exhaustive")
    out.put(opt.optimization_report.unique_stages)


def test_two_concurrent_optimizations_into_one_table_lose_no_rows(tmp_path):
    table = str(tmp_path / "shared")
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_optimize_into, args=(m, table, q)) for m in ("inception_v3", "squeezenet")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    expected = q.get() + q.get()
    rows = CostTable(table).read_all()
    assert rows.num_rows == expected


def test_lazy_rounds_spread_over_workers_and_give_the_same_stages(ray_4cpu, tmp_path):
    """Lazy profiling measures the same stages in the same rounds whatever the number of workers (a
    deterministic source: the analytic model as a picklable object), and each round is spread over them."""
    g = get_model("inception_v3")
    runs = {}
    for n in (None, 1, 2):
        table = str(tmp_path / f"t{n}")
        opt = ios.optimize(g, cost=AnalyticCostModel("H200"), cost_table=table, num_workers=n)
        rep = opt.optimization_report
        assert rep.profiling == "lazy" and rep.num_workers == (n or 1)
        assert sum(rep.per_worker.values()) == rep.measured < rep.unique_stages
        if n == 2:
            assert len(rep.per_worker) == 2, f"one worker did everything: {rep.per_worker}"
        runs[n] = (str(opt), rep.measured, rep.rounds, sorted(CostTable(table).read_all()["key"].to_pylist()))
    assert runs[None] == runs[1] == runs[2]


@pytest.mark.parametrize("profiling", ["lazy", "exhaustive"])
def test_workers_build_the_chosen_recipe(ray_4cpu, profiling):
    """Regression: with num_workers the Ray workers were given the in-process source (None there, i.e. the
    CPU profiler) instead of the chosen recipe; both profiling paths must hand them ``options.source``."""
    g = get_model("squeezenet")
    local = ios.optimize(g, cost="analytic:H200", cost_table=False, profiling=profiling).optimization_report
    rep = ios.optimize(g, cost="analytic:H200", cost_table=False, num_workers=1,
                       profiling=profiling).optimization_report
    assert rep.estimated and rep.measured == local.measured > 0
    assert rep.predicted_latency_ms == pytest.approx(local.predicted_latency_ms)

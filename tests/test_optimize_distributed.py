"""optimize(num_workers=N) end to end on a local Ray instance, and concurrent writers of one table."""
import multiprocessing as mp

import pytest
import ray

import ios_ray as ios
from ios_ray.costs.table import CostTable
from ios_ray.distributed import InsufficientResourcesError
from ios_ray.models import get_model

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_4cpu():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=4, num_gpus=0, include_dashboard=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


def test_same_schedule_for_1_2_4_workers_and_in_process(ray_4cpu):
    g = get_model("inception_v3")
    local = ios.optimize(g, cost="analytic:H200", cost_table=False)
    for n in (1, 2, 4):
        opt = ios.optimize(g, cost="analytic:H200", cost_table=False, num_workers=n)
        assert str(opt) == str(local), f"{n} workers gave another schedule"
        rep = opt.optimization_report
        assert rep.num_workers == n and rep.measured == rep.unique_stages
        assert sum(rep.per_worker.values()) == rep.unique_stages  # each unique stage measured once
        assert rep.predicted_latency_ms == pytest.approx(local.optimization_report.predicted_latency_ms)


def test_warm_table_measures_nothing_on_actors(ray_4cpu, tmp_path):
    g = get_model("squeezenet")
    table = str(tmp_path / "costs")
    first = ios.optimize(g, cost="analytic:V100", cost_table=table, num_workers=2)
    second = ios.optimize(g, cost="analytic:V100", cost_table=table, num_workers=2)
    assert first.optimization_report.measured == first.optimization_report.unique_stages
    assert second.optimization_report.measured == 0
    assert second.optimization_report.cache_hits == first.optimization_report.unique_stages
    assert str(first) == str(second)


def test_too_many_gpu_workers_fails_at_once(ray_4cpu):
    with pytest.raises(InsufficientResourcesError, match="GPU"):
        ios.optimize(get_model("sample"), cost="gpu", num_workers=2)


def _optimize_into(model, table, out):
    g = get_model(model)
    opt = ios.optimize(g, cost="analytic:H200", cost_table=table)
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

"""The Ray layer on a shared local Ray (4 logical CPUs): profiler pool, driver, enumeration, progress bar.

The cost source ``FlopsSource`` below is deterministic (latency from the spec's flops), logs every
stage it measures to a file per process (so "measured exactly once" is counted, not inferred), and can
be told to crash (``os._exit``) or hang on chosen keys to exercise the pool's failure handling. It is a
plain picklable CostSource object: the pool ships it to each actor as it is.
"""
import glob
import io
import logging
import math
import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import ray
import ray.cloudpickle

from ios_ray.costs.analytic import AnalyticCostModel
from ios_ray.costs.factory import CpuRecipe, GpuRecipe, WorkerResources, parse_cost
from ios_ray.costs.measurement import DeviceInfo, ErrorKind, Measurement, MeasureSettings
from ios_ray.costs.table import CostTable
from ios_ray.distributed import (InsufficientResourcesError, PoolOptions, ProfileOptions, ProfilerPool, ProgressBar,
                                 check_resources, enumerate_graph_distributed, estimate_cost, make_batches,
                                 profile_graph_space)
from ios_ray.distributed.actors import ActorSlots
from ios_ray.distributed.cluster import connect
from ios_ray.distributed.enumerate import ShardOptions, plan_shards
from ios_ray.distributed.progress import Pace
from ios_ray.distributed.profiler_pool import WorkersExhaustedError, WorkerStartError
from ios_ray.models import get_model
from ios_ray.space.enumerate import enumerate_graph
from ios_ray.space.options import SpaceOptions

pytestmark = pytest.mark.ray

# Workers cannot import this file (tests/ is not on their path): ship its classes by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

SETTINGS = MeasureSettings(warmup=0, number=1, repeat=3)


class FlopsSource:
    """Deterministic CostSource: latency = flops / 1e9 ms at batch 1, scaled by batch size."""

    dtype = "float32"

    def __init__(self, log_dir=None, delay_s=0.0, crash_keys=(), hang_keys=(), raise_keys=()):
        self.log_dir = log_dir
        self.delay_s = delay_s
        self.crash_keys = frozenset(crash_keys)
        self.hang_keys = frozenset(hang_keys)
        self.raise_keys = frozenset(raise_keys)

    def device(self):
        return DeviceInfo(name="test:flops", kind="cpu", library="test")

    def measure(self, specs, batch_size, settings):
        out = []
        for spec in specs:
            key = spec.key
            if key in self.crash_keys:
                os._exit(1)
            if key in self.hang_keys:
                time.sleep(3600)
            if key in self.raise_keys:
                raise ZeroDivisionError("a cost-source bug")
            if self.log_dir is not None:
                with open(os.path.join(self.log_dir, f"{os.getpid()}.log"), "a") as f:
                    f.write(key + "\n")
            if self.delay_s:
                time.sleep(self.delay_s)
            out.append(Measurement(key, spec.flops() * batch_size / 1e9 + 0.001, 0.0, settings.repeat))
        return out


def source(**kw):
    return FlopsSource(**kw)


def measured_keys(log_dir) -> Counter:
    counts = Counter()
    for p in Path(log_dir).glob("*.log"):
        counts.update(p.read_text().split())
    return counts


def strip(results):
    """Measurements without the worker label: what must not depend on who measured."""
    return {k: (m.latency_ms, m.error, m.samples) for k, m in results.items()}


@pytest.fixture(scope="module")
def ray_local():
    """A 4-CPU cluster without GPUs, whatever the host has (the resource tests rely on it)."""
    started = not ray.is_initialized()
    if started:
        connect(num_cpus=4, num_gpus=0)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def specs():
    return dict(enumerate_graph(get_model("squeezenet"), SpaceOptions()).specs)


# ----- pure helpers (no Ray) -----------------------------------------------------------------------

def test_make_batches_heaviest_first_each_key_once():
    costs = {f"k{i}": float(c) for i, c in enumerate([100, 1, 1, 50, 1, 1, 1, 1, 1, 1, 30, 2])}
    batches = make_batches(costs, num_workers=2, max_batch=4, batches_per_worker=2)
    flat = [k for b in batches for k in b]
    assert sorted(flat) == sorted(costs) and len(flat) == len(costs)
    assert batches[0] == ["k0"]  # the heaviest spec travels alone and goes first
    assert all(len(b) <= 4 for b in batches)
    firsts = [costs[b[0]] for b in batches]
    assert firsts == sorted(firsts, reverse=True)


def test_estimate_cost_orders_like_flops(specs):
    ranked = sorted(specs.values(), key=estimate_cost)
    assert ranked[-1].flops() > ranked[0].flops()


class _FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_logs_lines_off_tty_and_redraws_on_tty():
    clock = _FakeClock()
    out = io.StringIO()
    bar = ProgressBar(total=100, cache_hits=7, stream=out, pace=Pace(log_interval_s=1000, clock=clock))
    for _ in range(100):
        clock.t += 0.5
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert 11 <= len(lines) <= 13          # the start, one per 10 %, the close
    assert "100/100 (100%)" in lines[-1] and "cache hits 7" in lines[-1] and "2.0/s" in lines[-1]
    assert "\r" not in out.getvalue()
    assert "ETA 0:25" in [l for l in lines if "50/100" in l][0]

    tty = _Tty()
    bar = ProgressBar(total=10, stream=tty, pace=Pace(clock=clock))
    for _ in range(10):
        clock.t += 1
        bar.update(1, errors=1)
    bar.close()
    text = tty.getvalue()
    assert text.count("\r") >= 10 and text.endswith("\n") and "errors 10" in text

    silent = io.StringIO()
    bar = ProgressBar(total=10, stream=silent, enabled=False)
    bar.update(5)
    bar.close()
    assert silent.getvalue() == ""


# ----- resources ------------------------------------------------------------------------------------

def test_gpu_profiling_on_gpu_less_cluster_fails_at_once(ray_local):
    t0 = time.perf_counter()
    with pytest.raises(InsufficientResourcesError, match="no GPUs"):
        check_resources(1, GpuRecipe().resources())
    with pytest.raises(InsufficientResourcesError, match="no GPUs"):
        ProfilerPool(2, GpuRecipe())
    assert time.perf_counter() - t0 < 2.0


def test_more_cpu_workers_than_cpus_fails_with_what_is_available(ray_local):
    cpus = int(ray.cluster_resources()["CPU"])
    with pytest.raises(InsufficientResourcesError, match=rf"cluster has {cpus} CPUs; ask for at most {cpus} "):
        check_resources(cpus + 1, CpuRecipe().resources())
    assert check_resources(2 * cpus, CpuRecipe().resources(0.5)).num_cpus == 0.5
    with pytest.raises(ValueError, match="WorkerResources"):
        check_resources(1, CpuRecipe())


def test_waiting_for_autoscaler_times_out_with_the_shortfall(ray_local):
    with pytest.raises(InsufficientResourcesError, match="waited 0.5 s"):
        check_resources(1, WorkerResources(num_gpus=1.0), wait_for_autoscaler=True, timeout_s=0.5, poll_s=0.1)


# ----- the pool -------------------------------------------------------------------------------------

def test_same_results_for_1_2_4_workers_each_stage_measured_once(ray_local, specs, tmp_path):
    runs = {}
    for n in (1, 2, 4):
        log = tmp_path / f"n{n}"
        log.mkdir()
        with ProfilerPool(n, source(log_dir=str(log), delay_s=0.002)) as pool:
            results, report = pool.measure(specs, 1, SETTINGS)
        counts = measured_keys(log)
        assert set(counts) == set(specs) and set(counts.values()) == {1}, "a stage was measured twice"
        assert sum(report.per_worker.values()) == len(specs) == report.num_specs
        assert len(report.per_worker) == n, f"some of the {n} workers got no work: {report.per_worker}"
        assert report.retries == report.worker_deaths == report.errors == 0
        runs[n] = strip(results)
    assert runs[1] == runs[2] == runs[4]
    assert all(math.isfinite(v[0]) for v in runs[1].values())


def test_a_small_round_goes_out_as_one_even_batch_per_worker(ray_local, specs):
    """A lazy round of 11 stages on 3 idle workers: 4 + 4 + 3, nothing queued behind a busy worker."""
    round_ = dict(list(specs.items())[:11])
    with ProfilerPool(3, source(delay_s=0.002)) as pool:
        pool.devices()    # every worker up: a round finds them idle
        for _ in range(3):
            _, report = pool.measure(round_, 1, SETTINGS)
            assert report.batches == 3 and sorted(report.per_worker.values()) == [3, 4, 4], report.per_worker


def test_a_stream_measures_keys_added_while_it_runs_as_one_call_would(ray_local, specs):
    """Keys added in pieces while the actors work: until ``finish`` a batch goes to an idle actor only
    (a key that arrives while both are busy waits in the driver, not behind a busy actor); in the end each
    key is measured once, with the results one ``measure`` call gives."""
    keys = list(specs)
    with ProfilerPool(1, source()) as pool:
        reference, _ = pool.measure(specs, 1, SETTINGS)
    with ProfilerPool(2, source(delay_s=0.05)) as pool:
        pool.devices()    # both workers up and idle
        stream = pool.stream(specs, 1, SETTINGS)
        stream.add(keys[:3])
        assert sorted(len(q) for q in stream.inflight.values()) == [1, 1]   # 2 + 1 keys, one batch each
        stream.add(keys[3:4])
        assert stream._left() == 1 and all(len(q) == 1 for q in stream.inflight.values())
        stream.add(keys[4:])
        results, report = stream.finish()
    assert strip(results) == strip(reference)
    assert report.num_specs == len(keys) == sum(report.per_worker.values())


def test_analytic_model_in_actors_matches_local(ray_local, specs):
    local = AnalyticCostModel("H200").measure(list(specs.values()), 1)
    with ProfilerPool(2, parse_cost("analytic:H200")) as pool:
        assert pool.device().name == "analytic:H200"
        results, _ = pool.measure(specs, 1, SETTINGS)
    assert {m.key: m.latency_ms for m in local} == {k: m.latency_ms for k, m in results.items()}
    assert all(m.estimated for m in results.values())


def test_killed_actor_mid_run_changes_nothing(ray_local, specs):
    with ProfilerPool(1, source()) as pool:
        reference, _ = pool.measure(specs, 1, SETTINGS)
    with ProfilerPool(2, source(delay_s=0.01), PoolOptions(inflight_per_worker=2)) as pool:
        killed = []

        def kill_first_busy(batch):
            if not killed:
                victim = pool.actor_handles()[0]
                ray.kill(victim, no_restart=True)   # it holds queued batches: they must come back
                killed.append(victim)

        results, report = pool.measure(specs, 1, SETTINGS, on_result=kill_first_busy)
    assert killed and report.worker_deaths >= 1 and report.restarts >= 1
    assert report.errors == 0
    assert strip(results) == strip(reference)


def test_kill_from_another_thread_while_busy(ray_local, specs, tmp_path):
    with ProfilerPool(2, source(delay_s=0.01)) as pool:
        first = pool.actor_handles()[0]
        timer = threading.Timer(0.5, lambda: ray.kill(first, no_restart=True))
        timer.start()
        try:
            results, report = pool.measure(specs, 1, SETTINGS)
        finally:
            timer.cancel()
    assert report.worker_deaths == 1 and report.errors == 0 and set(results) == set(specs)


def test_spec_that_always_kills_its_worker_ends_as_worker_died(ray_local, specs):
    bad = sorted(specs)[3]
    with ProfilerPool(2, source(crash_keys=[bad]), PoolOptions(max_retries=2)) as pool:
        results, report = pool.measure(specs, 1, SETTINGS)
    assert results[bad].error is ErrorKind.WORKER_DIED and math.isinf(results[bad].cost)
    assert "died 3 times" in results[bad].message
    # first try + max_retries; one more when the first crash is blamed on the batch queued before it
    # (its reply can be lost with the process), after which the spec runs alone and is blamed exactly
    assert report.died_specs == (bad,) and 3 <= report.worker_deaths <= 4
    assert all(m.error is ErrorKind.NONE for k, m in results.items() if k != bad)
    assert set(results) == set(specs)


def test_hung_batch_is_killed_after_timeout(ray_local, specs):
    few = dict(sorted(specs.items())[:6])
    hang = sorted(few)[0]
    with ProfilerPool(1, source(hang_keys=[hang]), PoolOptions(max_retries=1, task_timeout_s=1.0)) as pool:
        t0 = time.perf_counter()
        results, report = pool.measure(few, 1, SETTINGS)
    assert results[hang].error is ErrorKind.WORKER_DIED and "task_timeout_s" in results[hang].message
    assert report.worker_deaths == 2 and time.perf_counter() - t0 < 30
    assert all(results[k].error is ErrorKind.NONE for k in few if k != hang)


class _BrokenRecipe(CpuRecipe):
    """A recipe whose source cannot be built in the worker (as a GPU recipe on a node without CUDA)."""

    def build(self):
        raise RuntimeError("no such device here")


def test_worker_that_cannot_build_its_source_fails_fast_with_the_reason(ray_local, specs):
    with ProfilerPool(2, _BrokenRecipe()) as pool:
        with pytest.raises(WorkerStartError, match="no such device here"):
            pool.device()
        with pytest.raises(WorkerStartError, match="no such device here"):
            pool.measure(specs, 1, SETTINGS)


def test_source_that_raises_gives_a_runtime_error_for_that_stage_only(ray_local, specs):
    bad = sorted(specs)[5]
    with ProfilerPool(2, source(raise_keys=[bad])) as pool:
        results, report = pool.measure(specs, 1, SETTINGS)
    assert results[bad].error is ErrorKind.RUNTIME and "ZeroDivisionError: a cost-source bug" in results[bad].message
    assert report.errors == 1 and report.worker_deaths == 0 and set(results) == set(specs)


def test_exhausted_restart_budget_raises_instead_of_returning_partial_results(ray_local, specs):
    few = dict(sorted(specs.items())[:4])
    with ProfilerPool(1, source(crash_keys=list(few)), PoolOptions(max_worker_restarts=1)) as pool:
        with pytest.raises(WorkersExhaustedError, match="restart budget"):
            pool.measure(few, 1, SETTINGS)


def test_worker_death_and_its_retries_are_logged(ray_local, specs, caplog):
    few = dict(sorted(specs.items())[:6])
    bad = sorted(few)[2]
    with caplog.at_level(logging.INFO, logger="ios_ray.distributed"):
        with ProfilerPool(1, source(crash_keys=[bad]), PoolOptions(max_retries=1)) as pool:
            results, report = pool.measure(few, 1, SETTINGS)
    assert results[bad].error is ErrorKind.WORKER_DIED
    deaths = [r.getMessage() for r in caplog.records
              if r.name == "ios_ray.distributed.profiler_pool" and r.levelno == logging.WARNING]
    assert len(deaths) == report.worker_deaths >= 2
    assert deaths[0].startswith("worker w0 died (") and "retried, each alone; 0 given up" in deaths[0]
    assert deaths[-1].endswith("0 unfinished stages retried, each alone; 1 given up as WORKER_DIED")
    restarts = [r.getMessage() for r in caplog.records if r.name == "ios_ray.distributed.actors"]
    assert any("replaced by w0.r1 (restart 1 of" in m for m in restarts)


class _Named:
    """A tiny actor that says who it is."""

    def __init__(self, tag, worker_id):
        self.tag, self.worker_id = tag, worker_id

    def ready(self):
        return self.worker_id

    def whoami(self):
        return f"{self.tag}:{self.worker_id}"


def test_actor_slots_name_replace_within_budget_and_kill_all(ray_local, caplog):
    with pytest.raises(ValueError, match="size must be at least 1"):
        ActorSlots(ray.remote(_Named), ("x",), 0)
    cls = ray.remote(_Named).options(num_cpus=0.25, max_restarts=0)
    slots = ActorSlots(cls, ("x",), 2, prefix="t", max_restarts=1, ready_method="ready")
    try:
        slots.start(1)
        assert len(slots) == 1
        slots.start()
        assert [s.worker_id for s in slots] == ["t0", "t1"]
        assert ray.get([s.handle.whoami.remote() for s in slots]) == ["x:t0", "x:t1"]
        assert ray.get(slots[0].ready_ref) == "t0" and slots[0].poll_ready()

        first = slots[0]
        ray.kill(first.handle, no_restart=True)
        new = slots.replace(first, "killed by the test")
        assert new is slots[0] and new.worker_id == "t0.r1" and not first.alive
        assert ray.get(new.handle.whoami.remote()) == "x:t0.r1" and slots.restarts == 1
        assert slots.replace(first, "again") is None and slots[0] is new   # already replaced: left alone

        with caplog.at_level(logging.WARNING, logger="ios_ray.distributed.actors"):
            assert slots.replace(slots[1], "budget test") is None       # the budget (1) is spent
        assert "worker t1 lost (budget test); not replaced: the restart budget (1) is spent" in caplog.text
        assert slots.live() == [new] and not slots[1].alive
        slots.reset_budget()
        assert slots.replace(slots[1], "budget renewed").worker_id == "t1.r1"
    finally:
        slots.shutdown()
    assert not slots.live()
    assert all(_dies(slot.handle) for slot in slots)


def _dies(handle, timeout_s: float = 30.0) -> bool:
    """Whether calls to the actor fail within ``timeout_s`` (``ray.kill`` takes effect asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get(handle.whoami.remote(), timeout=timeout_s)
        except ray.exceptions.RayActorError:
            return True
        time.sleep(0.1)
    return False


# ----- the driver -----------------------------------------------------------------------------------

def test_driver_warm_table_measures_nothing(ray_local, specs, tmp_path):
    table = CostTable(str(tmp_path / "table"))
    log = tmp_path / "log"
    log.mkdir()
    opts = ProfileOptions(batch_size=1, settings=SETTINGS)
    cold, rep1 = profile_graph_space(specs, source(log_dir=str(log)), 2, table, opts)
    assert rep1.cache_hits == 0 and rep1.measured == len(specs) == sum(rep1.per_worker.values())
    assert rep1.device.name == "test:flops" and rep1.table_appends >= 1
    assert sum(measured_keys(log).values()) == len(specs)

    warm, rep2 = profile_graph_space(specs, source(log_dir=str(log)), 2, table, opts)
    assert rep2.cache_hits == len(specs) and rep2.measured == 0 and rep2.per_worker == {}
    assert sum(measured_keys(log).values()) == len(specs), "the warm run measured something again"
    assert strip(warm) == strip(cold)

    # another batch size is another cache key: measured again
    _, rep3 = profile_graph_space(specs, source(), 2, table, ProfileOptions(batch_size=4, settings=SETTINGS))
    assert rep3.cache_hits == 0 and rep3.measured == len(specs)


def test_lazy_rounds_stream_on_the_ray_pool_and_a_round_cut_short_still_lands_in_the_table(ray_local, specs,
                                                                                           tmp_path):
    """``ProfileRounds`` over Ray: a round's keys submitted in pieces come back together at ``collect``;
    keys of a round never collected (the DP raised) are still measured and appended by ``close``."""
    from ios_ray.distributed.driver import RayPoolOptions, open_ray_pool
    from ios_ray.profile.rounds import ProfileRounds
    class SlowTable(CostTable):
        def append(self, *args, **kwargs):
            time.sleep(0.25)      # appends that take long, so counting them twice would show
            return super().append(*args, **kwargs)

    table = SlowTable(str(tmp_path / "t"))
    keys = sorted(specs)
    with open_ray_pool(source(delay_s=0.01), RayPoolOptions(2), specs) as pool:
        # every batch appended as it comes back, inside the pool's calls
        rounds = ProfileRounds(specs, pool, table, ProfileOptions(batch_size=1, settings=SETTINGS, append_chunk=1))
        t0 = time.perf_counter()
        assert rounds.lookup() == {}
        rounds.submit(keys[:2])
        rounds.submit(keys[2:5])
        got = rounds.collect()
        assert sorted(got) == keys[:5] and all(math.isfinite(v) for v in got.values())
        rounds.submit(keys[5:8])
        report = rounds.close()
        wall = time.perf_counter() - t0
    assert report.measured == 8 and report.cache_hits == 0 and sum(report.per_worker.values()) == 8
    # the shares are exclusive (regression: appends made inside the pool's calls were counted twice, and
    # the lazy report's profiling time exceeded the whole optimization's)
    assert report.table_appends >= 2 and report.seconds["append"] > 0
    assert sum(report.seconds.values()) <= wall
    device = rounds.device()
    found = table.search(keys, device, 1, pool.dtype).found
    assert sorted(found) == keys[:8]


def test_driver_analytic_progress_and_partial_table(ray_local, specs, tmp_path, capsys):
    table = CostTable(str(tmp_path / "t"))
    keys = sorted(specs)
    half = {k: specs[k] for k in keys[: len(keys) // 2]}
    profile_graph_space(half, "analytic:H200", 2, table)
    results, rep = profile_graph_space(specs, "analytic:H200", 2, table, ProfileOptions(progress=True))
    assert rep.cache_hits == len(half) and rep.measured == len(specs) - len(half)
    assert rep.device.name == "analytic:H200" and set(results) == set(specs)
    assert f"{rep.measured}/{rep.measured} (100%)" in capsys.readouterr().err


class _PerProcessSoftware(FlopsSource):
    """Each worker process reports its own library version: a pool of mixed software stacks."""

    def device(self):
        return DeviceInfo(name="test:flops", kind="cpu", library=f"test {os.getpid()}")


def test_workers_of_different_software_are_refused(ray_local, specs):
    """Rows of one run are filed under one software fingerprint: workers that differ must not mix."""
    from ios_ray.distributed import DeviceMismatchError
    few = dict(sorted(specs.items())[:4])
    with pytest.raises(DeviceMismatchError, match="different devices or software"):
        profile_graph_space(few, _PerProcessSoftware(), 2)


# ----- distributed enumeration ------------------------------------------------------------------------

PART_FIELDS = ("block_index", "part_index", "names", "states", "offsets", "next_index", "stage_index",
               "stage_groups", "stage_strategies", "stage_keys", "level_offsets")


def assert_same_space(dist, local):
    """Equal part for part, array for array (stage ids included), with the same specs in the same order."""
    assert dist.options == local.options and dist.counts == local.counts
    for bd, bl in zip(dist.blocks, local.blocks, strict=True):
        for pd, pl in zip(bd, bl, strict=True):
            for name in PART_FIELDS:
                a, b = getattr(pd, name), getattr(pl, name)
                assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b, name
    assert list(dist.specs) == list(local.specs)
    assert all(dist.specs[k] == local.specs[k] for k in list(local.specs)[::7])


def test_plan_shards_covers_every_state_once_heaviest_first():
    states = {(0, 0): list(range(1000)), (0, 1): list(range(10)), (1, 0): list(range(300))}
    tasks = plan_shards(states, num_workers=4, shards_per_worker=2, min_shard_states=50)
    for pid, sts in states.items():
        mine = [t for t in tasks if (t.block_index, t.part_index) == pid]
        assert sorted(s for t in mine for s in t.states) == sorted(sts)
        assert {t.num_shards for t in mine} == {len(mine)}
        assert sorted(t.shard_index for t in mine) == list(range(len(mine)))
    assert len([t for t in tasks if t.part_id == (0, 0)]) > 1 and len([t for t in tasks if t.part_id == (0, 1)]) == 1
    weights = [t.weight for t in tasks]
    assert weights == sorted(weights, reverse=True)


@pytest.mark.parametrize("model,opts", [
    ("squeezenet", SpaceOptions()),
    ("inception_v3", SpaceOptions(max_group_size=2, max_num_groups=3, max_part_size=12)),
])
def test_distributed_enumeration_equals_local(ray_local, model, opts):
    graph = get_model(model)
    local = enumerate_graph(graph, opts)
    dist, report = enumerate_graph_distributed(graph, opts, num_workers=3, return_report=True,
                                               shards=ShardOptions(min_shard_states=4, shards_per_worker=4))
    assert report.num_shards > report.num_parts, "no part was sharded"
    assert_same_space(dist, local)


def _ours(pid: int, session_dir: str) -> bool:
    """Whether ``pid`` is a worker of this test's Ray instance (its raylet names our session), not of
    another Ray on the machine (other test runs may be going on beside this one)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{ppid}/cmdline", "rb") as f:
            return session_dir.encode() in f.read()
    except (OSError, ValueError, IndexError):
        return False


def _kill_first_busy_enumerator(killed: list, stop: threading.Event) -> None:
    """SIGKILL the process of the first enumeration actor of this Ray instance seen running ``expand``
    (Ray titles it so)."""
    session_dir = ray._private.worker._global_node.get_session_dir_path()
    while not stop.is_set():
        for path in glob.glob("/proc/[0-9]*/cmdline"):
            try:
                with open(path, "rb") as f:
                    title = f.read()
            except OSError:
                continue
            pid = int(path.split("/")[2])
            if title.startswith(b"ray::EnumerateWorker.expand") and _ours(pid, session_dir):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.005)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the actor's process in /proc")
def test_enumeration_worker_killed_mid_shard_is_retried_and_logged(ray_local, caplog):
    graph = get_model("randwire")
    opts = SpaceOptions(max_part_size=16)
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_first_busy_enumerator, args=(killed, stop), daemon=True)
    killer.start()
    try:
        with caplog.at_level(logging.INFO, logger="ios_ray.distributed"):
            dist, report = enumerate_graph_distributed(graph, opts, num_workers=3, return_report=True)
    finally:
        stop.set()
        killer.join()
    assert killed, "the enumeration finished before an actor could be killed"
    assert report.retries == 1
    assert any(w.endswith(".r1") for w in report.per_worker), report.per_worker
    retry = [r.getMessage() for r in caplog.records if r.name == "ios_ray.distributed.enumerate"]
    assert len(retry) == 1 and "died (" in retry[0] and retry[0].endswith("retry 1 of 2")
    assert_same_space(dist, enumerate_graph(graph, opts))


def test_batches_shrink_as_work_runs_out_and_small_rounds_spread():
    from ios_ray.distributed.profiler_pool import _BatchPlan
    plan = _BatchPlan(min_batch=8, max_batch=256, share=2)
    left, sizes = 3846, []
    while left:
        sizes.append(plan.size(left, 16))
        left -= sizes[-1]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == 121 and sizes[-1] <= 8
    assert [plan.size(5, 4), plan.size(3, 4), plan.size(100_000, 4)] == [2, 1, 256]
    # a lazy round of 11 stages for 3 idle workers: one batch each, 4 + 4 + 3, nothing queued behind
    left, cuts = 11, []
    for idle in (3, 2, 1):
        cuts.append(plan.size(left, 3, idle=idle))
        left -= cuts[-1]
    assert cuts == [4, 4, 3] and left == 0


@pytest.mark.parametrize("bad, named", [(dict(max_retries=-1), "max_retries"),
                                         (dict(inflight_per_worker=0), "inflight_per_worker"),
                                         (dict(min_batch=9, max_batch=8), "min_batch"),
                                         (dict(task_timeout_s=0), "task_timeout_s"),
                                         (dict(max_worker_restarts=-1), "max_worker_restarts"),
                                         (dict(driver_load=0), "driver_load")])
def test_pool_options_out_of_range_are_named(bad, named):
    with pytest.raises(ValueError, match=named):
        PoolOptions(**bad)


def test_catalog_batches_travel_as_keys_with_the_same_results(ray_local, tmp_path):
    """A GraphSpace's SpecTable goes to the workers once; the batches then carry keys, the workers build
    the specs, and the results are those of shipping specs."""
    space = enumerate_graph(get_model("squeezenet"), SpaceOptions())
    plain = dict(space.specs)
    with ProfilerPool(2, source()) as pool:
        by_spec, _ = pool.measure(plain, 1, SETTINGS)
    log = tmp_path / "log"
    log.mkdir()
    with ProfilerPool(2, source(log_dir=str(log))) as pool:
        pool.use_catalog(space.specs)
        subset = {k: None for k in sorted(plain)[:40]}   # never built: only the keys travel
        first, report = pool.measure(subset, 1, SETTINGS)
        rest, _ = pool.measure({k: None for k in sorted(plain)[40:]}, 1, SETTINGS)
    assert report.num_specs == 40 and report.driver_cpu_s > 0 and len(report.per_worker) == 2
    assert strip({**first, **rest}) == strip(by_spec)
    assert set(measured_keys(log).values()) == {1} and len(measured_keys(log)) == len(plain)
    _, rep = profile_graph_space(space, source(), 2, None, ProfileOptions(1, SETTINGS))
    assert rep.measured == len(plain) and rep.errors == 0


def test_fast_stages_travel_in_fewer_bigger_batches_with_the_same_results(ray_local, specs):
    """Once the workers' seconds per stage are known, a batch holds at least what keeps the driver's share
    of the time under ``driver_load``: stages of microseconds go in a few big batches, stages of 50 ms in
    the guided, shrinking ones; what is measured does not change."""
    subset = {k: specs[k] for k in sorted(specs)[:40]}
    opts = PoolOptions(min_batch=1, max_batch=64, batches_per_worker=2, driver_load=1.0)
    with ProfilerPool(2, source(), opts) as pool:
        fast, fast_report = pool.measure(subset, 1, SETTINGS)
    with ProfilerPool(2, source(delay_s=0.05), opts) as pool:
        slow, slow_report = pool.measure(subset, 1, SETTINGS)
    assert fast_report.batches < slow_report.batches
    assert slow_report.worker_s >= 40 * 0.05 and fast_report.worker_s < 1.0
    assert strip(fast) == strip(slow) and len(fast) == 40


def test_ray_profiling_writes_the_rows_local_profiling_writes(ray_local, specs, tmp_path):
    """Results come back from the actors as columns; the cost table still gets one full row per stage,
    the same as in-process profiling gives (but for who measured and when)."""
    from ios_ray.profile.stages import LocalPool, profile_stages
    options = ProfileOptions(1, SETTINGS, append_chunk=32)
    local_table, ray_table = CostTable(str(tmp_path / "local")), CostTable(str(tmp_path / "ray"))
    local, _ = profile_stages(specs, LocalPool(source()), local_table, options)
    remote, report = profile_graph_space(specs, source(), 2, ray_table, options)
    assert strip(remote) == strip(local) and report.measured == len(specs)

    def rows(table):
        return sorted(table.read_all().drop_columns(["timestamp", "worker"]).to_pylist(), key=lambda r: r["key"])
    assert rows(ray_table) == rows(local_table) and len(rows(ray_table)) == len(specs)

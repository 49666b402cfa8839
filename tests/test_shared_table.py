"""One cost table shared by concurrent runs (claims), and tables that cannot be written."""
import contextlib
import multiprocessing as mp
import os
import tempfile
import time

import pyarrow.dataset as ds
import pytest

from ios_ray.cli import main
from ios_ray.costs.claims import CLAIMS_DIR, GRANT_SUFFIX
from ios_ray.costs.factory import resolve_cost
from ios_ray.costs.measurement import DeviceInfo, Measurement
from ios_ray.costs.table import CostTable, CostTableError
from ios_ray.models import get_model
from ios_ray.optimizer import OptimizeOptions, optimize_with
from ios_ray.profile.stages import ProfileOptions
from ios_ray.space.options import SpaceOptions


class SleepySource:
    """A CostSource that takes ``ms`` per stage (latency from the flops): a slow device, deterministic."""

    dtype = "float32"

    def __init__(self, ms: float = 0.0, hang: bool = False, started=None):
        self.ms, self.hang, self.started, self.calls = ms, hang, started, 0

    def device(self):
        return DeviceInfo("test:sleepy", "cpu", library="sleepy 1")

    def measure(self, specs, batch_size, settings):
        self.calls += 1
        if self.started is not None:
            self.started.set()
        if self.hang:
            time.sleep(3600)
        out = []
        for s in specs:
            time.sleep(self.ms / 1000)
            out.append(Measurement(s.key, s.flops() * batch_size / 1e9 + 0.001, samples=1))
        return out


def _options(source, table, profiling="exhaustive", **profile):
    # exhaustive by default: claims share profile_stages' work between runs (lazy rounds claim no stages)
    return OptimizeOptions(space=SpaceOptions(), source=resolve_cost(source), profile=ProfileOptions(**profile),
                           cost_table=table, profiling=profiling)


def _optimize_shared(table, barrier, out):
    opts = _options(SleepySource(ms=25), table, claim_chunk=8, claim_seconds=0.1, claim_poll_s=0.1)
    barrier.wait()
    rep = optimize_with(get_model("squeezenet"), opts).optimization_report
    out.put((rep.measured, rep.from_other_runs, rep.cache_hits, rep.predicted_latency_ms))


@pytest.mark.slow
def test_two_concurrent_optimizations_share_the_work(tmp_path):
    """Regression: two optimizations into one table at once both measured every stage (twice the work,
    and a plain pyarrow.dataset reader saw every key twice)."""
    table = str(tmp_path / "shared")
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_optimize_shared, args=(table, barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    stages = CostTable(table).read_all().num_rows
    measured = [r[0] for r in results]
    assert all(m > 0 for m in measured), f"one run did all the work: {results}"
    assert sum(measured) <= stages + 8, f"measured {measured} of {stages} stages: more than one claim chunk twice"
    for m, from_others, hits, _ in results:
        assert m + from_others + hits == stages  # every stage: measured here, by the other run, or a hit
    assert results[0][3] == pytest.approx(results[1][3])  # the same costs, whoever measured them
    raw = ds.dataset(table, format="parquet").to_table()  # a plain Arrow reader: claims never show up
    assert raw.num_rows == sum(measured) and set(raw.column_names) >= {"key", "latency_ms"}
    assert not os.listdir(os.path.join(table, CLAIMS_DIR))  # each run removed its claims


def _claim_then_hang(table, started):
    optimize_with(get_model("squeezenet"), _options(SleepySource(hang=True, started=started), table,
                                                    claim_ttl_s=1.5))


@pytest.mark.slow
def test_a_dead_claimant_never_blocks_another_run(tmp_path):
    """A run that claimed every stage and died: its claims expire and the other run measures them."""
    table = str(tmp_path / "shared")
    ctx = mp.get_context("spawn")
    started = ctx.Event()
    claimant = ctx.Process(target=_claim_then_hang, args=(table, started))
    claimant.start()
    try:
        assert started.wait(120), "the claimant never started measuring"
        assert any(n.endswith(GRANT_SUFFIX) for n in os.listdir(os.path.join(table, CLAIMS_DIR)))  # it holds a claim
    finally:
        claimant.kill()
        claimant.join()
    t0 = time.perf_counter()
    opt = optimize_with(get_model("squeezenet"), _options(SleepySource(), table, claim_poll_s=0.1))
    rep = opt.optimization_report
    assert rep.measured == rep.unique_stages and rep.from_other_runs == 0
    assert rep.seconds["profile"] >= 1.0 or "wait" in str(rep.seconds)  # it waited for the claim to expire
    assert time.perf_counter() - t0 < 60
    assert CostTable(table).read_all().num_rows == rep.unique_stages


# ----- tables that cannot be written --------------------------------------------------------------
@contextlib.contextmanager
def read_only(path):
    """``path`` (a directory) read-only for this process; root ignores permissions, so act as nobody."""
    os.chmod(path, 0o555)
    root = os.geteuid() == 0
    try:
        if root:
            os.seteuid(65534)
        yield
    finally:
        if root:
            os.seteuid(0)
        os.chmod(path, 0o755)


@pytest.fixture
def shared_dir():
    """A directory every user may read (pytest's tmp_path is private to root)."""
    path = tempfile.mkdtemp(prefix="ios_ray_ro_")
    os.chmod(path, 0o755)
    yield path
    import shutil
    shutil.rmtree(path, ignore_errors=True)


def test_read_only_table_is_found_before_anything_is_measured(shared_dir, capsys):
    """Regression: a read-only table was found at the first append (after minutes of measuring, whose
    rows were lost), and the error named a .tmp- file instead of the table."""
    table = os.path.join(shared_dir, "costs")
    optimize_with(get_model("sample"), _options(SleepySource(), table))  # the table exists, with other stages
    source = SleepySource()
    with read_only(table):
        with pytest.raises(CostTableError, match=f"cost table {table} is not writable"):
            optimize_with(get_model("squeezenet"), _options(source, table))
        assert source.calls == 0  # nothing was measured
        assert main(["optimize", "squeezenet", "--workers", "0", "--cost", "analytic", "--table", table,
                     "--out", os.path.join(shared_dir, "s.json"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"cost table {table} is not writable" in err and ".tmp-" not in err and len(err.splitlines()) == 1


def test_lazy_profiling_finds_a_read_only_table_before_measuring(shared_dir):
    table = os.path.join(shared_dir, "costs")
    optimize_with(get_model("sample"), _options(SleepySource(), table, profiling="lazy"))
    source = SleepySource()
    with read_only(table):
        with pytest.raises(CostTableError, match=f"cost table {table} is not writable"):
            optimize_with(get_model("squeezenet"), _options(source, table, profiling="lazy"))
        assert source.calls == 0  # not even the one-op stages were measured
        again = optimize_with(get_model("sample"), _options(source, table, profiling="lazy"))  # all in the table
    assert source.calls == 0 and again.optimization_report.measured == 0


def test_read_only_table_holding_every_stage_still_works(shared_dir):
    table = os.path.join(shared_dir, "costs")
    first = optimize_with(get_model("sample"), _options(SleepySource(), table))
    source = SleepySource()
    with read_only(table):
        again = optimize_with(get_model("sample"), _options(source, table))
    assert source.calls == 0 and again.optimization_report.cache_hits == again.optimization_report.unique_stages
    assert str(again) == str(first)


def test_append_error_names_the_table(tmp_path):
    table = CostTable(tmp_path / "costs")
    (tmp_path / "costs").write_text("a file where the table's directory should be")
    from ios_ray.costs.table import Conditions
    from ios_ray.space.enumerate import enumerate_graph
    specs = enumerate_graph(get_model("sample"), SpaceOptions()).specs
    key = next(iter(specs))
    with pytest.raises(CostTableError, match=f"cost table {table.location}: cannot write"):
        table.append([Measurement(key, 1.0, samples=1)], {key: specs[key]},
                     Conditions(DeviceInfo("test:x", "cpu"), 1, "float32"))


# ----- the claim rules, directly ----------------------------------------------------------------------
def _conditions(device="test:sleepy", batch_size=1):
    from ios_ray.costs.table import Conditions
    return Conditions(DeviceInfo(device, "cpu", library="sleepy 1"), batch_size, "float32")


def test_claims_the_earlier_grant_wins_and_scopes_do_not_mix(tmp_path):
    table = CostTable(tmp_path / "t")
    first, second = table.claims(_conditions()), table.claims(_conditions())
    other_batch = table.claims(_conditions(batch_size=8))
    try:
        assert first.claim(["a", "b"]).keys == ("a", "b")
        assert second.held() == {"a", "b"} and first.held() == frozenset()
        assert second.claim(["b", "c"]).keys == ("c",)  # as if at the same moment (held not asked): b is first's
        assert first.held() == {"c"}    # second gave b up and rewrote its grant
        assert other_batch.held() == frozenset()  # another batch size is another stage
    finally:
        for book in (first, second, other_batch):
            book.close()
    assert not os.listdir(tmp_path / "t" / CLAIMS_DIR)


def test_claims_of_a_run_whose_heartbeat_expired_are_free(tmp_path):
    table = CostTable(tmp_path / "t")
    dead = table.claims(_conditions(), ttl_s=0.3)
    dead.claim(["a"])
    dead._stop.set()  # stops renewing, as a killed run does (its files stay)
    live = table.claims(_conditions())
    try:
        assert live.held() == {"a"}
        time.sleep(0.6)
        assert live.held() == frozenset()
        assert live.claim(["a"]).keys == ("a",)
    finally:
        live.close()
        dead.close()

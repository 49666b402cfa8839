"""The CPU cost source: real timings of real stage specs, errors as measurements, bounded memory."""
import math
import tracemalloc

import numpy as np
import pytest

import ios_ray as ios
from ios_ray.costs.measurement import CostSource, ErrorKind, MeasureSettings
from ios_ray.graph.schedule import Strategy
from ios_ray.profile import CpuProfiler
from ios_ray.profile.cpu import timing_priority
from ios_ray.space.stage import OpSpec, StageSpec, stage_spec

FAST = MeasureSettings(warmup=1, number=2, repeat=3)


def small_graph(c=8, hw=8):
    v = ios.placeholder((c, hw, hw))
    block = ios.Block(enter_node=v.node)
    v1 = ios.conv2d(block, [[v]], c, (3, 3), padding=(1, 1), name="conv1")
    v2 = ios.conv2d(block, [[v]], 2 * c, (3, 3), padding=(1, 1), name="conv2")
    v3 = ios.conv2d(block, [[v]], c, (1, 1), name="conv3")
    v4 = ios.conv2d(block, [[v1]], 2 * c, (3, 3), padding=(1, 1), name="conv4")
    p = ios.pool2d(block, [[v]], "max", (3, 3), (1, 1), (1, 1), name="pool")
    s = ios.sep_conv(block, [[p]], c, (3, 3), name="sep")
    ios.identity(block, [[v4], [v2], [v3], [s]], is_exit=True, name="concat")
    return ios.Graph("small", v.node, [block])


def specs_of(graph):
    n = graph.node_by_name()
    return [
        stage_spec([[n["conv1"]]]),
        stage_spec([[n["conv1"]], [n["conv2"]]]),
        stage_spec([[n["conv1"], n["conv4"]], [n["pool"], n["sep"]]]),
        stage_spec([[n["conv1"]], [n["conv2"]], [n["conv3"]]], Strategy.MERGE),
        stage_spec([[n["concat"]]]),
    ]


def test_is_a_cost_source_describing_the_cpu():
    prof = CpuProfiler()
    assert isinstance(prof, CostSource)
    info = prof.device()
    assert info.kind == "cpu" and info.name.startswith("cpu:") and info.name.endswith("/numpy")
    assert info.library.startswith(f"numpy {np.__version__}") and "ios_ray" in info.library
    # the software fingerprint is the libraries, and the priority and BLAS thread setting the timings ran under
    with timing_priority() as nice:
        assert info.software == f"{info.library} | thread cpu clock, nice {nice}, blas threads 1" and prof.dtype == "float32"


def test_measures_positive_finite_latency_per_spec_in_order():
    specs = specs_of(small_graph())
    ms = CpuProfiler(worker="w0").measure(specs, 2, FAST)
    assert [m.key for m in ms] == [s.key for s in specs]
    for m in ms:
        assert m.error is ErrorKind.NONE, m.message
        assert math.isfinite(m.latency_ms) and m.latency_ms > 0 and m.cost == m.latency_ms
        assert m.samples == FAST.repeat and m.spread_ms >= 0 and m.worker == "w0" and not m.estimated


def test_bigger_stage_takes_longer():
    small = stage_spec([[small_graph(c=8, hw=8).node_by_name()["conv2"]]])
    big = stage_spec([[small_graph(c=64, hw=16).node_by_name()["conv2"]]])
    settings = MeasureSettings(warmup=1, number=3, repeat=5)
    m_small, m_big = CpuProfiler().measure([small, big], 1, settings)
    assert m_big.latency_ms > m_small.latency_ms


def test_unbuildable_spec_is_an_error_measurement():
    bogus = StageSpec(((4, 5, 5),), ((OpSpec("bogus_op", (), ((("e", 0, 0, 4),),), (4, 5, 5)),),))
    good = specs_of(small_graph())[0]
    m_bad, m_good = CpuProfiler().measure([bogus, good], 1, FAST)
    assert m_bad.error is ErrorKind.UNSUPPORTED and "bogus_op" in m_bad.message
    assert math.isnan(m_bad.latency_ms) and m_bad.cost == math.inf and m_bad.key == bogus.key
    assert m_good.error is ErrorKind.NONE


def test_op_without_kernel_is_unsupported():
    # a placeholder inside a group builds but has no kernel to run
    spec = StageSpec(((4, 5, 5),), ((OpSpec("placeholder", (("output_shape", (4, 5, 5)),), (), (4, 5, 5)),),))
    (m,) = CpuProfiler().measure([spec], 1, FAST)
    assert m.error is ErrorKind.UNSUPPORTED and "placeholder" in m.message


def test_failure_while_running_is_a_runtime_error_measurement(monkeypatch):
    # a kernel that fails while the stage runs (not a huge allocation: machines with overcommit and
    # much memory would try to fill it instead of failing)
    import ios_ray.profile.cpu as cpu

    def broken(node, env):
        raise MemoryError("Unable to allocate the stage's output")

    monkeypatch.setattr(cpu, "run_node", broken)
    spec = specs_of(small_graph())[0]
    (m,) = CpuProfiler().measure([spec], 1, FAST)
    assert m.error is ErrorKind.RUNTIME and "Memory" in m.message and m.cost == math.inf


def test_input_cache_stays_bounded():
    prof = CpuProfiler(max_cached_inputs=3)
    specs = [stage_spec([[small_graph(c=4, hw=hw).node_by_name()["conv3"]]]) for hw in (4, 5, 6, 7, 8, 9)]
    settings = MeasureSettings(warmup=0, number=1, repeat=1)
    prof.measure(specs, 1, settings)
    assert prof.cached_inputs == 3
    prof.measure(specs[:2], 1, settings)
    assert prof.cached_inputs == 3


def test_repeated_measure_calls_do_not_grow_memory():
    prof = CpuProfiler()
    specs = specs_of(small_graph(c=16, hw=12))
    prof.measure(specs, 2, FAST)  # fills the input cache
    tracemalloc.start()
    try:
        prof.measure(specs, 2, FAST)
        first, _ = tracemalloc.get_traced_memory()
        for _ in range(4):
            prof.measure(specs, 2, FAST)
        last, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert last - first < 256 * 1024, f"memory grew by {last - first} bytes over 4 calls"


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        CpuProfiler().measure([], 0, FAST)
    with pytest.raises(ValueError, match="max_cached_inputs"):
        CpuProfiler(max_cached_inputs=0)


def test_profile_stages_on_a_local_pool_appends_in_chunks_and_reuses(tmp_path):
    """The one profiling path, in-process: chunked appends, then every stage a cache hit."""
    from ios_ray.costs.table import CostTable
    from ios_ray.profile.stages import LocalPool, ProfileOptions, profile_stages
    specs = {s.key: s for s in specs_of(small_graph())}
    table = CostTable(tmp_path / "costs")
    options = ProfileOptions(batch_size=1, settings=FAST, append_chunk=2)
    cold, rep = profile_stages(specs, LocalPool(CpuProfiler(), chunk=2), table, options)
    assert set(cold) == set(specs) and rep.measured == len(specs) and rep.cache_hits == 0
    assert rep.per_worker == {"local": len(specs)} and rep.table_appends == len(table.files()) >= 2
    warm, rep2 = profile_stages(specs, LocalPool(CpuProfiler()), table, options)
    assert rep2.cache_hits == len(specs) and rep2.measured == 0 and rep2.per_worker == {}
    assert {k: m.latency_ms for k, m in warm.items()} == {k: m.latency_ms for k, m in cold.items()}


def test_local_pool_refuses_a_source_that_breaks_the_protocol():
    from ios_ray.profile.stages import LocalPool

    class Shuffled(CpuProfiler):
        def measure(self, specs, batch_size, settings):
            return list(reversed(super().measure(specs, batch_size, settings)))

    specs = {s.key: s for s in specs_of(small_graph())[:2]}
    with pytest.raises(ValueError, match="one measurement per spec, in order"):
        LocalPool(Shuffled()).measure(specs, 1, FAST)
    with pytest.raises(ValueError, match="chunk"):
        LocalPool(CpuProfiler(), chunk=0)

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
    # final_check=False: the DP's schedule, not whichever the noisy whole-graph timings favour
    opt = ios.optimize(g, cost="cpu", warmup=0, number=1, repeat=1, cost_table=table, final_check=False,
                       profiling="exhaustive")
    rep = opt.optimization_report
    assert not rep.estimated and rep.measured == rep.unique_stages and rep.cache_hits == 0
    again = ios.optimize(g, cost="cpu", warmup=0, number=1, repeat=1, cost_table=table, final_check=False,
                         profiling="exhaustive")
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
    with pytest.raises(ValueError, match="num_workers"):
        ios.optimize(g, num_workers=-1, cost="analytic")


def test_num_workers_0_means_in_process_as_on_the_cli():
    """Regression: `--workers 0` ran in-process on the CLI while num_workers=0 was an error in the API."""
    import ray
    g = get_model("sample")
    opt = ios.optimize(g, num_workers=0, cost="analytic", cost_table=False)
    rep = opt.optimization_report
    assert rep.in_process and "workers=in-process" in rep.format() and "ray start" not in rep.seconds
    assert str(opt) == str(ios.optimize(g, cost="analytic", cost_table=False))
    assert not ray.is_initialized()


def test_report_labels_estimates_as_estimated():
    """Regression: the report said "measured now" for analytic estimates."""
    text = ios.optimize(get_model("sample"), cost="analytic", cost_table=False).optimization_report.format()
    assert "estimated now:" in text and "measured" not in text


@pytest.mark.slow
@pytest.mark.parametrize("name,batches", [("squeezenet", (1, 2)), ("inception_v3", (1,)), ("randwire", (1,)),
                                          ("nasnet", (1,))])
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
    from ios_ray.costs.analytic import AnalyticCostModel
    from ios_ray.costs.table import Conditions, CostTable
    from ios_ray.space.enumerate import SpaceOptions, enumerate_graph
    g = get_model("sample")
    specs = enumerate_graph(g, SpaceOptions()).specs
    table = CostTable(str(tmp_path / "costs"))
    died = [Measurement(k, math.nan, error=ErrorKind.WORKER_DIED, message="worker died") for k in specs]
    table.append(died, dict(specs), Conditions(AnalyticCostModel("H200").device(), 1, "float32", MeasureSettings()))
    opt = ios.optimize(g, cost="analytic:H200", cost_table=table, profiling="exhaustive")
    rep = opt.optimization_report
    assert rep.cache_hits == 0 and rep.measured == rep.unique_stages and rep.errors == 0


def test_cost_names_are_matched_exactly():
    from ios_ray.costs.factory import AnalyticRecipe, GpuRecipe, parse_cost
    assert parse_cost("analytic:v100") == AnalyticRecipe("V100")
    assert parse_cost("gpu-tf32") == GpuRecipe(tf32=True) and parse_cost("gpu-tf32").dtype == "tf32"
    assert parse_cost(" CUDA ") == GpuRecipe() and parse_cost("cpu").dtype == "float32"
    assert parse_cost("analytic-tf32:h100").dtype == "tf32"
    assert parse_cost("gpu-tf32-cold") == GpuRecipe(tf32=True, l2="cold") and str(GpuRecipe(l2="cold")) == "gpu-cold"
    assert parse_cost("gpu-warm") == GpuRecipe(l2="warm") and str(parse_cost("gpu-tf32-warm")) == "gpu-tf32-warm"
    assert parse_cost("gpu").l2 == "auto" and str(GpuRecipe()) == "gpu"
    with pytest.raises(ValueError, match="l2 must be 'auto', 'warm' or 'cold'"):
        GpuRecipe(l2="lukewarm")
    with pytest.raises(ValueError, match="unknown cost source"):
        parse_cost("analytics")


def test_unknown_cost_kind_lists_the_known_ones():
    from ios_ray.costs.factory import parse_cost
    for bad in ("quantum", "cpu:V100", "analytic:", "gpu:2"):
        with pytest.raises(ValueError) as info:
            parse_cost(bad)
        message = str(info.value)
        assert repr(bad) in message
        for known in ("cpu", "gpu", "gpu-tf32", "analytic[:GPU]"):
            assert known in message
    with pytest.raises(ValueError, match="known GPUs: A100, H100, H200, V100"):
        parse_cost("analytic:K80")
    with pytest.raises(ValueError, match="V100 has no tf32"):
        parse_cost("analytic-tf32:V100")


def test_cost_object_without_a_math_mode_is_refused():
    class NoDtype:
        def device(self):
            raise AssertionError("not called")

        def measure(self, specs, batch_size, settings):
            raise AssertionError("not called")

    with pytest.raises(ValueError, match="does not state its math mode"):
        ios.optimize(get_model("sample"), cost=NoDtype())


def _rows(table_dir):
    from ios_ray.costs.table import CostTable
    return CostTable(table_dir).read_all().to_pylist()


def test_tf32_cost_source_object_writes_tf32_rows_in_process(tmp_path):
    """Regression: the math mode was guessed for cost-source objects; a TF32 source must file its rows
    under tf32 (and read them back from there)."""
    from ios_ray.costs.analytic import AnalyticCostModel
    table = str(tmp_path / "costs")
    first = ios.optimize(get_model("sample"), cost=AnalyticCostModel("H200", dtype="tf32"), cost_table=table,
                        profiling="exhaustive")
    rows = _rows(table)
    assert rows and {r["dtype"] for r in rows} == {"tf32"}
    assert first.optimization_report.dtype == "tf32"
    again = ios.optimize(get_model("sample"), cost=AnalyticCostModel("H200", dtype="tf32"), cost_table=table,
                        profiling="exhaustive")
    assert again.optimization_report.cache_hits == first.optimization_report.unique_stages
    fp32 = ios.optimize(get_model("sample"), cost=AnalyticCostModel("H200"), cost_table=table,
                        profiling="exhaustive")
    assert fp32.optimization_report.cache_hits == 0   # tf32 rows are not float32 rows


class VersionedSource:
    """A picklable CostSource whose library version is a constructor argument (and counts measurements)."""

    dtype = "float32"

    def __init__(self, version: str):
        self.version = version
        self.measured = 0

    def device(self):
        from ios_ray.costs.measurement import DeviceInfo
        return DeviceInfo("test:versioned", "cpu", library=f"testlib {self.version}")

    def measure(self, specs, batch_size, settings):
        from ios_ray.costs.measurement import Measurement
        self.measured += len(specs)
        return [Measurement(s.key, 0.01 * s.num_ops, samples=1) for s in specs]


def test_rows_of_another_library_version_are_measured_again_and_counted(tmp_path):
    """Regression: a row measured under another library version was reused silently."""
    from ios_ray.costs.table import CostTable
    table = CostTable(str(tmp_path / "costs"))
    old = VersionedSource("1.0")
    first = ios.optimize(get_model("sample"), cost=old, cost_table=table, profiling="exhaustive").optimization_report
    assert first.measured == first.unique_stages == old.measured and first.stale == 0
    new = VersionedSource("2.0")
    second = ios.optimize(get_model("sample"), cost=new, cost_table=table, profiling="exhaustive").optimization_report
    assert second.cache_hits == 0 and second.stale == second.unique_stages
    assert new.measured == second.unique_stages                  # measured again, not reused
    assert "stale rows: " + str(second.stale) in second.format()
    assert table.read_raw().num_rows == 2 * first.unique_stages  # the old rows are kept
    third = ios.optimize(get_model("sample"), cost=VersionedSource("2.0"), cost_table=table,
                         profiling="exhaustive").optimization_report
    assert third.cache_hits == third.unique_stages and third.stale == 0


def test_construct_rebuilds_nodes_and_slices(tmp_path):
    """construct builds new IR nodes (the original graph keeps its own) and consumers of merged convs
    read their channel slice of the merged output."""
    from ios_ray.graph.ir import Conv
    from ios_ray.graph.schedule import Stage
    from ios_ray.optimizer import construct
    g = get_model("sample")
    g.init_weights(0)
    names = [n.name for n in g.blocks[0].nodes]
    by = g.node_by_name()
    convs = [n for n in g.blocks[0].nodes if isinstance(n, Conv) and n.inputs[0][0].node is g.input]
    assert len(convs) >= 2
    rest = [n for n in names if n not in {c.name for c in convs}]
    stages = [Stage(tuple((c.name,) for c in convs), Strategy.MERGE)] + [Stage(((n,),)) for n in rest]
    opt = construct(g, [stages], compute_weight=True)
    merged = opt.node_by_name()["+".join(c.name for c in convs)]
    assert merged.out_channels == sum(c.out_channels for c in convs)
    assert all(opt.node_by_name()[n] is not by[n] for n in rest)
    assert opt.input is not g.input and all(n in by for n in names)
    readers = [n for n in opt.blocks[0].nodes for t in n.inputs for v in t if v.node is merged]
    assert readers and all(0 <= v.begin < v.end <= merged.out_channels
                           for n in readers for t in n.inputs for v in t if v.node is merged)
    _outputs_match(g, opt, 1)


@pytest.mark.gpu
def test_gpu_tf32_rows_carry_the_math_mode_and_software_fingerprint(tmp_path):
    """On a GPU: ``gpu-tf32`` rows are filed as tf32 under the full software fingerprint (cuDNN, CUDA
    runtime, CuPy, numpy, ios_ray, driver, autotune), and the autotune setting is part of it."""
    from ios_ray.costs.factory import GpuRecipe
    from ios_ray.costs.table import CostTable
    g = get_model("sample")
    untuned = GpuRecipe(tf32=True).for_graph(g, 1).build().device()   # the default: the heuristic's engines
    assert "L2 flushed" in untuned.software and "MiB flushed" in untuned.software   # timed as the graph runs
    tuned = GpuRecipe(tf32=True, autotune=True).build().device()
    assert tuned.name == untuned.name and tuned.software != untuned.software
    for part in ("cudnn", "cuda runtime", "cupy", "numpy", "ios_ray", "driver", "autotune off"):
        assert part in untuned.software, part
    table = str(tmp_path / "costs")
    opt = ios.optimize(g, cost="gpu-tf32", warmup=0, number=1, repeat=1, cost_table=table,
                       profiling="exhaustive")   # every stage a row
    rows = CostTable(table).read_all().to_pylist()
    assert opt.optimization_report.dtype == "tf32" and len(rows) == opt.optimization_report.unique_stages
    assert {r["dtype"] for r in rows} == {"tf32"} and {r["software"] for r in rows} == {untuned.software}


def test_lazy_profiling_is_the_default_and_finds_the_exhaustive_schedule(tmp_path):
    """The default measures only what the DP needs: fewer rows, the same schedule as measuring every stage,
    and a warm re-run measures nothing."""
    from ios_ray.costs.table import CostTable
    g = get_model("inception_v3")
    table = CostTable(str(tmp_path / "costs"))
    lazy = ios.optimize(g, cost="analytic:H200", cost_table=table)
    rep = lazy.optimization_report
    exhaustive = ios.optimize(g, cost="analytic:H200", cost_table=False, profiling="exhaustive")
    assert rep.profiling == "lazy" and exhaustive.optimization_report.profiling == "exhaustive"
    assert rep.predicted_latency_ms == pytest.approx(exhaustive.optimization_report.predicted_latency_ms)
    assert str(lazy) == str(exhaustive)
    assert rep.measured == rep.known_stages < 0.2 * rep.unique_stages and rep.cache_hits == 0
    assert rep.rounds >= 1 and rep.bound_violations == 0
    assert rep.measured_fraction == pytest.approx(rep.measured / rep.unique_stages)
    assert "lazy: " in rep.format() and f"{rep.rounds} rounds" in rep.format()
    rows = table.read_all()
    assert rows.num_rows == rep.measured and len(table.files()) <= 2   # appended in chunks, not per round
    warm = ios.optimize(g, cost="analytic:H200", cost_table=table).optimization_report
    assert warm.measured == 0 and warm.cache_hits == rep.measured and warm.rounds == 0
    assert warm.predicted_latency_ms == rep.predicted_latency_ms


def test_unknown_profiling_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="profiling must be one of"):
        ios.optimize(get_model("sample"), cost="analytic", profiling="sometimes")


def test_gpu_timing_is_chosen_by_the_graphs_working_set_against_the_l2():
    from ios_ray.costs.factory import GpuRecipe
    from ios_ray.profile.gpu import FLUSH_STEP, L2_COLD, L2_WARM, l2_protocol
    l2 = 60 << 20
    assert l2_protocol(None, l2) == (L2_WARM, None)              # no graph known: as before
    assert l2_protocol(400 << 20, l2) == (L2_COLD, None)         # the rest of the graph evicts everything
    assert l2_protocol(120 << 20, l2) == (L2_COLD, None)
    mode, flush = l2_protocol(54 << 20, l2)                      # SqueezeNet: evicts as much as it touches
    assert mode == L2_COLD and flush == 56 << 20 and flush % FLUSH_STEP == 0
    assert l2_protocol(1, l2) == (L2_COLD, FLUSH_STEP)
    g = get_model("inception_v3")
    recipe = GpuRecipe(tf32=True).for_graph(g, 16)               # optimize hands it the graph it optimizes
    assert recipe.working_set == g.working_set_bytes(16) and recipe.tf32 and recipe.l2 == "auto"
    assert g.working_set_bytes(16) > g.working_set_bytes(1) > 83 << 20   # 83 MiB of fp32 weights alone


def test_working_set_counts_every_parameter_once_and_every_output_per_image():
    g = get_model("sample")
    params = sum(int(np.prod(shape)) for n in g.nodes() for shape in n.weight_shapes().values())
    outputs = sum(int(np.prod(n.output_shape)) for n in g.nodes())
    assert g.working_set_bytes(1) == 4 * (params + outputs)
    assert g.working_set_bytes(3) - g.working_set_bytes(1) == 4 * 2 * outputs


def test_optimize_hands_the_graph_to_a_cost_source_that_times_per_graph(tmp_path):
    from ios_ray.profile.cpu import CpuProfiler

    class PerGraph(CpuProfiler):
        seen = []

        def for_graph(self, graph, batch_size):
            self.seen.append((graph.name, batch_size))
            return self

    g = get_model("sample")
    ios.optimize(g, 2, cost=PerGraph(), cost_table=str(tmp_path / "t"), final_check=False)
    assert PerGraph.seen == [(g.name, 2)]


def test_the_launch_taken_off_a_sample_keeps_one_graph_node():
    from ios_ray.runtime.gpu.program import launch_less_node
    launch, node = launch_less_node(0.005, 0.006)       # one-node graph 5 us, two-node 6 us
    assert launch == pytest.approx(0.004) and node == pytest.approx(0.001)
    assert launch_less_node(0.005, 0.004) == (0.005, 0.0)   # noise never makes a node cost less than nothing


def test_timing_takes_samples_in_blocks_until_their_median_is_stable():
    from ios_ray.runtime.gpu.program import BLOCK, FIRST_BLOCK, samples_until_stable
    calls = []

    def steady(size, first):
        calls.append((size, first))
        return [1.0] * size
    out = samples_until_stable(steady, cap=36, least=5, fraction=0.01)
    assert len(out) == FIRST_BLOCK + BLOCK and calls == [(FIRST_BLOCK, True), (BLOCK, False)]
    values = iter(range(1, 100))                    # a median that keeps moving: stops at the cap
    out = samples_until_stable(lambda size, first: [next(values) for _ in range(size)], cap=11, least=5,
                               fraction=0.01)
    assert len(out) == 11
    assert len(samples_until_stable(steady, cap=2, least=5, fraction=0.01)) == 2   # never more than the cap

"""The lazy DP (dp/lazy.py) against the exhaustive one, on random graphs and costs built so that the bounds
hold, and on the analytic model of real networks (CPU only, no Ray)."""
import hashlib
import math

import numpy as np
import pytest

from ios_ray.costs.analytic import AnalyticCostModel
from ios_ray.dp import NoFeasibleScheduleError, solve
from ios_ray.dp.lazy import LazyOptions, OpSumBound, PartOps, k_best_paths, lazy_solve
from ios_ray.graph.schedule import Strategy
from ios_ray.models import get_model
from ios_ray.optimizer import construct
from ios_ray.space.enumerate import enumerate_graph
from ios_ray.space.options import OptType, SpaceOptions
from ios_ray.space.parts import graph_parts
from ios_ray.space.reference import all_schedules
from ios_ray.space.stage import stage_spec
from ios_ray.space.synthetic import random_graph

OVERHEAD = 0.3


def _unit(*parts) -> float:
    """A reproducible number in [0, 1) from anything with a stable repr."""
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2 ** 64


def op_cost(seed, op) -> float:
    """One operator alone: OVERHEAD plus its own time, from what the op is (not where it reads from), so a
    node costs the same alone as inside any group. A conv's time grows with channels x kernel area, and a
    merged conv (more channels, the largest kernel) is never faster than a member (x 0.9)."""
    attrs = dict(op.attrs)
    if op.type == "conv":
        kh, kw = attrs["kernel"]
        own = 0.5 + 0.02 * attrs["out_channels"] * kh * kw * (1 + 0.2 * _unit(seed, op.type, op.attrs))
    else:
        own = 0.5 + 4 * _unit(seed, op.type, op.attrs, op.output_shape)
    return OVERHEAD + own * (1 + 0.1 * _unit(seed, "noise", op.type, op.attrs, op.output_shape))


def bounded_costs(seed, specs):
    """Costs for which OpSumBound (any overhead <= the smallest one-op cost) holds: a stage of several ops
    costs its slowest group's ops back to back (one OVERHEAD) plus a random extra >= 0."""
    out = {}
    for key, spec in specs.items():
        if spec.num_ops == 1:
            out[key] = op_cost(seed, spec.groups[0][0])
            continue
        slowest = max(OVERHEAD + sum(op_cost(seed, op) - OVERHEAD for op in g) for g in spec.groups)
        out[key] = slowest + 2.0 * _unit(seed, "extra", key)
    return out


class Counting:
    """A ``measure`` callback over fixed costs that records what it was asked."""

    def __init__(self, costs):
        self.costs = costs
        self.calls = []

    def __call__(self, keys):
        assert len(set(keys)) == len(keys), "a batch repeats a key"
        self.calls.append(list(keys))
        return {k: self.costs[k] for k in keys}

    @property
    def asked(self):
        return [k for batch in self.calls for k in batch]


def schedule_cost(graph, solution, costs):
    """The true cost of a solution's stages, from the keys of their specs."""
    nodes = graph.node_by_name()
    return sum(costs[stage_spec([[nodes[n] for n in g] for g in st.groups], st.strategy).key]
               for stages in solution.block_stages for st in stages)


@pytest.mark.parametrize("seed", range(24))
def test_lazy_equals_exhaustive_when_bounds_hold(seed):
    graph = random_graph(300 + seed, 5 + seed % 6, num_blocks=1 + seed % 2, enter_conv=0.9 if seed % 3 else 0.5)
    r, s = 1 + seed % 3, 1 + (seed // 3) % 3
    opts = SpaceOptions(list(OptType)[seed % 3], max_group_size=r, max_num_groups=s, max_part_size=4 + seed % 5)
    space = enumerate_graph(graph, opts)
    costs = bounded_costs(seed, space.specs)
    exhaustive = solve(space, costs)
    for options in (LazyOptions(), LazyOptions(OpSumBound(overhead=OVERHEAD, merge_factor=0.9), paths_per_part=3),
                    LazyOptions(fill=300)):
        measure = Counting(costs)
        result = lazy_solve(space, measure, options=options)
        assert result.solution.total_latency == pytest.approx(exhaustive.total_latency, abs=1e-9)
        assert result.solution.block_latency == pytest.approx(exhaustive.block_latency, abs=1e-9)
        assert result.solution.block_stages == exhaustive.block_stages   # continuous costs: no ties
        assert schedule_cost(graph, result.solution, costs) == pytest.approx(exhaustive.total_latency)
        rep = result.report
        assert rep.violations == 0 and rep.given == 0
        assert rep.measured == len(measure.asked) == len(set(measure.asked)) == len(result.costs)
        assert rep.batch_sizes == tuple(len(b) for b in measure.calls) and rep.rounds == len(measure.calls) - 1
        assert rep.known == rep.measured <= rep.unique_stages == len(space.specs)


def test_lazy_measures_a_fraction_of_real_networks_with_the_same_schedule():
    model = AnalyticCostModel("H200")
    for name, most in (("squeezenet", 0.8), ("inception_v3", 0.2)):
        space = enumerate_graph(get_model(name), SpaceOptions())
        costs = {m.key: m.cost for m in model.measure(list(space.specs.values()), 1)}
        exhaustive = solve(space, costs)
        measure = Counting(costs)
        result = lazy_solve(space, measure)
        rep = result.report
        assert result.solution.total_latency == pytest.approx(exhaustive.total_latency, rel=1e-12)
        assert rep.violations == 0, "the analytic model keeps the default bounds"
        assert rep.measured < most * rep.unique_stages, f"{name}: {rep.measured} of {rep.unique_stages}"
        assert rep.fraction == pytest.approx(rep.measured / rep.unique_stages)
        assert rep.rounds >= 1 and len(rep.batch_sizes) == rep.rounds + 1
        # the first batch is every operator alone
        singles = {space.specs[k].num_ops for k in measure.calls[0]}
        assert singles == {1}


def test_known_costs_are_used_and_not_measured_again():
    space = enumerate_graph(get_model("squeezenet"), SpaceOptions())
    costs = bounded_costs(1, space.specs)
    cold = Counting(costs)
    first = lazy_solve(space, cold)
    warm = Counting(costs)
    again = lazy_solve(space, warm, known=first.costs)
    assert warm.calls == [] and again.report.measured == 0 and again.report.given == len(first.costs)
    assert again.report.batch_sizes == (0,) and again.report.rounds == 0
    assert again.solution == first.solution
    everything = lazy_solve(space, Counting({}), known=dict(costs, unrelated=1.0))
    assert everything.solution.block_stages == solve(space, costs).block_stages


def test_violated_bounds_still_end_with_a_valid_schedule_of_measured_stages():
    graph = random_graph(7, 9, enter_conv=0.9)
    space = enumerate_graph(graph, SpaceOptions(max_group_size=2, max_num_groups=3))
    # every stage of several ops costs less than its slowest op alone: the bounds are wrong everywhere
    costs = {k: (10.0 if s.num_ops == 1 else 1.0 + _unit("v", k)) for k, s in space.specs.items()}
    measure = Counting(costs)
    result = lazy_solve(space, measure, options=LazyOptions(OpSumBound(overhead=0.0)))
    assert result.report.violations > 0
    stages = [st for b in result.solution.block_stages for st in b]
    nodes = graph.node_by_name()
    keys = [stage_spec([[nodes[n] for n in g] for g in st.groups], st.strategy).key for st in stages]
    assert set(keys) <= set(measure.asked)            # the schedule uses measured stages only
    assert result.solution.total_latency == pytest.approx(sum(costs[k] for k in keys))
    construct(graph, [list(b) for b in result.solution.block_stages])   # a valid schedule (checked there)


def test_failed_one_op_stages_bound_nothing_and_infeasible_parts_are_reported():
    space = enumerate_graph(get_model("sample"), SpaceOptions())
    costs = bounded_costs(2, space.specs)
    conv1 = next(k for k, s in space.specs.items() if s.num_ops == 1 and dict(s.groups[0][0].attrs).get("kernel"))
    failing = dict(costs, **{conv1: math.inf})
    result = lazy_solve(space, Counting(failing))
    assert result.solution.total_latency == pytest.approx(solve(space, failing).total_latency)
    with pytest.raises(NoFeasibleScheduleError):
        lazy_solve(space, Counting({k: math.inf for k in space.specs}))


def test_op_sum_bound_is_the_slowest_group_back_to_back_and_the_slowest_merged_member():
    space = enumerate_graph(get_model("sample"), SpaceOptions())
    (part,), = space.blocks
    ops = PartOps.of(part)
    cost = np.arange(1.0, part.num_states and len(part.names) + 1)     # node i alone costs i + 1
    for overhead in (0.0, 0.5):
        bound = OpSumBound(overhead=overhead, merge_factor=0.8)(ops, cost, 1.0)
        for t, (groups, strategy) in enumerate(zip(part.stage_groups, part.stage_strategies)):
            members = [[i for i in range(len(part.names)) if g >> i & 1] for g in groups]
            if strategy is Strategy.MERGE:
                expected = 0.8 * max(cost[i] for m in members for i in m)
            else:
                expected = max(overhead + sum(cost[i] - overhead for i in m) for m in members)
            assert bound[t] == pytest.approx(expected)
        assert all(bound[ops.single[i]] == pytest.approx(cost[i]) for i in range(len(part.names)))
    # the default overhead is the smallest one-op cost given
    assert np.array_equal(OpSumBound()(ops, cost, 1.0), OpSumBound(overhead=1.0)(ops, cost, 1.0))


def test_serial_bound_is_every_operator_of_the_stage_back_to_back():
    space = enumerate_graph(get_model("sample"), SpaceOptions())
    (part,), = space.blocks
    ops = PartOps.of(part)
    cost = np.arange(1.0, len(part.names) + 1)
    bound = OpSumBound(overhead=0.5, merge_factor=0.8, serial_groups=True)(ops, cost, 1.0)
    concurrent = OpSumBound(overhead=0.5, merge_factor=0.8)(ops, cost, 1.0)
    for t, (groups, strategy) in enumerate(zip(part.stage_groups, part.stage_strategies)):
        members = [i for g in groups for i in range(len(part.names)) if g >> i & 1]
        if strategy is Strategy.MERGE:
            assert bound[t] == pytest.approx(concurrent[t])       # a merged conv is one kernel either way
        else:
            assert bound[t] == pytest.approx(0.5 + sum(cost[i] - 0.5 for i in members))
            assert bound[t] >= concurrent[t] - 1e-12


def serial_costs(seed, specs):
    """Costs of a device running a stage's groups one after another: every op back to back (one
    OVERHEAD) plus a random extra >= 0, so the serial bound holds."""
    out = {}
    for key, spec in specs.items():
        ops = [op for g in spec.groups for op in g]
        if len(ops) == 1:
            out[key] = op_cost(seed, ops[0])
            continue
        out[key] = OVERHEAD + sum(op_cost(seed, op) - OVERHEAD for op in ops) + 0.05 * _unit(seed, "extra", key)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_serial_bound_finds_the_optimum_of_serial_costs_measuring_less(seed):
    graph = random_graph(700 + seed, 8 + seed % 3, num_blocks=1, enter_conv=0.8)
    space = enumerate_graph(graph, SpaceOptions(OptType.PARALLEL, max_group_size=2, max_num_groups=3))
    costs = serial_costs(seed, space.specs)
    exhaustive = solve(space, costs)
    serial, concurrent = Counting(costs), Counting(costs)
    got = lazy_solve(space, serial, options=LazyOptions(OpSumBound(overhead=OVERHEAD, serial_groups=True)))
    lazy_solve(space, concurrent, options=LazyOptions(OpSumBound(overhead=OVERHEAD)))
    assert got.solution.total_latency == pytest.approx(exhaustive.total_latency, abs=1e-9)
    assert got.report.violations == 0
    assert len(serial.asked) < len(concurrent.asked)
    assert len(serial.asked) < len(space.specs)


def test_k_best_paths_are_the_cheapest_schedules():
    graph = random_graph(11, 7, enter_conv=0.9)
    opts = SpaceOptions(max_group_size=2, max_num_groups=2)
    space = enumerate_graph(graph, opts)
    (part,), = space.blocks
    costs = bounded_costs(3, space.specs)
    sc = np.array([costs[k] for k in part.stage_keys])
    nodes = graph_parts(graph, opts)[0][0].nodes
    totals = sorted(sum(costs[stage_spec([[nodes[i] for i in g] for g in groups], st).key]
                        for groups, st in schedule) for schedule in all_schedules(nodes, opts))
    paths = k_best_paths(part, sc, 6)
    assert [c for c, _ in paths] == pytest.approx(totals[:6])
    for c, ids in paths:
        assert sum(sc[ids]) == pytest.approx(c)
    assert len({tuple(ids) for _, ids in paths}) == 6


def test_filled_rounds_are_fewer_and_fuller_with_the_same_schedule():
    model = AnalyticCostModel("H200")
    space = enumerate_graph(get_model("inception_v3"), SpaceOptions())
    costs = {m.key: m.cost for m in model.measure(list(space.specs.values()), 1)}
    plain, filled = (lazy_solve(space, Counting(costs), options=LazyOptions(fill=f)) for f in (0, 4))
    assert filled.solution.total_latency == pytest.approx(plain.solution.total_latency, rel=1e-12)
    assert filled.solution.block_stages == plain.solution.block_stages
    assert filled.report.rounds < plain.report.rounds / 2, (filled.report.rounds, plain.report.rounds)
    assert max(filled.report.batch_sizes[1:]) > max(plain.report.batch_sizes[1:])
    assert filled.report.violations == plain.report.violations == 0


def test_bad_arguments_and_broken_callbacks_are_clear_errors():
    space = enumerate_graph(get_model("sample"), SpaceOptions())
    costs = bounded_costs(4, space.specs)
    with pytest.raises(ValueError, match="no cost for 1 of"):
        lazy_solve(space, lambda keys: {k: costs[k] for k in keys[1:]})
    with pytest.raises(ValueError, match="not a non-negative number"):
        lazy_solve(space, lambda keys: {k: math.nan for k in keys})
    with pytest.raises(ValueError, match="must return"):
        lazy_solve(space, Counting(costs), options=LazyOptions(bound=lambda ops, c, m: np.zeros(1)))
    with pytest.raises(ValueError, match="merge_factor"):
        OpSumBound(merge_factor=1.5)
    with pytest.raises(ValueError, match="overhead"):
        OpSumBound(overhead=-1.0)
    with pytest.raises(ValueError, match="paths_per_part"):
        LazyOptions(paths_per_part=0)
    with pytest.raises(ValueError, match="fill"):
        LazyOptions(fill=-1)


def test_a_learned_stream_term_measures_less_when_streams_cost_something():
    """Costs with a fixed cost per extra group (a stream's fork and join, which the operator-sum bound
    does not know): the learned stream term measures far fewer stages and still finds the optimum."""
    space = enumerate_graph(get_model("inception_v3"), SpaceOptions())
    specs = list(space.specs.values())
    est = AnalyticCostModel("H200").measure(specs, 1)
    costs = {m.key: m.latency_ms + 0.005 + 0.02 * (len(s.groups) - 1) for m, s in zip(est, specs)}
    optimum = solve(space, costs).total_latency
    plain = lazy_solve(space, lambda keys: {k: costs[k] for k in keys})
    learned = lazy_solve(space, lambda keys: {k: costs[k] for k in keys}, options=LazyOptions(stream_factor=0.5))
    assert plain.solution.total_latency == pytest.approx(optimum)
    assert learned.solution.total_latency == pytest.approx(optimum)
    assert learned.report.measured < 0.7 * plain.report.measured
    with pytest.raises(ValueError, match="stream_factor"):
        LazyOptions(stream_factor=1.5)


def test_optimize_makes_the_default_bound_serial_on_the_cpu_only():
    from ios_ray.costs.measurement import DeviceInfo
    from ios_ray.optimizer import GPU_FILL, _lazy_options
    cpu, gpu = DeviceInfo(name="cpu:numpy", kind="cpu"), DeviceInfo(name="NVIDIA H200", kind="gpu")
    assert _lazy_options(LazyOptions(), cpu).bound == OpSumBound(serial_groups=True)
    assert _lazy_options(LazyOptions(paths_per_part=2), cpu).paths_per_part == 2
    assert _lazy_options(LazyOptions(), gpu).bound == OpSumBound()
    mine = LazyOptions(OpSumBound(overhead=0.1), fill=0)
    assert _lazy_options(mine, cpu) is mine        # a bound and a fill the caller chose are kept
    assert _lazy_options(LazyOptions(fill=5), gpu).fill == 5
    with pytest.raises(ValueError, match="fill"):
        LazyOptions(fill=math.inf)
    # rounds are filled on a GPU only (a round costs many GPU stages, not many CPU ones)
    assert _lazy_options(LazyOptions(), gpu).fill == GPU_FILL > 0
    assert _lazy_options(LazyOptions(), cpu).fill == 0
    analytic = DeviceInfo(name="analytic:H200", kind="analytic")
    assert _lazy_options(LazyOptions(), analytic).fill == 0


def test_alike_parts_are_solved_once_and_each_gets_its_own_optimal_schedule():
    from ios_ray.dp.lazy import _LazyRun
    from ios_ray.dp.solve import solve_part
    model = AnalyticCostModel("H200")
    space = enumerate_graph(get_model("inception_v3"), SpaceOptions())
    costs = {m.key: m.cost for m in model.measure(list(space.specs.values()), 1)}
    run = _LazyRun(space, Counting(costs), {}, LazyOptions())
    assert len(run.distinct) < len(run.parts)            # Inception-v3 repeats a block's shapes
    twins = [(i, j) for i, j in enumerate(run.same_as) if i != j]
    assert twins and all(list(run.key_index[i]) == list(run.key_index[j]) for i, j in twins)
    result = run.run()
    parts = [p for block in space.blocks for p in block]
    stages = [s for block in result.solution.block_stages for s in block]
    assert len(stages) == sum(len(ids) for ids in run.paths)
    for part, ids, total in zip(parts, run.paths, run.totals):
        best, _ = solve_part(part, [costs[k] for k in part.stage_keys])
        assert total == pytest.approx(best, rel=1e-12)
        assert sum(costs[part.stage_keys[t]] for t in ids) == pytest.approx(best, rel=1e-12)


@pytest.mark.parametrize("seed", range(8))
def test_a_tolerance_returns_a_schedule_proved_within_it_measuring_no_more(seed):
    graph = random_graph(900 + seed, 7 + seed % 4, num_blocks=1 + seed % 2, enter_conv=0.8)
    space = enumerate_graph(graph, SpaceOptions(OptType.PARALLEL_MERGE, max_group_size=2, max_num_groups=3))
    costs = bounded_costs(seed, space.specs)
    optimum = solve(space, costs).total_latency
    exact = Counting(costs)
    lazy_solve(space, exact)
    for tolerance in (0.05, 0.3):
        loose = Counting(costs)
        got = lazy_solve(space, loose, options=LazyOptions(tolerance=tolerance))
        assert optimum <= got.solution.total_latency <= (1 + tolerance) * optimum + 1e-9
        # the returned latency is what its measured stages cost
        assert schedule_cost(graph, got.solution, costs) == pytest.approx(got.solution.total_latency)
        assert len(loose.asked) <= len(exact.asked)
    with pytest.raises(ValueError, match="tolerance"):
        LazyOptions(tolerance=-0.01)


@pytest.mark.parametrize("seed", range(6))
def test_part_best_solved_again_from_the_smallest_changed_size_equals_a_full_solve(seed):
    from ios_ray.dp.solve import part_best, part_stage_sizes
    graph = random_graph(40 + seed, 8 + seed % 3, enter_conv=0.8)
    space = enumerate_graph(graph, SpaceOptions(OptType.PARALLEL_MERGE, max_group_size=2, max_num_groups=3))
    rng = np.random.default_rng(seed)
    for part in (p for block in space.blocks for p in block):
        sc = rng.uniform(0.1, 2.0, part.num_stages)
        best = part_best(part, sc).copy()
        sizes = part_stage_sizes(part)
        for _ in range(4):
            changed = rng.random(part.num_stages) < 0.1
            sc = np.where(changed, sc + rng.uniform(0.0, 1.0, part.num_stages), sc)
            if not changed.any():
                continue
            again = part_best(part, sc, best.copy(), int(sizes[changed].min()))
            full = part_best(part, sc)
            np.testing.assert_array_equal(again, full)
            best = full


class Streaming(Counting):
    """A ``StreamingMeasure`` over fixed costs: records each ``submit`` and each round it ``collect``s."""

    def __init__(self, costs):
        super().__init__(costs)
        self.submits, self.pending = [], []

    def submit(self, keys):
        assert keys and not set(keys) & set(self.pending), "a key submitted twice in one round"
        self.submits.append(list(keys))
        self.pending.extend(keys)

    def collect(self):
        keys, self.pending = self.pending, []
        return self(keys)


@pytest.mark.parametrize("seed", range(6))
def test_a_streaming_measure_gets_each_parts_keys_as_it_is_solved_and_the_same_rounds(seed):
    """Streamed, the rounds ask for the same keys in the same order and end in the same schedule; the
    keys of a round come in several submits (one per part that has unknown stages on its path)."""
    graph = random_graph(700 + seed, 7 + seed % 4, num_blocks=2)
    space = enumerate_graph(graph, SpaceOptions(max_part_size=3 + seed % 3))
    costs = bounded_costs(seed, space.specs)
    plain, streamed = Counting(costs), Streaming(costs)
    a = lazy_solve(space, plain)
    b = lazy_solve(space, streamed)
    assert b.solution == a.solution and b.report == a.report
    assert streamed.calls == plain.calls and not streamed.pending
    assert len(streamed.submits) > len(streamed.calls)   # rounds with several parts came in pieces

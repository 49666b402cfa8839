"""The DP against brute force over every valid schedule, on random graphs and random costs (CPU only)."""
import hashlib
import math

import numpy as np
import pytest

from ios_ray.dp import MissingCostError, NoFeasibleScheduleError, solve
from ios_ray.dp.solve import PartReverse, part_best, part_path, part_runner_up, part_through, runner_up
from ios_ray.graph.schedule import Stage, Strategy, check_schedule
from ios_ray.space.enumerate import enumerate_graph
from ios_ray.space.options import OptType, SpaceOptions
from ios_ray.space.parts import graph_parts
from ios_ray.space.reference import all_schedules
from ios_ray.space.stage import stage_spec
from ios_ray.space.synthetic import random_graph
from ios_ray.models.sample import sample_network


def random_cost(seed: int):
    """A reproducible random latency in [1, 10) per key (defined for any key, seen or not)."""
    def cost(key: str) -> float:
        h = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
        return 1.0 + 9.0 * int.from_bytes(h, "big") / 2 ** 64
    return cost


def brute_force(nodes, opts, cost):
    """(least cost, set of optimal schedules as name tuples, number of schedules) over all schedules."""
    best, argbest, count = math.inf, set(), 0
    key_of = {}
    for schedule in all_schedules(nodes, opts):
        count += 1
        total = 0.0
        for stage in schedule:
            if stage not in key_of:
                groups, strategy = stage
                key_of[stage] = stage_spec([[nodes[i] for i in g] for g in groups], strategy).key
            total += cost(key_of[stage])
        named = tuple(Stage(tuple(tuple(nodes[i].name for i in g) for g in groups), strategy)
                      for groups, strategy in schedule)
        if total < best - 1e-9:
            best, argbest = total, {named}
        elif abs(total - best) <= 1e-9:
            argbest.add(named)
    return best, argbest, count


def option_grid(n: int):
    yield from (SpaceOptions(t, max_group_size=n, max_num_groups=n) for t in OptType)
    for r in (1, 2, 3):
        for s in (1, 2, 3):
            yield SpaceOptions(OptType.PARALLEL_MERGE, max_group_size=r, max_num_groups=s)


def count_paths(part):
    """Number of schedules the DP graph of a part holds (paths from the full state to the empty one)."""
    paths = [0] * part.num_states
    paths[0] = 1
    for i in range(1, part.num_states):
        paths[i] = sum(paths[j] for j, _ in part.transitions(i))
    return paths[-1]


@pytest.mark.parametrize("seed", range(16))
def test_dp_matches_brute_force(seed):
    n = 3 + seed % 6  # 3..8 operators
    graph = random_graph(200 + seed, n, enter_conv=0.5 if seed % 2 else 0.9)
    nodes = graph_parts(graph, SpaceOptions())[0][0].nodes
    cost = random_cost(seed)
    for opts in option_grid(n):
        space = enumerate_graph(graph, opts)
        solution = solve(space, {k: cost(k) for k in space.specs})
        best, argbest, count = brute_force(nodes, opts, cost)
        assert solution.total_latency == pytest.approx(best, abs=1e-9), opts
        assert solution.block_latency == (solution.total_latency,)
        # the DP's schedule is a valid one, optimal, and its stage costs sum to the reported cost
        (stages,) = solution.block_stages
        assert stages in argbest, opts
        keys = [stage_spec([[graph.node_by_name()[name] for name in g] for g in st.groups], st.strategy).key
                for st in stages]
        assert sum(cost(k) for k in keys) == pytest.approx(solution.total_latency, abs=1e-9)
        # the DP graph holds exactly the schedules brute force enumerates
        assert count_paths(space.blocks[0][0]) == count


def test_dp_over_parts_and_blocks_sums_part_optima():
    graph = random_graph(5, 8, num_blocks=2)
    opts = SpaceOptions(max_part_size=3, max_group_size=2, max_num_groups=2)
    cost = random_cost(1)
    space = enumerate_graph(graph, opts)
    solution = solve(space, {k: cost(k) for k in space.specs})
    expected = []
    for parts in graph_parts(graph, opts):
        assert len(parts) == 3
        expected.append(sum(brute_force(p.nodes, opts, cost)[0] for p in parts))
    assert solution.block_latency == pytest.approx(expected)
    assert solution.total_latency == pytest.approx(sum(expected))
    for block, stages in zip(graph.blocks, solution.block_stages):
        block.stages = list(stages)
    check_schedule(graph)  # PARALLEL-only schedules are directly runnable and cover every node once


def test_dp_merge_finds_the_merge_on_the_sample_network_when_merging_is_cheap():
    graph = sample_network()
    space = enumerate_graph(graph, SpaceOptions("dp_merge"))
    # every stage costs 1, merged or not: the fewest stages win, i.e. merging the three input convs
    solution = solve(space, {k: 1.0 for k in space.specs})
    assert solution.total_latency == 3.0
    assert solution.block_stages[0] == (Stage((("conv1",), ("conv2",), ("conv3",)), Strategy.MERGE),
                                        Stage((("conv4",),)), Stage((("concat",),)))
    parallel_space = enumerate_graph(graph, SpaceOptions("dp_parallel"))
    parallel = solve(parallel_space, {k: 1.0 for k in parallel_space.specs})
    assert all(st.strategy is Strategy.PARALLEL for st in parallel.block_stages[0])


def test_missing_costs_are_a_named_key_error():
    space = enumerate_graph(sample_network(), SpaceOptions())
    keys = sorted(space.specs)
    with pytest.raises(MissingCostError, match=f"2 of {len(keys)} stage keys have no cost") as info:
        solve(space, {k: 1.0 for k in keys[2:]})
    assert isinstance(info.value, KeyError) and sorted(info.value.missing) == keys[:2]


def test_infinite_costs_forbid_stages_and_no_finite_schedule_is_an_error():
    space = enumerate_graph(sample_network(), SpaceOptions("dp_parallel"))
    # forbid every multi-op stage: the DP must fall back to one op per stage
    cost = {k: (1.0 if spec.num_ops == 1 else math.inf) for k, spec in space.specs.items()}
    solution = solve(space, cost)
    assert solution.total_latency == 5.0
    assert all(len(st.node_names()) == 1 for st in solution.block_stages[0])
    with pytest.raises(NoFeasibleScheduleError, match="no schedule of finite cost"):
        solve(space, {k: math.inf for k in space.specs})
    with pytest.raises(ValueError, match="not a non-negative number"):
        solve(space, {k: math.nan for k in space.specs})


def _all_paths(part, state=None):
    """Every schedule of a part as stage ids, first stage first (brute force, small parts only)."""
    state = part.num_states - 1 if state is None else state
    if state == 0:
        yield []
        return
    for nxt, t in part.transitions(state):     # t runs last of states[state]'s operators
        for rest in _all_paths(part, nxt):
            yield rest + [t]


@pytest.mark.parametrize("seed", range(6))
def test_part_through_is_the_cheapest_schedule_through_each_stage(seed):
    graph = random_graph(40 + seed, 6 + seed % 3, enter_conv=0.8)
    space = enumerate_graph(graph, SpaceOptions(max_group_size=2, max_num_groups=3))
    rng = np.random.default_rng(seed)
    for part in (p for block in space.blocks for p in block):
        sc = rng.uniform(0.1, 1.0, part.num_stages)
        if part.num_stages > 2:
            sc[rng.integers(part.num_stages)] = np.inf     # a forbidden stage: no finite schedule through it
        brute = np.full(part.num_stages, np.inf)
        for path in _all_paths(part):
            total = sum(sc[t] for t in path)
            for t in path:
                brute[t] = min(brute[t], total)
        best = part_best(part, sc)
        through = part_through(part, sc, best, PartReverse.of(part))
        assert through == pytest.approx(brute)
        assert through.min() == pytest.approx(best[-1])


@pytest.mark.parametrize("seed", range(8))
def test_part_runner_up_is_the_cheapest_schedule_running_a_stage_off_the_optimal_path(seed):
    graph = random_graph(60 + seed, 6 + seed % 3, enter_conv=0.8)
    space = enumerate_graph(graph, SpaceOptions(max_group_size=1 + seed % 3, max_num_groups=2 + seed % 2))
    rng = np.random.default_rng(seed)
    checked = 0
    for part in (p for block in space.blocks for p in block):
        sc = rng.uniform(0.1, 1.0, part.num_stages)
        best = part_best(part, sc)
        optimal = set(part_path(part, sc, best))
        schedules = list(_all_paths(part))
        others = [sum(sc[t] for t in path) for path in schedules if not set(path) <= optimal]
        got = part_runner_up(part, sc, best, PartReverse.of(part))
        if not others:
            assert got is None
            continue
        cost, path = got
        assert cost == pytest.approx(min(others))
        assert path in schedules and sum(sc[t] for t in path) == pytest.approx(cost)   # a real schedule, in order
        assert not set(path) <= optimal
        checked += 1
        # by kind (say, two stage ids per kind): a schedule running a kind the optimum does not
        kinds = np.arange(part.num_stages) // 2
        sc_kind = sc[kinds * 2]                       # alike stages cost alike
        best_kind = part_best(part, sc_kind)
        optimal_kinds = set(kinds[part_path(part, sc_kind, best_kind)])
        others = [sum(sc_kind[t] for t in p) for p in schedules if not set(kinds[p]) <= optimal_kinds]
        got = part_runner_up(part, sc_kind, best_kind, PartReverse.of(part), kinds)
        if others:
            assert got[0] == pytest.approx(min(others)) and not set(kinds[got[1]]) <= optimal_kinds
        else:
            assert got is None
    assert checked >= 1


def test_runner_up_swaps_in_the_part_whose_runner_up_costs_least_extra():
    graph = random_graph(7, 9, num_blocks=2, enter_conv=0.8)
    space = enumerate_graph(graph, SpaceOptions(OptType.PARALLEL, max_group_size=2, max_num_groups=2,
                                                max_part_size=5))
    parts = [p for block in space.blocks for p in block]
    assert len(parts) >= 2
    cost = {k: 0.1 + 0.9 * ((int(hashlib.blake2b(k.encode(), digest_size=4).hexdigest(), 16) % 997) / 997)
            for k in space.specs}
    best = solve(space, cost)
    second = runner_up(space, cost)
    extras = []
    for part in parts:
        sc = np.array([cost[k] for k in part.stage_keys])
        b = part_best(part, sc)
        kinds = np.unique(np.array(part.stage_keys), return_inverse=True)[1]   # alike stages: one kind
        got = part_runner_up(part, sc, b, PartReverse.of(part), kinds)
        if got is not None:
            extras.append(got[0] - b[-1])
    assert second.total_latency == pytest.approx(best.total_latency + min(extras))
    assert second.block_stages != best.block_stages
    assert sum(a != b for x, y in zip(second.block_stages, best.block_stages) for a, b in zip(x, y)) >= 1
    for block, stages in zip(graph.blocks, second.block_stages):
        block.stages = list(stages)
    check_schedule(graph)   # a runnable schedule covering every node once
    # one operator per stage: every schedule runs the same stages (in some order), so there is no other
    singles = enumerate_graph(graph, SpaceOptions(OptType.PARALLEL, max_group_size=1, max_num_groups=1))
    assert runner_up(singles, {k: 1.0 for k in singles.specs}) is None
    # stages without a cost are forbidden: with only the one-op stages costed, the same holds
    one_op = {k: cost[k] for k, spec in space.specs.items() if spec.num_ops == 1}
    assert runner_up(space, one_op) is None

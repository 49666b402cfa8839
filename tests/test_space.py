"""State space: states are the ideals, transitions are exactly the valid stages, keys dedupe (CPU only)."""
import pickle
import random
from itertools import combinations

import pytest

from ios_ray.graph import builder as B
from ios_ray.graph.ir import Block, Graph, topo_order
from ios_ray.graph.schedule import Strategy
from ios_ray.space.enumerate import (assemble_part, enumerate_graph, enumerate_part, enumerate_transitions)
from ios_ray.space.options import OptType, SpaceOptions
from ios_ray.space.parts import graph_parts, part_states, part_width
from ios_ray.space.reference import is_ideal, valid_stages
from ios_ray.space.stage import stage_spec
from ios_ray.space.synthetic import random_graph
from ios_ray.models.sample import sample_network


def option_grid(n: int):
    """Unpruned (r = s = n) for every opt type, and pruned r, s in 1..3."""
    yield from (SpaceOptions(t, max_group_size=n, max_num_groups=n) for t in OptType)
    for r in (1, 2, 3):
        for s in (1, 2, 3):
            yield SpaceOptions(OptType.PARALLEL_MERGE, max_group_size=r, max_num_groups=s)


def bits(mask: int):
    return frozenset(i for i in range(mask.bit_length()) if mask >> i & 1)


def transition_sets(space):
    """Per state mask, the set of (next mask, groups as index tuples, strategy, key)."""
    out = {}
    for i, state in enumerate(space.states):
        entries = set()
        for j, sid in space.transitions(i):
            groups = tuple(tuple(sorted(bits(g))) for g in space.stage_groups[sid])
            entries.add((space.states[j], groups, space.stage_strategies[sid], space.stage_keys[sid]))
        out[state] = entries
    return out


def test_options_validate_and_convert():
    assert SpaceOptions("dp_merge").opt_type is OptType.MERGE
    assert SpaceOptions().opt_type is OptType.PARALLEL_MERGE
    assert (SpaceOptions().max_group_size, SpaceOptions().max_num_groups, SpaceOptions().max_part_size) == (3, 8, 50)
    with pytest.raises(ValueError, match="opt_type must be one of"):
        SpaceOptions("dp_greedy")
    with pytest.raises(ValueError, match="max_num_groups must be a positive int"):
        SpaceOptions(max_num_groups=0)
    with pytest.raises(ValueError, match="max_part_size"):
        SpaceOptions(max_part_size=2.5)


@pytest.mark.parametrize("seed", range(12))
def test_states_are_exactly_the_ideals(seed):
    n = 3 + seed % 8
    graph = random_graph(seed, n)
    (part,), = graph_parts(graph, SpaceOptions())
    states = part_states(part)
    ideals = [sum(1 << i for i in c) for k in range(n + 1) for c in combinations(range(n), k)
              if is_ideal(part.nodes, frozenset(c))]
    assert len(states) == len(set(states)) == len(ideals)
    assert set(states) == set(ideals)
    assert states[0] == 0 and states[-1] == part.full
    assert [s.bit_count() for s in states] == sorted(s.bit_count() for s in states)


@pytest.mark.parametrize("seed", range(10))
def test_transitions_are_exactly_the_valid_stages(seed):
    n = 4 + seed % 5
    graph = random_graph(100 + seed, n)
    (part,), = graph_parts(graph, SpaceOptions())
    nodes = part.nodes
    for opts in option_grid(n):
        space = enumerate_part(part, opts)
        got = transition_sets(space)
        assert set(got) == set(space.states)
        for state, entries in got.items():
            rem = bits(state)
            want = set()
            for groups, strategy in valid_stages(nodes, rem, opts):
                used = sum(1 << i for g in groups for i in g)
                key = stage_spec([[nodes[i] for i in g] for g in groups], strategy).key
                want.add((state ^ used, groups, strategy, key))
                # every reachable state is ancestor-closed
                assert is_ideal(nodes, bits(state ^ used))
            assert entries == want, (opts, state)


def test_merge_stages_need_two_sink_convs_on_one_value():
    graph = sample_network()
    (part,), = graph_parts(graph, SpaceOptions())
    space = enumerate_part(part, SpaceOptions("dp_merge"))
    merges = {space.stage(i).groups for i in range(space.num_stages) if space.stage_strategies[i] is Strategy.MERGE}
    # conv1, conv2, conv3 read the input; conv4 reads conv1, so conv1 is never a sink with conv4 pending
    assert merges == {(("conv1",), ("conv2",)), (("conv1",), ("conv3",)), (("conv2",), ("conv3",)),
                      (("conv1",), ("conv2",), ("conv3",))}
    # dp_merge: every PARALLEL stage is a single operator
    assert all(len(space.stage(i).groups) == 1 and len(space.stage(i).groups[0]) == 1
               for i in range(space.num_stages) if space.stage_strategies[i] is Strategy.PARALLEL)


def test_sample_network_three_input_convs_key_is_order_independent():
    graph = sample_network()
    by_name = graph.node_by_name()
    c1, c2, c3 = by_name["conv1"], by_name["conv2"], by_name["conv3"]
    key = stage_spec([[c1], [c2], [c3]]).key
    assert stage_spec([[c3], [c1], [c2]]).key == key
    assert stage_spec([[c2], [c3], [c1]]).key == key
    space = enumerate_graph(graph, SpaceOptions("dp_parallel"))
    (part,), = space.blocks
    found = [part.stage_keys[i] for i in range(part.num_stages)
             if set(part.stage(i).groups) == {("conv1",), ("conv2",), ("conv3",)}]
    assert found == [key]
    assert key in space.specs and space.specs[key].num_ops == 3
    # conv1 and conv3 are the same op on the same input: as single-op stages they share one key
    singles = {part.stage(i).groups[0][0]: part.stage_keys[i] for i in range(part.num_stages)
               if len(part.stage(i).groups) == 1 and len(part.stage(i).groups[0]) == 1}
    assert singles["conv1"] == singles["conv3"] != singles["conv2"]
    assert space.counts.unique_stages < space.counts.stage_identities


def test_identical_branches_in_different_blocks_share_keys():
    x = B.placeholder((8, 6, 6))
    blocks, enter = [], x
    for bi in range(2):
        block = Block(enter.node)
        a = B.conv2d(block, [[enter]], 8, (3, 3), padding=(1, 1), name=f"a{bi}")
        b = B.conv2d(block, [[enter]], 8, (1, 1), name=f"b{bi}")
        c = B.conv2d(block, [[a]], 8, (1, 1), name=f"c{bi}")
        enter = B.add(block, [[c], [b]], is_exit=True, name=f"out{bi}")
        blocks.append(block)
    graph = Graph("twins", x.node, blocks)
    space = enumerate_graph(graph, SpaceOptions())
    keys0, keys1 = (set(part.stage_keys) for (part,) in space.blocks)
    assert keys0 == keys1
    assert space.counts.unique_stages == len(keys0)
    assert space.counts.stage_identities == 2 * space.blocks[0][0].num_stages


def test_blocks_split_into_consecutive_parts_of_topo_order():
    graph = random_graph(7, 9, num_blocks=2)
    opts = SpaceOptions(max_part_size=4)
    parts = graph_parts(graph, opts)
    space = enumerate_graph(graph, opts)
    for block, block_parts, block_spaces in zip(graph.blocks, parts, space.blocks):
        order = [n.name for n in topo_order(block)]
        assert [len(p.nodes) for p in block_parts] == [4, 4, 1]
        assert [n for p in block_parts for n in p.names] == order
        for part, part_space in zip(block_parts, block_spaces):
            assert part_space.names == part.names
            # edges to other parts are ignored: the states are the ideals of the part alone
            ideals = [c for k in range(part.size + 1) for c in combinations(range(part.size), k)
                      if is_ideal(part.nodes, frozenset(c))]
            assert part_space.num_states == len(ideals)


def test_shards_in_any_order_assemble_to_the_whole_part():
    graph = random_graph(3, 9)
    opts = SpaceOptions(max_group_size=2, max_num_groups=3)
    (part,), = graph_parts(graph, opts)
    whole = enumerate_part(part, opts)
    states = part_states(part)
    random.Random(0).shuffle(states)
    shards = [enumerate_transitions(part, states[i::3], opts) for i in range(3)]
    assert sum(len(s.states) for s in shards) == len(states)
    shards = [pickle.loads(pickle.dumps(s)) for s in reversed(shards)]  # as if returned by workers
    merged = assemble_part(part, shards)
    assert merged.states == whole.states
    assert transition_sets(merged) == transition_sets(whole)
    assert set(merged.stage_keys) == {key for s in shards for _, _, key in s.stages}
    with pytest.raises(ValueError, match="miss 1"):
        assemble_part(part, [enumerate_transitions(part, states[0::3], opts),
                             enumerate_transitions(part, states[1::3][1:] + states[2::3], opts)])
    with pytest.raises(ValueError, match="in two shards"):
        assemble_part(part, shards + shards[:1])


@pytest.mark.parametrize("seed", range(4))
def test_spec_table_rebuilds_each_key_from_its_stage(seed):
    graph = random_graph(300 + seed, 9, num_blocks=2, enter_conv=0.8)
    space = enumerate_graph(graph, SpaceOptions(max_part_size=6))
    assert len(space.specs) == space.counts.unique_stages > 0
    for key in space.specs:
        assert space.specs[key].key == key
    all_keys = {k for parts in space.blocks for p in parts for k in p.stage_keys}
    assert all_keys == set(space.specs)
    assert "0" * 32 not in space.specs


def test_parts_of_more_than_62_nodes_use_python_ints():
    # a chain of 70 convs: state k holds the first k convs; the last stage takes 1..r convs off the end
    x = B.placeholder((4, 4, 4))
    block = Block(x.node)
    v = x
    for i in range(70):
        v = B.conv2d(block, [[v]], 4, (1, 1), is_exit=i == 69, name=f"c{i}")
    graph = Graph("chain", x.node, [block])
    space = enumerate_graph(graph, SpaceOptions(max_part_size=100, max_group_size=3))
    (part,), = space.blocks
    assert part.num_states == 71 and part.states[-1] == (1 << 70) - 1
    assert part.num_transitions == 1 + 2 + 3 * 68
    assert all(part.states[i] - part.states[j] == part.states[i] ^ part.states[j] and 1 <= i - j <= 3
               for i in range(71) for j, _ in part.transitions(i))
    assert len(space.specs) == 3  # one, two or three identical convs in a row


@pytest.mark.parametrize("seed", range(6))
def test_part_width_is_the_largest_antichain(seed):
    graph = random_graph(400 + seed, 9)
    (part,), = graph_parts(graph, SpaceOptions())
    n = part.size
    independent = [c for k in range(1, n + 1) for c in combinations(range(n), k)
                   if all(not (part.desc[u] >> v & 1) for u in c for v in c if u != v)]
    assert part_width(part) == max(len(c) for c in independent)

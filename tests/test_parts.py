"""Explicit parts (``Block.parts``, e.g. from ``get_parts``): honoured by the state space (and cut further
at ``max_part_size``), checked with clear errors, respected by the DP's schedules, carried to Ray workers."""
import pytest

import ios_ray as ios
from ios_ray.graph import builder as B
from ios_ray.graph.ir import Block, Graph, topo_order
from ios_ray.graph.schedule import check_schedule
from ios_ray.space.enumerate import enumerate_graph
from ios_ray.space.options import SpaceOptions
from ios_ray.space.parts import graph_parts, part_states
from ios_ray.space.synthetic import random_graph


def two_cells(parts=None):
    """x -> cell 1 (conv a1 || conv b1, summed by c1) -> cell 2 (a2 || b2, c2 exit): 6 operators."""
    x = B.placeholder((4, 6, 6), name="x")
    block = Block(x.node)
    cells = []
    v = x
    for i in (1, 2):
        a = B.conv2d(block, [[v]], 4, kernel=1, name=f"a{i}")
        b = B.conv2d(block, [[v]], 4, kernel=3, padding=1, name=f"b{i}")
        v = B.identity(block, [[a, b]], name=f"c{i}", is_exit=i == 2)
        cells.append([a.node, b.node, v.node])
    block.parts = cells if parts is None else parts(cells)
    return Graph("cells", x.node, [block])


def part_names(graph, opts=SpaceOptions()):
    return [[list(p.names) for p in block] for block in graph_parts(graph, opts)]


def test_parts_are_honoured_in_dependency_order():
    graph = two_cells(lambda cells: [list(reversed(c)) for c in cells])
    assert part_names(graph) == [[["a1", "b1", "c1"], ["a2", "b2", "c2"]]]
    # each cell alone: {}, {a}, {b}, {a, b}, all three -- 5 states; one part of both cells has 9
    assert [len(part_states(p)) for p in graph_parts(graph, SpaceOptions())[0]] == [5, 5]
    graph.blocks[0].parts = None
    assert [len(part_states(p)) for p in graph_parts(graph, SpaceOptions())[0]] == [9]


def test_parts_may_name_their_operators():
    graph = two_cells(lambda cells: [["a1", "b1", "c1", "a2"], ["b2", "c2"]])
    assert part_names(graph) == [[["a1", "b1", "c1", "a2"], ["b2", "c2"]]]


def test_a_part_larger_than_max_part_size_is_cut():
    graph = two_cells(lambda cells: [cells[0] + cells[1]])
    assert part_names(graph, SpaceOptions(max_part_size=4)) == [[["a1", "b1", "c1", "a2"], ["b2", "c2"]]]
    graph = two_cells()
    assert part_names(graph, SpaceOptions(max_part_size=2)) == [[["a1", "b1"], ["c1"], ["a2", "b2"], ["c2"]]]


@pytest.mark.parametrize("parts, match", [
    (lambda c: [c[0], c[1] + ["zz"]], "part 1: 'zz' is not an operator of the block"),
    (lambda c: [c[0], c[1] + [c[0][0]]], "a1.* is in parts 0 and 1"),
    (lambda c: [c[0], c[1][:2]], "leave out 1 operators"),
    (lambda c: [c[0], [], c[1]], "part 1 is empty"),
    (lambda c: [c[1], c[0]], "reads .*c1.* of the later part 1"),
])
def test_bad_parts_are_clear_errors(parts, match):
    with pytest.raises(ValueError, match=match):
        graph_parts(two_cells(parts), SpaceOptions())


@pytest.mark.parametrize("seed", range(3))
def test_optimized_stages_stay_inside_their_part(seed):
    graph = random_graph(seed, 14)
    order = topo_order(graph.blocks[0])
    graph.blocks[0].parts = [order[:3], order[3:8], order[8:]]
    opt = ios.optimize(graph, cost="analytic:H200", max_part_size=4)
    check_schedule(opt)
    part_of = {n.name: i for i, p in enumerate(graph_parts(graph, SpaceOptions(max_part_size=4))[0])
               for n in p.nodes}
    assert max(part_of.values()) == 4  # 3 | 4 + 1 | 4 + 2: parts of 5 and 6 cut at 4
    for stage in opt.blocks[0].stages:
        assert len({part_of[n] for n in stage.node_names()}) == 1


@pytest.mark.ray
@pytest.mark.slow
def test_distributed_enumeration_honours_parts():
    ray = pytest.importorskip("ray")
    from ios_ray.distributed.enumerate import enumerate_graph_distributed
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        graph = two_cells()
        local = enumerate_graph(graph, SpaceOptions())
        dist = enumerate_graph_distributed(graph, SpaceOptions(), num_workers=2)
        assert [[p.names for p in b] for b in dist.blocks] == [[p.names for p in b] for b in local.blocks]
        assert dist.counts == local.counts
    finally:
        if started:
            ray.shutdown()

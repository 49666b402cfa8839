"""The model zoo: exact operator counts (the IOS paper's table), shapes, block chaining, schedules,
the original's RandWire graphs and NASNet parts, state counts, and forward passes through the numpy
reference runtime."""
import hashlib
import json

import numpy as np
import pytest

import ios_ray as ios
from ios_ray.graph import check_schedule
from ios_ray.graph.compound import Sequential
from ios_ray.graph.ir import Conv, Identity, Placeholder, Pool, Relu, SepConv
from ios_ray.models import MODELS, get_model, inception_v3, nasnet_large, randwire_large
from ios_ray.models.randwire import GRAPH_DIR, STAGE_GRAPHS, build_order, read_graph
from ios_ray.runtime import ReferenceExecutor, UnsupportedOpError
from ios_ray.runtime.reference import Window, conv2d as np_conv2d
from ios_ray.space.options import SpaceOptions
from ios_ray.space.parts import graph_parts, part_states

# name -> (operators, input shape, output shape, blocks)
EXPECTED = {
    "inception_v3": (119, (3, 299, 299), (2048, 1, 1), 13),
    "randwire": (120, (3, 224, 224), (1280, 1, 1), 6),
    "nasnet": (374, (3, 331, 331), (3360, 1, 1), 1),
    "squeezenet": (50, (3, 224, 224), (1000, 1, 1), 12),
    "sample": (5, (375, 15, 15), (1875, 15, 15), 1),
}
MAX_PART = 60  # the largest part the DP meets without a max_part_size cut (a block, or an explicit part)
# the original's DP states at r=3, s=8 (its pure-Python DP, facts.md): ours less each part's empty state
ORIGINAL_STATES = {"squeezenet": 78, "inception_v3": 1206, "randwire": 14734, "nasnet": 42966}


def fingerprint(graph: ios.Graph) -> str:
    """Node types, attributes, shapes and input slices of every node, in order (names included)."""
    return hashlib.sha256(json.dumps(graph.export_config(), sort_keys=True).encode()).hexdigest()


def test_registry_has_the_five_networks():
    assert sorted(MODELS) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_model_counts_shapes_and_blocks(name):
    ops, in_shape, out_shape, num_blocks = EXPECTED[name]
    graph = get_model(name)
    assert isinstance(graph, ios.Graph)
    assert graph.num_operators() == ops == sum(len(b.nodes) for b in graph.blocks)
    assert graph.input.output_shape == in_shape
    assert graph.output_shape == out_shape
    assert len(graph.blocks) == num_blocks
    assert max(len(part) for b in graph.blocks for part in (b.parts or [b.nodes])) <= MAX_PART
    assert not graph.has_weights()  # callers initialise weights themselves
    # blocks chain: each enters at the previous exit, and the exit is the last node added
    prev = graph.input
    for block in graph.blocks:
        assert block.enter_node is prev
        assert block.nodes[-1] is block.exit_node
        assert not any(isinstance(n, Placeholder) for n in block.nodes)
        prev = block.exit_node
    # every operator's output is used: by a later node of its block, or it is the exit
    for block in graph.blocks:
        read = {id(v.node) for n in block.nodes for t in n.inputs for v in t}
        unused = [n.display() for n in block.inner_nodes if id(n) not in read]
        assert not unused, f"{name}: dead operators {unused}"
    names = [n.name for n in graph.nodes()]
    assert len(set(names)) == len(names)
    graph.sequential_schedule()
    check_schedule(graph)
    assert [len(b.stages) for b in graph.blocks] == [len(b.nodes) for b in graph.blocks]
    graph.greedy_schedule()
    check_schedule(graph)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builds_are_identical(name):
    assert fingerprint(get_model(name)) == fingerprint(get_model(name))


def test_get_model_returns_fresh_graphs():
    a, b = get_model("sample"), get_model("sample")
    assert a is not b and a.blocks[0].exit_node is not b.blocks[0].exit_node


@pytest.mark.parametrize("bad", ["resnet50", "", "Inception_V3", None])
def test_get_model_rejects_unknown_names(bad):
    with pytest.raises(ValueError) as err:
        get_model(bad)
    for valid in EXPECTED:
        assert valid in str(err.value)


def test_inception_v3_rejects_bad_batch_size():
    assert inception_v3(batch_size=16).num_operators() == 119
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            inception_v3(batch_size=bad)


def test_flops_are_those_of_the_published_networks():
    # multiply-adds count 2 FLOPs: Inception-v3 5.7 GMACs, RandWire C=154 ~7.9-8.0; the original IOS's
    # NASNet-A large has no classifier and concatenates five combinations per normal cell: 22.3 GMACs
    gflops = {name: get_model(name).flops() / 1e9 for name in EXPECTED}
    assert 11.0 < gflops["inception_v3"] < 11.8
    assert 44.0 < gflops["nasnet"] < 45.0
    assert 15.0 < gflops["randwire"] < 17.0


@pytest.mark.parametrize("name", sorted(ORIGINAL_STATES))
def test_state_counts_are_the_originals(name):
    """r=3, s=8, parts of 50: the original counts the non-empty states of each part; ours add the empty one."""
    parts = [p for block in graph_parts(get_model(name), SpaceOptions()) for p in block]
    assert sum(len(part_states(p)) - 1 for p in parts) == ORIGINAL_STATES[name]


# ----- RandWire ---------------------------------------------------------------------------------

def test_randwire_graphs_are_the_originals():
    """The stored WS(n, 4, 0.75) graphs fix the network; a change would silently invalidate stage costs."""
    digest = hashlib.sha256(b"".join((GRAPH_DIR / f).read_bytes() for f in STAGE_GRAPHS)).hexdigest()
    assert digest == "822f1bd82471565f131b611e51a876dd27f82c0d2b8e5f5414b6f29b59c59fc2"
    for fname, n in zip(STAGE_GRAPHS, (16, 32, 32, 32)):
        nodes, edges = read_graph(GRAPH_DIR / fname)
        assert nodes == n and len(edges) == 2 * n and len(set(edges)) == len(edges)
        assert sorted(build_order(n, edges)) == list(range(n))


def test_randwire_stage_blocks_follow_their_graphs():
    graph = randwire_large()
    for block, fname in zip(graph.blocks[1:5], STAGE_GRAPHS):
        n, stored = read_graph(GRAPH_DIR / fname)
        nodes = block.inner_nodes
        assert len(nodes) == n and all(isinstance(s, SepConv) and s.pre_act == "relu" for s in nodes)
        # nodes are built in the original's order, so the i-th built is node build_order[i] of the file
        index = {id(s): u for s, u in zip(nodes, build_order(n, stored))}
        edges = set()
        for s in nodes:
            assert len(s.inputs) == 1  # predecessors are summed in one term
            for v in s.inputs[0]:
                if v.node is block.enter_node:
                    assert s.stride == (2, 2) and len(s.inputs[0]) == 1
                else:
                    assert s.stride == (1, 1)
                    edges.add((index[id(v.node)], index[id(s)]))
        assert edges == set(stored)
        sinks = set(range(n)) - {u for u, _ in stored}
        assert isinstance(block.exit_node, Identity)
        assert {index[id(v.node)] for v in block.exit_node.inputs[0]} == sinks


def test_randwire_graph_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "g.txt"
    for text, match in [("3\n2\n0 1\n", "one 'u v' edge"), ("3\n1\n0 5\n", "distinct nodes"),
                        ("3\n3\n0 1\n1 2\n2 0\n", "cycle"), ("x\n", "node count")]:
        bad.write_text(text)
        with pytest.raises(ValueError, match=match) as err:
            read_graph(bad)
        assert str(bad) in str(err.value)


# ----- NASNet -----------------------------------------------------------------------------------

def test_nasnet_is_one_block_with_a_part_per_cell():
    graph = nasnet_large()
    block, = graph.blocks
    sizes = [len(p) for p in block.parts]
    cells = [18, 16, 16, 16, 16, 16]  # a first cell, then five normal cells
    assert sizes == [1, 18, 21, *cells, 19, *cells, 19, *cells, 1, 1]
    assert [n for part in block.parts for n in part] == block.nodes  # in build order, each operator once
    # every part but the stem conv, the ReLU and the pool ends with its cell's output concat
    assert all(isinstance(p[-1], Identity) for p in block.parts[1:-2])
    assert isinstance(block.parts[-2][0], Relu) and isinstance(block.exit_node, Pool)
    # a cell reads itself and the two cells before it (a first cell after a reduction: the third before)
    part_of = {id(n): i for i, p in enumerate(block.parts) for n in p}
    for i, part in enumerate(block.parts):
        back = 3 if i in (10, 17) else 2
        for node in part:
            assert all(i - back <= part_of.get(id(src), 0) <= i for src in node.input_nodes())


def test_nasnet_operators_are_the_originals():
    nodes = nasnet_large().blocks[0].nodes
    relu_convs = [n for n in nodes if isinstance(n, Sequential)]
    assert len(relu_convs) == 1 + 3 + 3 * 3 + 15 * 2 + 2 * 2  # stems, first, normal and reduction cells
    for seq in relu_convs:
        relu, conv = seq.nodes
        assert isinstance(relu, Relu) and isinstance(conv, Conv)
        assert conv.act == "identity" and conv.kernel == (1, 1) and seq.hint_name == "ReluConv"
    assert sum(isinstance(n, SepConv) and n.pre_act == "relu" for n in nodes) == 2 * 5 * 22
    assert [n.name for n in nodes] == sorted((n.name for n in nodes), key=int)  # the counter's names


# ----- forward passes through the reference runtime ---------------------------------------------

def _run(graph, seed=0):
    graph.init_weights(seed)
    graph.sequential_schedule()
    x = np.random.default_rng(seed).standard_normal((1, *graph.input.output_shape)).astype(np.float32)
    return x, ReferenceExecutor(graph, 1).run(x)


def test_sample_network_concatenates_conv4_conv2_conv3():
    graph = get_model("sample")
    x, y = _run(graph)
    conv1, conv2, conv3, conv4 = graph.blocks[0].inner_nodes
    def conv(node, inp):
        return np_conv2d(inp, node.weight, node.bias, Window(node.stride, node.padding, node.groups), node.act)
    expected = np.concatenate([conv(conv4, conv(conv1, x)), conv(conv2, x), conv(conv3, x)], axis=1)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["squeezenet", "inception_v3"])
def test_forward_pass_is_finite(name):
    graph = get_model(name)
    _, y = _run(graph)
    assert y.shape == (1, *EXPECTED[name][2]) and np.isfinite(y).all() and np.abs(y).max() > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["randwire", "nasnet"])
def test_forward_pass_is_finite_large(name):
    graph = get_model(name)
    _, y = _run(graph)
    assert y.shape == (1, *EXPECTED[name][2]) and np.isfinite(y).all() and np.abs(y).max() > 0

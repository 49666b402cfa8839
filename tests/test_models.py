"""The model zoo: exact operator counts (the IOS paper's table), shapes, block chaining, schedules,
RandWire determinism, and forward passes through the numpy reference runtime."""
import hashlib
import json

import numpy as np
import pytest

import ios_ray as ios
from ios_ray.graph import check_schedule
from ios_ray.graph.ir import Conv, Identity, Placeholder, Relu, SepConv
from ios_ray.models import MODELS, get_model, inception_v3, nasnet_large, randwire_large, watts_strogatz
from ios_ray.models.randwire import STAGES
from ios_ray.runtime import ReferenceExecutor
from ios_ray.runtime.reference import conv2d as np_conv2d

# name -> (operators, input shape, output shape, blocks)
EXPECTED = {
    "inception_v3": (119, (3, 299, 299), (2048, 1, 1), 13),
    "randwire": (120, (3, 224, 224), (1280, 1, 1), 6),
    "nasnet": (374, (3, 331, 331), (1000, 1, 1), 23),
    "squeezenet": (50, (3, 224, 224), (1000, 1, 1), 12),
    "sample": (5, (375, 15, 15), (1875, 15, 15), 1),
}
MAX_BLOCK = 60


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
    assert max(len(b.nodes) for b in graph.blocks) <= MAX_BLOCK
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
    # multiply-adds count 2 FLOPs: Inception-v3 5.7 GMACs, NASNet-A large 23.8, RandWire C=154 ~7.9-8.0
    gflops = {name: get_model(name).flops() / 1e9 for name in EXPECTED}
    assert 11.0 < gflops["inception_v3"] < 11.8
    assert 47.0 < gflops["nasnet"] < 48.5
    assert 15.0 < gflops["randwire"] < 17.0


# ----- RandWire ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n,k,p,seed", STAGES)
def test_watts_strogatz_is_a_connected_small_world_graph(n, k, p, seed):
    edges = watts_strogatz(n, k, p, seed)
    assert edges == watts_strogatz(n, k, p, seed)
    assert len(edges) == n * k // 2  # rewiring moves edges, never adds or drops them
    assert len(set(edges)) == len(edges) and all(0 <= u < v < n for u, v in edges)
    adj = {u: set() for u in range(n)}
    for u, v in edges:
        adj[u].add(v)
        adj[v].add(u)
    seen, stack = {0}, [0]
    while stack:
        for v in adj[stack.pop()] - seen:
            seen.add(v)
            stack.append(v)
    assert len(seen) == n
    ring = {(min(i, (i + j) % n), max(i, (i + j) % n)) for i in range(n) for j in range(1, k // 2 + 1)}
    assert set(edges) != ring  # p = 0.75 rewires


def test_watts_strogatz_depends_on_seed_and_checks_arguments():
    assert watts_strogatz(32, 4, 0.75, 3) != watts_strogatz(32, 4, 0.75, 4)
    assert watts_strogatz(8, 2, 0.0, 1) == tuple(sorted((min(i, (i + 1) % 8), max(i, (i + 1) % 8)) for i in range(8)))
    for args in [(8, 3, 0.5, 0), (8, 8, 0.5, 0), (8, 0, 0.5, 0), (8, 2, 1.5, 0)]:
        with pytest.raises(ValueError, match="watts_strogatz"):
            watts_strogatz(*args)


def test_randwire_graphs_are_pinned():
    """The WS graphs fix the network; a change would silently invalidate cached stage costs."""
    digest = hashlib.sha256(repr([watts_strogatz(*s) for s in STAGES]).encode()).hexdigest()
    assert digest == "a13318f5aa6fe6861048ca117e97b8e0f9d36223f9de660fbe3b7401777de364"


def test_randwire_stage_blocks_follow_their_graphs():
    graph = randwire_large()
    for block, (n, k, p, seed) in zip(graph.blocks[1:5], STAGES):
        nodes = block.inner_nodes
        assert len(nodes) == n and all(isinstance(s, SepConv) and s.pre_act == "relu" for s in nodes)
        index = {id(s): i for i, s in enumerate(nodes)}
        edges = set()
        for i, s in enumerate(nodes):
            assert len(s.inputs) == 1  # predecessors are summed in one term
            for v in s.inputs[0]:
                if v.node is block.enter_node:
                    assert s.stride == (2, 2) and len(s.inputs[0]) == 1
                else:
                    assert s.stride == (1, 1)
                    edges.add((index[id(v.node)], i))
        assert edges == set(watts_strogatz(n, k, p, seed))
        sinks = {i for i in range(n)} - {u for u, _ in edges}
        assert isinstance(block.exit_node, Identity)
        assert {index[id(v.node)] for v in block.exit_node.inputs[0]} == sinks


# ----- NASNet -----------------------------------------------------------------------------------

def _non_negative(v) -> bool:
    """True when the value is a ReLU output by construction (so a further ReLU leaves it unchanged)."""
    node = v.node
    if isinstance(node, Relu) or (isinstance(node, Conv) and node.act == "relu"):
        return True
    if isinstance(node, Identity):
        offset = 0
        for term in node.inputs:
            width = term[0].length
            if offset <= v.begin and v.end <= offset + width:
                return len(term) == 1 and _non_negative(term[0][v.begin - offset:v.end - offset])
            offset += width
    return False


def test_nasnet_cell_blocks_carry_both_inputs_of_the_next_cell():
    graph = nasnet_large()
    cell_blocks = [b for b in graph.blocks if isinstance(b.exit_node, Relu)]
    carry_blocks = [b for b in graph.blocks if isinstance(b.exit_node, Identity)]
    assert len(cell_blocks) == 18 and len(carry_blocks) == 4  # 18 normal/first cells; 2 stems + 2 reductions
    for block in cell_blocks[:-1]:
        x = block.exit_node.inputs[0]
        # the free carry: the exit's first term is the cell's x, read from the enter node and already ReLU'd
        assert len(x) == 1 and x[0].node is block.enter_node and _non_negative(x[0])
    last = cell_blocks[-1]
    assert all(v.node is not last.enter_node for t in last.exit_node.inputs for v in t)
    # identity carries: [path 1 | path 2 | cell output], the paths 1x1 stride-2 convs at the output's size
    for block in carry_blocks:
        *paths, out = block.exit_node.inputs
        assert [p[0].node.stride for p in paths] == [(2, 2), (2, 2)]
        assert isinstance(out[0].node, Relu)
        assert len({p[0].node.output_shape[1:] for p in paths} | {out[0].node.output_shape[1:]}) == 1
    sep = sum(isinstance(n, SepConv) for n in graph.nodes())
    assert sep == 2 * 5 * 22  # 22 cells x 5 branch-separables x 2 separable convs


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
        return np_conv2d(inp, node.weight, node.bias, node.stride, node.padding, node.groups, node.act)
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

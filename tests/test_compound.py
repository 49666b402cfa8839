"""The Sequential compound operator and the Activation node: IR (shapes, costs, parameters), JSON and
weights round trips, name-free stage keys, one operator in the state space and the DP, optimize."""
import pickle

import numpy as np
import pytest

import ios_ray as ios
from ios_ray.graph import builder as B
from ios_ray.graph.compound import Activation, Sequential
from ios_ray.graph.ir import Block, Conv, Graph, Placeholder, Pool, Relu, Value
from ios_ray.graph.schedule import check_schedule
from ios_ray.graph.serialize import graph_from_dict, graph_to_dict, load_weights, save_weights
from ios_ray.runtime import ReferenceExecutor, UnsupportedOpError
from ios_ray.space.options import SpaceOptions
from ios_ray.space.parts import graph_parts, part_states
from ios_ray.space.stage import stage_spec

from compound_reference import forward, random_input

C, HW = 4, 8


def relu_conv_pool(name=None, inputs=None, out=6):
    """A Sequential of ReLU, a 3x3 conv and a 2x2 max pool (its inner inputs are wired by the Sequential)."""
    return Sequential(name, inputs, [Relu(None, []), Conv(None, [], out, 3, padding=1, act="identity"),
                                     Pool(None, [], "max", 2, 2)])


def graph_with_sequentials():
    """x -> [seq a | seq b (reads x twice, concatenated)] -> identity(a, b) -> tanh."""
    x = B.placeholder((C, HW, HW), name="x")
    block = Block(x.node)
    a = B._add(block, relu_conv_pool("a", [[x]]), False)
    b = B._add(block, relu_conv_pool("b", [[x], [x]], out=2), False)
    cat = B.identity(block, [[a], [b]], name="cat")
    B._add(block, Activation("t", [[cat]], "tanh"), True)
    return Graph("seq", x.node, [block])


def test_shapes_and_wiring():
    g = graph_with_sequentials()
    a = g.node_by_name()["a"]
    assert a.output_shape == (6, 4, 4) and [n.output_shape for n in a.nodes] == [(4, 8, 8), (6, 8, 8), (6, 4, 4)]
    assert a.inputs is a.nodes[0].inputs and a.inputs[0][0].node is g.input
    assert a.nodes[2].inputs[0][0].node is a.nodes[1]  # each inner node reads the one before
    assert g.node_by_name()["b"].input_shape() == (8, 8, 8)
    assert g.output_shape == (8, 4, 4) and g.num_operators() == 4


def test_costs_are_the_sums_of_the_inner_nodes():
    a = graph_with_sequentials().node_by_name()["a"]
    assert a.flops() == sum(n.flops() for n in a.nodes) > 0
    assert a.bytes_accessed() == sum(n.bytes_accessed() for n in a.nodes)
    assert a.param_count() == 6 * 4 * 9 + 6
    assert a.weight_shapes() == {"1.weight": (6, 4, 3, 3), "1.bias": (6,)}


def test_parameters_live_in_the_inner_nodes():
    g = graph_with_sequentials()
    a = g.node_by_name()["a"]
    assert not g.has_weights()
    g.init_weights(0)
    assert g.has_weights() and a.params["1.weight"] is a.nodes[1].weight
    w = np.zeros((6, 4, 3, 3), np.float32)
    a.params["1.weight"] = w
    assert a.nodes[1].weight is w
    a.params = {"1.bias": np.ones(6, np.float32)}
    assert a.nodes[1].bias.sum() == 6 and len(a.params) == 2 and dict(a.params).keys() == {"1.weight", "1.bias"}
    with pytest.raises(ValueError, match="no parameter '0.weight'"):
        a.params = {"0.weight": w}
    assert a.params.get("7.weight") is None


def test_forward_runs_the_inner_nodes_in_order():
    g = graph_with_sequentials()
    g.init_weights(0)
    x = random_input(g, batch=2)
    a, b = g.node_by_name()["a"], g.node_by_name()["b"]

    def expected(seq, inp):
        conv = seq.nodes[1]
        y = np.maximum(inp, 0)
        y = R_conv(y, conv)
        return y.reshape(*y.shape[:2], 4, 2, 4, 2).max(axis=(3, 5))

    def R_conv(y, conv):
        from ios_ray.runtime.reference import Window, conv2d
        return conv2d(y, conv.weight, conv.bias, Window(conv.stride, conv.padding))

    cat = np.concatenate([expected(a, x), expected(b, np.concatenate([x, x], axis=1))], axis=1)
    np.testing.assert_allclose(forward(g, x), np.tanh(cat), rtol=1e-4, atol=1e-5)


def test_run_reference_keeps_inner_outputs_out_of_the_callers_env():
    g = graph_with_sequentials()
    g.init_weights(0)
    a = g.node_by_name()["a"]
    env = {g.input: random_input(g)}
    from compound_reference import run_any
    out = a.run_reference(env, run_any)
    assert out.shape == (1, 6, 4, 4) and list(env) == [g.input]


def test_reference_executor_runs_sequential_and_activation():
    g = graph_with_sequentials()
    g.init_weights(0)
    g.sequential_schedule()
    x = random_input(g)
    np.testing.assert_allclose(ReferenceExecutor(g, 1).run(x), forward(g, x), rtol=1e-5, atol=1e-6)


def test_json_round_trip_keeps_inner_nodes_and_weights(tmp_path):
    g = graph_with_sequentials()
    g.init_weights(0)
    g.greedy_schedule()
    d = graph_to_dict(g)
    seq_cfg = d["blocks"][0]["nodes"][0]
    assert seq_cfg["type"] == "sequential" and [n["type"] for n in seq_cfg["nodes"]] == ["relu", "conv", "pool"]
    assert "inputs" not in seq_cfg["nodes"][0] and seq_cfg["nodes"][1]["name"] == g.node_by_name()["a"].nodes[1].name
    g2 = graph_from_dict(d)
    check_schedule(g2)
    assert graph_to_dict(g2) == d
    save_weights(g, tmp_path / "w.npz")
    load_weights(g2, tmp_path / "w.npz")
    x = random_input(g)
    np.testing.assert_array_equal(forward(g2, x), forward(g, x))


def test_pickled_graph_keeps_sequentials_whole():
    """Ray ships graphs to workers by pickle."""
    g = graph_with_sequentials()
    g.init_weights(0)
    g2 = pickle.loads(pickle.dumps(g))
    a = g2.node_by_name()["a"]
    assert a.inputs is a.nodes[0].inputs and a.inputs[0][0].node is g2.input
    assert stage_spec([[a]]).key == stage_spec([[g.node_by_name()["a"]]]).key
    x = random_input(g)
    np.testing.assert_array_equal(forward(g2, x), forward(g, x))


def test_stage_keys_are_name_free_and_rebuild_the_node():
    g1, g2 = graph_with_sequentials(), graph_with_sequentials()
    for n in g2.nodes():
        n.name = f"other_{n.name}"
    for n in g2.node_by_name()["other_a"].nodes:
        n.name = f"inner_{n.name}"
    a1, a2 = g1.node_by_name()["a"], g2.node_by_name()["other_a"]
    spec = stage_spec([[a1]])
    assert spec.key == stage_spec([[a2]]).key != stage_spec([[g1.node_by_name()["b"]]]).key
    (_,), ((built,),) = spec.build()
    assert isinstance(built, Sequential) and built.output_shape == a1.output_shape
    assert [type(n) for n in built.nodes] == [Relu, Conv, Pool] and built.attrs() == a1.attrs()
    t = g1.blocks[0].exit_node
    assert stage_spec([[t]]).build()[1][0][0].act_type == "tanh"


def test_a_sequential_is_one_operator_of_the_state_space():
    (part,), = graph_parts(graph_with_sequentials(), SpaceOptions())
    assert part.size == 4
    assert len(part_states(part)) == 6  # {}, {a}, {b}, {a, b}, {a, b, cat}, all four


def test_optimize_schedules_sequentials_as_single_nodes_and_keeps_their_weights():
    g = graph_with_sequentials()
    g.init_weights(0)
    opt = ios.optimize(g, cost="analytic:H200", compute_weight=True)
    check_schedule(opt)
    names = {n for b in opt.blocks for s in b.stages for n in s.node_names()}
    assert {"a", "b"} <= names and isinstance(opt.node_by_name()["a"], Sequential)
    x = random_input(g)
    np.testing.assert_allclose(forward(opt, x), forward(g, x), rtol=1e-5, atol=1e-6)


def test_bad_sequentials_are_clear_errors():
    x = Placeholder("x", (C, HW, HW))
    v = Value(x)
    with pytest.raises(ValueError, match="non-empty list"):
        Sequential("s", [[v]], [])
    with pytest.raises(ValueError, match="cannot be a Placeholder"):
        Sequential("s", [[v]], [Placeholder("p", (1, 1, 1))])
    with pytest.raises(ValueError, match="cannot be a sequential"):
        Sequential("s", [[v]], [{"type": "sequential", "nodes": []}])
    with pytest.raises(ValueError, match="unknown op type"):
        Sequential("s", [[v]], [{"type": "lstm"}])
    with pytest.raises(ValueError, match="must be a Node or a node config"):
        Sequential("s", [[v]], ["relu"])
    bad = Sequential("s", [[v]], [Conv(None, [], 4, 9)])  # a 9x9 kernel on 8x8
    with pytest.raises(ValueError, match="Sequential s: inner .*does not fit"):
        bad.set_shape()
    with pytest.raises(ValueError, match="act_type"):
        Activation("t", [[v]], "relu")

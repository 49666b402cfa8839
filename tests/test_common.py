"""The original's model-building module (``ios_ray.models.common``) and the top-level IOS names: every
builder in the original's call forms, checked against the numpy reference kernels; names by counter;
``get_parts``; the original's IR constructors."""
import numpy as np
import pytest

import ios_ray as ios
from ios_ray.graph import ir
from ios_ray.graph.compound import Activation as IrActivation
from ios_ray.graph.compound import Sequential as IrSequential
from ios_ray.models import common
from ios_ray.models.common import (Activation, Block, Conv, Element, Graph, Identity, Placeholder, Pool, Relu,
                                   Sequential, activation, addition, conv2d, element, get_parts, identity, multiply,
                                   new_name, placeholder, pool2d, relu, relu_conv, relu_sep_conv, reset_name, rwconv2d,
                                   sep_conv, sequential, sigmoid, tanh)
from ios_ray.runtime import reference as R

from compound_reference import forward, random_input

C, HW = 6, 9
TOL = dict(rtol=1e-4, atol=1e-5)


def network(build):
    """A one-block graph: ``build(block, x)`` adds operators to the block and returns the exit value."""
    reset_name()
    x = placeholder((C, HW, HW))
    block = Block(x.node, None, [], None)
    out = build(block, x)
    if block.exit_node is None:  # make the last operator the exit, as is_exit=True would
        block.exit_node = block.inner_nodes.pop()
    assert block.exit_node is out.node
    graph = Graph("t", x.node, [block])
    graph.init_weights(0)
    return graph


def run(graph):
    x = random_input(graph)
    return x, forward(graph, x)


def sep(x, node, pre_relu):
    """The original's separable conv: [relu] -> depthwise (bias) -> pointwise (bias), no activation."""
    if pre_relu:
        x = np.maximum(x, 0)
    p = node.params
    y = R.conv2d(x, p["dw_weight"], p["dw_bias"], R.Window(node.stride, node.padding, groups=x.shape[1]))
    return R.conv2d(y, p["pw_weight"], p["pw_bias"])


def test_names_come_from_the_counter_like_the_original():
    reset_name()
    assert [new_name(), new_name()] == ["0", "1"]
    reset_name()
    x = placeholder((C, HW, HW))
    b = Block(x.node, None, [], None)
    a = conv2d(b, [[x]], C)
    s = sep_conv(b, [[a]], C, (3, 3), (1, 1), (1, 1))            # the original: 2 inner nodes + 1
    r = relu_sep_conv(b, [[s]], C, (3, 3), (1, 1), (1, 1))       # 3 + 1
    q = relu_conv(b, [[r]], C)                                    # 2 + 1
    w = rwconv2d(b, [[q]], C)                                     # 3 + 1
    p = pool2d(b, [[w]], "max", is_exit=True)
    assert [v.node.name for v in (x, a, s, r, q, w, p)] == ["0", "1", "4", "8", "11", "15", "16"]
    assert [v.node.hint_name for v in (x, a, s, r, q, w, p)] == ["0", "1", "SepConv", "ReluSepConv", "ReluConv",
                                                                  "ReluSepConv", "16"]
    assert [n.name for n in q.node.nodes] == ["9", "10"]


def test_conv2d_defaults_and_call_forms():
    graph = network(lambda b, x: conv2d(b, [[x]], out_channels=4, kernel=(3, 3), stride=(2, 2), padding=(1, 1)))
    conv = graph.blocks[0].exit_node
    assert (conv.act, conv.groups) == ("relu", 1)
    x, y = run(graph)
    np.testing.assert_allclose(y, R.conv2d(x, conv.weight, conv.bias, R.Window((2, 2), (1, 1)), act="relu"), **TOL)


def test_sep_conv_has_no_relu_and_relu_sep_conv_has_one():
    graph = network(lambda b, x: relu_sep_conv(b, [[sep_conv(b, [[x]], 8, (5, 5), (2, 2), (2, 2))]], 4,
                                               (3, 3), (1, 1), (1, 1)))
    first, second = graph.blocks[0].nodes
    assert (first.pre_act, second.pre_act) == ("identity", "relu") and first.output_shape == (8, 5, 5)
    x, y = run(graph)
    np.testing.assert_allclose(y, sep(sep(x, first, False), second, True), **TOL)


def test_rwconv2d_is_a_relu_separable_3x3():
    graph = network(lambda b, x: rwconv2d(b, [[x, x]], 5, (2, 2)))
    node = graph.blocks[0].exit_node
    assert (node.kernel, node.padding, node.stride) == ((3, 3), (1, 1), (2, 2))
    x, y = run(graph)
    np.testing.assert_allclose(y, sep(2 * x, node, True), **TOL)


def test_relu_conv_is_one_sequential_operator():
    graph = network(lambda b, x: relu_conv(b, [[x], [x]], 4, (3, 3), (1, 1), (1, 1), 2))
    seq = graph.blocks[0].exit_node
    assert isinstance(seq, IrSequential) and graph.num_operators() == 1
    rel, conv = seq.nodes
    assert conv.act == "identity" and conv.groups == 2 and seq.output_shape == (4, HW, HW)
    x, y = run(graph)
    xx = np.maximum(np.concatenate([x, x], axis=1), 0)
    np.testing.assert_allclose(y, R.conv2d(xx, conv.weight, conv.bias, R.Window((1, 1), (1, 1), groups=2)), **TOL)


def test_sequential_of_nodes_made_with_the_original_constructors():
    """The original's NASNet ``avg_conv`` pattern: nodes built with its IR constructors, then ``sequential``."""
    def build(b, x):
        names = [new_name(), new_name(), new_name()]
        nodes = [Relu(names[0], names[0], [[x]], None),
                 Conv(names[1], names[1], None, out_channels=4, kernel=(3, 3), stride=(2, 2), padding=(1, 1),
                      groups=1, act="identity", output_shape=None),
                 Pool(names[2], names[2], None, "avg", (3, 3), (1, 1), (1, 1), None)]
        return sequential(b, hint_name="ReluConvPool", nodes=nodes, is_exit=True)
    graph = network(build)
    seq = graph.blocks[0].exit_node
    assert seq.hint_name == "ReluConvPool" and seq.name == "4" and [n.name for n in seq.nodes] == ["1", "2", "3"]
    x, y = run(graph)
    conv = seq.nodes[1]
    expected = R.pool2d(R.conv2d(np.maximum(x, 0), conv.weight, conv.bias, R.Window((2, 2), (1, 1))), "avg", (3, 3),
                        R.Window((1, 1), (1, 1)))
    np.testing.assert_allclose(y, expected, **TOL)


def test_identity_concatenates_terms_and_sums_values():
    graph = network(lambda b, x: identity(b, [[x, x], [x[0:2]]]))
    x, y = run(graph)
    np.testing.assert_allclose(y, np.concatenate([2 * x, x[:, 0:2]], axis=1), **TOL)


@pytest.mark.parametrize("form", ["relu", "activation", "sigmoid", "tanh"])
def test_relu_and_activations(form):
    kind = {"relu": "relu", "activation": "tanh", "sigmoid": "sigmoid", "tanh": "tanh"}[form]
    calls = {"relu": lambda b, x: relu(b, [[x]]), "activation": lambda b, x: activation(b, [[x]], "tanh", False),
             "sigmoid": lambda b, x: sigmoid(b, [[x]]), "tanh": lambda b, x: tanh(b, [[x]], inplace=True)}
    graph = network(calls[form])
    node = graph.blocks[0].exit_node
    assert isinstance(node, ir.Relu if kind == "relu" else IrActivation)
    x, y = run(graph)
    np.testing.assert_allclose(y, R.activation(x, kind), **TOL)


def test_activation_relu_is_a_relu_node():
    graph = network(lambda b, x: activation(b, [[x]], "relu", inplace=False))
    assert isinstance(graph.blocks[0].exit_node, ir.Relu)
    with pytest.raises(ValueError, match="act_type"):
        network(lambda b, x: activation(b, [[x]], "gelu", False))


@pytest.mark.parametrize("build, op", [
    (lambda b, x, a: multiply(b, [[x, a]]), np.multiply),       # the original's form: one term, two operands
    (lambda b, x, a: addition(b, [[x, a]]), np.add),
    (lambda b, x, a: element(b, [[x], [a]], "mul"), np.multiply),  # ours: one operand per term
])
def test_element_operands(build, op):
    graph = network(lambda b, x: build(b, x, relu(b, [[x]])))
    x, y = run(graph)
    np.testing.assert_allclose(y, op(x, np.maximum(x, 0)), **TOL)


@pytest.mark.parametrize("pool_type", ["max", "avg", "global_avg", "global_max"])
def test_pool2d_types(pool_type):
    graph = network(lambda b, x: pool2d(b, [[x]], pool_type, (3, 3), (2, 2), (1, 1)))
    x, y = run(graph)
    expected = {"global_max": lambda: x.max(axis=(2, 3), keepdims=True),
                "global_avg": lambda: x.mean(axis=(2, 3), keepdims=True)}.get(
        pool_type, lambda: R.pool2d(x, pool_type, (3, 3), R.Window((2, 2), (1, 1))))()
    np.testing.assert_allclose(y, expected, **TOL)


def test_get_parts_splits_by_name_numbers():
    def build(b, x):
        v1 = conv2d(b, [[x]], C)
        v2 = relu_conv(b, [[v1]], C)
        v3 = identity(b, [[v1], [v2]])
        b.split = [x, v1, v2, v3]
        return v3
    reset_name()
    graph = network(build)
    block = graph.blocks[0]
    parts = get_parts(block, block.split)
    assert [[n.display_type for n in p] for p in parts] == [["Conv2d"], ["Sequential"], ["Identity"]]
    with pytest.raises(ValueError, match="increasing"):
        get_parts(block, block.split[::-1])
    with pytest.raises(ValueError, match="outside the split values"):
        get_parts(block, block.split[1:])


def test_get_parts_needs_counter_names():
    v = ios.placeholder((C, HW, HW))
    b = ios.Block(v.node)
    a = ios.conv2d(b, [[v]], C, name="first")
    with pytest.raises(ValueError, match="not named by the counter"):
        get_parts(b, [v, a])


def test_original_constructors_build_our_nodes_and_pass_isinstance():
    p = Placeholder("0", "in", (C, HW, HW))
    v = ir.Value(p, 0, C)
    nodes = [Conv("1", "1", [[v]], 4, (1, 1), (1, 1), (0, 0), 1, "relu", None), Relu("2", "2", [[v]], None),
             Identity("3", "3", [[v]], None), Element("4", "4", [[v], [v]], "add", None),
             Pool("5", "5", [[v]], "max", (2, 2), (2, 2), (0, 0), None),
             Activation("6", "6", [[v]], "sigmoid", False, None), Activation("7", "7", [[v]], "relu", True, None)]
    classes = [Conv, Relu, Identity, Element, Pool, Activation, Relu]
    for node, cls in zip(nodes, classes):
        assert isinstance(node, cls) and isinstance(node, ir.Node) and type(node).__module__.startswith("ios_ray")
    assert isinstance(p, Placeholder) and p.hint_name == "in" and not isinstance(p, Conv)
    seq = Sequential("8", "S", [Relu("9", "9", [[v]], None), Conv("10", "10", None, 4, (1, 1), (1, 1), (0, 0), 1,
                                                                   "identity", None)], None)
    assert isinstance(seq, Sequential) and isinstance(seq, IrSequential) and seq.inputs[0][0] is v


def test_star_import_gives_what_the_original_model_files_use():
    namespace = {}
    exec("from ios_ray.models.common import *", namespace)
    for name in ("Tuple", "List", "Value", "Block", "Graph", "Conv", "Relu", "Sequential", "placeholder", "conv2d",
                 "rwconv2d", "relu_sep_conv", "relu_conv", "sequential", "identity", "pool2d", "reset_name",
                 "new_name", "get_parts", "activation", "addition", "multiply", "element", "sigmoid", "tanh",
                 "relu", "sep_conv"):
        assert name in namespace, name


def test_top_level_has_the_original_packages_names():
    for name in ("optimize", "Graph", "Block", "placeholder", "reset_name", "conv2d", "pool2d", "identity", "relu",
                 "activation", "multiply", "addition", "element", "sequential", "sigmoid", "tanh", "ios_runtime",
                 "draw", "models", "IOSCostModel", "RandomCostModel"):
        assert hasattr(ios, name), name
    assert ios.models.inception_v3().num_operators() == 119


def test_top_level_element_ops_take_the_originals_form_and_ours():
    v = ios.placeholder((C, HW, HW))
    b = ios.Block(v.node)
    r = ios.relu(b, [[v]])
    original = ios.multiply(b, [[v, r]])
    ours = ios.element(b, [[v], [r]], "mul", name="ours")
    ios.identity(b, [[original], [ours]], is_exit=True)
    graph = ios.Graph("g", v.node, [b])
    x, y = run(graph)
    np.testing.assert_allclose(y, np.concatenate([x * np.maximum(x, 0)] * 2, axis=1), **TOL)
    assert ours.node.name == "ours"


def test_top_level_sep_conv_has_no_relu_by_default():
    v = ios.placeholder((C, HW, HW))
    b = ios.Block(v.node)
    assert ios.sep_conv(b, [[v]], C, (3, 3), is_exit=True).node.pre_act == "identity"
    assert ios.sep_conv(b.__class__(v.node), [[v]], C, (3, 3), pre_act="relu", name="s").node.pre_act == "relu"


def test_bad_inputs_are_clear_errors():
    reset_name()
    x = placeholder((C, HW, HW))
    b = Block(x.node, None, [], None)
    with pytest.raises(ValueError, match="list of terms"):
        relu_conv(b, x, C)
    with pytest.raises(ValueError, match="list of terms"):
        sequential(b, None, [Relu("a", "a", x, None)])
    with pytest.raises(ValueError, match="must be a Value"):
        sequential(b, None, [Relu("a", "a", [["x"]], None)])
    with pytest.raises(ValueError, match="nodes must be a non-empty list"):
        sequential(b, None, [])
    assert common.__all__ and all(hasattr(common, n) for n in common.__all__)

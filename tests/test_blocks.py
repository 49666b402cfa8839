"""The block finder (graph/blocks.py): cuts where every input-to-output path meets, on flat node lists."""
import pytest

from ios_ray.graph.blocks import live_nodes, split_blocks
from ios_ray.graph.ir import Conv, Element, Graph, Identity, Placeholder, Relu, Value


def _v(node):
    return Value(node, 0, node.output_shape[0])


def _node(cls, name, inputs, *args):
    n = cls(name, [[_v(i)] for i in inputs], *args)
    n.set_shape()
    return n


def _diamond_then_chain():
    x = Placeholder("x", (4, 6, 6))
    a = _node(Conv, "a", [x], 4, 1)
    b = _node(Conv, "b", [a], 4, 3, 1, 1)
    c = _node(Relu, "c", [a])
    d = _node(Element, "d", [b, c], "add")
    e = _node(Relu, "e", [d])
    f = _node(Identity, "f", [e, x])   # reads the input again: no cut before it
    return x, [a, b, c, d, e, f]


def test_a_path_around_a_node_keeps_it_inside_a_block():
    x, nodes = _diamond_then_chain()
    blocks = split_blocks(x, nodes, nodes[-1])
    assert len(blocks) == 1 and blocks[0].exit_node is nodes[-1]
    Graph("g", x, blocks)


def test_cuts_at_every_operator_all_paths_cross():
    x, nodes = _diamond_then_chain()
    y = _node(Relu, "y", [nodes[4]])
    nodes = nodes[:5] + [y]
    blocks = split_blocks(x, nodes, y)
    assert [(b.enter_node.name, [n.name for n in b.nodes]) for b in blocks] == [
        ("x", ["a"]), ("a", ["b", "c", "d"]), ("d", ["e"]), ("e", ["y"])]
    Graph("g", x, blocks)


def test_dead_nodes_are_dropped_first_and_refused_otherwise():
    x, nodes = _diamond_then_chain()
    dead = _node(Relu, "dead", [nodes[0]])
    nodes = nodes[:2] + [dead] + nodes[2:]
    assert dead not in live_nodes(nodes, nodes[-1])
    with pytest.raises(ValueError, match="not needed by the output"):
        split_blocks(x, nodes, nodes[-1])


def test_bad_orders_are_refused():
    x, nodes = _diamond_then_chain()
    with pytest.raises(ValueError, match="must be the last"):
        split_blocks(x, nodes, nodes[2])
    with pytest.raises(ValueError, match="not an earlier node"):
        split_blocks(x, [nodes[1], nodes[0]] + nodes[2:], nodes[-1])

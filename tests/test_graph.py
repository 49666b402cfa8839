"""The IR, builder API, schedules and JSON/npz round trips, including bad input."""
import json

import numpy as np
import pytest

import ios_ray as ios
from ios_ray.graph import check_schedule
from ios_ray.graph.schedule import Stage
from ios_ray.graph.serialize import (graph_from_dict, graph_to_dict, load_graph, load_weights, save_graph,
                                     save_weights)


def sample(c=8, hw=6):
    v = ios.placeholder(output_shape=(c, hw, hw))
    block = ios.Block(enter_node=v.node)
    v1 = ios.conv2d(block, inputs=[[v]], out_channels=c, kernel=(3, 3), padding=(1, 1))
    v2 = ios.conv2d(block, inputs=[[v]], out_channels=2 * c, kernel=(3, 3), padding=(1, 1))
    v3 = ios.conv2d(block, inputs=[[v]], out_channels=c, kernel=(3, 3), padding=(1, 1))
    v1 = ios.conv2d(block, inputs=[[v1]], out_channels=2 * c, kernel=(3, 3), padding=(1, 1))
    ios.identity(block, inputs=[[v1], [v2], [v3]], is_exit=True)
    return ios.Graph(name="demo", input=v.node, blocks=[block])


def test_shapes_flops_and_numbering():
    g = sample()
    assert g.output_shape == (40, 6, 6)
    assert [n.hint_name for n in g.nodes()] == ["0", "1", "2", "3", "4", "5"]
    conv = g.blocks[0].nodes[0]
    assert conv.flops() == 2 * 8 * 6 * 6 * 8 * 9
    assert conv.bytes_accessed() == 4 * (8 * 36 + 8 * 36 + 8 * 8 * 9 + 8)
    assert g.num_operators() == 5


def test_print_matches_original_format():
    g = sample()
    g.sequential_schedule()
    assert str(g) == "\n".join(["Sequential(", "  [1]Conv2d(0)", "  [2]Conv2d(0)", "  [3]Conv2d(0)",
                                "  [4]Conv2d(1)", "  [5]Concat(4,2,3)", ")"])
    b = g.blocks[0]
    n = [x.name for x in b.nodes]
    b.stages = [Stage(((n[0],), (n[1],))), Stage(((n[3],), (n[2],))), Stage(((n[4],),))]
    check_schedule(g)
    assert "Parallel(\n    [1]Conv2d(0)\n    [2]Conv2d(0)\n  )" in str(g)


def test_greedy_schedule_respects_streams():
    g = sample()
    g.greedy_schedule(max_num_streams=2)
    check_schedule(g)
    assert [len(s.groups) for s in g.blocks[0].stages] == [2, 2, 1]


def test_channel_slices_and_term_sums():
    v = ios.placeholder((8, 4, 4))
    b = ios.Block(v.node)
    a = ios.conv2d(b, [[v]], out_channels=6, kernel=1)
    s = ios.identity(b, [[a[0:3], a[3:6]], [v[2:5]]])  # (a0..2 + a3..5) ++ v2..4
    assert s.node.output_shape == (6, 4, 4)
    m = ios.mul(b, [[a[0:4]], [v[0:4]]], is_exit=True)
    assert m.node.output_shape == (4, 4, 4)
    ios.Graph("slices", v.node, [b])


@pytest.mark.parametrize("build,msg", [
    (lambda b, v: ios.conv2d(b, [[v]], out_channels=0, kernel=1), "positive"),
    (lambda b, v: ios.conv2d(b, [[v]], out_channels=4, kernel=9), "does not fit"),
    (lambda b, v: ios.conv2d(b, [[v]], out_channels=4, kernel=1, groups=3), "groups=3"),
    (lambda b, v: ios.conv2d(b, [[v]], out_channels=4, kernel=1, act="gelu"), "act must be"),
    (lambda b, v: ios.identity(b, [[v[0:2], v[0:3]]]), "equal channels"),
    (lambda b, v: ios.identity(b, [v]), "list of terms"),
    (lambda b, v: ios.pool2d(b, [[v]], pool_type="median"), "pool_type"),
    (lambda b, v: v[7:12], "outside"),
])
def test_bad_shapes_raise_clear_errors(build, msg):
    v = ios.placeholder((8, 5, 5))
    b = ios.Block(v.node)
    with pytest.raises(ValueError, match=msg):
        build(b, v)


def test_spatial_mismatch_names_the_node():
    v = ios.placeholder((8, 8, 8))
    b = ios.Block(v.node)
    a = ios.conv2d(b, [[v]], out_channels=4, kernel=3, stride=2, name="down")
    with pytest.raises(ValueError, match="spatial size mismatch"):
        ios.identity(b, [[a], [v]], name="cat")


def test_placeholder_rejects_bad_shape():
    with pytest.raises(ValueError, match="three positive"):
        ios.placeholder((3, 0, 4))


def test_graph_checks_block_chain_and_exit():
    v = ios.placeholder((4, 4, 4))
    b = ios.Block(v.node)
    ios.conv2d(b, [[v]], out_channels=4, kernel=1)
    with pytest.raises(ValueError, match="no exit node"):
        ios.Graph("g", v.node, [b])


def test_cycle_is_reported():
    g = sample()
    b = g.blocks[0]
    first, second = b.nodes[0], b.nodes[3]
    first.inputs = [[ios.Value(second)]]  # conv1 now reads conv4, which reads conv1
    with pytest.raises(ValueError, match="cycle"):
        ios.Graph("cyclic", g.input, g.blocks)


def test_json_cycle_is_reported():
    d = graph_to_dict(sample())
    nodes = d["blocks"][0]["nodes"]
    nodes[0]["inputs"] = [[[nodes[3]["name"], 0, 16]]]
    with pytest.raises(ValueError, match="cycle"):
        graph_from_dict(d)


def test_json_unknown_op_type():
    d = graph_to_dict(sample())
    d["blocks"][0]["nodes"][1]["type"] = "deformable_conv"
    with pytest.raises(ValueError, match="unknown op type 'deformable_conv'"):
        graph_from_dict(d)


def test_json_round_trip_is_lossless(tmp_path):
    g = sample()
    g.greedy_schedule()
    path = tmp_path / "g.json"
    save_graph(g, str(path))
    g2 = load_graph(str(path))
    assert graph_to_dict(g2) == graph_to_dict(g)
    assert str(g2) == str(g)


@pytest.mark.parametrize("mutate,msg", [
    (lambda st: st.pop(), "misses nodes"),
    (lambda st: st.append(st[0]), "scheduled twice"),
    (lambda st: st.reverse(), "dependency"),
])
def test_bad_schedules_rejected(mutate, msg):
    g = sample()
    g.sequential_schedule()
    d = graph_to_dict(g)
    mutate(d["blocks"][0]["stages"])
    with pytest.raises(ValueError, match=msg):
        graph_from_dict(d)


def test_schedule_with_unknown_node_rejected():
    g = sample()
    g.sequential_schedule()
    g.blocks[0].stages[0] = Stage((("nope",),))
    with pytest.raises(ValueError, match="not in this block"):
        check_schedule(g)


def test_weights_round_trip_without_pickle(tmp_path):
    g = sample()
    g.init_weights(seed=3)
    path = str(tmp_path / "w.npz")
    save_weights(g, path)
    g2 = sample()
    load_weights(g2, path)
    for a, b in zip(g.nodes(), g2.nodes()):
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k])
    other = ios.placeholder((8, 6, 6))
    blk = ios.Block(other.node)
    ios.conv2d(blk, [[other]], out_channels=3, kernel=1, is_exit=True)
    with pytest.raises(ValueError, match="do not match"):
        load_weights(ios.Graph("other", other.node, [blk]), path)


def test_weights_with_pickled_object_rejected(tmp_path):
    g = sample()
    path = str(tmp_path / "evil.npz")
    np.savez(path, **{"x": np.array([object()], dtype=object)})
    with pytest.raises(ValueError, match="allow_pickle"):  # numpy refuses before any unpickling
        load_weights(g, path)


def test_init_weights_is_seeded():
    a, b = sample(), sample()
    a.init_weights(1)
    b.init_weights(1)
    np.testing.assert_array_equal(a.blocks[0].nodes[0].weight, b.blocks[0].nodes[0].weight)
    assert a.has_weights()


def test_not_json_file(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_graph(str(p))
    p.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not an ios_ray graph"):
        load_graph(str(p))


def test_json_duplicate_node_name_in_one_block_is_rejected_not_dropped():
    """Regression: a second config with the same name silently replaced the first one on load."""
    d = graph_to_dict(sample())
    clone = dict(d["blocks"][0]["nodes"][0], out_channels=3)
    d["blocks"][0]["nodes"].insert(0, clone)
    with pytest.raises(ValueError, match="used twice"):
        graph_from_dict(d)


def test_json_without_input_is_a_clear_error():
    d = graph_to_dict(sample())
    del d["input"]
    with pytest.raises(ValueError, match="no input placeholder"):
        graph_from_dict(d)


def test_schedule_of_name_lists_names_the_wrong_type():
    """Regression: an IOS-style [[names]] stage was reported as 'needs a non-empty group'."""
    g = sample()
    g.sequential_schedule()
    g.blocks[0].stages[0] = [[g.blocks[0].nodes[0].name]]
    with pytest.raises(ValueError, match="expected a Stage, got list"):
        check_schedule(g)


def test_json_bad_attribute_value_names_the_node():
    d = graph_to_dict(sample())
    d["blocks"][0]["nodes"][0]["out_channels"] = "many"
    with pytest.raises(ValueError, match="conv_1"):
        graph_from_dict(d)


def test_stage_given_as_a_flat_group_is_rejected():
    with pytest.raises(ValueError, match="list of groups"):
        Stage.from_json(["conv_1", "conv_2"])

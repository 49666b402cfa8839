"""Graphs written by the original IOS (``Graph.export_config()`` as JSON) load as ios_ray graphs.

The files in ``tests/data/ios_*.json`` were written by the original's own code: a network of every
node type its builders make (with its greedy schedule), its README sample network optimized by its DP
with merges (a merged conv and the slices its readers take), and SqueezeNet optimized by its DP.
"""
import copy
import json
from pathlib import Path

import numpy as np
import pytest

from ios_ray.graph.compound import Activation, Sequential
from ios_ray.graph.ios_json import from_ios_config, is_ios_config
from ios_ray.graph.ir import Conv, Element, Graph, Pool, Relu
from ios_ray.graph.schedule import check_schedule
from ios_ray.graph.serialize import graph_from_dict, graph_to_dict, load_graph
from ios_ray.runtime import ReferenceExecutor

from compound_reference import forward, random_input

DATA = Path(__file__).parent / "data"
FILES = ["ios_all_ops", "ios_sample_dp_merge", "ios_sample_dp_parallel_merge", "ios_squeezenet_optimized"]


def original(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


@pytest.mark.parametrize("name", FILES)
def test_original_files_load_with_their_schedules(name):
    graph = load_graph(str(DATA / f"{name}.json"))
    assert graph.has_schedule()
    check_schedule(graph)
    config = original(name)
    assert graph.name == config["name"] and graph.input.name == config["input"]["name"]
    for block, block_config in zip(graph.blocks, config["blocks"]):
        assert [n.name for n in block.nodes] == [c["name"] for c in block_config["inner_nodes"]] + \
            [block_config["exit_node"]["name"]]
        assert [[list(g) for g in s.groups] for s in block.stages] == block_config["stages"]
    assert Graph.from_config(config).export_config() == graph.export_config()


def test_every_node_type_maps_onto_ours():
    graph = load_graph(str(DATA / "ios_all_ops.json"))
    nodes = {n.name: n for n in graph.nodes()}
    seqs = [n for n in graph.nodes() if isinstance(n, Sequential)]
    # relu_conv, relu_sep_conv, sep_conv, rwconv2d: the original wrote each as a sequential
    assert [[type(i).__name__ for i in s.nodes] for s in seqs] == [
        ["Relu", "Conv"], ["Relu", "Conv", "Conv"], ["Conv", "Conv"], ["Relu", "Conv", "Conv"]]
    assert seqs[1].inputs[0][0].node.name == "1" and len(seqs[1].inputs[0]) == 2  # a summed term, kept
    assert isinstance(nodes["18"], Activation) and nodes["18"].act_type == "tanh"
    assert isinstance(nodes["20"], Relu)  # activation(act_type='relu')
    mul = nodes["21"]
    assert isinstance(mul, Element) and mul.op_type == "mul" and [len(t) for t in mul.inputs] == [1, 1]
    gmax = nodes["27"]
    assert isinstance(gmax, Pool) and (gmax.pool_type, gmax.kernel) == ("max", (12, 12))
    assert graph.output_shape == (4, 1, 1)
    graph.init_weights(0)
    y = forward(graph, random_input(graph, batch=2))
    assert y.shape == (2, 4, 1, 1) and np.isfinite(y).all()


def test_merged_conv_of_the_originals_dp():
    graph = load_graph(str(DATA / "ios_sample_dp_merge.json"))
    merged = graph.blocks[0].nodes[0]
    assert isinstance(merged, Conv) and merged.out_channels == 16 + 32 + 16 and merged.hint_name == "1 2 3"
    assert [len(s.groups) for s in graph.blocks[0].stages] == [1, 1, 1]
    readers = {(v.begin, v.end) for n in graph.blocks[0].nodes[1:] for t in n.inputs for v in t if v.node is merged}
    assert readers == {(0, 16), (16, 64)}  # conv 4 reads conv 1's slice; the concat conv 2's and 3's, joined


def test_original_squeezenet_schedule_runs_on_the_reference_runtime():
    graph = load_graph(str(DATA / "ios_squeezenet_optimized.json"))
    assert graph.num_operators() == 50
    assert any(len(s.groups) > 1 for b in graph.blocks for s in b.stages)  # parallel stages
    graph.init_weights(0)
    y = ReferenceExecutor(graph, 1).run(random_input(graph))
    assert y.shape == (1, 1000, 1, 1) and np.isfinite(y).all()


def test_only_the_originals_format_is_converted():
    assert is_ios_config(original("ios_all_ops"))
    ours = graph_to_dict(load_graph(str(DATA / "ios_all_ops.json")))
    assert not is_ios_config(ours) and not is_ios_config({"blocks": []}) and not is_ios_config([])
    assert graph_from_dict(ours).export_config() == ours


def broken(mutate) -> dict:
    config = copy.deepcopy(original("ios_all_ops"))
    mutate(config)
    return config


def test_malformed_original_files_are_clear_errors(tmp_path):
    block0 = lambda c: c["blocks"][0]  # noqa: E731
    cases = [
        (lambda c: block0(c)["inner_nodes"][0].update(type="lstm"), "node '1' has type 'lstm'"),
        (lambda c: block0(c)["inner_nodes"][0].pop("kernel"), "conv node '1' has no 'kernel'"),
        (lambda c: block0(c).pop("exit_node"), "block 0: malformed"),
        (lambda c: block0(c)["inner_nodes"][3]["nodes"][1].update(inputs=[[["0", 0, 8]]]),
         "must read the whole output of '4'"),
        (lambda c: c["blocks"][1]["inner_nodes"][1].update(output_shape=None), "global_max pool '27' needs"),
        (lambda c: c.update(input={"type": "conv"}), "its input is not a placeholder"),
    ]
    for mutate, match in cases:
        with pytest.raises(ValueError, match=match):
            from_ios_config(broken(mutate))
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(broken(cases[0][0])))
    with pytest.raises(ValueError, match="lstm"):
        load_graph(str(path))

"""``draw`` writes an SVG of the graph (and its schedule), and the original's cost-model names work."""
import xml.etree.ElementTree as ET

import pytest

import ios_ray as ios
from ios_ray.costs.factory import gpu_available
from ios_ray.graph.schedule import check_schedule
from ios_ray.models import get_model
from ios_ray.models.common import relu_conv, reset_name

SVG = "{http://www.w3.org/2000/svg}"


def parse(path):
    root = ET.parse(path).getroot()
    texts = [t.text for t in root.iter(f"{SVG}text")]
    return root, texts


def test_draw_schedule_colours_one_fill_per_stage(tmp_path):
    graph = get_model("sample")
    graph.greedy_schedule(max_num_streams=2)
    path = ios.draw(graph, str(tmp_path / "g.svg"), label="greedy")
    root, texts = parse(path)
    rects = list(root.iter(f"{SVG}rect"))
    assert len(rects) == 6 and len(list(root.iter(f"{SVG}path"))) >= 6  # 6 boxes, an edge per input (+ arrow)
    fills = [r.get("fill") for r in rects]
    assert len(set(fills[1:])) == len(graph.blocks[0].stages) == 3  # the input is grey, one colour a stage
    assert "greedy" in texts and "stage 1, group 2" in texts and "conv4 [4]" in texts and "Conv2d 3x3" in texts and "1875x15x15" in texts


def test_draw_without_schedule_and_a_sequential(tmp_path):
    reset_name()
    x = ios.models.common.placeholder((4, 8, 8))
    block = ios.Block(x.node)
    v = relu_conv(block, [[x]], 4, (3, 3), (1, 1), (1, 1))
    relu_conv(block, [[v[0:2]], [x]], 4, is_exit=True)
    graph = ios.Graph("g", x.node, [block])
    root, texts = parse(ios.draw(graph, str(tmp_path / "seq.svg")))
    assert texts.count("Relu > Conv2d 3x3") == 1 and texts.count("Relu > Conv2d 1x1") == 1
    assert not any(t.startswith("stage") for t in texts if t)
    assert "[0:2]" in texts  # a channel slice is labelled on its edge


def test_draw_writes_svg_for_another_suffix_with_a_warning(tmp_path):
    graph = get_model("sample")
    with pytest.warns(UserWarning, match="writes SVG"):
        path = ios.draw(graph, str(tmp_path / "g.png"))
    assert path.endswith("g.svg")
    parse(path)
    with pytest.raises(ValueError, match="needs a Graph"):
        ios.draw(graph.blocks[0], str(tmp_path / "b.svg"))


def test_cost_model_names():
    assert ios.IOSCostModel() == ("gpu" if gpu_available() else "cpu")
    if not gpu_available():  # measured on the CPU reference runtime: a small graph
        small = ios.models.sample.sample_network(channels=4, size=5)
        check_schedule(ios.optimize(small, cost_model=ios.IOSCostModel(), cost_table=False))
    graph = get_model("squeezenet")
    a = ios.optimize(graph, cost_model=ios.RandomCostModel(seed=3), cost_table=False)
    b = ios.optimize(graph, cost_model=ios.RandomCostModel(seed=3), cost_table=False)
    check_schedule(a)
    assert [b_.stages for b_ in a.blocks] == [b_.stages for b_ in b.blocks]
    assert a.optimization_report.device == "random" and 0 < a.optimization_report.predicted_latency_ms

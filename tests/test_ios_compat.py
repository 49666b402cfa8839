"""Scripts in the original IOS's style run on ``import ios_ray as ios``; ``benchmarks/ios_compat.py``
rewrites a model file's import and builds it (here on model files written in the original's style)."""
import sys
from pathlib import Path

import numpy as np
import pytest

import ios_ray as ios

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import ios_compat  # noqa: E402

MODEL_FILE = '''from .common import *


def tiny_front(v: Value) -> Tuple[Value, Block]:
    block = Block(v.node, None, [], None)
    v1 = conv2d(block, [[v]], out_channels=8, kernel=(3, 3), padding=(1, 1))
    v2 = relu_sep_conv(block, [[v]], 8, (3, 3), (1, 1), (1, 1))
    v3 = relu_conv(block, [[v]], 8)
    return identity(block, [[v1], [v2, v3]], is_exit=True), block


def tiny():
    reset_name()
    pv = placeholder(output_shape=(4, 8, 8))
    v, block = tiny_front(pv)
    block.parts = get_parts(block, [pv, v])
    graph = Graph("tiny", pv.node, [block])
    graph.init_weights()
    return graph
'''


def test_a_model_file_builds_with_its_import_rewritten(tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text(MODEL_FILE)
    builder, changed = ios_compat.load_builder(path, "tiny")
    assert changed == ["from .common import *  ->  from ios_ray.models.common import *"]
    graph = builder()
    assert graph.num_operators() == 4 and graph.has_weights() and len(graph.blocks[0].parts) == 1
    assert ios_compat.original_states(graph, ios_compat.SpaceOptions()) == (9, 1)  # 8 subsets of 3 + all
    same = ios_compat.structure(graph)
    assert ios_compat.difference(same, same) == "yes"
    other = ios_compat.structure(builder())
    other[1][0]["nodes"][0]["act"] = "identity"
    assert ios_compat.difference(same, other) == "no: block 0 node 0 (conv) differs in act"


def test_imports_of_the_original_package_are_rewritten(tmp_path):
    source = ("import ios\nfrom ios.models.common import *\nfrom ios.ir import Graph, Conv\nimport iosx\n"
              "from ios.visualizer import draw\nfrom ios.contrib import ios_runtime\nfrom ios.cost_model import *\n")
    text, changed = ios_compat.rewrite_imports(source, tmp_path / "f.py")
    assert text.split("\n")[:7] == ["import ios_ray as ios", "from ios_ray.models.common import *",
                                    "from ios_ray.models.common import Graph, Conv", "import iosx",
                                    "from ios_ray.draw import draw", "from ios_ray import ios_runtime",
                                    "from ios_ray.cost_model import *"]
    assert len(changed) == 6
    namespace = {}
    exec("\n".join(line for line in text.split("\n") if "iosx" not in line), namespace)  # every import resolves
    with pytest.raises(ValueError, match="no import of the original"):
        ios_compat.rewrite_imports("import numpy\n", tmp_path / "f.py")
    with pytest.raises(ValueError, match="no inception_v3.py"):
        ios_compat.model_file(tmp_path, "inception_v3")


def test_the_original_readme_sample_script_runs(tmp_path):
    """The original's examples/sample.py flow, smaller, with ``import ios_ray as ios``."""
    v = ios.placeholder(output_shape=(8, 6, 6))
    block = ios.Block(enter_node=v.node)
    v1 = ios.conv2d(block, inputs=[[v]], out_channels=8, kernel=(3, 3), stride=(1, 1), padding=(1, 1), act='relu')
    v2 = ios.conv2d(block, inputs=[[v]], out_channels=16, kernel=(3, 3), stride=(1, 1), padding=(1, 1), act='relu')
    v3 = ios.conv2d(block, inputs=[[v]], out_channels=8, kernel=(3, 3), stride=(1, 1), padding=(1, 1), act='relu')
    v1 = ios.conv2d(block, inputs=[[v1]], out_channels=16, kernel=(3, 3), stride=(1, 1), padding=(1, 1), act='relu')
    ios.identity(block, inputs=[[v1], [v2], [v3]], is_exit=True)
    graph = ios.Graph(name="demo", input=v.node, blocks=[block])
    graph.init_weights()
    optimized_graph = ios.optimize(graph, batch_size=1, opt_type='dp_parallel', compute_weight=True,
                                   cost_model=ios.RandomCostModel(0), cost_table=False)
    graph.sequential_schedule()
    seq_latency, stage_latency = ios.ios_runtime.graph_latency(graph, batch_size=1, repeat=6, profile_stage=True)
    assert np.array(stage_latency).reshape(6, -1).shape == (6, 5) and len(seq_latency) == 6
    dummy_inputs = np.random.randn(1, 8, 6, 6)
    output = ios.ios_runtime.graph_inference(optimized_graph, batch_size=1, input=dummy_inputs)
    expected = ios.ios_runtime.graph_inference(graph, batch_size=1, input=dummy_inputs)
    np.testing.assert_allclose(output, expected, rtol=1e-4, atol=1e-5)
    ios.draw(optimized_graph, fname=str(tmp_path / "optimized_demo.svg"), label="Optimized Graph")
    assert (tmp_path / "optimized_demo.svg").read_text().startswith("<svg")


def test_inception_counts_as_the_original_counts_them():
    """The original's DP on its Inception-v3 (r=3, s=8): 1,206 states, 28,874 transitions, 5,479 stages."""
    import space as space_benchmark
    row = space_benchmark.run_model("inception_v3", ios_compat.SpaceOptions())
    assert (row["states_as_original"], row["transitions_as_original"], row["stage_identities_as_original"]) == \
        (1206, 28874, 5479)

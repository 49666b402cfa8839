"""Clear errors for hand-written graph files and schedules (names what is wrong, nothing else)."""
import pytest

import ios_ray as ios
from ios_ray.graph.serialize import graph_from_dict, graph_to_dict


def _sample():
    v = ios.placeholder(output_shape=(8, 6, 6))
    block = ios.Block(enter_node=v.node)
    v1 = ios.conv2d(block, inputs=[[v]], out_channels=8, kernel=(3, 3), padding=(1, 1))
    v2 = ios.conv2d(block, inputs=[[v1]], out_channels=8, kernel=(3, 3), padding=(1, 1))
    ios.identity(block, inputs=[[v2], [v]], is_exit=True)
    g = ios.Graph(name="demo", input=v.node, blocks=[block])
    g.sequential_schedule()
    return g


@pytest.mark.parametrize("attr,value", [("out_channels", "64"), ("groups", "1"), ("out_channels", True),
                                        ("kernel", ["3", "3"]), ("out_channels", 7.5)])
def test_a_string_or_non_integer_number_attribute_is_refused(attr, value):
    """Regression: "out_channels": "64" in a graph file was accepted (converted silently)."""
    d = graph_to_dict(_sample())
    d["blocks"][0]["nodes"][0][attr] = value
    with pytest.raises(ValueError, match=rf"conv_1.*{attr} must be an int"):
        graph_from_dict(d)


def test_a_missing_attribute_is_named_alone():
    """Regression: a conv without "kernel" listed the attributes it had as bad ones."""
    d = graph_to_dict(_sample())
    del d["blocks"][0]["nodes"][0]["kernel"]
    with pytest.raises(ValueError, match=r"node 'conv_1' \(conv\): missing attribute\(s\) \['kernel'\]$"):
        graph_from_dict(d)


def test_a_schedule_missing_an_operator_says_so():
    """Regression: a schedule without an operator that others read was reported as a dependency violation."""
    d = graph_to_dict(_sample())
    stages = d["blocks"][0]["stages"]
    first = stages.pop(0)  # the first conv, which the second reads
    with pytest.raises(ValueError, match=r"misses nodes \['conv_1'\]") as err:
        graph_from_dict(d)
    assert "dependency" not in str(err.value) and first

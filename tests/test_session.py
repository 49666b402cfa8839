"""InferenceSession on the CPU: numpy in and out, named inputs, DLPack tensors given back as the caller's
kind, ONNX paths and models, optimized graphs, and its errors. (GPU: tests/test_session_gpu.py.)"""
import numpy as np
import onnx
import pytest

import ios_ray
from ios_ray.ios_runtime import Device, graph_inference
from ios_ray.models import get_model
from ios_ray.session import InferenceSession

from onnx_models import MODELS
from test_onnx_import import assert_close, ort_run


class Foreign:
    """A tensor of another library, seen only through DLPack (its module offers ``from_dlpack``)."""

    def __init__(self, array, device_type: int = 1):
        self.array = array
        self.device_type = device_type

    def __dlpack__(self, **kwargs):
        return self.array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return (self.device_type, 0)


def from_dlpack(tensor) -> Foreign:
    """This module as the "library" of ``Foreign``: how a session gives its output back."""
    return Foreign(np.from_dlpack(tensor))


@pytest.fixture(scope="module")
def model():
    return MODELS["mobile_block"]()


def _x(batch: int = 2) -> np.ndarray:
    return np.random.default_rng(3).standard_normal((batch, 3, 11, 13)).astype(np.float32)


def test_numpy_in_numpy_out_equals_onnx_runtime(model):
    with InferenceSession(model, batch_size=2, device="cpu") as sess:
        assert sess.device is Device.CPU and sess.output_shape == (2, 10)
        y = sess.run(_x())
        assert isinstance(y, np.ndarray) and y.shape == (2, 10)
        assert_close(y, ort_run(model, _x()))
        np.testing.assert_array_equal(sess({"x": _x()}), y)      # named, as ONNX Runtime's feeds
        np.testing.assert_array_equal(sess([_x()]), y)


def test_dlpack_tensor_comes_back_as_the_callers_kind(model):
    sess = InferenceSession(model, batch_size=2, device="cpu")
    y = sess.run(Foreign(_x()))
    assert isinstance(y, Foreign)
    np.testing.assert_array_equal(y.array, sess.run(_x()))


def test_a_device_tensor_on_a_cpu_session_is_refused(model):
    sess = InferenceSession(model, batch_size=2, device="cpu")
    with pytest.raises(ValueError, match="DLPack device type 2.*give it a host array"):
        sess.run(Foreign(_x(), device_type=2))


def test_path_and_optimized_graph(model, tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    expected = ort_run(model, _x(1))
    assert_close(InferenceSession(str(path), device="cpu").run(_x(1)), expected)
    graph = ios_ray.from_onnx(model)
    opt = ios_ray.optimize(graph, batch_size=1, cost="analytic:H200", compute_weight=True)
    sess = InferenceSession(opt, device="cpu")
    assert_close(sess.run(_x(1)), expected)
    # the IOS-compatible call gives the IR's (N, C, H, W)
    assert graph_inference(opt, 1, _x(1), device="cpu").shape == (1, 10, 1, 1)


def test_errors(model):
    with pytest.raises(ValueError, match="takes a Graph, an onnx.ModelProto or a .onnx path"):
        InferenceSession("model.json")
    graph = get_model("sample")
    with pytest.raises(ValueError, match="has no weights"):
        InferenceSession(graph, device="cpu")
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        InferenceSession(model, batch_size=0, device="cpu")
    with pytest.raises(ValueError, match="device must be one of"):
        InferenceSession(model, device="tpu")
    with pytest.raises(ValueError, match=r"input has shape \(1, 3, 11, 13\), expected \(2, 3, 11, 13\)"):
        InferenceSession(model, batch_size=2, device="cpu").run(_x(1))

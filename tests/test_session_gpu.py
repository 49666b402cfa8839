"""InferenceSession on the GPU (marked ``gpu``: skipped without CuPy and a CUDA device): the captured
program replayed per call, CuPy and PyTorch CUDA tensors in and out without a trip through the host."""
import numpy as np
import pytest

import ios_ray
from ios_ray.ios_runtime import Device
from ios_ray.session import InferenceSession

from onnx_models import MODELS
from test_onnx_import import ort_run

pytestmark = pytest.mark.gpu
RTOL = 1e-3   # cuDNN's fp32 algorithms against ONNX Runtime's CPU kernels


def _close(y, expected):
    y = np.asarray(y).reshape(expected.shape)
    assert np.abs(y - expected).max() <= RTOL * np.abs(expected).max()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gpu_session_equals_onnx_runtime_before_and_after_optimize(name):
    model = MODELS[name]()
    graph = ios_ray.from_onnx(model)
    x = np.random.default_rng(0).standard_normal((2, *graph.input.output_shape)).astype(np.float32)
    expected = ort_run(model, x)
    sess = InferenceSession(graph, batch_size=2)
    assert sess.device is Device.GPU
    _close(sess.run(x), expected)
    _close(sess.run(x), expected)     # replayed
    opt = ios_ray.optimize(graph, batch_size=2, cost="gpu", compute_weight=True, cost_table=False)
    _close(InferenceSession(opt, batch_size=2).run(x), expected)


def test_cupy_in_cupy_out():
    import cupy
    model = MODELS["mobile_block"]()
    sess = InferenceSession(model, batch_size=1, device="gpu")
    x = np.random.default_rng(1).standard_normal((1, 3, 11, 13)).astype(np.float32)
    y = sess.run(cupy.asarray(x))
    assert isinstance(y, cupy.ndarray) and y.shape == (1, 10)
    _close(cupy.asnumpy(y), ort_run(model, x))


def test_torch_cuda_tensor_in_and_out():
    torch = pytest.importorskip("torch")
    model = MODELS["mobile_block"]()
    sess = InferenceSession(model, batch_size=1, device="cuda")
    x = torch.randn(1, 3, 11, 13, device="cuda")
    y = sess(x)
    assert isinstance(y, torch.Tensor) and y.is_cuda and tuple(y.shape) == (1, 10)
    _close(y.cpu().numpy(), ort_run(model, x.cpu().numpy()))

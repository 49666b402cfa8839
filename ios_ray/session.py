"""``InferenceSession``: run a (optimized) graph many times, the way ONNX Runtime's session is used.

Data flow::

    Graph / .onnx path / ModelProto --from_onnx--> Graph (its schedule, else the sequential one)
      --executor built once for (graph, batch size, device)--> GPU: the program lowered and captured as
                                                               one CUDA graph; CPU: the numpy reference
      run(x): x as the executor wants it   --replay-->   the output, returned as the caller's kind

What goes in and comes out: a numpy array gives a numpy array. On the GPU, a CuPy array, or any tensor
with ``__dlpack__`` on the device (a PyTorch CUDA tensor), is read on the device and the result is
returned on the device as the caller's kind (through its module's ``from_dlpack``): nothing goes
through the host. A host DLPack tensor (a PyTorch CPU tensor) is read through ``numpy.from_dlpack``
and given back through its module's ``from_dlpack``. The output is ``(N, C, H, W)``, or ``(N, F)`` when
the graph ends in a ``Linear`` (a Gemm/MatMul head), as ONNX Runtime gives it.

``graph_inference`` (``ios_runtime``) stays the IOS-compatible one-shot call; a session keeps its
executor (and on the GPU its captured graph) between calls.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Mapping, Optional, Tuple, Union

import numpy as np

from .graph.ir import Graph
from .graph.ops_extra import Linear
from .ios_runtime import Device, _executor_for, _resolve, reference_threads

# DLPack device types (dlpack.h): where a tensor lives
DLPACK_CPU = 1
DLPACK_CUDA = (2, 3, 13)   # kDLCUDA, kDLCUDAHost, kDLCUDAManaged


def load_model(graph_or_path) -> Graph:
    """A Graph from a Graph, an ``onnx.ModelProto`` or a ``.onnx`` path.

    Raises:
        ValueError: anything else, or a graph without weights.
    """
    if isinstance(graph_or_path, Graph):
        graph = graph_or_path
    elif isinstance(graph_or_path, (str, os.PathLike)) and os.fspath(graph_or_path).endswith(".onnx") \
            or type(graph_or_path).__name__ == "ModelProto":
        from .onnx_import import from_onnx
        graph = from_onnx(graph_or_path)
    else:
        raise ValueError(f"InferenceSession takes a Graph, an onnx.ModelProto or a .onnx path, got {graph_or_path!r}")
    if not graph.has_weights():
        raise ValueError(f"graph {graph.name!r} has no weights: call graph.init_weights() or load_weights first")
    return graph


def _dlpack_device(x) -> Optional[int]:
    """The DLPack device type of ``x``, or None when it is no DLPack tensor."""
    probe = getattr(x, "__dlpack_device__", None)
    return int(probe()[0]) if probe is not None and hasattr(x, "__dlpack__") else None


def _caller_module(x):
    """The module whose ``from_dlpack`` turns our output back into the caller's kind (None: numpy)."""
    if isinstance(x, np.ndarray):
        return None
    module = sys.modules.get(type(x).__module__.split(".")[0])
    return module if callable(getattr(module, "from_dlpack", None)) else None


def _single_input(inputs) -> Any:
    """The one input tensor of ``inputs``: the tensor itself, or a one-entry dict/list/tuple of it."""
    if isinstance(inputs, Mapping):
        if len(inputs) != 1:
            raise ValueError(f"the graph has one input; got {len(inputs)} named inputs {sorted(inputs)}")
        return next(iter(inputs.values()))
    if isinstance(inputs, (list, tuple)) and len(inputs) == 1 and not np.isscalar(inputs[0]):
        return inputs[0]
    return inputs


class InferenceSession:
    """A graph ready to run repeatedly on one device at one batch size.

    Args:
        graph_or_path: a Graph with weights (an optimized one runs its schedule), an ``onnx.ModelProto``
            or a ``.onnx`` path (imported with ``from_onnx``, run sequentially).
        batch_size: the batch every input must have.
        device: ``"gpu"``/``"cuda"``, ``"cpu"``, or None for the GPU when one is usable, else the CPU.
    Raises:
        ValueError: a bad model, a graph without weights, a bad batch size or device name.
        GpuUnavailableError: ``device="gpu"`` without CuPy, a CUDA device or cuDNN.
    """

    def __init__(self, graph_or_path, batch_size: int = 1, device: Union[str, Device, None] = None):
        self.graph = load_model(graph_or_path)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
        self.batch_size = int(batch_size)
        requested = "gpu" if isinstance(device, str) and device.lower() == "cuda" else device
        self.device: Device = _resolve(Device.AUTO if requested is None else requested)
        self._threads = reference_threads(self.graph)
        self._executor = _executor_for(self.graph, self.batch_size, self.device)   # on the GPU: captured once

    @property
    def input_shape(self) -> Tuple[int, int, int, int]:
        return (self.batch_size, *self.graph.input.output_shape)

    @property
    def output_shape(self) -> Tuple[int, ...]:
        c, h, w = self.graph.output_shape
        return (self.batch_size, c) if isinstance(self.graph.blocks[-1].exit_node, Linear) else (self.batch_size, c, h, w)

    def run(self, inputs):
        """The graph's output for ``inputs`` (a tensor, or a one-entry dict or list of it), as the caller's kind.

        Raises:
            ValueError: a wrong shape, or a device tensor given to a CPU session.
        """
        x = _single_input(inputs)
        kind = _dlpack_device(x)
        module = _caller_module(x)
        if self.device is Device.GPU and kind in DLPACK_CUDA:
            y = self._executor.run_device(x)       # device in, device out: no host copy
            return y.reshape(self.output_shape) if module is None or module.__name__ == "cupy" \
                else module.from_dlpack(y.reshape(self.output_shape))
        if kind is not None and kind != DLPACK_CPU:
            raise ValueError(f"the input lives on DLPack device type {kind}; this session runs on the "
                             f"{self.device.value}: give it a host array")
        host = np.from_dlpack(x) if kind == DLPACK_CPU and not isinstance(x, np.ndarray) else np.asarray(x)
        y = self._run_host(host).reshape(self.output_shape)
        return y if module is None else module.from_dlpack(y)

    __call__ = run

    def _run_host(self, x: np.ndarray) -> np.ndarray:
        if self.device is Device.CPU:
            from .profile.cpu import cpu_threads
            with cpu_threads(self._threads):
                return self._executor.run(x)
        return self._executor.run(x)

    def close(self) -> None:
        """Free the executor's buffers (and captured graph) now."""
        if self._executor is not None:
            self._executor.close()
            self._executor = None

    def __enter__(self) -> "InferenceSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["InferenceSession", "load_model"]

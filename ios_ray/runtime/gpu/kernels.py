"""Our CUDA kernels (pooling, element-wise, bias+activation, scale-shift, channel multiply): from ``cuda_kernels/*.cu``.

Data flow: ``kernel_dir()`` finds the .cu sources -> ``Kernels(device_id)`` compiles each file once per
device with ``cupy.RawModule`` (NVRTC) -> the launch functions check shapes, dtypes and layout, then
launch with an explicit grid and block on the *current* CuPy stream (callers enter a stream first).

Tensors are CuPy arrays of shape (N, C, H, W), float32, where each image's C*H*W values are contiguous
(an NCHW buffer or a channel slice of one). Kernels take a base pointer and a batch stride.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Sequence, Tuple

import numpy as np

from ...graph.ops import Window, window_out_hw
from .errors import GpuRuntimeError

# the kernels' activation codes (cuda_kernels/elementwise.cu's apply_act); clip and hardsigmoid take two
# parameters (a, b), and relu6 is clip with (0, 6)
ACT_CODES = {"identity": 0, "relu": 1, "tanh": 2, "sigmoid": 3, "clip": 4, "hardsigmoid": 5, "hardswish": 6, "silu": 7}
ACT_ALIASES = {"relu6": ("clip", (0.0, 6.0))}
OP_CODES = {"add": 0, "mul": 1}
_BLOCK = 256
_MAX_BLOCKS = 65535 * 4
_NVRTC_OPTIONS = ("-std=c++17",)


def kernel_dir() -> Path:
    """The folder holding the .cu sources.

    Looks for ``cuda_kernels/`` at the repository root (next to the ``ios_ray`` package), then for an
    installed ``ios_ray/cuda_kernels`` package-data copy.

    Raises:
        GpuRuntimeError: neither exists.
    """
    package = Path(__file__).resolve().parents[2]          # .../ios_ray
    candidates = [package.parent / "cuda_kernels", package / "cuda_kernels"]
    env = os.environ.get("IOS_RAY_KERNEL_DIR")
    if env:
        candidates.insert(0, Path(env))
    for c in candidates:
        if (c / "pool2d.cu").is_file():
            return c
    raise GpuRuntimeError(f"CUDA kernel sources not found; looked in {', '.join(str(c) for c in candidates)}")


@functools.lru_cache(maxsize=None)
def _module(device_id: int, filename: str):
    """The compiled module of one .cu file on one device (compiled at most once per process)."""
    import cupy
    source = (kernel_dir() / filename).read_text()
    with cupy.cuda.Device(device_id):
        module = cupy.RawModule(code=source, options=_NVRTC_OPTIONS)
        module.compile()
    return module


def _grid(total: int) -> tuple:
    return (max(1, min((total + _BLOCK - 1) // _BLOCK, _MAX_BLOCKS)),)


def act_launch_args(act: str, args: Sequence[float] = (0.0, 0.0)) -> Tuple[np.int32, np.float32, np.float32]:
    """The kernels' ``(act code, a, b)`` for activation ``act`` with parameters ``args`` (see ``ACT_CODES``).

    Raises:
        GpuRuntimeError: an activation the kernels do not know.
    """
    act, args = ACT_ALIASES.get(act, (act, args))
    if act not in ACT_CODES:
        raise GpuRuntimeError(f"unknown activation {act!r}; the kernels know {sorted(ACT_CODES)} and "
                              f"{sorted(ACT_ALIASES)}")
    return np.int32(ACT_CODES[act]), np.float32(args[0]), np.float32(args[1])


def _check_channel_vector(v, c: int, what: str) -> None:
    if v.dtype != np.float32 or v.size != c or not v.flags.c_contiguous:
        raise GpuRuntimeError(f"{what} must be {c} contiguous float32 values, got {v.shape} {v.dtype}")


def batch_stride(a) -> int:
    """Elements between consecutive images of an (N, C, H, W) float32 array."""
    return a.strides[0] // 4


def check_tensor(a, what: str) -> None:
    """Raise unless ``a`` is an (N, C, H, W) float32 CuPy array with contiguous images."""
    import cupy
    if not isinstance(a, cupy.ndarray):
        raise GpuRuntimeError(f"{what}: expected a CuPy array, got {type(a).__name__}")
    if a.dtype != np.float32 or a.ndim != 4:
        raise GpuRuntimeError(f"{what}: expected a 4-D float32 array, got {a.ndim}-D {a.dtype}")
    _, c, h, w = a.shape
    if a.strides[1:] != (h * w * 4, w * 4, 4) or a.strides[0] % 4:
        raise GpuRuntimeError(f"{what}: each image must be contiguous (a channel slice of an NCHW buffer); "
                              f"strides are {a.strides}")


class Kernels:
    """Launchers for one device. Cheap to create: the modules are compiled once per device and cached."""

    def __init__(self, device_id: int = 0):
        self.device_id = int(device_id)
        self._pool = _module(self.device_id, "pool2d.cu")
        self._ew = _module(self.device_id, "elementwise.cu")
        self._k_max = self._pool.get_function("max_pool2d")
        self._k_avg = self._pool.get_function("avg_pool2d")
        self._k_gavg = self._pool.get_function("global_avg_pool2d")
        self._k_nary = self._ew.get_function("ew_nary")
        self._k_bias_act = self._ew.get_function("bias_act")
        self._k_scale_shift = self._ew.get_function("scale_shift_act")
        self._k_channel_mul = self._ew.get_function("channel_mul")

    # ----- element-wise -------------------------------------------------------------------------
    def nary(self, out, sources: Sequence, op: str = "add", act: str = "identity",
             act_args: Sequence[float] = (0.0, 0.0)) -> None:
        """``out = act(sources[0] op sources[1] op ...)``; any number of sources (chained by fours).

        ``out`` may be one of the sources only as the first one. ``act_args``: the parameters of a
        parametric activation (clip's bounds, hardsigmoid's alpha and beta).
        """
        if not sources:
            raise GpuRuntimeError("nary: needs at least one source")
        if op not in OP_CODES or (act not in ACT_CODES and act not in ACT_ALIASES):
            raise GpuRuntimeError(f"nary: op must be in {sorted(OP_CODES)} and act in "
                                  f"{sorted(ACT_CODES) + sorted(ACT_ALIASES)}; got {op!r}, {act!r}")
        code, act_a, act_b = act_launch_args(act, act_args)
        check_tensor(out, "nary output")
        for i, s in enumerate(sources):
            check_tensor(s, f"nary source {i}")
            if s.shape != out.shape:
                raise GpuRuntimeError(f"nary: source {i} has shape {s.shape}, output {out.shape}")
        n, c, h, w = out.shape
        chw = c * h * w
        srcs = list(sources)
        first = True
        while srcs:
            chunk = srcs[:4] if first else [out] + srcs[:3]
            srcs = srcs[4:] if first else srcs[3:]
            last = not srcs
            args = [out, np.int64(batch_stride(out))]
            for j in range(4):
                s = chunk[j] if j < len(chunk) else chunk[0]
                args += [s, np.int64(batch_stride(s))]
            args += [np.int32(len(chunk)), np.int32(OP_CODES[op]), code if last else np.int32(0), act_a, act_b,
                     np.int32(n), np.int64(chw)]
            self._k_nary(_grid(n * chw), (_BLOCK,), tuple(args))
            first = False

    def bias_act(self, y, bias, act: str) -> None:
        """In place: ``y[:, c] = act(y[:, c] + bias[c])``."""
        check_tensor(y, "bias_act tensor")
        n, c, h, w = y.shape
        _check_channel_vector(bias, c, "bias_act: bias")
        code, act_a, act_b = act_launch_args(act)
        self._k_bias_act(_grid(n * c * h * w), (_BLOCK,),
                         (y, np.int64(batch_stride(y)), bias, np.int32(n), np.int32(c), np.int32(h * w), code, act_a,
                          act_b))

    def scale_shift(self, x, y, scale, shift, act: str = "identity") -> None:
        """``y[:, c] = act(x[:, c] * scale[c] + shift[c])`` (``y`` may be ``x``)."""
        check_tensor(x, "scale_shift input")
        check_tensor(y, "scale_shift output")
        if x.shape != y.shape:
            raise GpuRuntimeError(f"scale_shift: input {x.shape} and output {y.shape} differ")
        n, c, h, w = y.shape
        _check_channel_vector(scale, c, "scale_shift: scale")
        _check_channel_vector(shift, c, "scale_shift: shift")
        code, act_a, act_b = act_launch_args(act)
        self._k_scale_shift(_grid(n * c * h * w), (_BLOCK,),
                            (y, np.int64(batch_stride(y)), x, np.int64(batch_stride(x)), scale, shift, np.int32(n),
                             np.int32(c), np.int32(h * w), code, act_a, act_b))

    def channel_mul(self, x, gate, y) -> None:
        """``y[n, c] = x[n, c] * gate[n, c]`` for an ``(N, C, 1, 1)`` gate (``y`` may be ``x``)."""
        check_tensor(x, "channel_mul input")
        check_tensor(gate, "channel_mul gate")
        check_tensor(y, "channel_mul output")
        n, c, h, w = y.shape
        if x.shape != y.shape or gate.shape != (n, c, 1, 1):
            raise GpuRuntimeError(f"channel_mul: input {x.shape}, gate {gate.shape} and output {y.shape} do not "
                                  f"fit (the gate must be {(n, c, 1, 1)})")
        self._k_channel_mul(_grid(n * c * h * w), (_BLOCK,),
                            (y, np.int64(batch_stride(y)), x, np.int64(batch_stride(x)), gate,
                             np.int64(batch_stride(gate)), np.int32(n), np.int32(c), np.int32(h * w)))

    # ----- pooling -------------------------------------------------------------------------------
    def pool2d(self, x, y, pool_type: str, kernel=(1, 1), window: Window = Window(),
               count_include_pad: bool = True) -> None:
        """Max / avg / global_avg pooling of ``x`` into ``y``.

        ``window`` gives the stride and padding (a pool has no groups or dilation); the kernels read the top
        and left pads and skip every position outside the input, so the bottom and right pads (``pad_end``)
        only set the output size. An avg pool divides by KH*KW (padding counted) unless ``count_include_pad``
        is False.
        """
        check_tensor(x, "pool2d input")
        check_tensor(y, "pool2d output")
        n, c, h, w = x.shape
        if pool_type == "global_avg":
            if y.shape != (n, c, 1, 1):
                raise GpuRuntimeError(f"global_avg pool: output must be {(n, c, 1, 1)}, got {y.shape}")
            warps = _BLOCK // 32
            planes = n * c
            self._k_gavg(((planes + warps - 1) // warps,), (_BLOCK,),
                         (x, np.int64(batch_stride(x)), y, np.int64(batch_stride(y)), np.int32(n), np.int32(c),
                          np.int32(h * w)))
            return
        kh, kw = kernel
        sh, sw = window.stride
        ph, pw = window.padding
        oh, ow = window_out_hw(h, w, kernel, window)
        if y.shape != (n, c, oh, ow):
            raise GpuRuntimeError(f"{pool_type} pool: output must be {(n, c, oh, ow)}, got {y.shape}")
        if pool_type not in ("max", "avg"):
            raise GpuRuntimeError(f"pool2d: pool_type must be max, avg or global_avg, got {pool_type!r}")
        args = [x, np.int64(batch_stride(x)), y, np.int64(batch_stride(y)), np.int32(n), np.int32(c), np.int32(h),
                np.int32(w), np.int32(oh), np.int32(ow), np.int32(kh), np.int32(kw), np.int32(sh), np.int32(sw),
                np.int32(ph), np.int32(pw)]
        if pool_type == "max":
            self._k_max(_grid(n * c * oh * ow), (_BLOCK,), tuple(args))
        else:   # avg_pool2d's last argument: divide by the whole window (1) or by its input elements (0)
            self._k_avg(_grid(n * c * oh * ow), (_BLOCK,), tuple(args + [np.int32(bool(count_include_pad))]))

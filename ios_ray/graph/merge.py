"""Which convolutions can become one (IOS "merge"), and the parameters of the conv they become.

A graph-level rule, shared by the state space (which merge stages exist, their canonical spec), the
optimizer (which rewrites a merge stage into one conv) and the runtime (the merged weights).
"""
from __future__ import annotations

from typing import Sequence

from .ir import Conv, Node


def merged_conv_params(convs: Sequence[Conv]) -> dict:
    """Parameters of the conv that computes ``convs`` at once.

    Kernels are zero-padded and centred to the largest kernel; this is exact only when every conv's
    padding plus its centring offset equals the merged padding, which is checked here.

    Args:
        convs: at least two convolutions reading one identical input value.
    Returns:
        ``{"out_channels", "kernel", "stride", "padding", "groups", "act"}`` of the merged conv (its
        output channels are the members' in the given order).
    Raises:
        ValueError: naming the conv that cannot be merged, and why.
    """
    if len(convs) < 2:
        raise ValueError("a merge needs at least two convolutions")
    first = convs[0]
    for c in convs:
        if not isinstance(c, Conv):
            raise ValueError(f"{c.display()} is not a convolution and cannot be merged")
        if c.groups != 1:
            raise ValueError(f"{c.display()}: grouped convolutions are not merged")
        if c.dilation != (1, 1) or c.pad_end != c.padding:
            raise ValueError(f"{c.display()}: dilated or asymmetrically padded convolutions are not merged")
        if c.act != first.act or c.stride != first.stride:
            raise ValueError(f"{c.display()}: stride and activation must match {first.display()}")
        if len(c.inputs) != 1 or len(c.inputs[0]) != 1 or c.inputs[0][0] != first.inputs[0][0] \
                or len(first.inputs) != 1 or len(first.inputs[0]) != 1:
            raise ValueError(f"{c.display()}: merged convs must read one identical input value")
        if c.output_shape[1:] != first.output_shape[1:]:
            raise ValueError(f"{c.display()}: output resolution differs from {first.display()}")
    kh = max(c.kernel[0] for c in convs)
    kw = max(c.kernel[1] for c in convs)
    ph = pw = None
    for c in convs:
        dh, dw = kh - c.kernel[0], kw - c.kernel[1]
        if dh % 2 or dw % 2:
            raise ValueError(f"{c.display()}: kernel {c.kernel} cannot be centred in {kh}x{kw}")
        h, w = c.padding[0] + dh // 2, c.padding[1] + dw // 2
        if ph is None:
            ph, pw = h, w
        elif (h, w) != (ph, pw):
            raise ValueError(f"{c.display()}: its padding does not line up with the merged {kh}x{kw} kernel")
    return {"out_channels": sum(c.out_channels for c in convs), "kernel": (kh, kw), "stride": first.stride,
            "padding": (ph, pw), "groups": 1, "act": first.act}


def can_merge(nodes: Sequence[Node]) -> bool:
    """Whether ``nodes`` can be computed by one convolution (``merged_conv_params`` accepts them)."""
    try:
        merged_conv_params(nodes)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True

"""Weights of derived operators: the merged convolution of an IOS "merge" stage.

Data flow: member convs (same input, stride, act) -> ``merged_conv_params`` (graph.merge: merged kernel,
padding, out channels) -> ``merged_conv_weights`` -> (weight, bias) of the one conv that computes them
all; its output channels are the members' outputs concatenated in the given order.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from ..graph.ir import Conv
from ..graph.merge import merged_conv_params


def merged_conv_weights(convs: Sequence[Conv], params: Optional[dict] = None) -> Tuple[np.ndarray, np.ndarray]:
    """The merged conv's ``(weight, bias)``: members concatenated on out channels, kernels zero-padded centred.

    Args:
        convs: the member convolutions, in the order their outputs appear in the merged output.
        params: ``merged_conv_params(convs)`` if already computed (computed here otherwise).
    Returns:
        weight ``(sum O_i, C, KH, KW)`` and bias ``(sum O_i,)``, float32.
    Raises:
        ValueError: the convs cannot be merged, or one of them has no weights (call graph.init_weights()).
    """
    if params is None:
        params = merged_conv_params(convs)
    kh, kw = params["kernel"]
    for c in convs:
        if c.weight is None or c.bias is None:
            raise ValueError(f"{c.display()} has no weights; call graph.init_weights() before merging with "
                             f"compute_weight=True")
    in_channels = convs[0].weight.shape[1]
    weight = np.zeros((params["out_channels"], in_channels, kh, kw), dtype=np.float32)
    bias = np.zeros((params["out_channels"],), dtype=np.float32)
    offset = 0
    for c in convs:
        o, ci, ch, cw = c.weight.shape
        if ci != in_channels:
            raise ValueError(f"{c.display()}: weight reads {ci} input channels, {convs[0].display()} reads "
                             f"{in_channels}")
        top, left = (kh - ch) // 2, (kw - cw) // 2
        weight[offset:offset + o, :, top:top + ch, left:left + cw] = c.weight
        bias[offset:offset + o] = c.bias
        offset += o
    if offset != params["out_channels"]:
        raise ValueError(f"merged out_channels {params['out_channels']} differ from the members' total {offset}")
    return weight, bias

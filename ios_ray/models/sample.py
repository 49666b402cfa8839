"""The IOS README's sample network: 5 operators in one block, input 375x15x15.

Three 3x3 convs read the input (375, 750 and 375 channels); a fourth (750) follows the first; the
exit concatenates conv 4, conv 2 and conv 3 (1875x15x15). Small enough to check schedules by hand.
"""
from __future__ import annotations

from ..graph import Block, Graph, conv2d, identity, placeholder


def sample_network() -> Graph:
    """The README sample without weights (call ``graph.init_weights(seed)``)."""
    x = placeholder((375, 15, 15), name="input")
    block = Block(x.node)
    v1 = conv2d(block, [[x]], 375, kernel=3, padding=1, act="relu")
    v2 = conv2d(block, [[x]], 750, kernel=3, padding=1, act="relu")
    v3 = conv2d(block, [[x]], 375, kernel=3, padding=1, act="relu")
    v1 = conv2d(block, [[v1]], 750, kernel=3, padding=1, act="relu")
    identity(block, [[v1], [v2], [v3]], is_exit=True)
    return Graph("demo", x.node, [block])

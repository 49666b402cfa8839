"""The IOS README's sample network: 5 operators in one block, input 375x15x15.

Three 3x3 convs read the input (375, 750 and 375 channels); a fourth (750) follows the first; the
exit concatenates conv 4, conv 2 and conv 3 (1875x15x15). Small enough to check schedules by hand.
"""
from __future__ import annotations

from ..graph import Block, Graph, conv2d, identity, placeholder


def sample_network(channels: int = 375, size: int = 15) -> Graph:
    """The README sample without weights (call ``graph.init_weights(seed)``).

    ``channels``/``size`` shrink it with the same topology (tests); nodes are named conv1..conv4, concat.
    """
    c = channels
    x = placeholder((c, size, size), name="input")
    block = Block(x.node)
    v1 = conv2d(block, [[x]], c, kernel=3, padding=1, act="relu", name="conv1")
    v2 = conv2d(block, [[x]], 2 * c, kernel=3, padding=1, act="relu", name="conv2")
    v3 = conv2d(block, [[x]], c, kernel=3, padding=1, act="relu", name="conv3")
    v1 = conv2d(block, [[v1]], 2 * c, kernel=3, padding=1, act="relu", name="conv4")
    identity(block, [[v1], [v2], [v3]], is_exit=True, name="concat")
    return Graph("demo", x.node, [block])

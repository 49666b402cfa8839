"""Graph IR, builder API, schedules and serialisation."""
from .builder import add, conv2d, element, identity, mul, multiply, placeholder, pool2d, relu, sep_conv
from .compound import Activation, Sequential   # declared in the op registry on import, like every op
from .ops_extra import ChannelMul, Linear, ScaleShift   # likewise
from .ir import Block, Conv, Element, Graph, Identity, Node, Placeholder, Pool, Relu, SepConv, Value
from .schedule import Stage, Strategy, check_schedule, format_schedule, greedy_schedule, sequential_schedule

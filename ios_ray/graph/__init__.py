"""Graph IR, builder API, schedules and serialisation."""
from .builder import add, conv2d, element, identity, mul, multiply, placeholder, pool2d, relu, sep_conv
from .ir import Block, Conv, Element, Graph, Identity, Node, Placeholder, Pool, Relu, SepConv, Value
from .schedule import Stage, Strategy, check_schedule, format_schedule, greedy_schedule, sequential_schedule

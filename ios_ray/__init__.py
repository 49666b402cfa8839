"""ios_ray: inter-operator scheduling (IOS) for CNN inference, with stage profiling on Ray.

Pipeline: graph (IR, builder) -> space (states, candidate stages, keys) -> costs (cost sources, Arrow
table) -> dp (optimal stages) -> schedule on a new Graph -> runtime (numpy reference, CuPy/cuDNN).
"""
from .graph import (Block, Graph, Stage, Strategy, Value, add, conv2d, element, identity, mul, multiply,
                    placeholder, pool2d, relu, sep_conv)

from . import ios_runtime
from .optimizer import OptimizeReport, optimize

__version__ = "0.1.0"

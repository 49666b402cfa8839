"""ios_ray: inter-operator scheduling (IOS) for CNN inference, with stage profiling on Ray.

Pipeline: graph (IR, builder) -> space (states, candidate stages, keys) -> costs (cost sources, Arrow
table) -> dp (optimal stages) -> schedule on a new Graph -> runtime (numpy reference, CuPy/cuDNN).

The top level also offers what the original ``ios`` package did, so ``import ios_ray as ios`` runs its
scripts: ``optimize``, ``Graph``, ``Block``, the builders (the original's ``activation``, ``addition``,
``element``, ``multiply``, ``sep_conv``, ``sequential``, ``sigmoid``, ``tanh`` and ``reset_name`` from
``models.common``), ``models``, ``ios_runtime``, ``draw`` and the cost-model names (``IOSCostModel``,
``RandomCostModel``).

Beyond the original: ``from_onnx`` (an ONNX CNN as a Graph with its weights and blocks) and
``InferenceSession`` (a graph run repeatedly: its GPU program captured once, numpy/CuPy/DLPack in and out).
"""
from .graph import Block, Graph, Stage, Strategy, Value, add, conv2d, identity, mul, placeholder, pool2d, relu

from . import ios_runtime, models
from .cost_model import CostModel, IOSCostModel, RandomCostModel
from .draw import draw
from .models.common import (activation, addition, element, multiply, new_name, reset_name, sep_conv, sequential,
                            sigmoid, tanh)
from .onnx_import import OnnxImportError, from_onnx
from .optimizer import OptimizeReport, optimize
from .session import InferenceSession

__version__ = "0.1.0"

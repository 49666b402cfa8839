"""Executors: the numpy reference runtime (here) and the CuPy/cuDNN GPU runtime (``runtime.gpu``; its
executors need CuPy and a CUDA device).

Pick one through ``ios_ray.ios_runtime`` (``graph_inference``/``graph_latency``); use these directly
for single operators (``run_node``) or merged-conv weights (``merged_conv_weights``).
"""
from ..graph.ops import Window
from .reference import (ReferenceExecutor, SepWeights, UnsupportedOpError, check_weights, conv2d, element,
                        gather_inputs, gather_terms, pool2d, run_node, sep_conv, sequential_stages,
                        stages_or_sequential)
from .weights import merged_conv_weights

__all__ = ["ReferenceExecutor", "SepWeights", "UnsupportedOpError", "Window", "check_weights", "conv2d", "element",
           "gather_inputs", "gather_terms", "merged_conv_weights", "pool2d", "run_node", "sep_conv",
           "sequential_stages", "stages_or_sequential"]

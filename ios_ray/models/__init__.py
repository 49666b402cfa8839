"""The benchmark networks of the IOS paper, built with the IOS-style builder API.

Each builder returns an ``ios_ray.Graph`` without weights (call ``graph.init_weights(seed)``).
Operator counts match the paper's table: Inception-v3 119, RandWire 120, NASNet-A large 374,
SqueezeNet 50; the README sample network has 5. ``get_model`` looks a network up by name.
RandWire and NASNet are the original IOS's networks (its stored graphs; NASNet one block with a part
per cell), built with ``common``: the original's model-building module, for its model files.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Callable, Mapping

from ..graph import Graph
from .inception_v3 import inception_v3
from .nasnet import nasnet_large
from .randwire import randwire_large
from .sample import sample_network
from .squeezenet import squeezenet

MODELS: Mapping[str, Callable[[], Graph]] = MappingProxyType({
    "inception_v3": inception_v3,
    "randwire": randwire_large,
    "nasnet": nasnet_large,
    "squeezenet": squeezenet,
    "sample": sample_network,
})


def get_model(name: str) -> Graph:
    """Build the named network (a fresh graph each call).

    Raises:
        ValueError: for a name not in ``MODELS``; the message lists the valid names.
    """
    try:
        builder = MODELS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}") from None
    return builder()


__all__ = ["MODELS", "get_model", "inception_v3", "nasnet_large", "randwire_large", "sample_network", "squeezenet"]

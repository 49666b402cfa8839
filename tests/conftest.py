"""Shared test setup: the default cost table lives in a per-session temp dir, never in ~/.cache."""
import os
import tempfile

import pytest

_CACHE = tempfile.mkdtemp(prefix="ios_ray_test_cache_")
os.environ.setdefault("IOS_RAY_CACHE", os.path.join(_CACHE, "costs"))


def pytest_collection_modifyitems(config, items):
    """GPU tests skip cleanly without CuPy + CUDA; everything else always runs."""
    try:
        from ios_ray.costs.factory import gpu_available
        has_gpu = gpu_available()
    except Exception:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

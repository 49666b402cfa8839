"""The Ray layer: cluster checks, the profiler pool, distributed enumeration and the profiling driver.

Everything here is glue around pure code: ``space`` enumerates, ``costs`` measures and stores,
``dp`` solves; this package only decides what runs where and survives workers that die.
"""
from ..profile.stages import ProfileOptions, ProfileReport
from .cluster import InsufficientResourcesError, WorkerResources, check_resources, connect
from .driver import DeviceMismatchError, RayPoolOptions, profile_graph_space
from .enumerate import EnumerateReport, EnumerationError, enumerate_graph_distributed
from .profiler_pool import (PoolOptions, PoolReport, ProfilerPool, ProfilerPoolError, ProfileWorker, WorkersExhaustedError,
                            WorkerStartError, estimate_cost, make_batches)
from .progress import ProgressBar

__all__ = ["InsufficientResourcesError", "WorkerResources", "check_resources", "connect", "DeviceMismatchError",
           "ProfileOptions", "ProfileReport", "RayPoolOptions", "profile_graph_space", "EnumerateReport",
           "EnumerationError",
           "enumerate_graph_distributed", "PoolOptions", "PoolReport", "ProfilerPool", "ProfilerPoolError", "ProfileWorker",
           "WorkersExhaustedError", "WorkerStartError", "estimate_cost", "make_batches", "ProgressBar"]

"""The profiling driver on Ray: the one profiling path (``profile.stages``) over a pool of Ray actors.

Data flow::

    GraphSpace.specs {key: StageSpec}, a cost-source recipe (or its string form, or a CostSource object)
        --connect, check resources--> a Ray pool (``open_ray_pool``), started only when a worker is needed;
          a GraphSpace's SpecTable goes to the workers once, and batches then carry keys only
        --profile_stages: device probe, table hits (same software), pool.measure, chunked appends-->
        --> {key: Measurement} for every key, ProfileReport

The driver decides only where the work runs; what is measured and what is reused is
``profile.stages.profile_stages``, the same function in-process profiling goes through. The math mode
is the recipe's (``dtype``; for a CostSource object, the object's own).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from ..costs.factory import CostArg, SourceRecipe, resolve_cost
from ..costs.measurement import DeviceInfo, Measurement, MeasureSettings
from ..profile.stages import (DeviceMismatchError, OnResult, PoolStats, ProfileOptions, ProfileReport,
                              profile_stages)
from ..space.enumerate import SpecTable
from ..space.stage import StageSpec
from .cluster import check_resources, connect
from .profiler_pool import PoolOptions, ProfilerPool

__all__ = ["DeviceMismatchError", "RayPoolOptions", "RayStagePool", "open_ray_pool", "profile_graph_space"]


@dataclass(frozen=True)
class RayPoolOptions:
    """Where and how the profiling actors run.

    Args:
        num_workers: profiling actors to start.
        address: Ray cluster to join (default: the running Ray, else a new local instance).
        cpus_per_worker: CPUs each actor reserves (GPU recipes also reserve one whole GPU).
        max_retries: times a stage may be lost to a dying worker before it is recorded as WORKER_DIED.
        task_timeout_s: treat a batch running longer than this as a hung worker.
        wait_for_autoscaler: wait for the cluster to grow instead of failing when it lacks resources.
    """
    num_workers: int
    address: Optional[str] = None
    cpus_per_worker: float = 1.0
    max_retries: int = 2
    task_timeout_s: Optional[float] = None
    wait_for_autoscaler: bool = False

    def __post_init__(self):
        if self.num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {self.num_workers}")


class RayStagePool:
    """A ``ProfilerPool`` as ``profile_stages`` sees it, started only when a worker is needed: a recipe
    whose device is the same in every process (the analytic model) is probed here, so a run that finds
    every stage in the table starts no actor. One pool serves any number of ``profile_stages`` calls (the
    lazy DP's rounds); given a catalog (a ``GraphSpace``'s ``SpecTable``) its batches travel as keys.
    Use ``open_ray_pool``; ``shutdown`` (or ``with``) stops the actors it started.
    """

    def __init__(self, recipe: SourceRecipe, options: RayPoolOptions, pool: Optional[ProfilerPool] = None,
                 catalog: Optional[Mapping[str, StageSpec]] = None):
        self._recipe = recipe
        self._options = options
        self._pool = pool
        self._own = pool is None
        self._catalog = catalog
        self.dtype = recipe.dtype
        self.num_workers = pool.num_workers if pool is not None else options.num_workers
        if pool is not None and catalog is not None:
            pool.use_catalog(catalog)

    def _started(self) -> ProfilerPool:
        if self._pool is None:
            o = self._options
            self._pool = ProfilerPool(o.num_workers, self._recipe, PoolOptions(
                cpus_per_worker=o.cpus_per_worker, max_retries=o.max_retries, task_timeout_s=o.task_timeout_s))
            if self._catalog is not None:
                self._pool.use_catalog(self._catalog)
        return self._pool

    def device(self) -> DeviceInfo:
        return self._recipe.local_device() or self._started().device()

    def devices(self) -> Dict[str, DeviceInfo]:
        return self._started().devices()

    def measure(self, specs: Mapping[str, StageSpec], batch_size: int, settings: MeasureSettings,
                on_result: Optional[OnResult] = None) -> Tuple[Dict[str, Measurement], PoolStats]:
        return self._started().measure(specs, batch_size, settings, on_result=on_result)

    def stream(self, specs: Mapping[str, StageSpec], batch_size: int, settings: MeasureSettings,
               on_result: Optional[OnResult] = None):
        """``ProfilerPool.stream``: keys measured while they are still being added."""
        return self._started().stream(specs, batch_size, settings, on_result=on_result)

    def shutdown(self) -> None:
        """Shut the pool down if this object started it (a pool passed in keeps running)."""
        if self._own and self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> "RayStagePool":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


def _specs_of(space: Any) -> Mapping[str, StageSpec]:
    specs = getattr(space, "specs", space)
    if not isinstance(specs, Mapping):
        raise TypeError(f"space must be a GraphSpace (with .specs) or a mapping key -> StageSpec, "
                        f"got {type(space).__name__}")
    return specs


def open_ray_pool(source: CostArg, workers: Union[int, RayPoolOptions], space: Any = None,
                  pool: Optional[ProfilerPool] = None) -> RayStagePool:
    """A Ray pool for ``profile_stages`` (connects to Ray; actors start when first needed).

    Args:
        source: a cost-source recipe, its string form or a picklable ``CostSource`` object.
        workers: the number of actors, or ``RayPoolOptions`` (only ``address`` counts when ``pool`` is given).
        space: the ``GraphSpace`` to be profiled, if any: its ``SpecTable`` goes to the workers once and
            batches of its keys travel as keys.
        pool: an already started pool of this source's actors to use (kept running on ``shutdown``).
    Returns:
        A ``RayStagePool``; shut it down when done.
    Raises:
        InsufficientResourcesError: when waiting for an autoscaler, the cluster never grew enough.
    """
    recipe = resolve_cost(source)
    ray_options = workers if isinstance(workers, RayPoolOptions) else RayPoolOptions(int(workers))
    connect(ray_options.address)
    if pool is None and ray_options.wait_for_autoscaler:
        check_resources(ray_options.num_workers, recipe.resources(ray_options.cpus_per_worker),
                        wait_for_autoscaler=True)
    specs = getattr(space, "specs", None)
    return RayStagePool(recipe, ray_options, pool, specs if isinstance(specs, SpecTable) else None)


def profile_graph_space(space: Any, source: CostArg, workers: Union[int, RayPoolOptions], table=None,
                        options: ProfileOptions = ProfileOptions(), pool: Optional[ProfilerPool] = None
                        ) -> Tuple[Dict[str, Measurement], ProfileReport]:
    """Measure every distinct stage of ``space`` once, on Ray actors, reusing the cost table.

    Args:
        space: a ``GraphSpace`` (its ``specs``: then batches travel as keys) or a mapping key -> StageSpec.
        source: a cost-source recipe, its string form (``"cpu"``, ``"gpu-tf32"``, ``"analytic:V100"``) or
            a picklable ``CostSource`` object; each actor builds (or unpickles) its own.
        workers: the number of actors, or ``RayPoolOptions`` (ignored but for ``address`` when ``pool``
            is given).
        table: a ``CostTable`` to read cache hits from and append new measurements to, or None.
        options: batch size, timing settings, progress bar, append chunking (``ProfileOptions``).
        pool: an already started pool of this source's actors to use (kept running); by default one is
            started when needed and shut down at the end.

    Returns:
        ``({key: Measurement}`` for every key of the space (cache hits included), ``ProfileReport)``.

    Raises:
        InsufficientResourcesError: the cluster cannot hold the workers of this source.
        DeviceMismatchError: the workers measure on different devices or software.
        WorkerStartError, WorkersExhaustedError: see ``ProfilerPool``.
    """
    specs = _specs_of(space)
    with open_ray_pool(source, workers, space, pool) as ray_pool:
        return profile_stages(specs, ray_pool, table, options)

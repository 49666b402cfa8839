"""Connecting to Ray and checking that the cluster can host the profiling workers we are about to ask for.

Data flow: ``connect(address)`` -> a running Ray (ours or an existing one) -> ``check_resources(n, need)``
compares ``n`` x ``need`` (a ``WorkerResources``: what a cost-source recipe's ``resources()`` says one
worker asks for, or plain CPUs for enumeration) with ``ray.cluster_resources()`` and raises at once when
the cluster cannot hold them, instead of leaving actors pending forever (Ray's default for an actor
whose resources never appear).
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Dict, Iterator, Optional

import ray

from ..costs.factory import WorkerResources

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"

__all__ = ["InsufficientResourcesError", "WorkerResources", "check_local_resources", "check_resources", "connect",
           "local_resources", "starts_local_instance"]


class InsufficientResourcesError(RuntimeError):
    """The cluster lacks the CPUs or GPUs that the requested number of workers needs."""


def connect(address: Optional[str] = None, num_cpus: Optional[int] = None, num_gpus: Optional[int] = None) -> bool:
    """Make sure this process is connected to Ray.

    Uses the running Ray if ``ray.init`` was already called; joins ``address`` (e.g. ``"auto"`` or
    ``"ray://head:10001"``), or the cluster ``RAY_ADDRESS`` names (as inside a submitted job), if given;
    otherwise starts a private local instance without dashboard whose every server (GCS, raylet, object
    manager, workers, agents) listens on 127.0.0.1 only.

    Args:
        address: an existing cluster to join, or None.
        num_cpus, num_gpus: resources of a newly started local instance (ignored when joining a cluster).

    Returns:
        True when this call started or joined Ray (the caller may ``ray.shutdown()`` it when done),
        False when Ray was already initialised.
    """
    if ray.is_initialized():
        return False
    if address is not None:
        ray.init(address=address)
    elif os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        if num_cpus is None:
            num_cpus = _local_cpus()  # what check_local_resources counted
        with _loopback_node_ip():
            ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
                     _node_ip_address=LOOPBACK)
    return True


@contextlib.contextmanager
def _loopback_node_ip() -> Iterator[None]:
    """Let ``ray.init`` keep 127.0.0.1 as the node address of the instance it starts.

    On Linux ``ray.init`` (like ``ray start``) swaps a loopback ``_node_ip_address`` for the host's
    routable address unless Ray's cluster mode is off (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read once
    when Ray is imported; off by default on macOS and Windows), and its servers then listen on every
    interface. The flag is turned off only while this process starts its own single-node instance; a
    node started with the loopback address binds every server to it (``tests/test_loopback.py``).
    """
    from ray._private import ray_constants
    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def _totals() -> Dict[str, float]:
    res = ray.cluster_resources()
    return {"CPU": float(res.get("CPU", 0.0)), "GPU": float(res.get("GPU", 0.0))}


def _shortfall(num_workers: int, need: WorkerResources, have: Dict[str, float],
               where: str = "the cluster") -> Optional[str]:
    if need.num_gpus > 0 and have["GPU"] < num_workers * need.num_gpus:
        if have["GPU"] == 0:
            share = "one per worker" if need.num_gpus >= 1 else f"{need.num_gpus:g} per worker"
            return (f"GPU profiling needs {num_workers * need.num_gpus:g} GPU(s), {share}, but {where} has no GPUs "
                    f"({have['CPU']:g} CPUs); use the cpu or analytic cost source, or join a GPU cluster")
        return (f"{num_workers} GPU workers need {num_workers * need.num_gpus:g} GPUs, but {where} has "
                f"{have['GPU']:g}; ask for at most {int(have['GPU'] // need.num_gpus)} workers")
    if need.num_cpus > 0 and have["CPU"] < num_workers * need.num_cpus:
        return (f"{num_workers} workers need {num_workers * need.num_cpus:g} CPUs ({need.num_cpus:g} each), but "
                f"{where} has {have['CPU']:g} CPUs; ask for at most {int(have['CPU'] // need.num_cpus)} workers "
                f"or lower the CPUs per worker")
    return None


def starts_local_instance(address: Optional[str] = None) -> bool:
    """Whether ``connect(address)`` would start a new local instance (rather than use or join one)."""
    return not ray.is_initialized() and address is None and not os.environ.get("RAY_ADDRESS")


def local_resources() -> Dict[str, float]:
    """This machine's CPUs (those this process may run on) and usable GPUs (CuPy's count; 0 without
    CuPy or a driver): what a local instance started by ``connect`` offers."""
    try:
        import cupy
        gpus = cupy.cuda.runtime.getDeviceCount()
    except Exception:  # no CuPy, no driver, no device
        gpus = 0
    return {"CPU": float(_local_cpus()), "GPU": float(gpus)}


def _local_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_local_resources(num_workers: int, need: WorkerResources) -> None:
    """Before starting a local instance: fail at once if this machine cannot host the workers.

    Raises:
        InsufficientResourcesError: too few CPUs or GPUs here.
    """
    problem = _shortfall(num_workers, need, local_resources(), where="this machine")
    if problem is not None:
        raise InsufficientResourcesError(problem)


def check_resources(num_workers: int, need: WorkerResources, *, wait_for_autoscaler: bool = False,
                    timeout_s: float = 300.0, poll_s: float = 2.0) -> WorkerResources:
    """Check that the connected cluster can run ``num_workers`` actors of ``need`` each at once.

    Args:
        num_workers: number of actors the pool will start (>= 1).
        need: what one actor asks for (a cost-source recipe's ``resources()``, or CPUs alone).
        wait_for_autoscaler: if True, ask the autoscaler for the missing resources and wait for them
            up to ``timeout_s`` instead of failing at once.
        timeout_s: how long to wait when ``wait_for_autoscaler`` is True.
        poll_s: how often to look at the cluster's resources while waiting.

    Returns:
        ``need``: the per-actor resources to start the actors with.

    Raises:
        ValueError: ``num_workers`` < 1, or ``need`` is not a WorkerResources.
        InsufficientResourcesError: the cluster cannot hold the workers (after waiting, if asked to).
        RuntimeError: Ray is not initialised (call ``connect`` first).
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {num_workers}")
    if not isinstance(need, WorkerResources):
        raise ValueError(f"check_resources needs a WorkerResources record (e.g. recipe.resources()), got "
                         f"{type(need).__name__}")
    if not ray.is_initialized():
        raise RuntimeError("Ray is not initialised; call ios_ray.distributed.connect() first")
    problem = _shortfall(num_workers, need, _totals())
    if problem is None:
        return need
    if not wait_for_autoscaler:
        raise InsufficientResourcesError(problem)
    log.info("waiting up to %g s for the autoscaler: %s", timeout_s, problem)
    _request_from_autoscaler(num_workers, need)
    deadline = time.monotonic() + timeout_s
    while problem is not None and time.monotonic() < deadline:
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        problem = _shortfall(num_workers, need, _totals())
    if problem is not None:
        raise InsufficientResourcesError(f"{problem} (waited {timeout_s:g} s for the autoscaler)")
    return need


def _request_from_autoscaler(num_workers: int, need: WorkerResources) -> None:
    """Best effort: a cluster without an autoscaler simply ignores the request."""
    bundle = {"CPU": need.num_cpus}
    if need.num_gpus:
        bundle["GPU"] = need.num_gpus
    try:
        from ray.autoscaler.sdk import request_resources
        request_resources(bundles=[dict(bundle) for _ in range(num_workers)])
    except Exception:  # no autoscaler (local instance): waiting just polls the totals
        pass

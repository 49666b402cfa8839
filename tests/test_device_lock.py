"""The GPU's cross-process lock (``runtime.gpu.lock``) and the recipe of several profiling actors per GPU.

The lock is plain ``flock``: these tests run it between real processes on any machine.
"""
import multiprocessing as mp
import pickle
import time

import pytest

from ios_ray.costs.factory import GpuRecipe
from ios_ray.distributed.cluster import _shortfall
from ios_ray.runtime.gpu.lock import NO_LOCK, DeviceLock, lock_path, shared_lock


def _hold(path: str, seconds: float, ready, log) -> None:
    with DeviceLock(path):
        log.put(("child", "in", time.time()))
        ready.set()
        time.sleep(seconds)
        log.put(("child", "out", time.time()))


def test_a_second_process_waits_until_the_holder_lets_go(tmp_path):
    path = str(tmp_path / "gpu.lock")
    ctx = mp.get_context("spawn")
    ready, log = ctx.Event(), ctx.Queue()
    child = ctx.Process(target=_hold, args=(path, 0.6, ready, log))
    child.start()
    try:
        assert ready.wait(30)
        lock = DeviceLock(path)
        with lock:
            entered = time.time()
        child_in, child_out = log.get(timeout=10), log.get(timeout=10)
    finally:
        child.join(30)
    assert child_in[1] == "in" and child_out[1] == "out"
    assert entered >= child_out[2] - 0.01            # never inside while the child held it
    assert lock.waited_s > 0.3 and lock.acquisitions == 1 and lock.held_s < lock.waited_s


def _crash_holding(path: str, ready) -> None:
    lock = DeviceLock(path)
    lock.__enter__()
    ready.set()
    time.sleep(0.2)
    import os
    os._exit(1)   # dies holding it: the kernel lets go


def test_a_holder_that_dies_frees_the_lock(tmp_path):
    path = str(tmp_path / "gpu.lock")
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    child = ctx.Process(target=_crash_holding, args=(path, ready))
    child.start()
    assert ready.wait(30)
    child.join(30)
    assert child.exitcode == 1
    t0 = time.perf_counter()
    with DeviceLock(path):
        pass
    assert time.perf_counter() - t0 < 2.0


def test_nested_sections_hold_once_and_count_held_time(tmp_path):
    lock = DeviceLock(str(tmp_path / "gpu.lock"))
    assert not lock.held
    with lock:
        with lock:
            assert lock.held
            time.sleep(0.05)
        assert lock.held
    assert not lock.held and lock.acquisitions == 1 and lock.held_s >= 0.05
    with pytest.raises(RuntimeError, match="boom"):
        with lock:
            raise RuntimeError("boom")
    assert not lock.held and lock.acquisitions == 2
    lock.close()
    with lock:   # reopens its file
        pass


def test_one_lock_per_file_in_a_process_and_none_leaves_it(tmp_path):
    path = lock_path("GPU-1234/ab:cd", folder=str(tmp_path))
    assert path.endswith("ios_ray-gpu-GPU-1234_ab_cd.lock")
    assert shared_lock(path) is shared_lock(path)
    with pytest.raises(ValueError, match="UUID"):
        lock_path("///")
    with pytest.raises(TypeError, match="per process"):
        pickle.dumps(DeviceLock(path))
    with NO_LOCK:
        assert not NO_LOCK.held


def test_workers_per_gpu_splits_one_gpu_and_the_cluster_check_counts_shares():
    three = GpuRecipe(workers_per_gpu=3).resources()
    assert three.num_gpus == 0.3333 and GpuRecipe().resources().num_gpus == 1.0
    assert _shortfall(3, three, {"GPU": 1.0, "CPU": 16.0}) is None
    problem = _shortfall(4, three, {"GPU": 1.0, "CPU": 16.0})
    assert problem is not None and "ask for at most 3 workers" in problem
    assert "0.3333 per worker" in _shortfall(2, three, {"GPU": 0.0, "CPU": 4.0})
    for bad in (0, 17, 1.5):
        with pytest.raises(ValueError, match="workers_per_gpu"):
            GpuRecipe(workers_per_gpu=bad)


def test_the_lock_can_be_turned_off_only_by_name(monkeypatch):
    from ios_ray.runtime.gpu.lock import LOCK_ENV, device_lock
    monkeypatch.setenv(LOCK_ENV, "off")
    assert device_lock(0) is NO_LOCK   # no CUDA needed to know it is off


def test_gpu_options_set_gpu_fields_and_refuse_other_sources():
    from ios_ray.costs.factory import CpuRecipe, gpu_options
    assert gpu_options("gpu", workers_per_gpu=3, timing=None) == GpuRecipe(workers_per_gpu=3)
    assert gpu_options("gpu-tf32", timing="repeats") == GpuRecipe(tf32=True, timing="repeats")
    assert gpu_options("cpu", workers_per_gpu=None) == CpuRecipe()
    with pytest.raises(ValueError, match="--timing applies to GPU costs"):
        gpu_options("cpu", timing="repeats")
    with pytest.raises(ValueError, match="timing"):
        gpu_options("gpu", timing="sometimes")

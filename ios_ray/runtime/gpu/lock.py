"""One GPU, several timing processes: a lock, across processes, around the device work whose timing must be alone.

A GPU profiler spends most of a stage's time on the host (building the stage's IR and lowering it,
capturing the CUDA graph, bookkeeping) and only part of it running the stage. Several profiling processes
on one GPU can overlap their host work, but never their device work: kernels of two CUDA contexts
time-slice the GPU, so a stage timed while another process runs anything would include that work. Every
profiler of a device therefore takes ``DeviceLock`` around whatever runs on the device (random fills,
eager runs, timed replays, autotuning) and waits until that work has finished before letting go.

The lock is ``flock`` on a file named after the GPU's UUID in the temporary folder: every process of the
host that profiles that GPU (Ray actors, two ``ios-ray optimize`` runs) shares it, and the kernel frees it
when a process dies. Re-entrant within a process (threads included), so nested sections hold it once.
Pure Python (no CUDA): it is tested on any machine.
"""
from __future__ import annotations

import fcntl
import logging
import os
import re
import tempfile
import threading
import time
from typing import Optional

logger = logging.getLogger(__name__)


class DeviceLock:
    """An exclusive, re-entrant lock shared by every process of this host that opens the same ``path``.

    Args:
        path: the lock file (created if missing; its contents are never read).
    Attributes:
        acquisitions: outermost acquisitions so far.
        waited_s: seconds spent waiting for other processes to let go.
        held_s: seconds held (outermost sections), so ``held_s / wall time`` is this process's share of
            the device.
    """

    def __init__(self, path: str):
        self.path = str(path)
        self._fd: Optional[int] = None
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._since = 0.0
        self.acquisitions = 0
        self.waited_s = 0.0
        self.held_s = 0.0

    def __enter__(self) -> "DeviceLock":
        self._thread_lock.acquire()
        if self._depth == 0:
            try:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
                t0 = time.perf_counter()
                fcntl.flock(self._fd, fcntl.LOCK_EX)
                self._since = time.perf_counter()
                self.waited_s += self._since - t0
                self.acquisitions += 1
            except BaseException:
                self._thread_lock.release()
                raise
        self._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        try:
            if self._depth == 0:
                self.held_s += time.perf_counter() - self._since
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    @property
    def held(self) -> bool:
        """Whether this process holds the lock now."""
        return self._depth > 0

    def close(self) -> None:
        """Close the lock file (a held lock is let go)."""
        if self._fd is not None and self._depth == 0:
            os.close(self._fd)
            self._fd = None

    def __getstate__(self):
        raise TypeError("a DeviceLock belongs to its process; build one per process with device_lock()")


class NoLock:
    """The lock of a context that is not profiling (the inference runtime): nothing to wait for."""

    held = False
    acquisitions = 0
    waited_s = 0.0
    held_s = 0.0

    def __enter__(self) -> "NoLock":
        return self

    def __exit__(self, *exc) -> None:
        return None


NO_LOCK = NoLock()


def lock_path(device_uuid: str, folder: Optional[str] = None) -> str:
    """The lock file of the GPU with ``device_uuid`` (any string naming it; unsafe characters replaced).

    Raises:
        ValueError: an empty name.
    """
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", str(device_uuid))
    if not name.strip("_"):
        raise ValueError(f"a GPU lock needs the device's name or UUID, got {device_uuid!r}")
    return os.path.join(folder or tempfile.gettempdir(), f"ios_ray-gpu-{name}.lock")


_LOCKS: "dict[str, DeviceLock]" = {}
_LOCKS_GUARD = threading.Lock()


def shared_lock(path: str) -> DeviceLock:
    """This process's one ``DeviceLock`` on ``path``: two objects on one file would block each other
    (``flock`` locks each open file separately), so every profiler of a device in a process shares one."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(path)
        if lock is None:
            lock = _LOCKS[path] = DeviceLock(path)
        return lock


LOCK_ENV = "IOS_RAY_GPU_LOCK"   # "off": no lock (only to measure what it prevents; the rows say so)


def device_lock(device_id: int):
    """The shared lock of CUDA device ``device_id`` (within the visible devices); ``NO_LOCK`` when
    ``$IOS_RAY_GPU_LOCK`` is ``off`` (a profiler records that in its device settings, so such rows are
    never reused as locked ones)."""
    if os.environ.get(LOCK_ENV, "").strip().lower() in ("0", "off", "no", "false"):
        logger.warning("%s=off: profiling processes on one GPU may overlap their device work", LOCK_ENV)
        return NO_LOCK
    return shared_lock(lock_path(device_uuid(device_id)))


def device_uuid(device_id: int) -> str:
    """The UUID of a CUDA device as text (its PCI address where the driver gives no UUID)."""
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(device_id)
    raw = props.get("uuid")
    if isinstance(raw, (bytes, bytearray)) and any(raw):
        return raw.hex()
    return f"pci-{props.get('pciDomainID', 0)}-{props.get('pciBusID', 0)}-{props.get('pciDeviceID', 0)}"

"""Shared test setup: the default cost table lives in a per-session temp dir (removed at the end), never
in ~/.cache; GPU tests skip without a GPU; ``listeners`` lists the TCP sockets a process tree listens on."""
import os
import shutil
import socket
import tempfile
from typing import Dict, List, Set, Tuple

import pytest

_CACHE = tempfile.mkdtemp(prefix="ios_ray_test_cache_")
os.environ.setdefault("IOS_RAY_CACHE", os.path.join(_CACHE, "costs"))


def pytest_sessionfinish(session, exitstatus):
    """Remove this session's cache directory (the default table of every test that used it)."""
    shutil.rmtree(_CACHE, ignore_errors=True)


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


# ----- listening sockets, from /proc (no psutil) ---------------------------------------------------
def _listening_inodes() -> Dict[str, Tuple[str, int]]:
    """socket inode -> (address, port) of every listening TCP socket on this host."""
    out = {}
    for family, path in ((socket.AF_INET, "/proc/net/tcp"), (socket.AF_INET6, "/proc/net/tcp6")):
        try:
            with open(path) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            hex_ip, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_ip)
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # per-word host byte order
            out[fields[9]] = (socket.inet_ntop(family, raw), int(hex_port, 16))
    return out


def _parent(pid: str) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def _descendants(root: int) -> Set[int]:
    tree, grew = {root}, True
    pids = [p for p in os.listdir("/proc") if p.isdigit()]
    parents = {int(p): _parent(p) for p in pids}
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return tree


def listeners_of(root_pid: int) -> List[Tuple[str, int, int, str]]:
    """(address, port, pid, command) of every TCP socket that ``root_pid`` or its descendants listen on."""
    sockets = _listening_inodes()
    found = []
    for pid in sorted(_descendants(root_pid)):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            inode = target[len("socket:["):-1] if target.startswith("socket:[") else None
            if inode in sockets:
                found.append((*sockets[inode], pid, command))
    return found


def is_loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1") or address.startswith("::ffff:127.")


@pytest.fixture
def listeners():
    """The ``listeners_of(pid)`` function (Linux /proc; skips where there is none)."""
    if not os.path.exists("/proc/net/tcp"):
        pytest.skip("needs Linux /proc/net/tcp")
    return listeners_of

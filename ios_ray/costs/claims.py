"""Claims: which run is measuring which stages of a shared cost table right now, so that concurrent
optimizations into one table share the work instead of each measuring everything.

Data flow (one run; ``profile.stages`` drives it)::

    open()        -> <table>/_claims/<run>.alive     heartbeat {run, host, pid, started, expires}, renewed
                                                     every ttl/3 by a thread while the run lives
    held()        -> keys in live grants of *other* runs under the same conditions
    claim(keys)   -> <table>/_claims/<run>-<n>.grant {run, scope, written, keys}; then the grants of other
                     runs are read again and keys that a grant written earlier also holds are given up
                     (two runs that claimed at the same moment apply the same rule: the earlier grant
                     keeps the key, whichever of the two saw the other)
    release(grant)   after the grant's rows are appended to the table
    close()       -> the run's grants and heartbeat removed

A grant counts only while its run's heartbeat is unexpired (the claimant's clock writes ``expires``; clocks
of the hosts sharing a table must agree to well within ``ttl_s``). A run that dies stops renewing, and
``ttl_s`` later its keys are free for anyone: a dead claimant never blocks another run. Files of runs
expired for more than ``STALE_AFTER_TTLS`` x ``ttl_s`` are removed by whoever reads them.

The directory's name starts with ``_``, so neither ``CostTable`` nor a plain
``pyarrow.dataset.dataset(path)`` ever reads a claim as a cost row. Claims are only a hint: a key measured
twice (a race, an expired but still running claimant) is appended twice, and reads deduplicate.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Dict, FrozenSet, Iterable, List, Optional, Tuple

import pyarrow as pa
import pyarrow.fs as pafs

log = logging.getLogger(__name__)

CLAIMS_DIR = "_claims"
ALIVE_SUFFIX = ".alive"
GRANT_SUFFIX = ".grant"
STALE_AFTER_TTLS = 10
FORMAT = "ios_ray.claim"


class ClaimWriteError(OSError):
    """A claim could not be written: the table location is not writable."""


def brief_error(exc: BaseException) -> str:
    """An I/O error without the temporary file names pyarrow puts in its message."""
    errno = getattr(exc, "errno", None)
    return f"{type(exc).__name__}: {os.strerror(errno)}" if errno else f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class ClaimScope:
    """What a claimed key means: measured on this device and software, at this batch size and math mode."""
    device: str
    software: str
    batch_size: int
    dtype: str

    def as_dict(self) -> dict:
        return {"device": self.device, "software": self.software, "batch_size": self.batch_size,
                "dtype": self.dtype}


@dataclass(frozen=True)
class Grant:
    """Keys this run holds in one grant file."""
    path: str
    keys: Tuple[str, ...]


@dataclass(frozen=True)
class _Held:
    """Another run's live grant as read: its order (written, run) and keys."""
    order: Tuple[float, str]
    keys: FrozenSet[str]


class ClaimBook:
    """This run's claims in one table under one ``ClaimScope`` (see the module docstring).

    Args:
        fs, root: the table's filesystem and its directory within it.
        scope: the conditions the claimed keys are measured under.
        ttl_s: how long a claim outlives its run's last heartbeat.

    Raises:
        ValueError: ``ttl_s`` is not positive.
    """

    def __init__(self, fs: pafs.FileSystem, root: str, scope: ClaimScope, ttl_s: float = 60.0):
        if not ttl_s > 0:
            raise ValueError(f"claim ttl_s must be positive, got {ttl_s}")
        self._fs, self._dir, self.scope, self.ttl_s = fs, f"{root}/{CLAIMS_DIR}", scope, float(ttl_s)
        self.run = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}"
        self.started = time.time()
        self._grants: Dict[str, Grant] = {}
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # ----- lifecycle -----------------------------------------------------------------------------
    def open(self) -> "ClaimBook":
        """Write the first heartbeat (the run's first write to the table) and start renewing it.

        Raises:
            ClaimWriteError: the table directory cannot be created or written.
        """
        self._write_heartbeat()
        self._thread = threading.Thread(target=self._renew, name=f"claims-{self.run}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop renewing and remove this run's grants, then its heartbeat (best effort)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            paths = [g.path for g in self._grants.values()]
            self._grants.clear()
        for path in paths + [self._alive_path(self.run)]:
            self._delete(path)

    def __enter__(self) -> "ClaimBook":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # ----- claims --------------------------------------------------------------------------------
    def held(self) -> FrozenSet[str]:
        """Keys in the live grants of other runs under this scope."""
        return frozenset(k for grant in self._live_grants() for k in grant.keys)

    def claim(self, keys: Iterable[str]) -> Grant:
        """Claim ``keys`` (ordered, distinct); return the grant holding those this run keeps.

        Keys that a grant of another live run written earlier holds too (it claimed them at the same
        moment) are given up; the grant may be empty.

        Raises:
            ClaimWriteError: the grant cannot be written.
        """
        keys = tuple(dict.fromkeys(keys))
        with self._lock:
            path = f"{self._dir}/{self.run}-{next(self._counter):06d}{GRANT_SUFFIX}"
        written = time.time()
        self._write_json(path, self._grant_payload(keys, written))
        earlier = frozenset(k for grant in self._live_grants() if grant.order < (written, self.run)
                            for k in grant.keys)
        kept = tuple(k for k in keys if k not in earlier)
        if len(kept) < len(keys):  # another run claimed some at the same moment, first: they are its
            log.info("run %s: %d of %d claimed stages went to another run", self.run, len(keys) - len(kept), len(keys))
            if kept:
                self._write_json(path, self._grant_payload(kept, written))
            else:
                self._delete(path)
        grant = Grant(path, kept)
        if kept:
            with self._lock:
                self._grants[path] = grant
        return grant

    def release(self, grant: Grant) -> None:
        """Drop a grant (its rows are in the table now)."""
        with self._lock:
            self._grants.pop(grant.path, None)
        self._delete(grant.path)

    # ----- files ---------------------------------------------------------------------------------
    def _alive_path(self, run: str) -> str:
        return f"{self._dir}/{run}{ALIVE_SUFFIX}"

    def _grant_payload(self, keys: Tuple[str, ...], written: float) -> dict:
        return {"format": FORMAT, "run": self.run, "scope": self.scope.as_dict(), "written": written,
                "keys": list(keys)}

    def _write_heartbeat(self) -> None:
        self._write_json(self._alive_path(self.run),
                         {"format": FORMAT, "run": self.run, "host": socket.gethostname(), "pid": os.getpid(),
                          "started": self.started, "expires": time.time() + self.ttl_s})

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self._write_heartbeat()
            except ClaimWriteError as e:  # the others will measure our keys once the claim expires
                log.warning("run %s: cannot renew its claims: %s", self.run, e)

    def _write_json(self, path: str, payload: dict) -> None:
        """Write under a temporary name in the claims directory, then rename over ``path``."""
        tmp = f"{self._dir}/.tmp-{uuid.uuid4().hex}"
        try:
            self._fs.create_dir(self._dir, recursive=True)
            with self._fs.open_output_stream(tmp) as out:
                out.write(json.dumps(payload).encode())
            self._fs.move(tmp, path)
        except (OSError, pa.ArrowException) as e:
            self._delete(tmp)
            raise ClaimWriteError(brief_error(e)) from e

    def _delete(self, path: str) -> None:
        try:
            self._fs.delete_file(path)
        except (OSError, pa.ArrowException):
            pass

    def _read_json(self, path: str) -> Optional[dict]:
        try:
            with self._fs.open_input_stream(path) as f:
                data = json.loads(f.read().decode())
        except (OSError, pa.ArrowException, ValueError):  # gone meanwhile, or not ours: ignore
            return None
        return data if isinstance(data, dict) and data.get("format") == FORMAT else None

    def _live_grants(self) -> List[_Held]:
        """The live grants of other runs in this scope (their run's heartbeat unexpired)."""
        try:
            entries = self._fs.get_file_info(pafs.FileSelector(self._dir, allow_not_found=True))
        except (OSError, pa.ArrowException):
            return []
        names = {e.base_name: e.path for e in entries if e.type == pafs.FileType.File}
        now = time.time()
        live = set()
        for name, path in names.items():
            if not name.endswith(ALIVE_SUFFIX) or name == f"{self.run}{ALIVE_SUFFIX}":
                continue
            beat = self._read_json(path)
            if beat is None:
                continue
            run, expires = str(beat.get("run", "")), float(beat.get("expires", 0.0))
            if expires >= now:
                live.add(run)
            elif now > expires + STALE_AFTER_TTLS * self.ttl_s:
                self._remove_run(run, names)
        held = []
        for name, path in names.items():
            run = name.rsplit("-", 1)[0]
            if not name.endswith(GRANT_SUFFIX) or run not in live:
                continue
            grant = self._read_json(path)
            if grant is not None and grant.get("scope") == self.scope.as_dict():
                held.append(_Held((float(grant.get("written", 0.0)), run), frozenset(grant.get("keys", ()))))
        return held

    def _remove_run(self, run: str, names: Dict[str, str]) -> None:
        """Remove the files of a run that expired long ago (it crashed without closing)."""
        for name, path in names.items():
            if name == f"{run}{ALIVE_SUFFIX}" or (name.endswith(GRANT_SUFFIX) and name.rsplit("-", 1)[0] == run):
                self._delete(path)


__all__ = ["CLAIMS_DIR", "ClaimBook", "ClaimScope", "ClaimWriteError", "Grant", "brief_error"]

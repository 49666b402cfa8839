"""The engine book: which cuDNN engine (execution plan) runs each convolution signature, decided once.

Data flow::

    ConvPlans (runtime/gpu/conv.py) building a conv for a signature
      --EngineBook.get(signature)--> the plan recorded earlier (any process, any worker): used as it is
      --miss: the heuristic's first plan (or the autotuned one)--> EngineBook.put --> flush()
      --> <cost table>/_engines/part-<time>-<uuid>.parquet   (append-only, one file per flush)

Why: cuDNN offers several engines per convolution, and which one runs decides its latency (on the H200,
strict-fp32 Inception-v3 moved 20 % between processes when each process timed and picked its own).
The profiler and the runtime read the same book, so the runtime runs the engines the stages were
measured with, in every later process and on every worker. The book lives inside the cost table's
directory under ``_engines/``: names starting with ``_`` are skipped by the cost table and by
``pyarrow.dataset`` discovery, so a plain Arrow reader of the table never sees these rows.

Rows are keyed by (device, software, dtype, signature); the first row written for a key wins, so two
workers that chose differently at the same moment still agree from then on. Schema (version 1):
``signature`` (the conv's shapes, strides and attributes), ``plan`` (``fused:`` or ``plain:`` + the
cuDNN plan name), ``device``, ``software``, ``dtype`` and ``timestamp``.
"""
from __future__ import annotations

import logging
import os
import threading
from datetime import datetime, timezone
from typing import Dict, List, Optional, Tuple, Union

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .table import CostTableError, default_table_path, resolve_location, write_parquet_atomic

log = logging.getLogger(__name__)

ENGINES_DIR = "_engines"
SCHEMA_KEY = b"ios_ray.engine_book"
SCHEMA = pa.schema([
    pa.field("signature", pa.string(), nullable=False),
    pa.field("plan", pa.string(), nullable=False),
    pa.field("device", pa.string(), nullable=False),
    pa.field("software", pa.string(), nullable=False),
    pa.field("dtype", pa.string(), nullable=False),
    pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
], metadata={SCHEMA_KEY: b"1"})


def engine_location(table_location: Union[str, os.PathLike, None] = None) -> str:
    """The engine book that belongs to a cost table (default: the default table's)."""
    text = os.fspath(table_location) if table_location is not None else default_table_path()
    return f"{text.rstrip('/')}/{ENGINES_DIR}"


class EngineBook:
    """Engine choices of one (device, software, dtype), read from and appended to a Parquet directory.

    Args:
        location: a directory or ``pyarrow.fs`` URI (see ``engine_location``).
        device, software, dtype: whose choices these are (rows of others are ignored).
    Raises:
        CostTableError: a file in the book is unreadable or foreign (nothing is deleted).
    """

    def __init__(self, location: Union[str, os.PathLike], device: str, software: str, dtype: str):
        self._fs, self._root, self.location = resolve_location(location)
        self.identity = (str(device), str(software), str(dtype))
        self._lock = threading.Lock()
        self._choices: Dict[str, str] = {}
        self._pending: List[Tuple[str, str]] = []
        self._seen_files: set = set()
        self.reload()

    def __repr__(self) -> str:
        return f"EngineBook({self.location!r}, {len(self._choices)} choices)"

    def __len__(self) -> int:
        return len(self._choices)

    def reload(self) -> None:
        """Read files written since the last read (by this or any other process)."""
        info = self._fs.get_file_info(self._root)
        if info.type == pafs.FileType.NotFound:
            return
        entries = self._fs.get_file_info(pafs.FileSelector(self._root, recursive=False))
        names = sorted(e.path for e in entries if e.type == pafs.FileType.File and e.base_name.endswith(".parquet")
                       and not e.base_name.startswith((".", "_")) and e.path not in self._seen_files)
        rows = []
        for path in names:
            rows.extend(self._read(path))
            self._seen_files.add(path)
        rows.sort(key=lambda r: r["timestamp"])   # earliest first: the first choice made wins
        with self._lock:
            for r in rows:
                if (r["device"], r["software"], r["dtype"]) == self.identity:
                    self._choices.setdefault(r["signature"], r["plan"])

    def _read(self, path: str) -> List[dict]:
        try:
            with self._fs.open_input_file(path) as f:
                pf = pq.ParquetFile(f)
                meta = pf.schema_arrow.metadata or {}
                if meta.get(SCHEMA_KEY) != b"1":
                    raise CostTableError(f"{path}: not an engine-book file of version 1 (the file was left "
                                         f"as it is)")
                return pf.read(columns=SCHEMA.names).to_pylist()
        except (pa.ArrowException, OSError) as exc:
            raise CostTableError(f"{path}: not a readable engine-book file ({type(exc).__name__}: {exc}); the "
                                 f"file was left as it is") from exc

    def get(self, signature: str) -> Optional[str]:
        """The plan recorded for ``signature``, or None."""
        return self._choices.get(signature)

    def put(self, signature: str, plan: str) -> str:
        """Record a choice made here, unless one exists; returns the choice that stands."""
        with self._lock:
            current = self._choices.setdefault(signature, plan)
            if current == plan and (signature, plan) not in self._pending:
                self._pending.append((signature, plan))
            return current

    def flush(self) -> Optional[str]:
        """Append the choices made since the last flush as one file; returns its path (None: nothing new)."""
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return None
        now = datetime.now(timezone.utc)
        device, software, dtype = self.identity
        table = pa.Table.from_pydict({
            "signature": [s for s, _ in pending], "plan": [p for _, p in pending],
            "device": [device] * len(pending), "software": [software] * len(pending),
            "dtype": [dtype] * len(pending), "timestamp": [now] * len(pending)}, schema=SCHEMA)
        path = write_parquet_atomic(self._fs, self._root, table, now)
        self._seen_files.add(path)
        log.debug("engine book %s: recorded %d choices", self.location, len(pending))
        return path

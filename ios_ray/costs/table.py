"""The persistent cost table: stage measurements shared across runs, models and machines, as Parquet.

Data flow::

    CostSource.measure -> [Measurement] --append(Conditions)--> <table>/part-<utc time>-<uuid>.parquet  (one file per call)
    <table>/*.parquet --read_raw (validate each file)--> pa.Table
        --search(keys, DeviceInfo, batch, dtype)--> found {key: Measurement} (same software) -> DP,
                                                    stale keys (other software: kept, not reused)

Layout: a directory (local path or any ``pyarrow.fs`` URI such as ``file:///...`` or ``s3://bucket/prefix``)
holding Parquet files that all have the schema ``SCHEMA``. It is an ordinary Parquet dataset:
``pyarrow.dataset.dataset(path, format="parquet")`` reads it as it is.

Concurrency and crash safety: the table is append-only. Each ``append`` writes one new file under a
temporary name starting with ``.tmp-`` in the same directory and renames it into place once it is
complete; the final name holds a timestamp and a random UUID, so writers never collide and readers
never see a half-written file (names starting with ``.`` or ``_`` are ignored here and by
``pyarrow.dataset``). On a local filesystem the rename is atomic; on object stores it is a copy, still
invisible to readers until it is done. Existing files are never rewritten; ``compact`` writes the merged
file first and only then removes the files it merged. Concurrent runs share the measuring through claims
in ``<table>/_claims/`` (``costs.claims``: each stage is measured by one run, and a dead claimant's claims
expire); ``claims`` opens them and is each measuring run's first write, so a read-only table is found
before anything is measured.

What a plain ``pyarrow.dataset.dataset(path, format="parquet")`` reader sees: every row ever appended and
never ``_claims/`` (its name starts with ``_``); so also rows ``read_all`` folds away (a stage measured
again because its rows came from other software or were errors, or twice in a rare race of two runs) and
rows of other devices, batch sizes and math modes: group by ``IDENTITY_COLUMNS`` (or use ``read_all``) to
get one row per cost.

Schema (one row per stage measured on one device, batch size and math mode, by one software stack):

============== ======================== ===========================================================
column         type                     meaning
============== ======================== ===========================================================
key            string                   ``StageSpec.key``: content hash of the canonical spec
spec           string                   ``StageSpec.canonical_json()``: re-measurable from the table
strategy       string                   ``Strategy`` value ("parallel" / "merge")
num_ops        int32                    operators in the stage
device         string                   ``DeviceInfo.name`` (e.g. "NVIDIA H200", "analytic:H200")
device_kind    string                   ``DeviceInfo.kind`` ("gpu", "cpu", "analytic")
compute_capability, driver, library     strings from ``DeviceInfo``
software       string                   ``DeviceInfo.software``: the fingerprint of what measured (library
                                        versions such as cuDNN / CUDA runtime / CuPy / numpy / ios_ray, the
                                        driver, and settings such as cuDNN autotune)
batch_size     int32                    batch size measured
dtype          string                   math mode: "float32", "tf32", ...
latency_ms     float64                  median latency over repeats; NaN for an error row
spread_ms      float64                  max - min over repeats
warmup, number, repeat  int32           the ``MeasureSettings`` used
estimated      bool                     True for model estimates (never shown as measurements)
worker         string                   which worker measured it
timestamp      timestamp[us, UTC]       when the row was appended
error_kind     string                   ``ErrorKind`` value, "" when the measurement succeeded
error_message  string                   the error's message
============== ======================== ===========================================================

The schema metadata carries ``ios_ray.cost_table = SCHEMA_VERSION`` (``2``). Files of version ``1``
(written before the ``software`` column existed) are read and kept, but their rows carry the software
``LEGACY_SOFTWARE``, which no source reports: they are never reused, only counted as stale (and
``compact`` leaves those files alone). A file without the entry, of any other version, or that cannot be
parsed is refused with ``CostTableError``. Refusing never deletes or changes the file.

Reuse: ``lookup`` returns a row only for the same (key, device name, batch_size, dtype) *and* the same
``software``; rows of that key measured by other software are kept (a later upgrade back finds them
again) and reported as stale misses by ``search``.

Deduplication: for one (key, device, batch_size, dtype, software) a successful row beats an error row,
then the latest timestamp wins (ties: the file written later).
"""
from __future__ import annotations

import logging
import math
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..graph.schedule import Strategy
from ..space.stage import StageSpec
from .claims import ClaimBook, ClaimScope, ClaimWriteError, brief_error
from .measurement import DeviceInfo, ErrorKind, MeasureSettings, Measurement

log = logging.getLogger(__name__)

SCHEMA_VERSION = b"2"
LEGACY_VERSION = b"1"            # no software column: read, kept, never reused
LEGACY_SOFTWARE = "unrecorded (cost table schema 1)"
SCHEMA_METADATA_KEY = b"ios_ray.cost_table"
FILE_PREFIX = "part-"
FILE_SUFFIX = ".parquet"
TMP_PREFIX = ".tmp-"

# Columns that identify one cost: rows sharing them are duplicates of each other.
IDENTITY_COLUMNS = ("key", "device", "batch_size", "dtype", "software")


def _field(name: str, typ: pa.DataType, doc: str) -> pa.Field:
    return pa.field(name, typ, nullable=False, metadata={b"doc": doc.encode()})


SCHEMA: pa.Schema = pa.schema(
    [
        _field("key", pa.string(), "StageSpec.key: content hash of the canonical stage spec"),
        _field("spec", pa.string(), "StageSpec canonical JSON (StageSpec.from_json rebuilds the stage)"),
        _field("strategy", pa.string(), "Strategy value: parallel or merge"),
        _field("num_ops", pa.int32(), "number of operators in the stage"),
        _field("device", pa.string(), "DeviceInfo.name, e.g. 'NVIDIA H200' or 'analytic:H200'"),
        _field("device_kind", pa.string(), "DeviceInfo.kind: gpu, cpu or analytic"),
        _field("compute_capability", pa.string(), "DeviceInfo.compute_capability"),
        _field("driver", pa.string(), "DeviceInfo.driver"),
        _field("library", pa.string(), "DeviceInfo.library, e.g. 'cudnn 9.19 / cupy 14.2'"),
        _field("software", pa.string(), "DeviceInfo.software: libraries, driver and settings that measured"),
        _field("batch_size", pa.int32(), "batch size measured"),
        _field("dtype", pa.string(), "math mode: float32, tf32, ..."),
        _field("latency_ms", pa.float64(), "median latency over repeats (ms); NaN for an error row"),
        _field("spread_ms", pa.float64(), "max - min latency over repeats (ms)"),
        _field("warmup", pa.int32(), "MeasureSettings.warmup: untimed runs first"),
        _field("number", pa.int32(), "MeasureSettings.number: runs per timed repeat"),
        _field("repeat", pa.int32(), "MeasureSettings.repeat: timed repeats"),
        _field("estimated", pa.bool_(), "True for a model estimate, not a measurement"),
        _field("worker", pa.string(), "the worker that measured the row"),
        _field("timestamp", pa.timestamp("us", tz="UTC"), "when the row was appended (UTC)"),
        _field("error_kind", pa.string(), "ErrorKind value; empty when the measurement succeeded"),
        _field("error_message", pa.string(), "the error's message; empty when none"),
    ],
    metadata={SCHEMA_METADATA_KEY: SCHEMA_VERSION,
              b"ios_ray.doc": b"one row per stage measured on (device, batch_size, dtype, software); "
                              b"see ios_ray.costs.table"},
)
# Version 1 had every column but ``software``.
LEGACY_COLUMNS = [name for name in SCHEMA.names if name != "software"]


_LEFT_ALONE = "(the file was left as it is; move it out of the table directory to use the other files)"


class CostTableError(ValueError):
    """The cost table cannot be used: a file is unreadable or not a cost-table file of this version, or the
    location cannot be written."""


def default_table_path() -> str:
    """``$IOS_RAY_CACHE``, else ``$XDG_CACHE_HOME/ios_ray/costs``, else ``~/.cache/ios_ray/costs``."""
    explicit = os.environ.get("IOS_RAY_CACHE")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ios_ray", "costs")


def resolve_location(path_or_uri: Union[str, os.PathLike, None]) -> Tuple[pafs.FileSystem, str, str]:
    """(filesystem, root path within it, display name) for a local path or a ``pyarrow.fs`` URI."""
    text = os.fspath(path_or_uri) if path_or_uri is not None else default_table_path()
    if "://" in text:
        try:
            fs, root = pafs.FileSystem.from_uri(text)
        except (pa.ArrowException, ValueError) as e:
            raise CostTableError(f"cost table location {text!r} is not a usable pyarrow.fs URI: {e}") from e
        return fs, root.rstrip("/"), text.rstrip("/")
    root = str(Path(text).expanduser().resolve())
    return pafs.LocalFileSystem(), root, root


def _check_schema(schema: pa.Schema, where: str) -> bool:
    """Raise CostTableError naming ``where`` unless ``schema`` is a cost-table schema this code reads.

    Returns:
        True for a version-1 file (kept, its rows never reused), False for the current version.
    """
    meta = schema.metadata or {}
    version = meta.get(SCHEMA_METADATA_KEY)
    if version is None:
        raise CostTableError(f"{where}: not a cost-table file (schema metadata has no "
                             f"{SCHEMA_METADATA_KEY.decode()!r} entry); columns are {schema.names}")
    if version not in (SCHEMA_VERSION, LEGACY_VERSION):
        raise CostTableError(f"{where}: cost-table schema version {version.decode(errors='replace')!r}, "
                             f"this code reads version {SCHEMA_VERSION.decode()!r} (and keeps version "
                             f"{LEGACY_VERSION.decode()!r} files without reusing their rows)")
    legacy = version == LEGACY_VERSION
    fields = [SCHEMA.field(name) for name in (LEGACY_COLUMNS if legacy else SCHEMA.names)]
    missing = [f.name for f in fields if f.name not in schema.names]
    if missing:
        raise CostTableError(f"{where}: missing required columns {missing}")
    wrong = [f"{f.name} is {schema.field(f.name).type}, expected {f.type}"
             for f in fields if schema.field(f.name).type != f.type]
    if wrong:
        raise CostTableError(f"{where}: wrong column types: {'; '.join(wrong)}")
    return legacy


def _fsync(path: str) -> None:
    """Flush a local file's (or directory's) data to disk; best effort where the OS refuses."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_parquet_atomic(fs: pafs.FileSystem, root: str, table: pa.Table, now: datetime) -> str:
    """Write ``table`` under a temporary name in directory ``root``, then rename it into place.

    Returns:
        The final path (``part-<UTC time>-<uuid>.parquet``): writers never collide, readers never see a
        half-written file.
    """
    fs.create_dir(root, recursive=True)
    unique = f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex}"
    tmp = f"{root}/{TMP_PREFIX}{unique}{FILE_SUFFIX}"
    final = f"{root}/{FILE_PREFIX}{unique}{FILE_SUFFIX}"
    try:
        with fs.open_output_stream(tmp) as out:
            pq.write_table(table, out)
        if isinstance(fs, pafs.LocalFileSystem):
            _fsync(tmp)  # the bytes reach the disk before the name does: no empty file after a crash
        fs.move(tmp, final)
        if isinstance(fs, pafs.LocalFileSystem):
            _fsync(root)
    except BaseException:
        try:
            fs.delete_file(tmp)
        except (OSError, pa.ArrowException):
            pass
        raise
    return final


def _error_kind(text: str, message: str) -> Tuple[ErrorKind, str]:
    try:
        return ErrorKind(text), message
    except ValueError:
        # A kind written by a newer version: still an error (the DP sees inf), keep what it said.
        return ErrorKind.RUNTIME, f"[{text}] {message}"


def _row_to_measurement(row: dict) -> Measurement:
    error, message = _error_kind(row["error_kind"], row["error_message"])
    latency = row["latency_ms"]
    return Measurement(
        key=row["key"],
        latency_ms=math.nan if latency is None or error is not ErrorKind.NONE else float(latency),
        spread_ms=float(row["spread_ms"]) if row["spread_ms"] is not None else math.nan,
        # samples is not stored: a timed success had ``repeat`` of them; an error or an estimate none.
        samples=int(row["repeat"]) if error is ErrorKind.NONE and not row["estimated"] else 0,
        error=error,
        message=message,
        estimated=bool(row["estimated"]),
        worker=row["worker"],
    )


def deduplicate(table: pa.Table) -> pa.Table:
    """One row per (key, device, batch_size, dtype, software): a success beats an error, then the latest
    timestamp.

    Ties on timestamp go to the row that comes later in ``table`` (files are read in name order, and
    names start with the write time).
    """
    if table.num_rows <= 1:
        return table
    ok = pc.equal(table["error_kind"], "")
    order = pa.array(range(table.num_rows), pa.int64())
    work = table.append_column("_ok", ok).append_column("_order", order)
    work = work.sort_by([(c, "ascending") for c in IDENTITY_COLUMNS]
                        + [("_ok", "descending"), ("timestamp", "descending"), ("_order", "descending")])
    # The first row of each identity group survives: mark where the group changes from the previous row.
    n = work.num_rows
    first = None
    for c in IDENTITY_COLUMNS:
        col = work[c].combine_chunks()
        changed = pc.not_equal(col.slice(1), col.slice(0, n - 1))
        first = changed if first is None else pc.or_(first, changed)
    keep = pa.concat_arrays([pa.array([True]), first])
    return work.filter(keep).drop_columns(["_ok", "_order"])


@dataclass(frozen=True)
class Conditions:
    """What every row of one ``append`` was measured under (all but ``settings`` decide reuse).

    Raises:
        ValueError: ``device`` is not a DeviceInfo, ``batch_size`` < 1 or an empty ``dtype``.
    """
    device: DeviceInfo
    batch_size: int
    dtype: str
    settings: MeasureSettings = MeasureSettings()

    def __post_init__(self):
        if not isinstance(self.device, DeviceInfo):
            raise ValueError(f"Conditions.device must be a DeviceInfo, got {type(self.device).__name__}")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.dtype:
            raise ValueError("dtype must be a non-empty math-mode name such as 'float32' or 'tf32'")
        object.__setattr__(self, "batch_size", int(self.batch_size))


@dataclass(frozen=True)
class TableLookup:
    """What the table holds for some stage keys under one device, batch size, dtype and software."""
    found: Dict[str, Measurement]    # reusable rows: the same software measured them
    stale: FrozenSet[str]            # keys not found, with rows only from other software (or schema 1)


class CostTable:
    """A shared, append-only table of stage costs stored as a Parquet dataset.

    Args:
        path_or_uri: a local directory or a ``pyarrow.fs`` URI (``file:///...``, ``s3://...``); default
            ``default_table_path()``. The directory is created on the first append.

    Raises:
        CostTableError: (from the read methods) a file is unreadable or has a foreign schema.
    """

    def __init__(self, path_or_uri: Union[str, os.PathLike, None] = None):
        self._fs, self._root, self.location = resolve_location(path_or_uri)
        # Files are immutable once renamed into place, so a file read once never needs reading again.
        self._file_cache: Dict[str, pa.Table] = {}
        self._legacy_files: set = set()   # version-1 files among those read

    def __repr__(self) -> str:
        return f"CostTable({self.location!r})"

    # ----- files ---------------------------------------------------------------------------------
    def exists(self) -> bool:
        """Whether the table's directory exists (it is created by the first append or claim)."""
        return self._fs.get_file_info(self._root).type == pafs.FileType.Directory

    def files(self) -> List[str]:
        """The table's data files (paths within its filesystem), in name (= write time) order."""
        info = self._fs.get_file_info(self._root)
        if info.type == pafs.FileType.NotFound:
            return []
        if info.type != pafs.FileType.Directory:
            raise CostTableError(f"{self.location}: cost table location is not a directory")
        entries = self._fs.get_file_info(pafs.FileSelector(self._root, recursive=False))
        names = [e.path for e in entries if e.type == pafs.FileType.File and e.base_name.endswith(FILE_SUFFIX)
                 and not e.base_name.startswith((".", "_"))]
        return sorted(names, key=lambda p: p.rsplit("/", 1)[-1])

    def _read_file(self, path: str) -> pa.Table:
        cached = self._file_cache.get(path)
        if cached is not None:
            return cached
        try:
            with self._fs.open_input_file(path) as f:
                pf = pq.ParquetFile(f)
                legacy = _check_schema(pf.schema_arrow, path)
                columns = LEGACY_COLUMNS if legacy else SCHEMA.names
                table = pf.read(columns=columns).select(columns)
        except CostTableError as e:
            raise CostTableError(f"{e} {_LEFT_ALONE}") from None
        except (pa.ArrowException, OSError, ValueError) as e:
            raise CostTableError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e}) "
                                 f"{_LEFT_ALONE}") from e
        if legacy:
            table = table.append_column("software", pa.array([LEGACY_SOFTWARE] * table.num_rows, pa.string()))
            self._legacy_files.add(path)
            log.info("%s: cost-table schema version %s; its %d rows are kept but never reused", path,
                     LEGACY_VERSION.decode(), table.num_rows)
        table = table.select(SCHEMA.names).cast(SCHEMA)
        self._file_cache[path] = table
        return table

    def read_raw(self) -> pa.Table:
        """Every row of every file, not deduplicated (schema ``SCHEMA``)."""
        tables = [self._read_file(p) for p in self.files()]
        if not tables:
            return SCHEMA.empty_table()
        return pa.concat_tables(tables)

    def read_all(self) -> pa.Table:
        """The table deduplicated: one row per (key, device, batch_size, dtype, software); see ``deduplicate``."""
        return deduplicate(self.read_raw())

    # ----- queries -------------------------------------------------------------------------------
    def lookup(self, keys: Iterable[str], device: DeviceInfo, batch_size: int, dtype: str) -> Dict[str, Measurement]:
        """Stored measurements of ``keys`` on ``device`` (its name and software) at ``batch_size`` and ``dtype``.

        Returns:
            key -> Measurement for the keys found (missing keys are absent); error rows come back as
            error measurements (``cost`` is inf).
        Raises:
            ValueError: ``device`` is not a ``DeviceInfo``.
        """
        return self.search(keys, device, batch_size, dtype).found

    def search(self, keys: Iterable[str], device: DeviceInfo, batch_size: int, dtype: str) -> TableLookup:
        """Like ``lookup``, and which of the missing keys have rows measured by other software.

        Args:
            keys: stage keys (``StageSpec.key``) wanted.
            device: the ``DeviceInfo`` of the source that would measure them: its ``name`` and its
                ``software`` fingerprint must both match a row for it to be reused.
        Returns:
            ``TableLookup``: the reusable measurements and the stale keys (kept in the table, not reused).
        Raises:
            ValueError: ``device`` is not a ``DeviceInfo``.
        """
        if not isinstance(device, DeviceInfo):
            raise ValueError(f"cost-table lookups need the DeviceInfo (its software fingerprint is part of the "
                             f"key), got {type(device).__name__} {device!r}")
        wanted = pa.array(sorted(set(keys)), pa.string())
        raw = self.read_raw()
        if raw.num_rows == 0 or len(wanted) == 0:
            return TableLookup({}, frozenset())
        mask = pc.and_(pc.and_(pc.equal(raw["device"], device.name), pc.equal(raw["batch_size"], int(batch_size))),
                       pc.and_(pc.equal(raw["dtype"], dtype), pc.is_in(raw["key"], value_set=wanted)))
        rows = raw.filter(mask)
        same = pc.equal(rows["software"], device.software)
        current = deduplicate(rows.filter(same))
        cols = ["key", "latency_ms", "spread_ms", "repeat", "error_kind", "error_message", "estimated", "worker"]
        found = {r["key"]: _row_to_measurement(r) for r in current.select(cols).to_pylist()}
        stale = frozenset(pc.unique(rows.filter(pc.invert(same))["key"]).to_pylist()) - found.keys()
        if stale:
            log.info("%s: %d stages on %s were measured only by other software (or schema %s); they are not "
                     "reused (now: %s)", self.location, len(stale), device.name, LEGACY_VERSION.decode(),
                     device.software or "-")
        return TableLookup(found, stale)

    def summary(self) -> dict:
        """Counts describing the table (all rows, before deduplication, unless said otherwise).

        Returns:
            dict with ``location``, ``files``, ``legacy_files`` (schema 1: rows never reused), ``rows``,
            ``unique_rows`` (after deduplication), ``unique_stages`` (distinct keys), ``devices``,
            ``batch_sizes``, ``dtypes``, ``software`` (sorted lists), ``error_rows``, ``estimated_rows`` and
            ``measured_time_s``: the device time the timing runs took, latency x (warmup + number x
            repeat) summed over successful measured rows.
        """
        files = self.files()
        raw = self.read_raw()
        errors = pc.not_equal(raw["error_kind"], "")
        measured = raw.filter(pc.and_(pc.invert(errors), pc.invert(raw["estimated"])))
        runs = pc.add(measured["warmup"].cast(pa.float64()),
                      pc.multiply(measured["number"].cast(pa.float64()), measured["repeat"].cast(pa.float64())))
        total_ms = pc.sum(pc.multiply(measured["latency_ms"], runs)).as_py() or 0.0
        return {
            "location": self.location,
            "files": len(files),
            "legacy_files": len(self._legacy_files.intersection(files)),
            "rows": raw.num_rows,
            "unique_rows": deduplicate(raw).num_rows,
            "unique_stages": len(pc.unique(raw["key"])),
            "devices": sorted(pc.unique(raw["device"]).to_pylist()),
            "batch_sizes": sorted(pc.unique(raw["batch_size"]).to_pylist()),
            "dtypes": sorted(pc.unique(raw["dtype"]).to_pylist()),
            "software": sorted(pc.unique(raw["software"]).to_pylist()),
            "error_rows": pc.sum(errors).as_py() or 0,
            "estimated_rows": pc.sum(raw["estimated"]).as_py() or 0,
            "measured_time_s": total_ms / 1000.0,
        }

    # ----- writing -------------------------------------------------------------------------------
    def append(self, measurements: Sequence[Measurement], specs_by_key: Mapping[str, StageSpec],
               conditions: Conditions,
               strategy_by_key: Optional[Mapping[str, Union[Strategy, str]]] = None) -> Optional[str]:
        """Write ``measurements`` as one new file, atomically; existing files are not touched.

        Args:
            measurements: what a cost source returned (errors included: stored with NaN latency).
            specs_by_key: the spec of every measurement's key (stored so the stage can be re-measured).
            conditions: the device (and its software), batch size, dtype and settings all the
                measurements were taken under.
            strategy_by_key: overrides ``spec.strategy`` per key (a merge shares its key with a plain conv).
        Returns:
            The path of the new file, or None when ``measurements`` is empty.
        Raises:
            ValueError: a measurement's spec is missing or has another key.
            CostTableError: the table location cannot be written.
        """
        if not measurements:
            return None
        device, batch_size, dtype, settings = (conditions.device, conditions.batch_size, conditions.dtype,
                                               conditions.settings)
        strategy_by_key = strategy_by_key or {}
        rows: Dict[str, list] = {name: [] for name in SCHEMA.names}
        now = datetime.now(timezone.utc)
        checked: Dict[str, Tuple[str, int]] = {}
        for m in measurements:
            spec = specs_by_key.get(m.key)
            if spec is None:
                raise ValueError(f"append: no StageSpec given for measurement key {m.key}")
            if m.key not in checked:
                if spec.key != m.key:
                    raise ValueError(f"append: the spec given for key {m.key} has key {spec.key}")
                checked[m.key] = (spec.canonical_json(), spec.num_ops)
            spec_json, num_ops = checked[m.key]
            strategy = strategy_by_key.get(m.key, spec.strategy)
            failed = m.error is not ErrorKind.NONE
            values = {
                "key": m.key, "spec": spec_json,
                "strategy": strategy.value if isinstance(strategy, Strategy) else str(strategy),
                "num_ops": num_ops, "device": device.name, "device_kind": device.kind,
                "compute_capability": device.compute_capability, "driver": device.driver,
                "library": device.library, "software": device.software, "batch_size": int(batch_size),
                "dtype": dtype,
                "latency_ms": math.nan if failed else float(m.latency_ms), "spread_ms": float(m.spread_ms),
                "warmup": settings.warmup, "number": settings.number, "repeat": settings.repeat,
                "estimated": bool(m.estimated), "worker": m.worker, "timestamp": now,
                "error_kind": m.error.value, "error_message": m.message,
            }
            for name, v in values.items():
                rows[name].append(v)
        table = pa.Table.from_pydict(rows, schema=SCHEMA)
        try:
            return self._write_atomic(table, now)
        except (OSError, pa.ArrowException) as e:  # name the table, not the temporary file
            raise CostTableError(f"cost table {self.location}: cannot write new rows ({brief_error(e)})") from e

    def _write_atomic(self, table: pa.Table, now: datetime) -> str:
        return write_parquet_atomic(self._fs, self._root, table, now)

    def claims(self, conditions: Conditions, ttl_s: float = 60.0) -> ClaimBook:
        """Open this run's claims on the table's stages measured under ``conditions`` (see ``claims``):
        its heartbeat is written now, so this is also the check that the table is writable.

        Args:
            conditions: the device (name and software), batch size and dtype of the stages claimed.
            ttl_s: how long the claims outlive the run's last heartbeat.
        Returns:
            The open ``ClaimBook`` (``close()`` it when done).
        Raises:
            CostTableError: the table location cannot be written.
        """
        scope = ClaimScope(conditions.device.name, conditions.device.software, conditions.batch_size,
                           conditions.dtype)
        try:
            return ClaimBook(self._fs, self._root, scope, ttl_s).open()
        except ClaimWriteError as e:
            raise CostTableError(f"cost table {self.location} is not writable ({e}); nothing was measured: "
                                 f"name another table (--table, cost_table=) or make this one writable") from None

    def compact(self, dedup: bool = True) -> Optional[str]:
        """Merge the current-version files into one (deduplicated unless ``dedup=False``).

        The merged file is written atomically first; only then are the files it merged removed. Files
        appended meanwhile, and schema-1 files, are not touched. Returns the merged file's path, or None
        if there was at most one file to merge.

        Raises:
            CostTableError: a file is unreadable or foreign (nothing is written or removed then).
        """
        tables = {p: self._read_file(p) for p in self.files()}
        files = [p for p in tables if p not in self._legacy_files]
        if len(files) <= 1:
            return None
        merged = pa.concat_tables([tables[p] for p in files])
        if dedup:
            merged = deduplicate(merged)
        path = self._write_atomic(merged, datetime.now(timezone.utc))
        for p in files:
            self._fs.delete_file(p)
            self._file_cache.pop(p, None)
        return path


def format_summary(summary: dict) -> str:
    """A few human-readable lines for ``CostTable.summary()``."""
    return (f"cost table {summary['location']}: {summary['rows']} rows in {summary['files']} files "
            f"({summary['unique_rows']} after deduplication), {summary['unique_stages']} distinct stages, "
            f"{summary['error_rows']} error rows, {summary['estimated_rows']} estimated rows"
            f"{_legacy_note(summary)}\n"
            f"  devices: {', '.join(summary['devices']) or '-'}; batch sizes: "
            f"{', '.join(map(str, summary['batch_sizes'])) or '-'}; dtypes: {', '.join(summary['dtypes']) or '-'}\n"
            f"  software: {'; '.join(summary['software']) or '-'}\n"
            f"  device time spent measuring: {summary['measured_time_s']:.1f} s")


def _legacy_note(summary: dict) -> str:
    n = summary.get("legacy_files", 0)
    return f"; {n} schema-{LEGACY_VERSION.decode()} file(s) kept, their rows never reused" if n else ""

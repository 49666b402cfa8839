"""The Parquet cost table: round trips, filtering, deduplication, atomicity, concurrency, bad files."""
from __future__ import annotations

import math
import multiprocessing
import os
import time
from dataclasses import replace

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from ios_ray.costs.measurement import DeviceInfo, ErrorKind, MeasureSettings, Measurement
from ios_ray.costs.table import (LEGACY_COLUMNS, SCHEMA, SCHEMA_METADATA_KEY, Conditions, CostTable,
                                 CostTableError, deduplicate, default_table_path, format_summary)
from ios_ray.graph import builder as b
from ios_ray.graph.ir import Block
from ios_ray.graph.schedule import Strategy
from ios_ray.space.stage import stage_spec

GPU = DeviceInfo("NVIDIA H200", "gpu", "9.0", "13.0", "cudnn 9.19")
CPU = DeviceInfo("cpu:numpy/x86_64", "cpu")
SETTINGS = MeasureSettings(warmup=1, number=2, repeat=3)


def make_specs(n: int = 3):
    """n distinct single-conv stage specs, plus one two-group stage when n >= 2 (key -> spec)."""
    v = b.placeholder((16, 8, 8))
    block = Block(v.node)
    convs = [b.conv2d(block, [[v]], 8 * (i + 1), (3, 3), padding=(1, 1)) for i in range(n)]
    specs = [stage_spec([[c.node]]) for c in convs]
    if n >= 2:
        specs.append(stage_spec([[convs[0].node], [convs[1].node]]))
    return {s.key: s for s in specs}


def ok(key, ms, worker="w0"):
    return Measurement(key, ms, spread_ms=ms / 10, samples=SETTINGS.repeat, worker=worker)


def snapshot(directory):
    """name -> (bytes, mtime_ns) of every file in ``directory``."""
    out = {}
    for name in os.listdir(directory):
        p = os.path.join(directory, name)
        with open(p, "rb") as f:
            out[name] = (f.read(), os.stat(p).st_mtime_ns)
    return out


def test_round_trip_append_lookup(tmp_path):
    specs = make_specs()
    keys = list(specs)
    table = CostTable(tmp_path)
    sent = [ok(k, 1.5 + i) for i, k in enumerate(keys)]
    path = table.append(sent, specs, Conditions(GPU, 1, "float32", SETTINGS))
    assert path is not None and os.path.basename(path).startswith("part-")
    got = table.lookup(keys + ["not-a-key"], GPU, 1, "float32")
    assert got == {m.key: m for m in sent}
    for i, k in enumerate(keys):
        m = got[k]
        assert m.latency_ms == pytest.approx(1.5 + i)
        assert m.spread_ms == pytest.approx((1.5 + i) / 10)
        assert m.samples == SETTINGS.repeat and m.error is ErrorKind.NONE and not m.estimated
        assert m.worker == "w0"
    # a fresh instance (another process) sees the same rows; the spec column rebuilds the stage
    row = CostTable(str(tmp_path)).read_all().to_pylist()[0]
    from ios_ray.space.stage import StageSpec
    assert StageSpec.from_json(row["spec"]).key == row["key"]
    assert row["num_ops"] == specs[row["key"]].num_ops
    assert (row["warmup"], row["number"], row["repeat"]) == (1, 2, 3)
    assert row["device_kind"] == "gpu" and row["driver"] == "13.0" and row["library"] == "cudnn 9.19"
    assert row["software"] == GPU.software == "cudnn 9.19 | driver 13.0"
    assert row["timestamp"].tzinfo is not None


def test_lookup_only_matching_device_batch_dtype(tmp_path):
    specs = make_specs(1)
    key = next(iter(specs))
    table = CostTable(tmp_path)
    table.append([ok(key, 1.0)], specs, Conditions(GPU, 1, "float32", SETTINGS))
    table.append([ok(key, 2.0)], specs, Conditions(GPU, 8, "float32", SETTINGS))
    table.append([ok(key, 3.0)], specs, Conditions(GPU, 1, "tf32", SETTINGS))
    table.append([ok(key, 4.0)], specs, Conditions(CPU, 1, "float32", SETTINGS))
    assert table.lookup([key], GPU, 1, "float32")[key].latency_ms == 1.0
    assert table.lookup([key], GPU, 8, "float32")[key].latency_ms == 2.0
    assert table.lookup([key], GPU, 1, "tf32")[key].latency_ms == 3.0
    assert table.lookup([key], CPU, 1, "float32")[key].latency_ms == 4.0
    assert table.lookup([key], GPU, 16, "float32") == {}
    assert table.lookup([key], replace(GPU, name="other gpu"), 1, "float32") == {}
    assert table.read_all().num_rows == 4  # different conditions are not duplicates


def test_dedup_latest_success_wins_and_success_beats_error(tmp_path):
    specs = make_specs(2)
    k1, k2 = list(specs)[:2]
    table = CostTable(tmp_path)
    table.append([ok(k1, 5.0), ok(k2, 7.0)], specs, Conditions(GPU, 1, "float32", SETTINGS))
    time.sleep(0.002)
    table.append([ok(k1, 4.0),
                  Measurement(k2, math.nan, error=ErrorKind.RUNTIME, message="out of memory")],
                 specs, Conditions(GPU, 1, "float32", SETTINGS))
    got = table.lookup([k1, k2], GPU, 1, "float32")
    assert got[k1].latency_ms == 4.0          # the latest success
    assert got[k2].latency_ms == 7.0          # an older success beats a newer error
    assert got[k2].error is ErrorKind.NONE
    dedup = table.read_all()
    assert dedup.num_rows == 2 and table.read_raw().num_rows == 4


def test_error_rows_round_trip_as_error_measurements(tmp_path):
    specs = make_specs(1)
    key = next(iter(specs))
    table = CostTable(tmp_path)
    # even if the source left a number in latency_ms, an error row is stored as NaN
    bad = Measurement(key, 3.0, error=ErrorKind.WORKER_DIED, message="worker died 3 times", worker="w7")
    table.append([bad], specs, Conditions(GPU, 1, "float32", SETTINGS))
    row = table.read_all().to_pylist()[0]
    assert math.isnan(row["latency_ms"]) and row["error_kind"] == "worker_died"
    m = table.lookup([key], GPU, 1, "float32")[key]
    assert m.error is ErrorKind.WORKER_DIED and m.message == "worker died 3 times" and m.worker == "w7"
    assert math.isnan(m.latency_ms) and m.cost == math.inf and m.samples == 0


def test_readable_with_plain_pyarrow_dataset(tmp_path):
    specs = make_specs()
    table = CostTable(tmp_path)
    table.append([ok(k, 1.0) for k in specs], specs, Conditions(GPU, 1, "float32", SETTINGS))
    table.append([ok(k, 2.0) for k in specs], specs, Conditions(CPU, 4, "float32", SETTINGS))
    (tmp_path / ".tmp-crashed-writer.parquet").write_bytes(b"half a file")
    plain = ds.dataset(str(tmp_path), format="parquet").to_table()
    assert plain.num_rows == 2 * len(specs)
    assert plain.schema.equals(SCHEMA)
    assert plain.schema.metadata[SCHEMA_METADATA_KEY] == b"2"
    assert sorted(set(plain["batch_size"].to_pylist())) == [1, 4]


def test_atomic_write_leaves_no_temp_file_and_never_rewrites(tmp_path):
    specs = make_specs()
    table = CostTable(tmp_path)
    table.append([ok(k, 1.0) for k in specs], specs, Conditions(GPU, 1, "float32", SETTINGS))
    before = snapshot(tmp_path)
    table.append([ok(k, 2.0) for k in specs], specs, Conditions(GPU, 1, "float32", SETTINGS))
    after = snapshot(tmp_path)
    names = sorted(after)
    assert len(names) == 2 and all(n.startswith("part-") and n.endswith(".parquet") for n in names)
    for name, content in before.items():
        assert after[name] == content  # the earlier file is untouched


def test_append_rejects_missing_or_mismatched_spec(tmp_path):
    specs = make_specs(2)
    k1, k2 = list(specs)[:2]
    table = CostTable(tmp_path)
    with pytest.raises(ValueError, match="no StageSpec"):
        table.append([ok(k1, 1.0)], {}, Conditions(GPU, 1, "float32", SETTINGS))
    with pytest.raises(ValueError, match="has key"):
        table.append([ok(k1, 1.0)], {k1: specs[k2]}, Conditions(GPU, 1, "float32", SETTINGS))
    assert table.append([], specs, Conditions(GPU, 1, "float32", SETTINGS)) is None
    assert not tmp_path.exists() or os.listdir(tmp_path) == []


def test_strategy_override(tmp_path):
    specs = make_specs(1)
    key = next(iter(specs))
    table = CostTable(tmp_path)
    table.append([ok(key, 1.0)], specs, Conditions(GPU, 1, "float32", SETTINGS), strategy_by_key={key: Strategy.MERGE})
    assert table.read_all()["strategy"].to_pylist() == ["merge"]


def _append_many(path, worker, count):
    specs = make_specs()
    table = CostTable(path)
    for i in range(count):
        table.append([ok(k, 1.0 + i, worker=f"{worker}-{i}") for k in specs], specs, Conditions(GPU, 1, "float32", SETTINGS))


def test_concurrent_appends_from_two_processes_lose_no_rows(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), f"p{i}", 20)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    table = CostTable(tmp_path)
    per_append = len(make_specs())
    raw = table.read_raw()
    assert raw.num_rows == 2 * 20 * per_append
    assert len(set(raw["worker"].to_pylist())) == 40
    assert len(table.files()) == 40
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_file_raises_naming_it_and_touches_nothing(tmp_path, damage):
    specs = make_specs()
    table = CostTable(tmp_path)
    first = table.append([ok(k, 1.0) for k in specs], specs, Conditions(GPU, 1, "float32", SETTINGS))
    table.append([ok(k, 2.0) for k in specs], specs, Conditions(GPU, 1, "float32", SETTINGS))
    good = open(first, "rb").read()
    bad = tmp_path / "part-99999999T000000000000Z-bad.parquet"
    bad.write_bytes(good[: len(good) // 2] if damage == "truncated" else b"this is not parquet" * 10)
    before = snapshot(tmp_path)
    for call in (lambda t: t.read_all(), lambda t: t.lookup(list(specs), GPU, 1, "float32"),
                 lambda t: t.summary(), lambda t: t.compact()):
        with pytest.raises(CostTableError, match="part-99999999T000000000000Z-bad.parquet"):
            call(CostTable(tmp_path))
    assert snapshot(tmp_path) == before


def test_foreign_schema_raises_and_touches_nothing(tmp_path):
    specs = make_specs(1)
    table = CostTable(tmp_path)
    table.append([ok(k, 1.0) for k in specs], specs, Conditions(GPU, 1, "float32", SETTINGS))
    foreign = tmp_path / "part-other.parquet"
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), foreign)
    before = snapshot(tmp_path)
    with pytest.raises(CostTableError, match=r"part-other\.parquet.*not a cost-table file"):
        CostTable(tmp_path).read_all()
    assert snapshot(tmp_path) == before


def test_wrong_version_missing_column_and_wrong_type_are_refused(tmp_path):
    specs = make_specs(1)
    src = CostTable(tmp_path / "src")
    path = src.append([ok(k, 1.0) for k in specs], specs, Conditions(GPU, 1, "float32", SETTINGS))
    good = pq.read_table(path)

    cases = {
        "version": (good.replace_schema_metadata({SCHEMA_METADATA_KEY: b"7"}), "schema version '7'"),
        "missing": (good.drop_columns(["latency_ms"]), r"missing required columns \['latency_ms'\]"),
        "type": (good.set_column(good.schema.get_field_index("batch_size"), "batch_size",
                                 good["batch_size"].cast(pa.string())), "batch_size is string"),
    }
    for name, (tbl, message) in cases.items():
        d = tmp_path / name
        d.mkdir()
        pq.write_table(tbl, d / "part-x.parquet")
        with pytest.raises(CostTableError, match=message) as info:
            CostTable(d).read_all()
        assert "part-x.parquet" in str(info.value)


def test_stale_temp_file_is_ignored(tmp_path):
    specs = make_specs(1)
    table = CostTable(tmp_path)
    (tmp_path / ".tmp-20260101T000000000000Z-dead.parquet").write_bytes(b"PAR1 half written")
    table.append([ok(k, 1.0) for k in specs], specs, Conditions(GPU, 1, "float32", SETTINGS))
    assert table.read_all().num_rows == 1
    assert len(table.files()) == 1
    assert (tmp_path / ".tmp-20260101T000000000000Z-dead.parquet").exists()


def test_file_uri(tmp_path):
    specs = make_specs(1)
    key = next(iter(specs))
    uri = "file://" + str(tmp_path / "uri_table")
    CostTable(uri).append([ok(key, 2.5)], specs, Conditions(GPU, 1, "float32", SETTINGS))
    assert CostTable(uri).lookup([key], GPU, 1, "float32")[key].latency_ms == 2.5
    assert CostTable(tmp_path / "uri_table").lookup([key], GPU, 1, "float32")[key].latency_ms == 2.5


def test_missing_directory_reads_empty(tmp_path):
    table = CostTable(tmp_path / "nothing-yet")
    assert table.read_all().num_rows == 0
    assert table.lookup(["k"], GPU, 1, "float32") == {}
    assert table.summary()["rows"] == 0


def test_summary_and_compact(tmp_path):
    specs = make_specs()
    keys = list(specs)
    table = CostTable(tmp_path)
    table.append([ok(k, 1.0) for k in keys], specs, Conditions(GPU, 1, "float32", SETTINGS))
    time.sleep(0.002)
    table.append([ok(keys[0], 0.5), Measurement(keys[1], math.nan, error=ErrorKind.RUNTIME, message="x")],
                 specs, Conditions(GPU, 1, "float32", SETTINGS))
    table.append([ok(keys[0], 2.0)], specs, Conditions(CPU, 2, "float32", SETTINGS))
    s = table.summary()
    assert (s["files"], s["rows"], s["unique_stages"], s["error_rows"]) == (3, len(keys) + 3, len(keys), 1)
    assert s["unique_rows"] == len(keys) + 1
    assert s["devices"] == sorted([GPU.name, CPU.name]) and s["batch_sizes"] == [1, 2]
    runs = SETTINGS.warmup + SETTINGS.number * SETTINGS.repeat
    assert s["measured_time_s"] == pytest.approx((len(keys) * 1.0 + 0.5 + 2.0) * runs / 1000)
    assert "3 files" in format_summary(s)

    expected = table.lookup(keys, GPU, 1, "float32")
    merged = table.compact()
    assert table.files() == [merged]
    assert CostTable(tmp_path).lookup(keys, GPU, 1, "float32") == expected
    assert CostTable(tmp_path).read_raw().num_rows == len(keys) + 1


def test_deduplicate_prefers_later_row_on_equal_timestamp():
    base = {"key": "k", "spec": "{}", "strategy": "parallel", "num_ops": 1, "device": "d", "device_kind": "gpu",
            "compute_capability": "", "driver": "", "library": "", "software": "", "batch_size": 1,
            "dtype": "float32",
            "spread_ms": 0.0, "warmup": 0, "number": 1, "repeat": 1, "estimated": False, "worker": "",
            "timestamp": pa.scalar(0, pa.timestamp("us", tz="UTC")).as_py(), "error_kind": "",
            "error_message": ""}
    rows = [{**base, "latency_ms": 1.0}, {**base, "latency_ms": 2.0}]
    t = pa.Table.from_pylist(rows, schema=SCHEMA)
    assert deduplicate(t)["latency_ms"].to_pylist() == [2.0]


def test_default_table_path(monkeypatch, tmp_path):
    monkeypatch.setenv("IOS_RAY_CACHE", str(tmp_path / "explicit"))
    assert default_table_path() == str(tmp_path / "explicit")
    monkeypatch.delenv("IOS_RAY_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_table_path() == str(tmp_path / "xdg" / "ios_ray" / "costs")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_table_path().endswith(os.path.join(".cache", "ios_ray", "costs"))


def test_analytic_estimates_round_trip_as_estimates(tmp_path):
    from ios_ray.costs.analytic import AnalyticCostModel
    specs = make_specs()
    model = AnalyticCostModel("H200")
    estimates = model.measure(list(specs.values()), 2, SETTINGS)
    table = CostTable(tmp_path)
    table.append(estimates, specs, Conditions(model.device(), 2, model.dtype, SETTINGS))
    got = table.lookup(list(specs), model.device(), 2, "float32")
    assert got == {m.key: m for m in estimates}
    assert all(m.estimated for m in got.values())
    assert table.lookup(list(specs), GPU, 2, "float32") == {}  # never mistaken for a measurement
    s = table.summary()
    assert s["estimated_rows"] == len(specs) and s["measured_time_s"] == 0.0


def test_row_from_other_software_is_stale_not_reused(tmp_path):
    """Regression: rows were looked up by key, device, batch and dtype only, so a row measured under
    another cuDNN (or driver, or autotune setting) was reused silently."""
    specs = make_specs(2)
    k1, k2 = list(specs)[:2]
    table = CostTable(tmp_path)
    old_cudnn = replace(GPU, library="cudnn 9.1")
    table.append([ok(k1, 1.0), ok(k2, 2.0)], specs, Conditions(old_cudnn, 1, "float32", SETTINGS))
    table.append([ok(k2, 3.0)], specs, Conditions(GPU, 1, "float32", SETTINGS))
    found = table.search([k1, k2], GPU, 1, "float32")
    assert set(found.found) == {k2} and found.found[k2].latency_ms == 3.0
    assert found.stale == {k1}                        # k2 has a current row: not stale
    assert table.lookup([k1], replace(GPU, settings="autotune off"), 1, "float32") == {}
    assert table.lookup([k1], old_cudnn, 1, "float32")[k1].latency_ms == 1.0   # kept: an old stack finds it
    assert table.read_all().num_rows == 3              # nothing merged across software
    assert len(table.summary()["software"]) == 2


def test_schema_1_file_is_kept_but_never_reused(tmp_path):
    """A table written before the software column: its rows are stale misses, not an error, and the
    file is neither changed nor compacted away."""
    specs = make_specs(2)
    k1, k2 = list(specs)[:2]
    src = CostTable(tmp_path / "src")
    path = src.append([ok(k1, 1.0), ok(k2, 2.0)], specs, Conditions(GPU, 1, "float32", SETTINGS))
    v1 = pq.read_table(path).select(LEGACY_COLUMNS).replace_schema_metadata({SCHEMA_METADATA_KEY: b"1"})
    d = tmp_path / "table"
    d.mkdir()
    pq.write_table(v1, d / "part-00000000T000000000000Z-v1.parquet")
    table = CostTable(d)
    table.append([ok(k2, 5.0)], specs, Conditions(GPU, 1, "float32", SETTINGS))
    table.append([ok(k2, 6.0)], specs, Conditions(GPU, 2, "float32", SETTINGS))
    before = snapshot(d)
    found = table.search([k1, k2], GPU, 1, "float32")
    assert set(found.found) == {k2} and found.found[k2].latency_ms == 5.0 and found.stale == {k1}
    summary = table.summary()
    assert summary["legacy_files"] == 1 and summary["rows"] == 4 and "never reused" in format_summary(summary)
    assert snapshot(d) == before
    merged = table.compact()
    names = sorted(os.listdir(d))
    assert len(names) == 2 and "part-00000000T000000000000Z-v1.parquet" in names
    assert os.path.basename(merged) in names
    assert CostTable(d).search([k1, k2], GPU, 1, "float32").stale == {k1}


def test_lookup_needs_the_device_info():
    with pytest.raises(ValueError, match="DeviceInfo"):
        CostTable("unused").lookup(["k"], "NVIDIA H200", 1, "float32")
    with pytest.raises(ValueError, match="batch_size"):
        Conditions(GPU, 0, "float32")

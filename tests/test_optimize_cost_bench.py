"""benchmarks/optimize_cost.py end to end on analytic costs (no device): the rows the issue asks for, a warm
re-run that measures nothing, rows of later runs added to the file, the copy under $OUT, the time budget."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import optimize_cost  # noqa: E402

REQUIRED = {"model", "math", "r", "s", "device", "cold_s", "unique_stages", "measured_stages", "warm_s"}


def test_rows_warm_rerun_merge_and_out_copy(tmp_path, monkeypatch, capsys):
    out, copy = tmp_path / "optimize_cost.json", tmp_path / "device_out"
    copy.mkdir()
    monkeypatch.setenv("OUT", str(copy))
    assert optimize_cost.main(["--cost", "analytic:H200", "--models", "squeezenet", "--compare",
                               "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["model"], r["math"]) for r in rows] == [("squeezenet", "fp32"), ("squeezenet", "tf32")]
    for r in rows:
        assert REQUIRED <= set(r) and (r["r"], r["s"]) == (3, 8) and r["device"] == "analytic:H200"
        assert 0 < r["measured_stages"] < r["unique_stages"] and r["warm_measured"] == 0
        assert r["same_schedule"] and r["exhaustive_measured"] == r["unique_stages"]
    assert "squeezenet" in capsys.readouterr().out
    # a later run of another model adds its rows; a re-run of the same row replaces it
    assert optimize_cost.main(["--cost", "analytic:H200", "--models", "sample,squeezenet", "--math", "fp32",
                               "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert sorted((r["model"], r["math"]) for r in rows) == [("sample", "fp32"), ("squeezenet", "fp32"),
                                                             ("squeezenet", "tf32")]
    assert json.loads((copy / out.name).read_text()) == json.loads(out.read_text())


def test_budget_stops_a_row_and_keeps_going(tmp_path):
    out = tmp_path / "o.json"
    assert optimize_cost.main(["--cost", "analytic:H200", "--models", "nasnet", "--math", "fp32",
                               "--budget-s", "0.5", "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["model"] == "nasnet" and row["timed_out"] and row["budget_s"] == 0.5 and row.get("warm_s") is None


def test_math_both_and_out_under_the_device_out_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path))
    out = tmp_path / "optimize_cost.json"   # --out inside $OUT: no copy onto itself
    assert optimize_cost.main(["--cost", "analytic:H200", "--models", "sample", "--math", "both",
                               "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["model"], r["math"]) for r in rows] == [("sample", "fp32"), ("sample", "tf32")]


@pytest.mark.ray
def test_simulate_rows_time_the_pool_alone(tmp_path):
    """``--simulate``: sleeping workers over a space's keys; each row counts every stage once, spreads them
    over the workers, and gives efficiency and the driver's CPU per stage (thread and whole process)."""
    out = tmp_path / "sim.json"
    done = subprocess.run([sys.executable, str(BENCH / "optimize_cost.py"), "--simulate", "1,2", "--sim-ms", "0.5",
                           "--sim-model", "squeezenet", "--out", str(out)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(BENCH.parent)})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["model"] == "squeezenet" and result["enumerate_s"] > 0 and (result["r"], result["s"]) == (3, 8)
    for row, workers in zip(result["rows"], [1, 2]):
        assert row["workers"] == workers and row["stages"] == 154 and row["errors"] == 0
        assert row["per_worker_min"] > 0 and row["per_worker_max"] <= 154
        assert row["ideal_s"] == pytest.approx(154 * 0.5e-3 / workers)
        assert 0 < row["efficiency"] <= 1 and row["worker_busy_s"] >= 154 * 0.5e-3
        assert row["driver_thread_us_per_stage"] > 0 and row["driver_us_per_stage"] >= row["driver_thread_us_per_stage"]


def test_a_row_written_before_stream_factor_existed_is_replaced_not_kept_beside(tmp_path):
    out = tmp_path / "optimize_cost.json"
    old = {"model": "sample", "math": "fp32", "r": 3, "s": 8, "batch_size": 1, "cost": "analytic:H200",
           "profiling": "lazy", "cold_s": 99.0}
    out.write_text(json.dumps({"rows": [old]}))
    assert optimize_cost.main(["--cost", "analytic:H200", "--models", "sample", "--math", "fp32",
                               "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 1 and rows[0]["cold_s"] != 99.0 and rows[0]["stream_factor"] == 0.0

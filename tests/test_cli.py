"""The ios-ray command: optimize -> schedule JSON -> run, the table summary, and clear errors."""
import json

import pytest

from ios_ray.cli import main


def test_optimize_then_run_then_table(tmp_path, capsys):
    out = tmp_path / "sample.json"
    table = tmp_path / "costs"
    rc = main(["optimize", "sample", "--workers", "0", "--cost", "cpu", "--warmup", "0", "--number", "1",
               "--repeat", "1", "--table", str(table), "--out", str(out), "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "unique stages" in text and "time            : enumerate" in text
    assert json.loads(out.read_text())["format"] == "ios_ray.graph"

    assert main(["run", str(out), "--repeat", "1", "--number", "1"]) == 0
    text = capsys.readouterr().out
    assert "output shape (1, 1875, 15, 15)" in text and "latency" in text

    assert main(["table", str(table)]) == 0
    assert "rows" in capsys.readouterr().out


def test_models_lists_the_zoo(capsys):
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    for name, ops in (("inception_v3", 119), ("randwire", 120), ("nasnet", 374), ("squeezenet", 50)):
        assert name in text and f"operators={ops:4d}" in text


def test_unknown_model_is_a_clear_error():
    with pytest.raises(SystemExit, match="neither a model"):
        main(["optimize", "resnet9000", "--workers", "0"])


def test_corrupt_table_is_reported_not_raised(tmp_path, capsys):
    table = tmp_path / "costs"
    table.mkdir()
    (table / "part-bad.parquet").write_bytes(b"not parquet at all")
    assert main(["table", str(table)]) == 2
    assert "part-bad.parquet" in capsys.readouterr().err
    assert (table / "part-bad.parquet").read_bytes() == b"not parquet at all"


def test_bad_schedule_file_is_reported(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["run", str(bad)]) == 2
    assert "not an ios_ray graph" in capsys.readouterr().err


def test_missing_files_are_clear_errors_not_tracebacks(tmp_path, capsys):
    """Regression: a missing schedule/weights file or a directory as the model raised OSError from main."""
    assert main(["run", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err
    assert main(["optimize", str(tmp_path), "--workers", "0", "--cost", "analytic"]) == 2
    assert "ios-ray: error" in capsys.readouterr().err


def test_profiling_flag_picks_exhaustive_or_lazy(tmp_path, capsys):
    for mode in ("exhaustive", "lazy"):
        out = tmp_path / f"{mode}.json"
        assert main(["optimize", "squeezenet", "--workers", "0", "--cost", "analytic", "--table", "none",
                     "--profiling", mode, "--out", str(out), "--no-progress"]) == 0
        text = capsys.readouterr().out
        assert f"profiling       : {mode}" in text
        assert out.exists()

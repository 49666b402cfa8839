"""The ios-ray command: optimize -> schedule JSON -> run, the table summary, and clear errors."""
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

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


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["optimize", "resnet9000", "--workers", "0"]) == 2
    assert "neither a model" in capsys.readouterr().err


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


def test_tolerance_reaches_the_lazy_dp_and_the_report(tmp_path, capsys):
    out = tmp_path / "sq.json"
    assert main(["optimize", "squeezenet", "--workers", "0", "--cost", "analytic", "--table", "none",
                 "--tolerance", "0.25", "--out", str(out), "--no-progress"]) == 0
    assert "within 25% of the optimum" in capsys.readouterr().out
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["tolerance"] == 0.25


def test_fill_reaches_the_lazy_dp_and_the_report(tmp_path, capsys):
    rounds = {}
    for fill in ("0", "4"):
        out = tmp_path / f"inc{fill}.json"
        assert main(["optimize", "inception_v3", "--workers", "0", "--cost", "analytic", "--table", "none",
                     "--fill", fill, "--out", str(out), "--no-progress", "--no-final-check"]) == 0
        text = capsys.readouterr().out
        report = json.loads(out.with_suffix(".report.json").read_text())
        assert report["fill"] == float(fill)
        assert ("rounds filled with 4 stages per 1,000 transitions" in text) == (fill == "4")
        rounds[fill] = report["rounds"]
    assert rounds["4"] < rounds["0"]


def _one_line_error(capsys, argv):
    """Run ``argv``; return its error line after checking: exit status 2, one line, no traceback."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ios-ray") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("argv,expected", [
    # the README's own example on a 2-core machine: more workers than CPUs (fails before Ray starts)
    (["optimize", "inception_v3", "--workers", "4096", "--batch-size", "1"], "4096 workers need 4096 CPUs"),
    (["optimize", "sample", "--cost", "gpu", "--workers", "4096"], "GPU"),  # no GPU here, or too few
    (["run", "x.json", "--batch-size", "-3"], "--batch-size: -3 is below the minimum 1"),
    (["optimize", "--workers", "-1"], "--workers: -1 is below the minimum 0"),
    (["optimize", "--repeat", "0"], "--repeat: 0 is below the minimum 1"),
    (["optimize", "-r", "two"], "'two' is not an integer"),
    (["optimize", "sample", "--cost", "quantum"], "quantum"),
    (["optimize", "sample", "--tolerance", "-0.1"], "--tolerance: -0.1 is not a finite number >= 0"),
    (["optimize", "sample", "--tolerance", "lots"], "'lots' is not a number"),
    (["optimize", "sample", "--fill", "-2"], "--fill: -2.0 is not a finite number >= 0"),
    (["optimize", "sample", "--cost", "cpu", "--workers-per-gpu", "2"], "--workers-per-gpu applies to GPU costs"),
    (["optimize", "sample", "--cost", "gpu", "--workers-per-gpu", "3", "--workers", "4"], "GPU"),
    (["optimize", "sample", "--workers-per-gpu", "0"], "--workers-per-gpu: 0 is below the minimum 1"),
])
def test_common_mistakes_are_one_line_errors(capsys, argv, expected):
    """Regression: --workers beyond the CPUs and --cost gpu without a GPU printed 17-35 lines of traceback;
    a negative batch size showed numpy's message."""
    assert expected in _one_line_error(capsys, argv)


def test_table_on_a_mistyped_path_is_an_error(tmp_path, capsys):
    """Regression: `ios-ray table` on a missing path printed an empty table and exit status 0."""
    line = _one_line_error(capsys, ["table", str(tmp_path / "typo")])
    assert "no cost table at" in line and "typo" in line


def test_out_into_a_missing_directory_fails_before_the_optimization(tmp_path, capsys):
    """Regression: --out into a missing directory failed only after the whole optimization."""
    table = tmp_path / "costs"
    line = _one_line_error(capsys, ["optimize", "sample", "--workers", "0", "--cost", "cpu", "--table", str(table),
                                    "--out", str(tmp_path / "missing" / "s.json")])
    assert "does not exist" in line and not table.exists()  # nothing was measured
    line = _one_line_error(capsys, ["optimize", "sample", "--workers", "0", "--cost", "cpu", "--table", str(table),
                                    "--weights-out", str(tmp_path / "missing" / "w.npz")])
    assert "--weights-out" in line and not table.exists()


def test_version(capsys):
    assert main(["--version"]) == 0
    from ios_ray import __version__
    assert capsys.readouterr().out.strip() == f"ios-ray {__version__}"


def test_every_option_has_help_and_shows_its_default():
    """Regression: options without help, and defaults not shown."""
    import argparse

    from ios_ray.cli import build_parser
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in [("ios-ray", parser)] + list(subparsers.choices.items()):
        text = sub.format_help()
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction, argparse._VersionAction)):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
            if action.option_strings and action.default is not None and action.default is not False:
                assert f"(default: {action.default})" in " ".join(text.split()), (name, action.dest)


def test_analytic_costs_run_in_process_by_default(tmp_path, capsys):
    """Regression: analytic estimates went through 2 Ray actors by default."""
    import ray
    was_up = ray.is_initialized()
    out = tmp_path / "s.json"
    assert main(["optimize", "sample", "--cost", "analytic", "--table", "none", "--no-progress",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "workers=in-process" in text and "estimated now" in text and out.exists()
    assert ray.is_initialized() == was_up


def test_default_schedule_goes_to_the_current_directory_and_says_where(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["optimize", "sample", "--cost", "analytic", "--table", "none", "--no-progress"]) == 0
    assert f"schedule written to {tmp_path / 'demo_schedule.json'}" in capsys.readouterr().out
    assert (tmp_path / "demo_schedule.json").exists()  # the sample graph is named demo


def _readme_commands():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = " ".join(b.replace("\\\n", " ") for b in blocks).replace("&&", "\n").splitlines()
    commands = []
    for line in lines:
        line = line.split("#")[0].strip()
        if "ios-ray " in line or "ios_ray.cli " in line:
            words = shlex.split(line)
            start = next(i for i, w in enumerate(words) if w in ("ios-ray", "ios_ray.cli"))
            commands.append((words[start + 1:], "ray job submit" in line))
    return commands


def test_readme_commands_parse_and_fit_a_2_core_machine():
    """Regression: the README's example asked for 4 workers on the 2-core machine it describes."""
    from ios_ray.cli import build_parser
    commands = _readme_commands()
    assert len(commands) >= 5
    for argv, on_a_cluster in commands:
        ns = build_parser().parse_args(argv)
        if ns.cmd == "optimize" and not on_a_cluster:
            assert ns.workers is None or ns.workers <= 2, argv


@pytest.mark.slow
def test_cli_error_in_a_fresh_process_is_one_line(tmp_path):
    """The whole stderr of a failing command, as a user sees it."""
    res = subprocess.run([sys.executable, "-m", "ios_ray.cli", "optimize", "inception_v3", "--workers", "4096"],
                         capture_output=True, text=True, timeout=120, cwd=str(tmp_path),
                         env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_unexpected_errors_are_one_line_too_unless_traceback_is_asked(tmp_path, capsys):
    bad = tmp_path / "g.json"
    bad.write_text("[1, 2]")  # JSON, but not an object: a TypeError or AttributeError inside the loader
    line = _one_line_error(capsys, ["run", str(bad)])
    assert "ios-ray: error:" in line
    with pytest.raises(Exception):
        main(["--traceback", "run", str(bad)])

"""Chrome/Perfetto traces of one inference on the CPU runtime: the API, the document and the CLI flag."""
import json

import pytest

import ios_ray as ios
from ios_ray import ios_runtime
from ios_ray.cli import main
from ios_ray.models import get_model
from ios_ray.models.sample import sample_network
from ios_ray.runtime.trace import CPU_NOTE, GroupSpan, chrome_trace, schedule_layout


def _events(trace, cat=None):
    return [e for e in trace["traceEvents"] if e["ph"] == "X" and (cat is None or e["cat"] == cat)]


def _check_trace(trace, graph):
    """Valid JSON, every node once, stages in order, durations positive, groups on their streams."""
    trace = json.loads(json.dumps(trace))
    layout = schedule_layout(graph)
    stages = _events(trace, "stage")
    assert [s["name"] for s in stages] == [f"b{st.block} s{st.index}" for st in layout]
    assert all(a["ts"] + a["dur"] <= b["ts"] + 1e-3 for a, b in zip(stages, stages[1:]))   # in order, no overlap
    nodes = [e for e in _events(trace) if e["cat"] not in ("stage", "group")]
    assert sorted(e["name"] for e in nodes) == sorted(n.name for n in graph.nodes()[1:])   # each node once
    assert all(e["dur"] > 0 for e in _events(trace))
    groups = _events(trace, "group")
    assert len(groups) == sum(len(st.groups) for st in layout)
    assert all(g["tid"] == g["args"]["group"] + 1 for g in groups)                         # stream g: tid g + 1
    names = {e["tid"]: e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
    assert names[0] == "stages" and all(names[g["tid"]] == f"stream {g['args']['group']}" for g in groups)
    for stage in stages:
        assert stage["args"]["measured_ms"] > 0
    return trace


def test_trace_of_an_optimized_graph_has_measured_beside_predicted(tmp_path):
    g = sample_network(32, 8)
    g.init_weights(0)
    opt = ios.optimize(g, cost="cpu", warmup=0, number=1, repeat=1, cost_table=False, compute_weight=True)
    path = tmp_path / "sub" / "trace.json"
    trace = ios_runtime.graph_trace(opt, 1, path, device="cpu")
    assert json.loads(path.read_text()) == json.loads(json.dumps(trace))
    trace = _check_trace(trace, opt)
    predicted = opt.optimization_report.stage_predicted_ms
    assert [s["args"]["predicted_ms"] for s in _events(trace, "stage")] == pytest.approx(predicted)
    other = trace["otherData"]
    assert other["predicted_ms"] == pytest.approx(sum(predicted)) and other["measured_ms"] > 0
    assert other["note"] == CPU_NOTE and other["threads"] == 1 and other["batch_size"] == 1


def test_trace_of_a_plain_graph_has_no_predictions():
    g = get_model("squeezenet")
    g.init_weights(0)
    g.greedy_schedule()
    trace = _check_trace(ios_runtime.graph_trace(g, 1, device="cpu", threads=2), g)
    assert all("predicted_ms" not in s["args"] for s in _events(trace, "stage"))
    assert "predicted_ms" not in trace["otherData"] and trace["otherData"]["threads"] == 2
    assert max(e["tid"] for e in _events(trace, "group")) == max(len(s.groups) for b in g.blocks for s in b.stages)


def test_spans_must_cover_every_group_once():
    g = sample_network(16, 6)
    g.sequential_schedule()
    with pytest.raises(ValueError, match="every group of every stage exactly once"):
        chrome_trace(g, [GroupSpan(0, 0, 0.0, 1.0)], "cpu")


def test_cli_run_writes_a_trace(tmp_path, capsys):
    out = tmp_path / "sample.json"
    assert main(["optimize", "sample", "--workers", "0", "--cost", "cpu", "--warmup", "0", "--number", "1",
                 "--repeat", "1", "--table", "none", "--out", str(out), "--no-progress", "--no-final-check"]) == 0
    trace_path = tmp_path / "trace.json"
    capsys.readouterr()
    assert main(["run", str(out), "--repeat", "1", "--number", "1", "--trace", str(trace_path)]) == 0
    text = capsys.readouterr().out
    assert f"written to {trace_path}" in text and "predicted" in text
    trace = json.loads(trace_path.read_text())
    assert len(_events(trace, "stage")) >= 1 and "predicted_ms" in trace["otherData"]
    assert all("predicted_ms" in s["args"] for s in _events(trace, "stage"))
    assert "cpu" in trace["otherData"]["device"]   # measured on the CPU, so run there even beside a GPU


def test_a_schedule_runs_where_it_was_measured():
    g = sample_network(16, 6)
    opt = ios.optimize(g, cost="cpu", warmup=0, number=1, repeat=1, cost_table=False, final_check=False)
    assert opt.optimization_report.device_kind == "cpu"
    assert ios_runtime.device_name(opt).startswith("cpu:")            # AUTO follows the report
    est = ios.optimize(g, cost="analytic:H200", cost_table=False)
    assert est.optimization_report.device_kind == "analytic"         # no device of its own: AUTO as usual
    tf32 = ios.optimize(g, cost="analytic:H200", cost_table=False)
    tf32.optimization_report.dtype = "tf32"
    assert ios_runtime.measured_tf32(tf32) and not ios_runtime.measured_tf32(opt) and not ios_runtime.measured_tf32(g)


def test_cli_run_device_flag(tmp_path, capsys):
    out = tmp_path / "sample.json"
    assert main(["optimize", "sample", "--workers", "0", "--cost", "analytic:H200", "--table", "none",
                 "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["run", str(out), "--repeat", "1", "--number", "1", "--device", "cpu"]) == 0
    assert "latency (cpu:" in capsys.readouterr().out
    assert main(["run", str(out), "--device", "tpu"]) == 2
    assert "invalid choice: 'tpu'" in capsys.readouterr().err


@pytest.mark.gpu
def test_gpu_trace_times_every_group_inside_the_captured_graph():
    from ios_ray.runtime.gpu import available, unavailable_reason
    if not available():
        pytest.skip(f"GPU runtime unavailable: {unavailable_reason()}")
    g = get_model("squeezenet")
    g.init_weights(0)
    g.greedy_schedule()
    trace = json.loads(json.dumps(ios_runtime.graph_trace(g, 1, device="gpu")))
    layout = schedule_layout(g)
    stages, groups = _events(trace, "stage"), _events(trace, "group")
    assert [s["name"] for s in stages] == [f"b{st.block} s{st.index}" for st in layout]
    assert len(groups) == sum(len(st.groups) for st in layout)
    assert all(e["dur"] > 0 and e["ts"] >= 0 for e in stages + groups)
    assert 0 < trace["otherData"]["measured_ms"] < 50 and "gpu" in trace["otherData"]["device"]

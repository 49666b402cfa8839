"""Chrome / Perfetto traces of one inference: each stage and group on its stream, measured beside predicted.

Data flow::

    Graph (schedule, or its sequential one; ``optimization_report.stage_predicted_ms`` when optimized)
      --schedule_layout--> [ScheduledStage(block, index, groups of nodes)] in run order
      --collect one inference--> [GroupSpan(stage, group, start_ms, end_ms, nodes)]
            CPU: ``cpu_group_spans``, every node timed on the numpy reference kernels
            GPU: ``runtime/gpu/trace.py``, event-record nodes around each group inside the CUDA graph
      --chrome_trace--> {"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {...}}

Event layout (Chrome trace-event JSON, ``ph: "X"`` complete events, times in microseconds): one process;
``tid`` 0 is the *stages* track, one event per stage (args: block, stage within the block, groups,
strategy, measured_ms and, when the graph carries its predictions, predicted_ms); ``tid`` 1 + g is stream
g, one event per group of a stage (and, on the CPU, one per node nested inside it). Open the file in
ui.perfetto.dev or chrome://tracing.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..graph.ir import Graph, Node
from ..graph.schedule import Stage, scheduled_groups
from .reference import check_weights, checked_input, run_node, stages_or_sequential

CPU_NOTE = ("numpy reference runtime: the groups of a stage run one after another on one CPU thread of "
            "control, so a stage's groups follow each other in time; their tracks are the streams they "
            "would run on concurrently on the GPU")


@dataclass(frozen=True)
class ScheduledStage:
    """One stage of the schedule, as run: its block, its index within the block, and its node groups."""
    block: int
    index: int
    stage: Stage
    groups: Tuple[Tuple[Node, ...], ...]


@dataclass(frozen=True)
class NodeSpan:
    """One node's run, in ms from the start of the inference."""
    name: str
    op: str
    start_ms: float
    end_ms: float


@dataclass(frozen=True)
class GroupSpan:
    """One group's run, in ms from the start of the inference; ``nodes`` where the runtime times them."""
    stage: int                     # index over every block's stages, in run order
    group: int                     # group index within its stage: the stream it runs on
    start_ms: float
    end_ms: float
    nodes: Tuple[NodeSpan, ...] = ()


def schedule_layout(graph: Graph) -> List[ScheduledStage]:
    """Every stage of ``graph`` in run order (its schedule, or its sequential one), checked.

    Raises:
        ValueError: the schedule does not match the graph.
    """
    per_block = stages_or_sequential(graph)
    flat = scheduled_groups(graph, per_block)  # checks every block's schedule
    out: List[ScheduledStage] = []
    for bi, stages in enumerate(per_block):
        for si, stage in enumerate(stages):
            out.append(ScheduledStage(bi, si, stage, tuple(tuple(g) for g in flat[len(out)])))
    return out


def predicted_stage_ms(graph: Graph, num_stages: int) -> Optional[List[Optional[float]]]:
    """The graph's per-stage predictions (``optimization_report.stage_predicted_ms``) when it carries them
    for exactly this many stages, else None."""
    report = getattr(graph, "optimization_report", None)
    predicted = getattr(report, "stage_predicted_ms", None)
    if not predicted or len(predicted) != num_stages:
        return None
    return list(predicted)


def prepare_inference(graph: Graph, batch_size: int, x, warmup: int) -> Tuple[List[ScheduledStage], np.ndarray]:
    """The checked schedule layout and input (``x``, or seeded random) of one traced inference.

    Raises:
        ValueError: a bad batch size, warm-up count or input shape, missing weights, or a schedule that
            does not match the graph.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    layout = schedule_layout(graph)
    for node in graph.nodes()[1:]:
        check_weights(node)
    shape = (batch_size, *graph.input.output_shape)
    if x is None:
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    return layout, checked_input(graph, shape, x)


def cpu_group_spans(graph: Graph, batch_size: int, x=None, warmup: int = 1) -> List[GroupSpan]:
    """Time one inference of ``graph`` node by node on the reference kernels, after ``warmup`` untimed ones.

    Runs under whatever BLAS thread setting the caller applied (``ios_runtime.graph_trace`` applies the
    graph's). Groups of a stage run one after another (see ``CPU_NOTE``).

    Raises:
        ValueError: a bad batch size or input shape, missing weights, or a schedule that does not match.
    """
    layout, x = prepare_inference(graph, batch_size, x, warmup)
    spans: List[GroupSpan] = []
    for _ in range(warmup + 1):  # the last pass is the one kept
        spans = []
        env: Dict[Node, np.ndarray] = {graph.input: x}
        origin = time.perf_counter()
        for si, stage in enumerate(layout):
            for gi, group in enumerate(stage.groups):
                nodes = []
                for node in group:
                    t0 = time.perf_counter()
                    env[node] = run_node(node, env)
                    nodes.append(NodeSpan(node.name, node.type, (t0 - origin) * 1e3,
                                          (time.perf_counter() - origin) * 1e3))
                spans.append(GroupSpan(si, gi, nodes[0].start_ms, nodes[-1].end_ms, tuple(nodes)))
    return spans


def _us(ms: float) -> float:
    return round(ms * 1e3, 3)


def _complete(name: str, tid: int, start_ms: float, end_ms: float, cat: str, args: Mapping[str, Any]) -> dict:
    return {"name": name, "cat": cat, "ph": "X", "pid": 1, "tid": tid, "ts": _us(start_ms),
            "dur": _us(max(end_ms - start_ms, 0.0)), "args": dict(args)}


def _meta(name: str, tid: int, value: Any) -> dict:
    """A metadata event: ``process_name``/``thread_name`` take a name, ``thread_sort_index`` an index."""
    key = "sort_index" if name.endswith("sort_index") else "name"
    return {"name": name, "ph": "M", "pid": 1, "tid": tid, "args": {key: value}}


def chrome_trace(graph: Graph, spans: Sequence[GroupSpan], device: str, note: str = "",
                 meta: Optional[Mapping[str, Any]] = None) -> dict:
    """The Chrome trace-event document of one traced inference.

    Args:
        graph: the graph that ran (its schedule gives stage and group names; its optimization report,
            when it has one, the predictions).
        spans: every group of every stage, as collected (``cpu_group_spans`` or the GPU's).
        device: where it ran, for the process name and ``otherData``.
        note: how the runtime ran the groups (e.g. ``CPU_NOTE``), kept in ``otherData``.
        meta: more ``otherData`` entries (batch size, threads, math mode...).
    Returns:
        ``{"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {...}}``.
    Raises:
        ValueError: ``spans`` do not cover every group of the schedule exactly once.
    """
    layout = schedule_layout(graph)
    expected = sorted((si, gi) for si, st in enumerate(layout) for gi in range(len(st.groups)))
    got = sorted((s.stage, s.group) for s in spans)
    if got != expected:
        raise ValueError(f"graph {graph.name}: the trace has groups {got[:6]}..., the schedule "
                         f"{expected[:6]}... (every group of every stage exactly once)")
    predicted = predicted_stage_ms(graph, len(layout))
    by_stage: Dict[int, List[GroupSpan]] = {}
    for s in spans:
        by_stage.setdefault(s.stage, []).append(s)
    streams = max(len(st.groups) for st in layout)
    events: List[dict] = [_meta("process_name", 0, f"ios_ray {graph.name} on {device}"),
                          _meta("thread_name", 0, "stages"), _meta("thread_sort_index", 0, 0)]
    for g in range(streams):
        events += [_meta("thread_name", g + 1, f"stream {g}"), _meta("thread_sort_index", g + 1, g + 1)]
    measured_total = 0.0
    for si, stage in enumerate(layout):
        groups = sorted(by_stage[si], key=lambda s: s.group)
        start, end = min(s.start_ms for s in groups), max(s.end_ms for s in groups)
        measured_total += end - start
        args: Dict[str, Any] = {"block": stage.block, "stage": stage.index, "strategy": stage.stage.strategy.value,
                                "groups": [list(g) for g in stage.stage.groups], "measured_ms": end - start}
        if predicted is not None and predicted[si] is not None:
            args["predicted_ms"] = predicted[si]
        events.append(_complete(f"b{stage.block} s{stage.index}", 0, start, end, "stage", args))
        for span in groups:
            names = [n.name for n in stage.groups[span.group]]
            events.append(_complete(" > ".join(names), span.group + 1, span.start_ms, span.end_ms, "group",
                                    {"stage": si, "group": span.group, "nodes": names,
                                     "measured_ms": span.end_ms - span.start_ms}))
            for node in span.nodes:
                events.append(_complete(node.name, span.group + 1, node.start_ms, node.end_ms, node.op,
                                        {"op": node.op, "measured_ms": node.end_ms - node.start_ms}))
    other: Dict[str, Any] = {"model": graph.name, "device": device, "stages": len(layout),
                             "measured_ms": measured_total,
                             "wall_ms": max(s.end_ms for s in spans) - min(s.start_ms for s in spans)}
    if predicted is not None and all(p is not None for p in predicted):
        other["predicted_ms"] = float(sum(predicted))
    if note:
        other["note"] = note
    other.update(meta or {})
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": other}


def write_trace(trace: Mapping[str, Any], path) -> Path:
    """Write ``trace`` as JSON to ``path`` (parent folders made); returns the path.

    Raises:
        OSError: the file cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(trace, indent=None, separators=(",", ":")))
    return path

"""GPU side of ``runtime/trace.py``: when each group of one captured inference starts and ends.

Data flow::

    Graph (weights + schedule) --MarkedProgram--> the Program of GpuExecutor, plus one step before the
        first node and one after the last node of every group that records a timing event on the group's
        stream *as an external event-record node* of the CUDA graph
      --run eager once, capture, replay ``warmup + 1`` times--> the events hold the last replay's times
      --cupy.cuda.get_elapsed_time(first group's start, each event)--> [GroupSpan] in ms

Why external nodes: during stream capture a plain ``cudaEventRecord`` only orders the captured work (it
becomes an edge, not a node), so nothing would be timed on replay. ``cuEventRecordWithFlags(...,
CU_EVENT_RECORD_EXTERNAL)`` (the driver API, through ctypes) puts a real event-record node in the graph,
which records on every replay. The two extra nodes per group cost a few microseconds in all; groups of
a stage run concurrently here, on their own streams.

Imported only when a GPU trace is asked for; CuPy and cuDNN are needed then.
"""
from __future__ import annotations

import ctypes
import functools
from typing import Dict, List, Sequence, Tuple

from ...graph.ir import Graph, Node
from ..trace import GroupSpan, prepare_inference
from .context import GpuContext
from .errors import GpuRuntimeError
from .program import Program, Step


CU_EVENT_RECORD_EXTERNAL = 0x1   # cuda.h: an event-record node while capturing; invalid outside capture


@functools.lru_cache(maxsize=1)
def _driver():
    """The CUDA driver library (always there with a GPU): ``cuEventRecordWithFlags`` is not in CuPy."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        raise GpuRuntimeError(f"a GPU trace needs the CUDA driver library libcuda.so.1: {exc}") from exc
    lib.cuEventRecordWithFlags.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint]
    lib.cuEventRecordWithFlags.restype = ctypes.c_int
    lib.cuStreamIsCapturing.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
    lib.cuStreamIsCapturing.restype = ctypes.c_int
    return lib


def _capturing(stream) -> bool:
    """Whether ``stream`` is capturing (``cuStreamIsCapturing``: status 1 is active)."""
    status = ctypes.c_int(0)
    err = _driver().cuStreamIsCapturing(stream.ptr, ctypes.byref(status))
    if err != 0:
        raise GpuRuntimeError(f"cuStreamIsCapturing failed: CUresult {err}")
    return status.value == 1


def record_external(event, stream) -> None:
    """Record ``event`` on ``stream``: while the stream is capturing, as an event-record node of the graph
    (the driver refuses the external flag outside capture, so the eager run records plainly).

    Raises:
        GpuRuntimeError: the driver call failed (the message names the CUresult).
    """
    if not _capturing(stream):
        event.record(stream)
        return
    err = _driver().cuEventRecordWithFlags(event.ptr, stream.ptr, CU_EVENT_RECORD_EXTERNAL)
    if err != 0:
        raise GpuRuntimeError(f"cuEventRecordWithFlags(CU_EVENT_RECORD_EXTERNAL) failed: CUresult {err}")


class MarkedProgram(Program):
    """A ``Program`` whose every group starts and ends by recording a timing event on its own stream.

    ``marks[(stage, group)]`` holds the (start, end) events; the record steps are added to the first and
    last node's steps while lowering, so they run inside ``enqueue`` on exactly the group's stream.
    """

    def __init__(self, ctx: GpuContext, stages: Sequence[Sequence[Sequence[Node]]], external: Sequence[Node],
                 batch_size: int):
        import cupy
        # set before Program.__init__, which lowers every node (and so calls _lower)
        self.marks: Dict[Tuple[int, int], Tuple[object, object]] = {}
        self._first: Dict[int, Tuple[int, int]] = {}
        self._last: Dict[int, Tuple[int, int]] = {}
        with ctx.device:
            for si, stage in enumerate(stages):
                for gi, group in enumerate(stage):
                    self.marks[(si, gi)] = (cupy.cuda.Event(), cupy.cuda.Event())
                    self._first[id(group[0])] = (si, gi)
                    self._last[id(group[-1])] = (si, gi)
        super().__init__(ctx, stages, external, batch_size)

    def _marker(self, event) -> Step:
        streams = self.ctx.streams
        return lambda gi: record_external(event, streams[gi])

    def _lower(self, node: Node) -> List[Step]:
        steps = list(super()._lower(node))
        if id(node) in self._first:
            steps.insert(0, self._marker(self.marks[self._first[id(node)]][0]))
        if id(node) in self._last:
            steps.append(self._marker(self.marks[self._last[id(node)]][1]))
        return steps


def gpu_group_spans(graph: Graph, batch_size: int, x=None, tf32: bool = False, device_id: int = 0,
                    warmup: int = 3) -> List[GroupSpan]:
    """Start and end (ms from the earliest group start) of every group in one replay of the graph's
    schedule captured as one CUDA graph, after ``warmup`` replays.

    Raises:
        ValueError: a bad batch size or input, missing weights, or a schedule that does not match.
        GpuUnavailableError: no CuPy, CUDA device or cuDNN; GpuRuntimeError: an op cannot be lowered or
            the event records fail.
    """
    import cupy
    layout, x = prepare_inference(graph, batch_size, x, warmup)
    ctx = GpuContext(device_id, tf32=tf32)
    program = MarkedProgram(ctx, [st.groups for st in layout], [graph.input], batch_size)
    try:
        main = ctx.main_stream
        with ctx.device:
            program.output(graph.input).set(x, stream=main)
            program.run_eager()
            cuda_graph = program.capture()
            for _ in range(warmup + 1):  # the events keep the last replay's times
                cuda_graph.launch(main)
            main.synchronize()
            origin = program.marks[(0, 0)][0]
            times = {key: (cupy.cuda.get_elapsed_time(origin, start), cupy.cuda.get_elapsed_time(origin, end))
                     for key, (start, end) in program.marks.items()}
    finally:
        program.close()
    # the groups of the first stage start together: measure from the earliest of them
    zero = min(start for start, _ in times.values())
    return [GroupSpan(si, gi, start - zero, end - zero) for (si, gi), (start, end) in sorted(times.items())]

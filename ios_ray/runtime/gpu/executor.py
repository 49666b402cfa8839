"""GpuExecutor: runs a scheduled Graph as one CUDA graph (cuDNN convs + our kernels, multi-stream stages).

Data flow::

    Graph (weights + schedule) --check--> stages as node groups
      --Program (program.py)--> buffers planned and allocated once for (graph, batch size), weights
                                uploaded, every op prepared; one eager run; the schedule captured
      run(x):     copy x in (stream 0) -> replay the graph -> copy the output out
      run_device(x): the same for a tensor already on the device (CuPy, or any DLPack tensor), its
                  output returned as a CuPy array: nothing goes through the host
      latency():  replays timed with CUDA events; per stage, separately captured one-stage graphs

Same interface as the numpy ``ReferenceExecutor`` (``run`` and ``latency``), so
``ios_ray.ios_runtime._executor_for`` can return either.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from ...graph.ir import Graph
from ...graph.schedule import Stage, scheduled_groups
from ..reference import check_weights, checked_input
from .context import GpuContext
from .program import Program, time_graph


class GpuExecutor:
    """A Graph lowered to the GPU for one batch size.

    Args:
        graph: a checked Graph whose nodes all have weights.
        batch_size: the batch the input must have.
        tf32: allow TF32 tensor-core convolutions (default strict fp32).
        device_id: the CUDA device.
        context: a GpuContext to share (its device and math mode win over ``device_id``/``tf32``).
        stages: per-block stage lists overriding ``block.stages`` (the graph is not modified); by
            default every block must have a schedule.
    Raises:
        ValueError: no schedule / a schedule that does not match the graph, or missing weights.
        GpuUnavailableError: no CuPy, CUDA device or cuDNN frontend.
        GpuRuntimeError: an op cannot be lowered.
    """

    def __init__(self, graph: Graph, batch_size: int, tf32: bool = False, device_id: int = 0,
                 context: Optional[GpuContext] = None, stages: Optional[Sequence[Sequence[Stage]]] = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.graph = graph
        self.batch_size = int(batch_size)
        self.input_shape: Tuple[int, ...] = (self.batch_size, *graph.input.output_shape)
        plan = scheduled_groups(graph, stages)
        for node in graph.nodes()[1:]:
            check_weights(node)
        self.ctx = context if context is not None else GpuContext(device_id, tf32=tf32)
        self.tf32 = self.ctx.tf32
        self.num_stages = len(plan)
        self.program = Program(self.ctx, plan, [graph.input], self.batch_size)
        self._input = self.program.output(graph.input)
        self._output = self.program.output(graph.blocks[-1].exit_node)
        self.program.run_eager()
        self._graph = self.program.capture()
        if self.ctx.conv_plans.book is not None:
            self.ctx.conv_plans.book.flush()   # engines chosen for signatures no profile has seen
        self._stage_graphs: Optional[List[object]] = None

    def _check_input(self, x) -> np.ndarray:
        return checked_input(self.graph, self.input_shape, x)

    def _load(self, x) -> None:
        self._input.set(self._check_input(x), stream=self.ctx.main_stream)

    def run(self, x) -> np.ndarray:
        """The graph output ``(N, C, H, W)`` for input ``x`` of shape ``(batch_size, C, H, W)``."""
        main = self.ctx.main_stream
        with self.ctx.device:
            self._load(x)
            self._graph.launch(main)
            out = self._output.get(stream=main)
            main.synchronize()
        return out

    def run_device(self, x):
        """The graph output ``(N, C, H, W)`` as a new CuPy array, for ``x`` on this device (a CuPy array
        or any DLPack tensor, e.g. a PyTorch CUDA tensor) of shape ``(batch_size, C, H, W)``.

        ``x`` is read on stream 0, after the work queued before it: a CuPy array's (stream 0 waits for the
        caller's current CuPy stream), another tensor's (``cupy.from_dlpack`` on stream 0 passes that stream
        to its producer, which orders itself before it, as the DLPack protocol says); it is copied
        into the input buffer, the graph replayed and its output copied out; the stream is synchronized
        before returning, so the caller may use the result on any stream.

        Raises:
            ValueError: a shape other than the executor's input, or a dtype other than float32.
        """
        import cupy
        main = self.ctx.main_stream
        with self.ctx.device:
            if isinstance(x, cupy.ndarray):
                main.wait_event(cupy.cuda.get_current_stream().record())
        with self.ctx.device, main:
            xd = x if isinstance(x, cupy.ndarray) else cupy.from_dlpack(x)
            if tuple(xd.shape) != self.input_shape or xd.dtype != cupy.float32:
                raise ValueError(f"graph {self.graph.name}: input has shape {tuple(xd.shape)} {xd.dtype}, expected "
                                 f"{self.input_shape} float32 (batch, C, H, W)")
            cupy.copyto(self._input, xd)
            self._graph.launch(main)
            out = self._output.copy()
        main.synchronize()
        return out

    def latency(self, warmup: int = 2, number: int = 6, repeat: int = 6, x: Optional[np.ndarray] = None,
                profile_stage: bool = False) -> Tuple[List[float], List[float]]:
        """Time graph replays with CUDA events.

        Returns:
            (per-repeat latency in ms, i.e. elapsed / number, of the whole captured schedule;
             per-stage latency in ms, repeat-major, each stage replayed ``number`` times as its own
             captured graph, empty unless ``profile_stage``).
        """
        if warmup < 0 or number < 1 or repeat < 1:
            raise ValueError(f"need warmup >= 0, number >= 1, repeat >= 1; got {warmup}, {number}, {repeat}")
        if x is None:
            x = np.random.default_rng(0).standard_normal(self.input_shape, dtype=np.float32)
        main = self.ctx.main_stream
        with self.ctx.device:
            self._load(x)
            seq = time_graph(self._graph, main, warmup, number, repeat)
            stages: List[float] = []
            if profile_stage:
                if self._stage_graphs is None:
                    self._stage_graphs = [self.program.capture([i]) for i in range(self.num_stages)]
                per_stage = [time_graph(g, main, warmup, number, repeat) for g in self._stage_graphs]
                for r in range(repeat):
                    stages.extend(ms[r] for ms in per_stage)
        return seq, stages

    def close(self) -> None:
        """Free the device buffers and graphs now (otherwise when the executor is collected)."""
        self._graph = None
        self._stage_graphs = None
        self.program.close()


"""CPU cost source: times candidate stages with the numpy reference kernels.

Data flow: StageSpec --build()--> placeholders + IR nodes per group --random weights (once per stage),
cached random inputs per external shape--> warmup runs, then ``repeat`` timed repeats of ``number``
runs (``timing_clock``) --> Measurement(median over repeats, spread = max - min).

The reference runtime has no concurrency: a stage's groups run one after another, so a CPU stage
latency is the sum of its groups' latencies. That makes this source right for testing the pipeline
end to end (and for CPU-only sanity runs), not for finding GPU parallelism.

Threads: every timing here runs under one explicit BLAS/OpenMP thread count (``cpu_threads``, default
1 as in a one-CPU Ray actor), in-process and in actors alike; the count is part of the rows' software
fingerprint, and ``ios_runtime`` runs the reference executor under the same setting, so a schedule runs
the way its stages were measured.

Priority: every timing also runs at a plain process's scheduling priority (niceness 0, ``timing_priority``),
the one ``ios-ray run`` and ``graph_latency`` run at. Ray starts its workers at niceness 15, where any
normal process on the same core (the driver, other jobs) takes ~30 times their CPU share: stages timed
there came out up to 5.7x slower than inside the whole graph (Inception-v3's one-operator stages summed
to 288.9 ms against 173 ms whole). The niceness reached is part of the software fingerprint too.

Clock: with one BLAS thread every kernel runs on the calling thread, so its CPU time (``time.thread_time``)
is the latency on an idle core, and the time slices other processes take on a loaded machine stay out
(``timing_clock``): SqueezeNet's whole graph read 40-42 ms on it quiet and beside three busy processes,
when the wall clock read 78-205 ms. With more threads the wall clock is read. Stages and whole graphs
(``measure_graph``, the final check) read the same clock, which the fingerprint names.
"""
from __future__ import annotations

import contextlib
import functools
import os
import platform
import threading
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..costs.factory import DEFAULT_CPU_THREADS, check_threads
from ..costs.measurement import DeviceInfo, ErrorKind, MeasureSettings, Measurement
from ..graph.ir import Graph, Node, Placeholder
from ..runtime.reference import ReferenceExecutor, UnsupportedOpError, run_node
from ..space.stage import StageSpec
from .base import StageProfiler, timing_copy

InputShape = Tuple[int, int, int, int]


class CpuProfiler(StageProfiler):
    """A ``CostSource`` measuring stages with the numpy reference runtime on this process's CPU.

    Args:
        seed: seeds the random weights and inputs, so repeated profiles run the same numbers.
        max_cached_inputs: how many random input arrays (one per distinct (N, C, H, W)) are kept between
            stages; the least recently used is dropped beyond it, so memory stays bounded however many
            stages are measured.
        worker: the label put in every Measurement (default ``host:pid``).
        threads: BLAS/OpenMP threads every timing runs with (recorded in ``device().settings``).
    Raises:
        ValueError: ``threads`` is not a whole number of at least 1.
    """

    dtype = "float32"

    def __init__(self, seed: int = 0, max_cached_inputs: int = 32, worker: Optional[str] = None,
                 threads: int = DEFAULT_CPU_THREADS):
        super().__init__(self._random_input, seed, max_cached_inputs,
                         worker if worker is not None else f"{platform.node()}:{os.getpid()}")
        self.threads = check_threads(threads)

    def device(self) -> DeviceInfo:
        cpu = platform.processor() or platform.machine() or "unknown"
        with timing_priority() as nice:
            return DeviceInfo(name=f"cpu:{cpu}/numpy", kind="cpu", library=cpu_library(),
                              settings=f"{timing_clock(self.threads)[0]}, nice {nice}, blas threads {self.threads}")

    def measure(self, specs: Sequence[StageSpec], batch_size: int, settings: MeasureSettings) -> List[Measurement]:
        """``StageProfiler.measure`` under this profiler's thread setting, at the runtime's priority."""
        with cpu_threads(self.threads), timing_priority():
            return super().measure(specs, batch_size, settings)

    def measure_graph(self, graph: Graph, batch_size: int, settings: MeasureSettings) -> List[float]:
        """Per-repeat latencies (ms) of the whole scheduled ``graph`` on the reference executor, under this
        profiler's thread setting and at the runtime's priority, with random weights (the graph itself is not
        touched).

        Raises:
            ValueError: a bad batch size or a schedule that does not match the graph.
        """
        executor = ReferenceExecutor(timing_copy(graph, self.seed), batch_size, clock=timing_clock(self.threads)[1])
        with cpu_threads(self.threads), timing_priority():
            return executor.latency(settings.warmup, settings.number, settings.repeat)[0]

    def _random_input(self, shape: InputShape) -> np.ndarray:
        return np.random.default_rng((self.seed, *shape)).standard_normal(shape, dtype=np.float32)

    def time_stage(self, built, batch_size: int, settings: MeasureSettings) -> List[float]:
        return time_built_stage(built, batch_size, settings, self._input, self.seed, timing_clock(self.threads)[1])

    def classify(self, exc: Exception) -> Tuple[ErrorKind, str]:
        if isinstance(exc, UnsupportedOpError):
            return ErrorKind.UNSUPPORTED, str(exc)
        return super().classify(exc)


@contextlib.contextmanager
def cpu_threads(threads: int) -> Iterator[int]:
    """Run the body with BLAS and OpenMP limited to ``threads`` threads (restored on exit).

    numpy's BLAS starts with one thread per core; Ray's one-CPU actors start with one. Limiting both
    here, through ``threadpoolctl``, is what makes in-process and actor timings, and the reference
    runtime's, run the same way.

    Raises:
        ValueError: ``threads`` is not a whole number of at least 1.
    """
    from threadpoolctl import threadpool_limits
    threads = check_threads(threads)
    with threadpool_limits(limits=threads):
        yield threads


def timing_clock(threads: int) -> Tuple[str, Callable[[], float]]:
    """The clock CPU timings under ``threads`` BLAS threads read, and its name for the rows' fingerprint.

    With one thread, the calling thread's CPU time: every kernel runs on it, so that is its latency on an
    idle core, whatever other processes take meanwhile. With more, the BLAS pool's threads work too, and
    the wall clock is read.
    """
    return ("thread cpu clock", time.thread_time) if threads == 1 else ("wall clock", time.perf_counter)


NORMAL_NICENESS = 0  # a plain process's scheduling priority: what ``ios-ray run`` and ``graph_latency`` run at


@contextlib.contextmanager
def timing_priority(niceness: int = NORMAL_NICENESS) -> Iterator[int]:
    """Run the body with every thread of this process at most at ``niceness`` where the OS allows it
    (each thread's own restored on exit); yields the niceness the calling thread runs the body at.

    Linux keeps a niceness per thread (the BLAS pool's threads too), so each thread is set. A thread already
    at ``niceness`` or below (a higher priority) is left alone; one the OS does not let rise (no
    ``CAP_SYS_NICE``, ``RLIMIT_NICE``) keeps its own, which the yielded value then shows: the profiler puts it
    in its rows' fingerprint rather than mixing timings taken at other priorities. On a platform without
    ``os.setpriority`` the body runs unchanged.
    """
    if not hasattr(os, "setpriority"):
        yield niceness
        return
    raised: List[Tuple[int, int]] = []   # (thread id, its niceness before)
    try:
        for tid in _thread_ids():
            try:
                before = os.getpriority(os.PRIO_PROCESS, tid)
                if before > niceness:
                    os.setpriority(os.PRIO_PROCESS, tid, niceness)
                    raised.append((tid, before))
            except (PermissionError, ProcessLookupError):   # not allowed, or the thread has ended
                continue
        yield os.getpriority(os.PRIO_PROCESS, 0)
    finally:
        for tid, before in raised:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.setpriority(os.PRIO_PROCESS, tid, before)   # lowering a priority is always allowed


def _thread_ids() -> List[int]:
    """This process's thread ids (Linux: ``/proc/self/task``), the calling thread (0) first."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:    # no procfs: the priority call's ``0`` is the calling thread (or process)
        return [0]
    me = threading.get_native_id()
    return [0] + [t for t in tids if t != me]


def blas_threads() -> int:
    """The threads numpy's BLAS uses right now (the largest over loaded BLAS libraries; 1 if none)."""
    from threadpoolctl import threadpool_info
    return max((int(i["num_threads"]) for i in threadpool_info() if i.get("user_api") == "blas"), default=1)


@functools.lru_cache(maxsize=1)
def cpu_library() -> str:
    """The software a CPU timing depends on: numpy and its BLAS, Python, and ios_ray's own kernels."""
    from .. import __version__
    blas = ""
    try:
        dep = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f" ({dep['name']} {dep.get('version', '?')})"
    except Exception:  # noqa: BLE001 -- older numpy or no build information: the version alone
        pass
    return (f"numpy {np.__version__}{blas} / {platform.python_implementation().lower()} "
            f"{platform.python_version()} / ios_ray {__version__}")


def time_built_stage(built: Tuple[List[Placeholder], List[List[Node]]], batch_size: int, settings: MeasureSettings,
                     input_for: Callable[[InputShape], np.ndarray], seed: int = 0,
                     clock: Callable[[], float] = time.perf_counter) -> List[float]:
    """Per-repeat latencies (ms) of a built stage (``StageSpec.build()``) with fresh random weights.

    Args:
        built: the placeholders of the external inputs and the nodes of each group.
        input_for: gives the input array for an external of shape ``(batch_size, C, H, W)``.
        clock: seconds, read before and after each repeat (the profiler's ``timing_clock``).
    Returns:
        ``settings.repeat`` latencies, each the elapsed time of ``settings.number`` runs divided by it.
    Raises:
        whatever the kernels raise (the caller decides how to report it).
    """
    exts, groups = built
    rng = np.random.default_rng(seed)
    for group in groups:
        for node in group:
            node.init_weights(rng)
    base: Dict[Node, np.ndarray] = {ext: input_for((batch_size, *ext.output_shape)) for ext in exts}

    def run_stage() -> None:
        env = dict(base)
        for group in groups:  # no concurrency on the CPU reference: groups run in turn
            for node in group:
                env[node] = run_node(node, env)

    for _ in range(settings.warmup):
        run_stage()
    samples = []
    for _ in range(settings.repeat):
        t0 = clock()
        for _ in range(settings.number):
            run_stage()
        samples.append((clock() - t0) * 1e3 / settings.number)
    return samples

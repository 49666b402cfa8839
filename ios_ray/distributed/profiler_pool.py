"""A pool of Ray actors that measure stage specs, balanced by estimated cost and robust to worker death.

Data flow::

    {key: StageSpec}  --estimate_cost, longest first-->  batches (heavy specs alone, light ones grouped)
        --> idle actor pulls the next batch (each actor holds at most ``inflight_per_worker`` batches)
        --> ProfileWorker.measure (in the actor: its own cost source, built from the recipe)
        --> [Measurement] streamed to ``on_result`` as each batch lands --> {key: Measurement}, PoolReport

Failure handling (as Alpa's profiling workers, with bounds): when an actor dies
(``RayActorError``/``ActorDiedError``/``WorkerCrashedError``, or a batch over ``task_timeout_s``, whose
actor is then killed) it is replaced (at most ``max_worker_restarts`` times per call); results it had
finished are kept; the batch it was running is charged one loss per spec; and every spec it held goes
back as a *suspect*: a single spec that later runs alone on an idle actor, with nothing queued behind
it, so that a further death is charged to exactly the spec that caused it. A spec lost more than
``max_retries`` times comes back as an error measurement (``ErrorKind.WORKER_DIED``) instead of killing
workers forever. A batch whose
``measure`` raised (a cost-source bug: sources report failures as error measurements) is retried as
single specs, and a single spec that raises becomes an ``ErrorKind.RUNTIME`` measurement.
"""
from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Deque, Dict, List, Mapping, Optional, Sequence, Tuple

import ray
from ray.exceptions import RayActorError, RayTaskError, WorkerCrashedError

from ..costs.factory import CostArg, SourceRecipe, resolve_cost
from ..costs.measurement import DeviceInfo, ErrorKind, Measurement, MeasureSettings
from ..graph.ir import Graph
from ..space.stage import StageSpec
from .cluster import WorkerResources, check_resources

# Errors that mean "the process running the batch is gone": the batch did not finish and can be retried.
WORKER_LOST_ERRORS = (RayActorError, WorkerCrashedError)

# One byte moved is weighed like this many flops when ordering specs (a CPU-like ridge point), and each
# spec carries a fixed overhead (warm-up, launches, timing loop) so tiny stages still count for something.
BYTES_WEIGHT = 10.0
FIXED_OVERHEAD_FLOPS = 1e6


class ProfilerPoolError(RuntimeError):
    """Base class of the pool's errors."""


class WorkerStartError(ProfilerPoolError):
    """A worker could not build its cost source (e.g. no CUDA in the actor's process)."""


class WorkersExhaustedError(ProfilerPoolError):
    """Every worker died and the restart budget is spent, with specs still unmeasured."""


def _op_estimate(op, spec: StageSpec) -> float:
    """flops + weighted bytes of one op from its spec alone (no nodes built: this runs for every spec)."""
    c, h, w = op.output_shape
    out = c * h * w
    read = 0
    in_c = 0
    for term in op.inputs:
        in_c += term[0][3] - term[0][2]
        for kind, idx, begin, end in term:
            shape = spec.inputs[idx] if kind == "e" else None
            hw = shape[1] * shape[2] if shape is not None else h * w
            read += (end - begin) * hw
    attrs = dict(op.attrs)
    kh, kw = attrs.get("kernel", (1, 1))
    if op.type == "conv":
        flops = 2.0 * out * (in_c // max(1, attrs.get("groups", 1))) * kh * kw
    elif op.type == "sepconv":
        flops = 2.0 * h * w * in_c * (kh * kw + c)
    elif op.type == "pool":
        flops = float(read if attrs.get("pool_type") == "global_avg" else out * kh * kw)
    else:
        flops = float(max(out, read))
    return flops + BYTES_WEIGHT * 4.0 * (read + out)


def estimate_cost(spec: StageSpec) -> float:
    """Relative cost of measuring ``spec``, used only to order and batch work (flops + weighted bytes).

    Computed from the spec's shapes and attributes without building IR nodes, so that ordering a
    few hundred thousand specs takes seconds, not minutes; an op reading an earlier op of its group is
    assumed to read at its own output resolution.
    """
    return sum(_op_estimate(op, spec) for g in spec.groups for op in g) + FIXED_OVERHEAD_FLOPS


def make_batches(costs: Mapping[str, float], num_workers: int, *, max_batch: int = 8,
                 batches_per_worker: int = 4) -> List[List[str]]:
    """Split keys into batches, heaviest first: a batch closes once it holds ``1/(num_workers *
    batches_per_worker)`` of the total estimated cost or ``max_batch`` specs.

    Heavy specs therefore travel alone at the front and light ones in groups at the back, so the work
    left when the queue runs dry is small and evenly spread (longest-processing-time-first).

    Args:
        costs: estimated cost per key.
        num_workers: workers that will pull batches.
        max_batch: most specs in one batch.
        batches_per_worker: how finely to cut the total cost.

    Returns:
        Batches of keys, in the order they should be handed out.
    """
    if max_batch < 1 or batches_per_worker < 1 or num_workers < 1:
        raise ValueError(f"need max_batch, batches_per_worker, num_workers >= 1; got {max_batch}, "
                         f"{batches_per_worker}, {num_workers}")
    order = sorted(costs, key=lambda k: (-costs[k], k))
    target = sum(costs.values()) / (num_workers * batches_per_worker)
    batches: List[List[str]] = []
    current: List[str] = []
    acc = 0.0
    for key in order:
        current.append(key)
        acc += costs[key]
        if acc >= target or len(current) >= max_batch:
            batches.append(current)
            current, acc = [], 0.0
    if current:
        batches.append(current)
    return batches


class ProfileWorker:
    """Measures batches of stage specs with a cost source built in its own process.

    A plain class: ``ProfilerPool`` makes it a Ray actor; tests may also use it directly.
    """

    def __init__(self, source: SourceRecipe, worker_id: str):
        self._source = source.build()
        self._worker_id = worker_id

    def device(self) -> DeviceInfo:
        return self._source.device()

    def ready(self) -> str:
        """Answers once the cost source is built (the pool's hang timer starts then, not at launch)."""
        return self._worker_id

    def measure(self, specs: Sequence[StageSpec], batch_size: int, settings: MeasureSettings) -> List[Measurement]:
        """One measurement per spec, same order, tagged with this worker's id.

        Raises:
            ValueError: the cost source broke its protocol (wrong count or keys).
        """
        results = self._source.measure(list(specs), batch_size, settings)
        if len(results) != len(specs):
            raise ValueError(f"cost source returned {len(results)} measurements for {len(specs)} specs")
        out = []
        for spec, m in zip(specs, results):
            if m.key != spec.key:
                raise ValueError(f"cost source returned key {m.key} for spec {spec.key}")
            out.append(replace(m, worker=self._worker_id))
        return out

    def measure_graph(self, graph: Graph, batch_size: int, settings: MeasureSettings) -> Optional[List[float]]:
        """Per-repeat ms of the whole scheduled graph (``optimize``'s final check); None when the cost
        source cannot time a whole graph (it has no ``measure_graph``)."""
        measure_graph = getattr(self._source, "measure_graph", None)
        return None if measure_graph is None else measure_graph(graph, batch_size, settings)


@dataclass(frozen=True)
class PoolReport:
    """What one ``ProfilerPool.measure`` call did."""
    num_specs: int
    num_workers: int
    per_worker: Dict[str, int]          # measurements returned by each worker id (w0, w1, w0.r1 after a restart)
    batches: int                        # batches completed
    retries: int                        # spec re-submissions after a lost or failed batch
    worker_deaths: int
    restarts: int
    errors: int                         # measurements carrying an error (any kind)
    wall_s: float
    died_specs: Tuple[str, ...] = ()    # keys given up on as ErrorKind.WORKER_DIED


@dataclass
class _Slot:
    """One actor position in the pool; its handle changes when the actor is replaced."""
    index: int
    handle: "ray.actor.ActorHandle"
    worker_id: str
    generation: int = 0
    alive: bool = True
    # (ref, keys, suspect) in submission order: an actor runs its tasks in order, so the first is running
    inflight: Deque[Tuple["ray.ObjectRef", List[str], bool]] = field(default_factory=collections.deque)
    busy_since: float = 0.0   # when the oldest in-flight batch became the one the actor is running
    ready_ref: Optional["ray.ObjectRef"] = None   # answers once the actor has built its cost source
    ready: bool = False


class ProfilerPool:
    """A fixed-size pool of profiling actors (``ProfileWorker``) with work stealing and bounded retries.

    Example::

        with ProfilerPool(4, "cpu") as pool:
            results, report = pool.measure(specs_by_key, batch_size=1, settings=MeasureSettings(),
                                           on_result=lambda ms: table_buffer.extend(ms))
    """

    def __init__(self, num_workers: int, source: CostArg, *, cpus_per_worker: float = 1.0,
                 max_retries: int = 2, max_worker_restarts: Optional[int] = None, max_batch: int = 8,
                 batches_per_worker: int = 4, inflight_per_worker: int = 2,
                 task_timeout_s: Optional[float] = None, check: bool = True,
                 cost_estimate: Callable[[StageSpec], float] = estimate_cost):
        """A pool of ``num_workers`` actors (Ray must be connected: see ``cluster.connect``).

        The first actor starts at once; the others when ``measure``, ``devices`` or ``actor_handles``
        first needs them, so a run that finds every stage in the cost table starts only one.

        Args:
            num_workers: actors to start.
            source: the cost-source recipe each actor builds its source from, its string form, or a
                picklable CostSource object (see ``costs.factory.resolve_cost``).
            cpus_per_worker: CPUs each actor reserves (GPU recipes also reserve one GPU).
            max_retries: times a spec may be lost to a dying worker and tried again.
            max_worker_restarts: actor replacements allowed per ``measure`` call
                (default ``2 * num_workers + 4``).
            max_batch: most specs per batch.
            batches_per_worker: how finely the total estimated work is cut.
            inflight_per_worker: batches queued on one actor at a time (2 hides the round trip).
            task_timeout_s: a batch running longer is treated as a hung worker: the actor is killed.
            check: check the cluster's resources first (raises InsufficientResourcesError).
            cost_estimate: relative cost of a spec, for ordering and batching.

        Raises:
            ValueError: a bad argument.
            InsufficientResourcesError: the cluster cannot hold the workers (when ``check``).
        """
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if inflight_per_worker < 1:
            raise ValueError(f"inflight_per_worker must be >= 1, got {inflight_per_worker}")
        if task_timeout_s is not None and task_timeout_s <= 0:
            raise ValueError(f"task_timeout_s must be positive, got {task_timeout_s}")
        self._source = resolve_cost(source)  # the recipe each actor builds its own cost source from
        self._num_workers = num_workers
        need = self._source.resources(cpus_per_worker)
        self._resources: WorkerResources = check_resources(num_workers, need) if check else need
        self._max_retries = max_retries
        self._max_restarts = 2 * num_workers + 4 if max_worker_restarts is None else max_worker_restarts
        self._max_batch = max_batch
        self._batches_per_worker = batches_per_worker
        self._depth = inflight_per_worker
        self._timeout = task_timeout_s
        self._estimate = cost_estimate
        self._actor_cls = ray.remote(ProfileWorker).options(
            num_cpus=self._resources.num_cpus, num_gpus=self._resources.num_gpus, max_restarts=0,
            max_task_retries=0)
        # One actor now (enough for the device probe, which may find everything cached); the rest start
        # when there is something to measure.
        self._slots = [self._start(0, 0)]

    # ----- lifecycle ------------------------------------------------------------------------------
    def _start(self, index: int, generation: int) -> _Slot:
        worker_id = f"w{index}" if generation == 0 else f"w{index}.r{generation}"
        handle = self._actor_cls.remote(self._source, worker_id)
        return _Slot(index, handle, worker_id, generation, ready_ref=handle.ready.remote())

    def _grow(self) -> None:
        """Start the actors not started yet."""
        while len(self._slots) < self._num_workers:
            self._slots.append(self._start(len(self._slots), 0))

    def shutdown(self) -> None:
        """Kill every actor; the pool cannot be used afterwards."""
        for slot in self._slots:
            if slot.alive:
                ray.kill(slot.handle, no_restart=True)
                slot.alive = False

    def __enter__(self) -> "ProfilerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    @property
    def num_workers(self) -> int:
        return self._num_workers

    def actor_handles(self) -> List["ray.actor.ActorHandle"]:
        """Handles of the live actors, all started (e.g. to kill one in a fault-injection test)."""
        self._grow()
        return [s.handle for s in self._slots if s.alive]

    # ----- probing --------------------------------------------------------------------------------
    def device(self, timeout_s: float = 600.0) -> DeviceInfo:
        """The device the first responsive worker measures on (the cost table's cache key).

        Raises:
            WorkerStartError: the worker could not build its cost source.
            WorkersExhaustedError: no worker answered.
        """
        last: Optional[Exception] = None
        for slot in self._slots:
            if not slot.alive:
                continue
            try:
                return ray.get(slot.handle.device.remote(), timeout=timeout_s)
            except WORKER_LOST_ERRORS as exc:
                self._raise_if_init_failed(exc)
                last = exc
        raise WorkersExhaustedError(f"no profiling worker answered the device probe: {last}")

    def devices(self, timeout_s: float = 600.0) -> Dict[str, DeviceInfo]:
        """Device of every live worker, by worker id (to detect a mixed cluster); starts them all."""
        self._grow()
        live = [s for s in self._slots if s.alive]
        try:
            infos = ray.get([s.handle.device.remote() for s in live], timeout=timeout_s)
        except WORKER_LOST_ERRORS as exc:
            self._raise_if_init_failed(exc)
            raise
        return {s.worker_id: d for s, d in zip(live, infos)}

    @staticmethod
    def _raise_if_init_failed(exc: Exception) -> None:
        if isinstance(exc, RayActorError) and exc.actor_init_failed:
            raise WorkerStartError(f"a profiling worker failed to build its cost source: {exc}") from exc

    # ----- measuring ------------------------------------------------------------------------------
    def measure(self, specs: Mapping[str, StageSpec], batch_size: int, settings: MeasureSettings,
                on_result: Optional[Callable[[List[Measurement]], None]] = None
                ) -> Tuple[Dict[str, Measurement], PoolReport]:
        """Measure every spec once across the pool.

        Args:
            specs: the stages to measure, by key (``spec.key``).
            batch_size: the batch size to measure at.
            settings: warm-up / number / repeat.
            on_result: called in this thread with each batch's measurements as they arrive (e.g. to
                append them to the cost table); the pool's bookkeeping is done before it is called.

        Returns:
            One measurement per key (errors included) and a report.

        Raises:
            WorkerStartError: workers cannot build their cost source.
            WorkersExhaustedError: all workers died and the restart budget is spent.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        return _Run(self, dict(specs), batch_size, settings, on_result).run()


class _Run:
    """State of one ``measure`` call: the queue, what is in flight where, and the counters."""

    def __init__(self, pool: ProfilerPool, specs: Dict[str, StageSpec], batch_size: int,
                 settings: MeasureSettings, on_result):
        self.pool = pool
        self.specs = specs
        self.batch_size = batch_size
        self.settings = settings
        self.on_result = on_result
        self.results: Dict[str, Measurement] = {}
        self.losses: Dict[str, int] = collections.Counter()
        self.where: Dict["ray.ObjectRef", _Slot] = {}
        self.queue: Deque[List[str]] = collections.deque()
        self.suspects: Deque[str] = collections.deque()   # keys held by an actor that died: run alone
        self.batches = self.retries = self.deaths = self.restarts = 0
        self.died: List[str] = []

    def run(self) -> Tuple[Dict[str, Measurement], PoolReport]:
        start = time.perf_counter()
        pool = self.pool
        if self.specs:
            pool._grow()
        for i, slot in enumerate(pool._slots):  # actors lost in an earlier call come back first
            if not slot.alive and self.restarts < pool._max_restarts:
                self.restarts += 1
                pool._slots[i] = pool._start(slot.index, slot.generation + 1)
        if self.specs:
            costs = {k: pool._estimate(s) for k, s in self.specs.items()}
            live = sum(s.alive for s in pool._slots) or pool.num_workers
            self.queue.extend(make_batches(costs, live, max_batch=pool._max_batch,
                                           batches_per_worker=pool._batches_per_worker))
        self._fill()
        poll = None if pool._timeout is None else min(1.0, pool._timeout / 4)
        last_check = time.monotonic()
        while self.where:
            ready, _ = ray.wait(list(self.where), num_returns=1, timeout=poll)
            if poll is not None and time.monotonic() - last_check >= poll:
                self._check_timeouts()   # also while other workers keep returning results
                last_check = time.monotonic()
            for ref in ready:
                slot = self.where.get(ref)
                if slot is not None:  # else: dropped with its dead actor meanwhile
                    self._collect(ref, slot)
            self._fill()
        if self.queue or self.suspects:
            raise WorkersExhaustedError(
                f"all profiling workers died and the restart budget ({pool._max_restarts}) is spent; "
                f"{sum(len(b) for b in self.queue) + len(self.suspects)} stages were not measured")
        per_worker = collections.Counter(m.worker for m in self.results.values() if m.worker)
        report = PoolReport(num_specs=len(self.specs), num_workers=pool.num_workers, per_worker=dict(per_worker),
                            batches=self.batches, retries=self.retries, worker_deaths=self.deaths,
                            restarts=self.restarts,
                            errors=sum(m.error is not ErrorKind.NONE for m in self.results.values()),
                            wall_s=time.perf_counter() - start, died_specs=tuple(self.died))
        return self.results, report

    # ----- dispatch -------------------------------------------------------------------------------
    def _fill(self) -> None:
        """Top every live actor up to its in-flight depth: idle actors pull the next batch. A suspect
        goes only to an actor with nothing in flight, and nothing is queued behind it."""
        progress = True
        while (self.queue or self.suspects) and progress:
            progress = False
            for slot in sorted((s for s in self.pool._slots if s.alive), key=lambda s: len(s.inflight)):
                if self.suspects and not slot.inflight:
                    self._submit(slot, [self.suspects.popleft()], suspect=True)
                    progress = True
                elif (self.queue and len(slot.inflight) < self.pool._depth
                      and not any(sus for _, _, sus in slot.inflight)):
                    self._submit(slot, self.queue.popleft())
                    progress = True

    def _submit(self, slot: _Slot, batch: List[str], suspect: bool = False) -> None:
        ref = slot.handle.measure.remote([self.specs[k] for k in batch], self.batch_size, self.settings)
        if not slot.inflight:
            slot.busy_since = time.monotonic()
        slot.inflight.append((ref, batch, suspect))
        self.where[ref] = slot

    def _pop(self, slot: _Slot, ref) -> Tuple[List[str], bool]:
        """Remove ``ref`` from the slot; returns its batch and whether it was the one running."""
        for i, (r, batch, _) in enumerate(slot.inflight):
            if r == ref:
                del slot.inflight[i]
                del self.where[ref]
                if i == 0:
                    slot.busy_since = time.monotonic()
                return batch, i == 0
        raise KeyError(ref)

    # ----- results --------------------------------------------------------------------------------
    def _collect(self, ref, slot: _Slot) -> None:
        try:
            measurements = ray.get(ref)
        except WORKER_LOST_ERRORS as exc:
            ProfilerPool._raise_if_init_failed(exc)
            self._worker_lost(slot, ref, f"{type(exc).__name__}: {exc}")
            return
        except RayTaskError as exc:
            batch, _ = self._pop(slot, ref)
            self._task_failed(slot, batch, exc)
            return
        self._pop(slot, ref)
        self.batches += 1
        self._deliver(measurements)

    def _deliver(self, measurements: List[Measurement]) -> None:
        for m in measurements:
            self.results[m.key] = m
        if self.on_result is not None and measurements:
            self.on_result(measurements)

    def _task_failed(self, slot: _Slot, batch: List[str], exc: RayTaskError) -> None:
        if len(batch) > 1:
            self.retries += len(batch)
            self.queue.extendleft([k] for k in reversed(batch))
            return
        cause = exc.cause if getattr(exc, "cause", None) is not None else exc
        message = f"measure raised {type(cause).__name__}: {cause}"[:2000]
        self._deliver([Measurement(batch[0], math.nan, error=ErrorKind.RUNTIME, message=message,
                                   worker=slot.worker_id)])

    def _worker_lost(self, slot: _Slot, ref, reason: str) -> None:
        """The actor behind ``slot`` is gone: keep what it finished, charge the batch it was running,
        re-queue the rest, replace it."""
        if ref is not None and ref not in self.where:
            return
        self.deaths += 1
        slot.alive = False
        entries = list(slot.inflight)
        slot.inflight.clear()
        for r, _, _ in entries:
            self.where.pop(r, None)
        # A batch may have finished just before the crash, its result not collected yet: it is not lost.
        # The refs of a dead actor all resolve promptly (to a result or an error).
        ray.wait([r for r, _, _ in entries], num_returns=len(entries), timeout=1.0)
        lost: List[Tuple[List[str], bool]] = []
        running = True
        for r, batch, _ in entries:
            try:
                measurements = ray.get(r, timeout=0)
            except RayTaskError as exc:
                if not isinstance(exc, WORKER_LOST_ERRORS):
                    self._task_failed(slot, batch, exc)
                    continue
                lost.append((batch, running))
            except (*WORKER_LOST_ERRORS, ray.exceptions.GetTimeoutError):
                lost.append((batch, running))
            else:
                self.batches += 1
                self._deliver(measurements)
                continue
            running = False
        requeue: List[str] = []
        for batch, was_running in lost:
            for key in batch:
                if was_running:
                    self.losses[key] += 1
                if self.losses[key] > self.pool._max_retries:
                    self.died.append(key)
                    self._deliver([Measurement(
                        key, math.nan, error=ErrorKind.WORKER_DIED, worker=slot.worker_id,
                        message=f"the worker died {self.losses[key]} times while measuring this stage "
                                f"(last: {reason})"[:2000])])
                else:
                    self.retries += 1
                    requeue.append(key)
        self.suspects.extendleft(reversed(requeue))
        if self.restarts < self.pool._max_restarts:
            self.restarts += 1
            new = self.pool._start(slot.index, slot.generation + 1)
            self.pool._slots[slot.index] = new
        try:
            ray.kill(slot.handle, no_restart=True)
        except Exception:  # already gone
            pass

    def _check_timeouts(self) -> None:
        limit = self.pool._timeout
        if limit is None:
            return
        now = time.monotonic()
        for slot in list(self.pool._slots):
            if slot.alive and not slot.ready:
                # still starting (imports, CUDA context): time its batches from when it is ready
                done, _ = ray.wait([slot.ready_ref], timeout=0)
                if done:
                    slot.ready = True
                    slot.busy_since = now
                continue
            if slot.alive and slot.inflight and now - slot.busy_since > limit:
                ray.kill(slot.handle, no_restart=True)
                self._worker_lost(slot, None, f"a batch ran longer than task_timeout_s={limit:g} s; "
                                              f"the worker was killed")

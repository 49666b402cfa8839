"""A pool of Ray actors that measure stage specs, in batches, robust to worker death.

Data flow::

    {key: StageSpec}  --heaviest first (estimate_cost), or as given for a catalog's keys-->  keys to send
        --> an idle actor pulls the next batch, cut when it is sent: 1/(2 x workers) of what is left
            (guided self-scheduling: big batches first, small ones last; each actor holds at most
            ``inflight_per_worker`` batches)
        --> ProfileWorker.measure (specs pickled per batch) or .measure_keys (keys only: the actor builds the
            specs from a catalog it fetched once, ``use_catalog``), in the actor: its own cost source
        --> a BatchResult per batch (``results.py``: columns, the keys implied by the batch's order):
            whatever is ready is fetched in one call; each batch goes to ``on_result`` as a MeasuredBatch
        --> PoolResults ({key: Measurement}, built on access), PoolReport (with the driver's CPU time)

Once results come back, batches are also cut no shorter than the workers' measured seconds per stage
and the driver's CPU per batch allow (``PoolOptions.driver_load``): the driver serves every worker in
turn, so at many workers and fast stages small batches would leave workers waiting on it.

Failure handling (as Alpa's profiling workers, with bounds): when an actor dies
(``RayActorError``/``ActorDiedError``/``WorkerCrashedError``, or a batch over ``task_timeout_s``, whose
actor is then killed) it is replaced (at most ``max_worker_restarts`` times per call); results it had
finished are kept; the batch it was running is charged one loss per spec; and every spec it held goes
back as a *suspect*: a single spec that later runs alone on an idle actor, with nothing queued behind
it, so that a further death is charged to exactly the spec that caused it. A spec lost more than
``max_retries`` times comes back as an error measurement (``ErrorKind.WORKER_DIED``) instead of killing
workers forever. A batch whose
``measure`` raised (a cost-source bug: sources report failures as error measurements) is retried as
single specs, and a single spec that raises becomes an ``ErrorKind.RUNTIME`` measurement. The actors
live in ``ActorSlots`` (``actors.py``: naming, replacement, the restart budget); each death, what it sent
back to the queue, and each replacement is logged (WARNING/INFO, loggers ``ios_ray.distributed.*``).
"""
from __future__ import annotations

import collections
import contextlib
import logging
import math
import time
import weakref
from dataclasses import dataclass
from typing import Callable, Deque, Dict, Iterator, List, Mapping, MutableMapping, Optional, Sequence, Tuple, Union

import ray
from ray.exceptions import RayActorError, RayTaskError

from ..costs.factory import CostArg, SourceRecipe, resolve_cost
from ..costs.measurement import DeviceInfo, ErrorKind, Measurement, MeasureSettings
from ..graph.ops import OPS
from ..space.stage import OpSpec, StageSpec
from .actors import WORKER_LOST_ERRORS, ActorSlots, Slot
from .results import BatchResult, MeasuredBatch, PoolResults
from ..graph.ir import Graph
from .cluster import WorkerResources, check_resources

logger = logging.getLogger(__name__)

Timing = Union[MeasureSettings, Tuple[int, int, int]]   # settings, or (warmup, number, repeat)

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


def _op_estimate(op: OpSpec, spec: StageSpec, group: Sequence[OpSpec]) -> float:
    """flops (the op's declared ``op_flops``) + weighted bytes of one op of ``group``, from the spec alone:
    no nodes are built, since this runs for every spec."""
    c, h, w = op.output_shape
    kind, idx = op.inputs[0][0][:2]  # every input of an op has the same spatial size
    _, ih, iw = spec.inputs[idx] if kind == "e" else group[idx].output_shape
    terms = []
    read = 0
    for term in op.inputs:
        terms.append(term[0][3] - term[0][2])
        for ref in term:
            read += ref[3] - ref[2]
    flops = OPS[op.type].op_flops(dict(op.attrs), terms, (ih, iw), op.output_shape)
    return flops + BYTES_WEIGHT * 4.0 * (read * ih * iw + c * h * w)


def estimate_cost(spec: StageSpec) -> float:
    """Relative cost of measuring ``spec``, used only to order and batch work (flops + weighted bytes).

    Computed from the spec's shapes and attributes without building IR nodes, so that ordering a
    few hundred thousand specs takes seconds, not minutes.
    """
    return sum(_op_estimate(op, spec, g) for g in spec.groups for op in g) + FIXED_OVERHEAD_FLOPS


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

    A plain class: ``ProfilerPool`` makes it a Ray actor; tests may also use it directly. A batch comes
    either as specs (``measure``) or as keys of a catalog the worker was given once (``use_catalog``,
    then ``measure_keys``): then the worker builds the specs itself and the driver pickles none.
    """

    def __init__(self, source: SourceRecipe, worker_id: str):
        self._source = source.build()
        self._worker_id = worker_id
        self._catalog: Mapping[str, StageSpec] = {}

    def device(self) -> DeviceInfo:
        return self._source.device()

    def ready(self) -> str:
        """Answers once the cost source is built (the pool's hang timer starts then, not at launch)."""
        return self._worker_id

    def measure(self, specs: Sequence[StageSpec], batch_size: int, settings: Timing) -> BatchResult:
        """One measurement per spec, same order, as columns tagged with this worker's id (the keys stay
        with the caller: ``BatchResult.measurements(keys)`` rebuilds the records).

        Args:
            specs: the stages.
            batch_size: the batch size to measure at.
            settings: ``MeasureSettings``, or its ``(warmup, number, repeat)`` (what the pool sends: a
                tuple of ints costs Ray far less to ship per task than a dataclass).
        Raises:
            ValueError: the cost source broke its protocol (wrong count or keys).
        """
        if not isinstance(settings, MeasureSettings):
            settings = MeasureSettings(*settings)
        t0 = time.perf_counter()
        results = self._source.measure(list(specs), batch_size, settings)
        seconds = time.perf_counter() - t0
        if len(results) != len(specs):
            raise ValueError(f"cost source returned {len(results)} measurements for {len(specs)} specs")
        for spec, m in zip(specs, results):
            if m.key != spec.key:
                raise ValueError(f"cost source returned key {m.key} for spec {spec.key}")
        return BatchResult.of(results, self._worker_id, seconds)

    def use_catalog(self, catalog: Mapping[str, StageSpec]) -> None:
        """Keep ``catalog`` (key -> spec; Ray passes it from the object store) for ``measure_keys``."""
        self._catalog = catalog

    def measure_keys(self, keys: Sequence[str], batch_size: int, settings: Timing) -> BatchResult:
        """``measure`` of the catalog's specs of ``keys``.

        Raises:
            KeyError: a key is not in the catalog (none was given, or another one).
        """
        specs = self._catalog
        return self.measure([specs[k] for k in keys], batch_size, settings)

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
    driver_cpu_s: float = 0.0           # the driver's own CPU time in this call (process time)
    worker_s: float = 0.0               # the workers' time in their cost sources, summed over batches


@dataclass(frozen=True)
class PoolOptions:
    """How a ``ProfilerPool`` reserves, batches and retries.

    Args:
        cpus_per_worker: CPUs each actor reserves (GPU recipes also reserve one GPU).
        max_retries: times a spec may be lost to a dying worker and tried again.
        max_worker_restarts: actor replacements allowed per ``measure`` call (default ``2 * num_workers + 4``).
        max_batch: most specs per batch.
        min_batch: fewest specs per batch while every worker can still get that many.
        batches_per_worker: a batch takes ``1 / (batches_per_worker x live workers)`` of the specs left
            (guided self-scheduling: big batches first, small ones at the end).
        inflight_per_worker: batches queued on one actor at a time (2 hides the round trip).
        driver_load: the share of the driver's time that handling batches may take: once the workers'
            seconds per stage and the driver's CPU per batch are known, batches hold at least
            ``live workers x CPU per batch / (driver_load x seconds per stage)`` stages (within
            ``[min_batch, max_batch]``), so fast stages on many workers do not outrun the driver.
        task_timeout_s: a batch running longer is treated as a hung worker: the actor is killed.
    Raises:
        ValueError: a value out of range (named).
    """
    cpus_per_worker: float = 1.0
    max_retries: int = 2
    max_worker_restarts: Optional[int] = None
    max_batch: int = 256
    min_batch: int = 8
    batches_per_worker: int = 2
    inflight_per_worker: int = 2
    driver_load: float = 0.25
    task_timeout_s: Optional[float] = None

    def __post_init__(self):
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.inflight_per_worker < 1:
            raise ValueError(f"inflight_per_worker must be >= 1, got {self.inflight_per_worker}")
        if not 0 < self.driver_load <= 1:
            raise ValueError(f"driver_load must be in (0, 1], got {self.driver_load}")
        if not 1 <= self.min_batch <= self.max_batch or self.batches_per_worker < 1:
            raise ValueError(f"need 1 <= min_batch <= max_batch and batches_per_worker >= 1; got min_batch="
                             f"{self.min_batch}, max_batch={self.max_batch}, "
                             f"batches_per_worker={self.batches_per_worker}")
        if self.task_timeout_s is not None and self.task_timeout_s <= 0:
            raise ValueError(f"task_timeout_s must be positive, got {self.task_timeout_s}")
        if self.max_worker_restarts is not None and self.max_worker_restarts < 0:
            raise ValueError(f"max_worker_restarts must be >= 0 or None, got {self.max_worker_restarts}")


class ProfilerPool:
    """A fixed-size pool of profiling actors (``ProfileWorker``) with work stealing and bounded retries.

    Example::

        with ProfilerPool(4, "cpu", PoolOptions(task_timeout_s=600)) as pool:
            results, report = pool.measure(specs_by_key, batch_size=1, settings=MeasureSettings(),
                                           on_result=lambda ms: table_buffer.extend(ms))
    """

    def __init__(self, num_workers: int, source: CostArg, options: PoolOptions = PoolOptions(), *,
                 check: bool = True, cost_estimate: Optional[Callable[[StageSpec], float]] = estimate_cost):
        """A pool of ``num_workers`` actors (Ray must be connected: see ``cluster.connect``).

        The first actor starts at once; the others when ``measure``, ``devices`` or ``actor_handles``
        first needs them, so a run that finds every stage in the cost table starts only one.

        Args:
            num_workers: actors to start.
            source: the cost-source recipe each actor builds its source from, its string form, or a
                picklable CostSource object (see ``costs.factory.resolve_cost``).
            options: reservations, batching, retries and timeouts (``PoolOptions``).
            check: check the cluster's resources first (raises InsufficientResourcesError).
            cost_estimate: relative cost of a spec: specs shipped as specs go heaviest first (None: in the
                order given); keys of a catalog (``use_catalog``) always go in the order given.

        Raises:
            ValueError: a bad argument.
            InsufficientResourcesError: the cluster cannot hold the workers (when ``check``).
        """
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}")
        self._source = resolve_cost(source)  # the recipe each actor builds its own cost source from
        self._num_workers = num_workers
        o = options
        need = self._source.resources(o.cpus_per_worker)
        self._resources: WorkerResources = check_resources(num_workers, need) if check else need
        self._options = _RunOptions(o.max_retries, _BatchPlan(o.min_batch, o.max_batch, o.batches_per_worker),
                                    o.inflight_per_worker, o.driver_load, o.task_timeout_s, cost_estimate)
        self._catalog: Optional[Tuple[frozenset, "ray.ObjectRef"]] = None   # its keys, its object ref
        self._catalog_on: "weakref.WeakKeyDictionary[Slot, ray.ObjectRef]" = weakref.WeakKeyDictionary()
        actor_cls = ray.remote(ProfileWorker).options(
            num_cpus=self._resources.num_cpus, num_gpus=self._resources.num_gpus, max_restarts=0,
            max_task_retries=0)
        self._slots = ActorSlots(actor_cls, (self._source,), num_workers, prefix="w", ready_method="ready",
                                 max_restarts=2 * num_workers + 4 if o.max_worker_restarts is None
                                 else o.max_worker_restarts)
        # One actor now (enough for the device probe, which may find everything cached); the rest start
        # when there is something to measure.
        self._slots.start(1)

    # ----- lifecycle ------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Kill every actor; the pool cannot be used afterwards."""
        self._slots.shutdown()

    def __enter__(self) -> "ProfilerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    @property
    def num_workers(self) -> int:
        return self._num_workers

    def actor_handles(self) -> List["ray.actor.ActorHandle"]:
        """Handles of the live actors, all started (e.g. to kill one in a fault-injection test)."""
        self._slots.start()
        return [s.handle for s in self._slots.live()]

    def use_catalog(self, specs: Mapping[str, StageSpec]) -> None:
        """Put ``specs`` into the object store once; later batches of its keys travel as keys.

        Each worker fetches the mapping once and builds its specs itself, so the driver neither builds
        nor pickles a spec per stage. Meant for a ``GraphSpace``'s ``specs`` (a ``SpecTable``: small,
        picklable, specs rebuilt on demand).

        Args:
            specs: a picklable mapping key -> StageSpec.
        """
        self._catalog = (frozenset(specs), ray.put(specs))
        for slot in self._slots.live():   # the actors started so far load it now; later ones at their first batch
            slot.handle.use_catalog.remote(self._catalog[1])
            self._catalog_on[slot] = self._catalog[1]

    # ----- probing --------------------------------------------------------------------------------
    def device(self, timeout_s: float = 600.0) -> DeviceInfo:
        """The device the first responsive worker measures on (the cost table's cache key).

        Raises:
            WorkerStartError: the worker could not build its cost source.
            WorkersExhaustedError: no worker answered.
        """
        last: Optional[Exception] = None
        for slot in self._slots.live():
            try:
                return ray.get(slot.handle.device.remote(), timeout=timeout_s)
            except WORKER_LOST_ERRORS as exc:
                _raise_if_init_failed(exc)
                last = exc
        raise WorkersExhaustedError(f"no profiling worker answered the device probe: {last}")

    def devices(self, timeout_s: float = 600.0) -> Dict[str, DeviceInfo]:
        """Device of every live worker, by worker id (to detect a mixed cluster); starts them all."""
        self._slots.start()
        live = self._slots.live()
        try:
            infos = ray.get([s.handle.device.remote() for s in live], timeout=timeout_s)
        except WORKER_LOST_ERRORS as exc:
            _raise_if_init_failed(exc)
            raise
        return {s.worker_id: d for s, d in zip(live, infos)}

    # ----- measuring ------------------------------------------------------------------------------
    def measure(self, specs: Mapping[str, StageSpec], batch_size: int, settings: MeasureSettings,
                on_result: Optional[Callable[[Sequence[Measurement]], None]] = None
                ) -> Tuple[Mapping[str, Measurement], PoolReport]:
        """Measure every spec once across the pool.

        Args:
            specs: the stages to measure, by key (``spec.key``); when every key is in the catalog
                (``use_catalog``) only the keys travel and the specs here are never built.
            batch_size: the batch size to measure at.
            settings: warm-up / number / repeat.
            on_result: called in this thread with each batch's measurements as they arrive (e.g. to
                append them to the cost table), a ``MeasuredBatch``: a sequence of ``Measurement`` built
                when first read; the pool's bookkeeping is done before it is called.

        Returns:
            One measurement per key (errors included), as a ``PoolResults`` mapping (each
            ``Measurement`` built on access), and a report.

        Raises:
            WorkerStartError: workers cannot build their cost source.
            WorkersExhaustedError: all workers died and the restart budget is spent.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        keys = list(specs)
        catalog = None
        if self._catalog is not None and self._catalog[0].issuperset(keys):
            catalog = self._catalog[1]
        else:
            specs = dict(specs)
        work = _Work(specs, keys, catalog, batch_size, (settings.warmup, settings.number, settings.repeat))
        return _Run(self._slots, self._options, work, on_result, self._catalog_on).run()

    def stream(self, specs: Mapping[str, StageSpec], batch_size: int, settings: MeasureSettings,
               on_result: Optional[Callable[[Sequence[Measurement]], None]] = None) -> "PoolStream":
        """A ``measure`` call whose keys arrive while it runs: ``add(keys)`` takes in finished batches and
        sends the keys waiting to idle actors at once, and ``finish()`` waits for the rest and returns what
        ``measure`` returns for all the keys added. The caller computes
        between calls (the lazy DP solves its next part while the actors measure the last one's stages).

        Args:
            specs: a mapping holding every key that may be added (the catalog's, e.g. ``GraphSpace.specs``:
                keys in it travel as keys, others as pickled specs).
            batch_size, settings, on_result: as for ``measure``.
        Raises:
            ValueError: ``batch_size`` < 1.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        catalog, members = (None, None) if self._catalog is None else (self._catalog[1], self._catalog[0])
        work = _Work(specs, [], catalog, batch_size, (settings.warmup, settings.number, settings.repeat), members)
        run = _Run(self._slots, self._options, work, on_result, self._catalog_on, streaming=True)
        run.begin()
        return run


def _raise_if_init_failed(exc: Exception) -> None:
    if isinstance(exc, RayActorError) and exc.actor_init_failed:
        raise WorkerStartError(f"a profiling worker failed to build its cost source: {exc}") from exc


@dataclass(frozen=True)
class _BatchPlan:
    """How batches are cut (guided self-scheduling): each takes ``1 / (share x live workers)`` of the specs
    left, within ``[floor, max_batch]`` (``floor``: at least ``min_batch``, see ``_Run._floor``) -- but no
    more than an even split over the idle workers when few are left, so a small round (a lazy DP round of a
    dozen stages) goes out as one batch per worker, sizes within one of each other, nothing queued behind.
    """
    min_batch: int
    max_batch: int
    share: int

    def size(self, left: int, workers: int, floor: Optional[int] = None, idle: Optional[int] = None) -> int:
        """Stages of the next batch with ``left`` to cut for ``workers`` live actors, ``idle`` of which
        (the one served included; default all) have nothing in flight."""
        floor = self.min_batch if floor is None else floor
        guided = -(-left // (self.share * workers))
        spread = workers if idle is None else max(1, min(idle, workers))
        even = -(-left // spread)
        return max(1, min(self.max_batch, max(guided, min(floor, even))))


@dataclass(frozen=True)
class _RunOptions:
    """The pool's settings a ``measure`` call runs with (checked by ``ProfilerPool.__init__``)."""
    max_retries: int
    plan: _BatchPlan
    depth: int                          # batches in flight per actor
    driver_load: float                  # share of the driver's time batches may take (sets the floor)
    timeout_s: Optional[float]          # a batch running longer: the actor is killed
    estimate: Optional[Callable[[StageSpec], float]]


@dataclass(frozen=True)
class _Work:
    """What one ``measure`` call measures: the specs by key, the keys in the order given, and the catalog's
    object ref when the specs travel as keys."""
    specs: Mapping[str, StageSpec]
    keys: List[str]
    catalog: Optional["ray.ObjectRef"]
    batch_size: int
    settings: Tuple[int, int, int]      # warmup, number, repeat
    members: Optional[frozenset] = None   # the catalog's keys when not every key is known to be in it

    def by_key(self, batch: Sequence[str]) -> bool:
        """Whether ``batch`` travels as keys (every key in the catalog)."""
        return self.catalog is not None and (self.members is None or all(k in self.members for k in batch))


class _Run:
    """State of one ``measure`` call: the queue, what is in flight on which actor, and the counters.

    The actors themselves (starting, naming, replacing, the restart budget) belong to ``ActorSlots``.
    Per batch, not per stage: the driver submits one task, waits for whatever is ready at once, and hands
    each batch's measurements to ``on_result`` in one call.

    ``run`` is ``begin``, ``add`` of every key, ``finish``. Streamed (``ProfilerPool.stream``), keys come by
    ``add`` while the caller computes between calls: until ``finish`` only actors with nothing in flight
    get a batch (an even share of the keys waiting), so keys that arrive later are not queued behind a
    busy actor while another comes free. This class is the ``PoolStream`` that ``stream`` returns.
    """

    def __init__(self, slots: ActorSlots, options: _RunOptions, work: _Work, on_result,
                 catalog_on: MutableMapping[Slot, "ray.ObjectRef"], streaming: bool = False):
        self.slots = slots
        self.streaming = streaming     # keys still arriving: batches go to idle actors only
        self.catalog_on = catalog_on   # the catalog each actor was given (kept across calls)
        self.options = options
        self.work = work
        self.on_result = on_result
        self.results = PoolResults()
        self.losses: Dict[str, int] = collections.Counter()
        self.where: Dict["ray.ObjectRef", Slot] = {}
        # per actor, (ref, keys, suspect) in submission order: an actor runs its tasks in order, so the
        # first is running; and when that first batch started running
        self.inflight: Dict[Slot, Deque[Tuple["ray.ObjectRef", List[str], bool]]] = \
            collections.defaultdict(collections.deque)
        self.busy_since: Dict[Slot, float] = {}
        self.order: List[str] = []                         # keys in dispatch order; order[cut:] not yet batched
        self.cut = 0
        self.queue: Deque[List[str]] = collections.deque()  # batches to send before cutting new ones
        self.suspects: Deque[str] = collections.deque()   # keys held by an actor that died: run alone
        self.batches = self.retries = self.deaths = 0
        self.died: List[str] = []
        self.stage_s = 0.0       # the workers' seconds in their cost sources, over stages_timed stages
        self.stages_timed = 0
        self.cpu_s = 0.0         # the driver's CPU inside this run's calls (not the caller's work between them)
        self._cpu0: Optional[float] = None
        self.start = time.perf_counter()

    def run(self) -> Tuple[PoolResults, PoolReport]:
        self.begin()
        work, opts = self.work, self.options
        keys = work.keys
        if work.catalog is None and opts.estimate is not None and len(keys) > 1:
            cost = {k: opts.estimate(work.specs[k]) for k in keys}
            keys = sorted(keys, key=lambda k: (-cost[k], k))   # heaviest first
        self.add(keys)
        return self.finish()

    @contextlib.contextmanager
    def _driver(self) -> Iterator[None]:
        """Counts the driver's CPU inside this run's calls (nested: ``run`` calls ``add`` and ``finish``)."""
        if self._cpu0 is not None:
            yield
            return
        self._cpu0 = time.process_time()
        try:
            yield
        finally:
            self.cpu_s += time.process_time() - self._cpu0
            self._cpu0 = None

    def begin(self) -> None:
        """Actors up (lost ones replaced) and the clocks started."""
        self.start = time.perf_counter()
        with self._driver():
            slots = self.slots
            slots.reset_budget()
            if self.work.keys or self.streaming:
                slots.start()
            for slot in slots:  # actors lost in an earlier call come back first
                if not slot.alive:
                    slots.replace(slot, "lost in an earlier call")

    def add(self, keys: Sequence[str]) -> None:
        """Queue ``keys`` (each added once per run), take in the batches that finished, and send what idle
        actors can take now; never waits."""
        with self._driver():
            self.order.extend(keys)
            if self.streaming:
                self._take_ready()
            self._fill()

    def _take_ready(self) -> None:
        if self.where:
            pending = list(self.where)
            ready, _ = ray.wait(pending, num_returns=len(pending), timeout=0)
            if ready:
                self._collect_all(ready)

    def finish(self) -> Tuple[PoolResults, PoolReport]:
        """Wait for every key added; the results and the report of the whole run.

        Raises:
            WorkerStartError, WorkersExhaustedError: as ``ProfilerPool.measure``.
        """
        with self._driver():
            self.streaming = False
            slots, opts = self.slots, self.options
            self._fill()
            poll = None if opts.timeout_s is None else min(1.0, opts.timeout_s / 4)
            last_check = time.monotonic()
            while self.where:
                pending = list(self.where)
                first, _ = ray.wait(pending, num_returns=1, timeout=poll)
                if poll is not None and time.monotonic() - last_check >= poll:
                    self._check_timeouts()   # also while other workers keep returning results
                    last_check = time.monotonic()
                if first:   # everything else already done too, in one call
                    ready, _ = ray.wait(pending, num_returns=len(pending), timeout=0)
                    self._collect_all([r for r in ready if r in self.where])
                self._fill()
            if self._left() or self.queue or self.suspects:
                left = self._left() + sum(len(b) for b in self.queue) + len(self.suspects)
                raise WorkersExhaustedError(
                    f"all profiling workers died and the restart budget ({slots.max_restarts}) is spent; "
                    f"{left} stages were not measured")
        report = PoolReport(num_specs=len(self.order), num_workers=slots.size, per_worker=self.results.per_worker(),
                            batches=self.batches, retries=self.retries, worker_deaths=self.deaths,
                            restarts=slots.restarts, errors=self.results.error_count(),
                            wall_s=time.perf_counter() - self.start, died_specs=tuple(self.died),
                            driver_cpu_s=self.cpu_s, worker_s=self.stage_s)
        return self.results, report

    # ----- dispatch -------------------------------------------------------------------------------
    def _left(self) -> int:
        return len(self.order) - self.cut

    def _floor(self, workers: int) -> int:
        """Fewest stages a batch should hold: ``min_batch``, or more once the workers' seconds per stage
        and the driver's CPU per batch are known, so that ``workers`` batches finishing together keep the
        driver busy at most ``driver_load`` of the time (the driver serves every worker in turn)."""
        plan = self.options.plan
        if not self.batches or self.stage_s <= 0:
            return plan.min_batch
        per_stage = self.stage_s / self.stages_timed
        per_batch = self._driver_cpu() / self.batches
        return max(plan.min_batch, min(plan.max_batch,
                                       math.ceil(workers * per_batch / (self.options.driver_load * per_stage))))

    def _driver_cpu(self) -> float:
        return self.cpu_s + (0.0 if self._cpu0 is None else time.process_time() - self._cpu0)

    def _next_batch(self, workers: int, idle: Optional[int]) -> List[str]:
        if self.queue:
            return self.queue.popleft()
        n = self.options.plan.size(self._left(), workers, self._floor(workers), idle)
        batch = self.order[self.cut:self.cut + n]
        self.cut += n
        return batch

    def _fill(self) -> None:
        """Top every live actor up to its in-flight depth: idle actors pull the next batch. A suspect
        goes only to an actor with nothing in flight, and nothing is queued behind it."""
        live = self.slots.live()
        progress = True
        while (self._left() or self.queue or self.suspects) and progress:
            progress = False
            # idle actors come first; each one's first batch splits a small remainder over the idle ones
            # not yet served, a batch queued behind a running one over all
            idle = sum(1 for s in live if s.alive and not self.inflight[s])
            for slot in sorted(live, key=lambda s: len(self.inflight[s])):
                if not slot.alive:
                    continue
                inflight = self.inflight[slot]
                if self.suspects and not inflight:
                    self._submit(slot, [self.suspects.popleft()], suspect=True)
                    idle -= 1
                    progress = True
                elif ((self._left() or self.queue) and len(inflight) < (1 if self.streaming else self.options.depth)
                      and not any(sus for _, _, sus in inflight)):
                    first = not inflight
                    self._submit(slot, self._next_batch(len(live), idle if first else None))
                    idle -= first
                    progress = True

    def _submit(self, slot: Slot, batch: List[str], suspect: bool = False) -> None:
        work = self.work
        if work.by_key(batch):
            if self.catalog_on.get(slot) is not work.catalog:   # an actor runs its tasks in order: this first
                slot.handle.use_catalog.remote(work.catalog)
                self.catalog_on[slot] = work.catalog
            ref = slot.handle.measure_keys.remote(batch, work.batch_size, work.settings)
        else:
            ref = slot.handle.measure.remote([work.specs[k] for k in batch], work.batch_size, work.settings)
        inflight = self.inflight[slot]
        if not inflight:
            self.busy_since[slot] = time.monotonic()
        inflight.append((ref, batch, suspect))
        self.where[ref] = slot

    def _pop(self, slot: Slot, ref) -> Tuple[List[str], bool]:
        """Remove ``ref`` from the slot; returns its batch and whether it was the one running."""
        inflight = self.inflight[slot]
        for i, (r, batch, _) in enumerate(inflight):
            if r == ref:
                del inflight[i]
                del self.where[ref]
                if i == 0:
                    self.busy_since[slot] = time.monotonic()
                return batch, i == 0
        raise KeyError(ref)

    # ----- results --------------------------------------------------------------------------------
    def _collect_all(self, refs: List["ray.ObjectRef"]) -> None:
        """Results of finished batches: fetched in one call; on any failure, batch by batch."""
        try:
            batches = ray.get(refs)
        except (*WORKER_LOST_ERRORS, RayTaskError):
            for ref in refs:
                slot = self.where.get(ref)
                if slot is not None:  # else: dropped with its dead actor meanwhile
                    self._collect(ref, slot)
            return
        for ref, measurements in zip(refs, batches):
            slot = self.where.get(ref)
            if slot is not None:
                batch, _ = self._pop(slot, ref)
                self.batches += 1
                self._deliver(batch, measurements)

    def _collect(self, ref, slot: Slot) -> None:
        try:
            measurements = ray.get(ref)
        except WORKER_LOST_ERRORS as exc:
            _raise_if_init_failed(exc)
            self._worker_lost(slot, ref, f"{type(exc).__name__}: {exc}")
            return
        except RayTaskError as exc:
            batch, _ = self._pop(slot, ref)
            self._task_failed(slot, batch, exc)
            return
        batch, _ = self._pop(slot, ref)
        self.batches += 1
        self._deliver(batch, measurements)

    def _deliver(self, keys: List[str], result: BatchResult) -> None:
        batch = MeasuredBatch(keys, result)
        self.results.add(batch)
        self.stage_s += result.seconds
        self.stages_timed += len(keys)
        if self.on_result is not None and keys:
            self.on_result(batch)

    def _task_failed(self, slot: Slot, batch: List[str], exc: RayTaskError) -> None:
        cause = exc.cause if getattr(exc, "cause", None) is not None else exc
        if len(batch) > 1:
            logger.warning("measure raised on worker %s for a batch of %d stages (%s: %s); retrying them one "
                           "by one", slot.worker_id, len(batch), type(cause).__name__, cause)
            self.retries += len(batch)
            self.queue.extendleft([k] for k in reversed(batch))
            return
        message = f"measure raised {type(cause).__name__}: {cause}"[:2000]
        logger.warning("stage %s on worker %s: %s; recorded as a RUNTIME error", batch[0], slot.worker_id, message)
        self._deliver(batch, BatchResult.of([Measurement(batch[0], math.nan, error=ErrorKind.RUNTIME,
                                                         message=message)], slot.worker_id))

    def _worker_lost(self, slot: Slot, ref, reason: str) -> None:
        """The actor behind ``slot`` is gone: keep what it finished, charge the batch it was running,
        re-queue the rest, replace it."""
        if ref is not None and ref not in self.where:
            return
        self.deaths += 1
        self.slots.kill(slot)
        entries = list(self.inflight.pop(slot, ()))
        self.busy_since.pop(slot, None)
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
                self._deliver(batch, measurements)
                continue
            running = False
        requeue: List[str] = []
        for batch, was_running in lost:
            for key in batch:
                if was_running:
                    self.losses[key] += 1
                if self.losses[key] > self.options.max_retries:
                    self.died.append(key)
                    self._deliver([key], BatchResult.of([Measurement(
                        key, math.nan, error=ErrorKind.WORKER_DIED,
                        message=f"the worker died {self.losses[key]} times while measuring this stage "
                                f"(last: {reason})"[:2000])], slot.worker_id))
                else:
                    self.retries += 1
                    requeue.append(key)
        given_up = sum(len(b) for b, _ in lost) - len(requeue)
        short = reason.split("\n", 1)[0]   # Ray's errors run to many lines
        logger.warning("worker %s died (%s): %d unfinished stages retried, each alone; %d given up as "
                       "WORKER_DIED", slot.worker_id, short, len(requeue), given_up)
        self.suspects.extendleft(reversed(requeue))
        self.slots.replace(slot, short)

    def _check_timeouts(self) -> None:
        limit = self.options.timeout_s
        if limit is None:
            return
        now = time.monotonic()
        for slot in self.slots.live():
            if not slot.ready:
                # still starting (imports, CUDA context): time its batches from when it is ready
                if slot.poll_ready():
                    self.busy_since[slot] = now
                continue
            if self.inflight[slot] and now - self.busy_since[slot] > limit:
                self.slots.kill(slot)
                self._worker_lost(slot, None, f"a batch ran longer than task_timeout_s={limit:g} s; "
                                              f"the worker was killed")


PoolStream = _Run   # what ``ProfilerPool.stream`` returns: add, finish

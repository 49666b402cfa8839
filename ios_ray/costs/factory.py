"""Cost-source recipes: picklable descriptions of where stage latencies come from, and the registry of
the names users type for them.

A cost source holds process-local state (a CUDA context, cuDNN handles, cached buffers), so what travels
to a Ray actor (and through ``optimize``) is a *recipe*: a small picklable record that owns

* ``build()``: the live ``CostSource``, made in the process that measures;
* ``resources(cpus)``: what one profiling worker asks Ray for (a GPU profiler owns one whole GPU);
* ``dtype``: the math mode its rows are filed under in the cost table (``float32``, ``tf32``);
* ``cached_by_default``: whether its rows belong in the default cost table (analytic estimates are
  cheap: they are stored only in a table named explicitly);
* ``local_device()``: its ``DeviceInfo`` when that is the same in every process (the analytic model),
  so that the driver learns it without starting a worker; else None;
* ``cpu_threads``: the BLAS/OpenMP threads its CPU measurements ran with, which the numpy reference
  runtime must then run with too (``ios_runtime``); None when no CPU timing is involved.

Data flow::

    "gpu-tf32" --parse_cost (KINDS)--> GpuRecipe(tf32=True) --pickled to each actor--> build() -> GpuProfiler
    any CostSource object --resolve_cost--> ObjectRecipe(source): its own dtype; build() is the object

Nothing outside this module asks which kind a recipe is: callers use the six members above.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, ClassVar, Mapping, Optional, Protocol, Tuple, Union, runtime_checkable

from .measurement import CostSource, DeviceInfo

# BLAS/OpenMP threads of CPU measurements and of the reference runtime unless told otherwise: what Ray
# gives a one-CPU actor (OMP_NUM_THREADS=1), so in-process and actor timings agree.
DEFAULT_CPU_THREADS = 1
MAX_WORKERS_PER_GPU = 16   # profiling actors one GPU may host (each holds a CUDA context: ~0.5 GB)


def check_threads(threads: Any) -> int:
    """``threads`` as a positive int.

    Raises:
        ValueError: not a whole number of at least 1 (strings such as ``"4"`` are accepted).
    """
    try:
        value = int(str(threads).strip())
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"CPU threads must be a whole number of at least 1, got {threads!r}")
    return value


@dataclass(frozen=True)
class WorkerResources:
    """Ray resources one profiling (or enumeration) actor asks for."""
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def __post_init__(self):
        if self.num_cpus < 0 or self.num_gpus < 0:
            raise ValueError(f"worker resources must be >= 0, got num_cpus={self.num_cpus}, "
                             f"num_gpus={self.num_gpus}")


@runtime_checkable
class SourceRecipe(Protocol):
    """A picklable description of a cost source (see the module docstring)."""

    dtype: str
    cached_by_default: bool
    cpu_threads: Optional[int]

    def build(self) -> CostSource:
        """The live cost source, built in this process."""
        ...

    def resources(self, cpus_per_worker: float = 1.0) -> WorkerResources:
        """What one worker measuring with this source needs."""
        ...

    def local_device(self) -> Optional[DeviceInfo]:
        """The device when it is the same in every process, else None (ask a worker)."""
        ...


@dataclass(frozen=True)
class CpuRecipe:
    """The numpy reference runtime on the worker's CPU (``CpuProfiler``).

    Args:
        seed: seeds the random weights and inputs.
        threads: BLAS/OpenMP threads every timing runs with, in this process or in an actor alike; it
            is part of the rows' software fingerprint, and the reference runtime runs the optimized
            graph with it (``ios-ray run``, ``graph_latency``).
    Raises:
        ValueError: ``threads`` is not a whole number of at least 1.
    """
    seed: int = 0
    threads: int = DEFAULT_CPU_THREADS

    dtype: ClassVar[str] = "float32"
    cached_by_default: ClassVar[bool] = True

    def __post_init__(self):
        object.__setattr__(self, "threads", check_threads(self.threads))  # "cpu:4" gives the string "4"

    @property
    def cpu_threads(self) -> Optional[int]:
        return self.threads

    def build(self) -> CostSource:
        from ..profile.cpu import CpuProfiler
        return CpuProfiler(seed=self.seed, threads=self.threads)

    def resources(self, cpus_per_worker: float = 1.0) -> WorkerResources:
        return WorkerResources(num_cpus=float(cpus_per_worker))

    def local_device(self) -> Optional[DeviceInfo]:
        return None

    def __str__(self) -> str:
        return "cpu" if self.threads == DEFAULT_CPU_THREADS else f"cpu:{self.threads}"


@dataclass(frozen=True)
class GpuRecipe:
    """CUDA-graph replay on one GPU (``GpuProfiler``); each worker owns a whole GPU, so timings are alone.

    Args:
        tf32: allow TF32 tensor-core convolutions (rows are filed as ``tf32``).
        autotune: time cuDNN's candidate plans per new conv signature (default: the heuristic's plan).
        device_id: the CUDA device within the worker's visible devices (Ray gives each actor one).
        engines: the engine book's location (default: the default cost table's); ``with_table`` puts it
            beside the cost table the rows go to, so every worker and the runtime use the same engines.
        l2: ``"auto"`` (the default: as the graph being optimized runs, cold with a flush as large as its
            working set: ``profile.gpu.l2_protocol``), ``"warm"`` (back-to-back replays) or ``"cold"`` (L2
            flushed and inputs read before each timed replay; ``profile.gpu.L2_COLD``).
        working_set: the graph's bytes an inference, for ``"auto"`` (``for_graph`` sets it; None: warm).
        workers_per_gpu: Ray actors sharing each GPU (each asks for ``1 / workers_per_gpu`` of one). They
            overlap their host work (building, lowering, capturing stages) and take turns on the device:
            device work runs under one lock per GPU (``runtime.gpu.lock``), so every timing is still alone.
        timing: a warm sample: ``"replays"`` (single replays until their median is stable) or ``"repeats"``
            (the original IOS's repeats of ``number`` replays; ``profile.gpu.TIMING_REPEATS``).
    """
    tf32: bool = False
    autotune: bool = False
    device_id: int = 0
    engines: Optional[str] = None
    l2: str = "auto"
    workers_per_gpu: int = 1
    timing: str = "replays"
    working_set: Optional[int] = None

    cached_by_default: ClassVar[bool] = True
    cpu_threads: ClassVar[Optional[int]] = None

    def __post_init__(self):
        if self.l2 not in ("auto", "warm", "cold"):
            raise ValueError(f"l2 must be 'auto', 'warm' or 'cold', got {self.l2!r}")
        if self.timing not in ("replays", "repeats"):
            raise ValueError(f"timing must be 'replays' or 'repeats', got {self.timing!r}")
        if not isinstance(self.workers_per_gpu, int) or not 1 <= self.workers_per_gpu <= MAX_WORKERS_PER_GPU:
            raise ValueError(f"workers_per_gpu must be an integer from 1 to {MAX_WORKERS_PER_GPU}, "
                             f"got {self.workers_per_gpu!r}")

    @property
    def dtype(self) -> str:
        return "tf32" if self.tf32 else "float32"

    def build(self) -> CostSource:
        from ..profile.gpu import GpuProfiler
        profiler = GpuProfiler(device_id=self.device_id, tf32=self.tf32, autotune=self.autotune, engines=self.engines)
        profiler.l2 = self.l2
        profiler.timing = self.timing
        profiler.working_set = self.working_set
        return profiler

    def for_graph(self, graph, batch_size: int) -> "GpuRecipe":
        """This recipe with ``graph``'s working set at ``batch_size`` (what ``"auto"`` decides by)."""
        return replace(self, working_set=graph.working_set_bytes(batch_size))

    def with_table(self, table) -> "GpuRecipe":
        """This recipe with its engine book beside ``table`` (a ``CostTable``; None: unchanged)."""
        if table is None:
            return self
        from .engines import engine_location
        return replace(self, engines=engine_location(table.location))

    def resources(self, cpus_per_worker: float = 1.0) -> WorkerResources:
        # rounded down to Ray's precision (1e-4), so that workers_per_gpu of them fit on one GPU
        return WorkerResources(num_cpus=float(cpus_per_worker),
                               num_gpus=math.floor(1e4 / self.workers_per_gpu) / 1e4)

    def local_device(self) -> Optional[DeviceInfo]:
        return None

    def __str__(self) -> str:
        return ("gpu-tf32" if self.tf32 else "gpu") + ("" if self.l2 == "auto" else f"-{self.l2}")


@dataclass(frozen=True)
class AnalyticRecipe:
    """The roofline estimate of a named GPU (``AnalyticCostModel``); labelled estimated, never cached by
    default, and the same in every process.

    Raises:
        ValueError: an unknown GPU or dtype, or TF32 on a GPU without it.
    """
    gpu: str = "H200"
    dtype: str = "float32"

    cached_by_default: ClassVar[bool] = False
    cpu_threads: ClassVar[Optional[int]] = None

    def __post_init__(self):
        from .analytic import gpu_spec
        object.__setattr__(self, "gpu", gpu_spec(self.gpu).name)  # canonical name: "v100" -> "V100"
        self.build()  # checks the dtype against the GPU now, not inside a worker

    def build(self) -> CostSource:
        from .analytic import AnalyticCostModel
        return AnalyticCostModel(self.gpu, self.dtype)

    def resources(self, cpus_per_worker: float = 1.0) -> WorkerResources:
        return WorkerResources(num_cpus=float(cpus_per_worker))

    def local_device(self) -> Optional[DeviceInfo]:
        return self.build().device()

    def __str__(self) -> str:
        return f"analytic{'-tf32' if self.dtype == 'tf32' else ''}:{self.gpu}"


@dataclass(frozen=True)
class ObjectRecipe:
    """A user's ``CostSource`` object: pickled to each worker as it is, or used directly in-process.

    Its math mode is the object's own ``dtype``; a worker reserves one CPU and no GPU (to measure on
    GPU actors pass a recipe such as ``GpuRecipe``, which reserves a whole GPU each and builds the CUDA
    state inside the actor); its rows go to a cost table only when one is named (an unknown source is
    never mixed into the default table implicitly).
    """
    source: Any

    cached_by_default: ClassVar[bool] = False

    @property
    def dtype(self) -> str:
        return str(self.source.dtype)

    @property
    def cpu_threads(self) -> Optional[int]:
        """The object's own ``threads`` when it states one (a CPU source), else None."""
        threads = getattr(self.source, "threads", None)
        return None if threads is None else check_threads(threads)

    def build(self) -> CostSource:
        return self.source

    def for_graph(self, graph, batch_size: int) -> "ObjectRecipe":
        """The object's own ``for_graph`` (a ``GpuProfiler`` sets its timing for the graph), when it has one."""
        tune = getattr(self.source, "for_graph", None)
        return self if tune is None else ObjectRecipe(tune(graph, batch_size))

    def resources(self, cpus_per_worker: float = 1.0) -> WorkerResources:
        return WorkerResources(num_cpus=float(cpus_per_worker))

    def local_device(self) -> Optional[DeviceInfo]:
        return None

    def __str__(self) -> str:
        return type(self.source).__name__


@dataclass(frozen=True)
class SourceKind:
    """One name of the registry: the recipe class, its fixed options, and the field an argument sets."""
    name: str
    help: str
    recipe: type
    options: Tuple[Tuple[str, Any], ...] = ()
    argument: Optional[str] = None    # the recipe field ``name:<value>`` sets; None: takes no argument

    def usage(self) -> str:
        return f"{self.name}[:{self.argument.upper()}]" if self.argument else self.name

    def make(self, argument: str) -> SourceRecipe:
        kwargs = dict(self.options)
        if argument:
            kwargs[self.argument] = argument
        return self.recipe(**kwargs)


KINDS: Mapping[str, SourceKind] = MappingProxyType({k.name: k for k in (
    SourceKind("cpu", "measured on the numpy reference runtime with THREADS BLAS threads (default 1)", CpuRecipe,
               argument="threads"),
    SourceKind("gpu", "measured on a CUDA GPU, strict FP32, stages timed as the graph runs them (L2 flushed by "
               "its working set)", GpuRecipe),
    SourceKind("gpu-tf32", "measured on a CUDA GPU, TF32 convolutions, timed as the graph runs them", GpuRecipe,
               (("tf32", True),)),
    SourceKind("gpu-warm", "measured on a CUDA GPU, strict FP32, warm back-to-back replays", GpuRecipe,
               (("l2", "warm"),)),
    SourceKind("gpu-tf32-warm", "measured on a CUDA GPU, TF32, warm back-to-back replays", GpuRecipe,
               (("tf32", True), ("l2", "warm"))),
    SourceKind("gpu-cold", "measured on a CUDA GPU, strict FP32, L2 flushed before each timed replay", GpuRecipe,
               (("l2", "cold"),)),
    SourceKind("gpu-tf32-cold", "measured on a CUDA GPU, TF32, L2 flushed before each timed replay", GpuRecipe,
               (("tf32", True), ("l2", "cold"))),
    SourceKind("analytic", "roofline estimate of a named GPU (default H200)", AnalyticRecipe, argument="gpu"),
    SourceKind("analytic-tf32", "roofline estimate with TF32 tensor cores", AnalyticRecipe,
               (("dtype", "tf32"),), argument="gpu"),
)})
ALIASES: Mapping[str, str] = MappingProxyType({"cuda": "gpu", "cuda-tf32": "gpu-tf32"})


def known_cost_names() -> str:
    """The registry's names as users type them, for help texts and errors."""
    return ", ".join(k.usage() for k in KINDS.values())


def parse_cost(text: str) -> SourceRecipe:
    """The recipe a user's string names: ``cpu``, ``gpu``, ``gpu-tf32``, ``analytic``, ``analytic:V100``...

    Raises:
        ValueError: an unknown name (the message lists the known ones), an argument the kind does not
            take, or an argument the recipe refuses (e.g. an unknown GPU).
    """
    name, sep, argument = str(text).strip().lower().partition(":")
    kind = KINDS.get(ALIASES.get(name, name))
    if kind is None or (sep and (kind.argument is None or not argument)):
        raise ValueError(f"unknown cost source {text!r}; known: {known_cost_names()}")
    try:
        return kind.make(argument)
    except ValueError as exc:
        raise ValueError(f"cost source {text!r}: {exc}; known: {known_cost_names()}") from None


CostArg = Union[None, str, SourceRecipe, CostSource]


def gpu_options(cost: CostArg, **changes) -> SourceRecipe:
    """The recipe of ``cost`` with the ``GpuRecipe`` fields in ``changes`` set (those given as None left as
    they are): ``--workers-per-gpu`` or ``--timing`` from a command line.

    Raises:
        ValueError: a change is asked of a source that is not a GPU one (the message names the fields).
    """
    recipe = resolve_cost(cost)
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        return recipe
    if not isinstance(recipe, GpuRecipe):
        options = ", ".join("--" + k.replace("_", "-") for k in sorted(changes))   # as the command lines name them
        raise ValueError(f"{options} applies to GPU costs; the cost source is {recipe}")
    return replace(recipe, **changes)


def resolve_cost(cost: CostArg) -> SourceRecipe:
    """The recipe for what ``optimize(cost=...)`` accepts.

    ``None`` is the GPU when CuPy sees one, else the CPU reference runtime; a string goes through
    ``parse_cost``; a recipe is kept; any ``CostSource`` object (with its ``dtype``) is wrapped.

    Raises:
        ValueError: anything else, or an object that measures but does not state its math mode.
    """
    if cost is None:
        return GpuRecipe() if gpu_available() else CpuRecipe()
    if isinstance(cost, str):
        return parse_cost(cost)
    if isinstance(cost, SourceRecipe):
        return cost
    if isinstance(cost, CostSource):
        return ObjectRecipe(cost)
    if hasattr(cost, "measure") and hasattr(cost, "device"):
        raise ValueError(f"the cost source {type(cost).__name__} does not state its math mode: give it a "
                         f"`dtype` attribute ('float32' or 'tf32'); the cost table files rows under it")
    raise ValueError(f"cost must be None, one of {known_cost_names()}, a SourceRecipe or a CostSource; "
                     f"got {type(cost).__name__}")


def gpu_available() -> bool:
    """True when CuPy imports and sees a CUDA device; never raises."""
    try:
        import cupy  # noqa: F401
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False

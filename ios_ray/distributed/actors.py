"""Ray actors of one class in numbered slots: started, named, replaced when they die, killed at the end.

Both actor pools use it (``ProfilerPool`` and the sharded enumeration); what work goes where stays with
them. Slot ``i`` first holds worker ``{prefix}{i}``; after its actor died and was replaced ``r`` times it
holds ``{prefix}{i}.r{r}``, so a worker id in a report says which actor did the work.

Data flow::

    ActorSlots(remote class, constructor args, size) --start()--> Slot per index (handle, worker id,
        the answer to an optional "ready" call) --replace(slot, reason) after a death--> the slot's next
        generation, while the restart budget lasts (``reset_budget`` renews it) --shutdown()--> all killed
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator, List, Optional

import ray
from ray.exceptions import RayActorError, WorkerCrashedError

logger = logging.getLogger(__name__)

# Errors that mean "the process running the task is gone": the task did not finish and can be retried.
WORKER_LOST_ERRORS = (RayActorError, WorkerCrashedError)


def describe(exc: BaseException) -> str:
    """``Type: first line of the message``: enough for a log line (Ray's errors run to many lines)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


@dataclass(eq=False)
class Slot:
    """The actor now in slot ``index``; a replacement is a new ``Slot`` with ``generation + 1``.

    Compared and hashed by identity, so owners may key their per-actor state by it.
    """

    index: int
    generation: int
    handle: "ray.actor.ActorHandle"
    worker_id: str
    ready_ref: Optional["ray.ObjectRef"] = None   # the ready call, submitted before any other task
    alive: bool = True
    ready: bool = False

    def poll_ready(self) -> bool:
        """Whether the actor has answered its ready call (always, without one); never blocks."""
        if not self.ready:
            self.ready = self.ready_ref is None or bool(ray.wait([self.ready_ref], timeout=0)[0])
        return self.ready


class ActorSlots:
    """``size`` actors of ``actor_cls``, each built as ``actor_cls.remote(*args, worker_id)``.

    Args:
        actor_cls: a remote class (``ray.remote(cls).options(...)``; give it ``max_restarts=0``: the
            slots, not Ray, decide what comes back).
        args: constructor arguments before the worker id.
        size: slots to fill (``start`` may fill them lazily).
        prefix: worker ids are ``{prefix}{index}``, ``{prefix}{index}.r{generation}`` after a restart.
        max_restarts: replacements allowed until the next ``reset_budget`` (None: no limit).
        ready_method: an actor method that answers once the actor is built; called at once after the
            actor starts, so it runs before anything else submitted to it (see ``Slot.poll_ready``).

    Raises:
        ValueError: ``size`` < 1 or ``max_restarts`` < 0.
    """

    def __init__(self, actor_cls, args: tuple, size: int, *, prefix: str = "w",
                 max_restarts: Optional[int] = None, ready_method: Optional[str] = None):
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        if max_restarts is not None and max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0 or None, got {max_restarts}")
        self._cls = actor_cls
        self._args = tuple(args)
        self._prefix = prefix
        self._ready_method = ready_method
        self._slots: List[Slot] = []
        self.size = size
        self.max_restarts = max_restarts
        self.restarts = 0   # replacements since the budget was last reset

    def __len__(self) -> int:
        return len(self._slots)

    def __getitem__(self, index: int) -> Slot:
        return self._slots[index]

    def __iter__(self) -> Iterator[Slot]:
        return iter(list(self._slots))

    def __enter__(self) -> "ActorSlots":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def _launch(self, index: int, generation: int) -> Slot:
        worker_id = f"{self._prefix}{index}" if generation == 0 else f"{self._prefix}{index}.r{generation}"
        handle = self._cls.remote(*self._args, worker_id)
        ready = getattr(handle, self._ready_method).remote() if self._ready_method else None
        return Slot(index, generation, handle, worker_id, ready)

    def start(self, count: Optional[int] = None) -> None:
        """Start actors in the empty slots until ``count`` (default ``size``) slots are filled."""
        target = self.size if count is None else min(count, self.size)
        while len(self._slots) < target:
            self._slots.append(self._launch(len(self._slots), 0))

    def live(self) -> List[Slot]:
        """The slots whose actor is alive, by index."""
        return [s for s in self._slots if s.alive]

    @property
    def can_restart(self) -> bool:
        return self.max_restarts is None or self.restarts < self.max_restarts

    def reset_budget(self) -> None:
        """Allow ``max_restarts`` replacements again (counted in ``restarts`` from zero)."""
        self.restarts = 0

    def kill(self, slot: Slot) -> None:
        """Kill ``slot``'s actor (if not yet done) and mark it dead; its slot stays until ``replace``."""
        if slot.alive:
            slot.alive = False
            try:
                ray.kill(slot.handle, no_restart=True)
            except Exception as exc:   # the actor is already gone: nothing left to kill
                logger.debug("killing %s: %s: %s", slot.worker_id, type(exc).__name__, exc)

    def replace(self, slot: Slot, reason: str) -> Optional[Slot]:
        """``slot``'s actor is lost: kill it, and start its successor if the restart budget allows.

        Args:
            slot: the slot's current actor (a slot already replaced is left alone).
            reason: why, for the log.
        Returns:
            The new ``Slot``, or None when the budget is spent (the slot stays dead until a later call).
        """
        self.kill(slot)
        if self._slots[slot.index] is not slot:
            return None
        if not self.can_restart:
            logger.warning("worker %s lost (%s); not replaced: the restart budget (%s) is spent",
                           slot.worker_id, reason, self.max_restarts)
            return None
        self.restarts += 1
        new = self._slots[slot.index] = self._launch(slot.index, slot.generation + 1)
        logger.info("worker %s lost (%s); replaced by %s (restart %d of %s)", slot.worker_id, reason,
                       new.worker_id, self.restarts, "unlimited" if self.max_restarts is None else self.max_restarts)
        return new

    def shutdown(self) -> None:
        """Kill every actor."""
        for slot in self._slots:
            self.kill(slot)

"""Random stage inputs, one array per shape, least recently used dropped first.

Profiling thousands of stages touches a few dozen input shapes: making each once and reusing it keeps
allocation out of the measurements, and the bound keeps memory flat however many stages are measured.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Tuple

Shape = Tuple[int, ...]


class InputCache:
    """``cache(shape)`` returns ``make(shape)``, made once while it stays among the ``capacity`` newest."""

    def __init__(self, make: Callable[[Shape], Any], capacity: int):
        if capacity < 1:
            raise ValueError(f"max_cached_inputs must be at least 1, got {capacity}")
        self._make = make
        self.capacity = int(capacity)
        self._arrays: "OrderedDict[Shape, Any]" = OrderedDict()

    def __call__(self, shape: Shape) -> Any:
        arr = self._arrays.get(shape)
        if arr is not None:
            self._arrays.move_to_end(shape)
            return arr
        arr = self._make(shape)
        self._arrays[shape] = arr
        while len(self._arrays) > self.capacity:
            self._arrays.popitem(last=False)
        return arr

    def __len__(self) -> int:
        return len(self._arrays)

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached arrays (numpy or CuPy)."""
        return sum(int(a.nbytes) for a in self._arrays.values())

"""Options of the IOS search space: which stage strategies are allowed and how they are pruned.

Built once at the entry point (CLI, ``optimize``) and passed down to enumeration and the DP.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class OptType(enum.Enum):
    """Which strategies a stage may use (IOS's ``opt_type``)."""

    PARALLEL = "dp_parallel"              # concurrent execution of groups
    MERGE = "dp_merge"                    # operator merge (single-op stages are still allowed)
    PARALLEL_MERGE = "dp_parallel_merge"  # both

    @property
    def parallel(self) -> bool:
        return self is not OptType.MERGE

    @property
    def merge(self) -> bool:
        return self is not OptType.PARALLEL


@dataclass(frozen=True)
class SpaceOptions:
    """Pruning of the state space (the IOS paper's r and s, and the part size).

    Attributes:
        opt_type: allowed strategies; a string such as ``"dp_parallel"`` is converted to ``OptType``.
        max_group_size: r, the most operators in one group (one stream) of a concurrent stage.
        max_num_groups: s, the most groups (streams) in one concurrent stage.
        max_part_size: blocks with more operators are split into consecutive parts of this size,
            each solved on its own (the state space is exponential in a part's width).
    """

    opt_type: OptType = OptType.PARALLEL_MERGE
    max_group_size: int = 3
    max_num_groups: int = 8
    max_part_size: int = 50

    def __post_init__(self):
        opt = self.opt_type
        if not isinstance(opt, OptType):
            try:
                opt = OptType(opt)
            except ValueError:
                raise ValueError(f"opt_type must be one of {[o.value for o in OptType]}, got {opt!r}") from None
            object.__setattr__(self, "opt_type", opt)
        for name in ("max_group_size", "max_num_groups", "max_part_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SpaceOptions.{name} must be a positive int, got {value!r}")

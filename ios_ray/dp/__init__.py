"""The dynamic program: optimal stage lists from an enumerated state space and stage costs (pure)."""
from .floor import block_critical_path, critical_path_floor
from .solve import MissingCostError, NoFeasibleScheduleError, Solution, solve, solve_part

__all__ = ["MissingCostError", "NoFeasibleScheduleError", "Solution", "block_critical_path", "critical_path_floor",
           "solve", "solve_part"]

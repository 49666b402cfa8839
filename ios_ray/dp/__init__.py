"""The dynamic program: optimal stage lists from an enumerated state space and stage costs (pure)."""
from .solve import MissingCostError, NoFeasibleScheduleError, Solution, solve, solve_part

__all__ = ["MissingCostError", "NoFeasibleScheduleError", "Solution", "solve", "solve_part"]

"""Size and speed of the IOS state space and DP on the paper's networks (one process, one core).

For each model: operators, parts, width (largest antichain of a part; most groups in one candidate
stage), DP states, transitions, stages by identity, distinct stage keys (what must be measured), and
the time to enumerate the space and to run the DP on random stage costs. Prints a table and writes
``benchmarks/results/space.json``.

The original IOS counts differently (``as_original``): its states leave out each part's empty state, and
with both strategies (``dp_parallel_merge``) it takes each one-operator stage twice, as a "merge" of one
operator and as a parallel stage, in its transitions and in the stages it measures.

    python benchmarks/space.py [--models inception_v3 randwire nasnet squeezenet] [--r 3 --s 8 --part 50]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time
from pathlib import Path

import numpy as np

from ios_ray.dp import solve
from ios_ray.models import get_model
from ios_ray.space.enumerate import enumerate_graph
from ios_ray.space.options import OptType, SpaceOptions
from ios_ray.space.parts import graph_parts, part_width

DEFAULT_MODELS = ("inception_v3", "randwire", "nasnet", "squeezenet")


def random_cost(key: str) -> float:
    """A reproducible stand-in latency in [1, 10) per key."""
    h = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return 1.0 + 9.0 * int.from_bytes(h, "big") / 2 ** 64


def single_operator_transitions(space) -> int:
    """Transitions whose stage is one operator alone."""
    total = 0
    for part in (p for block in space.blocks for p in block):
        single = np.array([len(g) == 1 and g[0] & (g[0] - 1) == 0 for g in part.stage_groups], dtype=bool)
        total += int(single[part.stage_index].sum()) if len(single) else 0
    return total


def run_model(name: str, opts: SpaceOptions) -> dict:
    graph = get_model(name)
    parts = [p for block in graph_parts(graph, opts) for p in block]
    width = max(part_width(p) for p in parts)
    t0 = time.perf_counter()
    space = enumerate_graph(graph, opts)
    t1 = time.perf_counter()
    cost = {k: random_cost(k) for k in space.specs}
    t2 = time.perf_counter()
    solution = solve(space, cost)
    t3 = time.perf_counter()
    c = space.counts
    both = opts.opt_type is OptType.PARALLEL_MERGE  # the original counts one-operator stages twice
    return {"model": name, "operators": graph.num_operators(), "parts": len(parts), "width": width,
            "max_groups": c.max_groups, "states": c.states, "states_as_original": c.states - len(parts),
            "transitions": c.transitions,
            "transitions_as_original": c.transitions + (single_operator_transitions(space) if both else 0),
            "unique_stages": c.unique_stages, "stage_identities": c.stage_identities,
            "stage_identities_as_original": c.stage_identities + (graph.num_operators() if both else 0),
            "enumerate_s": round(t1 - t0, 3), "dp_s": round(t3 - t2, 3), "stages_in_solution": solution.num_stages}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    ap.add_argument("--opt-type", default=OptType.PARALLEL_MERGE.value, choices=[o.value for o in OptType])
    ap.add_argument("--r", type=int, default=3, help="max operators per group")
    ap.add_argument("--s", type=int, default=8, help="max groups per stage")
    ap.add_argument("--part", type=int, default=50, help="max operators per part")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "space.json"))
    args = ap.parse_args()
    opts = SpaceOptions(args.opt_type, max_group_size=args.r, max_num_groups=args.s, max_part_size=args.part)
    header = (f"{'model':<13}{'ops':>5}{'parts':>6}{'width':>6}{'groups':>7}{'states':>9}{'(orig.)':>9}"
              f"{'transitions':>12}{'(orig.)':>12}{'identities':>11}{'(orig.)':>9}{'keys':>9}{'enum s':>8}"
              f"{'DP s':>7}")
    print(f"opt_type={opts.opt_type.value} r={opts.max_group_size} s={opts.max_num_groups} "
          f"part={opts.max_part_size}\n{header}")
    rows = []
    for name in args.models:
        row = run_model(name, opts)
        rows.append(row)
        print(f"{row['model']:<13}{row['operators']:>5}{row['parts']:>6}{row['width']:>6}{row['max_groups']:>7}"
              f"{row['states']:>9,}{row['states_as_original']:>9,}{row['transitions']:>12,}"
              f"{row['transitions_as_original']:>12,}{row['stage_identities']:>11,}"
              f"{row['stage_identities_as_original']:>9,}{row['unique_stages']:>9,}{row['enumerate_s']:>8.2f}"
              f"{row['dp_s']:>7.2f}", flush=True)
    total = sum(r["enumerate_s"] + r["dp_s"] for r in rows)
    print(f"total enumeration + DP: {total:.1f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"options": {"opt_type": opts.opt_type.value, "max_group_size": opts.max_group_size,
                                           "max_num_groups": opts.max_num_groups,
                                           "max_part_size": opts.max_part_size},
                               "python": platform.python_version(), "machine": platform.machine(),
                               "rows": rows, "total_s": round(total, 2)}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Build the original IOS's model files on ios_ray, changing only their import line.

    python benchmarks/ios_compat.py --ios-repo PATH [--models inception_v3 randwire squeezenet nasnet]

For each model, the file ``PATH/python/ios/models/<model>.py`` (or ``PATH/python/models/<model>.py``, the
repository's older layout) is read, its import of the original package (``from .common import *``,
``import ios``, ``from ios... import``) is rewritten to ios_ray's, and it runs as a module whose
``__file__`` is the original file (RandWire reads its stored graphs next to it). Its builder is called
and the script prints the operators, blocks and explicit parts of the network, its DP states at
r=3, s=8 (ours, and as the original counts them: without each part's empty state), and whether it is
node for node the zoo's network (``ios_ray.models.get_model``; names aside). The exit status is 1 when
a state count differs from the original's. Nothing of the original is copied.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
import types
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from ios_ray.graph import Graph
from ios_ray.models import get_model
from ios_ray.space.options import SpaceOptions
from ios_ray.space.parts import graph_parts, part_states

# model file -> (its builder function, the zoo's name)
MODELS: Dict[str, Tuple[str, str]] = {
    "inception_v3": ("inception_v3", "inception_v3"),
    "randwire": ("randwire_large", "randwire"),
    "squeezenet": ("squeezenet", "squeezenet"),
    "nasnet": ("nasnet_large", "nasnet"),
}
# the original's states at r=3, s=8 (its DP run in pure Python with a random cost model)
ORIGINAL_STATES = {"inception_v3": 1206, "randwire": 14734, "squeezenet": 78, "nasnet": 42966}

# the original's modules whose counterparts live elsewhere in ios_ray (others keep their name: ios.X -> ios_ray.X)
MODULES = {"ios.ir": "ios_ray.models.common", "ios.visualizer": "ios_ray.draw", "ios.contrib": "ios_ray",
           "ios.contrib.ios_runtime": "ios_ray.ios_runtime"}
IMPORTS = [  # (pattern of one import line, its replacement)
    (re.compile(r"^from \.common import \*\s*$"), lambda m: "from ios_ray.models.common import *"),
    (re.compile(r"^import ios\s*$"), lambda m: "import ios_ray as ios"),
    (re.compile(r"^from (ios(?:\.[\w.]+)?) import (.*)$"),
     lambda m: f"from {MODULES.get(m.group(1), 'ios_ray' + m.group(1)[3:])} import {m.group(2)}"),
]


def rewrite_imports(source: str, path: Path) -> Tuple[str, List[str]]:
    """``source`` with its imports of the original package pointed at ios_ray, and the lines changed.

    Raises:
        ValueError: the file imports nothing of the original (naming the file).
    """
    lines = source.split("\n")
    changed = []
    for i, line in enumerate(lines):
        for pattern, replacement in IMPORTS:
            if pattern.match(line):
                lines[i] = pattern.sub(replacement, line)
                changed.append(f"{line.strip()}  ->  {lines[i]}")
                break
    if not changed:
        raise ValueError(f"{path}: no import of the original ios package to rewrite")
    return "\n".join(lines), changed


def model_file(repo: Path, model: str) -> Path:
    for sub in ("python/ios/models", "python/models"):
        path = repo / sub / f"{model}.py"
        if path.is_file():
            return path
    raise ValueError(f"{repo}: no {model}.py under python/ios/models or python/models")


def load_builder(path: Path, function: str) -> Tuple[Callable[[], Graph], List[str]]:
    """The builder ``function`` of the model file at ``path``, its imports rewritten."""
    source, changed = rewrite_imports(path.read_text(), path)
    module = types.ModuleType(f"ios_compat_{path.stem}")
    module.__file__ = str(path)
    exec(compile(source, str(path), "exec"), module.__dict__)
    builder = getattr(module, function, None)
    if builder is None:
        raise ValueError(f"{path}: defines no {function}()")
    return builder, changed


def structure(graph: Graph) -> list:
    """The graph's export with node names replaced by their positions: equal for the same network built
    with other names (the zoo names Inception-v3's and SqueezeNet's nodes its own way)."""
    position = {n.name: str(i) for i, n in enumerate(graph.nodes())}

    def renamed(obj):
        if isinstance(obj, dict):
            return {k: renamed(v) for k, v in obj.items() if k != "hint_name"}
        if isinstance(obj, list):
            return [renamed(v) for v in obj]
        return position.get(obj, obj) if isinstance(obj, str) else obj

    config = graph.export_config()
    return renamed([config["input"], config["blocks"]])


def difference(mine: list, zoo: list) -> str:
    """'yes' for equal structures, else where they first differ."""
    if mine == zoo:
        return "yes"
    mine_blocks, zoo_blocks = mine[1], zoo[1]
    if len(mine_blocks) != len(zoo_blocks):
        return f"no: {len(mine_blocks)} vs {len(zoo_blocks)} blocks"
    for bi, (a, b) in enumerate(zip(mine_blocks, zoo_blocks)):
        for ni, (x, y) in enumerate(zip(a["nodes"], b["nodes"])):
            if x != y:
                keys = sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))
                return f"no: block {bi} node {ni} ({x.get('type')}) differs in {', '.join(keys)}"
    return "no: the input or a block's node count differs"


def original_states(graph: Graph, opts: SpaceOptions) -> Tuple[int, int]:
    """(our state count, the parts): the original counts each part's states less its empty one."""
    parts = [p for block in graph_parts(graph, opts) for p in block]
    return sum(len(part_states(p)) for p in parts), len(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ios-repo", required=True, type=Path, help="a checkout of mit-han-lab/inter-operator-scheduler")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = ap.parse_args()
    opts = SpaceOptions(max_group_size=3, max_num_groups=8, max_part_size=50)
    failures = 0
    print(f"{'model':<13}{'ops':>5}{'blocks':>7}{'parts':>6}{'states':>8}{'as original':>12}{'original':>10}"
          f"{'same as zoo':>12}{'build s':>9}")
    for model in args.models:
        function, zoo_name = MODELS[model]
        path = model_file(args.ios_repo, model)
        builder, changed = load_builder(path, function)
        t0 = time.perf_counter()
        graph = builder()
        seconds = time.perf_counter() - t0
        states, parts = original_states(graph, opts)
        same = difference(structure(graph), structure(get_model(zoo_name)))
        failures += states - parts != ORIGINAL_STATES[model]
        print(f"{model:<13}{graph.num_operators():>5}{len(graph.blocks):>7}{parts:>6}{states:>8,}"
              f"{states - parts:>12,}{ORIGINAL_STATES[model]:>10,}{same.split(':')[0]:>12}{seconds:>9.2f}")
        for line in changed:
            print(f"    {path.name}: {line}")
        if same != "yes":
            print(f"    zoo's {zoo_name}: {same}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

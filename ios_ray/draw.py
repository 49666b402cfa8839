"""``draw``: the graph, and its schedule when it has one, as an SVG image (the original's ``ios.draw``).

Data flow: Graph -> each node's row (its longest path from the input) and column (rows ordered by the
mean column of their inputs, one pass from the top) -> boxes labelled with type, name, output shape
and, with a schedule, stage and group, filled with one colour per stage -> edges from each input to
its reader -> an SVG file. Plain text output, so no system packages are needed (the original drew
with Graphviz).
"""
from __future__ import annotations

import html
import warnings
from pathlib import Path
from typing import Dict, List, Tuple

from .graph.compound import Sequential
from .graph.ir import Graph, Node, topo_order

BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 170, 70, 24, 34, 20
PALETTE = ("#fae3c6", "#b9f2df", "#dceffc", "#f5f5c8", "#f3cfc0", "#e3c9a8", "#c9f29b", "#fbb4ae", "#e8b2c8",
           "#d9c79a", "#a8d8a8", "#d6b7ec", "#f7a6a6", "#ffe08a")
INPUT_COLOUR = "#e6e6e6"


def _rows(graph: Graph) -> List[List[Node]]:
    """Nodes by longest path from the input; each row ordered by the mean column of its inputs."""
    depth: Dict[int, int] = {id(graph.input): 0}
    for block in graph.blocks:  # a block reads only itself and its enter node, the previous block's exit
        for node in topo_order(block):
            depth[id(node)] = 1 + max(depth[id(p)] for p in node.input_nodes())
    rows: List[List[Node]] = [[] for _ in range(max(depth.values()) + 1)]
    for node in graph.nodes():
        rows[depth[id(node)]].append(node)
    column: Dict[int, float] = {}
    for row in rows:
        def mean_input_column(n: Node) -> float:
            cols = [column[id(p)] for p in n.input_nodes() if id(p) in column]
            return sum(cols) / len(cols) if cols else 0.0
        row.sort(key=mean_input_column)  # stable: ties keep creation order
        for i, node in enumerate(row):
            column[id(node)] = i - (len(row) - 1) / 2
    return rows


def _schedule(graph: Graph) -> Dict[int, Tuple[int, int]]:
    """node id -> (stage number over the whole graph, group number), when every block has a schedule."""
    if not graph.has_schedule():
        return {}
    where: Dict[int, Tuple[int, int]] = {}
    number = 0
    for block in graph.blocks:
        by_name = {n.name: n for n in block.nodes}
        for stage in block.stages:
            number += 1
            for gi, group in enumerate(stage.groups):
                for name in group:
                    where[id(by_name[name])] = (number, gi + 1)
    return where


def _kind(node: Node) -> str:
    """The operator's type with what tells it apart: kernel and stride, pool or element-wise op type."""
    if isinstance(node, Sequential):
        return " > ".join(_kind(n) for n in node.nodes)
    attrs = node.attrs()
    detail = attrs.get("pool_type") or attrs.get("op_type") or ""
    if "kernel" in attrs and attrs.get("pool_type") != "global_avg":
        detail += f" {attrs['kernel'][0]}x{attrs['kernel'][1]}"
        if max(attrs["stride"]) > 1:
            detail += f"/{attrs['stride'][0]}"
    return f"{node.display_type} {detail.strip()}".strip()


def _label(node: Node, place) -> List[str]:
    kind = _kind(node)
    lines = [kind, f"{node.name}" + (f" [{node.hint_name}]" if node.hint_name not in (None, node.name) else ""),
             "x".join(str(d) for d in node.output_shape)]
    if place is not None:
        lines.append(f"stage {place[0]}, group {place[1]}")
    return lines


def draw(graph: Graph, fname: str, label: str = "") -> str:
    """Write ``graph`` as an SVG image: operators as boxes, one colour per stage when it is scheduled.

    Args:
        graph: a checked Graph (shapes set), with or without a schedule.
        fname: the file to write; another suffix than ``.svg`` (the original wrote ``.png``) is
            replaced by ``.svg``, with a warning.
        label: a caption drawn under the graph.
    Returns:
        The path written.
    Raises:
        ValueError: ``graph`` is not a Graph.
    """
    if not isinstance(graph, Graph):
        raise ValueError(f"draw needs a Graph, got {type(graph).__name__}")
    path = Path(fname)
    if path.suffix.lower() != ".svg":
        path = path.with_suffix(".svg")
        warnings.warn(f"draw writes SVG: {fname} -> {path}", stacklevel=2)
    rows = _rows(graph)
    places = _schedule(graph)
    widest = max(len(r) for r in rows)
    width = 2 * MARGIN + widest * BOX_W + (widest - 1) * GAP_X
    height = 2 * MARGIN + len(rows) * BOX_H + (len(rows) - 1) * GAP_Y + (24 if label else 0)
    centre: Dict[int, Tuple[float, float]] = {}
    for r, row in enumerate(rows):
        for i, node in enumerate(row):
            x = width / 2 + (i - (len(row) - 1) / 2) * (BOX_W + GAP_X)
            centre[id(node)] = (x, MARGIN + r * (BOX_H + GAP_Y) + BOX_H / 2)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'font-family="sans-serif" font-size="11">',
           '<defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="6" markerHeight="6" '
           'orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#555"/></marker></defs>']
    for node in graph.nodes():
        x2, y2 = centre[id(node)]
        for ti, term in enumerate(node.inputs):
            for v in term:
                x1, y1 = centre[id(v.node)]
                whole = v.begin == 0 and v.end == v.node.output_shape[0]
                tip = f"[{v.begin}:{v.end}] term {ti}"
                out.append(f'<path d="M{x1:.1f},{y1 + BOX_H / 2:.1f} C{x1:.1f},{y1 + BOX_H:.1f} {x2:.1f},'
                           f'{y2 - BOX_H:.1f} {x2:.1f},{y2 - BOX_H / 2:.1f}" fill="none" stroke="#555" '
                           f'marker-end="url(#arrow)"><title>{tip}</title></path>')
                if not whole:
                    out.append(f'<text x="{(x1 + x2) / 2:.1f}" y="{(y1 + y2) / 2:.1f}" fill="#a33" '
                               f'text-anchor="middle">[{v.begin}:{v.end}]</text>')
    for node in graph.nodes():
        x, y = centre[id(node)]
        place = places.get(id(node))
        fill = INPUT_COLOUR if place is None else PALETTE[(place[0] - 1) % len(PALETTE)]
        out.append(f'<rect x="{x - BOX_W / 2:.1f}" y="{y - BOX_H / 2:.1f}" width="{BOX_W}" height="{BOX_H}" '
                   f'rx="8" fill="{fill}" stroke="#333"><title>{html.escape(node.display())}</title></rect>')
        for li, text in enumerate(_label(node, place)):
            weight = ' font-weight="bold"' if li == 0 else ""
            out.append(f'<text x="{x:.1f}" y="{y - BOX_H / 2 + 16 + 15 * li:.1f}" text-anchor="middle"{weight}>'
                       f'{html.escape(text)}</text>')
    if label:
        out.append(f'<text x="{width / 2:.1f}" y="{height - MARGIN:.1f}" text-anchor="middle" font-size="14">'
                   f'{html.escape(label)}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")
    return str(path)


__all__ = ["draw"]

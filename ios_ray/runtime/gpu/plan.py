"""Buffer planning for the GPU runtime: where every node's output lives (pure, no CUDA).

Data flow::

    nodes in execution order + external nodes --plan_buffers--> BufferPlan
        storages: one (C, H, W) buffer per root, allocated once per (program, batch size)
        locations: node name -> Loc(storage, channel offset, channels)
        in_place: names of Identity nodes whose every term already sits where the output goes

Concatenation at zero cost: when an Identity node concatenates whole outputs of other nodes, those
producers are *placed* inside the Identity's buffer at their channel offsets, so they write their
output straight into the slice the concat would have copied it to. Nested concats nest their
placements. A producer is placed at most once (the last concat in execution order wins); the graph
input and external nodes are never placed (they are fed, not computed).

A placement a cuDNN writer cannot honour is undone: cuDNN assumes 16-byte aligned tensors, so a Conv or
SepConv is only placed where its slice's start is a multiple of 4 floats. With more than one image a
cuDNN writer is never placed: its output would be strided by the concat's batch stride, and cuDNN's
kernels for such outputs are far slower than for the packed ones the profiler measures (H200,
Inception-v3 batch 16, strict fp32: 13.75 ms placed vs 9.47 ms packed, ``benchmarks/gap_probe.py``).
Our own kernels read and write any channel slice.

``input_slice`` tells a consumer whether its whole input (all terms) is one contiguous channel range
of one storage, which it can then read in place instead of gathering a copy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

from ...graph.compound import Sequential
from ...graph.ir import Conv, Identity, Node, SepConv, Shape

ALIGN_FLOATS = 4  # cuDNN's 16-byte alignment, in float32 elements


@dataclass(frozen=True)
class Loc:
    """A channel range ``[offset, offset + channels)`` of storage ``storage``."""
    storage: int
    offset: int
    channels: int


@dataclass(frozen=True)
class BufferPlan:
    storages: Tuple[Shape, ...]            # (C, H, W) of each storage, batch excluded
    locations: Dict[str, Loc]              # node name -> where its output lives
    in_place: FrozenSet[str]               # Identity nodes with nothing left to copy
    owners: Tuple[str, ...]                # the node whose output is storage i's root

    def loc(self, node: Node) -> Loc:
        try:
            return self.locations[node.name]
        except KeyError:
            raise KeyError(f"{node.display()} has no planned buffer (is it part of the program?)") from None


def _needs_alignment(node: Node) -> bool:
    """Writers whose output pointer goes to cuDNN (a Sequential's is its last inner node's)."""
    if isinstance(node, Sequential):
        return _needs_alignment(node.nodes[-1])
    return isinstance(node, (Conv, SepConv))


def aligned(offset: int, storage_channels: int, hw: int, batch_size: int) -> bool:
    """Whether a slice starting at channel ``offset`` is 16-byte aligned for every image of the batch."""
    if (offset * hw) % ALIGN_FLOATS:
        return False
    return batch_size == 1 or (storage_channels * hw) % ALIGN_FLOATS == 0


def cudnn_reads_in_place(offset: int, channels: int, storage_channels: int, hw: int, batch_size: int,
                         strided: bool = False) -> bool:
    """Whether cuDNN may read a channel slice in place: 16-byte aligned, and with more than one image only the
    whole storage unless ``strided`` reads are allowed. A part of a storage is strided by the storage's batch
    stride there, and the stages the DP measures read a merged conv's parts as the unmerged convs' own packed
    outputs. On one H200 at batch 16 (Inception-v3, ``benchmarks/gpu_latency.py``, one run each), a packed
    copy (our kernel) first took strict fp32's IOS-Merge from 10.184 to 9.286 ms (predicted 9.1) and
    IOS-Both from 8.161 to 7.911 ms, but TF32's IOS-Merge from 3.907 to 4.022 ms: the GPU runtime allows
    strided reads with TF32 (``Program``)."""
    if not aligned(offset, storage_channels, hw, batch_size):
        return False
    return batch_size == 1 or strided or channels == storage_channels


def _placements(order: Sequence[Node], fed: FrozenSet[int]) -> Dict[int, Tuple[Node, int]]:
    """producer id -> (the Identity node it is placed in, channel offset in that Identity's output)."""
    parent: Dict[int, Tuple[Node, int]] = {}
    for node in reversed(order):
        if not isinstance(node, Identity):
            continue
        counts: Dict[int, int] = {}
        for term in node.inputs:
            for v in term:
                counts[id(v.node)] = counts.get(id(v.node), 0) + 1
        offset = 0
        terms = node.inputs
        i = 0
        while i < len(terms):
            v = terms[i][0]
            span = _tiling(terms, i)   # terms i.. that are v.node's output in order, whole (a merged conv's parts)
            if (span and id(v.node) not in fed and id(v.node) not in parent and counts[id(v.node)] == span
                    and v.node is not node):
                parent[id(v.node)] = (node, offset)
            step = max(span, 1)
            offset += sum(t[0].length for t in terms[i:i + step])
            i += step
    return parent


def _tiling(terms, i: int) -> int:
    """How many terms from ``i`` on are single values that lay one producer's whole output back to back in
    its channel order (1 for a whole output; k for a merged conv whose k parts are concatenated in order, so
    that it writes the concat at no cost, as its unmerged convs did), or 0."""
    v = terms[i][0]
    end, j = 0, i
    while j < len(terms) and len(terms[j]) == 1 and terms[j][0].node is v.node and terms[j][0].begin == end:
        end = terms[j][0].end
        j += 1
        if end == v.node.output_shape[0]:
            return j - i
    return 0


def plan_buffers(order: Sequence[Node], external: Sequence[Node], batch_size: int,
                 place_external: bool = False) -> BufferPlan:
    """Plan the storages of a program that runs ``order`` (a dependency order) fed by ``external``.

    Args:
        order: every node the program computes, producers before consumers.
        external: nodes whose outputs are inputs of the program (placeholders, or a stage's producers).
        batch_size: the batch, which decides whether batch strides must be aligned too.
        place_external: with one image, externals may be placed in a concat like producers (where a
            cuDNN writer could be: aligned), as the runtime places the nodes they stand for.
    Returns:
        The BufferPlan; every node of ``external`` and ``order`` has a location.
    Raises:
        ValueError: a node without a shape, or a node listed twice.
    """
    nodes = list(external) + list(order)
    seen = set()
    for n in nodes:
        if n.output_shape is None:
            raise ValueError(f"{n.display()} has no shape; check the graph before planning buffers")
        if id(n) in seen:
            raise ValueError(f"{n.display()} appears twice in the program")
        seen.add(id(n))
    placeable = place_external and batch_size == 1
    fed = frozenset() if placeable else frozenset(id(n) for n in external)
    parent = _placements(order, fed)
    external_ids = frozenset(id(n) for n in external)

    def resolve(node: Node) -> Tuple[Node, int]:
        """The root node whose storage holds ``node``, and ``node``'s channel offset in it."""
        offset = 0
        while id(node) in parent:
            node, off = parent[id(node)]
            offset += off
        return node, offset

    # undo placements cuDNN cannot write into; undoing one can move others' roots, so repeat
    changed = True
    while changed:
        changed = False
        for n in nodes:
            if id(n) not in parent or not (_needs_alignment(n) or id(n) in external_ids):
                continue
            root, offset = resolve(n)
            _, h, w = n.output_shape
            if batch_size > 1 or not aligned(offset, root.output_shape[0], h * w, batch_size):
                del parent[id(n)]
                changed = True

    storages: List[Shape] = []
    owners: List[str] = []
    root_index: Dict[int, int] = {}
    locations: Dict[str, Loc] = {}
    for n in nodes:
        root, offset = resolve(n)
        if id(root) not in root_index:
            root_index[id(root)] = len(storages)
            storages.append(tuple(root.output_shape))
            owners.append(root.name)
        locations[n.name] = Loc(root_index[id(root)], offset, n.output_shape[0])

    in_place = set()
    for n in order:
        if isinstance(n, Identity) and all(len(t) == 1 and id(t[0].node) in parent and parent[id(t[0].node)][0] is n
                                           for t in n.inputs):
            in_place.add(n.name)
    return BufferPlan(tuple(storages), locations, frozenset(in_place), tuple(owners))


def term_locs(node: Node, plan: BufferPlan) -> List[List[Loc]]:
    """Each input term of ``node`` as the Locs of its values (channel slices applied)."""
    out = []
    for term in node.inputs:
        locs = []
        for v in term:
            base = plan.loc(v.node)
            locs.append(Loc(base.storage, base.offset + v.begin, v.length))
        out.append(locs)
    return out


def input_slice(node: Node, plan: BufferPlan) -> Optional[Loc]:
    """The one contiguous Loc holding ``node``'s whole input, or None when it must be gathered.

    That is the case when every term is a single value and the terms sit back to back, in order, in
    one storage.
    """
    terms = term_locs(node, plan)
    if any(len(t) != 1 for t in terms):
        return None
    first = terms[0][0]
    end = first.offset + first.channels
    for t in terms[1:]:
        loc = t[0]
        if loc.storage != first.storage or loc.offset != end:
            return None
        end += loc.channels
    return Loc(first.storage, first.offset, end - first.offset)

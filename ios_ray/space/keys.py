"""Spec keys of candidate stages, computing each distinct ``StageSpec`` once.

Data flow: groups of nodes (from the enumerator) -> a cheap structural signature -> ``stage_spec`` (only
for a signature not seen before) -> ``.key``.

``stage_spec`` orders groups by ``group_signature`` (stably) and numbers external inputs by first use in
that order. The structural signature here is exactly what that produces: the sorted group signatures
(op types, attributes, shapes, group-local wiring and externals by shape) plus the sequence of external
indices. It determines the spec, so two stages with the same signature get the same key without
building, serialising and hashing the spec again. Nodes of other blocks and parts share signatures, so
repeated cells (NASNet, RandWire) are specced once.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from ..graph.ir import Node
from ..graph.schedule import Strategy
from .stage import StageSpec, group_signature, stage_spec

# (signature text, identities of the external producers in the order stage_spec meets them)
GroupInfo = Tuple[str, Tuple[int, ...]]


def group_info(group: Sequence[Node]) -> GroupInfo:
    """Signature and external producers of one group (nodes in run order)."""
    members = {id(n) for n in group}
    ext = tuple(id(v.node) for n in group for term in n.inputs for v in term if id(v.node) not in members)
    return group_signature(group), ext


class StageKeyer:
    """Computes and caches spec keys; ``specs`` collects one ``StageSpec`` per distinct key.

    One instance serves one enumeration call (it holds node identities, so it must not outlive the
    graph it was used on).
    """

    def __init__(self) -> None:
        self.specs: Dict[str, StageSpec] = {}
        self._by_structure: Dict[tuple, str] = {}

    def parallel_key(self, infos: Sequence[GroupInfo], groups: Sequence[Sequence[Node]]) -> str:
        """Key of running ``groups`` concurrently; ``infos[i]`` is ``group_info(groups[i])``."""
        order = sorted(range(len(infos)), key=lambda i: infos[i][0])
        numbering: Dict[int, int] = {}
        seq: List[int] = []
        for i in order:
            for producer in infos[i][1]:
                idx = numbering.get(producer)
                if idx is None:
                    idx = numbering[producer] = len(numbering)
                seq.append(idx)
        structure = (tuple(infos[i][0] for i in order), tuple(seq))
        key = self._by_structure.get(structure)
        if key is None:
            key = self._add(stage_spec(groups, Strategy.PARALLEL))
            self._by_structure[structure] = key
        return key

    def merge_key(self, infos: Sequence[GroupInfo], convs: Sequence[Node]) -> str:
        """Key of merging ``convs`` (which read one input value) into one conv."""
        # the merged conv depends only on the multiset of member convs (all read the same value)
        structure = ("merge", tuple(sorted(info[0] for info in infos)))
        key = self._by_structure.get(structure)
        if key is None:
            key = self._add(stage_spec([[c] for c in convs], Strategy.MERGE))
            self._by_structure[structure] = key
        return key

    def _add(self, spec: StageSpec) -> str:
        key = spec.key
        self.specs.setdefault(key, spec)
        return key

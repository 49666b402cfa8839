"""Spec keys of candidate stages without building a ``StageSpec`` per stage.

Data flow: a group of nodes -> ``GroupTemplate`` (once per group) -> per stage: sort the templates,
number the externals -> structural signature -> (first time only) canonical JSON -> blake2b key.

``stage_spec`` orders groups by ``group_signature`` (stably) and numbers external inputs by first use in
that order; ``StageSpec.key`` hashes the canonical JSON. A group's JSON is the same in every stage
except for the numbers of its externals, so it is kept as fragments around those numbers and the
stage's JSON is assembled from them: byte for byte what ``StageSpec.canonical_json`` gives (the tests
compare every key with ``stage_spec(...).key``). The structural signature (sorted group signatures plus
the external numbering) determines the JSON, so a stage whose signature was seen gets its key from a
dict lookup: repeated cells (NASNet, RandWire) are hashed once.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from operator import attrgetter
from typing import Dict, List, Sequence, Tuple

from ..graph.ir import Node
from ..graph.schedule import Strategy
from .stage import encode_json, group_records, group_signature, stage_json, stage_key, stage_spec

_SLOT = "\x00ext\x00"                     # stands for an external's number while building a template
_SLOT_JSON = json.dumps(_SLOT)            # how it appears in the JSON text


@dataclass(frozen=True)
class GroupTemplate:
    """One group's part of a stage's spec.

    Attributes:
        signature: ``group_signature`` of the group (the sort key of groups in a stage).
        producers: identity of the producer of each external reference, in JSON order.
        shapes: JSON of each producer's output shape (parallel to ``producers``).
        form: the group's JSON as a ``str.format`` pattern with one ``{}`` per external number.
    """

    signature: str
    producers: Tuple[int, ...]
    shapes: Tuple[str, ...]
    form: str


def group_template(group: Sequence[Node]) -> GroupTemplate:
    """Template of ``group`` (its nodes in run order), following ``stage_spec``'s construction."""
    producers: List[int] = []
    shapes: List[str] = []

    def slot(producer: Node) -> tuple:
        producers.append(id(producer))
        shapes.append(encode_json(list(producer.output_shape)))
        return "e", _SLOT

    ops = [r.to_json() for r in group_records(group, slot)]
    fragments = tuple(encode_json(ops).split(_SLOT_JSON))
    if len(fragments) != len(producers) + 1:  # a node attribute happened to contain the marker
        raise ValueError(f"group {[n.display() for n in group]}: cannot template its JSON")
    form = "{}".join(f.replace("{", "{{").replace("}", "}}") for f in fragments)
    return GroupTemplate(group_signature(group), tuple(producers), tuple(shapes), form)


class StageKeyer:
    """Keys of PARALLEL and MERGE stages, with a cache by structural signature.

    One instance serves one enumeration (it identifies externals by ``id(node)``, so it must not
    outlive the graph).
    """

    def __init__(self) -> None:
        self._by_structure: Dict[tuple, str] = {}
        self._shape: Dict[int, str] = {}                    # producer -> JSON of its output shape
        self._filled: Dict[Tuple[str, tuple], str] = {}     # (group form, its numbers) -> JSON text

    def template(self, group: Sequence[Node]) -> GroupTemplate:
        """``group_template(group)``, remembering the shapes of its externals for the JSON."""
        t = group_template(group)
        self._shape.update(zip(t.producers, t.shapes))
        return t

    def parallel_key(self, groups: Sequence[GroupTemplate]) -> str:
        """Key of ``stage_spec`` of the groups of ``groups`` in this order."""
        order = sorted(groups, key=_signature) if len(groups) > 1 else groups
        numbering: Dict[int, int] = {}   # producer -> its number, by first use
        number = numbering.setdefault
        seq = tuple([number(p, len(numbering)) for g in order for p in g.producers])
        structure = (tuple([g.signature for g in order]), seq)
        key = self._by_structure.get(structure)
        if key is None:
            key = self._by_structure[structure] = stage_key(self._stage_json(order, seq, numbering))
        return key

    def merge_key(self, groups: Sequence[GroupTemplate], convs: Sequence[Node]) -> str:
        """Key of merging ``convs`` (one-node groups ``groups``, all reading one value) into one conv."""
        # the merged conv depends only on the multiset of member convs (they read the same value)
        structure = ("merge", tuple(sorted(g.signature for g in groups)))
        key = self._by_structure.get(structure)
        if key is None:
            key = self._by_structure[structure] = stage_spec([[c] for c in convs], Strategy.MERGE).key
        return key

    def _stage_json(self, order: Sequence[GroupTemplate], seq: Sequence[int], numbering: Dict[int, int]) -> str:
        """``StageSpec.canonical_json`` of the groups in ``order`` with externals numbered ``seq``
        (``numbering`` maps each producer to its number, in first-use order)."""
        filled = self._filled
        texts = []
        k = 0
        for g in order:
            n = len(g.producers)
            numbers = seq[k:k + n]
            k += n
            text = filled.get((g.form, numbers))
            if text is None:
                text = filled[(g.form, numbers)] = g.form.format(*numbers)
            texts.append(text)
        shape = self._shape
        return stage_json(texts, [shape[p] for p in numbering])


_signature = attrgetter("signature")


"""Stage keys are a persistent format: cost tables on disk are indexed by them.

The values below were computed before the key encoding was unified into one definition
(``space.stage.op_record``); any change to them orphans every existing cost table, so a failure here
means the encoding changed, not that the pins need updating.
"""
import hashlib

import pytest

from ios_ray.graph.ir import topo_order
from ios_ray.graph.schedule import Strategy
from ios_ray.models import get_model
from ios_ray.models.sample import sample_network
from ios_ray.space.enumerate import enumerate_graph
from ios_ray.space.options import SpaceOptions
from ios_ray.space.stage import StageSpec, stage_spec
from ios_ray.space.synthetic import random_graph

SAMPLE_PARALLEL_JSON = (
    '{"groups":[[{"attrs":{"act":"relu","groups":1,"kernel":[3,3],"out_channels":375,"padding":[1,1],'
    '"stride":[1,1]},"inputs":[[["e",0,0,375]]],"output_shape":[375,15,15],"type":"conv"}],'
    '[{"attrs":{"act":"relu","groups":1,"kernel":[3,3],"out_channels":375,"padding":[1,1],"stride":[1,1]},'
    '"inputs":[[["e",0,0,375]]],"output_shape":[375,15,15],"type":"conv"}],'
    '[{"attrs":{"act":"relu","groups":1,"kernel":[3,3],"out_channels":750,"padding":[1,1],"stride":[1,1]},'
    '"inputs":[[["e",0,0,375]]],"output_shape":[750,15,15],"type":"conv"}]],"inputs":[[375,15,15]],"v":1}')

SAMPLE_CHAIN_JSON = (
    '{"groups":[[{"attrs":{"act":"relu","groups":1,"kernel":[3,3],"out_channels":375,"padding":[1,1],'
    '"stride":[1,1]},"inputs":[[["e",0,0,375]]],"output_shape":[375,15,15],"type":"conv"},'
    '{"attrs":{"act":"relu","groups":1,"kernel":[3,3],"out_channels":750,"padding":[1,1],"stride":[1,1]},'
    '"inputs":[[["o",0,0,375]]],"output_shape":[750,15,15],"type":"conv"}],'
    '[{"attrs":{"act":"relu","groups":1,"kernel":[3,3],"out_channels":750,"padding":[1,1],"stride":[1,1]},'
    '"inputs":[[["e",0,0,375]]],"output_shape":[750,15,15],"type":"conv"}]],"inputs":[[375,15,15]],"v":1}')


def digest(keys) -> str:
    return hashlib.blake2b("\n".join(sorted(keys)).encode(), digest_size=16).hexdigest()


def test_sample_network_stage_keys_are_pinned():
    by_name = sample_network().node_by_name()
    c1, c2, c3, c4, cat = (by_name[k] for k in ("conv1", "conv2", "conv3", "conv4", "concat"))
    assert stage_spec([[c1]]).key == "ab3e8c50a66ed5deb6bb7e274f194a44"
    assert stage_spec([[c1], [c2], [c3]]).canonical_json() == SAMPLE_PARALLEL_JSON
    assert stage_spec([[c1], [c2], [c3]]).key == "9089ffe18d99a40e93918889603ad5e9"
    assert stage_spec([[c1, c4], [c2]]).canonical_json() == SAMPLE_CHAIN_JSON
    assert stage_spec([[c1, c4], [c2]]).key == "c653dcdf178786086b2dff1e6c04d7f2"
    assert stage_spec([[c1], [c2], [c3]], Strategy.MERGE).key == "00c0d12115588845dd9da83c2d6cfd59"
    assert stage_spec([[cat]]).key == "c63e4a0c0e531b872513a6f5602f1d60"
    # the JSON round trip keeps the key
    spec = stage_spec([[c1, c4], [c2]])
    assert StageSpec.from_json(spec.canonical_json()).key == spec.key


@pytest.mark.parametrize("name,opts,count,want", [
    ("sample", SpaceOptions(), 19, "2db9933da7b18df2463e46f129d4d6de"),
    ("squeezenet", SpaceOptions(), 154, "0d865b4c906b95c1f661bdb6b3a0b298"),
    ("inception_v3", SpaceOptions(max_group_size=2, max_num_groups=3, max_part_size=12), 1685,
     "bde55d4e584fd35139728f833e570223"),
])
def test_enumerated_keys_of_models_are_pinned(name, opts, count, want):
    graph = sample_network() if name == "sample" else get_model(name)
    keys = list(enumerate_graph(graph, opts).specs)
    assert (len(keys), digest(keys)) == (count, want)


def test_enumerated_keys_of_random_graphs_are_pinned():
    keys = []
    for seed in range(4):
        graph = random_graph(300 + seed, 9, num_blocks=2, enter_conv=0.8)
        keys += list(enumerate_graph(graph, SpaceOptions(max_part_size=6)).specs)
    assert (len(keys), digest(keys)) == (437, "bdabb91aaf1ebebd218a5baecaf1d52f")


@pytest.mark.parametrize("name,want", [("nasnet", "3a95e7c8a81aee83df8c5b346d1b16d9"),
                                       ("randwire", "78414c6c9119ff68cef0fc87cc95f692")])
def test_single_op_and_two_group_keys_of_models_are_pinned(name, want):
    """Every op alone (sepconv, pools, element-wise included) and one two-group stage per block."""
    keys = []
    for block in get_model(name).blocks:
        order = topo_order(block)
        keys += [stage_spec([[node]]).key for node in order]
        keys.append(stage_spec([order[:3], order[3:5]]).key)
    assert digest(keys) == want

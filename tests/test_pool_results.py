"""The pool's compact result format (``distributed.results``): columns on the wire, Measurements on demand.

No Ray: a ``BatchResult`` is what a worker returns, and these tests check that it carries back exactly
the measurements it was made of, that the driver's ``PoolResults`` lets a retried key's later result
win, and that the cost table gets the same rows from it as from the measurements themselves.
"""
import math
import pickle

import pytest

from ios_ray.costs.measurement import DeviceInfo, ErrorKind, Measurement, MeasureSettings
from ios_ray.costs.table import Conditions, CostTable
from ios_ray.distributed.results import BatchResult, MeasuredBatch, PoolResults
from ios_ray.models import get_model
from ios_ray.space.enumerate import enumerate_graph
from ios_ray.space.options import SpaceOptions


def sample(keys, worker="w1"):
    """Measurements of every kind: plain, failed (each error kind), estimated, with spreads and samples."""
    kinds = [ErrorKind.NONE, ErrorKind.RUNTIME, ErrorKind.NONE, ErrorKind.WORKER_DIED, ErrorKind.UNSUPPORTED]
    out = []
    for i, key in enumerate(keys):
        kind = kinds[i % len(kinds)]
        failed = kind is not ErrorKind.NONE
        out.append(Measurement(key, math.nan if failed else 0.25 * i + 0.125, 0.01 * i, i % 7, kind,
                               f"failed {i}" if failed else "", i % 3 == 0, worker))
    return out


def same(a, b):
    """Measurements equal field by field, NaN equal to NaN."""
    def norm(m):
        return (m.key, "nan" if math.isnan(m.latency_ms) else m.latency_ms, m.spread_ms, m.samples, m.error,
                m.message, m.estimated, m.worker)
    return [norm(m) for m in a] == [norm(m) for m in b]


def test_batch_result_round_trips_through_pickle_to_the_same_measurements():
    keys = [f"k{i:02d}" for i in range(23)]
    ms = sample(keys, worker="from-the-source")
    result = pickle.loads(pickle.dumps(BatchResult.of(ms, "w3", seconds=0.5)))
    back = result.measurements(keys)
    assert same(back, [Measurement(m.key, m.latency_ms, m.spread_ms, m.samples, m.error, m.message, m.estimated,
                                   "w3") for m in ms])
    assert len(result) == 23 and result.seconds == 0.5 and len(result.errors) == 23 - 23 // 5 * 2 - 2
    with pytest.raises(ValueError, match="cannot carry 2 keys"):
        result.measurements(keys[:2])


def test_measured_batch_counts_without_building_and_builds_on_read():
    keys = [f"k{i}" for i in range(10)]
    batch = MeasuredBatch(keys, BatchResult.of(sample(keys), "w0"))
    assert len(batch) == 10 and batch.errors == 6 and not batch._built
    assert same(list(batch), sample(keys, worker="w0")) and batch[3].error is ErrorKind.WORKER_DIED


def test_pool_results_later_batch_of_a_key_wins_and_counts_follow():
    keys = [f"k{i}" for i in range(8)]
    results = PoolResults()
    results.add(MeasuredBatch(keys, BatchResult.of(sample(keys), "w0")))       # k1, k3, k4, k6 failed
    retried = [Measurement("k1", 2.0, 0.0, 3), Measurement("k3", 3.0, 0.0, 3)]
    results.add(MeasuredBatch(["k1", "k3"], BatchResult.of(retried, "w1.r1")))
    assert list(results) == keys and len(results) == 8 and "k7" in results and "x" not in results
    assert results["k1"] == Measurement("k1", 2.0, 0.0, 3, worker="w1.r1") and results.latency_ms("k3") == 3.0
    assert same([results[k] for k in ["k0", "k5"]], [sample(keys, "w0")[0], sample(keys, "w0")[5]])
    assert results.per_worker() == {"w0": 6, "w1.r1": 2}
    assert results.error_count() == 2     # k4 and k6: k1 and k3 succeeded on their retry
    assert same(dict(results).values(), [results[k] for k in keys])


def test_table_gets_the_same_rows_from_columns_as_from_measurements(tmp_path):
    specs = enumerate_graph(get_model("squeezenet"), SpaceOptions()).specs
    keys = sorted(specs)[:30]
    ms = sample(keys)
    conditions = Conditions(DeviceInfo("test:rows", "cpu", library="test"), 1, "float32", MeasureSettings())
    by_spec = {k: specs[k] for k in keys}
    direct, compact = CostTable(str(tmp_path / "direct")), CostTable(str(tmp_path / "compact"))
    direct.append(ms, by_spec, conditions)
    compact.append(MeasuredBatch(keys, pickle.loads(pickle.dumps(BatchResult.of(ms, "w1")))), by_spec, conditions)
    a, b = ([{k: "nan" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
             for row in t.read_all().drop_columns(["timestamp"]).to_pylist()] for t in (direct, compact))
    assert len(a) == 30 and a == b and sum(row["latency_ms"] == "nan" for row in a) == 18

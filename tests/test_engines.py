"""The engine book: cuDNN plan choices recorded once, read back by every process (no GPU needed)."""
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from ios_ray.costs.engines import EngineBook, engine_location
from ios_ray.costs.table import CostTable, CostTableError


def book(path, software="cudnn 9.19", dtype="float32"):
    return EngineBook(path, "NVIDIA H200", software, dtype)


def test_choices_survive_the_process_and_the_first_choice_wins(tmp_path):
    loc = engine_location(str(tmp_path / "costs"))
    a = book(loc)
    assert a.put("n1 c3", "fused:eng0") == "fused:eng0"
    assert a.flush() is not None
    assert a.flush() is None                         # nothing new
    b = book(loc)                                    # another process reads what the first chose
    assert b.get("n1 c3") == "fused:eng0"
    assert b.put("n1 c3", "fused:eng7") == "fused:eng0"   # a later different choice does not stand
    # two writers that chose differently at once: after reading both, everyone agrees on the earliest
    c, d = book(loc), book(loc)
    c.put("n1 c9", "plain:x")
    d.put("n1 c9", "plain:y")
    c.flush()
    d.flush()
    e = book(loc)
    assert e.get("n1 c9") == "plain:x"
    d.reload()
    assert d.get("n1 c9") == "plain:y"               # d keeps the choice it measured with in this process


def test_other_software_and_math_modes_are_kept_apart(tmp_path):
    loc = str(tmp_path / "eng")
    a = book(loc)
    a.put("sig", "fused:a")
    a.flush()
    assert book(loc, software="cudnn 9.20").get("sig") is None
    assert book(loc, dtype="tf32").get("sig") is None
    assert book(loc).get("sig") == "fused:a"


def test_plain_arrow_readers_of_the_cost_table_never_see_the_book(tmp_path):
    table_dir = tmp_path / "costs"
    a = book(engine_location(str(table_dir)))
    a.put("sig", "fused:a")
    a.flush()
    assert CostTable(str(table_dir)).files() == []
    assert ds.dataset(str(table_dir), format="parquet").to_table().num_rows == 0


def test_a_foreign_file_in_the_book_is_refused_and_left_alone(tmp_path):
    loc = tmp_path / "eng"
    loc.mkdir()
    foreign = loc / "part-x.parquet"
    pq.write_table(pa.table({"a": [1]}), str(foreign))
    with pytest.raises(CostTableError, match="not an engine-book file"):
        book(str(loc))
    assert foreign.exists()

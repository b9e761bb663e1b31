"""Storage: atomic Parquet writes, the start-up sweep, the state's single commit, paths."""

from __future__ import annotations

import os
import stat
from datetime import date, datetime, timezone

import duckdb
import pytest

from normalize.shopify import to_product
from storage import parquet
from storage.parquet import PartitionWriter, partition_dir
from storage.sweep import unit_files
from storage.paths import UnitId
from storage.recovery import recover
from storage.state import KnownVersions, ProviderState, state_path
from tests.conftest import load_fixture

RUN = "20261127T120000Z-abcdef"
UNIT = UnitId("shopify", "a.myshopify.com")
DAY = date(2026, 11, 27)


def products(n: int):
    raw = load_fixture("shopify", "product.json")
    out = []
    for i in range(n):
        record = {**raw, "id": f"gid://shopify/Product/{i}"}
        out.append(to_product(record, account="a.myshopify.com", fetched_at=datetime.now(timezone.utc), run_id=RUN))
    return out


def duckdb_count(data_dir) -> int:
    glob = f"{data_dir}/normalized/**/*.parquet"
    return duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning=true, union_by_name=true)").fetchall()[0][0]


def test_write_is_atomic_fsynced_and_has_the_configured_mode(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    writer = PartitionWriter(tmp_path, UNIT, RUN, DAY, 0o640)
    writer.add(products(3))
    [path] = writer.close()
    assert calls == ["fsync", "replace", "fsync"]  # file, rename, directory
    full = tmp_path / path
    assert full.name == f"a.myshopify.com_{RUN}-0001.parquet"
    assert stat.S_IMODE(full.stat().st_mode) == 0o640
    assert duckdb_count(tmp_path) == 3


def test_a_crash_mid_write_leaves_no_visible_file_and_readers_still_work(tmp_path, monkeypatch):
    first = PartitionWriter(tmp_path, UNIT, RUN, DAY, 0o640)
    first.add(products(2))
    first.close()

    def crash(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    second = PartitionWriter(tmp_path, UNIT, "20261127T130000Z-000001", DAY, 0o640)
    second.add(products(5))
    with pytest.raises(OSError):
        second.close()
    assert duckdb_count(tmp_path) == 2
    assert [p.name for p in unit_files(tmp_path, UNIT)] == [f"a.myshopify.com_{RUN}-0001.parquet"]


def test_a_killed_run_leaves_staging_and_orphans_that_readers_skip_and_recovery_removes(tmp_path):
    # Committed data from an earlier run.
    state = ProviderState.open(state_path(tmp_path, UNIT))
    done = PartitionWriter(tmp_path, UNIT, RUN, DAY, 0o640)
    batch = products(4)
    state.keep_changed([(p.source_id, p.raw_hash) for p in batch])
    done.add(batch)
    state.commit(RUN, done.close(), {})
    # A run that died: marked in flight, one file renamed into place, one still staged.
    dead = "20261127T140000Z-dead00"
    state.set("inflight_run", dead)
    orphan = PartitionWriter(tmp_path, UNIT, dead, DAY, 0o640)
    orphan.add(products(2))
    orphan.close()
    staged = partition_dir(tmp_path, "shopify", DAY) / f".a.myshopify.com_{dead}-0002.parquet.tmp"
    staged.write_bytes(b"PAR1 half written")
    assert duckdb_count(tmp_path) == 6  # the glob skips the staging file; the orphan is readable
    removed, adopted = recover(state, tmp_path, UNIT)
    assert (removed, adopted) == (2, 0)
    assert duckdb_count(tmp_path) == 4
    assert state.get("inflight_run") is None
    state.close()


def test_a_lost_state_file_adopts_the_existing_parquet_instead_of_rewriting_it(tmp_path):
    writer = PartitionWriter(tmp_path, UNIT, RUN, DAY, 0o640)
    batch = products(3)
    writer.add(batch)
    writer.close()
    state = ProviderState.open(state_path(tmp_path, UNIT))
    assert recover(state, tmp_path, UNIT) == (0, 3)
    assert state.keep_changed([(p.source_id, p.raw_hash) for p in batch]) == [False, False, False]
    state.close()
    known = KnownVersions(state_path(tmp_path, UNIT))
    assert all((p.source_id, p.source_updated_at) in known for p in batch)  # versions adopted too


def test_state_commit_is_all_or_nothing(tmp_path):
    path = state_path(tmp_path, UNIT)
    state = ProviderState.open(path)
    assert state.keep_changed([("p1", "aa" * 32), ("p2", "bb" * 32), ("p1", "aa" * 32)]) == [True, True, False]
    state.forget_run()  # the provider failed: nothing of this run reaches the index
    state.close()
    state = ProviderState.open(path)
    assert state.latest_count() == 0
    state.keep_changed([("p3", "cc" * 32)])
    state.commit(RUN, ["normalized/x.parquet"], {"high_water_mark": ["2026-11-01T00:00:00+00:00", 5]})
    state.close()
    state = ProviderState.open(path)
    assert state.latest_count() == 1 and state.get("high_water_mark") == ["2026-11-01T00:00:00+00:00", 5]
    assert state.committed_files() == {"normalized/x.parquet"}
    state.close()


def test_a_record_is_new_when_its_hash_differs_from_the_last_one_written_for_it(tmp_path):
    path = state_path(tmp_path, UNIT)
    state = ProviderState.open(path)
    ten, twelve = "10" * 32, "12" * 32
    assert state.keep_changed([("p1", ten), ("p2", ten)]) == [True, True]  # one hash, two products: both
    state.commit(RUN, [], {})
    assert state.keep_changed([("p1", ten), ("p1", twelve), ("p1", twelve)]) == [False, True, False]
    state.commit(RUN, [], {})
    state.close()
    state = ProviderState.open(path)
    assert state.keep_changed([("p1", ten)]) == [True]  # 10 -> 12 -> 10: the revert is a version
    assert state.keep_changed([("p1", ten), ("p2", ten)]) == [False, False]
    state.forget_run()  # a failed run's versions never count
    assert state.keep_changed([("p1", ten)]) == [True]
    assert state.latest_count() == 2  # one hash per product, however many versions
    state.close()


def test_a_state_from_before_the_latest_index_upgrades_in_place_without_rewriting(tmp_path):
    import sqlite3

    path = state_path(tmp_path, UNIT)
    path.parent.mkdir(parents=True)
    old = sqlite3.connect(path)  # the previous release's schema: every hash ever written, no product keys
    old.executescript("CREATE TABLE seen (h BLOB PRIMARY KEY) WITHOUT ROWID;"
                      "CREATE TABLE files (path TEXT PRIMARY KEY, run_id TEXT NOT NULL);"
                      "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);")
    old.executemany("INSERT INTO seen VALUES (?)", [(bytes.fromhex(h)[:16],) for h in ("10" * 32, "12" * 32)])
    old.commit()
    old.close()
    dry = ProviderState.open(path, read_only=True)  # a dry run reads it as it is
    assert dry.keep_changed([("p1", "12" * 32), ("p1", "13" * 32)]) == [False, True]
    dry.close()
    state = ProviderState.open(path)
    assert state.keep_changed([("p1", "12" * 32), ("p2", "99" * 32)]) == [False, True]
    state.commit(RUN, [], {})
    assert state.keep_changed([("p1", "12" * 32), ("p1", "10" * 32)]) == [False, True]  # p1 now has its entry
    state.close()


def test_versions_are_known_only_once_their_run_commits(tmp_path):
    path = state_path(tmp_path, UNIT)
    known = KnownVersions(path)
    when = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)
    state = ProviderState.open(path)
    state.remember_versions([("gid://shopify/Product/1", when), ("gid://shopify/Product/2", None)])
    assert ("gid://shopify/Product/1", when) not in known  # not committed yet
    state.forget_run()  # the provider failed
    state.commit(RUN, [], {})
    assert ("gid://shopify/Product/1", when) not in known
    state.remember_versions([("gid://shopify/Product/1", when)])
    state.commit(RUN, [], {})
    state.close()
    assert ("gid://shopify/Product/1", when) in known
    # The same instant written in another zone is the same version; another time or id is not.
    assert ("gid://shopify/Product/1", datetime.fromisoformat("2026-11-01T07:00:00-05:00")) in known
    assert ("gid://shopify/Product/1", datetime(2026, 11, 1, 12, 0, 1, tzinfo=timezone.utc)) not in known
    assert ("gid://shopify/Product/2", when) not in known
    assert ("x", when) not in KnownVersions(tmp_path / "missing.sqlite")


def test_read_only_state_never_creates_a_file(tmp_path):
    path = state_path(tmp_path, UNIT)
    state = ProviderState.open(path, read_only=True)
    assert state.keep_changed([("p1", "aa" * 32), ("p1", "aa" * 32)]) == [True, False]
    state.close()
    assert not tmp_path.joinpath("state").exists()


@pytest.mark.parametrize("source", ["../etc", "/abs", "a/b", "shop\x00", "%2e%2e", "Shopify", ""])
def test_partition_values_cannot_escape_the_data_directory(tmp_path, source):
    with pytest.raises(ValueError):
        partition_dir(tmp_path, source, DAY)


@pytest.mark.parametrize("run_id", ["../../x", "20261127T120000Z-abcdef/..", "x"])
def test_file_names_cannot_escape(run_id):
    with pytest.raises(ValueError):
        parquet.file_name("a.myshopify.com", run_id, 1)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

HOSTILE = st.one_of(st.text(max_size=30), st.sampled_from(["..", "../x", "/etc", "a\x00b", "%2e%2e%2f", "a/../b",
                                                            "shopify\n", "..\\x", "ｓｈｏｐｉｆｙ"]))


@settings(max_examples=300, derandomize=True, deadline=None)
@given(source=HOSTILE, run_id=HOSTILE)
def test_no_source_or_run_id_can_place_a_file_outside_the_data_directory(tmp_path_factory, source, run_id):
    root = tmp_path_factory.getbasetemp() / "root"
    try:
        path = partition_dir(root, source, DAY) / parquet.file_name("a.myshopify.com", run_id, 1)
    except ValueError:
        return
    assert path.resolve().is_relative_to((root / "normalized" / "products").resolve())
    assert "\x00" not in str(path) and ".." not in path.relative_to(root).parts


def test_row_groups_of_wide_rows_are_bounded_by_bytes(tmp_path, monkeypatch):
    """Rows with descriptions of a few KB reach the byte bound long before 25,000 rows: the writer
    holds (and copies) a row group of bounded size, whatever the rows' width."""
    import pyarrow.parquet as pq

    monkeypatch.setattr(parquet, "ROW_GROUP_BYTES", 300_000)
    raw = load_fixture("shopify", "product.json")
    writer = PartitionWriter(tmp_path, UNIT, RUN, DAY, 0o640)
    for batch in range(6):
        writer.add([to_product({**raw, "id": f"gid://shopify/Product/{batch}-{i}", "description": "Größe ✓ " * 400},
                               account="a.myshopify.com", fetched_at=datetime.now(timezone.utc), run_id=RUN)
                    for i in range(50)])
    files = writer.close()
    metadata = pq.ParquetFile(tmp_path / files[0]).metadata
    assert metadata.num_rows == 300 and metadata.num_row_groups >= 3
    assert all(metadata.row_group(i).num_rows < 300 for i in range(metadata.num_row_groups))


def test_writing_parquet_does_not_import_pandas_yet_pandas_still_reads_it(tmp_path):
    """pyarrow imports pandas (0.36 s of CPU) the first time it converts a Python list, only to ask
    if the list is a pandas object; the writer answers that probe without it."""
    import subprocess
    import sys
    from pathlib import Path

    script = f"""
import sys
from datetime import date, datetime, timezone
from pathlib import Path
from normalize.shopify import to_product
from storage.parquet import PartitionWriter
from storage.paths import UnitId
from tests.conftest import load_fixture
raw = load_fixture("shopify", "product.json")
product = to_product(raw, account="a.myshopify.com", fetched_at=datetime.now(timezone.utc), run_id="{RUN}")
writer = PartitionWriter(Path({str(tmp_path)!r}), UnitId("shopify", "a.myshopify.com"), "{RUN}", date(2026, 11, 27), 0o640)
writer.add([product])
files = writer.close()
assert "pandas" not in sys.modules, "pandas was imported"
import pyarrow.parquet as pq
print(len(pq.read_table(Path({str(tmp_path)!r}) / files[0]).to_pandas()))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parent.parent,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"

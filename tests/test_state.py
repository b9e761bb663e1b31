"""The dedup state (storage/state.py): a run's latest hashes and versions are held in memory up to
RUN_BUFFER entries, then go to the temporary tables; the answers, the commit and the bytes on disk
are the same either way."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import storage.state as state_module
from storage.paths import UnitId
from storage.index_keys import latest_hash, record_key, version_key
from storage.state import KnownVersions, ProviderState, state_path
from tests import test_storage

UNIT = UnitId("shopify", "a.myshopify.com")
RUN = "20261127T120000Z-abcdef"
WHEN = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)
# Pinned: the keys existing state files and buckets hold (8 bytes of SHA-256 of the source_id, the
# first 16 hex digits of the raw_hash, 12 bytes of SHA-256 of "<source_id>\n<UTC ISO time>").
ODD = "p\udc80"  # a lone surrogate, as a provider's broken JSON can give
VERSIONS = [(("gid://shopify/Product/1", WHEN), "850b8810bd9a7e6b6e59fa40"),
            (("gid://shopify/Product/1", datetime(2026, 11, 1, 7, 0, 0, 250000, timezone(timedelta(hours=-5)))),
             "d46feeefceced9dd08c148a9"),
            ((ODD, datetime(999, 1, 2, 3, 4, 5, 6, timezone.utc)), "aa92be821c2925b7ab53265f")]


@pytest.fixture(params=["in memory", "spilled at every call"])
def buffer(request, monkeypatch):
    if request.param != "in memory":
        monkeypatch.setattr(state_module, "RUN_BUFFER", 1)
    return request.param


@pytest.mark.parametrize("scenario", [
    test_storage.test_a_lost_state_file_adopts_the_existing_parquet_instead_of_rewriting_it,
    test_storage.test_state_commit_is_all_or_nothing,
    test_storage.test_a_record_is_new_when_its_hash_differs_from_the_last_one_written_for_it,
    test_storage.test_a_state_from_before_the_latest_index_upgrades_in_place_without_rewriting,
    test_storage.test_versions_are_known_only_once_their_run_commits,
    test_storage.test_read_only_state_never_creates_a_file,
], ids=lambda f: f.__name__[5:])
def test_the_state_answers_the_same_when_the_run_spills_at_every_call(scenario, tmp_path, monkeypatch):
    monkeypatch.setattr(state_module, "RUN_BUFFER", 1)
    scenario(tmp_path)


def test_the_keys_on_disk_keep_their_format(tmp_path, buffer):
    assert (record_key("gid://shopify/Product/1"), record_key(ODD)) == (-4448586657485608166, 7532793193783688760)
    assert (latest_hash("f" * 64), latest_hash("0123456789abcdef" + "0" * 48)) == (-1, 81985529216486895)
    assert [version_key(*v).hex() for v, _ in VERSIONS] == [key for _, key in VERSIONS]
    path = state_path(tmp_path, UNIT)
    state = ProviderState.open(path)
    assert state.keep_changed([("gid://shopify/Product/1", "f" * 64), (ODD, "0123456789abcdef" + "0" * 48)]) == [True, True]
    state.remember_versions([v for v, _ in VERSIONS] + [(ODD, None), VERSIONS[0][0]])
    state.commit(RUN, [], {})
    state.close()
    con = sqlite3.connect(path)
    try:
        assert con.execute("SELECT k, h FROM latest ORDER BY k").fetchall() == [
            (-4448586657485608166, -1), (7532793193783688760, 81985529216486895)]
        assert [row[0].hex() for row in con.execute("SELECT v FROM versions")] == sorted(key for _, key in VERSIONS)
    finally:
        con.close()


def test_a_run_longer_than_its_buffer_compares_across_spills_and_commits_only_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(state_module, "RUN_BUFFER", 2)
    path = state_path(tmp_path, UNIT)
    a, b = "aa" * 32, "bb" * 32

    def one_run(state):
        flags = state.keep_changed([("p1", a), ("p2", a), ("p3", a)])  # 3 entries: spilled
        state.remember_versions([("p1", WHEN), ("p2", WHEN), ("p3", WHEN)])
        flags += state.keep_changed([("p1", a), ("p2", b), ("p4", a)])  # p1 and p2 from the spilled table
        state.remember_versions([("p4", WHEN)])
        flags += state.keep_changed([("p2", a), ("p4", a), ("p2", a)])  # the revert, from the table again
        return flags

    state = ProviderState.open(path)
    assert one_run(state) == [True, True, True, False, True, True, True, False, False]
    state.close()  # a crash before the commit: nothing of the run counts
    state = ProviderState.open(path)
    assert state.latest_count() == 0 and ("p1", WHEN) not in KnownVersions(path)
    assert one_run(state) == [True, True, True, False, True, True, True, False, False]
    state.commit(RUN, [], {})
    assert state.latest_count() == 4
    assert all((f"p{n}", WHEN) in KnownVersions(path) for n in range(1, 5))
    assert state.keep_changed([("p1", a), ("p2", a), ("p3", b), ("p4", a), ("p5", a)]) == [False, False, True, False, True]
    state.close()


def _version_key_as_written(source_id, updated_at) -> bytes:
    """The version key as state files and buckets hold it (the first release's formula)."""
    text = f"{source_id}\n{updated_at.astimezone(timezone.utc).isoformat()}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:12]


class _Later(datetime):
    def isoformat(self, *args, **kwargs):
        return super().isoformat(*args, **kwargs) + "!"


ZONES = st.sampled_from([timezone.utc, timezone(timedelta(0)), timezone(timedelta(hours=5, minutes=30)),
                         timezone(timedelta(hours=-11))])


@settings(max_examples=500, derandomize=True, deadline=None)
@given(source_id=st.text(st.characters(exclude_categories=()), max_size=40), when=st.one_of(
    st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=ZONES),
    st.datetimes(min_value=datetime(1, 1, 2), timezones=st.just(timezone.utc)),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1))))  # naive: taken as local time
@example(source_id=ODD, when=datetime(999, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
@example(source_id="p", when=datetime(9, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc))
def test_the_version_key_is_the_bytes_written_before_for_any_time(source_id, when):
    assert version_key(source_id, when) == _version_key_as_written(source_id, when)
    later = _Later(*when.timetuple()[:6], when.microsecond, tzinfo=when.tzinfo)  # a subclass formats itself
    assert version_key(source_id, later) == _version_key_as_written(source_id, later)


def test_a_batch_mixing_known_changed_and_unknown_records_against_a_committed_index(tmp_path, buffer):
    a, b = "aa" * 32, "bb" * 32
    state = ProviderState.open(state_path(tmp_path, UNIT))
    assert state.keep_changed([("p1", a), ("p2", b)]) == [True, True]
    state.commit(RUN, [], {})
    assert state.keep_changed([("p1", b), ("p1", a), ("p3", a), ("p2", b), ("p3", a), ("p2", a)]) == \
        [True, True, True, False, False, True]
    assert state.keep_changed([("p2", b), ("p1", a), ("p4", b)]) == [True, False, True]
    state.close()


def test_a_row_another_statement_puts_in_the_run_table_counts_past_a_spill(tmp_path, monkeypatch):
    """Past a spill, only the keys the state spilled are asked of temp.run_latest, unless another
    statement on its connection wrote there (LakeState.absorb: a migration's entries)."""
    monkeypatch.setattr(state_module, "RUN_BUFFER", 1)
    a = "aa" * 32
    state = ProviderState.open(state_path(tmp_path, UNIT))
    assert state.keep_changed([("p1", a)]) == [True]  # spilled
    state.con.execute("INSERT INTO temp.run_latest VALUES (?, ?)", (record_key("p2"), latest_hash(a)))
    assert state.keep_changed([("p2", a), ("p1", a), ("p3", a)]) == [False, False, True]
    assert state.keep_changed([("p2", a), ("p3", a), ("p4", a)]) == [False, False, True]
    state.close()


def test_a_run_that_reads_every_record_twice_past_many_spills_writes_each_once(tmp_path, monkeypatch):
    monkeypatch.setattr(state_module, "RUN_BUFFER", 16)
    records = [(f"gid://shopify/Product/{n}", hashlib.sha256(b"%d" % n).hexdigest()) for n in range(300)]
    state = ProviderState.open(state_path(tmp_path, UNIT))
    batches = [records[start:start + 7] for start in range(0, len(records), 7)]
    assert all(all(state.keep_changed(batch)) for batch in batches)
    assert not any(any(state.keep_changed(batch)) for batch in batches)  # the same again: from the spilled table
    changed = [(i, hashlib.sha256(h.encode()).hexdigest()) for i, h in records[::3]]
    assert all(state.keep_changed(changed)) and not any(state.keep_changed(changed))
    state.commit(RUN, [], {})
    assert state.latest_count() == 300
    assert not any(state.keep_changed(records[1::3] + changed))
    state.close()

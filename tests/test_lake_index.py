"""The object store's index keeps what the local state keeps: one latest hash per record, so a
revert (10 -> 12 -> 10) is new while a re-read is not, across workers with empty disks and across
the index growing from one shard to sixteen and 256."""

from __future__ import annotations

import hashlib

from storage.lake.index import LakeState, _first_byte, _key_ranges
from storage.paths import UnitId
from tests.fake_store import FakeObjects

UNIT = UnitId("shopify", "a.myshopify.com")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def run(objects, tmp_path, name: str, records: list[tuple[str, str]], commit: bool = True) -> list[bool]:
    """One run on an empty disk of its own: the flags keep_changed gives, then the commit."""
    (tmp_path / name).mkdir()
    state = LakeState(objects, UNIT, tmp_path / name, read_only=False)
    try:
        flags = []
        for start in range(0, len(records), 500):
            flags += state.keep_changed(records[start:start + 500])
        if commit:
            state.commit(f"20261201T{int(name[1:]):06d}Z-abcdef", {})
        return flags
    finally:
        state.close()


def test_a_revert_is_new_a_reread_is_not_on_workers_with_empty_disks(tmp_path):
    objects = FakeObjects()
    assert run(objects, tmp_path, "w1", [("p1", digest("10")), ("p2", digest("x"))]) == [True, True]
    assert run(objects, tmp_path, "w2", [("p1", digest("12")), ("p2", digest("x"))]) == [True, False]
    assert run(objects, tmp_path, "w3", [("p1", digest("10")), ("p2", digest("x"))]) == [True, False]  # the revert
    assert run(objects, tmp_path, "w4", [("p1", digest("10"))]) == [False]
    # Within one run: A, B, A is three versions.
    assert run(objects, tmp_path, "w5", [("p3", digest("a")), ("p3", digest("b")), ("p3", digest("a"))]) == [True] * 3


def test_the_latest_hash_survives_each_reshard_and_a_changed_hash_replaces_its_entry(tmp_path):
    objects = FakeObjects()
    first = [(f"gid://shopify/Product/{i}", digest(f"{i}/0")) for i in range(5000)]  # past 4,096: 16 shards
    assert all(run(objects, tmp_path, "w1", first))
    manifest = objects.read_document(f"_state/{UNIT.provider}.{UNIT.account}.{UNIT.stream}/manifest.json")[0]
    assert manifest["index"]["latest"]["bits"] == 4
    assert sum(count for _, count in manifest["index"]["latest"]["shards"].values()) == 5000
    changed = [(i, digest(f"{n}/1")) for n, (i, _) in enumerate(first) if n % 10 == 0]
    assert all(run(objects, tmp_path, "w2", changed))
    manifest = objects.read_document(f"_state/{UNIT.provider}.{UNIT.account}.{UNIT.stream}/manifest.json")[0]
    assert sum(count for _, count in manifest["index"]["latest"]["shards"].values()) == 5000  # replaced, not added
    again = [(i, digest(f"{n}/1")) if n % 10 == 0 else (i, h) for n, (i, h) in enumerate(first)]
    assert not any(run(objects, tmp_path, "w3", again, commit=False))
    assert all(run(objects, tmp_path, "w4", [(i, h) for n, (i, h) in enumerate(first) if n % 10 == 0], commit=False))


def test_every_key_falls_in_exactly_the_ranges_of_its_first_byte():
    keys = [0, 1, (1 << 56) - 1, 1 << 56, (1 << 63) - 1, -1, -(1 << 63), -(1 << 56), -(1 << 56) - 1, 0x7F << 56]
    for bits in (0, 4, 8):
        for shard in range(1 << bits):
            low, high = shard << (8 - bits), (shard + 1) << (8 - bits)
            for key in keys:
                inside = any(_within(key, bounds, args) for bounds, args in _key_ranges(low, high))
                assert inside == (low <= _first_byte(key) < high), (bits, shard, key)


def _within(key: int, bounds: str, args: tuple) -> bool:
    import sqlite3

    con = sqlite3.connect(":memory:")
    return con.execute(f"SELECT 1 FROM (SELECT ? AS k) WHERE {bounds}", (key, *args)).fetchone() is not None

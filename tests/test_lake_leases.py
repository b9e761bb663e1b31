"""Leases instead of lock files, conditional writes as the only locks, and what they guarantee with
several workers: the lease's life (taken, refused, expired by the store's clock, taken over, lost),
the eBay budget reserved in blocks, the probe that refuses a store ignoring conditional writes, and
races of real processes on one bucket.

LAKE_ROUNDS and LAKE_RACES set the process counts (1 and 3 here; `make lake-race-test` runs 10
and 20).
"""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import date

import pytest

from sandbox.catalog import CatalogSpec
from sandbox.server import Fault
from sandbox.shopify import ShopifySandbox
from storage.lake.budget import ReservedCallBudget
from storage.lake.index import LakeState
from storage.lake.lease import Lease, LeaseLost
from storage.lake.objects import PreconditionFailed, StoreRefused
from storage.paths import UnitId, lease_name
from tests.fake_store import FakeObjects, StoreClock
from tests.lakes import duplicates, keys, table_rows, wait_for_expiry
from tests.procs import base_env, run_cli, shopify_env, start_cli

UNIT = UnitId("shopify", "test-shop.myshopify.com")
TOKEN = "shpat_lake_race_token"


def lease(objects, run_id="20261201T120000Z-aaaaaa", seconds=60.0) -> Lease:
    return Lease(objects, UNIT, seconds=seconds, run_id=run_id, day="2026-12-01")


# -- the lease, on a store whose clock the test moves --------------------------------------------
def test_a_held_lease_is_refused_naming_its_holder_until_it_expires_by_the_stores_clock():
    clock = StoreClock()
    objects = FakeObjects(clock)
    first, second = lease(objects), lease(objects, "20261201T120100Z-bbbbbb")
    assert first.acquire() and first.previous is None
    assert not second.acquire()
    assert "20261201T120000Z-aaaaaa" in second.holder and "lease 60" in second.holder
    clock.advance(61)  # 61 s old: might be 60.x by a finer clock, so not yet surely expired
    assert not second.acquire()
    clock.advance(1)
    assert second.acquire()
    assert second.previous["run_id"] == "20261201T120000Z-aaaaaa"  # recovery learns whose leftovers these are


def test_renewing_keeps_a_lease_and_a_holder_that_stalled_past_expiry_has_lost_it():
    clock = StoreClock()
    objects = FakeObjects(clock)
    holder = lease(objects)
    assert holder.acquire()
    for _ in range(5):
        clock.advance(50)
        holder.renew()  # every renewal restarts the expiry
        assert not lease(objects, "20261201T121000Z-cccccc").acquire()
    clock.advance(70)  # the holder stalls (a long GC pause, a frozen VM)
    taker = lease(objects, "20261201T121000Z-cccccc")
    assert taker.acquire()
    with pytest.raises(LeaseLost):
        holder.renew(committing=holder.document["run_id"])  # it may commit nothing now
    holder.release()  # and must not delete the new holder's lease
    assert objects.exists(lease_name(UNIT))
    taker.release()
    assert not objects.exists(lease_name(UNIT))


def test_the_lease_is_renewed_from_a_background_thread_every_fifth_of_its_duration():
    objects = FakeObjects()
    holder = lease(objects, seconds=0.25)
    assert holder.acquire()
    first = holder.etag
    holder.start_renewing()
    deadline = time.monotonic() + 5
    while holder.etag == first and time.monotonic() < deadline:
        time.sleep(0.01)
    holder.release()
    assert holder.etag is None and first != objects.writes  # renewed, then deleted
    assert not objects.exists(lease_name(UNIT))


def test_a_state_write_against_a_stale_etag_is_refused(tmp_path):
    objects = FakeObjects()
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    mine, theirs = LakeState(objects, UNIT, tmp_path / "a", read_only=False), LakeState(objects, UNIT, tmp_path / "b", read_only=False)
    theirs.keep_changed([("p1", "ab" * 32)])
    assert theirs.commit("20261201T120000Z-bbbbbb", {"high_water_mark": ["2026-12-01T00:00:00+00:00", 2]})
    mine.keep_changed([("p2", "cd" * 32)])
    with pytest.raises(PreconditionFailed):  # read before theirs committed: never overwrites newer state
        mine.commit("20261201T120000Z-aaaaaa", {"high_water_mark": ["2026-11-01T00:00:00+00:00", 1]})
    mine.close(), theirs.close()


# -- shared counters -----------------------------------------------------------------------------
def test_two_workers_share_a_daily_budget_reserving_blocks_not_one_write_per_call():
    objects = FakeObjects()
    today = lambda: date(2026, 12, 1)  # noqa: E731
    a, b = (ReservedCallBudget(objects, "ebay_calls.k.json", 60, today, block=25) for _ in range(2))
    assert [a.spend() for _ in range(30)].count(True) == 30  # two blocks of 25: 20 still reserved by a
    assert [b.spend() for _ in range(40)].count(True) == 10  # what is left of the 60
    assert objects.writes == 3  # one conditional write per block, not one per call
    a.give_back()  # a finished: its 20 unspent calls return to the keyset
    assert [b.spend() for _ in range(40)].count(True) == 20
    assert not b.spend() and ReservedCallBudget(objects, "ebay_calls.k.json", 60, today).spent() == 60
    assert objects.writes == 5


# -- the probe -----------------------------------------------------------------------------------
def test_a_store_that_ignores_conditional_writes_is_refused_with_a_reason():
    objects = FakeObjects(honours_conditions=False)
    with pytest.raises(StoreRefused, match="ignores conditional writes"):
        objects.probe()
    assert objects.objects == {}  # the probe key is gone too
    FakeObjects().probe()  # one that honours them passes


def test_a_run_against_a_store_that_strips_the_condition_headers_writes_nothing(run, sandbox, lake):
    s3, bucket, _ = lake
    s3.strip_conditions()
    result, _ = run(sandbox, "--destination", f"s3://{bucket}/lake", "--table-format", "delta")
    assert result.exit_code == 2
    assert "ignores conditional writes" in result.output and "Nothing was done" in result.output
    assert sandbox.api_requests() == []
    assert keys(s3, bucket) == []  # no table, no lease, no state, no history


# -- races of real processes ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def shops():
    with ShopifySandbox(CatalogSpec(size=60, seed=1), token=TOKEN, throttle=False) as a, \
            ShopifySandbox(CatalogSpec(size=45, seed=2), token=TOKEN, throttle=False) as b, \
            ShopifySandbox(CatalogSpec(size=30, seed=3), token=TOKEN, throttle=False) as c, \
            ShopifySandbox(CatalogSpec(size=25, seed=4), token=TOKEN, throttle=False) as d:
        yield [a, b, c, d]


def four_shops(tmp_path, shops) -> dict:
    path = tmp_path / "accounts.toml"
    path.write_text("".join(f'[[shopify]]\nname = "shop{i}"\nshop_domain = "shop{i}.myshopify.com"\n'
                            f'access_token = "env:SHOP_TOKEN"\napi_base_url = "{s.base_url}"\n\n'
                            for i, s in enumerate(shops)))
    return {"PIPELINE_ACCOUNTS_FILE": str(path), "SHOP_TOKEN": TOKEN, "PIPELINE_TABLE_FORMAT": "delta"}


def history(s3, bucket: str) -> list[dict]:
    client = s3.client()
    return [json.loads(client.get_object(Bucket=bucket, Key=k)["Body"].read())
            for k in keys(s3, bucket, "lake/_history/runs/")]


def test_four_workers_on_four_units_into_one_new_table_lose_nothing(tmp_path, local_s3, shops):
    rounds = int(os.environ.get("LAKE_ROUNDS", "1"))
    print(f"rounds: {rounds}")
    for round_ in range(rounds):
        bucket = local_s3.create_bucket()  # a new table each round: the workers also race to create it
        env = base_env(tmp_path / f"r{round_}", **local_s3.env(bucket, "lake"), **four_shops(tmp_path, shops))
        workers = [start_cli(env, "--accounts", f"shopify:shop{i}") for i in range(4)]
        outcomes = [(w.wait(timeout=120), w.stderr.read()) for w in workers]
        assert [code for code, _ in outcomes] == [0] * 4, outcomes
        rows = table_rows(local_s3, bucket)
        assert len(rows) == 160 and duplicates(rows) == 0, f"round {round_}"
        assert sorted(r["units"][0]["written"] for r in history(local_s3, bucket)) == [25, 30, 45, 60]


def test_one_unit_started_twice_at_once_exactly_one_works_the_other_touches_nothing(tmp_path, local_s3):
    races = int(os.environ.get("LAKE_RACES", "3"))
    print(f"races: {races}")
    with ShopifySandbox(CatalogSpec(size=40), token=TOKEN, throttle=False) as shop:
        shop.latency_s = 0.1  # the holder keeps the lease for a second or so
        for race in range(races):
            bucket = local_s3.create_bucket()
            env = base_env(tmp_path / f"race{race}", **shopify_env(shop, TOKEN), **local_s3.env(bucket, "lake"),
                           PIPELINE_TABLE_FORMAT="delta")
            local_s3.log(clear=True)
            first, second = start_cli(env), start_cli(env)
            codes = sorted([first.wait(timeout=120), second.wait(timeout=120)])
            assert codes == [0, 75], f"race {race}: {codes}"
            records = sorted(history(local_s3, bucket), key=lambda r: r["exit_code"])
            assert [r["units"][0]["status"] for r in records] == ["ok", "locked"]
            assert records[1]["units"][0].get("requests", 0) == 0
            rows = table_rows(local_s3, bucket)
            assert len(rows) == 40 and duplicates(rows) == 0


def test_a_holder_killed_mid_run_is_taken_over_once_its_short_lease_expires(tmp_path, local_s3):
    with ShopifySandbox(CatalogSpec(size=40), token=TOKEN, throttle=False) as shop:
        bucket = local_s3.create_bucket()
        env = base_env(tmp_path, **shopify_env(shop, TOKEN), **local_s3.env(bucket, "lake"),
                       PIPELINE_TABLE_FORMAT="delta", PIPELINE_LEASE_SECONDS="1",
                       PIPELINE_REQUEST_DEADLINE_SECONDS="60")
        shop.inject(Fault("trickle", seconds=30))  # the holder hangs mid-fetch, lease held
        holder = start_cli(env)
        deadline = time.monotonic() + 30
        while not shop.api_requests() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.6)  # a renewal or two (every 0.2 s): a live holder keeps its lease
        assert run_cli(env).returncode == 75
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        shop.faults.clear()
        lease_key = f"lake/{lease_name(UnitId('shopify', 'test-shop.myshopify.com'))}"
        wait_for_expiry(local_s3, bucket, lease_key, 1.0)  # the store's clock decides
        after = run_cli(env)
        assert after.returncode == 0, after.stderr
        assert "took over the lease" in after.stderr
        rows = table_rows(local_s3, bucket)
        assert len(rows) == 40 and duplicates(rows) == 0

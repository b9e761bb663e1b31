"""Overlapping runs: the per-provider lock lets exactly one run of a provider work at a time.

RACES sets how many two-process races run (default 5 here; `make race-test` runs 50).
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from sandbox.amazon import LWA_PATH, AmazonSandbox
from sandbox.catalog import CatalogSpec
from sandbox.server import Fault
from sandbox.shopify import ShopifySandbox
from storage.paths import UnitId, lock_path
from tests.procs import base_env, dataset_problems, read_runlog, run_cli, shopify_env, start_cli

TOKEN = "shpat_race_test_token"


@pytest.fixture(scope="module")
def server():
    with ShopifySandbox(CatalogSpec(size=150), token=TOKEN, throttle=False) as sandbox:
        sandbox.latency_s = 0.1  # each run holds its lock for about a second
        yield sandbox


def test_two_runs_of_the_same_provider_started_together_exactly_one_works(server, tmp_path):
    races = int(os.environ.get("RACES", "5"))
    print(f"races: {races}")
    for race in range(races):
        root = tmp_path / f"race{race}"
        env = base_env(root, **shopify_env(server, TOKEN))
        first, second = start_cli(env), start_cli(env)
        codes = sorted([first.wait(timeout=120), second.wait(timeout=120)])
        assert codes == [0, 75], f"race {race}: exit codes {codes}"
        records = read_runlog(root)
        statuses = sorted(r["providers"]["shopify"]["status"] for r in records)
        assert statuses == ["locked", "ok"]
        loser = next(r for r in records if r["providers"]["shopify"]["status"] == "locked")
        assert loser["providers"]["shopify"].get("requests", 0) == 0 and loser["exit_code"] == 75
        assert dataset_problems(root) == []
        written = sum(r["providers"]["shopify"].get("written", 0) for r in records)
        assert written == 150


def test_runs_of_different_providers_overlap_without_interfering(server, tmp_path):
    with AmazonSandbox(requests_per_second=50) as amazon:
        amazon_env = {"AMAZON_API_BASE_URL": amazon.base_url, "AMAZON_TOKEN_URL": amazon.base_url + LWA_PATH,
                      "AMAZON_CREATORS_CREDENTIAL_ID": amazon.credential_id,
                      "AMAZON_CREATORS_CREDENTIAL_SECRET": amazon.credential_secret,
                      "AMAZON_CREATORS_VERSION": "3.1", "AMAZON_PARTNER_TAG": amazon.partner_tag,
                      "AMAZON_SEARCH_KEYWORDS": "mug,lantern", "AMAZON_REQUESTS_PER_SECOND": "40"}
        env = base_env(tmp_path, **shopify_env(server, TOKEN), **amazon_env)
        shop, amaz = start_cli(env, "--providers", "shopify"), start_cli(env, "--providers", "amazon")
        assert (shop.wait(timeout=120), amaz.wait(timeout=120)) == (0, 0)
    records = read_runlog(tmp_path)
    assert sorted(r["options"]["providers"][0] for r in records) == ["amazon", "shopify"]
    assert all(r["status"] == "ok" for r in records)
    assert dataset_problems(tmp_path) == []


def test_the_next_run_gets_the_lock_after_the_holder_is_killed(server, tmp_path):
    env = base_env(tmp_path, **shopify_env(server, TOKEN), PIPELINE_REQUEST_DEADLINE_SECONDS="60")
    server.inject(Fault("trickle", seconds=30))  # the holder hangs mid-fetch, lock held
    holder = start_cli(env)
    lock = lock_path(tmp_path / "data", UnitId("shopify", "test-shop.myshopify.com"))
    deadline = time.monotonic() + 30
    while not (lock.exists() and server.api_requests()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run_cli(env).returncode == 75  # while it lives, the lock is held
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    server.faults.clear()
    after = run_cli(env)
    assert after.returncode == 0, after.stderr
    assert read_runlog(tmp_path)[-1]["providers"]["shopify"]["status"] == "ok"
    assert dataset_problems(tmp_path) == []


def test_two_units_of_one_provider_run_at_once_and_one_units_recovery_spares_the_others_files(server, tmp_path):
    """Two shops, two processes at once: the slow one is mid-crawl while the other sweeps its own
    crash leftovers and commits; neither touches the other's files, both land whole."""
    with ShopifySandbox(CatalogSpec(size=60, seed=11), token="shpat_race_second_shop", throttle=False) as second:
        second.gate = threading.Event()  # its unit stays mid-crawl until the other has finished
        accounts = tmp_path / "accounts.toml"
        accounts.write_text(f"""
[[shopify]]
shop_domain = "test-shop.myshopify.com"
access_token = "env:FIRST_TOKEN"
api_base_url = "{server.base_url}"

[[shopify]]
name = "second"
shop_domain = "second-shop.myshopify.com"
access_token = "env:SECOND_TOKEN"
api_base_url = "{second.base_url}"
""")
        env = base_env(tmp_path, PIPELINE_ACCOUNTS_FILE=str(accounts), FIRST_TOKEN=TOKEN,
                       SECOND_TOKEN="shpat_race_second_shop")
        folder = tmp_path / "data" / "normalized" / "products" / "source=shopify" / "date=2026-01-01"
        folder.mkdir(parents=True)
        leftover = folder / ".test-shop.myshopify.com_20260101T000000Z-abcdef-0001.parquet.tmp"
        leftover.write_bytes(b"left by a crash of the first shop's unit")
        slow = start_cli(env, "--accounts", "second")
        deadline = time.monotonic() + 30
        while not second.held and time.monotonic() < deadline:  # its first request is in
            time.sleep(0.02)
        quick = run_cli(env, "--accounts", "test-shop.myshopify.com")
        assert quick.returncode == 0, quick.stderr
        assert slow.poll() is None  # the two units really overlapped
        second.gate.set()
        assert slow.wait(timeout=120) == 0
        assert not leftover.exists()
        records = read_runlog(tmp_path)
        written = {u["account"]: u["written"] for r in records for u in r["units"]}
        assert written == {"test-shop.myshopify.com": 150, "second": 60}
        assert dataset_problems(tmp_path) == []

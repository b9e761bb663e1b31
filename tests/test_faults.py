"""The fault matrix on the sandboxes: every fault either leaves a provider's data complete and
correct, or fails that provider alone with a structured error while the others commit; never a
partial file, never state advanced for a failed provider, never a bad answer cached.
"""

from __future__ import annotations

import copy
import json
import sqlite3
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from requests_cache import SQLiteCache

from sandbox.amazon import LWA_PATH, AmazonSandbox
from sandbox.ebay import EbaySandbox
from sandbox.server import Fault
from tests.conftest import parquet_rows
from tests.procs import dataset_problems

THROTTLED = {"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
             "extensions": {"cost": {"requestedQueryCost": 300, "actualQueryCost": None,
                                     "throttleStatus": {"maximumAvailable": 2000.0, "currentlyAvailable": 100,
                                                        "restoreRate": 100.0}}}}


def cached_answers(dirs, provider):
    path = dirs["cache"] / provider / "http_cache.sqlite"
    if not path.exists():
        return []
    return list(SQLiteCache(str(path), serializer="json").responses.values())


def assert_nothing_bad_cached(dirs, provider="shopify"):
    for response in cached_answers(dirs, provider):
        assert response.status_code == 200
        body = json.loads(response.content)
        assert isinstance(body, dict) and not body.get("errors")


def high_water_mark(dirs, provider="shopify"):
    path = dirs["data"] / "state" / f"{provider}.sqlite"
    if not path.exists():
        return None
    row = sqlite3.connect(path).execute("SELECT value FROM meta WHERE key = 'high_water_mark'").fetchone()
    return row and json.loads(row[0])


def complete(sandbox, dirs):
    rows = [r for r in parquet_rows(dirs["data"]) if r["source"] == "shopify"]
    return len(rows) == len(sandbox.products) and {r["source_id"] for r in rows} == set(sandbox.products)


def http_date_in(seconds: int) -> str:
    return format_datetime(datetime.now(timezone.utc) + timedelta(seconds=seconds), usegmt=True)


RECOVERABLE = {
    "429 Retry-After seconds": ([Fault("status", status=429, headers={"Retry-After": "7"})], lambda w: 7 in w),
    "429 Retry-After HTTP-date": ([Fault("status", status=429, headers={"Retry-After": "in 30 s"})],
                                  lambda w: any(25 <= x <= 31 for x in w)),
    "429 Retry-After 0": ([Fault("status", status=429, headers={"Retry-After": "0"})], lambda w: min(w) >= 1),
    "500 then success": ([Fault("status", status=500)], lambda w: len(w) == 1),
    "502 then success": ([Fault("status", status=502)], lambda w: len(w) == 1),
    "503 then success": ([Fault("status", status=503, times=2)], lambda w: len(w) == 2),
    "504 then success": ([Fault("status", status=504)], lambda w: len(w) == 1),
    "connection reset": ([Fault("reset")], lambda w: len(w) == 1),
    "body cut short": ([Fault("truncate")], lambda w: len(w) == 1),
    "HTML page with 200": ([Fault("html")], lambda w: len(w) == 1),
    "GraphQL THROTTLED": ([Fault("status", status=200, body=THROTTLED)], lambda w: any(x >= 2 for x in w)),
    "trickle past the deadline": ([Fault("trickle", seconds=3)], lambda w: len(w) == 1),
}


@pytest.mark.parametrize("name", RECOVERABLE)
def test_recoverable_faults_end_with_complete_correct_data(sandbox, run, dirs, clock, name):
    faults, waits_ok = copy.deepcopy(RECOVERABLE[name][0]), RECOVERABLE[name][1]
    for fault in faults:
        if fault.headers.get("Retry-After") == "in 30 s":  # dated when the test runs, not at import
            fault.headers = {"Retry-After": http_date_in(30)}
        sandbox.inject(fault)
    result, record = run(sandbox, env={"PIPELINE_REQUEST_DEADLINE_SECONDS": "1"})
    assert result.exit_code == 0, result.output
    entry = record["providers"]["shopify"]
    assert entry["status"] == "ok" and entry["retries"] >= 1
    assert waits_ok(clock.sleeps), clock.sleeps
    assert sandbox.api_requests()[0].get("fault") == faults[0].kind  # the fault really happened
    assert complete(sandbox, dirs)
    assert dataset_problems(dirs["data"].parent) == []
    assert_nothing_bad_cached(dirs)


@pytest.mark.parametrize("fault", [Fault("status", status=500, times=99), Fault("redirect", times=99),
                                   Fault("status", status=401, times=99, body={"errors": "[API] Invalid API key"})],
                         ids=["500 forever", "redirect to another host", "401"])
def test_a_failing_provider_fails_alone_and_the_others_commit(sandbox, run, dirs, clock, fault):
    sandbox.inject(fault)
    with AmazonSandbox(clock=clock) as amazon:
        env = {"AMAZON_API_BASE_URL": amazon.base_url, "AMAZON_TOKEN_URL": amazon.base_url + LWA_PATH,
               "AMAZON_CREATORS_CREDENTIAL_ID": amazon.credential_id,
               "AMAZON_CREATORS_CREDENTIAL_SECRET": amazon.credential_secret, "AMAZON_CREATORS_VERSION": "3.1",
               "AMAZON_PARTNER_TAG": amazon.partner_tag, "AMAZON_SEARCH_KEYWORDS": "mug"}
        result, record = run(sandbox, env=env)
    assert result.exit_code == 1
    shopify, amazon_entry = record["providers"]["shopify"], record["providers"]["amazon"]
    assert shopify["status"] == "failed" and shopify["error_type"] and shopify["error"] and shopify["traceback"]
    assert amazon_entry["status"] == "ok" and amazon_entry["written"] > 0
    assert not [r for r in parquet_rows(dirs["data"]) if r["source"] == "shopify"]
    assert high_water_mark(dirs) is None
    assert dataset_problems(dirs["data"].parent) == []
    assert_nothing_bad_cached(dirs)
    if fault.status == 500:
        assert shopify["circuit"] == "open" and len(sandbox.api_requests()) == 5  # the breaker stopped the calls


def test_a_failure_on_a_later_run_keeps_earlier_data_and_state(sandbox, run, dirs):
    run(sandbox)
    mark, before = high_water_mark(dirs), parquet_rows(dirs["data"])
    sandbox.mutate(0.05)
    sandbox.inject(Fault("status", status=503, times=99))
    result, record = run(sandbox)
    assert result.exit_code == 1
    assert high_water_mark(dirs) == mark and parquet_rows(dirs["data"]) == before
    sandbox.faults.clear()
    result, record = run(sandbox)
    assert record["providers"]["shopify"]["written"] == 5  # nothing missed


def test_ebay_token_expired_by_the_server_mid_run_is_re_minted(run, dirs, clock):
    with EbaySandbox(clock=clock, revoke_tokens_every=2) as server:
        env = {"EBAY_API_BASE_URL": server.base_url, "EBAY_CLIENT_ID": server.client_id,
               "EBAY_CLIENT_SECRET": server.client_secret, "EBAY_SEARCH_QUERIES": "steel mug,lantern"}
        result, record = run(None, "--providers", "ebay", env=env)
        refused = [e for e in server.api_requests() if e["status"] == 401]
    assert result.exit_code == 0, result.output
    assert refused and server.minted == len(refused) + 1
    assert record["providers"]["ebay"]["written"] == record["providers"]["ebay"]["fetched"] > 0


def test_ebay_next_links_on_another_host_get_no_credentials(run, dirs, clock):
    with EbaySandbox(clock=clock) as elsewhere, EbaySandbox(clock=clock, next_host=None) as server:
        server.next_host = elsewhere.base_url
        env = {"EBAY_API_BASE_URL": server.base_url, "EBAY_CLIENT_ID": server.client_id,
               "EBAY_CLIENT_SECRET": server.client_secret, "EBAY_SEARCH_QUERIES": "steel mug"}
        result, record = run(None, "--providers", "ebay", env=env)
        total, _ = server.results("q:steel mug")
        assert elsewhere.log == []
    assert result.exit_code == 0, result.output
    assert record["providers"]["ebay"]["fetched"] == total

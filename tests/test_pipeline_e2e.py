"""The CLI end to end on the Shopify sandbox: real HTTP on loopback, real Parquet."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from connectors import shopify_events
from sandbox.catalog import CatalogSpec
from sandbox.shopify import ShopifySandbox
from storage.lock import FileLease
from storage.paths import UnitId, lock_path
from tests.conftest import SHOP, TOKEN, parquet_rows

REPO = Path(__file__).resolve().parent.parent


def test_second_run_writes_nothing_and_changes_are_written_exactly_once(sandbox, run, dirs):
    result, first = run(sandbox)
    assert result.exit_code == 0, result.output
    assert first["providers"]["shopify"]["written"] == 100
    assert len(parquet_rows(dirs["data"])) == 100

    result, second = run(sandbox)
    assert result.exit_code == 0, result.output
    assert second["providers"]["shopify"]["written"] == 0
    assert len(parquet_rows(dirs["data"])) == 100

    changed = sandbox.mutate(0.03)
    result, third = run(sandbox)
    assert third["providers"]["shopify"]["written"] == len(changed) == 3
    rows = parquet_rows(dirs["data"])
    assert len(rows) == 103
    newest = {r["source_id"] for r in rows if r["run_id"] == third["run_id"]}
    assert newest == set(changed)


@pytest.fixture
def many_variants_last():
    """A catalog whose newest product has 30 variants (three follow-up pages of 10 inline)."""
    spec = CatalogSpec(size=100, many_variants_every=100, many_variants=30, same_time_every=0)
    with ShopifySandbox(spec, token=TOKEN, throttle=False) as server:
        yield server


def test_a_run_right_after_a_complete_one_makes_one_request(many_variants_last, run, dirs):
    sandbox = many_variants_last
    result, first = run(sandbox, "--providers", "shopify")
    assert first["providers"]["shopify"]["written"] == 100
    before = len(sandbox.api_requests())
    result, second = run(sandbox, "--providers", "shopify")
    assert result.exit_code == 0, result.output
    # One request in all: the lookback window's page, the destroyed products asked for beside it
    assert len(sandbox.api_requests()) - before == 1
    assert second["providers"]["shopify"]["requests"] == 1
    assert second["providers"]["shopify"]["written"] == 0
    [query] = [e["body"] for e in sandbox.api_requests()[-1:]]
    assert "query Products" in query and "destroyed: events(" in query


def test_the_page_size_learned_from_reported_costs_carries_over_to_the_next_run(sandbox, run, dirs):
    def firsts(entries):
        return [json.loads(e["body"])["variables"]["first"] for e in entries
                if "query Products" in json.loads(e["body"])["query"]]

    run(sandbox, "--providers", "shopify")
    first_run = firsts(sandbox.api_requests())
    # No cost known yet: 10 records, less the points of the destroyed products asked for beside them;
    # then sized by the reported cost
    assert first_run[0] == 9 and first_run[-1] > 10
    count = len(sandbox.api_requests())
    run(sandbox, "--providers", "shopify")
    # the page size last learned, at least the largest page asked for before (pages that also ask
    # for more variants of held products hold fewer records), less the destroyed products' points
    beside = shopify_events.companion(since=None).cost / 1000
    assert firsts(sandbox.api_requests()[count:])[0] >= math.floor(max(first_run) * (1 - beside)) > 10
    # a dry run neither reads nor keeps hints: it writes nothing, in the state or anywhere else
    count = len(sandbox.api_requests())
    run(sandbox, "--providers", "shopify", "--dry-run")
    assert firsts(sandbox.api_requests()[count:])[0] == 9


def test_a_late_indexed_product_in_the_lookback_window_arrives_with_every_variant(many_variants_last, run, dirs):
    """Only versions already written are passed over: one that Shopify's search index shows late,
    with an updatedAt just under the high-water mark, is fetched in full."""
    sandbox = many_variants_last
    run(sandbox, "--providers", "shopify")
    newest = max(sandbox.products.values(), key=lambda p: p["updatedAt"])
    late_time = (datetime.fromisoformat(newest["updatedAt"]) - timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    late_id = "gid://shopify/Product/9999999"
    sandbox.products[late_id] = {**newest, "id": late_id, "title": "Late Lantern", "updatedAt": late_time}
    sandbox._sorted = None
    result, second = run(sandbox, "--providers", "shopify")
    assert second["providers"]["shopify"]["written"] == 1
    late = [r for r in parquet_rows(dirs["data"]) if r["source_id"] == late_id]
    assert len(late) == 1 and len(late[0]["variants"]) == 30


def test_every_variant_arrives_for_products_with_more_than_one_page(sandbox, run, dirs):
    run(sandbox)
    rows = {r["source_id"]: r for r in parquet_rows(dirs["data"])}
    for pid, product in sandbox.products.items():
        assert len(rows[pid]["variants"]) == len(product["variants"])
    assert max(len(p["variants"]) for p in sandbox.products.values()) > 10


def test_free_items_are_kept_with_price_zero(sandbox, run, dirs):
    run(sandbox)
    free = [r for r in parquet_rows(dirs["data"]) if r["price"] is not None and r["price"] == 0]
    assert len(free) == 100 // 23


def test_dry_run_writes_nothing_and_prints_what_it_would_write(sandbox, run, dirs):
    result, record = run(sandbox, "--dry-run", "--providers", "shopify", "--limit", "10")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("  would write  ") == 10
    assert not dirs["data"].exists()
    assert record["dry_run"] is True and record["limited"] is True
    assert record["providers"]["shopify"]["fetched"] == 10


def test_runs_from_root_directory_as_cron_would(sandbox, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(SHOPIFY_API_BASE_URL=sandbox.base_url, SHOPIFY_SHOP_DOMAIN=SHOP, SHOPIFY_ACCESS_TOKEN=TOKEN,
               PIPELINE_DATA_DIR=str(tmp_path / "data"), PIPELINE_LOGS_DIR=str(tmp_path / "logs"),
               PIPELINE_CACHE_DIR=str(tmp_path / "cache"))
    command = [sys.executable, str(REPO / "pipelines" / "run_pipeline.py"), "--dry-run", "--providers",
               "shopify", "--limit", "10"]
    completed = subprocess.run(command, cwd="/", env=env, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.count("  would write  ") == 10
    assert not (tmp_path / "data").exists()
    assert not Path("/data").exists() and not Path("/logs/runs.jsonl").exists()


def test_duckdb_reads_the_dataset_with_hive_partitions(sandbox, run, dirs):
    run(sandbox)
    sandbox.mutate(0.05)
    run(sandbox)
    glob = f"{dirs['data']}/normalized/**/*.parquet"
    latest = duckdb.sql(f"""
        SELECT count(*) FROM (
          SELECT *, row_number() OVER (PARTITION BY source, account, source_id
                                       ORDER BY source_updated_at DESC, fetched_at DESC) AS n
          FROM read_parquet('{glob}', hive_partitioning = true, union_by_name = true)) WHERE n = 1
    """).fetchall()[0][0]
    assert latest == 100
    sources = duckdb.sql(f"SELECT DISTINCT source, date FROM read_parquet('{glob}', hive_partitioning=true)").fetchall()
    assert [s[0] for s in sources] == ["shopify"]


def test_a_locked_provider_is_skipped_and_touches_nothing(sandbox, run, dirs):
    lock = FileLease(lock_path(dirs["data"], UnitId("shopify", SHOP)))
    assert lock.acquire()
    try:
        result, record = run(sandbox)
    finally:
        lock.release()
    assert result.exit_code == 75
    assert "locked by another run" in result.output and str(lock.path) in result.output
    assert record["providers"]["shopify"]["status"] == "locked"
    assert sandbox.api_requests() == []
    assert not (dirs["data"] / "normalized").exists() and not (dirs["data"] / "state").exists()
    assert not dirs["cache"].exists()


def test_auth_failure_fails_the_provider_with_exit_1_and_writes_nothing(sandbox, run, dirs):
    result, record = run(sandbox, env={"SHOPIFY_ACCESS_TOKEN": "shpat_wrong_test_token"})
    assert result.exit_code == 1
    entry = record["providers"]["shopify"]
    assert entry["status"] == "failed" and entry["error_type"] == "AuthError"
    assert "HTTP 401" in entry["error"]
    assert parquet_rows(dirs["data"]) == []
    assert len(sandbox.api_requests()) == 1  # auth errors are not retried
    assert "shpat_wrong_test_token" not in Path(entry["traceback"]).read_text()


@pytest.mark.parametrize("bad_percent, committed", [(0, True), (1, True), (2, True), (3, False), (50, False)])
def test_quarantine_threshold(sandbox, run, dirs, bad_percent, committed):
    ids = sorted(sandbox.products)[:bad_percent]  # 100 products: k ids = k percent
    for pid in ids:
        sandbox.products[pid] = {**sandbox.products[pid], "priceRangeV2": {
            "minVariantPrice": {"amount": "-1.00", "currencyCode": "USD"},
            "maxVariantPrice": {"amount": "-1.00", "currencyCode": "USD"}}}
    sandbox._sorted = None
    result, record = run(sandbox)
    entry = record["providers"]["shopify"]
    assert entry["quarantined"] == bad_percent
    assert result.exit_code == (0 if committed else 1)
    assert len(parquet_rows(dirs["data"])) == (100 - bad_percent if committed else 0)
    lines = [json.loads(line) for f in (dirs["data"] / "quarantine").rglob("*.jsonl")
             for line in f.read_text().splitlines()] if bad_percent else []
    assert sorted(line["record"]["id"] for line in lines) == ids
    assert all(line["field"] == "priceRangeV2.minVariantPrice.amount" and line["raw_hash"] for line in lines)
    if not committed:
        assert entry["status"] == "failed" and entry["error_type"] == "QualityGateFailed"
        assert not (dirs["data"] / "state" / f"shopify.{SHOP}.products.sqlite").exists() or _hwm(dirs) is None


def _hwm(dirs):
    import sqlite3

    con = sqlite3.connect(dirs["data"] / "state" / f"shopify.{SHOP}.products.sqlite")
    row = con.execute("SELECT value FROM meta WHERE key='high_water_mark'").fetchone()
    return row and json.loads(row[0])


def test_no_provider_configured_is_a_configuration_error(run):
    result, record = run(None)
    assert result.exit_code == 2
    assert "no provider is configured" in result.output
    assert record is None


def test_named_provider_without_credentials_is_a_configuration_error(run):
    result, _ = run(None, "--providers", "shopify", env={"SHOPIFY_SHOP_DOMAIN": SHOP})
    assert result.exit_code == 2
    assert "SHOPIFY_ACCESS_TOKEN" in result.output


def test_unknown_provider_is_a_usage_error(sandbox, run):
    result, _ = run(sandbox, "--providers", "shopify,etsy")
    assert result.exit_code == 2
    assert "etsy" in result.output


def test_unconfigured_providers_are_recorded_as_skipped(sandbox, run):
    result, record = run(sandbox)
    for provider in ("amazon", "ebay"):
        entry = record["providers"][provider]
        assert (entry["status"], entry["reason"], entry.get("fetched", 0)) == ("skipped", "not configured", 0)


def test_run_log_line_has_the_documented_fields(sandbox, run, dirs):
    run(sandbox)
    lines = (dirs["logs"] / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    for key in ("run_id", "started_at", "finished_at", "duration_s", "status", "options", "providers"):
        assert key in record
    entry = record["providers"]["shopify"]
    for key in ("status", "fetched", "quarantined", "duplicates", "written", "requests", "retries",
                "throttle_wait_s", "high_water_mark"):
        assert key in entry
    assert TOKEN not in lines[0]


def test_sandbox_faults_are_retried_and_recorded(sandbox, run, dirs, clock):
    from sandbox.server import Fault

    sandbox.inject(Fault("status", status=503, times=2))
    sandbox.inject(Fault("status", status=429, headers={"Retry-After": "3"}))
    result, record = run(sandbox)
    assert result.exit_code == 0, result.output
    entry = record["providers"]["shopify"]
    assert entry["retries"] == 3 and entry["written"] == 100
    assert 3 in clock.sleeps
    assert [e["status"] for e in sandbox.api_requests()[:4]] == [503, 503, 429, 200]


def test_a_redirect_fails_the_provider_and_no_credential_follows_it(sandbox, run, dirs):
    from sandbox.server import Fault

    with type(sandbox)(token=TOKEN) as elsewhere:
        sandbox.inject(Fault("redirect", location=f"{elsewhere.base_url}/admin/api/2026-10/graphql.json"))
        result, record = run(sandbox)
        assert elsewhere.log == []
    assert result.exit_code == 1
    assert record["providers"]["shopify"]["error_type"] == "RedirectRefused"
    assert parquet_rows(dirs["data"]) == []


def test_output_is_group_readable_and_everything_else_is_the_owners_alone(sandbox, run, dirs):
    import stat

    run(sandbox, "--verbose")
    run(sandbox, "--dry-run")  # development runs use the cache
    [parquet] = list((dirs["data"] / "normalized").rglob("*.parquet"))
    assert stat.S_IMODE(parquet.stat().st_mode) == 0o640
    private = [dirs["logs"] / "runs.jsonl", dirs["data"] / "state" / f"shopify.{SHOP}.products.sqlite",
               *(dirs["cache"] / "shopify" / SHOP).iterdir()]  # a cache per account
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in private), [oct(p.stat().st_mode) for p in private]
    assert stat.S_IMODE((dirs["cache"] / "shopify" / SHOP).stat().st_mode) == 0o700


def test_verbose_output_shows_requests_but_never_the_token(sandbox, run):
    result, _ = run(sandbox, "--verbose")
    assert "POST /admin/api/2026-10/graphql.json -> 200" in result.output
    assert TOKEN not in result.output


def test_since_and_full_refresh_override_the_high_water_mark(sandbox, run, dirs):
    run(sandbox)
    result, record = run(sandbox, "--full-refresh")
    assert record["providers"]["shopify"]["fetched"] == 100 and record["providers"]["shopify"]["written"] == 0
    result, record = run(sandbox, "--since", "2026-10-01T00:00:00Z")
    fetched = record["providers"]["shopify"]["fetched"]
    assert 0 < fetched < 100
    result, _ = run(sandbox, "--since", "2026-10-01", "--full-refresh")
    assert result.exit_code == 2


def test_a_since_in_the_future_never_moves_the_high_water_mark_past_unseen_changes(sandbox, run, dirs):
    run(sandbox)
    _, record = run(sandbox, "--since", "2030-01-01T00:00:00Z")
    assert record["providers"]["shopify"]["fetched"] == 0
    changed = sandbox.mutate(0.03)
    _, record = run(sandbox)
    assert record["providers"]["shopify"]["written"] == len(changed)


def test_a_limited_run_does_not_advance_the_high_water_mark(sandbox, run, dirs):
    _, limited = run(sandbox, "--limit", "10")
    assert limited["providers"]["shopify"]["written"] == 10 and _hwm(dirs) is None
    _, full = run(sandbox)
    assert full["providers"]["shopify"]["written"] == 90


def test_writing_runs_never_use_the_cache_and_development_runs_replay_it(sandbox, run, dirs):
    result, first = run(sandbox)
    assert not dirs["cache"].exists()
    _, dev = run(sandbox, "--dry-run")
    requests_made = len(sandbox.api_requests())
    _, dev_again = run(sandbox, "--dry-run")
    assert len(sandbox.api_requests()) == requests_made  # replayed from the cache
    assert dev_again["providers"]["shopify"]["cache_hits"] == dev["providers"]["shopify"]["requests"]
    changed = sandbox.mutate(0.03)
    _, real = run(sandbox)
    assert real["providers"]["shopify"]["written"] == len(changed) and real["providers"]["shopify"]["cache_hits"] == 0

"""A downloaded bulk result read by worker processes (pipelines/bulk_split.py): the same rows and
quarantine as one process, a worker's death fails the unit and leaves its state for the next run,
and files that are small or not in grouped order stay in one process."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from connectors import shopify_bulk
from normalize import shopify as shopify_normalizer
from pipelines import bulk_split, stages
from storage.paths import UnitId
from storage.state import ProviderState, state_path
from tests.conftest import SHOP, TOKEN, catalog_requests

COLUMNS_IGNORED = {"run_id", "fetched_at"}  # the run's own, not the product's


def all_rows(data) -> dict[str, dict]:
    rows = {}
    for path in sorted((data / "normalized" / "products").rglob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            rows[row["source_id"]] = {k: v for k, v in row.items() if k not in COLUMNS_IGNORED}
    return rows


def quarantined(data) -> list[tuple]:
    entries = []
    for path in sorted((data / "quarantine").rglob("*.jsonl")):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            record = json.dumps(entry["record"], sort_keys=True)
            entries.append((entry["reason"], entry["field"], entry["raw_hash"], record))
    return sorted(entries)


@pytest.fixture
def rich():
    from sandbox.catalog import CatalogSpec
    from sandbox.shopify import ShopifySandbox

    with ShopifySandbox(CatalogSpec(size=600, rich=True), token=TOKEN, throttle=False) as server:
        server.bulk_shuffle = False  # Shopify's usual order: a product's line, then its variants'
        yield server


@pytest.fixture(autouse=True)
def two_workers(monkeypatch):
    """Two workers, whatever the default and however many cores this machine has."""
    monkeypatch.setenv("PIPELINE_BULK_WORKERS", "2")
    monkeypatch.setattr(stages, "CORES", 2)


def test_one_worker_asked_for_reads_a_large_downloaded_result_in_this_process(rich, run, dirs, monkeypatch):
    calls = spy_on_splits(monkeypatch)
    monkeypatch.setattr(shopify_bulk, "SPLIT_MIN_LINES", 1)
    result, record = run(rich, "--full-refresh", env={"PIPELINE_BULK_WORKERS": "1"})
    assert result.exit_code == 0, result.output
    assert calls == [] and record["providers"]["shopify"]["written"] == 600


def test_by_default_two_workers_read_it_and_never_more_than_the_cores(rich, run, dirs, monkeypatch):
    calls = spy_on_splits(monkeypatch)
    monkeypatch.setattr(shopify_bulk, "SPLIT_MIN_LINES", 1)
    assert run(rich, "--full-refresh", env={"PIPELINE_BULK_WORKERS": None})[0].exit_code == 0
    monkeypatch.setattr(stages, "CORES", 1)  # a one-core machine
    assert run(rich, "--full-refresh", env={"PIPELINE_BULK_WORKERS": "4"})[0].exit_code == 0
    assert calls == [2]


def spy_on_splits(monkeypatch) -> list:
    """Each call of the split path, recorded (it runs in this process; its workers do not)."""
    calls = []
    real = bulk_split.normalized_batches

    def spy(downloaded, job, workers=bulk_split.WORKERS):
        calls.append(workers)
        return real(downloaded, job, workers=2)

    monkeypatch.setattr(bulk_split, "normalized_batches", spy)
    return calls


def test_two_processes_write_exactly_the_rows_and_quarantine_of_one(rich, run, dirs, tmp_path, monkeypatch):
    # One product breaks a rule (a negative price): it must be quarantined the same way both times.
    pid = next(iter(rich.products))
    rich.products[pid] = {**rich.products[pid], "priceRangeV2": {
        "minVariantPrice": {"amount": "-1.00", "currencyCode": "USD"},
        "maxVariantPrice": {"amount": "-1.00", "currencyCode": "USD"}}}
    rich._sorted = None
    result, _ = run(rich, "--full-refresh")
    assert result.exit_code == 0, result.output
    one, one_quarantined = all_rows(dirs["data"]), quarantined(dirs["data"])
    dirs["data"].rename(tmp_path / "one-process")
    calls = spy_on_splits(monkeypatch)
    monkeypatch.setattr(shopify_bulk, "SPLIT_MIN_LINES", 1)
    result, record = run(rich, "--full-refresh")
    assert result.exit_code == 0, result.output
    assert calls == [2]
    assert len(one) == 599 and all_rows(dirs["data"]) == one  # every column, raw_hash included
    assert len(one_quarantined) == 1 and quarantined(dirs["data"]) == one_quarantined
    entry = record["providers"]["shopify"]
    assert (entry["fetched"], entry["written"], entry["quarantined"]) == (600, 599, 1)
    # Read again whole: dedup drops every row the split path already wrote.
    result, record = run(rich, "--full-refresh")
    entry = record["providers"]["shopify"]
    assert calls == [2] * 2 and (entry["written"], entry["duplicates"]) == (0, 599)
    # A no-change rerun still asks for one page of the lookback window and writes nothing.
    before = len(catalog_requests(rich))
    result, record = run(rich)
    assert result.exit_code == 0, result.output
    assert len(catalog_requests(rich)) - before == 1 and record["providers"]["shopify"]["written"] == 0


def test_a_dying_worker_fails_the_unit_and_the_next_run_redoes_it(rich, run, dirs, monkeypatch):
    monkeypatch.setattr(shopify_bulk, "SPLIT_MIN_LINES", 1)
    result, record = run(rich, "--full-refresh", env={"PIPELINE_CRASH_AT": "in_bulk_worker"})
    assert result.exit_code == 1, result.output
    entry = record["providers"]["shopify"]
    assert entry["status"] == "failed" and entry["error_type"] == "WorkerFailed"
    assert not list((dirs["data"] / "normalized").rglob("*.parquet"))
    state = ProviderState.open(state_path(dirs["data"], UnitId("shopify", SHOP)))
    try:
        assert state.latest_count() == 0 and state.get("high_water_mark") is None
        assert state.get("shopify_bulk_operation")  # the checkpoint stays: the next run resumes it
    finally:
        state.close()
    result, record = run(rich, env={"PIPELINE_CRASH_AT": None})
    assert result.exit_code == 0, result.output
    assert record["providers"]["shopify"]["written"] == 600 and len(rich.bulk_operations) == 1


def broken_cursor(raw):
    raise RuntimeError("no cursor today")


def test_a_worker_that_raises_fails_with_its_error_and_stops_the_others(tmp_path):
    lines = []
    for p in range(1, 40):
        lines += ['{"id":"gid://shopify/Product/%d","title":"P"}' % p,
                  '{"id":"v%d","__parentId":"gid://shopify/Product/%d"}' % (p, p)]
    downloaded = shopify_bulk.DownloadedResult(tmp_path / "r.jsonl", tmp_path / "spool.sqlite")
    downloaded.path.write_text("".join(f"{line}\n" for line in lines))
    job = bulk_split.Job(shopify_normalizer.to_product, ("shopify", 1), broken_cursor, ("products",), SHOP, "r", None)
    with pytest.raises(bulk_split.WorkerFailed, match="RuntimeError: no cursor today"):
        list(bulk_split.normalized_batches(downloaded, job, workers=2))


def test_ranges_start_at_product_lines_and_cover_the_file(tmp_path):
    lines = []
    for p in range(1, 300):
        lines.append('{"id":"gid://shopify/Product/%d","title":"%s"}' % (p, "x" * (p % 17)))
        lines += ['{"id":"v%d","__parentId":"gid://shopify/Product/%d"}' % (v, p) for v in range(p % 5)]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(f"{line}\n" for line in lines))
    downloaded = shopify_bulk.DownloadedResult(path, tmp_path / "spool.sqlite")
    for parts in (1, 2, 3, 7):
        ranges = downloaded.ranges(parts)
        assert ranges[0][0] == 0 and ranges[-1][1] == path.stat().st_size
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        products = [p for start, end in ranges for p in downloaded.products(start, end)]
        assert products == list(downloaded)  # each product whole, in file order


def test_a_small_or_shuffled_result_is_read_in_one_process(run, dirs, monkeypatch):
    from sandbox.catalog import CatalogSpec
    from sandbox.shopify import ShopifySandbox

    calls = spy_on_splits(monkeypatch)
    with ShopifySandbox(CatalogSpec(size=300, rich=True), token=TOKEN, throttle=False) as shuffled:
        result, record = run(shuffled, "--full-refresh")  # under SPLIT_MIN_LINES
        assert result.exit_code == 0 and calls == []
        monkeypatch.setattr(shopify_bulk, "SPLIT_MIN_LINES", 1)
        result, record = run(shuffled, "--full-refresh")  # split, but the workers find it shuffled
        assert result.exit_code == 0, result.output
        assert calls == [2] and record["providers"]["shopify"]["fetched"] == 300


def test_worker_batches_go_into_a_delta_table_too(rich, run, dirs, monkeypatch):
    from deltalake import DeltaTable

    calls = spy_on_splits(monkeypatch)
    monkeypatch.setattr(shopify_bulk, "SPLIT_MIN_LINES", 1)
    result, record = run(rich, "--full-refresh", "--table-format", "delta")
    assert result.exit_code == 0, result.output
    assert calls and record["providers"]["shopify"]["written"] == 600
    table = DeltaTable(str(dirs["data"] / "normalized" / "products")).to_pyarrow_dataset().to_table()
    assert sorted(table.column("source_id").to_pylist()) == sorted(rich.products)


def test_a_dry_run_over_worker_batches_writes_nothing_and_shows_samples(rich, run, dirs, monkeypatch):
    monkeypatch.setattr(shopify_bulk, "SPLIT_MIN_LINES", 1)
    result, record = run(rich, "--full-refresh", "--dry-run")
    assert result.exit_code == 0, result.output
    assert record["providers"]["shopify"]["written"] == 600
    assert result.output.count("  would write  gid://shopify/Product/") == 20  # the samples, as Arrow rows
    assert not list(dirs["data"].rglob("*.parquet"))

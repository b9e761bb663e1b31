"""Shopify bulk operations: start, poll (resuming after a crash), download without credentials,
assemble children that arrive before their parents, and FAILED / EXPIRED / not-permitted cases."""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from connectors import shopify, shopify_bulk
from connectors.http import HttpSettings
from connectors.settings import ShopifySettings
from storage.paths import UnitId
from storage.state import ProviderState, state_path
from tests.conftest import SHOP, TOKEN, parquet_rows
from tests.procs import content


def test_assembly_handles_children_before_their_parents(tmp_path):
    lines = []
    for p in range(1, 51):
        lines.append(json.dumps({"id": f"gid://shopify/Product/{p}", "title": f"P{p}"}))
        lines += [json.dumps({"id": f"gid://shopify/ProductVariant/{p}{v}", "__parentId": f"gid://shopify/Product/{p}"})
                  for v in range(p % 4)]
    random.Random(7).shuffle(lines)
    assert any(json.loads(a).get("__parentId") for a in lines[:5])  # some children do come first
    products = list(shopify_bulk.assemble(iter(lines), tmp_path / "spool.sqlite"))
    assert sorted(int(p["id"].rsplit("/", 1)[1]) for p in products) == list(range(1, 51))
    for product in products:
        p = int(product["id"].rsplit("/", 1)[1])
        assert sorted(v["id"] for v in product["variants"]) == [f"gid://shopify/ProductVariant/{p}{v}" for v in range(p % 4)]


def test_a_bulk_full_refresh_matches_a_paged_crawl_row_for_row(sandbox, run, dirs, tmp_path):
    result, paged = run(sandbox)
    assert not sandbox.bulk_operations
    paged_rows = content(dirs["data"].parent)
    dirs["data"].rename(tmp_path / "paged-data")
    result, bulk = run(sandbox, "--full-refresh")
    assert result.exit_code == 0, result.output
    assert len(sandbox.bulk_operations) == 1
    assert content(dirs["data"].parent) == paged_rows  # same raw_hash whichever way a product came
    rows = {r["source_id"]: r for r in parquet_rows(dirs["data"])}
    assert all(len(rows[pid]["variants"]) == len(p["variants"]) for pid, p in sandbox.products.items())
    downloads = sandbox.storage.api_requests()
    assert len(downloads) == 1
    headers = {k.lower() for k in downloads[0]["headers"]}
    assert "x-shopify-access-token" not in headers and "authorization" not in headers
    signature = downloads[0]["query"]
    assert signature and signature not in result.output and signature not in (dirs["logs"] / "runs.jsonl").read_text()


def test_a_first_run_over_a_large_shop_uses_bulk(sandbox, run):
    result, record = run(sandbox, env={"SHOPIFY_BULK_MIN_PRODUCTS": "50"})
    assert result.exit_code == 0 and len(sandbox.bulk_operations) == 1
    assert record["providers"]["shopify"]["written"] == 100


@pytest.mark.parametrize("outcome", ["FAILED", "EXPIRED", "CANCELED"])
def test_a_failed_or_expired_operation_fails_the_provider_cleanly(sandbox, run, dirs, outcome):
    sandbox.bulk_outcome = outcome
    result, record = run(sandbox, "--full-refresh")
    entry = record["providers"]["shopify"]
    assert result.exit_code == 1 and entry["error_type"] == "BulkFailed" and outcome in entry["error"]
    assert parquet_rows(dirs["data"]) == []
    sandbox.bulk_outcome = "COMPLETED"
    result, record = run(sandbox, "--full-refresh")  # the dead operation is not resumed
    assert result.exit_code == 0 and len(sandbox.bulk_operations) == 2


def test_a_failed_download_names_the_host_and_never_the_signed_url(sandbox, run, dirs):
    sandbox.storage.stop()  # the storage host refuses connections
    result, record = run(sandbox, "--full-refresh")
    entry = record["providers"]["shopify"]
    assert result.exit_code == 1 and entry["error_type"] == "ResponseError"
    assert "127.0.0.1" in entry["error"] and "download" in entry["error"]
    assert "the next run resumes the same operation" in entry["error"]
    written = [result.output, (dirs["logs"] / "runs.jsonl").read_text(),
               *(p.read_text() for p in (dirs["logs"] / "tracebacks").glob("*.txt"))]
    for text in written:
        assert "Signature" not in text and "/bulk/" not in text
    state = ProviderState.open(state_path(dirs["data"], UnitId("shopify", SHOP)), read_only=True)
    assert state.get("shopify_bulk_operation") == "gid://shopify/BulkOperation/1"  # resumed next run
    state.close()


def test_bulk_not_permitted_falls_back_to_paging(sandbox, run):
    sandbox.bulk_denied = True
    result, record = run(sandbox, "--full-refresh")
    assert result.exit_code == 0 and record["providers"]["shopify"]["written"] == 100
    assert "paging instead" in result.output


class Crash(Exception):
    pass


def test_a_crash_while_polling_resumes_the_same_operation(sandbox, clock):
    sandbox.bulk_polls_to_finish = 6
    shop = ShopifySettings("test-shop.myshopify.com", "2026-10", SecretStr(TOKEN), sandbox.base_url, bulk_min_products=0)
    store: dict = {}
    checkpoint = shopify_bulk.Checkpoint(type("Store", (), {"get": lambda s, k: store.get(k),
                                                            "set": lambda s, k, v: store.__setitem__(k, v),
                                                            "delete": lambda s, k: store.pop(k, None)})())
    polls = []

    def dying_sleep(seconds):
        polls.append(seconds)
        if len(polls) == 2:
            raise Crash("the run died here")

    first = shopify.make_client(shop, HttpSettings(), sleep=dying_sleep, clock=clock)
    with pytest.raises(Crash):
        list(shopify.iter_records(first, shop, full_refresh=True, checkpoint=checkpoint, clock=clock))
    assert store.get("shopify_bulk_operation") == "gid://shopify/BulkOperation/1"
    second = shopify.make_client(shop, HttpSettings(), sleep=clock.sleep, clock=clock)
    records = list(shopify.iter_records(second, shop, full_refresh=True, checkpoint=checkpoint, clock=clock))
    assert len(records) == 100 and len(sandbox.bulk_operations) == 1  # resumed, not restarted
    assert "shopify_bulk_operation" not in store  # cleared once the result is in


def test_polling_backs_off_without_sleeping_for_real(sandbox, run, clock):
    sandbox.bulk_polls_to_finish = 5
    run(sandbox, "--full-refresh")
    waits = [w for w in clock.sleeps if w >= shopify_bulk.POLL_INTERVAL_S]
    assert len(waits) == 4 and waits == sorted(waits)


def bulk_lines(products: dict[str, list[dict]], order: str, compact: bool, ascii_only: bool) -> list[str]:
    """A bulk result's lines: grouped (a product, then its variants) or shuffled, written compact
    as Shopify does or with json.dumps's default spaces."""
    separators = (",", ":") if compact else (", ", ": ")
    lines = []
    for pid, variants in products.items():
        lines.append(json.dumps({"id": pid, "title": f"T {pid}", "tags": ["\"id\"", "a\\b"]},
                                separators=separators, ensure_ascii=ascii_only))
        lines += [json.dumps({**v, "__parentId": pid}, separators=separators, ensure_ascii=ascii_only)
                  for v in variants]
    if order == "shuffled":
        random.Random(len(lines)).shuffle(lines)
    return lines


@settings(max_examples=150, derandomize=True, deadline=None)
@given(st.dictionaries(st.text(st.characters(codec="utf-8"), min_size=1, max_size=8).map(lambda t: f"gid://shopify/Product/{t}"),
                       st.lists(st.fixed_dictionaries({"id": st.text(max_size=6), "title": st.text(max_size=10),
                                                       "price": st.sampled_from(["1.00", None, "0.00"])}), max_size=4),
                       max_size=8),
       st.sampled_from(["grouped", "shuffled"]), st.booleans(), st.booleans(), st.booleans())
def test_a_bulk_file_assembles_as_the_on_disk_index_does_in_any_order_and_form(products, order, compact, ascii_only,
                                                                               blank_lines):
    lines = bulk_lines(products, order, compact, ascii_only)
    if blank_lines:
        lines = [line for pair in zip(lines, [""] * len(lines)) for line in pair]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "result.jsonl"
        path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        fast = list(shopify_bulk.assemble_file(path, Path(tmp) / "fast.sqlite"))
        with path.open("rb") as handle:
            indexed = list(shopify_bulk.assemble(handle, Path(tmp) / "indexed.sqlite"))
    key = lambda p: p["id"]  # noqa: E731 - the index returns products in file order too, but say so
    assert sorted(fast, key=key) == sorted(indexed, key=key)
    assert [p["id"] for p in fast] == [p["id"] for p in indexed]


def test_a_grouped_bulk_file_streams_without_the_on_disk_index(tmp_path, monkeypatch):
    monkeypatch.setattr(shopify_bulk, "assemble", lambda *a: pytest.fail("used the on-disk index"))
    products = {f"gid://shopify/Product/{p}": [{"id": f"gid://shopify/ProductVariant/{p}{v}"} for v in range(p % 4)]
                for p in range(1, 30)}
    path = tmp_path / "result.jsonl"
    path.write_text("".join(f"{line}\n" for line in bulk_lines(products, "grouped", True, False)))
    assembled = list(shopify_bulk.assemble_file(path, tmp_path / "spool.sqlite"))
    assert {p["id"]: [v["id"] for v in p["variants"]] for p in assembled} == {
        pid: [v["id"] for v in variants] for pid, variants in products.items()}


def test_a_line_the_quick_check_misreads_fails_loudly_rather_than_misplace_a_variant(tmp_path):
    """A variant line whose __parentId is not among its last bytes reads, by its bytes, as a product."""
    lines = ['{"id":"gid://shopify/Product/1"}', '{"id":"gid://shopify/Product/2"}',
             '{"id":"v1","__parentId":"gid://shopify/Product/1","title":"%s"}' % ("late " * 60)]
    path = tmp_path / "result.jsonl"
    path.write_text("".join(f"{line}\n" for line in lines))
    with pytest.raises(shopify_bulk.NotGrouped):
        list(shopify_bulk.assemble_file(path, tmp_path / "spool.sqlite"))


def test_a_rich_catalogs_bulk_result_streams_from_disk_and_matches_a_paged_crawl(run, dirs, tmp_path):
    """A lazily built rich catalog, its bulk result written to disk in Shopify's usual order and
    read by the one-pass path: the same rows, raw_hash for raw_hash, as paging gives."""
    from sandbox.catalog import CatalogSpec
    from sandbox.shopify import ShopifySandbox

    with ShopifySandbox(CatalogSpec(size=1000, rich=True), token=TOKEN, throttle=False) as rich:
        rich.bulk_shuffle = False
        result, _ = run(rich)
        assert result.exit_code == 0, result.output
        paged_rows = content(dirs["data"].parent)
        dirs["data"].rename(tmp_path / "paged-data")
        result, _ = run(rich, "--full-refresh")
        assert result.exit_code == 0, result.output
        (name, served), = rich.storage.files.items()
        assert isinstance(served, Path) and b"descriptionHtml" not in served.read_bytes()  # the query's fields only
    assert len(paged_rows) == 1000 and content(dirs["data"].parent) == paged_rows
    rows = {r["source_id"]: r for r in parquet_rows(dirs["data"])}
    assert max(len(r["variants"]) for r in rows.values()) > 100

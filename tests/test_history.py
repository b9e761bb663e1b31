"""Product history (SCD type 2), the current catalog and price changes: the views over the
append-only dataset, on versions written as the pipeline writes them; and dedup per product."""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

from normalize import ebay as ebay_normalizer
from normalize.models import Product, ProductDeletion
from pipelines.query import connect, run
from pipelines.stages import keep_new, normalize_batch
from storage.datasets import local_tables
from storage.parquet import PartitionWriter
from storage.paths import UnitId
from storage.quarantine import Quarantine
from storage.state import ProviderState, state_path
from tests.conftest import load_fixture

UNIT = UnitId("shopify", "shop")
T0 = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)
RUNS = iter(f"20261101T{h:02d}{m:02d}00Z-abcdef" for h in range(24) for m in range(60))


def version(pid: str, price: str, *, updated: datetime | None, fetched: datetime, title: str = "Mug",
            raw: str | None = None, source: str = "shopify", **extra) -> Product:
    """One version of a product as a normalizer makes it; `raw` stands for the provider record
    (the raw_hash), which may differ while the content does not."""
    raw = raw if raw is not None else f"{pid}/{price}/{title}/{updated}/{extra}"
    return Product(source=source, account="shop", source_id=pid, title=title, price=Decimal(price), currency="EUR",
                   source_updated_at=updated, fetched_at=fetched, run_id=next(RUNS),
                   raw_hash=hashlib.sha256(raw.encode()).hexdigest(), **extra)


def deletion(pid: str, at: datetime) -> ProductDeletion:
    return ProductDeletion(source="shopify", account="shop", source_id=pid, deleted_at=at, event_id=f"gid://e/{pid}",
                           fetched_at=at + timedelta(hours=1), run_id=next(RUNS),
                           raw_hash=hashlib.sha256(f"deleted {pid}".encode()).hexdigest())


def write(data_dir, *runs: list) -> None:
    """Each list is one run's rows, written in that order (the order they were fetched)."""
    for rows in runs:
        run_id = next(RUNS)
        for table in ("products", "product_deletions"):
            batch = [r for r in rows if isinstance(r, ProductDeletion) == (table == "product_deletions")]
            if batch:
                writer = PartitionWriter(data_dir, UNIT, run_id, date(2026, 11, 1), 0o600, table=table)
                writer.add(batch)
                writer.close()


def query(tmp_path, sql: str) -> list[dict]:
    con, _ = connect(local_tables(tmp_path / "data", tmp_path / "logs"))
    return run(con, sql).to_pylist()


def history(tmp_path, pid: str = "p1") -> list[tuple]:
    return [(r["price"], r["valid_from"], r["valid_to"], r["is_current"], r["is_deleted"]) for r in query(
        tmp_path, f"SELECT * FROM products_history WHERE source_id = '{pid}' ORDER BY valid_from")]


def assert_one_unbroken_chain(tmp_path) -> None:
    rows = query(tmp_path, "SELECT * FROM products_history ORDER BY source_id, valid_from")
    by_product: dict[str, list] = {}
    for r in rows:
        by_product.setdefault(r["source_id"], []).append(r)
    for chain in by_product.values():
        for before, after in zip(chain, chain[1:]):
            assert before["valid_to"] == after["valid_from"]  # no gap, no overlap
            assert not before["is_current"] and not before["is_deleted"]
        assert sum(r["is_current"] for r in chain) == (0 if chain[-1]["is_deleted"] else 1)


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def test_versions_fetched_out_of_order_still_make_one_chain_by_the_providers_time(tmp_path):
    # A lookback re-read brings the version of hour 1 after the version of hour 2 was written.
    write(tmp_path / "data", [version("p1", "10", updated=h(0), fetched=h(0.5))],
          [version("p1", "12", updated=h(2), fetched=h(2.5))],
          [version("p1", "11", updated=h(1), fetched=h(3))])
    assert history(tmp_path) == [(Decimal("10"), h(0), h(1), False, False), (Decimal("11"), h(1), h(2), False, False),
                                 (Decimal("12"), h(2), None, True, False)]
    assert_one_unbroken_chain(tmp_path)


def test_two_versions_with_one_timestamp_keep_the_one_fetched_last(tmp_path):
    write(tmp_path / "data", [version("p1", "10", updated=h(0), fetched=h(0))],
          [version("p1", "12", updated=h(1), fetched=h(1)), version("p1", "13", updated=h(1), fetched=h(1.5))])
    assert history(tmp_path) == [(Decimal("10"), h(0), h(1), False, False), (Decimal("13"), h(1), None, True, False)]
    assert_one_unbroken_chain(tmp_path)


def test_a_deletion_closes_the_chain_and_leaves_no_current_row(tmp_path):
    write(tmp_path / "data", [version("p1", "10", updated=h(0), fetched=h(0)), version("p2", "5", updated=h(0), fetched=h(0))],
          [version("p1", "12", updated=h(1), fetched=h(1)), deletion("p1", h(3))])
    assert history(tmp_path) == [(Decimal("10"), h(0), h(1), False, False), (Decimal("12"), h(1), h(3), False, True)]
    assert [r["source_id"] for r in query(tmp_path, "SELECT source_id FROM products_current")] == ["p2"]
    assert_one_unbroken_chain(tmp_path)


def test_a_semantically_identical_re_read_makes_no_version(tmp_path):
    # Shopify moved updatedAt for a change the model does not keep (a metafield): the raw record
    # and its raw_hash differ, every column the model keeps is the same.
    write(tmp_path / "data", [version("p1", "10", updated=h(0), fetched=h(0))],
          [version("p1", "10", updated=h(1), fetched=h(1), raw="metafield changed")])
    assert history(tmp_path) == [(Decimal("10"), h(0), None, True, False)]
    assert query(tmp_path, "SELECT count(*) AS n FROM products") == [{"n": 2}]  # the log keeps both


def test_a_normalizer_version_bump_rewrites_rows_but_makes_no_version(tmp_path):
    # Amazon/eBay: no update time of their own, so valid_from is when a version was first fetched.
    first = [version(f"p{i}", "10", updated=None, fetched=h(0), source="ebay", raw=f"v1 {i}") for i in range(3)]
    bumped = [version(f"p{i}", "10", updated=None, fetched=h(5), source="ebay", raw=f"v2 {i}") for i in range(3)]
    write(tmp_path / "data", first, bumped)
    rows = query(tmp_path, "SELECT source_id, valid_from, is_current FROM products_history ORDER BY source_id")
    assert rows == [{"source_id": f"p{i}", "valid_from": h(0), "is_current": True} for i in range(3)]


def test_a_revert_is_a_version_and_price_changes_lists_each_change(tmp_path):
    prices = ["10", "12", "12", "10", "9.5"]  # the third read changes the title only
    titles = ["Mug", "Mug", "Mug XL", "Mug XL", "Mug XL"]
    write(tmp_path / "data", *[[version("p1", p, updated=h(i), fetched=h(i), title=t)]
                               for i, (p, t) in enumerate(zip(prices, titles))])
    assert [row[0] for row in history(tmp_path)] == [Decimal(p) for p in prices]
    changes = query(tmp_path, "SELECT * FROM price_changes ORDER BY changed_at")
    assert [(c["old_price"], c["new_price"], c["changed_at"], c["title"]) for c in changes] == [
        (Decimal("10"), Decimal("12"), h(1), "Mug"), (Decimal("12"), Decimal("10"), h(3), "Mug XL"),
        (Decimal("10"), Decimal("9.5"), h(4), "Mug XL")]
    assert set(changes[0]) == {"source", "account", "source_id", "title", "currency", "old_price", "new_price",
                               "changed_at"}


def test_dedup_writes_a_revert_that_comes_back_with_the_same_raw_record(tmp_path):
    # eBay records carry no update time: a price going 10 -> 12 -> 10 comes back byte for byte.
    raw = load_fixture("ebay", "search.json")["itemSummaries"][0]
    state = ProviderState.open(state_path(tmp_path, UnitId("ebay", "EBAY_US")))
    quarantine = Quarantine(tmp_path / "q.jsonl", enabled=False)
    written = []
    for run_id, price in zip(["20261101T000000Z-000001", "20261101T010000Z-000002", "20261101T020000Z-000003",
                              "20261101T030000Z-000004"], ["10.00", "12.00", "10.00", "10.00"]):
        record = {**raw, "price": {"value": price, "currency": "USD"}}
        products = normalize_batch([record], ebay_normalizer.to_product, ("ebay", ebay_normalizer.NORMALIZER_VERSION),
                                   account="EBAY_US", fetched_at=T0, run_id=run_id, quarantine=quarantine)
        written += [p.price for p in keep_new(products, state)]
        state.commit(run_id, [], {})
    state.close()
    assert written == [Decimal("10"), Decimal("12"), Decimal("10")]  # the last read repeats the latest


def test_views_over_missing_tables_are_absent(tmp_path):
    assert connect(local_tables(tmp_path / "data", tmp_path / "logs"))[1] == []
    write(tmp_path / "data", [version("p1", "10", updated=h(0), fetched=h(0))])
    _, views = connect(local_tables(tmp_path / "data", tmp_path / "logs"))
    assert views == ["products", "products_history", "products_current", "price_changes"]
    assert history(tmp_path) == [(Decimal("10"), h(0), None, True, False)]  # no deletions table: none closes


def test_orders_current_is_each_orders_latest_version_with_its_lines(tmp_path):
    from normalize.order_models import Order, OrderLine

    def order(oid: str, total: str, updated: datetime, raw: str):
        raw_hash = hashlib.sha256(raw.encode()).hexdigest()
        head = Order(source="shopify", account="shop", order_id=oid, updated_at=updated, currency="EUR",
                     total_price=Decimal(total), line_count=1, fetched_at=updated, run_id=next(RUNS), raw_hash=raw_hash)
        line = OrderLine(source="shopify", account="shop", order_id=oid, order_raw_hash=raw_hash, line_id=f"{oid}-1",
                         quantity=1, unit_price=Decimal(total), fetched_at=updated, run_id=head.run_id)
        return head, line

    versions = [order("o1", "20", h(0), "a"), order("o1", "15", h(2), "b"), order("o2", "7", h(1), "c")]
    unit = UnitId("shopify", "shop", "orders")
    for table, rows in (("orders", [o for o, _ in versions]), ("order_lines", [line for _, line in versions])):
        writer = PartitionWriter(tmp_path / "data", unit, next(RUNS), date(2026, 11, 1), 0o600, table=table)
        writer.add(rows)
        writer.close()
    current = query(tmp_path, "SELECT order_id, total_price FROM orders_current ORDER BY order_id")
    assert current == [{"order_id": "o1", "total_price": Decimal("15")}, {"order_id": "o2", "total_price": Decimal("7")}]
    lines = query(tmp_path, "SELECT order_id, unit_price FROM order_lines_current ORDER BY order_id")
    assert lines == [{"order_id": "o1", "unit_price": Decimal("15")}, {"order_id": "o2", "unit_price": Decimal("7")}]


def test_shopify_destroy_events_close_the_chains_of_deleted_products(run, dirs, sandbox):
    from connectors.shopify_events import EVENTS_QUERY

    assert "... on BasicEvent { subjectId subjectType }" in EVENTS_QUERY
    assert run(sandbox)[0].exit_code == 0
    gone = sandbox.delete(0.03)
    result, record = run(sandbox)
    assert result.exit_code == 0, result.output
    assert record["units"][0]["deleted"] == len(gone) == 3 and f"deletions {len(gone)}" in result.output
    _, again = run(sandbox)
    assert again["units"][0]["deleted"] == 0  # the lookback re-reads the events: written once
    bodies = [json.loads(r["body"]) for r in sandbox.api_requests() if r.get("body")]
    # asked beside each run's first page of products
    searches = [b["variables"]["destroyedQuery"] for b in bodies if "destroyed: events(" in b.get("query", "")]
    assert len(searches) == 3  # no event seen yet: every one Shopify keeps
    assert searches[0] == searches[1] == "action:destroy AND subject_type:PRODUCT"
    assert searches[2].startswith("action:destroy AND subject_type:PRODUCT AND created_at:>='")
    tables = local_tables(dirs["data"], dirs["logs"])
    con, _ = connect(tables)
    closed = run_sql(con, "SELECT source_id FROM products_history WHERE is_deleted ORDER BY source_id")
    assert [r["source_id"] for r in closed] == gone
    assert run_sql(con, "SELECT count(*) AS n FROM products_current") == [{"n": 97}]
    assert tables["product_deletions"].count_rows() == 3


def run_sql(con, sql: str) -> list[dict]:
    return run(con, sql).to_pylist()


def test_products_current_is_the_current_rows_of_the_history(tmp_path):
    """products_current is computed apart from products_history (a narrow pass, then the winners'
    columns): on versions out of order, ties, a revert, a re-read, a deletion and a product seen
    again after its deletion, it gives exactly the history's current rows."""
    write(tmp_path / "data",
          [version("p1", "10", updated=h(0), fetched=h(0)), version("p2", "5", updated=h(0), fetched=h(0)),
           version("p3", "7", updated=None, fetched=h(0), source="ebay")],
          [version("p1", "12", updated=h(2), fetched=h(2)), version("p1", "13", updated=h(2), fetched=h(2.5)),
           version("p2", "6", updated=h(1), fetched=h(1)), deletion("p2", h(3)), deletion("p4", h(0))],
          [version("p1", "11", updated=h(1), fetched=h(3)), version("p1", "13", updated=h(4), fetched=h(4), raw="re-read"),
           version("p2", "6", updated=h(5), fetched=h(5)), version("p3", "7", updated=None, fetched=h(6), source="ebay",
                                                                    raw="bump")])
    columns = "* EXCLUDE (valid_to, is_current, is_deleted)"
    expected = query(tmp_path, f"SELECT {columns} FROM products_history WHERE is_current ORDER BY source_id")
    assert query(tmp_path, "SELECT * FROM products_current ORDER BY source_id") == expected
    assert [(r["source_id"], r["price"], r["valid_from"]) for r in expected] == [
        ("p1", Decimal("13"), h(2)), ("p2", Decimal("6"), h(5)), ("p3", Decimal("7"), h(0))]

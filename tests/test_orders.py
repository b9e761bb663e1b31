"""The Shopify orders stream: every order and line item arrives (paging, bulk, more line items than
a page), no personal field is ever asked for, the customer hash, scopes, pacing shared with
products, Amazon's skip, the normalizer, and dedup (a rerun writes nothing; a refund writes that
order's new version)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timezone
from decimal import Decimal

import pyarrow.dataset as ds
import pytest
from graphql import parse, validate

from connectors import shopify_orders
from normalize import Rejected
from normalize.shopify_orders import to_order
from pipelines.run import Runtime
from sandbox.catalog import CatalogSpec
from sandbox.shopify import ShopifySandbox, admin_schema
from sandbox.shopify_orders import MANY_LINES
from tests.conftest import SHOP, TOKEN

FETCHED = datetime(2026, 11, 27, tzinfo=timezone.utc)
RUN = "20261127T000000Z-abcdef"
ORDERS = ["--streams", "orders"]
PERSONAL = {"email", "phone", "firstName", "lastName", "displayName", "addresses", "defaultAddress", "billingAddress",
            "shippingAddress", "address1", "address2", "clientIp", "browserIp", "note", "customAttributes",
            "customerLocale", "customerJourney", "customerJourneySummary"}
KEY = "k" * 40


@pytest.fixture
def shop():
    with ShopifySandbox(CatalogSpec(size=60), token=TOKEN, throttle=False, orders=40) as server:
        yield server


def table(dirs, name: str) -> list[dict]:
    root = dirs["data"] / "normalized" / name
    return ds.dataset(root, format="parquet", partitioning="hive").to_table().to_pylist() if root.exists() else []


def test_every_order_and_line_item_arrives_by_paging(shop, run, dirs):
    result, record = run(shop, *ORDERS, env={"SHOPIFY_BULK_MIN_PRODUCTS": "0"})
    assert result.exit_code == 0, result.output
    orders, lines = table(dirs, "orders"), table(dirs, "order_lines")
    book = shop.order_book.orders
    assert sorted(o["order_id"] for o in orders) == sorted(book)
    assert len(lines) == sum(len(o["lineItems"]) for o in book.values())
    big = [o for o in orders if o["line_count"] == MANY_LINES]
    assert big and all(sum(1 for li in lines if li["order_id"] == o["order_id"]) == MANY_LINES for o in big)
    by_hash = {o["raw_hash"] for o in orders}
    assert {li["order_raw_hash"] for li in lines} == by_hash  # each line tied to its order's version
    assert record["units"][0]["stream"] == "orders" and record["units"][0]["written"] == 40


def test_a_bulk_load_brings_the_same_orders_and_lines_as_paging(shop, run, dirs, clock):
    _, first = run(shop, *ORDERS, "--full-refresh")  # a bulk operation
    assert len(shop.bulk_operations) == 1 and first["units"][0]["written"] == 40
    assert len(table(dirs, "order_lines")) == sum(len(o["lineItems"]) for o in shop.order_book.orders.values())
    _, paged = run(shop, *ORDERS, "--since", "2020-01-01T00:00:00Z")  # every order again, by paging
    assert paged["units"][0]["fetched"] == 40 and paged["units"][0]["written"] == 0  # same content, same hashes


def test_no_query_the_connector_can_send_asks_for_personal_data():
    def fields(selection_set, path=()):
        for selection in selection_set.selections:
            name = selection.name.value
            yield path + (name,)
            if selection.selection_set is not None:
                yield from fields(selection.selection_set, path + (name,))

    for text in shopify_orders.QUERIES:
        document = parse(text)
        assert validate(admin_schema(), document) == [], text
        for path in fields(document.definitions[0].selection_set):
            assert path[-1] not in PERSONAL, f"{'.'.join(path)} in {text[:60]}"
            if "customer" in path:  # only in hash mode, and only its id, which is hashed at once
                assert path[path.index("customer"):] in (("customer",), ("customer", "id")), path
    plain = [q for q in shopify_orders.QUERIES if "customer" not in q]
    assert len(plain) >= 4  # the default queries select no customer field at all


def test_customer_ref_is_null_by_default_and_a_keyed_hash_when_asked(shop, run, dirs, tmp_path):
    run(shop, *ORDERS)
    assert {o["customer_ref"] for o in table(dirs, "orders")} == {None}
    key_file = tmp_path / "orders_key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    other = {"data": tmp_path / "hashed", "logs": tmp_path / "hashed_logs", "cache": tmp_path / "c"}
    dirs.update(other)
    run(shop, *ORDERS, env={"PIPELINE_ORDERS_CUSTOMER": "hash", "PIPELINE_ORDERS_CUSTOMER_KEY": f"file:{key_file}"})
    hashed = {o["order_id"]: o["customer_ref"] for o in table(dirs, "orders")}
    for order_id, ref in hashed.items():
        customer = shop.order_book.orders[order_id]["customer"]["id"]
        assert ref == hmac.new(KEY.encode(), customer.encode(), hashlib.sha256).hexdigest()
    written = b"".join(p.read_bytes() for p in other["data"].rglob("*") if p.is_file())
    assert b"gid://shopify/Customer/" not in written and b"@example.com" not in written and KEY.encode() not in written


def test_hash_mode_needs_a_long_enough_key(shop, run):
    result, _ = run(shop, *ORDERS, env={"PIPELINE_ORDERS_CUSTOMER": "hash"})
    assert result.exit_code == 2 and "PIPELINE_ORDERS_CUSTOMER_KEY" in result.output
    result, _ = run(shop, *ORDERS, env={"PIPELINE_ORDERS_CUSTOMER": "hash", "PIPELINE_ORDERS_CUSTOMER_KEY": "short"})
    assert result.exit_code == 2 and "at least 32 characters" in result.output


def test_without_an_orders_scope_the_stream_is_skipped_from_configuration_and_fails_from_the_command_line(run, dirs):
    with ShopifySandbox(CatalogSpec(size=30), token=TOKEN, throttle=False, scopes="read_products") as server:
        result, record = run(server, env={"PIPELINE_STREAMS": "products,orders"})
        assert result.exit_code == 0, result.output
        products, orders = record["units"]
        assert products["status"] == "ok" and products["written"] == 30  # products are unaffected
        assert orders["status"] == "skipped" and "read_orders" in orders["reason"]
        result, record = run(server, *ORDERS)
        assert result.exit_code == 1 and record["units"][0]["status"] == "failed"
        assert "read_orders" in record["units"][0]["error"]
    assert table(dirs, "orders") == []


def test_client_credentials_without_an_orders_scope_skip_and_a_write_scope_reads(run, dirs):
    env = {"SHOPIFY_ACCESS_TOKEN": "", "SHOPIFY_CLIENT_ID": "cid", "SHOPIFY_CLIENT_SECRET": "csecret-value",
           "PIPELINE_STREAMS": "orders"}
    with ShopifySandbox(CatalogSpec(size=30), token=None, client_id="cid", client_secret="csecret-value",
                        throttle=False, orders=10) as server:
        server.oauth.scope = "read_products"
        _, record = run(server, env=env)
        assert record["units"][0]["status"] == "skipped" and "read_orders" in record["units"][0]["reason"]
        server.oauth.scope = "read_products,write_orders,read_all_orders"
        result, record = run(server, env=env)
        assert result.exit_code == 0 and record["units"][0]["written"] == 10


def test_read_orders_alone_sees_60_days_and_the_run_log_says_how_far_back(run, dirs):
    with ShopifySandbox(CatalogSpec(size=30), token=TOKEN, throttle=False, scopes="read_products,read_orders",
                        orders=10) as server:
        result, record = run(server, *ORDERS)
    unit = record["units"][0]
    assert result.exit_code == 0
    since = datetime.fromisoformat(unit["notes"]["orders_visible_since"])
    assert 59 <= (datetime.now(timezone.utc) - since).days <= 60
    assert any("read_all_orders" in w for w in unit["warnings"]) and "last 60 days" in result.output
    assert unit["fetched"] == 0  # the sandbox's orders are all older than that


def test_products_and_orders_of_one_shop_share_its_cost_bucket_and_are_never_throttled(run, clock):
    spec = CatalogSpec(size=300)
    with ShopifySandbox(spec, token=TOKEN, bucket_max=1000, restore_rate=50, clock=clock, orders=150) as server:
        result, record = run(server, "--streams", "products,orders", env={"SHOPIFY_BULK_MIN_PRODUCTS": "0"},
                             runtime=Runtime(sleep=clock.sleep, clock=clock))
    assert result.exit_code == 0, result.output
    assert [u["written"] for u in record["units"]] == [300, 150]
    assert server.throttled_count == 0
    assert record["units"][1]["throttle_wait_s"] > 0  # the orders unit waited for the points products spent


def test_amazon_has_no_orders_stream(run, sandbox):
    from sandbox.amazon import LWA_PATH, AmazonSandbox

    with AmazonSandbox(requests_per_second=50) as amazon:
        env = {"AMAZON_API_BASE_URL": amazon.base_url, "AMAZON_TOKEN_URL": amazon.base_url + LWA_PATH,
               "AMAZON_CREATORS_CREDENTIAL_ID": amazon.credential_id,
               "AMAZON_CREATORS_CREDENTIAL_SECRET": amazon.credential_secret, "AMAZON_CREATORS_VERSION": "3.1",
               "AMAZON_PARTNER_TAG": amazon.partner_tag, "AMAZON_SEARCH_KEYWORDS": "mug",
               "AMAZON_REQUESTS_PER_SECOND": "40"}
        result, _ = run(None, "--streams", "orders", "--providers", "amazon", env=env)
        assert result.exit_code == 2 and "Creators API has no orders" in result.output
        result, record = run(sandbox, env={**env, "PIPELINE_STREAMS": "orders"})
    assert result.exit_code == 0, result.output
    skipped = [u for u in record["units"] if u["provider"] == "amazon" and u["stream"] == "orders"]
    assert skipped[0]["status"] == "skipped" and "Creators API has no orders" in skipped[0]["reason"]


def test_a_rerun_writes_nothing_and_a_refund_writes_exactly_that_orders_new_version(shop, run, dirs):
    run(shop, *ORDERS)
    _, again = run(shop, *ORDERS)
    assert again["units"][0]["written"] == 0
    refunded = shop.refund_orders(0.05)
    _, after = run(shop, *ORDERS)
    assert after["units"][0]["written"] == len(refunded)
    orders = table(dirs, "orders")
    newest = {o["order_id"]: o for o in sorted(orders, key=lambda o: o["updated_at"])}
    for order_id in refunded:
        versions = [o for o in orders if o["order_id"] == order_id]
        assert len(versions) == 2 and newest[order_id]["total_refunded"] > 0
        lines = [li for li in table(dirs, "order_lines") if li["order_raw_hash"] == newest[order_id]["raw_hash"]]
        assert len(lines) == newest[order_id]["line_count"]  # the new version's lines come with it
    assert len(orders) == 40 + len(refunded)


def _raw_order(**changes) -> dict:
    with ShopifySandbox(CatalogSpec(size=10), orders=3) as server:
        order = next(iter(server.order_book.orders.values()))
    fields = ("id name createdAt updatedAt processedAt cancelledAt closedAt test displayFinancialStatus "
              "displayFulfillmentStatus currencyCode presentmentCurrencyCode sourceName tags totalPriceSet "
              "subtotalPriceSet totalTaxSet totalDiscountsSet totalShippingPriceSet totalRefundedSet lineItems").split()
    return {**{k: order[k] for k in fields}, **changes}


def test_the_normalizer_maps_every_column_and_ties_lines_to_the_version():
    raw = _raw_order()
    version = to_order(raw, account=SHOP, fetched_at=FETCHED, run_id=RUN)
    order = version.order
    assert (order.source, order.account, order.order_id, order.name) == ("shopify", SHOP, raw["id"], raw["name"])
    assert order.total_price == Decimal(raw["totalPriceSet"]["shopMoney"]["amount"])
    assert order.currency == "USD" and order.financial_status == "paid" and order.customer_ref is None
    assert order.line_count == len(raw["lineItems"]) == len(version.lines)
    line = version.lines[0]
    assert line.order_raw_hash == order.raw_hash and line.variant_id == raw["lineItems"][0]["variant"]["id"]
    assert line.unit_price == Decimal(raw["lineItems"][0]["originalUnitPriceSet"]["shopMoney"]["amount"])
    assert version.rows() == {"orders": [order], "order_lines": version.lines}
    assert to_order(json.loads(json.dumps(raw)), account=SHOP, fetched_at=FETCHED, run_id=RUN).raw_hash == order.raw_hash


@pytest.mark.parametrize("changes, field", [
    ({"id": None}, "order_id"),
    ({"currencyCode": "usd"}, "currency"),
    ({"totalPriceSet": {"shopMoney": {"amount": "-1.00", "currencyCode": "USD"}}}, "totalPriceSet.shopMoney.amount"),
    ({"totalTaxSet": {"shopMoney": {"amount": "NaN", "currencyCode": "USD"}}}, "totalTaxSet.shopMoney.amount"),
    ({"lineItems": "not a list"}, "lineItems"),
])
def test_an_order_that_breaks_a_rule_is_rejected_naming_the_field(changes, field):
    with pytest.raises(Rejected) as caught:
        to_order(_raw_order(**changes), account=SHOP, fetched_at=FETCHED, run_id=RUN)
    assert caught.value.field == field


def test_a_line_with_a_negative_quantity_is_rejected_naming_it():
    raw = _raw_order()
    raw["lineItems"][0] = {**raw["lineItems"][0], "quantity": -1}
    with pytest.raises(Rejected) as caught:
        to_order(raw, account=SHOP, fetched_at=FETCHED, run_id=RUN)
    assert caught.value.field == "lineItems.quantity"

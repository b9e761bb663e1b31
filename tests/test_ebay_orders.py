"""eBay orders over the Sell Fulfillment API: user tokens from the seller's refresh token (minted,
re-minted, refused), offset paging to the end, the limit bound, the date filter and its encoding,
the two-year window, errors, the contract, no buyer detail kept, the field mapping, dedup (a rerun
writes nothing; a refund writes that order's new version), and one account per seller."""

from __future__ import annotations

import base64
import json
import re
import sqlite3
from contextlib import closing
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import parse_qs, unquote, urlsplit

import pyarrow.dataset as ds
import pytest
import responses

from connectors import ebay_orders
from connectors.http import AuthError, HttpSettings, ResponseError
from connectors.oauth import MissingScope
from normalize import Rejected
from normalize.ebay_orders import to_order
from pipelines.config import ConfigError, load_settings
from sandbox.ebay import EbaySandbox
from sandbox.ebay_orders import BUYER_MARKERS, CONTRACT, OrderBook

BASE = "https://api.ebay.com"
ORDERS = BASE + "/sell/fulfillment/v1/order"
TOKEN = BASE + "/identity/v1/oauth2/token"
SECRET, REFRESH = "test-ebay-client-secret", "test-ebay-refresh-token"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
FETCHED, RUN = datetime(2026, 11, 27, tzinfo=timezone.utc), "20261127T000000Z-abcdef"
SELLER = "acme_outlet"


def settings(tmp_path, **extra):
    env = {"EBAY_CLIENT_ID": "client-id", "EBAY_CLIENT_SECRET": SECRET, "EBAY_REFRESH_TOKEN": REFRESH,
           "PIPELINE_DATA_DIR": str(tmp_path / "data"), **extra}
    return load_settings(env).ebay


def client(clock, s, now=lambda: NOW):
    return ebay_orders.make_client(s, HttpSettings(), sleep=clock.sleep, clock=clock, now=now)


def fetch(clock, s, **kwargs) -> list[dict]:
    return list(ebay_orders.iter_records(client(clock, s), s, clock=clock, **kwargs))


def order(n: int, modified: datetime = NOW - timedelta(days=1)) -> dict:
    stamp = modified.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {"orderId": f"12-{n:05d}-00001", "creationDate": stamp, "lastModifiedDate": stamp,
            "pricingSummary": {"total": {"value": "10.00", "currency": "USD"}}, "lineItems": []}


def page(n: int, total: int, offset: int = 0) -> dict:
    body = {"total": total, "limit": 200, "offset": offset, "orders": [order(offset + i) for i in range(n)]}
    if offset + 200 < total:
        body["next"] = f"{ORDERS}?limit=200&offset={offset + 200}"
    return body


def mint_ok(expires_in=7200):
    return responses.post(TOKEN, json={"access_token": "user-token", "expires_in": expires_in,
                                       "token_type": "User Access Token"})


def order_calls():
    return [c for c in responses.calls if c.request.url.startswith(ORDERS)]


def query_of(url: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


# -- user tokens ----------------------------------------------------------------------------------
@responses.activate
def test_user_tokens_are_minted_from_the_refresh_token_with_the_keyset_and_sent_as_bearer(clock, tmp_path):
    token = mint_ok()
    responses.get(ORDERS, json=page(3, 3))
    assert len(fetch(clock, settings(tmp_path))) == 3
    request = token.calls[0].request
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(f"client-id:{SECRET}".encode()).decode()
    assert parse_qs(request.body) == {"grant_type": ["refresh_token"], "refresh_token": [REFRESH],
                                      "scope": ["https://api.ebay.com/oauth/api_scope/sell.fulfillment.readonly"]}
    assert order_calls()[0].request.headers["Authorization"] == "Bearer user-token"


@responses.activate
def test_the_user_token_is_re_minted_before_it_expires(clock, tmp_path):
    token = mint_ok(expires_in=100)
    for offset in (0, 200, 400):
        responses.get(ORDERS, json=page(200 if offset < 400 else 5, 405, offset))
    assert len(fetch(clock, settings(tmp_path, EBAY_REQUESTS_PER_SECOND="0.02"))) == 405  # calls 50 s apart
    assert token.call_count == 2


@responses.activate
def test_a_401_re_mints_the_user_token_once_and_retries_once(clock, tmp_path):
    token = mint_ok()
    responses.get(ORDERS, status=401, json={"errors": [{"errorId": 1001, "domain": "OAuth", "message": "Invalid access token"}]})
    responses.get(ORDERS, json=page(2, 2))
    assert len(fetch(clock, settings(tmp_path))) == 2
    assert token.call_count == 2 and len(order_calls()) == 2


@responses.activate
def test_a_refused_refresh_token_says_the_seller_must_consent_again_and_where_the_token_goes(clock, tmp_path):
    token = responses.post(TOKEN, status=400, json={"error": "invalid_grant", "error_description": "invalid token"})
    with pytest.raises(ebay_orders.RefreshTokenRefused) as caught:
        fetch(clock, settings(tmp_path))
    message = str(caught.value)
    assert "must consent again" in message and "EBAY_REFRESH_TOKEN" in message and "refresh_token" in message
    assert "'EBAY_US'" in message  # the account
    assert token.call_count == 1 and order_calls() == []  # not retried, no orders call
    assert REFRESH not in message


@responses.activate
def test_an_account_without_a_refresh_token_cannot_read_orders_and_calls_nothing(clock, tmp_path):
    s = settings(tmp_path, EBAY_REFRESH_TOKEN="", EBAY_SEARCH_QUERIES="mug")
    with pytest.raises(MissingScope, match="EBAY_REFRESH_TOKEN"):
        fetch(clock, s)
    assert len(responses.calls) == 0


def test_a_refresh_token_needs_the_keyset_it_was_granted_to(tmp_path):
    settings = load_settings({"EBAY_REFRESH_TOKEN": REFRESH, "EBAY_OAUTH_TOKEN": "static"})
    assert settings.ebay is None and "EBAY_CLIENT_ID and EBAY_CLIENT_SECRET" in settings.not_configured["ebay"]


# -- paging, the filter, the window -------------------------------------------------------------
@responses.activate
def test_offset_paging_goes_to_the_end_200_at_a_time(clock, tmp_path):
    mint_ok()
    for offset in (0, 200, 400):
        responses.get(ORDERS, json=page(200 if offset < 400 else 50, 450, offset))
    assert len(fetch(clock, settings(tmp_path))) == 450
    queries = [query_of(c.request.url) for c in order_calls()]
    assert [q["offset"] for q in queries] == ["0", "200", "400"]
    assert {q["limit"] for q in queries} == {"200"} and len({q["filter"] for q in queries}) == 1


@responses.activate
def test_paging_stops_when_total_is_reached_even_with_a_stray_next_link(clock, tmp_path):
    mint_ok()
    last = page(10, 10)
    last["next"] = f"{ORDERS}?offset=200"  # an empty page after it ends the crawl
    responses.get(ORDERS, json=last)
    responses.get(ORDERS, json={"total": 10, "orders": []})
    assert len(fetch(clock, settings(tmp_path))) == 10 and len(order_calls()) == 2


@responses.activate
def test_the_date_filter_is_utc_with_milliseconds_and_its_brackets_percent_encoded(clock, tmp_path):
    mint_ok()
    responses.get(ORDERS, json=page(1, 1))
    since = (datetime(2026, 11, 1, 13, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1))), 5)
    fetch(clock, settings(tmp_path), since=since, lookback=timedelta(minutes=30))
    url = order_calls()[0].request.url
    assert "filter=lastmodifieddate:%5B2026-11-01T11:30:00.123Z..%5D" in url  # 13:00+01:00 less 30 minutes
    assert "[" not in url and "]" not in url


@responses.activate
def test_a_first_load_asks_for_the_last_two_years_and_an_older_since_is_held_to_them(clock, tmp_path):
    mint_ok()
    responses.get(ORDERS, json=page(1, 1))
    s = settings(tmp_path)
    fetch(clock, s)
    http = client(clock, s)
    list(ebay_orders.iter_records(http, s, since=(NOW - timedelta(days=1000), 0), clock=clock))
    starts = [unquote(query_of(c.request.url)["filter"]) for c in order_calls()]
    two_years = (NOW - timedelta(days=730)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert starts == [f"lastmodifieddate:[{two_years}..]"] * 2
    assert http.stats.notes["orders_since_clamped"].startswith((NOW - timedelta(days=730)).date().isoformat())


@responses.activate
def test_an_order_changed_during_the_crawl_is_left_for_the_next_run(clock, tmp_path):
    mint_ok()
    body = page(3, 3)
    body["orders"][1] = order(1, modified=NOW + timedelta(seconds=5))  # changed after the crawl began
    responses.get(ORDERS, json=body)
    s = settings(tmp_path)
    http = client(clock, s)
    records = list(ebay_orders.iter_records(http, s, clock=clock))
    assert [r["orderId"] for r in records] == ["12-00000-00001", "12-00002-00001"]
    assert max(map(ebay_orders.record_cursor, records))[0] <= NOW  # the mark stays at or before the start
    assert http.stats.notes["orders_left_for_next_run"] == 1


def test_record_cursor_is_last_modified_then_the_order_number():
    assert ebay_orders.record_cursor(order(7)) == (NOW - timedelta(days=1), 12_00007_00001)
    assert ebay_orders.record_cursor({"orderId": "12-1-1"}) is None
    assert ebay_orders.record_cursor("junk") is None
    assert ebay_orders.record_cursor(order(1)) < ebay_orders.record_cursor(order(2))


@pytest.mark.parametrize("error_id", [30700, 30800, 30810, 30830, 30850, 31000, 31100])
@responses.activate
def test_bad_request_error_ids_are_fatal_and_named(clock, tmp_path, error_id):
    mint_ok()
    responses.get(ORDERS, status=400, json={"errors": [{"errorId": error_id, "domain": "API_FULFILLMENT",
                                                        "category": "REQUEST", "message": "bad"}]})
    with pytest.raises(ResponseError, match=f"errorId {error_id}"):
        fetch(clock, settings(tmp_path))
    assert len(order_calls()) == 1


# -- the sandbox and the contract -----------------------------------------------------------------
@pytest.fixture
def seller(clock):
    with EbaySandbox(clock=clock, sellers={REFRESH: SELLER}, orders=450, requests_per_second=1000) as server:
        yield server


def sandbox_settings(tmp_path, server, **extra):
    return settings(tmp_path, EBAY_API_BASE_URL=server.base_url, EBAY_CLIENT_ID=server.client_id,
                    EBAY_CLIENT_SECRET=server.client_secret, EBAY_REQUESTS_PER_SECOND="1000", **extra)


def test_every_request_the_connector_sends_follows_the_contract(seller, clock, tmp_path):
    s = sandbox_settings(tmp_path, seller)
    records = list(ebay_orders.iter_records(client(clock, s, now=seller.now), s, clock=clock))
    assert len(records) == len(seller.order_books[SELLER].served(seller.now())) > 400  # three pages
    defined = CONTRACT["parameters"]
    stamp = re.compile(r"lastmodifieddate:\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)\.\.\]")
    calls = [e for e in seller.api_requests() if e["path"] == CONTRACT["orders_path"]]
    assert len(calls) == 3
    for call in calls:
        assert "%5B" in call["query"] and "%5D" in call["query"]  # brackets travel percent-encoded
        query = {k: v[0] for k, v in parse_qs(call["query"]).items()}
        assert set(query) <= {n for n, p in defined.items() if p["in"] == "query"}
        assert defined["limit"]["min"] <= int(query["limit"]) <= defined["limit"]["max"]
        assert int(query["offset"]) >= defined["offset"]["min"]
        start = datetime.fromisoformat(stamp.fullmatch(query["filter"]).group(1))
        oldest = seller.now() - timedelta(days=365 * CONTRACT["max_order_age_years"], minutes=1)  # a minute's slack
        assert oldest <= start <= seller.now()
        assert "X-EBAY-C-MARKETPLACE-ID" not in call["headers"]  # orders are the seller's, not a marketplace's
    [grant] = [e for e in seller.api_requests() if e.get("kind") == "user_token"]
    form = {k: v[0] for k, v in parse_qs(grant["body"]).items()}
    assert sorted(form) == sorted(CONTRACT["oauth"]["refresh_grant_fields"])
    assert form["grant_type"] == CONTRACT["oauth"]["grant_type"] and form["scope"] in CONTRACT["scopes"]
    assert ebay_orders.PAGE_LIMIT == defined["limit"]["max"]


def test_the_sandbox_refuses_a_limit_over_200_and_an_application_token(seller, clock):
    import requests

    auth = (seller.client_id, seller.client_secret)
    app = requests.post(seller.base_url + "/identity/v1/oauth2/token", auth=auth,
                        data={"grant_type": "client_credentials", "scope": "https://api.ebay.com/oauth/api_scope"}).json()
    denied = requests.get(seller.base_url + CONTRACT["orders_path"],
                          headers={"Authorization": f"Bearer {app['access_token']}"})
    assert denied.status_code == 403 and denied.json()["errors"][0]["errorId"] == 1100
    user = requests.post(seller.base_url + "/identity/v1/oauth2/token", auth=auth,
                         data={"grant_type": "refresh_token", "refresh_token": REFRESH,
                               "scope": CONTRACT["scopes"][1]}).json()
    headers = {"Authorization": f"Bearer {user['access_token']}"}
    too_many = requests.get(seller.base_url + CONTRACT["orders_path"] + "?limit=201", headers=headers)
    assert too_many.status_code == 400 and too_many.json()["errors"][0]["errorId"] == 31100
    clock.sleep(1)  # the sandbox's request rate, on the test's clock
    assert requests.get(seller.base_url + CONTRACT["orders_path"] + "?limit=200", headers=headers).status_code == 200


@responses.activate
def test_a_token_without_the_fulfillment_scope_fails_naming_it(clock, tmp_path):
    mint_ok()
    responses.get(ORDERS, status=403, json={"errors": [{"errorId": 1100, "domain": "ACCESS", "message": "Access denied"}]})
    with pytest.raises(AuthError, match="lacks https://api.ebay.com/oauth/api_scope/sell.fulfillment.readonly"):
        fetch(clock, settings(tmp_path))
    assert len(order_calls()) == 1


def test_buyer_details_never_leave_the_connector(seller, clock, tmp_path):
    book = seller.order_books[SELLER]
    full = json.dumps(list(book.orders.values()))
    assert all(marker in full for marker in BUYER_MARKERS)  # the sandbox's orders do carry them
    s = sandbox_settings(tmp_path, seller)
    records = list(ebay_orders.iter_records(client(clock, s, now=seller.now), s, clock=clock))

    def paths(value, spec, path=""):
        assert isinstance(value, (dict, list)) == (spec is not None), path
        if isinstance(value, dict):
            assert set(value) <= set(spec), f"{path}: {set(value) - set(spec)}"
            for key, item in value.items():
                yield from paths(item, spec[key], f"{path}.{key}")
        elif isinstance(value, list):
            for item in value:
                yield from paths(item, spec[0], f"{path}[]")
        yield path

    kept = {p for record in records for p in paths(record, ebay_orders.KEPT_FIELDS)}
    assert ".lineItems[].lineItemCost.value" in kept and ".paymentSummary.refunds" in kept
    text = json.dumps(records)
    assert not [marker for marker in BUYER_MARKERS if marker in text]
    assert '"buyer"' not in text and "fulfillmentStartInstructions" not in text and "paymentReferenceId" not in text


def test_an_object_where_a_kept_scalar_belongs_is_dropped():
    projected = ebay_orders.project({"orderId": {"buyer": "x"}, "lineItems": "junk", "buyer": {"username": "b"},
                                     "pricingSummary": {"total": {"value": "1", "currency": "USD", "email": "e"}}})
    assert projected == {"orderId": None, "lineItems": None, "pricingSummary": {"total": {"value": "1", "currency": "USD"}}}


# -- the normalizer ------------------------------------------------------------------------------
def raw_order(i: int) -> dict:
    book = OrderBook(SELLER, 60, NOW)
    return ebay_orders.project(sorted(book.orders.values(), key=lambda o: o["creationDate"])[i - 1])


def test_the_normalizer_maps_every_column_and_ties_lines_to_the_version():
    raw = raw_order(15)  # tax (every 3rd), converted total (every 5th)
    version = to_order(raw, account="us", fetched_at=FETCHED, run_id=RUN)
    o = version.order
    pricing = raw["pricingSummary"]
    assert (o.source, o.account, o.order_id, o.name) == ("ebay", "us", raw["orderId"], raw["legacyOrderId"])
    assert o.created_at == o.processed_at == datetime.fromisoformat(raw["creationDate"])
    assert o.updated_at == datetime.fromisoformat(raw["lastModifiedDate"])
    assert (o.financial_status, o.fulfillment_status, o.currency) == ("paid", "fulfilled", "USD")
    assert o.total_price == Decimal(pricing["total"]["value"]) and o.subtotal_price == Decimal(pricing["priceSubtotal"]["value"])
    assert o.total_tax == Decimal(pricing["tax"]["value"]) > 0 and o.total_shipping == Decimal(pricing["deliveryCost"]["value"])
    assert (o.presentment_currency, o.total_price_presentment) == ("EUR", Decimal(pricing["total"]["convertedFromValue"]))
    assert o.total_discounts == 0 and o.total_refunded == 0 and o.cancelled_at is None
    assert (o.test, o.closed_at, o.source_name, o.tags, o.customer_ref) == (None, None, None, None, None)
    assert o.line_count == len(raw["lineItems"]) == len(version.lines)
    line, item = version.lines[0], raw["lineItems"][0]
    assert (line.line_id, line.product_id, line.sku, line.title) == (item["lineItemId"], item["legacyItemId"],
                                                                     item.get("sku"), item["title"])
    assert line.order_raw_hash == o.raw_hash and line.unit_price * item["quantity"] == Decimal(item["lineItemCost"]["value"])
    assert version.rows() == {"orders": [o], "order_lines": version.lines}


def test_discounts_cancellations_and_refunds_map_to_their_columns():
    raw = raw_order(4)  # every 4th: a promotion on its first line
    item = raw["lineItems"][0]
    cut = Decimal(item["lineItemCost"]["value"]) - Decimal(item["discountedLineItemCost"]["value"])
    discounted = to_order(raw, account="us", fetched_at=FETCHED, run_id=RUN)
    assert discounted.order.total_discounts == cut > 0  # eBay writes priceDiscount as a negative amount
    assert discounted.lines[0].total_discount == cut
    item.update(quantity=2, lineItemCost={"value": "20.00", "currency": "USD"},
                discountedLineItemCost={"value": "18.00", "currency": "USD"})
    line = to_order(raw, account="us", fetched_at=FETCHED, run_id=RUN).lines[0]
    assert (line.unit_price, line.discounted_unit_price, line.total_discount) == (10, 9, 2)
    cancelled = to_order(raw_order(13), account="us", fetched_at=FETCHED, run_id=RUN).order
    assert cancelled.cancelled_at is not None and cancelled.financial_status == "fully_refunded"
    raw = raw_order(2)
    raw["paymentSummary"]["refunds"] = [{"amount": {"value": "2.50", "currency": "USD"}, "refundStatus": "REFUNDED"},
                                        {"amount": {"value": "9.00", "currency": "USD"}, "refundStatus": "PENDING"}]
    assert to_order(raw, account="us", fetched_at=FETCHED, run_id=RUN).order.total_refunded == Decimal("2.50")


def test_the_projection_keeps_every_field_the_normalizer_reads():
    book = OrderBook(SELLER, 60, NOW)
    book.refund(0.2, NOW)
    for full in book.orders.values():
        kept, whole = (to_order(raw, account="us", fetched_at=FETCHED, run_id=RUN)
                       for raw in (ebay_orders.project(full), full))
        assert kept.order.model_dump(exclude={"raw_hash"}) == whole.order.model_dump(exclude={"raw_hash"})
        assert [li.model_dump(exclude={"order_raw_hash"}) for li in kept.lines] == \
            [li.model_dump(exclude={"order_raw_hash"}) for li in whole.lines]


def test_a_unit_price_that_does_not_divide_exactly_stays_null():
    raw = raw_order(1)
    raw["lineItems"][0].update(quantity=3, lineItemCost={"value": "10.00", "currency": "USD"})
    assert to_order(raw, account="us", fetched_at=FETCHED, run_id=RUN).lines[0].unit_price is None


@pytest.mark.parametrize("change, field", [
    (lambda r: r.update(orderId=None), "order_id"),
    (lambda r: r["pricingSummary"]["total"].update(currency="usd"), "currency"),
    (lambda r: r["pricingSummary"]["total"].update(value="-1.00"), "pricingSummary.total.value"),
    (lambda r: r["pricingSummary"]["priceSubtotal"].update(value="NaN"), "pricingSummary.priceSubtotal.value"),
    (lambda r: r.update(lineItems="not a list"), "lineItems"),
    (lambda r: r["lineItems"][0].update(quantity=-1), "lineItems.quantity"),
    (lambda r: r["paymentSummary"].update(refunds=[{"amount": {"value": "1", "currency": "EUR"}, "refundStatus": "REFUNDED"}]),
     "paymentSummary.refunds.amount.currency"),
])
def test_an_order_that_breaks_a_rule_is_rejected_naming_the_field(change, field):
    raw = raw_order(1)
    change(raw)
    with pytest.raises(Rejected) as caught:
        to_order(raw, account="us", fetched_at=FETCHED, run_id=RUN)
    assert caught.value.field == field


# -- end to end ----------------------------------------------------------------------------------
def orders_env(server, **extra) -> dict:
    return {"EBAY_API_BASE_URL": server.base_url, "EBAY_CLIENT_ID": server.client_id,
            "EBAY_CLIENT_SECRET": server.client_secret, "EBAY_REFRESH_TOKEN": REFRESH,
            "EBAY_SEARCH_QUERIES": "steel mug", **extra}


def table(dirs, name: str) -> list[dict]:
    root = dirs["data"] / "normalized" / name
    return ds.dataset(root, format="parquet", partitioning="hive").to_table().to_pylist() if root.exists() else []


@pytest.fixture
def small_seller(clock):
    with EbaySandbox(clock=clock, sellers={REFRESH: SELLER}, orders=60) as server:
        yield server


def test_orders_load_with_their_lines_and_a_rerun_writes_nothing(small_seller, run, dirs):
    result, record = run(None, "--streams", "orders", env=orders_env(small_seller))
    assert result.exit_code == 0, result.output
    served = small_seller.order_books[SELLER].served(small_seller.now())
    orders, lines = table(dirs, "orders"), table(dirs, "order_lines")
    assert sorted(o["order_id"] for o in orders) == sorted(o["orderId"] for o in served)
    assert len(lines) == sum(len(o["lineItems"]) for o in served)
    assert {o["source"] for o in orders} == {"ebay"} and {o["account"] for o in orders} == {"EBAY_US"}
    unit = record["units"][0]
    assert (unit["provider"], unit["stream"], unit["written"]) == ("ebay", "orders", len(served))
    assert small_seller.user_minted == 1 and small_seller.minted == 0  # a user token; no application token
    _, again = run(None, "--streams", "orders", env=orders_env(small_seller))
    assert again["units"][0]["fetched"] > 0 and again["units"][0]["written"] == 0


def test_a_refund_writes_exactly_that_orders_new_version(small_seller, run, dirs):
    run(None, "--streams", "orders", env=orders_env(small_seller))
    refunded = small_seller.refund_orders(0.1)
    _, after = run(None, "--streams", "orders", env=orders_env(small_seller))
    assert after["units"][0]["written"] == len(refunded) > 0
    # From the mark less the lookback: the refunded orders and the newest order before them.
    assert after["units"][0]["fetched"] <= len(refunded) + 1
    orders = table(dirs, "orders")
    for order_id in refunded:
        versions = sorted((o for o in orders if o["order_id"] == order_id), key=lambda o: o["updated_at"])
        assert len(versions) == 2 and versions[-1]["total_refunded"] > 0 == versions[0]["total_refunded"]
        assert versions[-1]["financial_status"] == "partially_refunded"


def test_a_refused_refresh_token_fails_the_orders_unit_and_leaves_products_alone(small_seller, run, dirs):
    small_seller.revoke(REFRESH)
    result, record = run(None, env=orders_env(small_seller, PIPELINE_STREAMS="products,orders"))
    assert result.exit_code == 1
    products, orders = record["units"]
    assert products["stream"] == "products" and products["status"] == "ok" and products["written"] > 0
    assert orders["status"] == "failed" and orders["error_type"] == "RefreshTokenRefused"
    assert "the seller must consent again" in orders["error"] and "EBAY_REFRESH_TOKEN" in orders["error"]
    assert "must consent again" in result.output and table(dirs, "orders") == []


def test_without_a_refresh_token_orders_are_skipped_from_configuration_and_fail_from_the_command_line(small_seller, run):
    env = orders_env(small_seller, EBAY_REFRESH_TOKEN=None, PIPELINE_STREAMS="products,orders")
    result, record = run(None, env=env)
    assert result.exit_code == 0 and [u["status"] for u in record["units"]] == ["ok", "skipped"]
    assert "EBAY_REFRESH_TOKEN" in record["units"][1]["reason"]
    result, record = run(None, "--streams", "orders", env=env)
    assert result.exit_code == 1 and record["units"][0]["status"] == "failed"


def test_an_account_for_orders_only_needs_no_search_and_its_products_unit_says_what_is_missing(small_seller, run):
    env = orders_env(small_seller, EBAY_SEARCH_QUERIES=None, PIPELINE_STREAMS="products,orders")
    result, record = run(None, env=env)
    products, orders = record["units"]
    assert orders["status"] == "ok" and orders["written"] > 0
    assert products["status"] == "failed" and "EBAY_SEARCH_QUERIES" in products["error"]
    assert small_seller.search_calls == 0


def test_buyer_details_are_in_nothing_the_pipeline_writes(small_seller, run, dirs):
    book = small_seller.order_books[SELLER]
    broken = book.served(small_seller.now())[0]
    broken["pricingSummary"]["total"]["currency"] = "usd"  # quarantined: its raw record is written down
    env = orders_env(small_seller, PIPELINE_QUARANTINE_MAX_PERCENT="10")
    result, record = run(None, "--streams", "orders", "--verbose", env=env)
    assert record["units"][0]["quarantined"] == 1, result.output
    dry, _ = run(None, "--streams", "products,orders", "--dry-run", "--full-refresh", env=env)  # the cache is on
    written = [result.output.encode(), dry.output.encode()]
    files = [p for root in dirs.values() for p in root.rglob("*") if p.is_file()]
    assert any("quarantine" in str(p) for p in files) and any(p.suffix == ".parquet" for p in files)
    cached = cached_answers(dirs["cache"])
    assert any(b"itemSummaries" in body for body in cached)  # the cache is read: search answers are in it
    written += [p.read_bytes() for p in files] + cached
    assert any(broken["orderId"].encode() in data for data in written)  # the search can find what is there
    found = [m for m in BUYER_MARKERS for data in written if m.encode() in data]
    assert found == []


def cached_answers(cache_dir) -> list[bytes]:
    """The answers the development runs' HTTP cache keeps (base64 inside its JSON rows)."""
    bodies = []
    for path in cache_dir.rglob("*.sqlite"):
        with closing(sqlite3.connect(path)) as con:
            bodies += [base64.b64decode(json.loads(value)["_content"]) for (value,) in con.execute("SELECT value FROM responses")]
    return bodies


# -- one seller, several accounts ----------------------------------------------------------------
def accounts(tmp_path, server, us_streams, de_streams, de_token="env:SELLER_REFRESH") -> dict:
    text = ""
    for name, market, streams in (("us", "EBAY_US", us_streams), ("de", "EBAY_DE", de_streams)):
        text += (f'[[ebay]]\nname = "{name}"\nmarketplace_id = "{market}"\nclient_id = "{server.client_id}"\n'
                 f'client_secret = "env:SELLER_KEYSET_SECRET"\nsearch_queries = ["steel mug"]\n'
                 f'api_base_url = "{server.base_url}"\nstreams = {json.dumps(streams)}\n')
        token = "env:SELLER_REFRESH" if name == "us" else de_token
        text += f'refresh_token = "{token}"\n\n' if token else "\n"
    path = tmp_path / "accounts.toml"
    path.write_text(text)
    return {"PIPELINE_ACCOUNTS_FILE": str(path), "SELLER_KEYSET_SECRET": server.client_secret,
            "SELLER_REFRESH": REFRESH}


def test_two_accounts_of_one_seller_load_each_order_once(small_seller, run, dirs, tmp_path):
    env = accounts(tmp_path, small_seller, ["products", "orders"], ["products"])
    result, record = run(None, env=env)
    assert result.exit_code == 0, result.output
    assert [(u["account"], u["stream"]) for u in record["units"]] == [("us", "products"), ("us", "orders"),
                                                                      ("de", "products")]
    orders = table(dirs, "orders")
    assert len(orders) == len({o["order_id"] for o in orders}) == len(small_seller.order_books[SELLER].served(small_seller.now()))
    assert {o["account"] for o in orders} == {"us"}
    assert {p["account"] for p in ds.dataset(dirs["data"] / "normalized" / "products", format="parquet",
                                             partitioning="hive").to_table().to_pylist()} == {"us", "de"}


@pytest.mark.parametrize("us, de, args", [
    (["products", "orders"], ["products", "orders"], ()),  # both ask, in the file
    (["products"], ["products"], ("--streams", "orders")),  # the command line asks both
    (["products", "orders"], ["products"], ("--accounts", "ebay:de", "--streams", "orders")),  # not the seller's
])
def test_one_sellers_orders_asked_of_two_accounts_is_a_configuration_error(small_seller, run, tmp_path, us, de, args):
    result, _ = run(None, *args, env=accounts(tmp_path, small_seller, us, de))
    assert result.exit_code == 2
    assert "'de' and 'us' share one refresh token" in result.output and "one of them only" in result.output
    assert REFRESH not in result.output and small_seller.api_requests() == []


def test_accounts_of_different_sellers_each_load_their_own_orders(clock, run, dirs, tmp_path):
    with EbaySandbox(clock=clock, sellers={REFRESH: SELLER, "other-refresh": "other"}, orders=20) as server:
        env = accounts(tmp_path, server, ["orders"], ["orders"], de_token="env:OTHER_REFRESH")
        result, record = run(None, env={**env, "OTHER_REFRESH": "other-refresh"})
        assert result.exit_code == 0, result.output
        expected = {(a, o["orderId"]) for a, s in (("us", SELLER), ("de", "other"))
                    for o in server.order_books[s].served(server.now())}
    assert {(o["account"], o["order_id"]) for o in table(dirs, "orders")} == expected


def test_an_accounts_file_entry_asking_for_orders_without_a_refresh_token_is_refused(tmp_path, small_seller):
    env = accounts(tmp_path, small_seller, ["products"], ["orders"], de_token=None)
    with pytest.raises(ConfigError, match="'de'.*refresh_token"):
        load_settings(env)

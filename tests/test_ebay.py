"""eBay on the Browse API: tokens, paging within 10,000, the daily budget, errors, the contract."""

from __future__ import annotations

import base64
import copy
import json
from datetime import datetime, timezone
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from connectors import ebay
from connectors.http import AuthError, HttpSettings, ResponseError
from normalize import Rejected
from normalize.ebay import to_product
from pipelines.config import ConfigError, load_settings
from sandbox.ebay import CONTRACT, EbaySandbox
from tests.conftest import load_fixture, parquet_rows

BASE = "https://api.ebay.com"
SEARCH = BASE + "/buy/browse/v1/item_summary/search"
TOKEN = BASE + "/identity/v1/oauth2/token"
SECRET = "test-ebay-client-secret"


def settings(tmp_path, **extra):
    env = {"EBAY_CLIENT_ID": "client-id", "EBAY_CLIENT_SECRET": SECRET, "EBAY_SEARCH_QUERIES": "steel mug",
           "PIPELINE_DATA_DIR": str(tmp_path / "data"), **extra}
    return load_settings(env).ebay


def client(clock, s, **http):
    return ebay.make_client(s, HttpSettings(**http), sleep=clock.sleep, clock=clock)


def page(n, total, offset=0, next_link=True, start=0):
    body = {"total": total, "limit": 200, "offset": offset,
            "itemSummaries": [{"itemId": f"v1|{start + offset + i}|0", "title": f"Item {i}"} for i in range(n)]}
    if next_link and offset + 200 < total:
        body["next"] = f"{SEARCH}?q=steel+mug&limit=200&offset={offset + 200}"
    return body


def mint_ok(expires_in=7200):
    return responses.post(TOKEN, json={"access_token": "minted-token", "expires_in": expires_in,
                                       "token_type": "Application Access Token"})


def search_calls():
    return [c for c in responses.calls if c.request.url.startswith(SEARCH)]


@responses.activate
def test_minted_token_uses_basic_client_credentials_and_is_sent_as_bearer(clock, tmp_path):
    token = mint_ok()
    responses.get(SEARCH, json=page(3, 3))
    s = settings(tmp_path)
    assert len(list(ebay.iter_records(client(clock, s), s, clock=clock))) == 3
    request = token.calls[0].request
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(f"client-id:{SECRET}".encode()).decode()
    assert parse_qs(request.body) == {"grant_type": ["client_credentials"], "scope": [ebay.SCOPE]}
    assert search_calls()[0].request.headers["Authorization"] == "Bearer minted-token"
    assert search_calls()[0].request.headers["X-EBAY-C-MARKETPLACE-ID"] == "EBAY_US"


@responses.activate
def test_token_is_re_minted_before_it_expires(clock, tmp_path):
    token = mint_ok(expires_in=100)
    for offset in (0, 200, 400):
        responses.get(SEARCH, json=page(200 if offset < 400 else 5, 405, offset))
    s = settings(tmp_path, EBAY_REQUESTS_PER_SECOND="0.02")  # 50 s apart
    list(ebay.iter_records(client(clock, s), s, clock=clock))
    assert token.call_count == 2


@responses.activate
def test_error_1001_re_mints_once_and_retries_once(clock, tmp_path):
    token = mint_ok()
    responses.get(SEARCH, status=401, json={"errors": [{"errorId": 1001, "domain": "OAuth", "message": "Invalid access token"}]})
    responses.get(SEARCH, json=page(2, 2))
    s = settings(tmp_path)
    assert len(list(ebay.iter_records(client(clock, s), s, clock=clock))) == 2
    assert token.call_count == 2


@responses.activate
def test_static_token_is_used_with_a_warning_and_a_clear_error_once_expired(clock, tmp_path, caplog):
    responses.get(SEARCH, json=page(1, 1))
    responses.get(SEARCH, status=401, json={"errors": [{"errorId": 1001, "message": "Invalid access token"}]})
    s = load_settings({"EBAY_OAUTH_TOKEN": "static-app-token", "EBAY_SEARCH_QUERIES": "a,b",
                       "PIPELINE_DATA_DIR": str(tmp_path)}).ebay
    with pytest.raises(AuthError, match="EBAY_CLIENT_ID and EBAY_CLIENT_SECRET"):
        list(ebay.iter_records(client(clock, s), s, clock=clock))
    assert responses.calls[0].request.headers["Authorization"] == "Bearer static-app-token"
    assert "expires about two hours" in caplog.text
    assert "static-app-token" not in caplog.text


@responses.activate
def test_next_link_paging_on_the_configured_host(clock, tmp_path):
    mint_ok()
    responses.get(SEARCH, json=page(200, 450, 0))
    responses.get(SEARCH, json=page(200, 450, 200))
    responses.get(SEARCH, json=page(50, 450, 400))
    s = settings(tmp_path, EBAY_FILTER="price:[10..50],priceCurrency:USD")
    assert len(list(ebay.iter_records(client(clock, s), s, clock=clock))) == 450
    offsets = [parse_qs(urlsplit(c.request.url).query)["offset"][0] for c in search_calls()]
    assert offsets == ["0", "200", "400"]


@responses.activate
def test_a_next_link_on_another_host_is_not_followed_with_the_token(clock, tmp_path):
    mint_ok()
    first = page(200, 300, 0)
    first["next"] = "https://evil.example/buy/browse/v1/item_summary/search?offset=200"
    other = responses.get("https://evil.example/buy/browse/v1/item_summary/search", json=page(100, 300, 200))
    responses.get(SEARCH, json=first)
    responses.get(SEARCH, json=page(100, 300, 200))
    s = settings(tmp_path)
    assert len(list(ebay.iter_records(client(clock, s), s, clock=clock))) == 300
    assert other.call_count == 0


def test_a_search_over_10000_items_fetches_10000_and_records_the_truncation(clock, tmp_path):
    with EbaySandbox(clock=clock, requests_per_second=1000) as server:
        s = settings(tmp_path, EBAY_API_BASE_URL=server.base_url, EBAY_CLIENT_ID=server.client_id,
                     EBAY_CLIENT_SECRET=server.client_secret, EBAY_SEARCH_QUERIES="popular mug",
                     EBAY_REQUESTS_PER_SECOND="1000")
        http = client(clock, s)
        records = list(ebay.iter_records(http, s, clock=clock))
        offsets = [int(e["query"].split("offset=")[1].split("&")[0]) for e in server.api_requests() if e.get("kind") == "search"]
    assert len(records) == 10_000
    assert max(offsets) == 9_800
    [note] = http.stats.warnings
    assert "12,345" in note and "about 2,345 were not fetched" in note


@responses.activate
def test_the_daily_budget_stops_calls_and_marks_the_run_partial(clock, tmp_path):
    mint_ok()
    for offset in range(0, 1000, 200):
        responses.get(SEARCH, json=page(200, 1000, offset))
    s = settings(tmp_path, EBAY_DAILY_CALL_BUDGET="3")
    http = client(clock, s)
    records = list(ebay.iter_records(http, s, clock=clock))
    assert len(records) == 600 and len(search_calls()) == 3
    assert "EBAY_DAILY_CALL_BUDGET" in http.stats.partial_reason
    assert json.loads(s.calls_file.read_text())["calls"] == 3
    http = client(clock, s)  # a later run the same UTC day makes no search call at all
    assert list(ebay.iter_records(http, s, clock=clock)) == [] and len(search_calls()) == 3


@responses.activate
def test_a_single_2001_is_retried_and_two_in_a_row_stop_as_quota_spent(clock, tmp_path):
    mint_ok()
    rate = {"errors": [{"errorId": 2001, "domain": "ACCESS", "message": "Too many requests."}]}
    responses.get(SEARCH, status=429, json=rate)
    responses.get(SEARCH, json=page(200, 400, 0))
    responses.get(SEARCH, status=429, json=rate)
    responses.get(SEARCH, status=429, json=rate)
    s = settings(tmp_path)
    http = client(clock, s)
    records = list(ebay.iter_records(http, s, clock=clock))
    assert len(records) == 200 and http.stats.retries == 2
    assert "2001" in http.stats.partial_reason
    assert max(clock.sleeps) < 120  # no backing off for minutes


@pytest.mark.parametrize("error_id, status", [(12001, 400), (12006, 400), (12029, 400), (12515, 400)])
@responses.activate
def test_request_errors_are_fatal_and_named(clock, tmp_path, error_id, status):
    mint_ok()
    responses.get(SEARCH, status=status, json={"errors": [{"errorId": error_id, "domain": "API_BROWSE", "message": "bad"}]})
    s = settings(tmp_path)
    with pytest.raises(ResponseError, match=f"errorId {error_id}"):
        list(ebay.iter_records(client(clock, s), s, clock=clock))
    assert len(search_calls()) == 1


@responses.activate
def test_the_same_item_from_two_searches_is_yielded_once(clock, tmp_path):
    mint_ok()
    responses.get(SEARCH, json=page(3, 3))
    responses.get(SEARCH, json=page(5, 5))
    s = settings(tmp_path, EBAY_SEARCH_QUERIES="mug", EBAY_CATEGORY_IDS="20625")
    assert len(list(ebay.iter_records(client(clock, s), s, clock=clock))) == 5


@responses.activate
def test_every_request_uses_only_parameters_ebay_defines_within_their_limits(clock, tmp_path):
    mint_ok()
    for offset in range(0, 600, 200):
        responses.get(SEARCH, json=page(200, 600, offset))
    responses.get(SEARCH, json=page(7, 7))
    s = settings(tmp_path, EBAY_SEARCH_QUERIES="steel mug", EBAY_CATEGORY_IDS="29792",
                 EBAY_FILTER="conditionIds:{1000|3000}")
    list(ebay.iter_records(client(clock, s), s, clock=clock))
    defined = CONTRACT["parameters"]
    for call in search_calls():
        query = {k: v[0] for k, v in parse_qs(urlsplit(call.request.url).query).items()}
        assert set(query) <= {n for n, p in defined.items() if p["in"] == "query"}
        limit, offset = int(query["limit"]), int(query["offset"])
        assert defined["limit"]["min"] <= limit <= defined["limit"]["max"]
        assert defined["offset"]["min"] <= offset <= defined["offset"]["max"] and offset % limit == 0
        assert offset + limit <= CONTRACT["max_results_per_search"]
        assert len(query.get("q", "")) <= defined["q"]["max_length"] and "*" not in query.get("q", "")
        assert len(query.get("category_ids", "").split(",")) == 1
        assert call.request.headers["X-EBAY-C-MARKETPLACE-ID"] == "EBAY_US"


@pytest.mark.parametrize("name, value", [("EBAY_SEARCH_QUERIES", "steel*"), ("EBAY_SEARCH_QUERIES", "x" * 101),
                                         ("EBAY_CATEGORY_IDS", "mugs"), ("EBAY_MARKETPLACE_ID", "US"),
                                         ("EBAY_DAILY_CALL_BUDGET", "lots")])
def test_malformed_ebay_settings_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings({"EBAY_CLIENT_ID": "a", "EBAY_CLIENT_SECRET": "b", "EBAY_SEARCH_QUERIES": "mug", name: value})


# -- normalizer -----------------------------------------------------------------------------
def norm(raw):
    return to_product(raw, account="EBAY_US", fetched_at=datetime(2026, 11, 27, tzinfo=timezone.utc),
                      run_id="20261127T000000Z-abcdef")


def test_fixture_fields_follow_the_item_summary_schema():
    allowed = set(CONTRACT["schemas"]["ItemSummary"])
    for item in load_fixture("ebay", "search.json")["itemSummaries"]:
        assert set(item) <= allowed
    assert set(load_fixture("ebay", "search.json")) <= set(CONTRACT["schemas"]["SearchPagedCollection"])


def test_normalizer_maps_an_item_summary():
    p = norm(load_fixture("ebay", "search.json")["itemSummaries"][0])
    assert (p.source, p.account, p.source_id) == ("ebay", "EBAY_US", "v1|135000000001|0")
    assert p.price == Decimal("18.50") and p.currency == "USD" and p.condition == "New"
    assert (p.seller, p.seller_feedback_score, p.seller_feedback_percent) == ("acme_outlet", 2210, 99.6)
    assert p.url == "https://www.ebay.com/itm/135000000001" and p.image_url.endswith("s-l225.jpg")
    assert (p.category, p.item_country, p.buying_options, p.epid) == ("Mugs", "US", ["FIXED_PRICE"], "240000001")


def test_optional_fields_may_be_absent():
    p = norm(load_fixture("ebay", "search.json")["itemSummaries"][1])
    assert p.image_url is None and p.seller_feedback_percent is None and p.item_country is None


def test_raw_hash_ignores_delivery_estimates_and_affiliate_links():
    item = load_fixture("ebay", "search.json")["itemSummaries"][0]
    moved = copy.deepcopy(item)
    moved["shippingOptions"][0]["minEstimatedDeliveryDate"] = "2026-12-09T08:00:00.000Z"
    moved["itemAffiliateWebUrl"] += "&x=2"
    assert norm(moved).raw_hash == norm(item).raw_hash
    moved["price"]["value"] = "18.51"
    assert norm(moved).raw_hash != norm(item).raw_hash


@pytest.mark.parametrize("path, value, field", [(("price", "value"), "-1", "price.value"),
                                                (("price", "value"), "NaN", "price.value"),
                                                (("seller", "feedbackPercentage"), "high", "seller.feedbackPercentage"),
                                                (("seller", "feedbackPercentage"), "101.5", "seller_feedback_percent"),
                                                (("itemWebUrl",), "javascript:x", "url")])
def test_bad_values_are_rejected_with_the_field(path, value, field):
    item = copy.deepcopy(load_fixture("ebay", "search.json")["itemSummaries"][0])
    target = item
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(Rejected) as caught:
        norm(item)
    assert caught.value.field == field


# -- end to end ---------------------------------------------------------------------------------
def ebay_env(server, **extra):
    return {"EBAY_API_BASE_URL": server.base_url, "EBAY_CLIENT_ID": server.client_id,
            "EBAY_CLIENT_SECRET": server.client_secret, "EBAY_SEARCH_QUERIES": "steel mug,lantern",
            "EBAY_CATEGORY_IDS": "20005", **extra}


def test_all_three_providers_twice_second_run_writes_nothing_new(sandbox, run, dirs, clock):
    from sandbox.amazon import AmazonSandbox
    from tests.test_amazon import amazon_env

    with EbaySandbox(clock=clock, token_lifetime_s=1) as ebay_server, AmazonSandbox(clock=clock) as amazon_server:
        env = {**ebay_env(ebay_server), **amazon_env(amazon_server)}
        result, first = run(sandbox, env=env)
        assert result.exit_code == 0, result.output
        assert all(first["providers"][p]["written"] > 0 for p in ("shopify", "amazon", "ebay"))
        assert ebay_server.minted >= 2 and ebay_server.rate_limited == 0
        result, second = run(sandbox, env=env)
    assert result.exit_code == 0, result.output
    assert all(second["providers"][p]["written"] == 0 for p in ("shopify", "amazon", "ebay"))
    rows = parquet_rows(dirs["data"])
    assert len({r["source"] for r in rows}) == 3
    ebay_rows = [r for r in rows if r["source"] == "ebay"]
    assert len(ebay_rows) == len({r["source_id"] for r in ebay_rows}) == first["providers"]["ebay"]["fetched"]


def test_budget_exhaustion_end_to_end_is_exit_3_with_what_was_fetched_committed(sandbox, run, dirs, clock):
    with EbaySandbox(clock=clock) as server:
        result, record = run(None, "--providers", "ebay", env=ebay_env(server, EBAY_DAILY_CALL_BUDGET="2"))
    assert result.exit_code == 3, result.output
    entry = record["providers"]["ebay"]
    assert entry["status"] == "partial" and "EBAY_DAILY_CALL_BUDGET" in entry["reason"]
    assert entry["written"] == len([r for r in parquet_rows(dirs["data"]) if r["source"] == "ebay"]) > 0


def test_ebay_dry_run_with_limit_prints_what_it_would_write_and_counts_the_call(run, dirs, clock):
    with EbaySandbox(clock=clock) as server:
        result, record = run(None, "--providers", "ebay", "--dry-run", "--limit", "10", env=ebay_env(server))
    assert result.exit_code == 0, result.output
    assert result.stdout.count("  would write  ") == 10
    assert not (dirs["data"] / "normalized").exists()
    [calls] = (dirs["data"] / "state").glob("ebay_calls.*.json")  # the keyset's count
    assert json.loads(calls.read_text())["calls"] == 1

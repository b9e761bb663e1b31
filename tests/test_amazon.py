"""Amazon on the Creators API: tokens, paging, batching, partial errors, pacing, the normalizer."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from decimal import Decimal
from urllib.parse import parse_qs

import pytest
import responses

from connectors import amazon
from connectors.http import AuthError, HttpSettings
from normalize import Rejected
from normalize.amazon import to_product
from pipelines.config import load_settings
from sandbox.amazon import COGNITO_PATH, LWA_PATH, AmazonSandbox
from tests.conftest import load_fixture, parquet_rows

BASE = "https://creatorsapi.amazon"
SEARCH = BASE + amazon.SEARCH_PATH
GET = BASE + amazon.GET_ITEMS_PATH
LWA = "https://api.amazon.com/auth/o2/token"
COGNITO = "https://creatorsapi.auth.us-east-1.amazoncognito.com/oauth2/token"
SECRET = "test-amazon-credential-secret"


def settings(version="3.1", **extra):
    env = {"AMAZON_CREATORS_CREDENTIAL_ID": "cred-id", "AMAZON_CREATORS_CREDENTIAL_SECRET": SECRET,
           "AMAZON_CREATORS_VERSION": version, "AMAZON_PARTNER_TAG": "mytag-20",
           "AMAZON_SEARCH_KEYWORDS": "steel mug|HomeAndKitchen", **extra}
    return load_settings(env).amazon


def client(clock, s, **http):
    return amazon.make_client(s, HttpSettings(**http), sleep=clock.sleep, clock=clock)


def items(n, prefix="B0ITEM"):
    return [{"asin": f"{prefix}{i:04d}", "itemInfo": {"title": {"displayValue": f"Item {i}"}}} for i in range(n)]


def search_page(n, total=None, prefix="B0ITEM"):
    return {"searchResult": {"totalResultCount": total if total is not None else n, "items": items(n, prefix)}}


@responses.activate
def test_lwa_token_flow_uses_a_json_body_and_a_plain_bearer_header(clock):
    token = responses.post(LWA, json={"access_token": "tok-3", "expires_in": 3600})
    responses.post(SEARCH, json=search_page(3))
    s = settings("3.1")
    list(amazon.iter_records(client(clock, s), s, clock=clock))
    sent = json.loads(token.calls[0].request.body)
    assert sent == {"grant_type": "client_credentials", "client_id": "cred-id", "client_secret": SECRET,
                    "scope": "creatorsapi::default"}
    assert responses.calls[1].request.headers["Authorization"] == "Bearer tok-3"


@responses.activate
def test_cognito_token_flow_uses_a_form_body_and_the_version_in_the_header(clock):
    token = responses.post(COGNITO, json={"access_token": "tok-2", "expires_in": 3600})
    responses.post(SEARCH, json=search_page(3))
    s = settings("2.1")
    list(amazon.iter_records(client(clock, s), s, clock=clock))
    sent = {k: v[0] for k, v in parse_qs(token.calls[0].request.body).items()}
    assert sent["scope"] == "creatorsapi/default" and sent["grant_type"] == "client_credentials"
    assert "Authorization" not in token.calls[0].request.headers  # credentials in the body, not Basic
    assert responses.calls[1].request.headers["Authorization"] == "Bearer tok-2, Version 2.1"


@responses.activate
def test_token_is_refreshed_shortly_before_it_expires(clock):
    token = responses.post(LWA, json={"access_token": "tok", "expires_in": 100})
    responses.post(SEARCH, json=search_page(10, total=30))
    s = settings(AMAZON_REQUESTS_PER_SECOND="0.02")  # 50 s between requests: the token ages fast
    list(amazon.iter_records(client(clock, s), s, clock=clock))
    assert token.call_count == 2  # page 1 at t0, page 2 at t0+50 (within 90 s), page 3 at t0+100: new token


@responses.activate
def test_missing_expires_in_defaults_to_an_hour(clock):
    token = responses.post(LWA, json={"access_token": "tok"})
    responses.post(SEARCH, json=search_page(10, total=30))
    s = settings()
    list(amazon.iter_records(client(clock, s), s, clock=clock))
    assert token.call_count == 1


@responses.activate
def test_a_401_refreshes_the_token_once_and_retries_once(clock):
    token = responses.post(LWA, json={"access_token": "tok", "expires_in": 3600})
    responses.post(SEARCH, status=401, json={"type": "UnauthorizedException", "message": "expired", "reason": "TokenExpired"})
    responses.post(SEARCH, json=search_page(2))
    s = settings()
    assert len(list(amazon.iter_records(client(clock, s), s, clock=clock))) == 2
    assert token.call_count == 2


@responses.activate
def test_a_second_401_is_an_auth_error(clock):
    responses.post(LWA, json={"access_token": "tok", "expires_in": 3600})
    responses.post(SEARCH, status=401, json={"type": "UnauthorizedException", "message": "bad", "reason": "InvalidToken"})
    s = settings()
    with pytest.raises(AuthError):
        list(amazon.iter_records(client(clock, s), s, clock=clock))
    assert len([c for c in responses.calls if c.request.url == SEARCH]) == 2


@responses.activate
def test_search_pages_until_a_short_page_with_the_documented_body(clock):
    responses.post(LWA, json={"access_token": "tok"})
    responses.post(SEARCH, json=search_page(10, total=100, prefix="B0PAGEA"))
    responses.post(SEARCH, json=search_page(4, total=100, prefix="B0PAGEB"))
    s = settings()
    records = list(amazon.iter_records(client(clock, s), s, clock=clock))
    assert len(records) == 14
    bodies = [json.loads(c.request.body) for c in responses.calls if c.request.url == SEARCH]
    assert [b["itemPage"] for b in bodies] == [1, 2]
    assert bodies[0]["keywords"] == "steel mug" and bodies[0]["searchIndex"] == "HomeAndKitchen"
    assert bodies[0]["itemCount"] == 10 and bodies[0]["partnerTag"] == "mytag-20"
    assert "offersV2.listings.price" in bodies[0]["resources"]
    assert all(c.request.headers["x-marketplace"] == "www.amazon.com" for c in responses.calls[1:])


@responses.activate
def test_search_stops_after_page_ten(clock):
    responses.post(LWA, json={"access_token": "tok"})
    for page in range(11):
        responses.post(SEARCH, json=search_page(10, total=500, prefix=f"B0P{page:02d}X"))
    s = settings()
    assert len(list(amazon.iter_records(client(clock, s), s, clock=clock))) == 100


@responses.activate
def test_a_404_search_is_an_empty_result_not_a_failure(clock):
    responses.post(LWA, json={"access_token": "tok"})
    responses.post(SEARCH, status=404, json={"type": "ResourceNotFoundException", "message": "No results"})
    s = settings()
    assert list(amazon.iter_records(client(clock, s), s, clock=clock)) == []


@responses.activate
def test_get_items_in_batches_of_ten_and_partial_errors_are_counted(clock):
    responses.post(LWA, json={"access_token": "tok"})
    responses.post(GET, json={"itemsResult": {"items": items(9)},
                              "errors": [{"code": "InvalidParameterValue", "message": "ItemId B0XXXXXXXX is invalid"}]})
    responses.post(GET, json={"itemsResult": {"items": items(10, "B0MORE")}})
    responses.post(GET, json={"itemsResult": {"items": items(3, "B0LAST")}})
    asins = ",".join(f"B0ASIN{i:04d}" for i in range(23))
    s = load_settings({"AMAZON_CREATORS_CREDENTIAL_ID": "id", "AMAZON_CREATORS_CREDENTIAL_SECRET": SECRET,
                       "AMAZON_CREATORS_VERSION": "3.1", "AMAZON_PARTNER_TAG": "t-20", "AMAZON_ASINS": asins}).amazon
    http = client(clock, s)
    records = list(amazon.iter_records(http, s, clock=clock))
    assert len(records) == 22
    batches = [json.loads(c.request.body)["itemIds"] for c in responses.calls if c.request.url == GET]
    assert [len(b) for b in batches] == [10, 10, 3]
    assert http.stats.partial_errors == 1


@responses.activate
def test_429_is_retried_with_backoff_and_requests_are_paced(clock):
    responses.post(LWA, json={"access_token": "tok"})
    responses.post(SEARCH, status=429, json={"type": "ThrottleException", "message": "Rate exceeded"})
    responses.post(SEARCH, json=search_page(10, total=20))
    responses.post(SEARCH, json=search_page(10, total=20, prefix="B0SECOND"))
    s = settings()
    http = client(clock, s)
    list(amazon.iter_records(http, s, clock=clock))
    assert http.stats.retries == 1
    assert http.stats.requests == 4 and http.stats.throttle_wait_s > 0
    assert all(s >= 1.0 for s in clock.sleeps)


@responses.activate
def test_the_same_asin_from_two_searches_is_yielded_once(clock):
    responses.post(LWA, json={"access_token": "tok"})
    responses.post(SEARCH, json=search_page(3))
    responses.post(SEARCH, json=search_page(4))
    s = settings(AMAZON_SEARCH_KEYWORDS="mug,cup")
    assert [r["asin"] for r in amazon.iter_records(client(clock, s), s, clock=clock)] == [f"B0ITEM{i:04d}" for i in range(4)]


@responses.activate
def test_the_token_request_is_never_cached(clock, tmp_path):
    token = responses.post(LWA, json={"access_token": "tok-secret-value", "expires_in": 3600})
    responses.post(SEARCH, json=search_page(2))
    s = settings()
    for _ in range(2):
        http = client(clock, s, cache_dir=tmp_path / "amazon")
        list(amazon.iter_records(http, s, clock=clock))
        http.close()
    assert token.call_count == 2
    stored = b"".join(p.read_bytes() for p in (tmp_path / "amazon").iterdir())
    assert b"tok-secret-value" not in stored and SECRET.encode() not in stored


# -- settings -------------------------------------------------------------------------------
def test_legacy_paapi_variables_alone_skip_amazon_with_the_retirement_message(sandbox, run):
    legacy = {"AMAZON_PAAPI_ACCESS_KEY": "legacy-key", "AMAZON_PAAPI_SECRET_KEY": "legacy-secret",
              "AMAZON_PAAPI_PARTNER_TAG": "mytag-20", "AMAZON_PAAPI_HOST": "webservices.amazon.com",
              "AMAZON_PAAPI_REGION": "us-east-1"}
    result, record = run(sandbox, env=legacy)
    assert result.exit_code == 0
    reason = record["providers"]["amazon"]["reason"]
    assert "retired on 2026-05-15" in reason and "AMAZON_CREATORS_CREDENTIAL_ID" in reason
    assert "retired on 2026-05-15" in result.output
    result, _ = run(sandbox, "--providers", "amazon", env=legacy)
    assert result.exit_code == 2 and "retired on 2026-05-15" in result.output


def test_old_partner_tag_variable_is_an_alias():
    s = load_settings({"AMAZON_CREATORS_CREDENTIAL_ID": "id", "AMAZON_CREATORS_CREDENTIAL_SECRET": "s",
                       "AMAZON_CREATORS_VERSION": "2.2", "AMAZON_PAAPI_PARTNER_TAG": "old-20",
                       "AMAZON_ASINS": "B0TESTMUG1"}).amazon
    assert s.partner_tag == "old-20" and s.token_url.startswith("https://creatorsapi.auth.eu-south-2")


@pytest.mark.parametrize("name, value", [("AMAZON_CREATORS_VERSION", "5.0"), ("AMAZON_ASINS", "SHORT"),
                                         ("AMAZON_SEARCH_KEYWORDS", "mug|Home And Kitchen"),
                                         ("AMAZON_API_BASE_URL", "http://creatorsapi.amazon")])
def test_malformed_amazon_settings_name_the_variable(name, value):
    from pipelines.config import ConfigError

    env = {"AMAZON_CREATORS_CREDENTIAL_ID": "id", "AMAZON_CREATORS_CREDENTIAL_SECRET": "s",
           "AMAZON_CREATORS_VERSION": "3.1", "AMAZON_PARTNER_TAG": "t-20", "AMAZON_ASINS": "B0TESTMUG1", name: value}
    with pytest.raises(ConfigError, match=name):
        load_settings(env)


# -- normalizer -----------------------------------------------------------------------------
FETCHED = datetime(2026, 11, 27, tzinfo=timezone.utc)


def norm(raw):
    return to_product(raw, account="www.amazon.com", fetched_at=FETCHED, run_id="20261127T000000Z-abcdef")


def test_normalizer_reads_the_documented_item_shape():
    item = load_fixture("amazon", "search_items.json")["searchResult"]["items"][0]
    p = norm(item)
    assert (p.source, p.account, p.source_id) == ("amazon", "www.amazon.com", "B0TESTMUG1")
    assert (p.title, p.brand, p.category) == ("Steel Trail Mug 12oz", "Acme", "Mugs")
    assert p.price == Decimal("19.99") and p.currency == "USD"  # the buy-box listing, not the first
    assert (p.availability, p.condition, p.seller) == ("in_stock", "New", "Amazon.com")
    assert p.gtin == "4006381333931" and p.url.startswith("https://www.amazon.com/dp/B0TESTMUG1")
    assert p.image_url.endswith("mug._SL500_.jpg") and p.description == "Double wall\nDishwasher safe"


def test_item_without_offers_images_or_brand_has_nulls():
    p = norm(load_fixture("amazon", "search_items.json")["searchResult"]["items"][1])
    assert p.price is None and p.currency is None and p.image_url is None and p.brand is None


@pytest.mark.parametrize("amount", [-1, "NaN", "Infinity", "1,299.00", True, [1]])
def test_bad_prices_are_rejected(amount):
    item = copy.deepcopy(load_fixture("amazon", "search_items.json")["searchResult"]["items"][0])
    item["offersV2"]["listings"][1]["price"]["money"]["amount"] = amount
    with pytest.raises(Rejected) as caught:
        norm(item)
    assert caught.value.field == "offersV2.listings.price.money.amount"


def test_missing_asin_or_title_is_rejected():
    item = load_fixture("amazon", "search_items.json")["searchResult"]["items"][0]
    for key in ("asin", "itemInfo"):
        broken = {k: v for k, v in item.items() if k != key}
        with pytest.raises(Rejected):
            norm(broken)


# -- end to end on the sandboxes --------------------------------------------------------------
def amazon_env(server, **extra):
    return {"AMAZON_API_BASE_URL": server.base_url, "AMAZON_TOKEN_URL": server.base_url + LWA_PATH,
            "AMAZON_CREATORS_CREDENTIAL_ID": server.credential_id,
            "AMAZON_CREATORS_CREDENTIAL_SECRET": server.credential_secret, "AMAZON_CREATORS_VERSION": "3.1",
            "AMAZON_PARTNER_TAG": server.partner_tag, "AMAZON_SEARCH_KEYWORDS": "steel mug|HomeAndKitchen,headphones",
            "AMAZON_ASINS": ",".join(sorted(server.items)[:12]) + ",B0NOTFOUND", **extra}


@pytest.fixture
def amazon_sandbox(clock):
    with AmazonSandbox(clock=clock, token_lifetime_s=5) as server:
        yield server


def test_shopify_and_amazon_twice_on_the_sandboxes_second_run_writes_nothing(sandbox, amazon_sandbox, run, dirs):
    result, first = run(sandbox, env=amazon_env(amazon_sandbox))
    assert result.exit_code == 0, result.output
    entry = first["providers"]["amazon"]
    expected = set(amazon_sandbox.search_results("steel mug")) | set(amazon_sandbox.search_results("headphones")) \
        | set(sorted(amazon_sandbox.items)[:12])
    assert entry["written"] == entry["fetched"] == len(expected)
    assert entry["partial_errors"] == 1  # B0NOTFOUND
    assert amazon_sandbox.rate_limited == 0  # the limiter kept under the enforced rate
    assert amazon_sandbox.minted >= 2  # 5-second tokens: the run had to re-mint
    result, second = run(sandbox, env=amazon_env(amazon_sandbox))
    assert second["providers"]["amazon"]["written"] == 0 and second["providers"]["shopify"]["written"] == 0
    rows = parquet_rows(dirs["data"])
    assert len([r for r in rows if r["source"] == "amazon"]) == len(expected)


@pytest.mark.parametrize("version, token_path", [("3.1", LWA_PATH), ("2.1", COGNITO_PATH)])
def test_amazon_dry_run_with_limit_prints_what_it_would_write(amazon_sandbox, run, dirs, version, token_path):
    env = amazon_env(amazon_sandbox, AMAZON_CREATORS_VERSION=version, AMAZON_TOKEN_URL=amazon_sandbox.base_url + token_path)
    result, record = run(None, "--providers", "amazon", "--dry-run", "--limit", "10", env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.count("  would write  ") == 10
    assert not dirs["data"].exists()


def test_a_token_the_server_expires_mid_run_is_re_minted_after_its_401(clock, run):
    with AmazonSandbox(clock=clock, revoke_tokens_every=3) as server:
        result, record = run(None, "--providers", "amazon", env=amazon_env(server))
        statuses = [e["status"] for e in server.api_requests() if e["path"].startswith("/catalog/")]
    assert result.exit_code == 0, result.output
    assert statuses.count(401) >= 2 and server.minted == statuses.count(401) + 1
    assert record["providers"]["amazon"]["written"] == record["providers"]["amazon"]["fetched"] > 0

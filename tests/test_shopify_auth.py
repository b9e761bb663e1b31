"""Shopify's two ways in: a Dev Dashboard app's client-credentials tokens (minted, reused,
re-minted before expiry and after a 401, refusals explained, scope checked) and the static token."""

from __future__ import annotations

import logging
from urllib.parse import parse_qs

import pytest
import requests
import responses
from pydantic import SecretStr

from connectors import shopify, shopify_auth
from connectors.http import AuthError, HttpSettings, RetriesExhausted
from connectors.oauth import TokenRefused, request_with_refresh
from connectors.redact import Redactor
from connectors.settings import ShopifySettings
from sandbox.catalog import CatalogSpec
from sandbox.shopify import ShopifySandbox
from tests.conftest import CLIENT_CREDENTIALS, CLIENT_ID, CLIENT_SECRET, SHOP as SHOP_DOMAIN, TOKEN, parquet_rows
from tests.test_shopify_connector import node, page

BASE = "https://test-shop.myshopify.com"
SHOP = ShopifySettings("test-shop.myshopify.com", "2026-10", None, BASE, bulk_min_products=0,
                       client_id=CLIENT_ID, client_secret=SecretStr(CLIENT_SECRET))
STATIC = ShopifySettings("test-shop.myshopify.com", "2026-10", SecretStr(TOKEN), BASE, bulk_min_products=0)
URL, TOKEN_URL = SHOP.graphql_url, SHOP.token_url
DAY = 24 * 3600


def client(clock, **http):
    return shopify.make_client(SHOP, HttpSettings(**http), sleep=clock.sleep, clock=clock)


def minted(token="shpat_minted_first", scope="read_products", expires_in=DAY, status=200, **extra):
    body = {"access_token": token, "scope": scope, **extra}
    if expires_in is not None:
        body["expires_in"] = expires_in
    return responses.post(TOKEN_URL, json=body, status=status)


def call(http, auth):
    return request_with_refresh(http, auth, "POST", URL, json_body={"query": "{ shop { name } }"})


def graphql_calls():
    return [c for c in responses.calls if c.request.url == URL]


def token_calls() -> int:
    """Token requests made, whichever registered answer served them."""
    return sum(c.request.url == TOKEN_URL for c in responses.calls)


@responses.activate
def test_the_token_is_minted_with_the_documented_form_body_and_sent_as_the_shopify_header(clock):
    token = minted()
    responses.post(URL, json=page([node(1)], False))
    records = list(shopify.iter_records(client(clock), SHOP, clock=clock))
    assert len(records) == 1 and token.call_count == 1
    request = token.calls[0].request
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert {k: v for k, v in parse_qs(request.body).items()} == {
        "grant_type": ["client_credentials"], "client_id": [CLIENT_ID], "client_secret": [CLIENT_SECRET]}
    assert "X-Shopify-Access-Token" not in request.headers and "Authorization" not in request.headers
    [query] = graphql_calls()
    assert query.request.headers["X-Shopify-Access-Token"] == "shpat_minted_first"


@responses.activate
def test_the_token_is_reused_and_re_minted_shortly_before_it_expires(clock):
    minted(expires_in=DAY)
    minted(token="shpat_minted_second", expires_in=DAY)
    responses.post(URL, json=page([], False))
    http = client(clock)
    auth = shopify_auth.make_auth(http, SHOP, clock)
    start = clock.now
    for at in (0, 3600, DAY - 61):  # a day's token, re-minted a minute before it runs out
        clock.now = start + at
        call(http, auth)
    assert token_calls() == 1
    clock.now = start + DAY - 59
    call(http, auth)
    assert token_calls() == 2
    assert [c.request.headers["X-Shopify-Access-Token"] for c in graphql_calls()] == ["shpat_minted_first"] * 3 + [
        "shpat_minted_second"]


@responses.activate
def test_a_401_re_mints_the_token_once_and_retries_once(clock):
    minted()
    minted(token="shpat_minted_second")
    responses.post(URL, status=401, json={"errors": "[API] Invalid API key or access token"})
    responses.post(URL, json=page([node(1)], False))
    assert len(list(shopify.iter_records(client(clock), SHOP, clock=clock))) == 1
    assert token_calls() == 2
    assert [c.request.headers["X-Shopify-Access-Token"] for c in graphql_calls()] == [
        "shpat_minted_first", "shpat_minted_second"]


@responses.activate
def test_a_second_401_after_a_fresh_token_is_an_auth_error(clock):
    minted()
    responses.post(URL, status=401, json={"errors": "[API] Invalid API key or access token"})
    with pytest.raises(AuthError) as caught:
        list(shopify.iter_records(client(clock), SHOP, clock=clock))
    assert caught.value.status == 401 and len(graphql_calls()) == 2


@responses.activate
def test_a_refused_static_token_is_not_retried(clock):
    responses.post(URL, status=401, json={"errors": "[API] Invalid API key or access token"})
    http = shopify.make_client(STATIC, HttpSettings(), sleep=clock.sleep, clock=clock)
    with pytest.raises(AuthError):
        list(shopify.iter_records(http, STATIC, clock=clock))
    assert len(responses.calls) == 1 and responses.calls[0].request.headers["X-Shopify-Access-Token"] == TOKEN


@pytest.mark.parametrize("status", [400, 401])
@responses.activate
def test_a_refused_client_secret_fails_at_once_naming_the_variables(clock, status):
    token = responses.post(TOKEN_URL, status=status, json={
        "error": "invalid_client", "error_description": "Client authentication failed"})
    with pytest.raises(TokenRefused) as caught:
        list(shopify.iter_records(client(clock), SHOP, clock=clock))
    message = str(caught.value)
    assert "SHOPIFY_CLIENT_ID" in message and "SHOPIFY_CLIENT_SECRET" in message and "invalid_client" in message
    assert caught.value.provider == "shopify" and caught.value.status == status
    assert CLIENT_SECRET not in message
    assert token.call_count == 1 and graphql_calls() == [] and clock.sleeps == []  # not retried, no query


@pytest.mark.parametrize("code, says", [
    ("app_not_installed", "not installed on test-shop.myshopify.com"),
    ("shop_not_permitted", "own organization"),
])
@responses.activate
def test_an_app_not_installed_or_not_permitted_fails_at_once_saying_what_to_check(clock, code, says):
    token = responses.post(TOKEN_URL, status=400, json={"error": code, "error_description": "no"})
    with pytest.raises(TokenRefused, match=says) as caught:
        list(shopify.iter_records(client(clock), SHOP, clock=clock))
    assert caught.value.error_code == code and "SHOPIFY_CLIENT_ID" in str(caught.value)
    assert token.call_count == 1 and graphql_calls() == []


@responses.activate
def test_a_throttled_or_failing_token_endpoint_is_retried_like_any_call(clock):
    responses.post(TOKEN_URL, status=503, json={"errors": "unavailable"})
    responses.post(TOKEN_URL, status=429, headers={"Retry-After": "3"}, json={"errors": "slow down"})
    minted()
    responses.post(URL, json=page([node(1)], False))
    assert len(list(shopify.iter_records(client(clock), SHOP, clock=clock))) == 1
    assert token_calls() == 3 and len(clock.sleeps) == 2 and clock.sleeps[1] == 3


@responses.activate
def test_a_token_endpoint_that_keeps_failing_gives_up(clock):
    responses.post(TOKEN_URL, status=500, json={"errors": "down"})
    with pytest.raises(RetriesExhausted):
        list(shopify.iter_records(client(clock, max_attempts=2), SHOP, clock=clock))
    assert graphql_calls() == []


@responses.activate
def test_an_answer_without_expires_in_lasts_24_hours_and_says_so_once(clock, caplog):
    minted(expires_in=None)
    minted(token="shpat_minted_second", expires_in=None)
    responses.post(URL, json=page([], False))
    http = client(clock)
    auth = shopify_auth.make_auth(http, SHOP, clock)
    start = clock.now
    with caplog.at_level(logging.INFO, logger="pipeline.shopify"):
        for at in (0, DAY - 61, DAY - 59):
            clock.now = start + at
            call(http, auth)
    assert token_calls() == 2
    assert sum("24 hours" in r.getMessage() for r in caplog.records) == 1


@responses.activate
def test_a_token_without_a_products_scope_fails_before_any_query(clock):
    minted(scope="read_orders,read_customers")
    with pytest.raises(shopify_auth.MissingScope) as caught:
        list(shopify.iter_records(client(clock), SHOP, clock=clock))
    message = str(caught.value)
    assert "lacks the read_products scope" in message and "read_customers, read_orders" in message
    assert graphql_calls() == []


@pytest.mark.parametrize("scope", ["write_products", "read_orders,write_products", "read_products"])
@responses.activate
def test_a_read_or_write_products_scope_is_enough(clock, scope):
    minted(scope=scope)
    responses.post(URL, json=page([node(1)], False))
    assert len(list(shopify.iter_records(client(clock), SHOP, clock=clock))) == 1


@responses.activate
def test_the_token_goes_only_to_the_configured_host(clock):
    minted()
    auth = shopify_auth.make_auth(client(clock), SHOP, clock)
    elsewhere = auth(requests.Request("GET", "https://storage.example/bulk/1.jsonl").prepare())
    assert "X-Shopify-Access-Token" not in elsewhere.headers and len(responses.calls) == 0  # nothing minted
    same_host = auth(requests.Request("POST", URL).prepare())
    assert same_host.headers["X-Shopify-Access-Token"] == "shpat_minted_first"


@responses.activate
def test_the_token_request_is_never_cached_and_no_token_or_secret_is_stored(clock, tmp_path):
    token = minted(token="shpat_minted_cache_probe")
    responses.post(URL, json=page([node(1)], False))
    for _ in range(2):
        http = client(clock, cache_dir=tmp_path / "shopify")
        list(shopify.iter_records(http, SHOP, clock=clock))
        http.close()
    assert token.call_count == 2 and len(graphql_calls()) == 1  # the second query came from the cache
    stored = b"".join(p.read_bytes() for p in (tmp_path / "shopify").iterdir())
    assert b"shpat_minted_cache_probe" not in stored and CLIENT_SECRET.encode() not in stored


@responses.activate
def test_a_minted_token_is_redacted_by_value_even_when_not_token_shaped(clock):
    minted(token="opaque-minted-value-4242")
    responses.post(URL, json=page([node(1)], False))
    list(shopify.iter_records(client(clock), SHOP, clock=clock))
    assert Redactor()("sent opaque-minted-value-4242 to the API") == "sent *** to the API"


# -- against the sandbox, through the CLI ---------------------------------------------------------
def queries(server) -> list[dict]:
    return [e for e in server.api_requests() if e["path"].endswith("/graphql.json")]


def refused(server) -> int:
    return sum(e["status"] == 401 for e in queries(server))


def test_a_long_crawl_re_mints_its_token_before_it_expires(run, clock):
    # A tight bucket on the test's clock: the crawl waits for points, and tokens (5 s) age meanwhile.
    with ShopifySandbox(CatalogSpec(size=120), token=None, client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                        token_lifetime_s=5, bucket_max=500, restore_rate=50, clock=clock) as server:
        result, record = run(server, env=CLIENT_CREDENTIALS)
    assert result.exit_code == 0, result.output
    assert record["providers"]["shopify"]["written"] == 120
    assert server.oauth.minted >= 2 and refused(server) == 0  # each re-minted in time, none refused
    used = {e["headers"]["X-Shopify-Access-Token"] for e in queries(server)}
    assert used == set(server.oauth.tokens)
    assert "re-minted the access token" in result.output


def test_a_bulk_operation_that_outlives_its_token_keeps_polling_with_fresh_ones(cc_sandbox, run, dirs):
    cc_sandbox.bulk_polls_to_finish = 6  # polls 5, 7.5, 11.25, 16.9 and 25.3 s apart: tokens live 5 s
    result, record = run(cc_sandbox, "--full-refresh", env=CLIENT_CREDENTIALS)
    assert result.exit_code == 0, result.output
    assert record["providers"]["shopify"]["written"] == 100 and len(cc_sandbox.bulk_operations) == 1
    assert cc_sandbox.oauth.minted >= 5 and refused(cc_sandbox) == 0
    [download] = cc_sandbox.storage.api_requests()
    assert "x-shopify-access-token" not in {k.lower() for k in download["headers"]}


def test_a_token_that_dies_before_it_was_expected_to_is_re_minted_after_the_401(cc_sandbox, run):
    cc_sandbox.oauth.states_expiry = False  # taken to last 24 hours; the sandbox ends it after 5 s
    cc_sandbox.bulk_polls_to_finish = 4
    result, record = run(cc_sandbox, "--full-refresh", env=CLIENT_CREDENTIALS)
    assert result.exit_code == 0, result.output
    assert record["providers"]["shopify"]["written"] == 100
    assert cc_sandbox.oauth.minted >= 2 and refused(cc_sandbox) == cc_sandbox.oauth.minted - 1
    assert result.output.count("taken to last 24 hours") == 1
    assert "refused the access token (HTTP 401); minting a new one" in result.output


def test_a_refused_client_secret_fails_shopify_naming_the_variables(cc_sandbox, run, dirs):
    result, record = run(cc_sandbox, env={**CLIENT_CREDENTIALS, "SHOPIFY_CLIENT_SECRET": "test-wrong-secret"})
    entry = record["providers"]["shopify"]
    assert result.exit_code == 1 and entry["error_type"] == "TokenRefused"
    assert "SHOPIFY_CLIENT_ID and SHOPIFY_CLIENT_SECRET" in entry["error"] and "invalid_client" in entry["error"]
    assert len(cc_sandbox.api_requests()) == 1 and queries(cc_sandbox) == []  # asked once, never retried
    assert parquet_rows(dirs["data"]) == []


def test_an_app_not_installed_on_the_shop_fails_naming_the_installation(cc_sandbox, run):
    cc_sandbox.oauth.installed = False
    result, record = run(cc_sandbox, env=CLIENT_CREDENTIALS)
    entry = record["providers"]["shopify"]
    assert result.exit_code == 1 and entry["error_type"] == "TokenRefused"
    assert f"not installed on {SHOP_DOMAIN}" in entry["error"] and "app_not_installed" in entry["error"]
    assert len(cc_sandbox.api_requests()) == 1


def test_a_token_without_the_products_scope_fails_before_any_catalog_query(cc_sandbox, run):
    cc_sandbox.oauth.scope = "read_orders,write_customers"
    result, record = run(cc_sandbox, env=CLIENT_CREDENTIALS)
    entry = record["providers"]["shopify"]
    assert result.exit_code == 1 and entry["error_type"] == "MissingScope"
    assert "lacks the read_products scope" in entry["error"]
    assert queries(cc_sandbox) == []


@pytest.mark.parametrize("extra", [{"SHOPIFY_ACCESS_TOKEN": TOKEN}, {"SHOPIFY_CLIENT_SECRET": None}])
def test_both_ways_at_once_or_half_a_pair_is_exit_2_naming_the_variables(cc_sandbox, run, extra):
    result, _ = run(cc_sandbox, env={**CLIENT_CREDENTIALS, **extra})
    assert result.exit_code == 2
    assert "SHOPIFY_CLIENT_ID" in result.output and "SHOPIFY_CLIENT_SECRET" in result.output
    assert cc_sandbox.api_requests() == []

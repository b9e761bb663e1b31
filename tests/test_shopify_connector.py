"""The Shopify connector: paging, page size from reported cost, pacing, variants, restarts."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import graphql
import pytest
import responses
from pydantic import SecretStr

from connectors import shopify
from connectors.http import HttpClient, HttpSettings
from connectors.settings import ShopifySettings
from sandbox.catalog import CatalogSpec
from sandbox.shopify import ShopifySandbox, admin_schema
from tests.conftest import TOKEN

SHOP = ShopifySettings("test-shop.myshopify.com", "2026-10", SecretStr(TOKEN), "https://test-shop.myshopify.com", bulk_min_products=0)
URL = SHOP.graphql_url


def http(clock) -> HttpClient:
    return shopify.make_client(SHOP, HttpSettings(), sleep=clock.sleep)


def node(n: int, updated: str = "2026-11-20T08:15:00Z", variants: int = 1, more: bool = False) -> dict:
    return {"id": f"gid://shopify/Product/{n}", "title": f"P{n}", "updatedAt": updated,
            "variants": {"pageInfo": {"hasNextPage": more, "endCursor": "v1" if more else None},
                         "nodes": [{"id": f"gid://shopify/ProductVariant/{n}{i}", "price": "1.00"} for i in range(variants)]}}


def page(nodes, has_next, cursor="c", requested=200, available=1800, restore=100.0, maximum=2000.0):
    return {"data": {"products": {"pageInfo": {"hasNextPage": has_next, "endCursor": cursor if has_next else None},
                                  "nodes": nodes}},
            "extensions": {"cost": {"requestedQueryCost": requested, "actualQueryCost": requested,
                                    "throttleStatus": {"maximumAvailable": maximum, "currentlyAvailable": available,
                                                       "restoreRate": restore}}}}


def sent(call) -> dict:
    return json.loads(call.request.body)


@responses.activate
def test_pages_follow_end_cursor_with_the_incremental_filter(clock):
    responses.post(URL, json=page([node(1), node(2)], True, cursor="abc"))
    responses.post(URL, json=page([node(3)], False))
    since = (datetime(2026, 11, 1, tzinfo=timezone.utc), 5)
    records = list(shopify.iter_records(http(clock), SHOP, since=since, lookback=timedelta(minutes=10)))
    assert [r["id"] for r in records] == [f"gid://shopify/Product/{n}" for n in (1, 2, 3)]
    first, second = (sent(c)["variables"] for c in responses.calls)
    assert first["after"] is None and second["after"] == "abc"
    assert first["query"] == second["query"] == "updated_at:>'2026-10-31T23:50:00Z'"
    assert responses.calls[0].request.headers["X-Shopify-Access-Token"] == TOKEN
    assert isinstance(records[0]["variants"], list)


@responses.activate
def test_page_size_is_derived_from_the_reported_cost(clock):
    # 10 products requested for 190 points -> 19 a product -> 1000 // 19 = 52 fit under the cap.
    responses.post(URL, json=page([node(1)], True, requested=190))
    responses.post(URL, json=page([node(2)], False, requested=52 * 19))
    list(shopify.iter_records(http(clock), SHOP))
    assert [sent(c)["variables"]["first"] for c in responses.calls] == [shopify.FIRST_PAGE_SIZE, 52]


@responses.activate
def test_max_cost_exceeded_shrinks_the_page_and_retries(clock):
    responses.post(URL, json={"errors": [{"message": "Query cost is 2000", "extensions": {
        "code": "MAX_COST_EXCEEDED", "cost": 2000, "maxCost": 1000}}]})
    responses.post(URL, json=page([node(1)], False, requested=95))
    records = list(shopify.iter_records(http(clock), SHOP))
    assert len(records) == 1
    assert [sent(c)["variables"]["first"] for c in responses.calls] == [10, 5]


@responses.activate
def test_throttled_answer_waits_for_the_deficit_at_the_restore_rate(clock):
    responses.post(URL, json={"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
                              "extensions": {"cost": {"requestedQueryCost": 752, "actualQueryCost": None,
                                                      "throttleStatus": {"maximumAvailable": 2000.0,
                                                                         "currentlyAvailable": 152, "restoreRate": 100.0}}}})
    responses.post(URL, json=page([node(1)], False))
    client = http(clock)
    list(shopify.iter_records(client, SHOP, clock=clock))
    assert clock.sleeps == [pytest.approx(6.0)]
    assert client.stats.throttle_wait_s == pytest.approx(6.0)


@responses.activate
def test_throttled_answer_with_http_429_is_handled_the_same_way(clock):
    responses.post(URL, status=429, json={"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
                                          "extensions": {"cost": {"requestedQueryCost": 500, "throttleStatus": {
                                              "maximumAvailable": 2000.0, "currentlyAvailable": 100, "restoreRate": 50.0}}}})
    responses.post(URL, json=page([node(1)], False))
    list(shopify.iter_records(http(clock), SHOP, clock=clock))
    assert clock.sleeps == [pytest.approx(8.0)]


def variants(first: int, count: int, more: bool, cursor: str) -> dict:
    return {"variants": {"pageInfo": {"hasNextPage": more, "endCursor": cursor},
                         "nodes": [{"id": f"gid://shopify/ProductVariant/9{first + i}", "price": "2.00"}
                                   for i in range(count)]}}


@responses.activate
def test_products_with_more_variants_get_the_rest_fetched(clock):
    responses.post(URL, json=page([node(1, variants=2, more=True)], False))
    responses.post(URL, json={"data": {"more0": variants(0, 1, False, "v2")}})
    [record] = shopify.iter_records(http(clock), SHOP)
    assert len(record["variants"]) == 3
    follow_up = sent(responses.calls[1])
    assert follow_up["query"] == shopify.follow_up_query(None, shopify.VARIANTS_QUERY, 1)
    assert follow_up["variables"] == {"id0": "gid://shopify/Product/1", "after0": "v1", "childFirst": 20}
    assert len(responses.calls) == 2


@responses.activate
def test_more_variants_ride_along_with_the_next_page_and_records_keep_their_order(clock):
    responses.post(URL, json=page([node(1, variants=2, more=True), node(2), node(3, variants=1, more=True)], True,
                                  requested=300))
    second = page([node(4)], False, requested=300 + 2 * 24)
    second["data"].update(more0=variants(0, 3, False, "a"), more1=variants(10, 2, False, "b"))
    responses.post(URL, json=second)
    records = list(shopify.iter_records(http(clock), SHOP))
    assert [r["id"][-1] for r in records] == ["1", "2", "3", "4"]
    assert [len(r["variants"]) for r in records] == [5, 1, 3, 1]
    assert all(isinstance(r["variants"], list) for r in records)
    page_two = sent(responses.calls[1])
    assert page_two["query"] == shopify.follow_up_query(shopify.PRODUCTS_QUERY, shopify.VARIANTS_QUERY, 2)
    variables = page_two["variables"]
    assert (variables["id0"], variables["after0"], variables["id1"], variables["after1"]) == (
        "gid://shopify/Product/1", "v1", "gid://shopify/Product/3", "v1")
    # 300 points for 10 records, and a follow-up (20 variants) guessed at two records' worth (10
    # variants each): 1000 - 2 x 60 points left for 29 records
    assert variables["first"] == 29
    assert len(responses.calls) == 2


@responses.activate
def test_held_products_wait_in_order_when_the_cost_cap_leaves_room_for_fewer_follow_ups(clock):
    # 300 points a record: beside one record, one follow-up fits (guessed at 600 points)
    responses.post(URL, json=page([node(1, more=True), node(2, more=True)], True, requested=3000))
    second = page([node(3)], False, requested=300 + 100)  # one follow-up costs 100, as learned here
    second["data"].update(more0=variants(0, 2, False, "a"))
    responses.post(URL, json=second)
    responses.post(URL, json={"data": {"more0": variants(10, 4, False, "b")}})
    records = list(shopify.iter_records(http(clock), SHOP))
    assert [r["id"][-1] for r in records] == ["1", "2", "3"]
    assert [len(r["variants"]) for r in records] == [3, 5, 1]
    page_two, last = sent(responses.calls[1])["variables"], sent(responses.calls[2])
    assert (page_two["first"], page_two["id0"], "id1" in page_two) == (1, "gid://shopify/Product/1", False)
    assert last["query"] == shopify.follow_up_query(None, shopify.VARIANTS_QUERY, 1)
    assert last["variables"]["id0"] == "gid://shopify/Product/2"
    assert len(responses.calls) == 3


@responses.activate
def test_a_follow_up_costlier_than_guessed_is_asked_again_with_fewer_beside_the_page(clock):
    responses.post(URL, json=page([node(1, more=True)], True, requested=200))
    responses.post(URL, json={"errors": [{"message": "Query cost is 1400", "extensions": {
        "code": "MAX_COST_EXCEEDED", "cost": 1400, "maxCost": 1000}}]})
    second = page([node(2)], False, requested=300)
    second["data"].update(more0=variants(0, 1, False, "a"))
    responses.post(URL, json=second)
    records = list(shopify.iter_records(http(clock), SHOP))
    assert [len(r["variants"]) for r in records] == [2, 1]
    refused, retried = (sent(c)["variables"] for c in responses.calls[1:3])
    assert refused["id0"] == retried["id0"] == "gid://shopify/Product/1"
    assert retried["first"] < refused["first"]  # the page shrank, and the follow-up is still asked
    assert len(responses.calls) == 3


@responses.activate
def test_variants_left_after_the_follow_up_come_one_query_a_product_and_a_deleted_product_keeps_its_own(clock):
    responses.post(URL, json=page([node(1, variants=1, more=True), node(2, variants=1, more=True)], True))
    second = page([node(3)], False)
    second["data"].update(more0=variants(0, 20, True, "after-20"), more1=None)  # product 2 deleted meanwhile
    responses.post(URL, json=second)
    responses.post(URL, json={"data": {"product": variants(100, 30, False, "end")}})
    records = list(shopify.iter_records(http(clock), SHOP))
    assert [len(r["variants"]) for r in records] == [51, 1, 1]
    last = sent(responses.calls[2])
    assert last["query"] == shopify.VARIANTS_QUERY
    assert last["variables"] == {"id": "gid://shopify/Product/1", "after": "after-20", "childFirst": 250}
    assert len(responses.calls) == 3


@responses.activate
def test_an_answer_without_the_follow_up_field_leaves_the_rest_to_a_query_of_its_own(clock):
    responses.post(URL, json=page([node(1, variants=1, more=True)], False))
    responses.post(URL, json={"data": {}})
    responses.post(URL, json={"data": {"product": variants(0, 2, False, "end")}})
    [record] = shopify.iter_records(http(clock), SHOP)
    assert len(record["variants"]) == 3
    assert sent(responses.calls[2])["variables"]["after"] == "v1"


@responses.activate
def test_long_crawls_restart_the_filtered_query_from_the_last_key(clock):
    responses.post(URL, json=page([node(1, "2026-11-01T00:00:00Z"), node(2, "2026-11-02T00:00:00Z")], True))
    # the restarted query overlaps (same updatedAt, lower id) and must not yield node 2 again
    responses.post(URL, json=page([node(2, "2026-11-02T00:00:00Z"), node(3, "2026-11-02T00:00:00Z")], False))
    records = list(shopify.iter_records(http(clock), SHOP, restart_after_pages=1))
    assert [r["id"][-1] for r in records] == ["1", "2", "3"]
    restarted = sent(responses.calls[1])["variables"]
    assert restarted["after"] is None and restarted["query"] == "updated_at:>='2026-11-02T00:00:00Z'"


@responses.activate
def test_graphql_errors_are_fatal_with_the_message(clock):
    responses.post(URL, json={"errors": [{"message": "Field 'x' doesn't exist on type 'Product'"}]})
    with pytest.raises(shopify.ResponseError, match="doesn't exist"):
        list(shopify.iter_records(http(clock), SHOP))


@pytest.mark.parametrize("query", shopify.QUERIES)
def test_every_query_validates_against_the_published_schema(query):
    assert graphql.validate(admin_schema(), graphql.parse(query)) == []


@pytest.mark.parametrize("query", shopify.QUERIES)
def test_no_query_selects_a_deprecated_field(query):
    schema, deprecated = admin_schema(), []
    info = graphql.TypeInfo(schema)

    class Visitor(graphql.Visitor):
        def enter_field(self, node, *args):
            field = info.get_field_def()
            if field is not None and field.deprecation_reason:
                deprecated.append(node.name.value)

    graphql.visit(graphql.parse(query), graphql.TypeInfoVisitor(info, Visitor()))
    assert deprecated == []
    assert _visitor_sees_deprecated_fields()


def _visitor_sees_deprecated_fields() -> bool:
    """The check above can fail: it does catch a deprecated field (Product.images)."""
    info, found = graphql.TypeInfo(admin_schema()), []

    class Visitor(graphql.Visitor):
        def enter_field(self, node, *args):
            field = info.get_field_def()
            if field is not None and field.deprecation_reason:
                found.append(node.name.value)

    graphql.visit(graphql.parse("{ products(first: 1) { nodes { images(first: 1) { nodes { url } } } } }"),
                  graphql.TypeInfoVisitor(info, Visitor()))
    return found == ["images"]


def test_against_the_sandbox_a_throttled_crawl_waits_instead_of_drawing_throttled(clock):
    # A tight bucket (500 points, 50/s) on the sandbox's clock, which moves only when we sleep.
    with ShopifySandbox(CatalogSpec(size=120), token=TOKEN, bucket_max=500, restore_rate=50, clock=clock) as server:
        shop = ShopifySettings("test-shop.myshopify.com", "2026-10", SecretStr(TOKEN), server.base_url, bulk_min_products=0)
        client = shopify.make_client(shop, HttpSettings(), sleep=clock.sleep)
        records = list(shopify.iter_records(client, shop, clock=clock))
    assert len(records) == 120
    assert server.throttled_count == 0
    assert client.stats.throttle_wait_s > 0 and sum(clock.sleeps) == pytest.approx(client.stats.throttle_wait_s)


def test_the_sandbox_refuses_queries_over_the_cost_cap_and_invalid_queries():
    with ShopifySandbox(CatalogSpec(size=5), token=TOKEN) as server:
        import requests

        url = f"{server.base_url}/admin/api/2026-10/graphql.json"
        headers = {"X-Shopify-Access-Token": TOKEN}
        big = requests.post(url, headers=headers, json={"query": shopify.PRODUCTS_QUERY, "variables": {
            "first": 250, "variantsFirst": 100}}).json()
        assert big["errors"][0]["extensions"]["code"] == "MAX_COST_EXCEEDED"
        bad = requests.post(url, headers=headers, json={"query": "{ products(first: 1) { nodes { nope } } }"}).json()
        assert "nope" in bad["errors"][0]["message"]
        assert requests.post(url, json={"query": "{ shop { name } }"}).status_code == 401


def events(ids, has_next=False, cursor=None) -> dict:
    return {"pageInfo": {"hasNextPage": has_next, "endCursor": cursor},
            "nodes": [{"id": f"gid://shopify/BasicEvent/{n}", "createdAt": "2026-11-20T08:00:00Z", "action": "destroy",
                       "subjectId": f"gid://shopify/Product/{n}", "subjectType": "PRODUCT"} for n in ids]}


@responses.activate
def test_the_destroyed_products_are_asked_for_beside_the_first_page_and_read_from_its_answer(clock):
    from connectors import shopify_events

    since = datetime(2026, 11, 20, tzinfo=timezone.utc)
    first = page([node(1)], False, requested=20 * 10 + 53)
    first["data"]["destroyed"] = events([7, 8])
    responses.post(URL, json=first)
    companion = shopify_events.companion(since=since, lookback=timedelta(minutes=10))
    client = http(clock)
    assert len(list(shopify.iter_records(client, SHOP, companion=companion))) == 1
    sent_first = sent(responses.calls[0])
    assert "destroyed: events(" in sent_first["query"] and "query Products(" in sent_first["query"]
    assert sent_first["variables"]["destroyedQuery"] == (
        "action:destroy AND subject_type:PRODUCT AND created_at:>='2026-11-19T23:50:00Z'")
    assert sent_first["variables"]["destroyedFirst"] == shopify_events.BESIDE_FIRST
    assert sent_first["variables"]["first"] == 9  # 10 records' worth of points, less the events' 53
    # Read from that answer: no request of its own when it has no next page.
    gone = list(shopify_events.iter_deletions(client, SHOP, since=since, lookback=timedelta(minutes=10),
                                              first_page=companion.answer))
    assert [e["subjectId"][-1] for e in gone] == ["7", "8"] and len(responses.calls) == 1


@responses.activate
def test_more_destroyed_products_than_the_first_page_held_are_read_on_from_its_cursor(clock):
    from connectors import shopify_events

    responses.post(URL, json={"data": {"events": events([9])}})
    gone = list(shopify_events.iter_deletions(http(clock), SHOP, since=None, first_page=events([7, 8], True, "e2")))
    assert [e["subjectId"][-1] for e in gone] == ["7", "8", "9"]
    [call] = responses.calls
    assert sent(call)["query"] == shopify_events.EVENTS_QUERY and sent(call)["variables"]["after"] == "e2"


@responses.activate
def test_a_first_page_too_costly_even_for_one_record_drops_the_destroyed_products_to_a_query_of_their_own(clock):
    from connectors import shopify_events

    responses.post(URL, json={"errors": [{"message": "Query cost is 1200", "extensions": {
        "code": "MAX_COST_EXCEEDED", "cost": 1200, "maxCost": 1000}}]})
    responses.post(URL, json=page([node(1)], False))
    class Hints(dict):
        set = dict.__setitem__

    companion = shopify_events.companion(since=None)
    hints = Hints({shopify.PAGE_SIZE_HINT: 1})  # one record a page, as learned before
    records = list(shopify.iter_records(http(clock), SHOP, hints=hints, companion=companion))
    assert len(records) == 1 and companion.answer is None
    assert "destroyed: events(" not in sent(responses.calls[1])["query"]


def test_a_catalog_whose_every_product_has_more_variants_keeps_full_pages(clock):
    # 12 variants each: every product needs a follow-up; pages must stay large throughout
    spec = CatalogSpec(size=300, min_variants=12, max_variants=12, many_variants_every=0)
    with ShopifySandbox(spec, token=TOKEN, throttle=False) as server:
        shop = ShopifySettings("test-shop.myshopify.com", "2026-10", SecretStr(TOKEN), server.base_url,
                               bulk_min_products=0)
        records = list(shopify.iter_records(shopify.make_client(shop, HttpSettings()), shop, clock=clock))
        firsts = [json.loads(e["body"])["variables"].get("first") for e in server.api_requests()]
    assert len(records) == 300 and {len(r["variants"]) for r in records} == {12}
    assert len(firsts) < 40  # a query a product would be over 300
    # Follow-ups come first, the page gets what is left: small pages while they catch up, and
    # full ones again late in the crawl (the page size learned is never lost)
    assert max(f for f in firsts[-6:] if f) >= 40


@responses.activate
def test_with_no_cost_reported_a_refused_follow_up_query_is_asked_again_smaller_and_ends(clock):
    nodes = [node(n, more=True) for n in range(1, 5)]
    responses.post(URL, json={"data": {"products": {"pageInfo": {"hasNextPage": False}, "nodes": nodes}}})
    responses.post(URL, json={"errors": [{"message": "Query cost is 1200", "extensions": {
        "code": "MAX_COST_EXCEEDED", "cost": 1200, "maxCost": 1000}}]})
    responses.post(URL, json={"data": {f"more{i}": variants(10 * i, 1, False, "x") for i in range(4)}})
    records = list(shopify.iter_records(http(clock), SHOP))
    assert [len(r["variants"]) for r in records] == [2, 2, 2, 2]
    refused, asked = (sent(c)["variables"] for c in responses.calls[1:3])
    assert "id3" in refused and "id2" in asked and "id3" not in asked  # fewer at once, then the rest
    assert len(responses.calls) <= 6


@responses.activate
def test_complete_records_leave_before_the_next_page_is_asked_for(clock):
    from itertools import islice

    responses.post(URL, json=page([node(1), node(2)], True))
    assert [r["id"][-1] for r in islice(shopify.iter_records(http(clock), SHOP), 2)] == ["1", "2"]
    assert len(responses.calls) == 1  # a limited run fetches no page it will not use

"""The sandbox's small executor must answer exactly as graphql-core's executor does."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from graphql import execute

from bench.dlt_products import QUERY as DLT_SHAPED  # the query a dlt user sends
from connectors.shopify import PRODUCTS_QUERY, VARIANTS_QUERY, follow_up_query
from connectors.shopify_events import DESTROYED_PRODUCTS, EVENTS_QUERY, companion
from connectors.shopify_graphql import combined_query
from sandbox.catalog import CatalogSpec
from sandbox.graphql_exec import Unsupported, execute_query
from sandbox.shopify import READ_ROOT_FIELDS, ShopifySandbox, _prepare, admin_schema

EDGES_ALIASES_FRAGMENTS = """query Edges($n: Int!) {
  first: products(first: $n, sortKey: ID) {
    edges { cursor node { __typename ...Core media: featuredMedia { __typename ... on MediaImage { image { url } } } } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
fragment Core on Product { id name: title variants(first: 2) { edges { cursor node { id title } } } }"""
ONE_PRODUCT = """{ product(id: "gid://shopify/Product/8000017") { id title variants(first: 250) { nodes { id } } }
  missing: product(id: "gid://shopify/Product/1") { id } }"""

BESIDE = companion(since=None)
CASES = [
    (PRODUCTS_QUERY, {"first": 30, "after": None, "query": None, "variantsFirst": 10}),
    (PRODUCTS_QUERY, {"first": 5, "after": None, "query": "updated_at:>'2026-06-01T00:00:00Z'", "variantsFirst": 10}),
    (VARIANTS_QUERY, {"id": "gid://shopify/Product/8000017", "after": "MTA=", "childFirst": 250}),
    (follow_up_query(PRODUCTS_QUERY, VARIANTS_QUERY, 2),  # a page with more variants of two products
     {"first": 5, "after": None, "query": None, "variantsFirst": 5, "childFirst": 20,
      "id0": "gid://shopify/Product/8000017", "after0": "NQ==", "id1": "gid://shopify/Product/8000034", "after1": None}),
    (DLT_SHAPED, {"first": 9, "after": None}),
    (EDGES_ALIASES_FRAGMENTS, {"n": 12}),
    (ONE_PRODUCT, {}),
    (EVENTS_QUERY, {"first": 250, "after": None, "query": DESTROYED_PRODUCTS}),  # the inline fragment on BasicEvent
    (combined_query(PRODUCTS_QUERY, BESIDE.declared, BESIDE.field),  # the destroyed products beside a page
     {"first": 5, "after": None, "query": None, "variantsFirst": 10, **BESIDE.variables}),
    (EVENTS_QUERY, {"first": 1, "after": "MQ==", "query": f"{DESTROYED_PRODUCTS} AND created_at:>='2026-11-01T00:00:00Z'"}),
]


@pytest.fixture(scope="module")
def sandbox():
    server = ShopifySandbox(CatalogSpec(size=60), throttle=False)
    for n in (3, 4):  # destroyed: two events
        server.destroy(f"gid://shopify/Product/800000{n}", datetime(2026, 11, 2, n, tzinfo=timezone.utc))
    return server


@pytest.mark.parametrize("query, variables", CASES, ids=range(len(CASES)))
def test_same_answer_as_graphql_core(sandbox, query, variables):
    prepared = _prepare(query)
    assert not prepared.errors
    expected = execute(admin_schema(), prepared.document, root_value=sandbox._root(), variable_values=variables)
    assert expected.errors is None
    fast = execute_query(admin_schema(), prepared.operation, prepared.fragments, sandbox._root(), variables,
                         READ_ROOT_FIELDS)
    # Equal as JSON text: same keys, same order, same values.
    assert json.dumps(fast) == json.dumps(expected.data)
    assert fast  # and not vacuously empty


def test_second_page_follows_the_first_cursor(sandbox):
    prepared = _prepare(PRODUCTS_QUERY)
    first = execute_query(admin_schema(), prepared.operation, prepared.fragments, sandbox._root(),
                          {"first": 3, "variantsFirst": 1}, READ_ROOT_FIELDS)
    after = first["products"]["pageInfo"]["endCursor"]
    second = execute_query(admin_schema(), prepared.operation, prepared.fragments, sandbox._root(),
                           {"first": 3, "after": after, "variantsFirst": 1}, READ_ROOT_FIELDS)
    ids = [n["id"] for n in first["products"]["nodes"] + second["products"]["nodes"]]
    assert len(set(ids)) == 6


@pytest.mark.parametrize("query", [
    "mutation { bulkOperationRunQuery(query: \"{ products { edges { node { id } } } }\") { userErrors { message } } }",
    "query { node(id: \"gid://shopify/BulkOperation/1\") { id } }",
    "query { productsCount { count } }",
])
def test_other_operations_go_to_graphql_core(sandbox, query):
    prepared = _prepare(query)
    with pytest.raises(Unsupported):
        execute_query(admin_schema(), prepared.operation, prepared.fragments, sandbox._root(), {}, READ_ROOT_FIELDS)


def test_errors_are_graphql_cores_through_the_api(sandbox):
    """A negative `first` raises in the resolver: the answer carries graphql-core's error and a null."""
    body = json.dumps({"query": PRODUCTS_QUERY, "variables": {"first": -1, "variantsFirst": 1}}).encode()
    status, answer, _ = sandbox.handle_api("POST", "/admin/api/2025-01/graphql.json",
                                           {"X-Shopify-Access-Token": sandbox.token}, body)
    assert status == 200
    assert answer["data"] is None
    assert "between 0 and 250" in answer["errors"][0]["message"]


def test_null_in_a_non_null_field_is_graphql_cores_answer(sandbox):
    """MediaImage.id is non-null and the catalog has none: graphql-core nulls the parent, with an error."""
    query = "{ products(first: 2) { nodes { id featuredMedia { ... on MediaImage { id } } } } }"
    body = json.dumps({"query": query}).encode()
    _, answer, _ = sandbox.handle_api("POST", "/admin/api/2025-01/graphql.json",
                                      {"X-Shopify-Access-Token": sandbox.token}, body)
    assert [n["featuredMedia"] for n in answer["data"]["products"]["nodes"]] == [None, None]
    assert "non-nullable field MediaImage.id" in answer["errors"][0]["message"]

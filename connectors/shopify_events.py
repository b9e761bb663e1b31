"""Shopify's destroyed products, from the shop's events.

`deletionEvents` is deprecated ("Use `events` instead"). `events` lists `Event`s; the subject's id
and type are fields of `BasicEvent` only, so the query selects them in an inline fragment. The
search filters by action, subject type and creation time; pages follow `sortKey: CREATED_AT`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

from connectors.http import HttpClient
from connectors.settings import ShopifySettings
from connectors.shopify_graphql import Companion, ShopifyGraphQL

DESTROYED_PRODUCTS = "action:destroy AND subject_type:PRODUCT"
PAGE_SIZE = 250
EVENTS_QUERY = """query DestroyedProducts($first: Int!, $after: String, $query: String) {
  events(first: $first, after: $after, query: $query, sortKey: CREATED_AT) {
    pageInfo { hasNextPage endCursor }
    nodes { id createdAt action ... on BasicEvent { subjectId subjectType } }
  }
}"""
PAGE_COST = PAGE_SIZE + 2  # a connection costs 2 plus one a node; the nodes' scalars are free
# Asked for beside the products' first page: a first page of events, smaller (its points come off
# that page's), and its own variables.
BESIDE_FIRST = 50
BESIDE_FIELD = """destroyed: events(first: $destroyedFirst, query: $destroyedQuery, sortKey: CREATED_AT) {
    pageInfo { hasNextPage endCursor }
    nodes { id createdAt action ... on BasicEvent { subjectId subjectType } }
  }"""


def companion(*, since: datetime | None, lookback: timedelta = timedelta(0)) -> Companion:
    """The first page of destroy events, to be asked for beside the products' first page."""
    return Companion("$destroyedFirst: Int!, $destroyedQuery: String", BESIDE_FIELD, "destroyed",
                     {"destroyedFirst": BESIDE_FIRST, "destroyedQuery": _search(since, lookback)},
                     cost=BESIDE_FIRST + 3)  # the connection 2, a node 1 each, pageInfo 1


def _search(since: datetime | None, lookback: timedelta) -> str:
    if since is None:
        return DESTROYED_PRODUCTS
    start = (since - lookback).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return DESTROYED_PRODUCTS + f" AND created_at:>='{start}'"


def iter_deletions(http: HttpClient, shop: ShopifySettings, *, since: datetime | None,
                   lookback: timedelta = timedelta(0), clock=time.monotonic, first_page: dict | None = None
                   ) -> Iterator[dict]:
    """Yield each product destroy event created after `since` minus `lookback` (all Shopify keeps,
    when `since` is None), oldest first. `first_page`: the events connection already answered
    beside the products' first page (`companion`, asked with the same `since`), if it was."""
    search, after, connection, api = _search(since, lookback), None, first_page, None
    while True:
        if connection is None:
            api = api or ShopifyGraphQL(http, shop, clock)
            body = api.read(EVENTS_QUERY, {"first": PAGE_SIZE, "after": after, "query": search}, PAGE_COST)
            connection = ((body.get("data") or {}).get("events")) or {}
        for node in connection.get("nodes") or []:
            # A search is a filter Shopify may apply loosely: only a product's destroy is a deletion.
            if isinstance(node, dict) and node.get("action") == "destroy" and node.get("subjectType") == "PRODUCT":
                yield node
        page_info = connection.get("pageInfo") or {}
        if not (page_info.get("hasNextPage") and page_info.get("endCursor")):
            return
        after, connection = page_info["endCursor"], None


def event_time(raw: dict) -> datetime | None:
    """When the event happened, or None if it says nothing readable."""
    try:
        return datetime.fromisoformat(raw["createdAt"]).astimezone(timezone.utc)
    except (KeyError, TypeError, ValueError):
        return None

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
from connectors.shopify_graphql import ShopifyGraphQL

DESTROYED_PRODUCTS = "action:destroy AND subject_type:PRODUCT"
PAGE_SIZE = 250
EVENTS_QUERY = """query DestroyedProducts($first: Int!, $after: String, $query: String) {
  events(first: $first, after: $after, query: $query, sortKey: CREATED_AT) {
    pageInfo { hasNextPage endCursor }
    nodes { id createdAt action ... on BasicEvent { subjectId subjectType } }
  }
}"""
PAGE_COST = PAGE_SIZE + 2  # a connection costs 2 plus one a node; the nodes' scalars are free


def iter_deletions(http: HttpClient, shop: ShopifySettings, *, since: datetime | None,
                   lookback: timedelta = timedelta(0), clock=time.monotonic) -> Iterator[dict]:
    """Yield each product destroy event created after `since` minus `lookback` (all Shopify keeps,
    when `since` is None), oldest first."""
    api = ShopifyGraphQL(http, shop, clock)
    search = DESTROYED_PRODUCTS
    if since is not None:
        start = (since - lookback).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        search += f" AND created_at:>='{start}'"
    after = None
    while True:
        body = api.read(EVENTS_QUERY, {"first": PAGE_SIZE, "after": after, "query": search}, PAGE_COST)
        connection = ((body.get("data") or {}).get("events")) or {}
        for node in connection.get("nodes") or []:
            # A search is a filter Shopify may apply loosely: only a product's destroy is a deletion.
            if isinstance(node, dict) and node.get("action") == "destroy" and node.get("subjectType") == "PRODUCT":
                yield node
        page_info = connection.get("pageInfo") or {}
        if not (page_info.get("hasNextPage") and page_info.get("endCursor")):
            return
        after = page_info["endCursor"]


def event_time(raw: dict) -> datetime | None:
    """When the event happened, or None if it says nothing readable."""
    try:
        return datetime.fromisoformat(raw["createdAt"]).astimezone(timezone.utc)
    except (KeyError, TypeError, ValueError):
        return None

"""Shopify products over the GraphQL Admin API, paced by the query-cost bucket.

Yields one raw product dict at a time, oldest change first, with every variant merged in.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

from connectors.http import (
    AuthError,
    HttpClient,
    HttpSettings,
    ResponseError,
    RetryableError,
)
from connectors import shopify_bulk
from connectors.oauth import request_with_refresh
from connectors.settings import ShopifySettings
from connectors.shopify_auth import HEADER, make_auth

log = logging.getLogger("pipeline.shopify")

NAME = "shopify"
MAX_QUERY_COST = 1000  # Shopify refuses a single query that requests more (MAX_COST_EXCEEDED)
MAX_PAGE_SIZE = 250  # a connection page holds at most 250 nodes
FIRST_PAGE_SIZE = 10  # until Shopify has told us what a product costs
VARIANTS_PER_PRODUCT = 10  # first page of variants inline; the rest by follow-up query
RESTART_AFTER_PAGES = 20  # re-issue the filtered query so no paging cap or stale cursor ends a crawl

PRODUCT_FIELDS = """id title handle vendor productType status tags createdAt updatedAt
      onlineStoreUrl description totalInventory
      priceRangeV2 { minVariantPrice { amount currencyCode } maxVariantPrice { amount currencyCode } }
      featuredMedia { ... on MediaImage { image { url } } }"""
VARIANT_FIELDS = "id sku barcode title price compareAtPrice inventoryQuantity availableForSale"

PRODUCTS_QUERY = f"""query Products($first: Int!, $after: String, $query: String, $variantsFirst: Int!) {{
  products(first: $first, after: $after, query: $query, sortKey: UPDATED_AT) {{
    pageInfo {{ hasNextPage endCursor }}
    nodes {{
      {PRODUCT_FIELDS}
      variants(first: $variantsFirst) {{
        pageInfo {{ hasNextPage endCursor }}
        nodes {{ {VARIANT_FIELDS} }}
      }}
    }}
  }}
}}"""

VARIANTS_QUERY = f"""query ProductVariants($id: ID!, $after: String) {{
  product(id: $id) {{
    variants(first: 250, after: $after) {{
      pageInfo {{ hasNextPage endCursor }}
      nodes {{ {VARIANT_FIELDS} }}
    }}
  }}
}}"""

BULK_QUERY = shopify_bulk.bulk_query(PRODUCT_FIELDS, VARIANT_FIELDS)
QUERIES = (PRODUCTS_QUERY, VARIANTS_QUERY, shopify_bulk.START_MUTATION, shopify_bulk.POLL_QUERY,
           shopify_bulk.COUNT_QUERY, BULK_QUERY)
# The learned page size is kept under a key of the query text: a changed query starts afresh.
PAGE_SIZE_HINT = "shopify_page_size_" + hashlib.sha256(PRODUCTS_QUERY.encode()).hexdigest()[:12]


class QueryTooCostly(ResponseError):
    def __init__(self, cost: float, max_cost: float):
        super().__init__(NAME, f"query cost {cost:g} exceeds the single-query limit {max_cost:g}")
        self.cost, self.max_cost = cost, max_cost


def make_client(shop: ShopifySettings, http_settings: HttpSettings, counters=None, **kwargs) -> HttpClient:
    """An HttpClient whose cache never stores the access token (a shop has no shared call budget:
    `counters` is unused)."""
    return HttpClient(NAME, http_settings, secret_headers=(HEADER,), **kwargs)


def record_cursor(record) -> tuple[datetime, int] | None:
    """The compound (updatedAt, numeric id) cursor of a raw product, or None if it has none."""
    try:
        updated = datetime.fromisoformat(record["updatedAt"]).astimezone(timezone.utc)
        return updated, int(str(record["id"]).rsplit("/", 1)[-1])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def iter_records(
    http: HttpClient,
    shop: ShopifySettings,
    *,
    since: tuple[datetime, int] | None = None,
    lookback: timedelta = timedelta(0),
    clock=time.monotonic,
    restart_after_pages: int = RESTART_AFTER_PAGES,
    full_refresh: bool = False,
    checkpoint: shopify_bulk.Checkpoint | None = None,
    known=(),
    hints=None,
) -> Iterator[dict]:
    """Yield every product changed after `since` minus `lookback`, each with all its variants.

    `known` holds the (id, updatedAt) versions already written: a product in the lookback window
    at such a version is passed over rather than re-fetched for the rest of its variants, so a run
    right after a complete one costs one request. `hints` (a get/set store, or None) keeps the
    page size learned from Shopify's reported costs, so the next run's first page is full-sized.

    A full refresh, or a first run over a shop of SHOPIFY_BULK_MIN_PRODUCTS or more, reads the
    catalog with a bulk operation instead (falling back to paging when bulk is not permitted).
    """
    api = _ProductsApi(http, shop, clock)
    api.page_size = _stored_page_size(hints)
    checkpoint = checkpoint or shopify_bulk.Checkpoint()
    if since is None and (full_refresh or checkpoint.get() or _large(api, shop)):
        try:
            yield from shopify_bulk.run(api, BULK_QUERY, checkpoint)
            return
        except shopify_bulk.BulkUnavailable as exc:
            log.warning("shopify: %s; paging instead", str(exc).split(": ", 1)[-1])
    query_filter = _updated_filter(since[0] - lookback, ">") if since else None
    last_key = None
    while True:
        restart = False
        for pages, (nodes, has_next) in enumerate(api.pages(query_filter), start=1):
            for node in nodes:
                key = record_cursor(node)
                if key is not None and last_key is not None and key <= last_key:
                    continue  # already yielded before a restart
                last_key = key or last_key
                if (_more_variants(node) and since and key is not None and key <= since
                        and (node["id"], key[0]) in known):
                    log.debug("shopify: %s unchanged since it was written; its variants are not fetched again",
                              node["id"])
                    continue
                yield api.with_all_variants(node)
            if has_next and pages >= restart_after_pages and last_key is not None:
                restart = True
                break
        if not restart:
            break
        query_filter = _updated_filter(last_key[0], ">=")
    if hints is not None and api.cost_per_product and api.page_size != _stored_page_size(hints):
        hints.set(PAGE_SIZE_HINT, api.page_size)


def _stored_page_size(hints) -> int:
    value = hints.get(PAGE_SIZE_HINT) if hints is not None else None
    return value if isinstance(value, int) and 1 <= value <= MAX_PAGE_SIZE else FIRST_PAGE_SIZE


def _more_variants(node) -> bool:
    """True if the product's variants continue past the page that came with it."""
    connection = node.get("variants") if isinstance(node, dict) else None
    return isinstance(connection, dict) and bool((connection.get("pageInfo") or {}).get("hasNextPage"))


def _large(api: "_ProductsApi", shop: ShopifySettings) -> bool:
    if not shop.bulk_min_products:
        return False
    body = api.query(shopify_bulk.COUNT_QUERY, {})
    count = ((body.get("data") or {}).get("productsCount") or {}).get("count") or 0
    return count >= shop.bulk_min_products


def _updated_filter(when: datetime, op: str) -> str:
    # Shopify's search syntax needs the timestamp quoted.
    return f"updated_at:{op}'{when.astimezone(timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')}'"


class _CostBucket:
    """Shopify's leaky bucket as it last reported itself, projected forward at the restore rate."""

    def __init__(self):
        self.maximum = self.available = self.restore_rate = None
        self.observed_at = 0.0

    def update(self, cost: dict | None, now: float) -> None:
        status = (cost or {}).get("throttleStatus") or {}
        try:
            self.maximum = float(status["maximumAvailable"])
            self.available = float(status["currentlyAvailable"])
            self.restore_rate = float(status["restoreRate"])
            self.observed_at = now
        except (KeyError, TypeError, ValueError):
            pass

    def seconds_until(self, cost: float, now: float) -> float:
        if self.available is None or not self.restore_rate:
            return 0.0
        have = min(self.maximum, self.available + (now - self.observed_at) * self.restore_rate)
        return max(0.0, (cost - have) / self.restore_rate)


class _ProductsApi:
    def __init__(self, http: HttpClient, shop: ShopifySettings, clock):
        self.http, self.clock = http, clock
        self.url = shop.graphql_url
        self.auth = make_auth(http, shop, clock)  # static, or minted (scope checked) before the first query
        self.bucket = _CostBucket()
        self.page_size = FIRST_PAGE_SIZE
        self.cost_per_product: float | None = None
        self.variants_query_cost: float | None = None

    def pages(self, query_filter: str | None):
        """Yield (product nodes, has_next_page) for one filtered, cursor-paged query."""
        after = None
        while True:
            connection = self._products_page(query_filter, after)
            page_info = connection.get("pageInfo") or {}
            has_next = bool(page_info.get("hasNextPage")) and bool(page_info.get("endCursor"))
            yield connection.get("nodes") or [], has_next
            if not has_next:
                return
            after = page_info["endCursor"]

    def _products_page(self, query_filter, after) -> dict:
        while True:
            first = self.page_size
            variables = {"first": first, "after": after, "query": query_filter,
                         "variantsFirst": VARIANTS_PER_PRODUCT}
            estimate = first * self.cost_per_product if self.cost_per_product else None
            try:
                body = self._query(PRODUCTS_QUERY, variables, estimate)
            except QueryTooCostly as exc:
                if first == 1:
                    raise
                self.page_size = max(1, math.floor(first * exc.max_cost / exc.cost))
                continue
            self._learn_page_size(body, first)
            return _dig(body, "data", "products")

    def _learn_page_size(self, body: dict, first: int) -> None:
        # The requested cost scales with `first`; dividing it all by `first` over-counts the fixed
        # part, so the page size derived here is safely below the cap.
        requested = _requested_cost(body)
        if not requested:
            return
        self.cost_per_product = requested / first
        limit = MAX_QUERY_COST if self.bucket.maximum is None else min(MAX_QUERY_COST, self.bucket.maximum)
        self.page_size = max(1, min(MAX_PAGE_SIZE, math.floor(limit / self.cost_per_product)))

    def with_all_variants(self, node):
        """The product with its `variants` connection replaced by the full list of variants."""
        if not isinstance(node, dict) or not isinstance(node.get("variants"), dict):
            return node  # malformed: the normalizer quarantines it with a reason
        connection = node["variants"]
        variants = list(connection.get("nodes") or [])
        page_info = connection.get("pageInfo") or {}
        after = page_info.get("endCursor") if page_info.get("hasNextPage") else None
        while after:
            body = self._query(VARIANTS_QUERY, {"id": node.get("id"), "after": after}, self.variants_query_cost)
            self.variants_query_cost = _requested_cost(body) or self.variants_query_cost
            product = _dig(body, "data", "product", optional=True)
            if product is None:  # deleted while we were paging: keep what we have
                break
            more = _dig(product, "variants")
            variants.extend(more.get("nodes") or [])
            page_info = more.get("pageInfo") or {}
            after = page_info.get("endCursor") if page_info.get("hasNextPage") else None
        record = {k: v for k, v in node.items() if k != "variants"}
        record["variants"] = variants
        return record

    def query(self, query: str, variables: dict) -> dict:
        """One paced GraphQL call that is never cached (bulk operations change from call to call)."""
        return self._query(query, variables, None, cache=False)

    def _query(self, query: str, variables: dict, estimate: float | None, cache: bool = True) -> dict:
        # A query whose cost Shopify has not reported yet may cost up to the cap: wait for that.
        if estimate is None and self.bucket.maximum is not None:
            estimate = min(MAX_QUERY_COST, self.bucket.maximum)
        if estimate:
            self.http.wait(self.bucket.seconds_until(estimate, self.clock()), throttled=True)
        body = request_with_refresh(self.http, self.auth, "POST", self.url, check=self._check, cache=cache,
                                    json_body={"query": query, "variables": variables})
        self.bucket.update(_dig(body, "extensions", "cost", optional=True), self.clock())
        return body

    def _check(self, body, response) -> None:
        """Sort a GraphQL answer: Shopify reports throttling and cost errors inside HTTP 200."""
        if not isinstance(body, dict):
            raise ResponseError(NAME, "the answer was not a JSON object")
        errors = body.get("errors")
        if not errors:
            if not isinstance(body.get("data"), dict):
                raise ResponseError(NAME, "the answer had neither data nor errors")
            return
        if not isinstance(errors, list):
            raise ResponseError(NAME, f"GraphQL error: {str(errors)[:200]}")
        first = errors[0] if isinstance(errors[0], dict) else {}
        extensions = first.get("extensions") or {}
        code = extensions.get("code")
        cost = _dig(body, "extensions", "cost", optional=True) or {}
        if code == "THROTTLED":
            self.bucket.update(cost, self.clock())
            requested = cost.get("requestedQueryCost") or self.bucket.maximum or MAX_QUERY_COST
            wait = self.bucket.seconds_until(float(requested), self.clock())
            raise RetryableError(NAME, "throttled: the query-cost bucket is empty",
                                 retry_after=wait or None, throttled=True)
        if code == "MAX_COST_EXCEEDED":
            raise QueryTooCostly(float(extensions.get("cost") or MAX_QUERY_COST + 1),
                                 float(extensions.get("maxCost") or MAX_QUERY_COST))
        if code == "ACCESS_DENIED":
            raise AuthError(NAME, "access denied: the app lacks the read_products scope")
        raise ResponseError(NAME, f"GraphQL error: {str(first.get('message', ''))[:200]}"
                            + (f" [{code}]" if code else ""))


def _requested_cost(body: dict) -> float | None:
    cost = _dig(body, "extensions", "cost", optional=True) or {}
    value = cost.get("requestedQueryCost")
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def _dig(value, *keys, optional: bool = False):
    for key in keys:
        if not isinstance(value, dict) or value.get(key) is None:
            if optional:
                return None
            raise ResponseError(NAME, f"unexpected answer: no {'.'.join(keys)}")
        value = value[key]
    return value


__all__ = ["NAME", "QUERIES", "iter_records", "make_client", "record_cursor"]

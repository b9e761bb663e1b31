"""Shopify products over the GraphQL Admin API, paced by the query-cost bucket.

Yields one raw product dict at a time, oldest change first, with every variant merged in.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

from connectors import shopify_bulk, shopify_events
from connectors.http import HttpClient, HttpSettings, ResponseError  # noqa: F401 - ResponseError: re-exported
from connectors.settings import ShopifySettings
from connectors.shopify_auth import HEADER
from connectors.shopify_graphql import (FIRST_PAGE_SIZE, RESTART_AFTER_PAGES, CostBucket,  # noqa: F401 - re-exported
                                        Resource, ShopifyGraphQL, combined_query, crawl, follow_up_query,
                                        record_cursor)

NAME = "shopify"
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

VARIANTS_QUERY = f"""query ProductVariants($id: ID!, $after: String, $childFirst: Int!) {{
  product(id: $id) {{
    variants(first: $childFirst, after: $after) {{
      pageInfo {{ hasNextPage endCursor }}
      nodes {{ {VARIANT_FIELDS} }}
    }}
  }}
}}"""

BULK_QUERY = shopify_bulk.bulk_query(PRODUCT_FIELDS, VARIANT_FIELDS)
_BESIDE = shopify_events.companion(since=None)
QUERIES = (PRODUCTS_QUERY, VARIANTS_QUERY, shopify_bulk.START_MUTATION, shopify_bulk.POLL_QUERY,
           shopify_bulk.COUNT_QUERY, BULK_QUERY,
           # a page that also asks for more variants of two held products, and those alone
           follow_up_query(PRODUCTS_QUERY, VARIANTS_QUERY, 2), follow_up_query(None, VARIANTS_QUERY, 2),
           # the destroyed products, on their own and beside a page
           shopify_events.EVENTS_QUERY, combined_query(PRODUCTS_QUERY, _BESIDE.declared, _BESIDE.field))
# The learned page size is kept under a key of the query text: a changed query starts afresh.
PAGE_SIZE_HINT = "shopify_page_size_" + hashlib.sha256(PRODUCTS_QUERY.encode()).hexdigest()[:12]


PRODUCTS = Resource(root="products", query=PRODUCTS_QUERY, child="variants", child_first_variable="variantsFirst",
                    child_query=VARIANTS_QUERY, child_first=250, child_root="product", bulk_query=BULK_QUERY,
                    count_query=shopify_bulk.COUNT_QUERY, count_root="productsCount", hint_key=PAGE_SIZE_HINT,
                    scope="read_products")
_CostBucket = CostBucket  # the name the pacing tests know


def make_client(shop: ShopifySettings, http_settings: HttpSettings, counters=None, **kwargs) -> HttpClient:
    """An HttpClient whose cache never stores the access token (a shop has no shared call budget:
    `counters` is unused)."""
    return HttpClient(NAME, http_settings, secret_headers=(HEADER,), **kwargs)


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
    companion=None,
    **_,
) -> Iterator[dict]:
    """Yield every product changed after `since` minus `lookback`, each with all its variants.

    `known` holds the (id, updatedAt) versions already written: a product in the lookback window
    at such a version is passed over rather than re-fetched for the rest of its variants, so a run
    right after a complete one costs one request. `hints` (a get/set store, or None) keeps the
    page size learned from Shopify's reported costs, so the next run's first page is full-sized.
    `companion` (connectors/shopify_events.py's destroyed products) is asked for in the same query
    as the first page, so a run with nothing to do costs one request.

    A full refresh, or a first run over a shop of SHOPIFY_BULK_MIN_PRODUCTS or more, reads the
    catalog with a bulk operation instead (falling back to paging when bulk is not permitted).
    """
    api = ShopifyGraphQL(http, shop, clock)
    yield from crawl(api, PRODUCTS, since=since, lookback=lookback, restart_after_pages=restart_after_pages,
                     full_refresh=full_refresh, checkpoint=checkpoint, known=known, hints=hints,
                     bulk_min=shop.bulk_min_products, companion=companion)


__all__ = ["NAME", "QUERIES", "iter_records", "make_client", "record_cursor"]

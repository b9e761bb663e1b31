"""What each (provider, stream) is made of: its connector, its normalizer and the tables it writes.

A unit of work (provider, account, stream) runs the same path whatever its stream: the connector
yields raw records, the normalizer turns each into one record (a Product; an order version with
its lines), dedup keeps the new ones by raw_hash, and each record's rows go to the stream's tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Callable

from pipelines.stages import record_rows

AMAZON_HAS_NO_ORDERS = ("Amazon's Creators API has no orders (sellers' orders live in the Selling Partner API, "
                        "which this project does not use)")


@dataclass(frozen=True)
class Deletions:
    """Where a provider says which of its products were deleted (Shopify: its destroy events).
    Amazon's and eBay's searches are not full extracts: a product missing from one is not deleted,
    so their products have no Deletions and their histories never close."""

    iter_records: Callable  # (http, account, *, since, lookback, clock, first_page) -> raw events, oldest first
    cursor: Callable  # raw event -> its time, or None
    normalize: Callable  # raw -> ProductDeletion
    identity: tuple[str, int]
    # (*, since, lookback) -> a read the products' connector asks beside its first page; its answer
    # is iter_records' first_page (so a run with nothing to do costs one request)
    companion: Callable | None = None


@dataclass(frozen=True)
class Stream:
    connector: object  # make_client, iter_records, record_cursor
    normalize: Callable  # raw -> record with raw_hash, source_id, source_updated_at
    identity: tuple[str, int]  # (source, normalizer version): part of every raw_hash
    tables: tuple[str, ...]  # where its rows go; the first holds one row per record
    lookback: str  # the Settings attribute with the stream's re-read overlap
    deletions: Deletions | None = None

    def rows(self, record) -> dict[str, list]:
        """The record's rows by table."""
        return record_rows(record, self.tables)


def _products(connector, normalizer, deletions: Deletions | None = None) -> Stream:
    return Stream(connector, normalizer.to_product, (normalizer.SOURCE, normalizer.NORMALIZER_VERSION),
                  ("products", "product_deletions"), "lookback", deletions)


def _orders(connector, normalizer) -> Stream:
    return Stream(connector, normalizer.to_order, (normalizer.SOURCE, normalizer.NORMALIZER_VERSION),
                  ("orders", "order_lines"), "orders_lookback")


# Each stream's modules are imported by its builder, when a unit of it runs: a Shopify products run
# loads no Amazon, eBay or orders code (connectors, normalizers, the order models).
def _shopify_products() -> Stream:
    from connectors import shopify, shopify_events
    from normalize import shopify as shopify_normalizer
    from normalize import shopify_deletions

    return _products(shopify, shopify_normalizer, Deletions(
        shopify_events.iter_deletions, shopify_events.event_time, shopify_deletions.to_deletion,
        shopify_deletions.IDENTITY, shopify_events.companion))


def _amazon_products() -> Stream:
    from connectors import amazon
    from normalize import amazon as amazon_normalizer

    return _products(amazon, amazon_normalizer)


def _ebay_products() -> Stream:
    from connectors import ebay
    from normalize import ebay as ebay_normalizer

    return _products(ebay, ebay_normalizer)


def _shopify_orders() -> Stream:
    from connectors import shopify_orders
    from normalize import shopify_orders as shopify_orders_normalizer

    return _orders(shopify_orders, shopify_orders_normalizer)


def _ebay_orders() -> Stream:
    from connectors import ebay_orders
    from normalize import ebay_orders as ebay_orders_normalizer

    return _orders(ebay_orders, ebay_orders_normalizer)


STREAMS = {
    ("shopify", "products"): _shopify_products,
    ("amazon", "products"): _amazon_products,
    ("ebay", "products"): _ebay_products,
    ("shopify", "orders"): _shopify_orders,
    ("ebay", "orders"): _ebay_orders,
}
UNAVAILABLE = {("amazon", "orders"): AMAZON_HAS_NO_ORDERS}


@cache
def stream_of(provider: str, stream: str) -> Stream:
    return STREAMS[(provider, stream)]()

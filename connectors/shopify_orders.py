"""Shopify orders over the GraphQL Admin API: the same paced crawl as products, by (updatedAt, id).

Yields one raw order at a time, oldest change first, with every line item merged in. No personal
data is ever selected: no name, email, phone, address, IP, note or custom attribute, and no
customer field, except the customer's id when PIPELINE_ORDERS_CUSTOMER=hash, which is replaced by
a keyed hash (`customerRef`) before the record leaves this module.

Scopes: read_orders (or write_orders) sees the last 60 days of orders; older ones need
read_all_orders. They are read before the first orders query: from the client-credentials
answer, or with a static token from currentAppInstallation.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

from connectors import shopify_bulk
from connectors.http import HttpClient
from connectors.settings import ShopifySettings
from connectors.shopify import make_client  # noqa: F401 - one client per shop, whatever the stream
from connectors.shopify_auth import MissingScope
from connectors.shopify_graphql import RESTART_AFTER_PAGES, Resource, ShopifyGraphQL, crawl, follow_up_query, record_cursor  # noqa: F401

log = logging.getLogger("pipeline.shopify")

NAME = "shopify"
ORDER_SCOPES = ("read_orders", "write_orders")  # a write scope grants read access too
ALL_ORDERS_SCOPE = "read_all_orders"
RECENT_DAYS = 60  # what read_orders alone can see
SHOP_MONEY = "{ shopMoney { amount currencyCode } }"
ORDER_FIELDS = f"""id name createdAt updatedAt processedAt cancelledAt closedAt test
      displayFinancialStatus displayFulfillmentStatus currencyCode presentmentCurrencyCode sourceName tags
      totalPriceSet {{ shopMoney {{ amount currencyCode }} presentmentMoney {{ amount currencyCode }} }}
      subtotalPriceSet {SHOP_MONEY} totalTaxSet {SHOP_MONEY} totalDiscountsSet {SHOP_MONEY}
      totalShippingPriceSet {SHOP_MONEY} totalRefundedSet {SHOP_MONEY}"""
CUSTOMER_FIELD = "customer { id }"  # only with PIPELINE_ORDERS_CUSTOMER=hash; hashed at once
LINE_FIELDS = f"""id name sku quantity currentQuantity vendor variant {{ id }} product {{ id }}
        originalUnitPriceSet {SHOP_MONEY} discountedUnitPriceSet {SHOP_MONEY} totalDiscountSet {SHOP_MONEY}"""
# 100 a page: a line item holds nine objects (itself, variant, product, three money bags with
# their shop money), so 250 would ask for 2,254 points, over the 1,000-point single-query cap.
LINE_ITEMS_QUERY = f"""query OrderLineItems($id: ID!, $after: String, $childFirst: Int!) {{
  order(id: $id) {{
    lineItems(first: $childFirst, after: $after) {{
      pageInfo {{ hasNextPage endCursor }}
      nodes {{ {LINE_FIELDS} }}
    }}
  }}
}}"""
SCOPES_QUERY = "query Scopes { currentAppInstallation { accessScopes { handle } } }"
COUNT_QUERY = "query CountOrders { ordersCount { count } }"


def _orders_query(customer: bool) -> str:
    return f"""query Orders($first: Int!, $after: String, $query: String, $lineItemsFirst: Int!) {{
  orders(first: $first, after: $after, query: $query, sortKey: UPDATED_AT) {{
    pageInfo {{ hasNextPage endCursor }}
    nodes {{
      {ORDER_FIELDS}{" " + CUSTOMER_FIELD if customer else ""}
      lineItems(first: $lineItemsFirst) {{
        pageInfo {{ hasNextPage endCursor }}
        nodes {{ {LINE_FIELDS} }}
      }}
    }}
  }}
}}"""


def _bulk_query(customer: bool) -> str:
    return ("{ orders { edges { node { " + ORDER_FIELDS + (" " + CUSTOMER_FIELD if customer else "") +
            " lineItems { edges { node { " + LINE_FIELDS + " } } } } } } }")


def _resource(customer: bool) -> Resource:
    query = _orders_query(customer)
    return Resource(root="orders", query=query, child="lineItems", child_first_variable="lineItemsFirst",
                    child_query=LINE_ITEMS_QUERY, child_first=100, child_root="order", bulk_query=_bulk_query(customer),
                    count_query=COUNT_QUERY, count_root="ordersCount",
                    hint_key="shopify_orders_page_size_" + hashlib.sha256(query.encode()).hexdigest()[:12],
                    scope="read_orders")


QUERIES = (_orders_query(False), _orders_query(True), LINE_ITEMS_QUERY, SCOPES_QUERY, COUNT_QUERY,
           _bulk_query(False), _bulk_query(True),
           follow_up_query(_orders_query(False), LINE_ITEMS_QUERY, 2), follow_up_query(None, LINE_ITEMS_QUERY, 2))


def iter_records(
    http: HttpClient,
    shop: ShopifySettings,
    *,
    since: tuple[datetime, int] | None = None,
    lookback: timedelta = timedelta(minutes=60),
    clock=time.monotonic,
    restart_after_pages: int = RESTART_AFTER_PAGES,
    full_refresh: bool = False,
    checkpoint: shopify_bulk.Checkpoint | None = None,
    known=(),
    hints=None,
    customer_key: bytes | None = None,
    now=lambda: datetime.now(timezone.utc),
    **_,
) -> Iterator[dict]:
    """Yield every order changed after `since` minus `lookback` (a refund bumps an order's
    updatedAt after the fact and the search index lags: orders take a longer overlap), each with all
    its line items. Raises MissingScope, before any orders query, when the app cannot read orders."""
    api = ShopifyGraphQL(http, shop, clock, scopes=ORDER_SCOPES)
    _check_scopes(api, http, since, now)
    resource = _resource(customer_key is not None)
    records = crawl(api, resource, since=since, lookback=lookback, restart_after_pages=restart_after_pages,
                    full_refresh=full_refresh, checkpoint=checkpoint,
                    known=known, hints=hints, bulk_min=shop.bulk_min_products)
    for record in records:
        yield _without_customer(record, customer_key)


def _check_scopes(api: ShopifyGraphQL, http: HttpClient, since, now) -> None:
    granted = _granted(api)
    if granted is None:
        return  # Shopify did not say: an ACCESS_DENIED answer will, naming the scope
    if not granted & {*ORDER_SCOPES, ALL_ORDERS_SCOPE}:
        raise MissingScope(NAME, f"the app's access token lacks the read_orders scope (granted: "
                                 f"{', '.join(sorted(granted)) or 'none'}): add read_orders (and read_all_orders "
                                 "for orders older than 60 days) to the app's access scopes")
    if ALL_ORDERS_SCOPE in granted:
        http.stats.notes["orders_visible_since"] = "all"
        return
    visible = (now() - timedelta(days=RECENT_DAYS)).replace(microsecond=0).isoformat()
    http.stats.notes["orders_visible_since"] = visible
    if since is None:  # the first load: say what it cannot see
        message = (f"the first load of orders sees only orders since {visible} (the last {RECENT_DAYS} days): "
                   f"the app has read_orders without {ALL_ORDERS_SCOPE}")
        log.warning("shopify: %s", message)
        http.stats.warnings.append(message)


def _granted(api: ShopifyGraphQL) -> set[str] | None:
    """The token's scopes: from the client-credentials answer, or asked of the app installation."""
    minter = getattr(api.auth, "mint", None)
    if minter is not None:
        api.auth.token()  # mints (and checks for an orders scope) if no token is held yet
        return getattr(minter, "granted", None)
    body = api.query(SCOPES_QUERY, {})
    scopes = ((body.get("data") or {}).get("currentAppInstallation") or {}).get("accessScopes")
    if not isinstance(scopes, list):
        return None
    return {s.get("handle") for s in scopes if isinstance(s, dict) and isinstance(s.get("handle"), str)}


def _without_customer(record, key: bytes | None):
    """The order with its customer's id replaced by a keyed hash (or by nothing)."""
    if not isinstance(record, dict):
        return record
    customer = record.pop("customer", None)
    if key is not None:
        customer_id = customer.get("id") if isinstance(customer, dict) else None
        record["customerRef"] = (hmac.new(key, customer_id.encode(), hashlib.sha256).hexdigest()
                                 if isinstance(customer_id, str) else None)
    return record

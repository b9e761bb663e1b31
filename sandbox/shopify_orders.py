"""The Shopify sandbox's orders: a deterministic order book over the catalog, served like Shopify's
`orders` connection (sorted by UPDATED_AT, filtered by updated_at, cursor-paged), `order(id:)` for
more line items, `ordersCount`, bulk JSONL lines, and refunds that bump an order's updatedAt later.

Orders carry personal data (customer names, emails, addresses, notes, IPs), as real ones do, so a
client that selects them would store them: the tests check ours never asks.
"""

from __future__ import annotations

import bisect
import json
import random
from datetime import datetime, timedelta

from graphql import GraphQLError

from sandbox.catalog import BASE_TIME, iso

ORDER_ID_BASE = 9_100_000
MANY_LINES_EVERY, MANY_LINES = 13, 25  # more line items than the first page carries
TEST_EVERY, CANCELLED_EVERY, PRESENTMENT_EVERY = 11, 17, 5
ORDER_SCOPES = {"read_orders", "write_orders", "read_all_orders"}
RECENT = timedelta(days=60)  # what read_orders alone can see


def _money(amount: float, currency: str = "USD", presentment: tuple | None = None) -> dict:
    bag = {"shopMoney": {"amount": f"{amount:.2f}", "currencyCode": currency}}
    bag["presentmentMoney"] = ({"amount": f"{presentment[0]:.2f}", "currencyCode": presentment[1]} if presentment
                               else dict(bag["shopMoney"]))
    return bag


def make_orders(products: list[dict], count: int, seed: int) -> list[dict]:
    """`count` orders over `products`, with line items, customers and a few quirks."""
    rng = random.Random(seed * 7919)
    orders = []
    for i in range(1, count + 1):
        created = BASE_TIME + timedelta(days=300) * i / (count + 1)
        lines = []
        for n in range(MANY_LINES if i % MANY_LINES_EVERY == 0 else rng.randint(1, 4)):
            product = products[rng.randrange(len(products))]
            variant = product["variants"][rng.randrange(len(product["variants"]))]
            price, quantity = float(variant["price"]), rng.randint(1, 3)
            discount = round(price * quantity * 0.1, 2) if n % 3 == 0 else 0.0
            lines.append({"id": f"gid://shopify/LineItem/{(ORDER_ID_BASE + i) * 100 + n}", "name": product["title"],
                          "sku": variant["sku"], "quantity": quantity, "currentQuantity": quantity,
                          "vendor": product["vendor"], "variant": {"id": variant["id"]}, "product": {"id": product["id"]},
                          "originalUnitPriceSet": _money(price), "discountedUnitPriceSet": _money(price - discount / quantity),
                          "totalDiscountSet": _money(discount)})
        subtotal = sum(float(li["discountedUnitPriceSet"]["shopMoney"]["amount"]) * li["quantity"] for li in lines)
        tax, shipping = round(subtotal * 0.08, 2), 4.99 if subtotal < 50 else 0.0
        total = round(subtotal + tax + shipping, 2)
        cancelled = i % CANCELLED_EVERY == 0
        customer = rng.randrange(1, 40)
        orders.append({
            "id": f"gid://shopify/Order/{ORDER_ID_BASE + i}", "name": f"#{1000 + i}",
            "createdAt": iso(created), "processedAt": iso(created), "updatedAt": iso(created + timedelta(hours=2)),
            "cancelledAt": iso(created + timedelta(hours=1)) if cancelled else None,
            "closedAt": iso(created + timedelta(days=3)) if i % 2 == 0 else None,
            "test": i % TEST_EVERY == 0,
            "displayFinancialStatus": "VOIDED" if cancelled else "PAID",
            "displayFulfillmentStatus": "UNFULFILLED" if cancelled else "FULFILLED",
            "currencyCode": "USD", "presentmentCurrencyCode": "EUR" if i % PRESENTMENT_EVERY == 0 else "USD",
            "sourceName": "web" if i % 3 else "pos", "tags": ["wholesale"] if i % 9 == 0 else [],
            "totalPriceSet": _money(total, presentment=(round(total * 0.92, 2), "EUR") if i % PRESENTMENT_EVERY == 0 else None),
            "subtotalPriceSet": _money(subtotal), "totalTaxSet": _money(tax), "totalDiscountsSet": _money(
                sum(float(li["totalDiscountSet"]["shopMoney"]["amount"]) for li in lines)),
            "totalShippingPriceSet": _money(shipping), "totalRefundedSet": _money(0),
            # Personal data, as a real order has it: never to be selected by the pipeline.
            "email": f"buyer{customer}@example.com", "phone": "+15555550100", "note": "leave at the door",
            "clientIp": "203.0.113.7", "customAttributes": [{"key": "gift", "value": "yes"}],
            "customer": {"id": f"gid://shopify/Customer/{7_000_000 + customer}", "email": f"buyer{customer}@example.com",
                         "firstName": "Pat", "lastName": f"Buyer{customer}"},
            "shippingAddress": {"address1": "1 Main St", "city": "Springfield", "zip": "12345"},
            "lineItems": lines,
        })
    return orders


def refund(order: dict, now: datetime) -> dict:
    """A copy with its first line refunded: totalRefundedSet, currentQuantity and updatedAt change."""
    lines = [dict(li) for li in order["lineItems"]]
    first = lines[0]
    amount = float(first["discountedUnitPriceSet"]["shopMoney"]["amount"])
    first["currentQuantity"] = max(0, first["currentQuantity"] - 1)
    refunded = float(order["totalRefundedSet"]["shopMoney"]["amount"]) + amount
    return {**order, "lineItems": lines, "totalRefundedSet": _money(refunded), "updatedAt": iso(now),
            "displayFinancialStatus": "PARTIALLY_REFUNDED"}


class OrderBook:
    """The shop's orders and the resolvers that serve them."""

    def __init__(self, products: list[dict], count: int, seed: int):
        self.orders = {o["id"]: o for o in make_orders(products, count, seed)}
        self._sorted = None

    def refund(self, fraction: float, now: datetime, seed: int) -> list[str]:
        rng = random.Random(seed)
        ids = sorted(rng.sample(sorted(self.orders), max(1, round(fraction * len(self.orders)))))
        for oid in ids:
            self.orders[oid] = refund(self.orders[oid], now)
        self._sorted = None
        return ids

    def _ordered(self):
        from sandbox.shopify import _key

        if self._sorted is None:
            items = sorted(self.orders.values(), key=_key)
            self._sorted = ([_key(o) for o in items], items)
        return self._sorted

    def visible(self, scopes: set[str], now: datetime) -> list[tuple]:
        """(key, order) pairs the token may read: all with read_all_orders, else the last 60 days."""
        keys, items = self._ordered()
        if not scopes & ORDER_SCOPES:
            raise GraphQLError("Access denied for orders field. Required access: `read_orders` access scope.",
                               extensions={"code": "ACCESS_DENIED",
                                           "documentation": "https://shopify.dev/api/usage/access-scopes"})
        if "read_all_orders" in scopes:
            return list(zip(keys, items))
        since = iso(now - RECENT)
        return [(k, o) for k, o in zip(keys, items) if o["createdAt"] >= since]

    def connection(self, pairs: list[tuple], first=None, after=None, query=None, sortKey="ID", **_) -> dict:
        from sandbox.shopify import _decode_cursor, _encode_cursor, _lower_bound, _matches, _page_size

        if sortKey != "UPDATED_AT":
            raise GraphQLError("the sandbox sorts orders by UPDATED_AT only")
        keys = [k for k, _ in pairs]
        start = _lower_bound(keys, query)
        if after:
            start = max(start, bisect.bisect_right(keys, _decode_cursor(after)))
        size = _page_size(first)
        matched = []
        for index in range(start, len(pairs)):
            if _matches(pairs[index][1], query):
                matched.append(pairs[index])
                if len(matched) > size:
                    break
        page, has_next = matched[:size], len(matched) > size
        nodes = [self.node(o) for _, o in page]
        return {"nodes": nodes, "edges": [{"cursor": _encode_cursor(k), "node": n} for (k, _), n in zip(page, nodes)],
                "pageInfo": {"hasNextPage": has_next, "hasPreviousPage": start > 0,
                             "startCursor": _encode_cursor(page[0][0]) if page else None,
                             "endCursor": _encode_cursor(page[-1][0]) if page else None}}

    def node(self, order: dict) -> dict:
        from sandbox.shopify import _b64, _page_size

        lines = order["lineItems"]

        def line_items(info, first=None, after=None, **_):
            size = _page_size(first)
            start = int(__import__("base64").b64decode(after).decode()) if after else 0
            page = lines[start:start + size]
            end = start + len(page)
            return {"nodes": page, "edges": [{"cursor": _b64(str(start + i + 1)), "node": li} for i, li in enumerate(page)],
                    "pageInfo": {"hasNextPage": end < len(lines), "hasPreviousPage": start > 0,
                                 "startCursor": _b64(str(start)), "endCursor": _b64(str(end))}}

        return {**order, "lineItems": line_items}

    def bulk_lines(self, query: str) -> list[str]:
        """JSONL lines of a bulk orders query, as Shopify writes them: each order with exactly the
        fields the query selects, then its line items as lines of their own with `__parentId`."""
        from graphql import parse

        node = _field(_field(_field(parse(query).definitions[0].selection_set, "orders").selection_set, "edges")
                      .selection_set, "node").selection_set
        line = _field(node, "lineItems")
        line_node = _field(_field(line.selection_set, "edges").selection_set, "node").selection_set if line else None
        out = []
        for order in self.orders.values():
            out.append(json.dumps(_project(node, order, skip="lineItems")))
            if line_node is not None:
                out.extend(json.dumps({**_project(line_node, li), "__parentId": order["id"]})
                           for li in order["lineItems"])
        return out


def _field(selection_set, name: str):
    return next((s for s in selection_set.selections if getattr(s, "name", None) and s.name.value == name), None)


def _project(selection_set, value: dict, skip: str | None = None) -> dict:
    """The fields of `value` the selection asks for, nested objects projected the same way."""
    out = {}
    for selection in selection_set.selections:
        name = selection.name.value
        if name == skip:
            continue
        item = value.get(name)
        if selection.selection_set is not None and isinstance(item, dict):
            item = _project(selection.selection_set, item)
        out[name] = item
    return out

"""Shopify GraphQL order -> one Order and its OrderLines. Pure: no I/O, no clock.

The raw order carries no personal data: the connector never selects a customer field, and with
PIPELINE_ORDERS_CUSTOMER=hash it replaces the customer's id by a keyed hash (`customerRef`) before
the record leaves it.
"""

from __future__ import annotations

from datetime import datetime

from normalize import line_items, obj, parse_price, validated
from normalize.dedup import raw_hash
from normalize.order_models import Order, OrderLine, OrderVersion

SOURCE = "shopify"
NORMALIZER_VERSION = 1


def to_order(raw: dict, *, account: str, fetched_at: datetime, run_id: str) -> OrderVersion:
    """The Order and lines of one raw Shopify order (line items already merged into a list)."""
    items = line_items(raw)
    digest = raw_hash(SOURCE, NORMALIZER_VERSION, raw)
    total = _money(raw, "totalPriceSet")
    order = validated(
        Order, source=SOURCE, account=account, order_id=raw.get("id"), name=raw.get("name"),
        created_at=raw.get("createdAt"), updated_at=raw.get("updatedAt"), processed_at=raw.get("processedAt"),
        cancelled_at=raw.get("cancelledAt"), closed_at=raw.get("closedAt"), test=raw.get("test"),
        financial_status=_lower(raw.get("displayFinancialStatus")),
        fulfillment_status=_lower(raw.get("displayFulfillmentStatus")),
        currency=raw.get("currencyCode"), presentment_currency=raw.get("presentmentCurrencyCode"),
        total_price=total[0], subtotal_price=_money(raw, "subtotalPriceSet")[0],
        total_tax=_money(raw, "totalTaxSet")[0], total_discounts=_money(raw, "totalDiscountsSet")[0],
        total_shipping=_money(raw, "totalShippingPriceSet")[0], total_refunded=_money(raw, "totalRefundedSet")[0],
        total_price_presentment=total[1], line_count=len(items), source_name=raw.get("sourceName"),
        tags=raw.get("tags"), customer_ref=raw.get("customerRef"), fetched_at=fetched_at, run_id=run_id,
        raw_hash=digest)
    lines = [_line(obj(item), order, fetched_at, run_id) for item in items]
    return OrderVersion(order, lines)


def _line(item: dict, order: Order, fetched_at: datetime, run_id: str) -> OrderLine:
    unit = _money(item, "originalUnitPriceSet", "lineItems.")
    return validated(
        OrderLine, prefix="lineItems.", source=SOURCE, account=order.account, order_id=order.order_id,
        order_raw_hash=order.raw_hash, line_id=item.get("id"), product_id=obj(item.get("product")).get("id"),
        variant_id=obj(item.get("variant")).get("id"), sku=item.get("sku") or None, title=item.get("name"),
        vendor=item.get("vendor") or None, quantity=item.get("quantity"), current_quantity=item.get("currentQuantity"),
        unit_price=unit[0], discounted_unit_price=_money(item, "discountedUnitPriceSet", "lineItems.")[0],
        total_discount=_money(item, "totalDiscountSet", "lineItems.")[0],
        currency=_currency(item, "originalUnitPriceSet"), fetched_at=fetched_at, run_id=run_id)


def _money(raw: dict, field: str, prefix: str = "") -> tuple:
    """(shop money, presentment money) amounts of a MoneyBag, as Decimals or None."""
    bag = obj(raw.get(field))
    return (parse_price(obj(bag.get("shopMoney")).get("amount"), f"{prefix}{field}.shopMoney.amount"),
            parse_price(obj(bag.get("presentmentMoney")).get("amount"), f"{prefix}{field}.presentmentMoney.amount"))


def _currency(raw: dict, field: str) -> str | None:
    return obj(obj(raw.get(field)).get("shopMoney")).get("currencyCode")


def _lower(value):
    return value.lower() if isinstance(value, str) else value


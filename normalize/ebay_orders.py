"""eBay Fulfillment order -> one Order and its OrderLines. Pure: no I/O, no clock.

The raw order holds only the fields the connector keeps (connectors/ebay_orders.py): no buyer,
address or note ever reaches this module. Which eBay field fills which column is in the README
("Orders (eBay)"). Amounts are in `currency`, the listing marketplace's currency eBay converted
to; `convertedFrom*` (the amount before eBay's conversion) fills the presentment columns.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from normalize import Rejected, line_items, obj, parse_price, validated
from normalize.dedup import raw_hash
from normalize.order_models import Order, OrderLine, OrderVersion

SOURCE = "ebay"
NORMALIZER_VERSION = 1
CANCELLED = "CANCELED"  # cancelStatus.cancelState of a cancelled order
REFUNDED = "REFUNDED"  # a refund's refundStatus once the money went back (not PENDING or FAILED)
# pricingSummary parts eBay leaves out when they are nothing (no tax, no discount): they read as 0.
ZERO_WHEN_ABSENT = ("tax", "priceDiscount", "deliveryDiscount")


def to_order(raw: dict, *, account: str, fetched_at: datetime, run_id: str) -> OrderVersion:
    """The Order and lines of one eBay order as the connector keeps it."""
    items = line_items(raw)
    pricing = obj(raw.get("pricingSummary"))
    total = obj(pricing.get("total"))
    currency = total.get("currency")
    cancel = obj(raw.get("cancelStatus"))
    discounts = [_amount(pricing, part, signed=True) for part in ("priceDiscount", "deliveryDiscount")]
    order = validated(
        Order, source=SOURCE, account=account, order_id=raw.get("orderId"), name=raw.get("legacyOrderId"),
        created_at=raw.get("creationDate"), updated_at=raw.get("lastModifiedDate"),
        processed_at=raw.get("creationDate"),  # eBay has no separate processing time
        cancelled_at=cancel.get("cancelledDate") if cancel.get("cancelState") == CANCELLED else None,
        financial_status=_lower(raw.get("orderPaymentStatus")),
        fulfillment_status=_lower(raw.get("orderFulfillmentStatus")),
        currency=currency, presentment_currency=total.get("convertedFromCurrency"),
        total_price=_amount(pricing, "total"), subtotal_price=_amount(pricing, "priceSubtotal"),
        total_tax=_amount(pricing, "tax"), total_discounts=None if None in discounts else sum(discounts), total_shipping=_amount(pricing, "deliveryCost"),
        total_refunded=_refunded(raw, currency),
        total_price_presentment=parse_price(total.get("convertedFromValue"), "pricingSummary.total.convertedFromValue"),
        line_count=len(items), fetched_at=fetched_at, run_id=run_id,
        raw_hash=raw_hash(SOURCE, NORMALIZER_VERSION, raw))
    return OrderVersion(order, [_line(obj(item), order, fetched_at, run_id) for item in items])


def _line(item: dict, order: Order, fetched_at: datetime, run_id: str) -> OrderLine:
    cost = _price(item, "lineItemCost", "lineItems.")
    discounted = _price(item, "discountedLineItemCost", "lineItems.")  # only when a promotion applied
    quantity = item.get("quantity")
    return validated(
        OrderLine, prefix="lineItems.", source=SOURCE, account=order.account, order_id=order.order_id,
        order_raw_hash=order.raw_hash, line_id=item.get("lineItemId"), product_id=item.get("legacyItemId"),
        variant_id=item.get("legacyVariationId"), sku=item.get("sku") or None, title=item.get("title"),
        quantity=quantity, unit_price=_per_unit(cost, quantity),
        discounted_unit_price=_per_unit(cost if discounted is None else discounted, quantity),
        total_discount=None if cost is None else cost - (cost if discounted is None else discounted),
        currency=obj(item.get("lineItemCost")).get("currency"), fetched_at=fetched_at, run_id=run_id)


def _amount(pricing: dict, part: str, *, signed: bool = False) -> Decimal | None:
    """A pricingSummary amount; discounts, which eBay writes as negative numbers, as their size."""
    value = obj(pricing.get(part)).get("value")
    if value is None:
        return Decimal(0) if part in ZERO_WHEN_ABSENT and pricing else None
    if signed and isinstance(value, str) and value.strip().startswith("-"):
        value = value.strip()[1:]
    return parse_price(value, f"pricingSummary.{part}.value")


def _price(item: dict, field: str, prefix: str = "") -> Decimal | None:
    return parse_price(obj(item.get(field)).get("value"), f"{prefix}{field}.value")


def _per_unit(amount: Decimal | None, quantity) -> Decimal | None:
    """A line's amount per unit (eBay gives line totals), or None when it does not divide exactly."""
    if amount is None or isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
        return None
    unit = amount / quantity
    return unit if unit * quantity == amount else None


def _refunded(raw: dict, currency) -> Decimal:
    """What was refunded so far: the refunds eBay reports as REFUNDED, in the order's currency."""
    refunds = obj(raw.get("paymentSummary")).get("refunds") or []
    if not isinstance(refunds, list):
        raise Rejected("expected a list", "paymentSummary.refunds")
    total = Decimal(0)
    for refund in map(obj, refunds):
        amount = obj(refund.get("amount"))
        if refund.get("refundStatus") != REFUNDED:
            continue
        if amount.get("currency") != currency:
            raise Rejected("a refund in another currency than the order's", "paymentSummary.refunds.amount.currency")
        total += parse_price(amount.get("value"), "paymentSummary.refunds.amount.value") or 0
    return total


def _lower(value):
    return value.lower() if isinstance(value, str) else value

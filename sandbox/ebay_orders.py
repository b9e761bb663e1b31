"""The eBay sandbox's orders: each seller's order book, served like the Sell Fulfillment API's
getOrders (`sandbox/data/ebay_fulfillment_contract.json`): the `filter` criteria with their
documented errors, `limit` up to 200 (more is errorId 31100), `offset` paging with `total`, `next`
and `prev`, creation order, orders up to two years old, and refunds that bump lastModifiedDate.

Orders carry what real ones carry about the buyer (user name, full name, email, phone, the
registration and shipping addresses, checkout notes, tax ids): the pipeline must never keep any
of it, and the tests look for these values in everything it writes.
"""

from __future__ import annotations

import json
import random
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlencode

CONTRACT = json.loads((Path(__file__).parent / "data" / "ebay_fulfillment_contract.json").read_text())
ORDERS_PATH = CONTRACT["orders_path"]
SCOPES = frozenset(CONTRACT["scopes"])
LIMIT = CONTRACT["parameters"]["limit"]
HISTORY = timedelta(days=365 * CONTRACT["max_order_age_years"])
CRITERION_RE = re.compile(r"(creationdate|lastmodifieddate|orderfulfillmentstatus):(.*)")
RANGE_RE = re.compile(r"\[([^\]]*?)\.\.([^\]]*)\]")
STAMP_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
CANCELLED_EVERY, CONVERTED_EVERY, DISCOUNT_EVERY, TAXED_EVERY = 13, 5, 4, 3
# Buyer details as real orders carry them: none of these strings may appear in what the pipeline writes.
BUYER_MARKERS = ("ebay-buyer", "Robin Buyer", "1 Ebay Lane", "please gift wrap", "+1 555 0100", "TAXID-")


def iso(when: datetime) -> str:
    """eBay's timestamp: UTC with milliseconds and Z."""
    when = when.astimezone(timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _amount(value: float, currency: str = "USD", converted: tuple | None = None) -> dict:
    amount = {"value": f"{value:.2f}", "currency": currency}
    if converted:
        amount.update(convertedFromValue=f"{converted[0]:.2f}", convertedFromCurrency=converted[1])
    return amount


def _buyer(k: int) -> dict:
    address = {"addressLine1": "1 Ebay Lane", "city": "Springfield", "postalCode": "12345", "countryCode": "US"}
    contact = {"fullName": f"Robin Buyer{k}", "email": f"ebay-buyer{k}@example.com",
               "primaryPhone": {"phoneNumber": "+1 555 0100"}, "contactAddress": address}
    return {"buyer": {"username": f"ebay-buyer_{k}", "buyerRegistrationAddress": contact,
                      "taxAddress": {"postalCode": "12345", "countryCode": "US"},
                      "taxIdentifier": {"taxpayerId": f"TAXID-{k}", "taxIdentifierType": "SSN"}},
            "buyerCheckoutNotes": "please gift wrap",
            "fulfillmentStartInstructions": [{
                "fulfillmentInstructionsType": "SHIP_TO", "ebaySupportedFulfillment": False,
                "minEstimatedDeliveryDate": "2026-12-01T08:00:00.000Z",
                "shippingStep": {"shippingCarrierCode": "USPS", "shipTo": contact}}]}


def make_order(seller: str, i: int, created: datetime, rng: random.Random) -> dict:
    """One order of `seller`, with its line items and its buyer."""
    lines, subtotal, discount = [], 0.0, 0.0
    for n in range(rng.randint(1, 3)):
        item = rng.randrange(5000)
        price, quantity = round(3 + rng.random() * 90, 2), rng.randint(1, 3)
        cost = round(price * quantity, 2)
        line = {"lineItemId": str(10_000_000_000 + i * 10 + n), "legacyItemId": str(135_000_000_000 + item),
                "title": f"Steel Trail Mug {item}", "quantity": quantity, "lineItemCost": _amount(cost),
                "total": _amount(cost + 4.99), "soldFormat": "FIXED_PRICE", "listingMarketplaceId": "EBAY_US",
                "purchaseMarketplaceId": "EBAY_US", "lineItemFulfillmentStatus": "FULFILLED", "refunds": [],
                "deliveryCost": {"shippingCost": _amount(4.99)}, "properties": {"buyerProtection": True},
                "itemLocation": {"location": "Seattle", "postalCode": "98101", "countryCode": "US"}}
        if item % 2:
            line["sku"] = f"MUG-{item}"
        if item % 5 == 0:
            line["legacyVariationId"] = str(400_000_000_000 + item)
        if i % DISCOUNT_EVERY == 0 and n == 0:
            cut = round(cost * 0.1, 2)
            line["discountedLineItemCost"] = _amount(cost - cut)
            line["appliedPromotions"] = [{"promotionId": "5000123", "description": "10% off",
                                          "discountAmount": _amount(cut)}]
            discount += cut
        lines.append(line)
        subtotal += cost
    delivery, tax = 4.99 * len(lines), round(subtotal * 0.08, 2) if i % TAXED_EVERY == 0 else 0.0
    total = round(subtotal - discount + delivery + tax, 2)
    pricing = {"priceSubtotal": _amount(subtotal), "deliveryCost": _amount(delivery),
               "total": _amount(total, converted=(round(total * 0.92, 2), "EUR") if i % CONVERTED_EVERY == 0 else None)}
    if tax:
        pricing["tax"] = _amount(tax)
    if discount:
        pricing["priceDiscount"] = _amount(-discount)
    cancelled = i % CANCELLED_EVERY == 0
    order = {
        "orderId": f"{10 + i % 90:02d}-{10_000 + i % 90_000:05d}-{rng.randrange(100_000):05d}",
        "legacyOrderId": f"{110_000_000_000 + i}-{2_700_000_000_000 + i}", "sellerId": seller,
        "creationDate": iso(created), "lastModifiedDate": iso(created + timedelta(hours=2, milliseconds=i)),
        "orderFulfillmentStatus": "NOT_STARTED" if cancelled else "FULFILLED",
        "orderPaymentStatus": "FULLY_REFUNDED" if cancelled else "PAID", "salesRecordReference": str(1000 + i),
        "cancelStatus": ({"cancelState": "CANCELED", "cancelledDate": iso(created + timedelta(hours=1)),
                          "cancelRequests": []} if cancelled else {"cancelState": "NONE_REQUESTED", "cancelRequests": []}),
        "pricingSummary": pricing,
        "paymentSummary": {"totalDueSeller": _amount(total),
                           "payments": [{"paymentMethod": "EBAY", "paymentReferenceId": f"PAY-{i}",
                                         "paymentDate": iso(created), "amount": _amount(total), "paymentStatus": "PAID"}],
                           "refunds": []},
        "totalMarketplaceFee": _amount(round(total * 0.13, 2)), "ebayCollectAndRemitTax": bool(tax),
        "fulfillmentHrefs": [], "lineItems": lines, **_buyer(rng.randrange(1, 50)),
    }
    return order


class OrderBook:
    """One seller's orders: some older than the two years getOrders serves."""

    def __init__(self, seller: str, count: int, now: datetime):
        rng = random.Random(seller)
        self.orders: dict[str, dict] = {}
        for i in range(1, count + 1):
            created = now - timedelta(days=800) + timedelta(days=790) * i / (count + 1)
            order = make_order(seller, i, created.replace(microsecond=rng.randrange(1000) * 1000), rng)
            self.orders[order["orderId"]] = order

    def refund(self, fraction: float, now: datetime, seed: int = 0) -> list[str]:
        """Refund the first line of `fraction` of the served orders; their lastModifiedDate moves to now."""
        served = sorted(oid for oid, o in self.orders.items() if _parse(o["creationDate"]) >= now - HISTORY)
        chosen = sorted(random.Random(seed).sample(served, max(1, round(fraction * len(served)))))
        for oid in chosen:
            order = self.orders[oid]
            line = order["lineItems"][0]
            refund = {"refundId": f"R-{oid}-{len(order['paymentSummary']['refunds'])}", "refundDate": iso(now),
                      "amount": dict(line["lineItemCost"]), "refundStatus": "REFUNDED", "refundReferenceId": "RR"}
            order["paymentSummary"]["refunds"].append(refund)
            line["refunds"].append({k: refund[k] for k in ("refundId", "refundDate", "amount")})
            order["orderPaymentStatus"] = "PARTIALLY_REFUNDED"
            order["lastModifiedDate"] = iso(now)
        return chosen

    def served(self, now: datetime) -> list[dict]:
        """The orders getOrders may return: created in the last two years, in creation order."""
        return sorted((o for o in self.orders.values() if _parse(o["creationDate"]) >= now - HISTORY),
                      key=lambda o: (o["creationDate"], o["orderId"]))


def _error(status: int, error_id: int, message: str, domain: str = "API_FULFILLMENT"):
    return status, {"errors": [{"errorId": error_id, "domain": domain, "category": "REQUEST", "message": message}]}, {}


def get_orders(book: OrderBook, query: dict, now: datetime, base_url: str):
    """(status, body, info) of getOrders over `book`, checking the parameters as eBay does."""
    try:
        limit = int(query.get("limit", LIMIT["default"]))
    except ValueError:
        return _error(400, 31100, f"Invalid limit: {query['limit']}")
    if not LIMIT["min"] <= limit <= LIMIT["max"]:
        return _error(400, 31100, f"Invalid limit: {limit}")
    try:
        offset = int(query.get("offset", 0))
    except ValueError:
        return _error(400, 31000, f"Invalid offset: {query['offset']}")
    if offset < 0:
        return _error(400, 31000, f"Invalid offset: {offset}")
    orders = book.served(now)
    for criterion in filter(None, (query.get("filter") or "").split(",")):
        matched = CRITERION_RE.fullmatch(criterion)
        if not matched:
            return _error(400, 30700, f"Invalid filter name: {criterion.split(':')[0]}")
        name, value = matched.groups()
        if name == "orderfulfillmentstatus":
            continue
        window = RANGE_RE.fullmatch(value)
        if not window:
            return _error(400, 30800, f"Invalid filter value {value} for filter {name}")
        start, end = window.groups()
        if not start:
            return _error(400, 30820, "Start date is missing")
        if not STAMP_RE.fullmatch(start) or (end and not STAMP_RE.fullmatch(end)):
            return _error(400, 30810, "Invalid date format")
        start, end = _parse(start), _parse(end) if end else None
        if start > now or (end and end > now):
            return _error(400, 30850, "Start and end dates can't be in the future")
        if end and end < start:
            return _error(400, 30840, "Start date should be before end date")
        if (end or now) - start > HISTORY + timedelta(days=1):
            return _error(400, 30830, "Time range between start date and end date must be within '2' years.")
        field = "creationDate" if name == "creationdate" else "lastModifiedDate"
        orders = [o for o in orders if start <= _parse(o[field]) and (end is None or _parse(o[field]) <= end)]
    page = orders[offset:offset + limit]
    link = f"{base_url}{ORDERS_PATH}?"
    params = {k: v for k, v in query.items() if k in ("filter", "limit")}
    body = {"href": link + urlencode({**params, "offset": offset}), "total": len(orders), "limit": limit,
            "offset": offset, "orders": page}
    if offset + limit < len(orders):
        body["next"] = link + urlencode({**params, "offset": offset + limit})
    if offset:
        body["prev"] = link + urlencode({**params, "offset": max(0, offset - limit)})
    return 200, body, {"kind": "orders"}

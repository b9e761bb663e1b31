"""The Order and OrderLine models (the `orders` stream): one row per content version of an order in
`orders`, and that version's lines in `order_lines`. The Arrow schemas derive from the models
(storage/schemas.py).

Data-quality rules: ids present; amounts finite and not negative; quantities not negative;
currencies three capital letters; times UTC. No personal data: no customer field is kept but an
optional keyed hash of the customer's id (`customer_ref`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal, Optional

from pydantic import Field, StringConstraints

from normalize.models import Money, Record, Text, UtcTime

Quantity = Annotated[Optional[int], Field(ge=0)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
OptionalCurrency = Annotated[Optional[str], StringConstraints(pattern=r"^[A-Z]{3}$")]
Hash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class Order(Record):
    """One content version of one order from one provider account."""

    source: Literal["shopify", "ebay"]
    account: Text
    order_id: Text
    name: Optional[str] = None
    created_at: UtcTime = None
    updated_at: UtcTime = None
    processed_at: UtcTime = None
    cancelled_at: UtcTime = None
    closed_at: UtcTime = None
    test: Optional[bool] = None
    financial_status: Optional[str] = None
    fulfillment_status: Optional[str] = None
    currency: Currency
    presentment_currency: OptionalCurrency = None
    total_price: Money = None
    subtotal_price: Money = None
    total_tax: Money = None
    total_discounts: Money = None
    total_shipping: Money = None
    total_refunded: Money = None
    total_price_presentment: Money = None
    line_count: int = Field(ge=0)
    source_name: Optional[str] = None
    tags: Optional[list[str]] = None
    customer_ref: Optional[Hash] = None
    fetched_at: datetime
    run_id: Text
    raw_hash: Hash
    schema_version: int = 1


class OrderLine(Record):
    """One line of one version of an order (`order_raw_hash` ties it to that version)."""

    source: Literal["shopify", "ebay"]
    account: Text
    order_id: Text
    order_raw_hash: Hash
    line_id: Text
    product_id: Optional[str] = None
    variant_id: Optional[str] = None
    sku: Optional[str] = None
    title: Optional[str] = None
    vendor: Optional[str] = None
    quantity: Quantity = None
    current_quantity: Quantity = None
    unit_price: Money = None
    discounted_unit_price: Money = None
    total_discount: Money = None
    currency: OptionalCurrency = None
    fetched_at: datetime
    run_id: Text
    schema_version: int = 1


@dataclass(frozen=True)
class OrderVersion:
    """One content version of an order as it is written: its row in `orders`, its lines in `order_lines`."""

    order: Order
    lines: list[OrderLine]

    @property
    def raw_hash(self) -> str:
        return self.order.raw_hash

    @property
    def source_id(self) -> str:
        return self.order.order_id

    @property
    def source_updated_at(self) -> datetime | None:
        return self.order.updated_at

    def rows(self) -> dict[str, list]:
        return {"orders": [self.order], "order_lines": self.lines}

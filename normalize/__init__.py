"""Normalizers: pure functions from a provider's raw record to the shared Product model."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation


@dataclass
class Rejected(Exception):
    """A record broke a data-quality rule: it is quarantined with this reason, not written."""

    reason: str
    field: str | None = None

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}" if self.field else self.reason


def validated(model, prefix: str = "", **fields):
    """A validated instance of `model`, or Rejected naming the first field that broke a rule
    (`prefix` places a nested record's fields: "lineItems.")."""
    from pydantic import ValidationError

    try:
        return model.model_validate(fields)  # what model(**fields) runs, without its keyword unpacking
    except ValidationError as exc:
        first = exc.errors(include_input=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        raise Rejected(first["msg"], f"{prefix}{field}" if field else None) from None


def make_product(**fields):
    """A validated Product, or Rejected naming the first field that broke a rule."""
    from normalize.models import Product

    return validated(Product, **fields)


def line_items(raw) -> list:
    """An order's line items as a list (none when absent); Rejected when the record or the field
    is not what an order is."""
    if not isinstance(raw, dict):
        raise Rejected("record is not a JSON object")
    items = raw.get("lineItems")
    if items is None:
        return []
    if not isinstance(items, list):
        raise Rejected("expected a list", "lineItems")
    return items


def parse_price(value, field: str) -> Decimal | None:
    """A finite, non-negative Decimal from a decimal string ("19.00") or a JSON number (19.99)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Rejected(f"expected a decimal number, got {type(value).__name__}", field)
    try:
        number = Decimal(str(value).strip())  # str() keeps a float's shortest decimal form
    except InvalidOperation:
        raise Rejected("not a decimal number", field) from None
    if not number.is_finite():
        raise Rejected("price must be finite", field)
    if number < 0:
        raise Rejected("price must not be negative", field)
    return number


def obj(value) -> dict:
    """The value if it is a JSON object, else an empty one (missing nested fields read as null)."""
    return value if isinstance(value, dict) else {}

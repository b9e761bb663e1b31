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


def make_product(**fields):
    """A validated Product, or Rejected naming the first field that broke a rule."""
    from pydantic import ValidationError

    from normalize.models import Product

    try:
        return Product.model_validate(fields)  # what Product(**fields) runs, without its keyword unpacking
    except ValidationError as exc:
        first = exc.errors(include_input=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        raise Rejected(first["msg"], field) from None


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

"""Normalizers: pure functions from a provider's raw record to the shared Product model."""

from __future__ import annotations

from dataclasses import dataclass


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
        return Product(**fields)
    except ValidationError as exc:
        first = exc.errors(include_input=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        raise Rejected(first["msg"], field) from None

"""Shopify destroy event -> ProductDeletion. Pure: no I/O, no clock."""

from __future__ import annotations

from datetime import datetime

from normalize import Rejected, validated
from normalize.dedup import raw_hash
from normalize.models import ProductDeletion

SOURCE = "shopify"
NORMALIZER_VERSION = 1
IDENTITY = ("shopify-product-deletion", NORMALIZER_VERSION)  # apart from the products' hashes


def to_deletion(raw: dict, *, account: str, fetched_at: datetime, run_id: str) -> ProductDeletion:
    """The deletion one `BasicEvent` of `action: destroy` on a PRODUCT subject records."""
    if not isinstance(raw, dict):
        raise Rejected("record is not a JSON object")
    if raw.get("subjectType") != "PRODUCT" or raw.get("action") != "destroy":
        raise Rejected("not the destroy event of a product", "subjectType")
    return validated(ProductDeletion, source=SOURCE, account=account, source_id=raw.get("subjectId"),
                     deleted_at=raw.get("createdAt"), event_id=raw.get("id"), fetched_at=fetched_at,
                     run_id=run_id, raw_hash=raw_hash(*IDENTITY, raw))

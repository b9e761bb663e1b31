"""Each stream's cursor of a raw record: where a crawl has got to, for the high-water mark.

Apart from the clients on purpose: a worker process that normalizes a crawl's batches needs the
cursor and nothing of HTTP, and imports only this (requests and its kin would cost it 0.1-0.15 s of
start-up, while the run normalizes the batches itself: pipelines/paging_split.py).
"""

from __future__ import annotations

from datetime import datetime, timezone


def shopify_cursor(record) -> tuple[datetime, int] | None:
    """The compound (updatedAt, numeric id) cursor of a raw Shopify product or order, or None if it has none."""
    try:
        updated = datetime.fromisoformat(record["updatedAt"]).astimezone(timezone.utc)
        return updated, int(str(record["id"]).rsplit("/", 1)[-1])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def ebay_order_cursor(record) -> tuple[datetime, int] | None:
    """(lastModifiedDate, the order id's digits) of a raw eBay order, or None if it has none."""
    try:
        modified = datetime.fromisoformat(record["lastModifiedDate"]).astimezone(timezone.utc)
        digits = "".join(c for c in str(record["orderId"]) if c.isdigit())
        return modified, int(digits or 0)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def no_cursor(record) -> None:
    """A stream with no change feed (Amazon's and eBay's searches): every run reads it in full."""
    return None

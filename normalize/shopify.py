"""Shopify GraphQL product -> Product. Pure: no I/O, no clock."""

from __future__ import annotations

from datetime import datetime

from normalize import Rejected, make_product, obj, parse_price
from normalize.dedup import raw_hash
from normalize.models import Product

SOURCE = "shopify"
NORMALIZER_VERSION = 1


def to_product(raw: dict, *, account: str, fetched_at: datetime, run_id: str) -> Product:
    """The Product for one raw Shopify product (variants already merged into a list)."""
    if not isinstance(raw, dict):
        raise Rejected("record is not a JSON object")
    variants = [_variant(v) for v in _list(raw.get("variants"), "variants")]
    min_price = obj(obj(raw.get("priceRangeV2")).get("minVariantPrice"))
    cheapest = min((v for v in variants if v["price"] is not None), key=lambda v: v["price"], default=None)
    first = variants[0] if variants else {}
    return make_product(
        source=SOURCE,
        account=account,
        source_id=raw.get("id"),
        title=raw.get("title"),
        description=raw.get("description"),
        brand=raw.get("vendor") or None,
        category=raw.get("productType") or None,
        url=raw.get("onlineStoreUrl"),
        image_url=obj(obj(raw.get("featuredMedia")).get("image")).get("url"),
        price=parse_price(min_price.get("amount"), "priceRangeV2.minVariantPrice.amount"),
        currency=min_price.get("currencyCode"),
        compare_at_price=cheapest["compare_at_price"] if cheapest else None,
        availability=_availability(raw.get("status"), variants),
        sku=first.get("sku"),
        gtin=first.get("barcode"),
        total_inventory=raw.get("totalInventory"),
        variants=variants,
        tags=raw.get("tags"),
        source_created_at=raw.get("createdAt"),
        source_updated_at=raw.get("updatedAt"),
        fetched_at=fetched_at,
        run_id=run_id,
        raw_hash=raw_hash(SOURCE, NORMALIZER_VERSION, raw),
    )


def _availability(status, variants) -> str | None:
    if isinstance(status, str) and status != "ACTIVE":
        return status.lower()  # draft, archived, unlisted
    if not variants:
        return None
    return "in_stock" if any(v["available"] for v in variants) else "out_of_stock"


def _variant(raw) -> dict:
    raw = obj(raw)
    return {
        "id": raw.get("id"),
        "sku": raw.get("sku") or None,
        "barcode": raw.get("barcode") or None,
        "title": raw.get("title"),
        "price": parse_price(raw.get("price"), "variants.price"),
        "compare_at_price": parse_price(raw.get("compareAtPrice"), "variants.compareAtPrice"),
        "inventory_quantity": raw.get("inventoryQuantity"),
        "available": raw.get("availableForSale"),
    }






def _list(value, field: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise Rejected("expected a list", field)
    return value

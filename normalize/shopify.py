"""Shopify GraphQL product -> Product. Pure: no I/O, no clock.

Two paths, one answer: a plain record (nearly every one) is checked field by field here and built
without pydantic's validators (normalize/checked.py); any other record goes through the model,
which accepts the same values or rejects the record with its own message.
"""

from __future__ import annotations

from datetime import datetime

from normalize import Rejected, make_product, obj, parse_price
from normalize import checked as ok
from normalize.dedup import hash_head, plain_raw_hash, plain_record_hash, raw_hash
from normalize.models import SCHEMA_VERSION, Product, Variant, clean_description, clean_title

SOURCE = "shopify"
NORMALIZER_VERSION = 1

# The fields to_product passes to the model (what validation records as set; see ok.trusted).
_PASSED = {
    "source", "account", "source_id", "title", "description", "brand", "category", "url", "image_url", "price",
    "currency", "compare_at_price", "availability", "sku", "gtin", "total_inventory", "variants", "tags",
    "source_created_at", "source_updated_at", "fetched_at", "run_id", "raw_hash"}
_VARIANT_PASSED = set(Variant.model_fields)


def to_product(raw: dict, *, account: str, fetched_at: datetime, run_id: str) -> Product:
    """The Product for one raw Shopify product (variants already merged into a list)."""
    if not isinstance(raw, dict):
        raise Rejected("record is not a JSON object")
    try:
        return _plain_product(raw, account, fetched_at, run_id)
    except Exception:  # noqa: BLE001 - ok.Unusual, a Rejected, a normalizer slip: the model decides
        return _model_product(raw, account, fetched_at, run_id, None)


def _model_product(raw: dict, account, fetched_at, run_id, digest: str | None) -> Product:
    """The Product the model validates (the first release's path), or Rejected with its reason."""
    variants = [_variant(v) for v in _list(raw.get("variants"), "variants")]
    min_price = obj(obj(raw.get("priceRangeV2")).get("minVariantPrice"))
    cheapest = _cheapest(variants)
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
        raw_hash=digest or raw_hash(SOURCE, NORMALIZER_VERSION, raw),
    )


def _plain_product(raw: dict, account, fetched_at, run_id) -> Product:
    """to_product's answer for a plain record, each value checked as strictly as the model would
    (ok.Unusual, or any other exception, for anything the model must decide)."""
    ok.context(account, run_id, fetched_at)
    raw_variants = _list(raw.get("variants"), "variants")
    variants = [_plain_variant(v) for v in raw_variants]
    # Hashed first: a plain record holds no lone surrogate, integer beyond 64 bits or NaN anywhere.
    digest = _hash(raw, raw_variants)
    min_price = obj(obj(raw.get("priceRangeV2")).get("minVariantPrice"))
    cheapest = _cheapest(variants)
    first = variants[0] if variants else {}
    source_id, vendor, product_type = raw.get("id"), raw.get("vendor") or None, raw.get("productType") or None
    sku, gtin, currency = first.get("sku"), first.get("barcode"), min_price.get("currencyCode")
    availability, inventory = _availability(raw.get("status"), variants), raw.get("totalInventory")
    if not ({type(vendor), type(product_type), type(sku), type(gtin), type(availability)} <= ok.OPTIONAL_STR
            and type(inventory) in ok.OPTIONAL_INT):
        ok.unusual()
    return ok.trusted(Product, {
        "source": SOURCE,
        "account": account,
        "source_id": ok.text(source_id),
        "title": clean_title(ok.string(raw.get("title"))),
        "description": clean_description(ok.optional_string(raw.get("description"))),
        "brand": vendor,
        "category": product_type,
        "url": ok.url(raw.get("onlineStoreUrl")),
        "image_url": ok.url(obj(obj(raw.get("featuredMedia")).get("image")).get("url")),
        "price": ok.price(min_price.get("amount")),
        "currency": ok.currency(currency),
        "compare_at_price": cheapest["compare_at_price"] if cheapest else None,
        "availability": availability,
        "condition": None,
        "seller": None,
        "seller_feedback_score": None,
        "seller_feedback_percent": None,
        "item_country": None,
        "buying_options": None,
        "sku": sku,
        "gtin": gtin,
        "epid": None,
        "total_inventory": inventory,
        "variants": [ok.trusted(Variant, v, _VARIANT_PASSED) for v in variants],
        "tags": ok.strings(raw.get("tags")),
        "source_created_at": ok.utc_time(raw.get("createdAt")),
        "source_updated_at": ok.utc_time(raw.get("updatedAt")),
        "fetched_at": fetched_at,
        "run_id": run_id,
        "raw_hash": digest,
        "schema_version": SCHEMA_VERSION,
    }, _PASSED)


# The record as the connector's queries shape it (connectors/shopify.py: PRODUCT_FIELDS and
# VARIANT_FIELDS). A record of exactly this shape, with the values _plain_product checks, is already
# in raw_hash's canonical form: no transport key, no float, its one list of objects (variants)
# checked in id order below; orjson with sorted keys writes it as json.dumps does (or raises).
_TOP_KEYS = frozenset({"id", "title", "handle", "vendor", "productType", "status", "tags", "createdAt", "updatedAt",
                       "onlineStoreUrl", "description", "totalInventory", "priceRangeV2", "featuredMedia", "variants"})
_RANGE_KEYS = frozenset({"minVariantPrice", "maxVariantPrice"})
_MONEY_KEYS = frozenset({"amount", "currencyCode"})
_MEDIA_KEYS, _IMAGE_KEYS = frozenset({"image"}), frozenset({"url"})
_VARIANT_KEYS = frozenset({"id", "sku", "barcode", "title", "price", "compareAtPrice", "inventoryQuantity",
                           "availableForSale"})
_HEAD = hash_head(SOURCE, NORMALIZER_VERSION)


def _hash(raw: dict, raw_variants: list) -> str:
    """raw_hash(SOURCE, NORMALIZER_VERSION, raw): without raw_hash's walk over the record when it
    has the queries' shape (each value _plain_product reads is checked there, the others here)."""
    if _query_shaped(raw, raw_variants):
        return plain_record_hash(_HEAD, raw)
    digest = plain_raw_hash(SOURCE, NORMALIZER_VERSION, raw)
    if digest is None:
        ok.unusual()
    return digest


def _query_shaped(raw: dict, raw_variants: list) -> bool:
    """Whether the record has exactly the queries' shape: known keys at every level, the values
    _plain_product does not read (status, handle, maxVariantPrice) strings or null, and the
    variants (plain: _plain_variant checked each id is a string or null) in id order."""
    if not (raw.keys() <= _TOP_KEYS and type(raw.get("status")) in ok.OPTIONAL_STR
            and type(raw.get("handle")) in ok.OPTIONAL_STR):
        return False
    price_range = raw.get("priceRangeV2")
    if price_range is not None and not (type(price_range) is dict and price_range.keys() <= _RANGE_KEYS
                                        and _money_shaped(price_range.get("minVariantPrice"))
                                        and _money_shaped(price_range.get("maxVariantPrice"))):
        return False
    media = raw.get("featuredMedia")
    if media is not None:
        if type(media) is not dict or not media.keys() <= _MEDIA_KEYS:
            return False
        image = media.get("image")
        if image is not None and (type(image) is not dict or not image.keys() <= _IMAGE_KEYS):
            return False
    last = ""
    for variant in raw_variants:  # canonical order: by id (all strings here), a stable sort
        variant_id = variant.get("id")
        if not variant.keys() <= _VARIANT_KEYS or type(variant_id) is not str or variant_id < last:
            return False
        last = variant_id
    return True


def _money_shaped(money) -> bool:
    return money is None or (type(money) is dict and money.keys() <= _MONEY_KEYS
                             and type(money.get("amount")) in ok.OPTIONAL_STR
                             and type(money.get("currencyCode")) in ok.OPTIONAL_STR)


def _plain_variant(raw: dict) -> dict:
    """_variant's dict with the Variant model's values (prices quantized), for a plain variant."""
    variant_id, title, sku, barcode = raw.get("id"), raw.get("title"), raw.get("sku") or None, raw.get("barcode") or None
    quantity, available = raw.get("inventoryQuantity"), raw.get("availableForSale")
    if not ({type(variant_id), type(title), type(sku), type(barcode)} <= ok.OPTIONAL_STR
            and type(quantity) in ok.OPTIONAL_INT and type(available) in ok.OPTIONAL_BOOL):
        ok.unusual()
    return {
        "id": variant_id,
        "sku": sku,
        "barcode": barcode,
        "title": title,
        "price": ok.price(raw.get("price")),
        "compare_at_price": ok.price(raw.get("compareAtPrice")),
        "inventory_quantity": quantity,
        "available": available,
    }


def _cheapest(variants: list[dict]) -> dict | None:
    """The first variant with the lowest price (what min() picks), None when none has a price.
    A loop: min() over a generator with a key function cost three times as much for 2.5 variants."""
    cheapest = None
    for variant in variants:
        price = variant["price"]
        if price is not None and (cheapest is None or price < cheapest["price"]):
            cheapest = variant
    return cheapest


def _availability(status, variants) -> str | None:
    if isinstance(status, str) and status != "ACTIVE":
        return status.lower()  # draft, archived, unlisted
    if not variants:
        return None
    for variant in variants:
        if variant["available"]:
            return "in_stock"
    return "out_of_stock"


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

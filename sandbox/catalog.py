"""A deterministic Shopify catalog for the sandbox: same size and seed, same products."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

BASE_TIME = datetime(2026, 1, 1, tzinfo=timezone.utc)
SPAN = timedelta(days=300)
ADJECTIVES = ["Trail", "Summit", "Harbor", "Canyon", "Meadow", "Granite", "Cedar", "Polar", "Ember", "Drift"]
NOUNS = ["Mug", "Bottle", "Lantern", "Blanket", "Backpack", "Stool", "Knife", "Hammock", "Tent", "Stove"]
VENDORS = ["Acme", "Northwind", "Globex", "Initech", "Umbrella Outdoor"]
SIZES = ["XS", "S", "M", "L", "XL", "XXL"]


@dataclass(frozen=True)
class CatalogSpec:
    size: int = 200
    seed: int = 7
    min_variants: int = 1
    max_variants: int = 3
    many_variants_every: int = 17  # every Nth product has more variants than one page holds
    many_variants: int = 30
    free_every: int = 23  # every Nth product is free (price 0.00)
    draft_every: int = 19
    same_time_every: int = 50  # every Nth product shares its updatedAt with the one before


def iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_catalog(spec: CatalogSpec) -> list[dict]:
    """Products in Shopify's GraphQL shape, with `variants` as a plain list."""
    rng = random.Random(spec.seed)
    products, previous_time = [], None
    for i in range(1, spec.size + 1):
        updated = BASE_TIME + SPAN * i / (spec.size + 1)
        if spec.same_time_every and i % spec.same_time_every == 0 and previous_time:
            updated = previous_time
        previous_time = updated
        products.append(_product(i, rng, spec, updated))
    return products


def _product(i: int, rng: random.Random, spec: CatalogSpec, updated: datetime) -> dict:
    pid = 8_000_000 + i
    title = f"{ADJECTIVES[i % len(ADJECTIVES)]} {NOUNS[(i // len(ADJECTIVES)) % len(NOUNS)]} {i}"
    handle = title.lower().replace(" ", "-")
    free = spec.free_every and i % spec.free_every == 0
    count = (spec.many_variants if spec.many_variants_every and i % spec.many_variants_every == 0
             else rng.randint(spec.min_variants, spec.max_variants))
    base_price = 0 if free else rng.randint(5, 250)
    variants = []
    for v in range(count):
        price = f"{base_price + v:.2f}" if not free else "0.00"
        variants.append({
            "id": f"gid://shopify/ProductVariant/{pid * 1000 + v}",
            "sku": f"SKU-{pid}-{v}",
            "barcode": f"0{pid:011d}{v % 10}" if v % 2 == 0 else None,
            "title": SIZES[v % len(SIZES)] + (f" / {v // len(SIZES)}" if v >= len(SIZES) else ""),
            "price": price,
            "compareAtPrice": f"{base_price + v + 10:.2f}" if i % 5 == 0 and not free else None,
            "inventoryQuantity": rng.randint(0, 80),
            "availableForSale": rng.random() > 0.1,
        })
    prices = [float(v["price"]) for v in variants]
    published = i % 7 != 0
    return {
        "id": f"gid://shopify/Product/{pid}",
        "title": title,
        "handle": handle,
        "vendor": VENDORS[i % len(VENDORS)],
        "productType": NOUNS[(i // len(ADJECTIVES)) % len(NOUNS)] + "s",
        "status": "DRAFT" if spec.draft_every and i % spec.draft_every == 0 else "ACTIVE",
        "tags": sorted({"camp", ADJECTIVES[i % len(ADJECTIVES)].lower()} | ({"sale"} if i % 5 == 0 else set())),
        "createdAt": iso(updated - timedelta(days=30)),
        "updatedAt": iso(updated),
        "onlineStoreUrl": f"https://demo-shop.example/products/{handle}" if published else None,
        "description": f"The {title.lower()}, built to last.",
        "totalInventory": sum(v["inventoryQuantity"] for v in variants),
        "priceRangeV2": {
            "minVariantPrice": {"amount": f"{min(prices):.2f}", "currencyCode": "USD"},
            "maxVariantPrice": {"amount": f"{max(prices):.2f}", "currencyCode": "USD"},
        },
        "featuredMedia": ({"__typename": "MediaImage",
                           "image": {"url": f"https://cdn.shopify.com/s/files/demo/{handle}.jpg"}}
                          if i % 11 != 0 else None),
        "variants": variants,
    }


def mutate(product: dict, now: datetime, generation: int) -> dict:
    """A changed copy: new title suffix, prices up by one, updatedAt now."""
    variants = [{**v, "price": f"{float(v['price']) + 1:.2f}"} for v in product["variants"]]
    prices = [float(v["price"]) for v in variants]
    currency = product["priceRangeV2"]["minVariantPrice"]["currencyCode"]
    return {
        **product,
        "title": product["title"].split(" (rev")[0] + f" (rev {generation})",
        "updatedAt": iso(now),
        "variants": variants,
        "priceRangeV2": {
            "minVariantPrice": {"amount": f"{min(prices):.2f}", "currencyCode": currency},
            "maxVariantPrice": {"amount": f"{max(prices):.2f}", "currencyCode": currency},
        },
    }

"""A deterministic Shopify catalog for the sandbox: same size and seed, same products.

The default catalog is small and simple (the tests' figures rest on it). A `rich` one is shaped
like a real shop's and built lazily, each product from the seed and its index alone, so a
million-product sandbox holds none of them until asked.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache

BASE_TIME = datetime(2026, 1, 1, tzinfo=timezone.utc)
SPAN = timedelta(days=300)
ADJECTIVES = ["Trail", "Summit", "Harbor", "Canyon", "Meadow", "Granite", "Cedar", "Polar", "Ember", "Drift"]
NOUNS = ["Mug", "Bottle", "Lantern", "Blanket", "Backpack", "Stool", "Knife", "Hammock", "Tent", "Stove"]
VENDORS = ["Acme", "Northwind", "Globex", "Initech", "Umbrella Outdoor"]
SIZES = ["XS", "S", "M", "L", "XL", "XXL"]
TAG_RE = re.compile(r"<[^>]+>")


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
    rich: bool = False  # shaped like a real shop's (rich_product); the variant options above are unused


def iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_catalog(spec: CatalogSpec) -> list[dict]:
    """Products in Shopify's GraphQL shape, with `variants` as a plain list."""
    if spec.rich:
        return [rich_product(spec, i) for i in range(1, spec.size + 1)]
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


# -- the rich catalog: shaped like a real shop's, each product derived from (seed, index) alone ------
# About 2.5 variants a product (one in a thousand with 100 to 250), descriptions of a few hundred
# bytes to several KB of HTML with non-ASCII text (and its tag-stripped form, as Shopify's
# `description`), 0 to 10 tags, a featured image on most, free products and free variants, and
# compareAtPrice, barcode, inventoryQuantity, vendor and productType often null or empty.
RICH_VARIANT_COUNTS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 20)
RICH_VARIANT_WEIGHTS = (50, 20, 12, 7, 4, 3, 2.2, 1.4, 0.3, 0.1)
RICH_HUGE_EVERY = 1000  # every Nth product has 100 to 250 variants
SENTENCES = [
    "Handgefertigt in kleinen Serien, geprüft auf Größe und Passform.",
    "Fabriqué à partir de matériaux recyclés, résistant à l'eau et à la chaleur.",
    "Built for long days on the trail: light, tough and easy to repair in the field.",
    "Diseñado en Barcelona; la costura reforzada aguanta años de uso diario.",
    "日本製の生地を使用し、軽くて丈夫な仕上がりです。",
    "Wasch- und trocknergeeignet bis 40 °C; bügeln nicht nötig.",
    "Our café-tested enamel keeps coffee hot for hours — no metallic taste.",
    "Каждое изделие проходит ручную проверку перед отправкой.",
    "Comes with a lifetime warranty and free repairs, no questions asked.",
    "Størrelsen er normal; vælg en størrelse større til tykke sokker.",
    "Crafted from FSC-certified wood with a natural oil finish ✓",
    "Lightweight (320 g), packs down to the size of a water bottle.",
    "Ideal für Camping, Festivals und lange Nächte auf der Terrasse 🌲",
    "Colours may vary slightly from the photos: each piece is dyed by hand.",
    "Pensato per chi viaggia leggero: tasche interne, zip YKK e fodera traspirante.",
    "防水・防風素材で、急な天候の変化にも対応します。",
]
FEATURES = ["Water-resistant shell", "Reißverschluss aus Metall", "100 % coton biologique", "Fits 13\" laptops",
            "Dishwasher safe", "Lebenslange Garantie", "Poids : 1,2 kg", "Recycled polyester lining",
            "UV-beständig", "Made in Portugal", "Capacité : 750 ml", "Ergonomic handle"]
TAG_POOL = ["camp", "hike", "sale", "new", "gift", "outdoor", "été", "winter", "bestseller", "eco", "größe-xl",
            "limited", "bundle", "kids", "travel", "home", "kitchen", "handmade", "vegan", "clearance"]
COLORS = ["Black", "Forest", "Sand", "Crème", "Rouge", "Blau", "Slate", "Ocre"]


def rich_product(spec: CatalogSpec, i: int) -> dict:
    """Product `i` (1-based) of a rich catalog, from the seed and the index alone."""
    rng = random.Random(spec.seed * 1_000_003 + i)
    pid = 8_000_000 + i
    noun = NOUNS[(i // len(ADJECTIVES)) % len(NOUNS)]
    title = f"{ADJECTIVES[i % len(ADJECTIVES)]} {noun} {i}" + (" — édition spéciale" if i % 13 == 0 else "")
    handle = f"{ADJECTIVES[i % len(ADJECTIVES)]}-{noun}-{i}".lower()
    free = spec.free_every and i % spec.free_every == 0
    base_cents = 0 if free else rng.randint(99, 49_999)
    variants = []
    for v in range(rich_variant_count(spec, i)):
        cents = base_cents + 100 * (v % 7)
        zero = rng.random() < 0.01  # a free variant (a sample, a gift wrap) of a priced product
        variants.append({
            "id": f"gid://shopify/ProductVariant/{pid * 1000 + v}",
            "sku": f"{handle[:12].upper()}-{v}" if rng.random() > 0.05 else "",
            "barcode": f"{rng.randint(10**11, 10**12 - 1)}{v % 10}" if rng.random() < 0.6 else None,
            "title": f"{SIZES[v % len(SIZES)]} / {COLORS[(v // len(SIZES)) % len(COLORS)]}",
            "price": "0.00" if zero else f"{cents / 100:.2f}",
            "compareAtPrice": f"{(cents * 5 // 4) / 100:.2f}" if not free and rng.random() < 0.3 else None,
            "inventoryQuantity": rng.randint(0, 500) if rng.random() > 0.05 else None,
            "availableForSale": rng.random() > 0.15,
        })
    prices = [float(v["price"]) for v in variants]
    html = _rich_description(rng, title)
    return {
        "id": f"gid://shopify/Product/{pid}",
        "title": title,
        "handle": handle,
        "vendor": VENDORS[i % len(VENDORS)] if i % 29 else "",
        "productType": noun + "s" if i % 31 else "",
        "status": "DRAFT" if spec.draft_every and i % spec.draft_every == 0 else (
            "ARCHIVED" if i % 41 == 0 else "ACTIVE"),
        "tags": sorted(rng.sample(TAG_POOL, rng.randint(0, 10))),
        "createdAt": iso(rich_updated_at(spec, i) - timedelta(days=30 + i % 400)),
        "updatedAt": iso(rich_updated_at(spec, i)),
        "onlineStoreUrl": f"https://demo-shop.example/products/{handle}" if i % 7 else None,
        "descriptionHtml": html,
        "description": _strip_tags(html),
        "totalInventory": sum(v["inventoryQuantity"] or 0 for v in variants),
        "priceRangeV2": {
            "minVariantPrice": {"amount": f"{min(prices):.2f}", "currencyCode": "EUR" if i % 3 == 0 else "USD"},
            "maxVariantPrice": {"amount": f"{max(prices):.2f}", "currencyCode": "EUR" if i % 3 == 0 else "USD"},
        },
        "featuredMedia": ({"__typename": "MediaImage",
                           "image": {"url": f"https://cdn.shopify.com/s/files/1/0{pid}/products/{handle}.jpg"
                                            f"?v={1_700_000_000 + i}"}}
                          if i % 11 else None),
        "variants": variants,
    }


def rich_variant_count(spec: CatalogSpec, i: int) -> int:
    """How many variants product `i` of a rich catalog has (without building it)."""
    if i % RICH_HUGE_EVERY == 0:
        return 100 + (i * 7919) % 151
    rng = random.Random(spec.seed * 7_000_009 + i)
    return rng.choices(RICH_VARIANT_COUNTS, RICH_VARIANT_WEIGHTS)[0]


def rich_updated_at(spec: CatalogSpec, i: int) -> datetime:
    """updatedAt of product `i`: spread over SPAN in index order (a shared time now and then)."""
    if spec.same_time_every and i % spec.same_time_every == 0 and i > 1:
        i -= 1
    return BASE_TIME + SPAN * i / (spec.size + 1)


def _rich_description(rng: random.Random, title: str) -> str:
    paragraphs = []
    for _ in range(rng.choice((1, 1, 2, 2, 3, 4, 6, 9, 14))):
        paragraphs.append("<p>" + " ".join(rng.choices(SENTENCES, k=rng.randint(2, 6))) + "</p>")
    features = "".join(f"<li>{f}</li>" for f in rng.sample(FEATURES, rng.randint(0, 6)))
    return (f"<h2>{title}</h2>" + "".join(paragraphs) + (f"<ul>{features}</ul>" if features else "")
            + ("<p><strong>Note:</strong> ships in 2–3 days.</p>" if rng.random() < 0.3 else ""))


def _strip_tags(html: str) -> str:
    # Shopify's `description` is the HTML with its tags removed, on one line.
    return " ".join(TAG_RE.sub(" ", html).split())


class LazyCatalog(Mapping):
    """A rich catalog as a mapping of product id -> product, each built when asked for (the last
    few thousand kept): a million products cost no memory until served. Products set by id (a
    mutation, a test's edit) are kept and take precedence."""

    def __init__(self, spec: CatalogSpec):
        self.spec, self.overrides = spec, {}
        self.product = lru_cache(maxsize=4096)(lambda i: rich_product(spec, i))

    def index(self, gid) -> int | None:
        """The catalog index of a product id, or None if the catalog never had it."""
        try:
            i = int(str(gid).rsplit("/", 1)[-1]) - 8_000_000
        except ValueError:
            return None
        return i if 1 <= i <= self.spec.size else None

    def __getitem__(self, gid) -> dict:
        if gid in self.overrides:
            return self.overrides[gid]
        i = self.index(gid)
        if i is None or gid != f"gid://shopify/Product/{8_000_000 + i}":
            raise KeyError(gid)
        return self.product(i)

    def __setitem__(self, gid, product: dict) -> None:
        self.overrides[gid] = product

    def __iter__(self):
        yield from (f"gid://shopify/Product/{8_000_000 + i}" for i in range(1, self.spec.size + 1))
        yield from (gid for gid in self.overrides if self.index(gid) is None)

    def __len__(self) -> int:
        return self.spec.size + sum(1 for gid in self.overrides if self.index(gid) is None)

    def variant_count(self) -> int:
        """Every variant in the catalog, counted without building the products."""
        base = sum(rich_variant_count(self.spec, i) for i in range(1, self.spec.size + 1)
                   if f"gid://shopify/Product/{8_000_000 + i}" not in self.overrides)
        return base + sum(len(p["variants"]) for p in self.overrides.values())


def catalog(spec: CatalogSpec):
    """The sandbox's products by id: a dict, or for a rich spec a LazyCatalog built on demand."""
    if spec.rich:
        return LazyCatalog(spec)
    return {p["id"]: p for p in make_catalog(spec)}

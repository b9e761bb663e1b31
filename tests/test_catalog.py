"""The sandbox's catalogs: the default one unchanged, the rich one shaped like a real shop's and
built lazily, each product from its index and the seed, and served like any other."""

from __future__ import annotations

import hashlib
import json
import statistics

from connectors import shopify
from connectors.http import HttpSettings
from connectors.settings import ShopifySettings
from pydantic import SecretStr
from sandbox.catalog import CatalogSpec, LazyCatalog, catalog, make_catalog
from sandbox.shopify import ShopifySandbox
from tests.conftest import SHOP, TOKEN


def digest(products) -> str:
    return hashlib.sha256(json.dumps(products, sort_keys=True).encode()).hexdigest()


def test_the_default_catalogs_products_never_change():
    """The tests' and the earlier benchmarks' figures rest on these products: pinned."""
    assert digest(make_catalog(CatalogSpec())) == "5a425012be2a0bff6cff996287de745732f7d0abf207613a74260095270ca95e"
    simple = CatalogSpec(size=600, min_variants=1, max_variants=5, many_variants_every=100, many_variants=120)
    assert digest(make_catalog(simple)) == "bb33ef43c8e390a897c01004f3b1754c907ccfc966dc4faaf9e2301b2e8d4024"


def test_a_rich_catalog_is_shaped_like_a_real_shops():
    products = make_catalog(CatalogSpec(size=3000, rich=True))
    counts = [len(p["variants"]) for p in products]
    assert 2.2 <= statistics.mean(counts) <= 2.8 and sum(c > 100 for c in counts) == 3
    sizes = [len(p["descriptionHtml"].encode()) for p in products]
    assert min(sizes) < 400 and max(sizes) > 4000 and statistics.median(sizes) > 500
    assert sum(not p["description"].isascii() for p in products) > 0.9 * len(products)
    assert "<" not in "".join(p["description"] for p in products[:100])
    assert {len(p["tags"]) for p in products} == set(range(11))
    prices = [v["price"] for p in products for v in p["variants"]]
    assert "0.00" in prices and None in [v["compareAtPrice"] for p in products for v in p["variants"]]
    assert any(p["featuredMedia"] is None for p in products) and any(p["featuredMedia"] for p in products)


def test_a_lazy_catalog_builds_the_same_products_as_the_eager_one():
    spec = CatalogSpec(size=500, rich=True)
    lazy, eager = catalog(spec), make_catalog(spec)
    assert isinstance(lazy, LazyCatalog) and len(lazy) == 500
    assert [lazy[p["id"]] for p in reversed(eager)] == list(reversed(eager))
    assert list(lazy) == [p["id"] for p in eager]
    assert lazy.variant_count() == sum(len(p["variants"]) for p in eager)
    assert lazy.get("gid://shopify/Product/1") is None and "gid://shopify/Product/8000501" not in lazy


def crawl(server) -> list[dict]:
    shop = ShopifySettings(SHOP, "2026-10", SecretStr(TOKEN), server.base_url, bulk_min_products=0)
    http = shopify.make_client(shop, HttpSettings())
    try:
        return list(shopify.iter_records(http, shop))
    finally:
        http.close()


def test_a_lazy_rich_sandbox_serves_every_product_and_variant_in_order():
    spec = CatalogSpec(size=1200, rich=True)
    with ShopifySandbox(spec, token=TOKEN, throttle=False) as server:
        records = crawl(server)
    eager = make_catalog(spec)
    assert [r["id"] for r in records] == [p["id"] for p in eager]
    assert [len(r["variants"]) for r in records] == [len(p["variants"]) for p in eager]
    assert max(len(r["variants"]) for r in records) > 100


def test_a_changed_lazy_catalog_is_served_in_updated_order():
    with ShopifySandbox(CatalogSpec(size=300, rich=True), token=TOKEN, throttle=False) as server:
        changed = server.mutate(0.05)
        records = crawl(server)
    assert len(records) == 300 and [r["id"] for r in records[-len(changed):]] == changed
    assert all("(rev 1)" in r["title"] for r in records[-len(changed):])

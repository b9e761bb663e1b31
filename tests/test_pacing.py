"""Rate-limit-perfect pacing: the arithmetic of the cost bucket on an injected clock, and a whole
throttled crawl whose simulated time stays within 1.10 x (C - bucket + R) / restore rate."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from connectors import shopify
from connectors.http import HttpSettings
from connectors.shopify import _CostBucket
from connectors.settings import ShopifySettings
from sandbox.catalog import CatalogSpec
from sandbox.shopify import ShopifySandbox
from tests.conftest import TOKEN


def status(available, maximum=2000.0, rate=100.0):
    return {"throttleStatus": {"maximumAvailable": maximum, "currentlyAvailable": available, "restoreRate": rate}}


def test_bucket_waits_for_the_deficit_at_the_restore_rate(clock):
    bucket = _CostBucket()
    assert bucket.seconds_until(900, clock()) == 0  # nothing reported yet: no guess
    bucket.update(status(100), clock())
    assert bucket.seconds_until(600, clock()) == pytest.approx(5.0)
    clock.sleep(3)
    assert bucket.seconds_until(600, clock()) == pytest.approx(2.0)
    clock.sleep(100)  # refilled past the maximum: capped, no negative wait
    assert bucket.seconds_until(600, clock()) == 0
    assert bucket.seconds_until(2500, clock()) == pytest.approx(5.0)  # more than the bucket holds


def test_a_throttled_crawl_is_within_10_percent_of_the_ideal_and_never_throttled(clock):
    spec = CatalogSpec(size=600, min_variants=1, max_variants=5, many_variants_every=100, many_variants=120)
    with ShopifySandbox(spec, token=TOKEN, bucket_max=2000, restore_rate=100, clock=clock) as server:
        shop = ShopifySettings("test-shop.myshopify.com", "2026-10", SecretStr(TOKEN), server.base_url, bulk_min_products=0)
        client = shopify.make_client(shop, HttpSettings(), sleep=clock.sleep, clock=clock)
        start = clock()
        records = list(shopify.iter_records(client, shop, clock=clock))
        elapsed = clock() - start
        charged = server.charged_cost
        largest = max(e["cost"] for e in server.api_requests() if e.get("kind") == "query")
    ideal = (charged - 2000 + largest) / 100
    print(f"C={charged} R={largest} ideal={ideal:.1f}s paced={elapsed:.1f}s throttled={server.throttled_count}")
    assert len(records) == 600 and charged >= 4000
    assert server.throttled_count == 0
    assert elapsed <= 1.10 * ideal

"""The Shopify normalizer: recorded fixtures in, fields out; data-quality rules; raw_hash."""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from decimal import Decimal

import pyarrow as pa
import pytest

from normalize import Rejected
from storage.schemas import SCHEMA
from normalize.shopify import to_product
from tests.conftest import load_fixture

FETCHED = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
RUN = "20261127T120000Z-abcdef"


def norm(raw):
    return to_product(raw, account="acme.myshopify.com", fetched_at=FETCHED, run_id=RUN)


def test_product_fields_from_the_recorded_fixture():
    p = norm(load_fixture("shopify", "product.json"))
    assert (p.source, p.account, p.source_id) == ("shopify", "acme.myshopify.com", "gid://shopify/Product/8001")
    assert (p.title, p.brand, p.category) == ("Trail Mug", "Acme", "Mugs")
    assert p.url == "https://acme.example/products/trail-mug"
    assert p.image_url == "https://cdn.shopify.com/s/files/mug.jpg"
    assert p.price == Decimal("19.0000") and p.currency == "USD"
    assert p.compare_at_price == Decimal("25.00")  # of the cheapest variant
    assert p.availability == "in_stock"
    assert (p.sku, p.gtin) == ("MUG-L", None)
    assert p.total_inventory == 42 and p.tags == ["camp"]
    assert p.source_updated_at == datetime(2026, 11, 20, 8, 15, tzinfo=timezone.utc)
    assert [v.sku for v in p.variants] == ["MUG-L", "MUG-S"]
    assert p.variants[1].price == Decimal("19.00") and p.variants[1].available is True
    assert p.fetched_at == FETCHED and p.run_id == RUN and len(p.raw_hash) == 64


def test_draft_free_product_without_media_keeps_price_zero_and_nulls():
    p = norm(load_fixture("shopify", "draft_free_no_media.json"))
    assert p.price == Decimal("0") and p.availability == "draft"
    assert p.url is None and p.image_url is None and p.brand is None and p.category is None


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r.update(title="  "), "title"),
    (lambda r: r.pop("title"), "title"),
    (lambda r: r.pop("id"), "source_id"),
    (lambda r: r["priceRangeV2"]["minVariantPrice"].update(amount="-1.00"), "priceRangeV2.minVariantPrice.amount"),
    (lambda r: r["priceRangeV2"]["minVariantPrice"].update(amount="NaN"), "priceRangeV2.minVariantPrice.amount"),
    (lambda r: r["priceRangeV2"]["minVariantPrice"].update(amount="Infinity"), "priceRangeV2.minVariantPrice.amount"),
    (lambda r: r["priceRangeV2"]["minVariantPrice"].update(amount="1,299.00"), "priceRangeV2.minVariantPrice.amount"),
    (lambda r: r["priceRangeV2"]["minVariantPrice"].update(amount=True), "priceRangeV2.minVariantPrice.amount"),
    (lambda r: r.update(onlineStoreUrl="javascript:alert(1)"), "url"),
    (lambda r: r.update(onlineStoreUrl="ftp://x.example/a"), "url"),
    (lambda r: r["variants"][0].update(price="-3"), "variants.price"),
    (lambda r: r.update(updatedAt="yesterday"), "source_updated_at"),
    (lambda r: r.update(variants="many"), "variants"),
])
def test_data_quality_rules_reject_with_the_field(mutate, field):
    raw = load_fixture("shopify", "product.json")
    mutate(raw)
    with pytest.raises(Rejected) as caught:
        norm(raw)
    assert caught.value.field == field


def test_not_a_dict_is_rejected():
    with pytest.raises(Rejected):
        norm(["not", "a", "product"])


def test_raw_hash_is_stable_under_key_and_variant_order():
    raw = load_fixture("shopify", "product.json")
    shuffled = {k: raw[k] for k in reversed(list(raw))}
    shuffled["variants"] = list(reversed(raw["variants"]))
    shuffled["variants"][0] = {k: shuffled["variants"][0][k] for k in reversed(list(shuffled["variants"][0]))}
    assert norm(shuffled).raw_hash == norm(raw).raw_hash


def test_raw_hash_of_a_recorded_product_never_changes():
    """A changed hash would write every product of every dataset again: pinned to the value the
    first release computed (any change to it must come with a NORMALIZER_VERSION bump)."""
    raw = load_fixture("shopify", "product.json")
    assert norm(raw).raw_hash == "590423199990558337fded8f5f5c3a88f0b31977ee23126eb8e821b46fc71675"


def test_raw_hash_ignores_transport_fields_and_changes_with_content():
    raw = load_fixture("shopify", "product.json")
    with_transport = copy.deepcopy(raw)
    with_transport["__parentId"] = "gid://shopify/Collection/1"
    with_transport["variants"][0]["__parentId"] = raw["id"]
    assert norm(with_transport).raw_hash == norm(raw).raw_hash
    changed = copy.deepcopy(raw)
    changed["variants"][0]["price"] = "24.01"
    assert norm(changed).raw_hash != norm(raw).raw_hash


def test_every_product_round_trips_through_the_arrow_schema():
    products = [norm(load_fixture("shopify", n)) for n in ("product.json", "draft_free_no_media.json")]
    table = pa.Table.from_pylist([p.model_dump() for p in products], schema=SCHEMA)
    back = table.to_pylist()
    assert back[0]["price"] == Decimal("19.0000") and back[1]["price"] == Decimal("0")
    assert back[0]["variants"][1]["sku"] == "MUG-S"
    assert table.schema.names == list(SCHEMA.names)


def test_a_plain_record_is_hashed_by_orjson_to_the_same_pinned_value(monkeypatch):
    """The fast writer, not the json.dumps fallback, hashes an ordinary product, and gets the
    first release's value."""
    from normalize import dedup

    monkeypatch.setattr(dedup, "canonical_json", lambda *a: pytest.fail("fell back to json.dumps"))
    raw = load_fixture("shopify", "product.json")
    assert norm(raw).raw_hash == "590423199990558337fded8f5f5c3a88f0b31977ee23126eb8e821b46fc71675"

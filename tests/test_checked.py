"""The Shopify normalizer's fast path (normalize/checked.py) against the model's path.

Every record, plain or not, must come out of `to_product` exactly as the model alone makes it:
the same field values down to each Decimal's exponent and each time's zone, the same fields
recorded as set, or the same rejection with the same reason and field. And the fast path must
actually take the plain records (else the first property would hold with no fast path at all).
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from normalize import Rejected
from normalize import shopify
from normalize.dedup import raw_hash
from sandbox.catalog import CatalogSpec, make_catalog
from tests.conftest import load_fixture
from tests.test_properties import garbage, near_valid

CHECK = settings(max_examples=400, derandomize=True, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FETCHED = datetime(2026, 11, 27, tzinfo=timezone.utc)
RUN = "20261127T000000Z-abcdef"
SHOPIFY = load_fixture("shopify", "product.json")

PRICE_EDGES = ["0", "0.00", "-0", "-0.00", "19.99", " 19.99 ", "1.5", "1.00001", "1.23450", "1E+2", "1e3", "1_000",
               "NaN", "-1", "Infinity", "99999999999999.9999", "100000000000000", "", "abc", "١٢", "12.", ".5",
               None, 19, 19.5, 1e-7, True]
TIME_EDGES = ["2025-11-28T01:26:23Z", "2025-11-28T01:26:23.5Z", "2025-11-28T01:26:23.123456Z",
              "2025-11-28T01:26:23.1234567Z", "2025-11-28T01:26:23+05:30", "2025-11-28T01:26:23-00:00",
              "2025-11-28T01:26:23+00:60", "2025-11-28T01:26:23+23:59", "2025-11-28T01:26:23+24:00",
              "2025-02-30T00:00:00Z", "2025-11-28T24:00:00Z", "2025-11-28T23:59:60Z", "2025-11-28T23:60:00Z",
              "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2025-11-28", "2025-11-28T01:26:23",
              "1700000000", "2025-11-28 01:26:23Z", "2025-11-28t01:26:23z", "2025-11-28T01:26Z", None, 1700000000]
TEXT_EDGES = ["", " ", "Mug", " Mug", "Mug ", "Mug\u00a0", "\u3000Mug", "M\u200bug", "Caf\u0065\u0301", "a\ud800", "\x00",
              "a  b", "a\nb", "😀", "\x1c", "\x85x", None, 0, 1, True, 1.5, ["a"], {"a": 1}]
URL_EDGES = ["https://x.example/p", "HTTP://X", "Https://x", "ftp://x", "javascript:alert(1)", " https://x"]
CURRENCY_EDGES = ["USD", "usd", "US", "USDX", "ÜSD", "U$D", "€€€", "ＵＳＤ"]
COUNT_EDGES = [None, 0, -1, 2**63 - 1, 2**63, 2**64, 2**70, 3.0, 2.5, True, False, "3"]
FLAG_EDGES = [None, True, False, 0, 1, "true", 1.0]
EDGES = {"price": PRICE_EDGES, "time": TIME_EDGES, "text": TEXT_EDGES, "url": TEXT_EDGES + URL_EDGES,
         "currency": TEXT_EDGES + CURRENCY_EDGES, "count": COUNT_EDGES, "flag": FLAG_EDGES}
# Each field the normalizer reads, and the kind of value it holds.
FIELDS = {("id",): "text", ("title",): "text", ("description",): "text", ("vendor",): "text",
          ("productType",): "text", ("status",): "text", ("createdAt",): "time", ("updatedAt",): "time",
          ("onlineStoreUrl",): "url", ("totalInventory",): "count",
          ("priceRangeV2", "minVariantPrice", "amount"): "price",
          ("priceRangeV2", "minVariantPrice", "currencyCode"): "currency", ("featuredMedia", "image", "url"): "url",
          **{("variants", i, key): kind for i in (0, 1) for key, kind in {
              "id": "text", "sku": "text", "barcode": "text", "title": "text", "price": "price",
              "compareAtPrice": "price", "inventoryQuantity": "count", "availableForSale": "flag"}.items()}}

prices = st.one_of(st.sampled_from(PRICE_EDGES),
    st.decimals(allow_nan=False, allow_infinity=False, places=5, min_value=0, max_value=10**15).map(str),
    st.integers(-5, 10**15), st.floats(allow_nan=True), st.booleans())
times = st.one_of(st.none(), st.sampled_from([
    "2025-11-28T01:26:23Z", "2025-11-28T01:26:23.5Z", "2025-11-28T01:26:23.123456Z", "2025-11-28T01:26:23.1234567Z",
    "2025-11-28T01:26:23+05:30", "2025-11-28T01:26:23-00:00", "2025-11-28T01:26:23+00:60", "2025-11-28T01:26:23+23:59",
    "2025-02-30T00:00:00Z", "2025-11-28T24:00:00Z", "2025-11-28T23:59:60Z", "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00", "2025-11-28", "2025-11-28T01:26:23", "1700000000", "2025-11-28 01:26:23Z"]),
    st.from_regex(r"\A\d{4}-[01]\d-[0-3]\dT[0-2]\d:[0-5]\d:[0-6]\d(\.\d{1,7})?(Z|[+-][0-2]\d:[0-6]\d)\Z"),
    st.integers(0, 2**40), st.floats())
texts = st.one_of(st.none(), st.sampled_from(["", " ", "Mug", " Mug", "Mug ", "Mug\u00a0", "\u3000Mug", "M\u200bug",
                                              "Caf\u0065\u0301", "a\ud800", "\x00", "a  b", "a\nb", "😀", "\x1c"]),
                  st.text(max_size=12), st.integers(), st.booleans())
urls = st.one_of(texts, st.sampled_from(["https://x.example/p", "HTTP://X", "ftp://x", "javascript:alert(1)"]))
currencies = st.one_of(st.none(), st.sampled_from(["USD", "usd", "US", "USDX", "ÜSD", "U$D", "€€€"]), texts)
counts = st.one_of(st.none(), st.integers(-2**70, 2**70), st.sampled_from([3.0, 2.5, True, "3", 2**63, 2**64]))
flags = st.one_of(st.none(), st.booleans(), st.sampled_from([0, 1, "true", 1.0]))


# Awkward values for each field the normalizer reads; a record gets one or two of them.
AWKWARD = {
    ("id",): texts, ("title",): texts, ("description",): texts, ("vendor",): texts, ("productType",): texts,
    ("status",): st.one_of(st.sampled_from(["ACTIVE", "DRAFT", "active"]), texts),
    ("tags",): st.one_of(st.none(), st.lists(texts, max_size=3), st.just("a,b")),
    ("createdAt",): times, ("updatedAt",): times, ("onlineStoreUrl",): urls, ("totalInventory",): counts,
    ("priceRangeV2", "minVariantPrice", "amount"): prices,
    ("priceRangeV2", "minVariantPrice", "currencyCode"): currencies,
    ("featuredMedia",): st.one_of(st.none(), st.just({}), st.just({"image": None})),
    ("featuredMedia", "image", "url"): urls,
    ("variants",): st.one_of(st.none(), st.just("x"), st.just([]), st.just([None]), st.just([{}])),
    **{("variants", i, key): values for i in (0, 1) for key, values in {
        "id": texts, "sku": texts, "barcode": texts, "title": texts, "price": prices, "compareAtPrice": prices,
        "inventoryQuantity": counts, "availableForSale": flags}.items()},
}


@st.composite
def shopify_records(draw):
    """The fixture (a plain record: the fast path takes it) with one or two fields made awkward."""
    record = copy.deepcopy(SHOPIFY)
    for path in draw(st.lists(st.sampled_from(sorted(AWKWARD, key=str)), min_size=1, max_size=2, unique=True)):
        parent = record
        try:
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = draw(AWKWARD[path])
        except (KeyError, IndexError, TypeError):  # an earlier change took the parent away
            pass
    return record


def outcome(path, raw, account="shop.myshopify.com", fetched_at=FETCHED, run_id=RUN):
    try:
        return path(raw, account, fetched_at, run_id)
    except Rejected as exc:
        return ("rejected", exc.reason, exc.field)
    except Exception as exc:  # noqa: BLE001 - a normalizer error must be the same error on both paths
        return ("error", type(exc).__name__)


def both(raw, account, fetched_at, run_id):
    return shopify.to_product(raw, account=account, fetched_at=fetched_at, run_id=run_id)


def model_only(raw, account, fetched_at, run_id):
    if not isinstance(raw, dict):
        raise Rejected("record is not a JSON object")
    return shopify._model_product(raw, account, fetched_at, run_id, None)


def exact(value):
    """A value with what == overlooks made visible: a Decimal's exponent, a time's zone, a model's set fields."""
    if isinstance(value, Decimal):
        return ("decimal", str(value))
    if isinstance(value, datetime):
        return ("time", type(value).__name__, value.isoformat(), repr(value.tzinfo))
    if isinstance(value, list):
        return [exact(v) for v in value]
    if hasattr(value, "__pydantic_fields_set__"):
        return (type(value).__name__, type(value.__pydantic_fields_set__).__name__, sorted(value.__pydantic_fields_set__),
                [(k, exact(v)) for k, v in value.__dict__.items()])
    return (type(value).__name__, value)


def assert_same(raw, **context):
    assert exact(outcome(both, copy.deepcopy(raw), **context)) == exact(outcome(model_only, raw, **context))


@CHECK
@given(shopify_records())
def test_the_fast_path_gives_the_models_answer_on_shopify_shaped_records(raw):
    assert_same(raw)


@CHECK
@given(st.one_of(near_valid(SHOPIFY), garbage))
def test_the_fast_path_gives_the_models_answer_on_near_valid_records_and_garbage(raw):
    assert_same(raw)


class Moment(datetime):
    """Equal to, and hashed as, the datetime of the same instant."""


class Name(str):
    """Equal to, and hashed as, the same str."""


@pytest.mark.parametrize("context", [
    {"account": " shop"}, {"account": ""}, {"account": "sh\ud800p"}, {"account": "ßhop"}, {"run_id": "run\n"},
    {"fetched_at": datetime(2026, 11, 27)}, {"fetched_at": datetime(2026, 11, 27, tzinfo=timezone(timedelta(hours=2)))},
    {"fetched_at": "2026-11-27T00:00:00Z"}, {"fetched_at": Moment(2026, 11, 27, tzinfo=timezone.utc)},
    {"account": Name("shop.myshopify.com")},
])
def test_the_run_context_is_held_to_the_models_rules(context):
    assert_same(copy.deepcopy(SHOPIFY))  # the plain context first: a cache must not answer for the others
    assert_same(copy.deepcopy(SHOPIFY), **context)


def test_the_cheapest_variant_is_the_models_when_prices_differ_past_four_decimals():
    raw = copy.deepcopy(SHOPIFY)
    raw["variants"][0].update(price="1.00002", compareAtPrice="5.00")
    raw["variants"][1].update(price="1.00001", compareAtPrice="7.00")
    assert_same(raw)
    assert shopify.to_product(raw, account="a", fetched_at=FETCHED, run_id=RUN).compare_at_price == Decimal("7.00")


def test_every_edge_value_of_every_field_gives_the_models_answer():
    """Each field of the (plain) fixture replaced by each awkward value of its kind, one at a time."""
    cases = 0
    for path, kind in FIELDS.items():
        for value in EDGES[kind]:
            raw = copy.deepcopy(SHOPIFY)
            parent = raw
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = value
            assert_same(raw)
            cases += 1
    assert cases > 500


# Changes to a record's shape, each of which raw_hash's walk must see (a transport key dropped, a
# list of objects sorted, a float written as json.dumps writes it) or the fast path must refuse.
SHAPES = [
    ("__typename", "Product"), ("cursor", "abc"), ("unknownField", 1), ("unknownField", 1e-07), ("handle", 1e-07),
    ("handle", float("nan")), ("status", 2.5e-05), ("status", 1e16), ("totalInventory", 1e-07),
    ("featuredMedia", {}), ("featuredMedia", {"image": None}), ("featuredMedia", {"image": {"url": None, "alt": "x"}}),
    ("featuredMedia", {"__typename": "MediaImage", "image": {"url": "https://x.example/i.jpg"}}),
    ("featuredMedia", float("inf")), ("priceRangeV2", None), ("priceRangeV2", {}), ("priceRangeV2", 1e-07),
    ("priceRangeV2", {"minVariantPrice": {"amount": "1.00", "currencyCode": "USD", "__typename": "MoneyV2"}}),
    ("priceRangeV2", {"minVariantPrice": {"amount": 1e-07, "currencyCode": "USD"}}),
    ("priceRangeV2", {"minVariantPrice": None, "maxVariantPrice": {"amount": "2.00", "currencyCode": "USD"}}),
    ("priceRangeV2", {"minVariantPrice": {"amount": "1.00"}, "maxVariantPrice": {"amount": 2**70}}),
    ("tags", ["b", "a"]), ("tags", [{"id": "2"}, {"id": "1"}]), ("tags", []),
]
VARIANT_SHAPES = [
    ("__typename", "ProductVariant"), ("__parentId", "gid://shopify/Product/8001"), ("cursor", "x"), ("weight", 1e-07),
    ("id", None), ("id", "gid://shopify/ProductVariant/9000"), ("id", "gid://shopify/ProductVariant/99999"),
]


def test_every_shape_change_gives_the_models_answer_and_hash():
    cases = 0
    for key, value in SHAPES:
        raw = copy.deepcopy(SHOPIFY)
        raw[key] = value
        assert_same(raw)
        cases += 1
    for index in (0, 1):
        for key, value in VARIANT_SHAPES:
            raw = copy.deepcopy(SHOPIFY)
            raw["variants"][index][key] = value
            assert_same(raw)
            del raw["variants"][index]["id"]
            assert_same(raw)
            cases += 2
    for order in ([0, 1], [1, 0], [1, 0, 1], []):  # the fixture's variant ids are out of order: 9002, 9001
        raw = copy.deepcopy(SHOPIFY)
        raw["variants"] = [raw["variants"][i] for i in order]
        assert_same(raw)
        cases += 1
    assert cases == len(SHAPES) + 4 * len(VARIANT_SHAPES) + 4


def as_queried(product: dict) -> dict:
    """A sandbox product as the connector's query reads it: the sandbox also keeps descriptionHtml
    and the media's __typename (for `... on MediaImage`), which the query does not ask for."""
    record = {k: v for k, v in product.items() if k != "descriptionHtml"}
    if record.get("featuredMedia"):
        record["featuredMedia"] = {k: v for k, v in record["featuredMedia"].items() if k != "__typename"}
    return record


def test_plain_records_take_the_fast_path(monkeypatch):
    """The fixture and a rich sandbox catalog are built by the fast path, equal to the model's, and
    hashed without raw_hash's walk (the fixture's variants are out of id order: it takes the walk)."""
    catalog = make_catalog(CatalogSpec(size=300, rich=True))
    records = [SHOPIFY, *map(as_queried, catalog)]
    walked = []
    monkeypatch.setattr(shopify, "plain_raw_hash", lambda *a: walked.append(a[2]["id"]) or raw_hash(*a))
    for raw in records:
        fast = shopify._plain_product(raw, "shop.myshopify.com", FETCHED, RUN)  # raises if not plain
        assert exact(fast) == exact(model_only(raw, "shop.myshopify.com", FETCHED, RUN))
    assert walked == [SHOPIFY["id"]]


def test_a_fast_paths_product_can_be_copied_with_changes_as_the_models_can():
    product = shopify.to_product(copy.deepcopy(SHOPIFY), account="a", fetched_at=FETCHED, run_id=RUN)
    changed = product.model_copy(update={"title": "X"})
    assert changed.title == "X" and product.title == "Trail Mug" and "title" in changed.model_fields_set
    assert product.variants[0].model_copy(update={"sku": "Y"}).sku == "Y"

"""Property tests for every normalizer, on garbage and on near-valid records.

Each normalizer returns a Product or raises Rejected, never anything else; accepted records obey
the data-quality rules; raw_hash ignores key order; every accepted record round-trips through
the Parquet schema. Derandomized, so CI runs the same examples every time.
"""

from __future__ import annotations

import copy
import io
import math
import unicodedata
from datetime import datetime, timezone
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from normalize import Rejected
from normalize import amazon as amazon_norm
from normalize import ebay as ebay_norm
from normalize import shopify as shopify_norm
from normalize.models import SCHEMA
from tests.conftest import load_fixture

EXAMPLES = 300
CHECK = settings(max_examples=EXAMPLES, derandomize=True, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FETCHED = datetime(2026, 11, 27, tzinfo=timezone.utc)

SHOPIFY = load_fixture("shopify", "product.json")
AMAZON = load_fixture("amazon", "search_items.json")["searchResult"]["items"][0]
EBAY = load_fixture("ebay", "search.json")["itemSummaries"][0]
NORMALIZERS = {"shopify": (shopify_norm, SHOPIFY), "amazon": (amazon_norm, AMAZON), "ebay": (ebay_norm, EBAY)}

nasty_text = st.one_of(
    st.text(max_size=50),
    st.sampled_from(["", " ", "\u200b", "\u202eevil\u202c", "שלום עולם", "e\u0301", "\x00\x07", "\ud800",
                     "😀👍🏽", "1,299.00", "NaN", "Infinity", "-0", "1e400", "javascript:alert(1)"]),
    st.just("x" * 100_000),
)
nasty_value = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**20, max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True), nasty_text,
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
garbage = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
                       lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=6),
                       max_leaves=50)


def _paths(value, prefix=()):
    """Every key path in a JSON tree (dict keys and list positions)."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


@st.composite
def near_valid(draw, base):
    """The fixture with a few of its fields replaced by nasty values or dropped."""
    record = copy.deepcopy(base)
    paths = [p for p in _paths(record) if p]
    for path in draw(st.lists(st.sampled_from(paths), min_size=1, max_size=4)):
        parent = record
        try:
            for key in path[:-1]:
                parent = parent[key]
            if draw(st.booleans()) and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(nasty_value)
        except (KeyError, IndexError, TypeError):
            continue
    return record


def normalize(module, raw):
    return module.to_product(raw, account="acct", fetched_at=FETCHED, run_id="20261127T000000Z-abcdef")


def check_accepted(product) -> None:
    assert product.source_id.strip() and product.title
    assert not any(unicodedata.category(ch) in ("Cc", "Cf") for ch in product.title)
    assert unicodedata.is_normalized("NFC", product.title) and len(product.title) <= 1000
    for price in [product.price, product.compare_at_price, *[v.price for v in product.variants or []]]:
        assert price is None or (isinstance(price, Decimal) and price.is_finite() and price >= 0)
    for url in (product.url, product.image_url):
        assert url is None or url.lower().startswith(("http://", "https://"))
    percent = product.seller_feedback_percent
    assert percent is None or (math.isfinite(percent) and 0 <= percent <= 100)


def round_trips(product) -> None:
    table = pa.Table.from_pylist([product.model_dump()], schema=SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    assert pq.read_table(io.BytesIO(buffer.getvalue())).to_pylist() == table.to_pylist()


def reorder(value):
    """The same JSON with every object's keys in reverse order."""
    if isinstance(value, dict):
        return {k: reorder(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reorder(v) for v in value]
    return value


@pytest.mark.parametrize("name", NORMALIZERS)
def test_near_valid_records_are_accepted_clean_or_rejected_with_a_reason(name):
    module, base = NORMALIZERS[name]
    seen = {"accepted": 0, "rejected": 0}

    @CHECK
    @given(near_valid(base))
    def check(raw):
        try:
            product = normalize(module, raw)
        except Rejected as exc:
            assert exc.reason
            seen["rejected"] += 1
            return
        seen["accepted"] += 1
        check_accepted(product)
        round_trips(product)
        assert normalize(module, reorder(raw)).raw_hash == product.raw_hash

    check()
    print(f"{name}: {EXAMPLES} near-valid examples, {seen}")
    assert seen["accepted"] and seen["rejected"]  # both paths were exercised


@pytest.mark.parametrize("name", NORMALIZERS)
def test_garbage_never_raises_anything_but_rejected(name):
    module, _ = NORMALIZERS[name]

    @CHECK
    @given(garbage)
    def check(raw):
        try:
            product = normalize(module, raw)
        except Rejected:
            return
        check_accepted(product)

    check()


def plain_canonical(value, drop):
    """The first release's canonical form, written the plain way: the fast one must agree."""
    if isinstance(value, dict):
        return {k: plain_canonical(v, drop) for k, v in value.items() if k not in drop}
    if isinstance(value, list):
        items = [plain_canonical(v, drop) for v in value]
        if items and all(isinstance(v, dict) and "id" in v for v in items):
            items.sort(key=lambda v: str(v["id"]))
        return items
    return value


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["id", "title", "__parentId", "cursor", "pageInfo", "__typename", "price", "x"]),
        children, max_size=5),
    max_leaves=30)


@CHECK
@given(json_values)
def test_the_fast_canonical_form_equals_the_plain_one(value):
    from normalize.dedup import TRANSPORT_KEYS, canonical
    assert canonical(value) == plain_canonical(value, TRANSPORT_KEYS)

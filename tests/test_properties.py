"""Property tests for every normalizer, on garbage and on near-valid records.

Each normalizer returns a Product or raises Rejected, never anything else; accepted records obey
the data-quality rules; raw_hash ignores key order; every accepted record round-trips through
the Parquet schema. Derandomized, so CI runs the same examples every time.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
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
from storage.schemas import SCHEMA
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


# -- raw_hash and JSON decoding: the fast writers and readers give the first release's answers --------

def first_release_raw_hash(source: str, version: int, record, drop=()) -> str:
    """raw_hash as the first release computed it (json.dumps of the plain canonical form): every
    stored hash rests on this, so the fast one must agree with it on everything."""
    from normalize.dedup import TRANSPORT_KEYS
    text = json.dumps(plain_canonical(record, TRANSPORT_KEYS | frozenset(drop)), sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(f"{source}/{version}\n{text}".encode("utf-8", "surrogatepass")).hexdigest()


def outcome(fn, *args, **kwargs):
    """The function's answer, or the type of the exception it raised."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - compared, not handled
        return type(exc)


any_text = st.text(st.characters(exclude_categories=()), max_size=12)  # lone surrogates included
awkward_floats = st.sampled_from([1e-07, 2.5e-05, 1e-5, 1e16, 1e15, 1e22, 123456789.123, -0.0, 5e-324,
                                  1.7976931348623157e308, float("nan"), float("inf"), -float("inf"), 0.1])
big_ints = st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -2**63, -2**63 - 1, 10**30, -10**30])
hash_leaves = st.one_of(st.none(), st.booleans(), st.integers(), big_ints, st.floats(), awkward_floats, any_text,
                        st.sampled_from(["", "é", "e\u0301", "\ud800", "\udfff", "日本", "😀", "\x00\x1f\x7f\u2028",
                                         '"\\', "gid://shopify/Product/1"]))
hash_keys = st.one_of(st.sampled_from(["id", "title", "__parentId", "cursor", "pageInfo", "__typename", "price",
                                       "é", "z", "Z", "\uffff", "😀", "\ud800", ""]), any_text)
hash_values = st.recursive(
    hash_leaves,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(hash_keys, children, max_size=6)
    | st.lists(st.fixed_dictionaries({"id": st.one_of(any_text, st.integers(), awkward_floats)},
                                     optional={"x": children, "__parentId": any_text}), max_size=5),
    max_leaves=40)


@CHECK
@given(hash_values, st.sampled_from([(), ("price",), ("id",)]))
def test_raw_hash_equals_the_first_releases_json_dumps_hash_on_any_value(record, drop):
    from normalize.dedup import raw_hash
    assert outcome(raw_hash, "shopify", 1, record, drop) == outcome(first_release_raw_hash, "shopify", 1, record, drop)


@CHECK
@given(st.dictionaries(st.one_of(st.integers(), any_text, st.none()), hash_leaves, max_size=4))
def test_raw_hash_of_records_with_non_string_keys_equals_the_first_releases(record):
    from normalize.dedup import raw_hash
    assert outcome(raw_hash, "ebay", 1, record) == outcome(first_release_raw_hash, "ebay", 1, record)


@pytest.mark.parametrize("name", NORMALIZERS)
def test_raw_hash_equals_the_first_releases_on_the_normalizers_strategies(name):
    from normalize.dedup import raw_hash
    module, base = NORMALIZERS[name]
    drop = getattr(module, "VOLATILE_FIELDS", ())

    @CHECK
    @given(st.one_of(near_valid(base), garbage))
    def check(raw):
        assert (outcome(raw_hash, module.SOURCE, module.NORMALIZER_VERSION, raw, drop)
                == outcome(first_release_raw_hash, module.SOURCE, module.NORMALIZER_VERSION, raw, drop))

    check()


def test_raw_hash_agrees_on_the_values_orjson_writes_differently():
    from normalize.dedup import raw_hash
    for value in (1e-07, 2.5e-05, float("nan"), float("inf"), 2**64, -2**63 - 1, 10**30, "\ud800", {"a\ud800": 1},
                  {1: "x"}, {"x": [{"id": 2}, {"id": 10}]}, {"d": Decimal("1.10")}, {"t": FETCHED}, ("a", 1)):
        record = {"id": "gid://shopify/Product/1", "value": value}
        assert raw_hash("shopify", 1, record) == first_release_raw_hash("shopify", 1, record), value


def typed(value):
    """A value with every scalar's type spelled out (1 == 1.0 == True in Python; not here)."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    return type(value).__name__, repr(value)


json_documents = st.one_of(
    hash_values.map(lambda v: outcome(json.dumps, v, ensure_ascii=False)),
    hash_values.map(lambda v: outcome(json.dumps, v)),
    st.sampled_from(['123456789012345678901234567890', '-9223372036854775809', '18446744073709551616', '-0',
                     '[1e400]', 'NaN', '{"a": -Infinity}', '"\\ud800"', '"\\udc00\\ud800x"', '{"a":1,"a":2}',
                     '1.0e-7', '[0.1, 1E5, 2.5e-05]', '"\\u0000"', ' {"k" : [ ] } ', '{"n": 12345678901234567890123}',
                     '{"barcode": "12345678901234567890123"}', '\ufeff{}', '', '[', '{"a":1}x', "'a'"]),
).filter(lambda d: isinstance(d, str))


@CHECK
@given(json_documents, st.sampled_from(["utf-8", "utf-16", "str"]))
def test_the_fast_json_reader_gives_json_loads_answer(document, encoding):
    from connectors.jsondecode import loads
    data = document if encoding == "str" else outcome(document.encode, encoding, "surrogatepass")
    if isinstance(data, type):
        return
    assert typed_outcome(loads, data) == typed_outcome(json.loads, data)


def typed_outcome(fn, data):
    result = outcome(fn, data)
    if isinstance(result, type) and issubclass(result, Exception):
        return "error", issubclass(result, ValueError)
    return typed(result)


def first_release_clean(value: str, limit: int, multiline: bool) -> str:
    """Text cleaning as the first release did it, every time: the shortcut must agree."""
    def one_line(text):
        kept = "".join(" " if ch.isspace() else ch for ch in text
                       if ch.isspace() or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn"))
        return " ".join(kept.split())

    value = unicodedata.normalize("NFC", value)
    lines = value.splitlines() if multiline else [value]
    return "\n".join(line for line in map(one_line, lines) if line)[:limit]


@CHECK
@given(st.one_of(any_text, nasty_text, st.text(st.sampled_from(" \t\n\r\x0b\x0c\x1c\x85\xa0\u2028\u3000ab\u0301é"))),
       st.booleans(), st.sampled_from([3, 1000]))
def test_text_cleaning_shortcut_equals_the_full_cleaning(text, multiline, limit):
    from normalize.models import _clean_text
    assert _clean_text(limit, multiline=multiline)(text) == first_release_clean(text, limit, multiline)



@pytest.mark.parametrize("name", NORMALIZERS)
def test_arrow_rows_are_the_model_dump(name):
    """The Parquet writer reads fields straight from the instances: the very values model_dump gives."""
    from normalize.models import arrow_rows
    module, base = NORMALIZERS[name]

    @CHECK
    @given(near_valid(base))
    def check(raw):
        try:
            product = normalize(module, raw)
        except Rejected:
            return
        assert arrow_rows([product]) == [product.model_dump()]

    check()


@pytest.mark.parametrize("name", NORMALIZERS)
def test_a_lone_surrogate_in_any_text_is_rejected_or_written(name):
    """Each text of the fixture in turn made 'x\\ud800' (what json.loads gives for a broken escape):
    the record is rejected naming a field, or it is written. Arrow cannot encode a lone surrogate,
    and one such record let through failed its whole batch's write."""
    module, base = NORMALIZERS[name]
    texts = [path for path in _paths(base) if path and isinstance(_get(base, path), str)]
    rejected = 0
    for path in texts:
        raw = copy.deepcopy(base)
        _get(raw, path[:-1])[path[-1]] = "x\ud800"
        try:
            product = normalize(module, raw)
        except Rejected as exc:
            assert exc.field, path
            rejected += 1
            continue
        round_trips(product)
    assert rejected, "no text reached a written field"


def _get(value, path):
    for key in path:
        value = value[key]
    return value

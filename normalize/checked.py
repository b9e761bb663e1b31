"""Models built from values a normalizer has already held to the models' rules.

Validating a Product with pydantic costs about 27 us of CPU for a rich Shopify product (one
Product and two or three Variant instances, Python validators for text, money and times); most
records are plain (strings where strings belong, decimal prices, ISO times ending in Z). A
normalizer's fast path checks such a record with the few tests below, each one at least as strict
as the model's rule it stands for, and builds the instance without running the validators again
(`trusted`). Anything else raises `Unusual`, and the normalizer hands the record to the model,
which decides: the same values are accepted, and a rejected record gets the model's own message.
`tests/test_checked.py` holds the two paths to the same instances. (Prices are cached with the
default decimal context, which nothing in the pipeline changes; a record nested past Python's
recursion limit fails with RecursionError on either path, as a normalizer error.)
"""

from __future__ import annotations

import functools
import re
from datetime import datetime, timezone
from decimal import Decimal

from normalize.models import MONEY_LIMIT, MONEY_PLACES, http_url

_set = object.__setattr__


class Unusual(Exception):
    """A value the fast path does not decide: the model validates the record."""


def trusted(model, fields: dict, fields_set: set[str]):
    """An instance of `model` holding `fields` (every field, in the model's order) as they are.

    What pydantic's `model_construct` does, without its per-field alias and default lookups:
    the caller has checked every value. `fields_set` is the names the normalizer passes (what
    validation records), one set shared by the instances: pydantic copies it before it adds to
    it (model_copy with an update), and changes a frozen model's no other way.
    """
    instance = model.__new__(model)
    _set(instance, "__dict__", fields)
    _set(instance, "__pydantic_fields_set__", fields_set)
    _set(instance, "__pydantic_extra__", None)
    _set(instance, "__pydantic_private__", None)
    return instance


OPTIONAL_STR = frozenset({str, type(None)})
OPTIONAL_INT = frozenset({int, type(None)})  # not bool, not 3.0: the model decides those
OPTIONAL_BOOL = frozenset({bool, type(None)})


def text(value) -> str:
    """A required text the model strips (account, source_id): kept only when stripping changes
    nothing (str.isspace covers every character pydantic strips) and it is not empty."""
    if type(value) is not str or not value or value[0].isspace() or value[-1].isspace():
        raise Unusual
    if not value.isascii():
        value.encode()  # a lone surrogate raises: the model rejects it
    return value


def context(account, run_id, fetched_at) -> None:
    """The values a run passes with every record: their types here (a subclass is equal to and
    hashes as its base), their text rules once a run (cached)."""
    if type(account) is not str or type(run_id) is not str or type(fetched_at) is not datetime:
        raise Unusual
    _context_texts(account, run_id)


@functools.lru_cache(maxsize=16)
def _context_texts(account: str, run_id: str) -> None:
    text(account), text(run_id)


def string(value) -> str:
    if type(value) is not str:
        raise Unusual
    return value


def optional_string(value):
    if value is not None and type(value) is not str:
        raise Unusual
    return value


def url(value):
    if value is not None and type(value) is not str:
        raise Unusual
    return http_url(value)  # the model's own rule (its ValueError sends the record to the model)


def currency(value):
    if value is not None and not (type(value) is str and len(value) == 3 and value.isascii()
                                  and value.isalpha() and value.isupper()):
        raise Unusual
    return value


@functools.lru_cache(maxsize=4096)  # a catalog's prices repeat: most are read from here
def price(value):
    """A decimal string as parse_price reads it and Money keeps it: finite, not negative, below
    the limit, and with at most four decimals (so quantizing changes no value and the cheapest
    variant is the one the model's path picks)."""
    if value is None:
        return None
    if type(value) is not str:
        raise Unusual  # JSON numbers: parse_price and the model decide
    number = Decimal(value.strip())  # InvalidOperation for anything else
    if not (number.is_finite() and 0 <= number < MONEY_LIMIT):
        raise Unusual
    quantized = number.quantize(MONEY_PLACES)
    if quantized != number:
        raise Unusual
    return quantized


def strings(value):
    """A list of strings, copied as validation would."""
    if value is None:
        return None
    if type(value) is not list:
        raise Unusual
    for item in value:
        if type(item) is not str:
            raise Unusual
    return list(value)


# ISO 8601 as Shopify writes it: seconds, up to six decimals, Z or an offset in hours and minutes.
_ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,6})?"
                       r"(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)").fullmatch


def utc_time(value):
    """An ISO time string as the model's UtcTime reads it: a datetime in UTC."""
    if value is None:
        return None
    if type(value) is not str or not _ISO_TIME(value):
        raise Unusual
    return datetime.fromisoformat(value).astimezone(timezone.utc)


def unusual():
    """Raise Unusual (for use inside expressions)."""
    raise Unusual

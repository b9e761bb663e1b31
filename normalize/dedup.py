"""raw_hash: the content fingerprint a record is deduplicated on.

SHA-256 of the canonical JSON of the provider record as the normalizer reads it (keys sorted,
lists of objects in id order, transport-only fields dropped), prefixed with the provider and its
normalizer version, so a corrected normalizer rewrites each product once.

The canonical JSON is written by orjson when that gives the very bytes `json.dumps` gives (the
first release's writer, and so every stored hash): a record of dicts, lists, strings, ints, bools,
None and floats that orjson spells as Python does. Anything else (1e-07, which orjson writes 1e-7;
NaN; ints beyond 64 bits; lone surrogates; non-string keys; other types) takes json.dumps, as
before. A property test holds the two writers to the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import orjson

# Fields that describe how a record travelled, not what it says.
TRANSPORT_KEYS = frozenset({"__parentId", "cursor", "pageInfo", "__typename"})


def canonical(value, drop: frozenset[str] = TRANSPORT_KEYS):
    """The record with transport fields dropped and lists of objects sorted by id.

    Copy on write: a dict with nothing to drop and no nested container is returned as it is (most
    of a catalog: every variant), so hashing builds as little as it must.
    """
    if type(value) is dict:
        for v in value.values():
            if type(v) is dict or type(v) is list:
                break
        else:
            if drop.isdisjoint(value):
                return value
        return {k: (canonical(v, drop) if type(v) is dict or type(v) is list else v)
                for k, v in value.items() if k not in drop}
    if type(value) is list:
        items = [canonical(v, drop) if type(v) is dict or type(v) is list else v for v in value]
        if items and all(type(v) is dict and "id" in v for v in items):
            items.sort(key=lambda v: str(v["id"]))
        return items
    return value


def raw_hash(source: str, normalizer_version: int, record, drop: Iterable[str] = ()) -> str:
    """Hex SHA-256 of `source`, the normalizer version and the canonical record."""
    dropped = TRANSPORT_KEYS | frozenset(drop) if drop else TRANSPORT_KEYS
    digest = plain_raw_hash(source, normalizer_version, record, dropped)
    if digest is None:
        body = canonical_json(record, dropped).encode("utf-8", "surrogatepass")
        digest = hashlib.sha256(hash_head(source, normalizer_version) + body).hexdigest()
    return digest


def hash_head(source: str, normalizer_version: int) -> bytes:
    """What every raw_hash of this source and normalizer version starts with."""
    return f"{source}/{normalizer_version}\n".encode("utf-8", "surrogatepass")


def plain_raw_hash(source: str, normalizer_version: int, record, drop: frozenset[str] = TRANSPORT_KEYS) -> str | None:
    """raw_hash of a plain record (one orjson writes as json.dumps does), else None.

    A plain record holds no lone surrogate, no integer outside -2**63 .. 2**64 - 1, no NaN and no infinity
    anywhere: a normalizer's fast path relies on that (normalize/checked.py).
    """
    try:
        body = orjson.dumps(_plain_canonical(record, drop), option=orjson.OPT_SORT_KEYS)
    except (_NotPlain, orjson.JSONEncodeError):  # orjson refuses ints over 64 bits, surrogates, odd keys
        return None
    return hashlib.sha256(hash_head(source, normalizer_version) + body).hexdigest()


def canonical_json(record, drop: frozenset[str] = TRANSPORT_KEYS) -> str:
    """The canonical JSON text as the first release wrote it (what the hashes rest on)."""
    # surrogatepass at the caller: a lone surrogate from the API must not crash hashing (the model rejects it)
    return json.dumps(canonical(record, drop), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def plain_record_hash(head: bytes, record) -> str:
    """raw_hash of a record its caller has proved to be in canonical form already (no transport
    key, every list of objects in id order, no float): orjson with sorted keys, no walk. orjson
    raises on what json.dumps would write otherwise (lone surrogates, integers outside -2**63 .. 2**64 - 1)."""
    return hashlib.sha256(head + orjson.dumps(record, option=orjson.OPT_SORT_KEYS)).hexdigest()


class _NotPlain(Exception):
    """A value orjson might not write as json.dumps does."""


def _plain_canonical(value, drop: frozenset[str]):
    """canonical(value, drop) for a record orjson writes exactly as json.dumps does, else _NotPlain.

    Copy on write all the way down: a record with nothing to drop and its lists of objects already
    in id order is returned as it is (orjson sorts the keys itself).
    """
    kind = type(value)
    if kind is dict:
        replaced = None
        for key, v in value.items():
            t = type(v)
            if t is str or t is int or v is None or t is bool:
                continue
            if t is dict or t is list:
                new = _plain_canonical(v, drop)
                if new is not v:
                    replaced = replaced or {}
                    replaced[key] = new
            elif t is not float or not _same_float(v):
                raise _NotPlain
        if replaced is None:
            return value if drop.isdisjoint(value) else {k: v for k, v in value.items() if k not in drop}
        return {k: replaced.get(k, v) for k, v in value.items() if k not in drop}
    if kind is list:
        items = None
        for index, v in enumerate(value):
            t = type(v)
            if t is dict or t is list:
                new = _plain_canonical(v, drop)
                if new is not v:
                    items = items or list(value)
                    items[index] = new
            elif not (t is str or t is int or v is None or t is bool or (t is float and _same_float(v))):
                raise _NotPlain
        items = value if items is None else items
        if items and all(type(v) is dict and "id" in v for v in items):
            keys = [str(v["id"]) for v in items]
            if keys != sorted(keys):  # a stable sort of keys already in order changes nothing
                items = sorted(items, key=lambda v: str(v["id"]))
        return items
    if kind is str or kind is int or value is None or kind is bool or (kind is float and _same_float(value)):
        return value
    raise _NotPlain


def _same_float(value: float) -> bool:
    # orjson writes 1e-7 and 0.000025 where Python writes 1e-07 and 2.5e-05, and null for NaN.
    return orjson.dumps(value) == float.__repr__(value).encode()

"""raw_hash: the content fingerprint a record is deduplicated on.

SHA-256 of the canonical JSON of the provider record as the normalizer reads it (keys sorted,
lists of objects in id order, transport-only fields dropped), prefixed with the provider and its
normalizer version, so a corrected normalizer rewrites each product once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

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
    dropped = TRANSPORT_KEYS | frozenset(drop)
    text = json.dumps(canonical(record, dropped), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, default=str)
    # surrogatepass: a lone surrogate from the API must not crash hashing (the model rejects it)
    return hashlib.sha256(f"{source}/{normalizer_version}\n{text}".encode("utf-8", "surrogatepass")).hexdigest()

"""JSON text -> Python values: orjson's speed, json.loads's answer.

Decoding a page of a rich catalog took about a third of the client's CPU with the standard
library. orjson (a well-kept Rust library, installed from wheels) decodes the same bytes three
times faster, and agrees with `json.loads` on every document except three kinds, which go to
`json.loads` so that every value, and so every raw_hash, stays what it was:

- integers beyond 64 bits: orjson reads them as floats (json as exact ints). Every such token has
  19 or more digits in a row, so a body with no run of 19 digits cannot hold one;
- NaN and Infinity literals, and numbers too large for a double: orjson refuses them;
- escaped lone surrogates (\\ud800 alone): orjson refuses them.
"""

from __future__ import annotations

import json

import orjson

_DIGITS = bytes.maketrans(bytes(range(256)), b"1" * 48 + b"0" * 10 + b"1" * 198)  # digits -> 0, the rest -> 1
_LONG_NUMBER = b"0" * 19  # -9223372036854775809 and 18446744073709551616 have 19 and 20 digits


def loads(data: bytes | str):
    """The value `json.loads(data)` returns; ValueError when it is not JSON."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if _LONG_NUMBER in raw.translate(_DIGITS):
        return json.loads(data)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(data)  # NaN, 1e400, a lone surrogate, UTF-16: json's answer (or its ValueError)

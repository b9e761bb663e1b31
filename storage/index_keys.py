"""The keys of a unit's state, as state files (storage/state.py) and buckets (storage/lake/index.py)
hold them: these bytes never change, or existing state would no longer answer.

  record key    a record's source_id: the first 8 bytes of its SHA-256, a signed big-endian integer
  latest hash   a raw_hash's first 16 hex digits, a signed 64-bit integer
  version key   12 bytes of the SHA-256 of "<source_id>\n<updated_at in UTC, isoformat()>"

The latest-hash index holds 64 bits of a record's key and of its latest raw_hash, as SQLite
integers (a rowid table: the fastest lookup SQLite has, 16 bytes a product). A key collision (odds
of 1 in 10^7 at a million products) could only make a version be written again, never dropped.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path

from storage.paths import parse_file_name

VERSION_BYTES = 12


def record_key(source_id: str) -> int:
    """The index key of one record (product, order) of the unit: its source_id, hashed to 64 bits."""
    return _KEY(hashlib.sha256(source_id.encode("utf-8", "surrogatepass")).digest())[0]


_KEY = struct.Struct(">q").unpack_from  # the first 8 bytes of a digest as a signed big-endian integer


def record_keys(records: Iterable[tuple[str, object]]) -> list[int]:
    """record_key of each (source_id, ...) pair, in one comprehension."""
    sha256, key_of = hashlib.sha256, _KEY
    return [key_of(sha256(i.encode("utf-8", "surrogatepass")).digest())[0] for i, *_ in records]


def latest_hash(raw_hash: str) -> int:
    """The 64 bits of a raw_hash the index compares."""
    return int.from_bytes(bytes.fromhex(raw_hash[:16]), "big", signed=True)


def version_key(source_id: str, updated_at: datetime) -> bytes:
    """A record's version: its id and the provider's last-changed time (a connector can skip work
    for a version already written, such as fetching the rest of a product's variants again):
    12 bytes of the SHA-256 of the id, a line break and the time in UTC as isoformat() writes it."""
    t = updated_at
    if t.tzinfo is timezone.utc and type(t) is datetime:
        # What isoformat() writes, from cached pieces at half its CPU: a run's times fall on a few
        # thousand days at most, and the day is the costly part to format.
        day = _DAYS.get(t.toordinal()) or _day(t)
        fraction = f".{t.microsecond:06d}" if t.microsecond else ""
        text = f"{source_id}\n{day}{_HOURS_MINUTES[t.hour * 60 + t.minute]}{_SECONDS[t.second]}{fraction}+00:00"
    else:
        text = f"{source_id}\n{t.astimezone(timezone.utc).isoformat()}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:VERSION_BYTES]


_DAYS: dict[int, str] = {}  # date ordinal -> "YYYY-MM-DD"
_HOURS_MINUTES = [f"T{h:02d}:{m:02d}:" for h in range(24) for m in range(60)]
_SECONDS = [f"{s:02d}" for s in range(60)]


def _day(t: datetime) -> str:
    if len(_DAYS) >= 100_000:  # bounded (about 8 MB): no catalog's times span 270 years
        _DAYS.clear()
    day = _DAYS[t.toordinal()] = f"{t.year:04d}-{t.month:02d}-{t.day:02d}"
    return day


def data_file_records(path: Path) -> tuple[list, list, list] | None:
    """(ids, raw_hashes, update times) of a data file of a record's own table (products: source_id,
    source_updated_at; orders: order_id, updated_at); None for a table of lines."""
    import pyarrow.parquet as pq  # recovery's rare path: a run that needs none reads no Parquet

    names = set(pq.read_schema(path).names)
    if "raw_hash" not in names:
        return None
    key, updated = ("source_id", "source_updated_at") if "source_id" in names else ("order_id", "updated_at")
    table = pq.read_table(path, columns=["raw_hash", key, updated])
    return table[key].to_pylist(), table["raw_hash"].to_pylist(), table[updated].to_pylist()


def latest_from_files(paths: Iterable[Path]) -> Iterator[tuple[int, int]]:
    """(record key, latest hash) entries from data files, taken in the order of their runs (a later
    version replaces an earlier one where they are applied in order)."""
    for path in sorted(paths, key=run_order):
        records = data_file_records(path)
        if records is not None:
            ids, hashes, _ = records
            yield from ((record_key(i), latest_hash(h)) for i, h in zip(ids, hashes))


def run_order(path: Path) -> tuple:
    """A data file's place in the order of runs: run ids begin with their start time."""
    parsed = parse_file_name(path.name)
    return (parsed[1], path.name) if parsed else ("", path.name)

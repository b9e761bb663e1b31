"""Every path a unit of work writes, from pure functions of (provider, account, stream).

A unit of work is one account's stream at one provider. Its files carry the account's name, so two
units never write the same path and a unit's recovery only ever looks at its own files:

  normalized/<table>/source=<provider>/date=<YYYY-MM-DD>/<account>_<run_id>-<seq>.parquet
  quarantine/source=<provider>/date=<YYYY-MM-DD>/<account>.<stream>.<run_id>.jsonl
  state/<provider>.<account>.<stream>.sqlite
  .locks/<provider>.<account>.<stream>.lock

Under an object-store destination (storage/lake/) the lock is a lease object and the state a
manifest with index shards: `lease_name`, `manifest_name`, `segment_name` below.

Account names match ACCOUNT_RE, which admits no separator, dot-dot or path character that could
escape a folder; they are unique within a provider regardless of case, so they stay distinct on
case-insensitive file systems too. Before units, a provider's files had no account in their
names (`<run_id>-<seq>.parquet`, `state/<provider>.sqlite`): see `legacy_state_path`.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import NamedTuple

SOURCE_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
ACCOUNT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
RUN_ID_RE = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")
STREAMS = ("products", "orders")
# A stream's tables under normalized/ (product_deletions: Shopify's destroyed products, which close their history).
TABLES = {"products": ("products", "product_deletions"), "orders": ("orders", "order_lines")}
_FILE_RE = re.compile(r"(?P<stage>\.)?(?:(?P<account>[A-Za-z0-9][A-Za-z0-9._-]{0,79})_)?"
                      r"(?P<run_id>\d{8}T\d{6}Z-[0-9a-f]{6})-(?P<seq>\d{4})\.parquet(?P<tmp>\.tmp)?")


class UnitId(NamedTuple):
    provider: str
    account: str
    stream: str = "products"

    def __str__(self) -> str:
        return f"{self.provider}:{self.account}/{self.stream}"


def check_unit(unit: UnitId) -> UnitId:
    """The unit, or ValueError if any part could not be part of a path."""
    if not SOURCE_RE.fullmatch(unit.provider):
        raise ValueError(f"invalid provider name for a path: {unit.provider!r}")
    if not ACCOUNT_RE.fullmatch(unit.account) or ".." in unit.account:
        raise ValueError(f"invalid account name for a path: {unit.account!r}")
    if unit.stream not in STREAMS:
        raise ValueError(f"unknown stream: {unit.stream!r}")
    return unit


def dataset_root(data_dir: Path, table: str = "products") -> Path:
    return data_dir / "normalized" / table


def partition_dir(data_dir: Path, source: str, day: date, table: str = "products") -> Path:
    """The partition folder; refuses any value that could escape the data directory."""
    if not SOURCE_RE.fullmatch(source):
        raise ValueError(f"invalid source name for a partition: {source!r}")
    if not isinstance(day, date):
        raise ValueError(f"invalid partition date: {day!r}")
    return dataset_root(data_dir, table) / f"source={source}" / f"date={day.isoformat()}"


def file_name(account: str, run_id: str, seq: int) -> str:
    if not ACCOUNT_RE.fullmatch(account) or ".." in account:
        raise ValueError(f"invalid account name: {account!r}")
    if not RUN_ID_RE.fullmatch(run_id):
        raise ValueError(f"invalid run id: {run_id!r}")
    return f"{account}_{run_id}-{seq:04d}.parquet"


def parse_file_name(name: str) -> tuple[str | None, str, bool] | None:
    """(account or None for a file from before units, run id, is a staging file) of a data file's
    name, or None if it is no file of ours."""
    match = _FILE_RE.fullmatch(name)
    if match is None or bool(match["stage"]) != bool(match["tmp"]):
        return None
    return match["account"], match["run_id"], bool(match["stage"])


def state_path(data_dir: Path, unit: UnitId) -> Path:
    provider, account, stream = check_unit(unit)
    return data_dir / "state" / f"{provider}.{account}.{stream}.sqlite"


def legacy_state_path(data_dir: Path, provider: str) -> Path:
    """A provider's state before units (one account per provider)."""
    return data_dir / "state" / f"{provider}.sqlite"


def lock_path(data_dir: Path, unit: UnitId) -> Path:
    provider, account, stream = check_unit(unit)
    return data_dir / ".locks" / f"{provider}.{account}.{stream}.lock"


def legacy_lock_path(data_dir: Path, provider: str) -> Path:
    return data_dir / ".locks" / f"{provider}.lock"


def quarantine_path(data_dir: Path, unit: UnitId, day: date, run_id: str) -> Path:
    provider, account, stream = check_unit(unit)
    if not RUN_ID_RE.fullmatch(run_id):
        raise ValueError("invalid quarantine path component")
    return (data_dir / "quarantine" / f"source={provider}" / f"date={day.isoformat()}"
            / f"{account}.{stream}.{run_id}.jsonl")


# -- object names under a remote destination's prefix (storage/lake/) ------------------------------
def unit_key(unit: UnitId) -> str:
    provider, account, stream = check_unit(unit)
    return f"{provider}.{account}.{stream}"


def lease_name(unit: UnitId) -> str:
    return f"_leases/{unit_key(unit)}.json"


def manifest_name(unit: UnitId) -> str:
    return f"_state/{unit_key(unit)}/manifest.json"


def segment_prefix(unit: UnitId, run_id: str) -> str:
    """Where a run's index shards go: one folder per run, so a dead run's leftovers are one listing."""
    if not RUN_ID_RE.fullmatch(run_id):
        raise ValueError(f"invalid run id: {run_id!r}")
    return f"_state/{unit_key(unit)}/index/{run_id}/"


def segment_name(unit: UnitId, run_id: str, kind: str, bits: int, shard: int) -> str:
    """An index shard: the entries whose first byte's top `bits` bits are `shard`."""
    return f"{segment_prefix(unit, run_id)}{kind}-{bits}-{shard:02x}.bin"


def counter_name(file_name: str) -> str:
    """A shared counter (an eBay keyset's daily calls), named like its local file."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,120}\.json", file_name):
        raise ValueError(f"invalid counter name: {file_name!r}")
    return f"_state/counters/{file_name}"

"""Housekeeping of a destination's Delta tables while units keep writing to them: compact the small
files every run leaves (one or two per unit per run, four runs a day), checkpoint the log, vacuum
what no version needs any more, and drop expired log entries.

Why each step is safe beside running writers:
- **compact** (`optimize.compact`) runs once per partition (source, account), so each of its
  commits names one unit's files only. It rewrites files without changing data (dataChange false);
  a unit's append meanwhile is a blind append that delta-rs rebases past it, so neither loses a
  row. delta-rs retries its commit 15 times whatever `max_commit_retries` says (measured with
  deltalake 1.6.6: "Failed to commit transaction: 15" with 100 asked), so a partition whose commit
  lost that often is compacted again from a fresh snapshot, after a pause that doubles, up to
  COMPACT_ATTEMPTS times; the losing attempt's files are committed nowhere and go with a later
  vacuum. (A table takes about 4 commits a second, docs/scaling.md: an attempt loses only when its
  rewrite outlasts 15 commits of a burst, which on two loaded cores happened in CI.)
- **vacuum** in delta-rs's full mode removes (a) files a version removed longer than the retention
  ago and (b) files no commit references whose Last-Modified is older than the retention: a killed
  writer's leftovers. A running writer uploads its data files first and commits right after,
  inside its lease (PIPELINE_LEASE_SECONDS, 15 minutes by default), so a retention of at least a
  day (MIN_RETENTION_HOURS) can never take a file a writer has not committed yet, and keeps every
  version of the last day readable for readers that opened it. Age is the store's Last-Modified
  against this machine's clock: a clock hours off stays far inside a day.
- **checkpoint** writes `_delta_log/<version>.checkpoint.parquet`, so a reader (and a writer's
  first open) reads one file instead of every commit since the table began; **cleanup_metadata**
  removes log entries older than the table's `delta.logRetentionDuration` (30 days) that a
  checkpoint already covers.

Multipart uploads a killed writer left unfinished are not objects, so vacuum never sees them: a
bucket lifecycle rule aborts them (README, "Compaction").
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field

from storage.delta import MAX_COMMIT_RETRIES, PARTITION_BY, pause_after_loss

MIN_RETENTION_HOURS = 24
DEFAULT_RETENTION_HOURS = 168
DELTA_DEFAULT_RETENTION_HOURS = 168  # delta-rs's minimum when the table sets no delta.deletedFileRetentionDuration
COMPACT_ATTEMPTS = 8
RETRY_PAUSE_S = (1.0, 8.0)  # the pause after a lost attempt: doubling from the first, at most the second
_INTERVAL_RE = re.compile(r"\s*interval\s+(\d+)\s+(second|minute|hour|day|week)s?\s*", re.IGNORECASE)
_UNIT_HOURS = {"second": 1 / 3600, "minute": 1 / 60, "hour": 1, "day": 24, "week": 168}


class RetentionTooShort(ValueError):
    """A vacuum retention under MIN_RETENTION_HOURS: it could remove a running writer's files."""


@dataclass
class TableReport:
    """What maintaining one table did: active files and bytes before and after, files rewritten,
    files vacuumed, the checkpoint's version and the seconds it took."""

    table: str
    files_before: int = 0
    bytes_before: int = 0
    files_after: int = 0
    bytes_after: int = 0
    rewritten: int = 0  # files compaction replaced
    written: int = 0  # files compaction wrote instead
    partitions: int = 0
    vacuumed: int = 0
    retention_hours: int = 0
    version: int | None = None
    seconds: float = 0.0
    retried: list[str] = field(default_factory=list)


def check_retention(hours: int) -> None:
    """RetentionTooShort for a retention that could remove files a running writer has not committed."""
    if hours < MIN_RETENTION_HOURS:
        raise RetentionTooShort(
            f"--retention-hours {hours} is too short: vacuum removes every file no commit references once it is "
            f"older than the retention, and a file a unit is still uploading or committing is one of them; use at "
            f"least {MIN_RETENTION_HOURS} (default {DEFAULT_RETENTION_HOURS})")


def vacuum_retention(configuration: dict, requested: int) -> tuple[int, bool]:
    """(hours to vacuum with, whether delta-rs should enforce the table's minimum). The table's own
    `delta.deletedFileRetentionDuration`, when set, is a floor too: the longer one is used and delta-rs
    keeps its check. When unset, delta-rs would refuse anything under its 7-day default; our own floor
    (checked before) replaces that one, so its check is turned off only then."""
    check_retention(requested)
    configured = configuration.get("delta.deletedFileRetentionDuration")
    if configured is None:
        return requested, requested >= DELTA_DEFAULT_RETENTION_HOURS
    match = _INTERVAL_RE.fullmatch(configured)
    if match is None:  # a spelling we do not read: delta-rs judges it
        return requested, True
    table_hours = math.ceil(int(match[1]) * _UNIT_HOURS[match[2].lower()])
    return max(requested, table_hours), True


def table_files(dt) -> tuple[int, int, Counter]:
    """(active files, their bytes, files per partition) from the table's log."""
    actions = dt.get_add_actions(flatten=True)
    sizes = actions.column("size_bytes").to_pylist()
    keys = zip(*(actions.column(f"partition.{name}").to_pylist() for name in PARTITION_BY))
    return len(sizes), sum(sizes), Counter(keys)


def maintain(uri: str, storage_options: dict | None, table: str, retention_hours: int) -> TableReport:
    """Compact every partition with more than one file, checkpoint, vacuum with the retention and
    clean up expired log entries; returns what it did. The table must exist."""
    from deltalake import CommitProperties, DeltaTable

    started = time.monotonic()
    report = TableReport(table)
    dt = DeltaTable(uri, storage_options=storage_options)
    retention, enforce = vacuum_retention(dt.metadata().configuration, retention_hours)
    report.files_before, report.bytes_before, partitions = table_files(dt)
    commit = CommitProperties(max_commit_retries=MAX_COMMIT_RETRIES)
    for key, files in sorted(partitions.items()):
        if files < 2:
            continue
        filters = [(name, "=", value) for name, value in zip(PARTITION_BY, key)]
        metrics = _retrying(dt, lambda f=filters: dt.optimize.compact(partition_filters=f, commit_properties=commit),
                            report, "/".join(key))
        report.rewritten += metrics["numFilesRemoved"]
        report.written += metrics["numFilesAdded"]
        report.partitions += 1 if metrics["numFilesRemoved"] else 0
    dt.update_incremental()
    dt.create_checkpoint()
    report.version = dt.version()
    report.retention_hours = retention
    report.vacuumed = len(_retrying(dt, lambda: dt.vacuum(retention_hours=retention, dry_run=False, full=True,
                                                          enforce_retention_duration=enforce, commit_properties=commit),
                                    report, "vacuum"))
    dt.cleanup_metadata()
    dt.update_incremental()
    report.files_after, report.bytes_after, _ = table_files(dt)
    report.seconds = time.monotonic() - started
    return report


def _retrying(dt, step, report: TableReport, what: str):
    """`step()`, again from a fresh snapshot when its commit lost delta-rs's 15 retries to writers."""
    from deltalake.exceptions import CommitFailedError

    for attempt in range(1, COMPACT_ATTEMPTS + 1):
        try:
            return step()
        except CommitFailedError:
            if attempt == COMPACT_ATTEMPTS:
                raise
            report.retried.append(what)
            pause_after_loss(attempt, *RETRY_PAUSE_S)
            dt.update_incremental()


COMPACTION_LEASE = "_leases/compaction.json"


def compaction_lock(destination, *, run_id: str, day: str):
    """One compaction per destination at a time: a lock file in a local data folder, a lease object
    (expiring, renewed) in an object store. Its acquire() is False while another compaction holds it;
    `.holder` or `.path` then says where."""
    if not hasattr(destination, "objects"):
        from storage.lock import FileLease

        return FileLease(destination.data_dir / ".locks" / "compaction.lock")
    from storage.lake.lease import Lease
    from storage.paths import UnitId

    lease = Lease(destination.objects, UnitId("compaction", "tables"), seconds=destination.lease_seconds,
                  run_id=run_id, day=day)
    lease.name = COMPACTION_LEASE  # not a unit's: no unit is ever named so
    return lease

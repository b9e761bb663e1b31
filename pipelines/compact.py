"""`run_pipeline.py compact [--retention-hours 168]`: housekeeping of the destination's Delta tables
(storage/compaction.py) while units keep writing, one compaction at a time, then a line per table."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone

import click

from connectors.redact import Redactor
from pipelines.cli_options import ConfigProblem, load_command_settings
from pipelines.outcome import EXIT_FAILED, EXIT_LOCKED, EXIT_OK
from storage.compaction import RetentionTooShort, check_retention, compaction_lock, maintain
from storage.destination import open_destination
from storage.paths import TABLES

DELTA_TABLES = tuple(dict.fromkeys(table for tables in TABLES.values() for table in tables))
PARQUET_ANSWER = ("{url} holds Parquet files, which compact leaves alone: a file, once written, is never replaced "
                  "or removed, so the small files each run writes accumulate (one or more per unit per run). A "
                  "Delta table can be compacted while units write: move the dataset with `run_pipeline.py migrate "
                  "--to s3://... --table-format delta` (or start a destination with --table-format delta), then run "
                  "compact there. Nothing was done.")


def run(ctx: click.Context, retention_hours: int, quiet: bool, shared: dict) -> int:
    """Compact, checkpoint and vacuum every Delta table of the destination; returns the exit code
    (0 also for a Parquet destination, which is left untouched; 75 while another compaction runs;
    1 when a table could not be maintained, the others done)."""
    settings = load_command_settings(ctx, shared)
    try:
        check_retention(retention_hours)
    except RetentionTooShort as exc:
        raise ConfigProblem(str(exc)) from None
    if settings.destination.table_format != "delta":
        click.echo(PARQUET_ANSWER.format(url=settings.destination.url))
        return EXIT_OK
    destination = open_destination(settings.destination)
    redact = Redactor([*settings.secrets(), *destination.secrets()])
    now = datetime.now(timezone.utc)
    lock = compaction_lock(destination, run_id=now.strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3),
                           day=now.date().isoformat())
    if not lock.acquire():
        click.echo(f"Another compaction holds {getattr(lock, 'holder', '') or lock.path}. Nothing was done.", err=True)
        return EXIT_LOCKED
    code, found = EXIT_OK, 0
    try:
        if hasattr(lock, "start_renewing"):
            lock.start_renewing()
        tables = destination.tables
        for table in DELTA_TABLES:
            from deltalake import DeltaTable

            if not DeltaTable.is_deltatable(tables.uri(table), storage_options=tables.storage_options):
                continue
            found += 1
            try:
                report = maintain(tables.uri(table), tables.storage_options, table, retention_hours)
            except Exception as exc:  # noqa: BLE001 - one table failing leaves the others to do
                click.echo(redact(f"{table}: not compacted ({type(exc).__name__}: {exc}); the table is as it "
                                  "was or compacted in part, and readable either way. Run compact again."), err=True)
                code = EXIT_FAILED
                continue
            if not quiet:
                click.echo(summary(report))
    finally:
        lock.release()
    if not found and not quiet:
        click.echo(f"No Delta table under {settings.destination.url}/normalized yet: nothing to compact.")
    return code


def summary(report) -> str:
    """One line: files and bytes before and after, what was rewritten and vacuumed, the seconds."""
    retried = f", {len(report.retried)} commits lost to writers and redone" if report.retried else ""
    return (f"{report.table}: {report.files_before} files {_mb(report.bytes_before)} -> {report.files_after} files "
            f"{_mb(report.bytes_after)} ({report.rewritten} compacted into {report.written} in {report.partitions} "
            f"partitions{retried}); checkpoint at version {report.version}; vacuum removed {report.vacuumed} files "
            f"unreferenced for over {report.retention_hours} h; {report.seconds:.1f} s")


def _mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB"

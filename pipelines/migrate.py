"""`run_pipeline.py migrate --to s3://bucket/prefix [--table-format delta]`: move the local dataset
and its state (storage/migrate.py) to an object store, then say what moved, unit by unit."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone

import click

from pipelines.cli_options import ConfigProblem, load_command_settings
from pipelines.outcome import EXIT_FAILED, EXIT_LOCKED, EXIT_OK
from storage.destination import Locked, open_destination


def run(ctx: click.Context, to: str, shared: dict) -> int:
    """Migrate; returns the exit code (2 for a target that is not an object store, 75 for a unit a
    run holds, 1 for a unit the target refuses)."""
    source = load_command_settings(ctx, {**shared, "destination": None, "table_format": None})
    if source.destination.s3 is not None:
        raise ConfigProblem("migrate moves a local dataset: give its folder with --data-dir (or PIPELINE_DATA_DIR), "
                            "not an s3:// destination")
    target_settings = load_command_settings(ctx, {**shared, "destination": to})
    if target_settings.destination.s3 is None:
        raise ConfigProblem(f"migrate --to takes an object store, s3://bucket/prefix (got {to!r})")
    from storage.lake.migration import LakeMigration, MigrationRefused
    from storage.migrate import migrate

    target = open_destination(target_settings.destination)
    target.prepare(dry_run=False)  # the probe, and the table created before anything is appended
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)
    try:
        moved = migrate(source.data_dir, source.logs_dir, LakeMigration(target), run_id)
    except Locked as exc:
        click.echo(f"Not migrated: {exc}.", err=True)
        return EXIT_LOCKED
    except (MigrationRefused, FileNotFoundError, ValueError) as exc:
        click.echo(f"Not migrated: {exc}.", err=True)
        return EXIT_FAILED
    for unit in moved:
        if unit.state == "already there":
            click.echo(f"{unit.unit}: already migrated to {target.url}; nothing written")
        else:
            delta = target_settings.destination.table_format == "delta"
            data = ("appended to the Delta table" if unit.rows_appended else "already in the Delta table") if delta \
                else "copied"
            click.echo(f"{unit.unit}: {unit.files} files {data}, state written to {target.url}")
    if not moved:
        click.echo(f"No unit's state under {source.data_dir}: nothing to migrate.")
    return EXIT_OK

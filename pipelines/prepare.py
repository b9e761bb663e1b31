"""`run_pipeline.py prepare`: ready the destination before units fan out, as a scheduler's first
task. An object store is probed for conditional writes (a store that ignores them is refused, exit
2), and the Delta tables of every configured unit's streams are created, so that parallel first
runs never race to create one. Idempotent: run again, it finds everything there and creates nothing.
Parquet files need no table: then only the probe runs (for an object store).
"""

from __future__ import annotations

import os

import click

from pipelines.cli_options import load_command_settings
from pipelines.outcome import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from pipelines.run import DestinationUnavailable, prepare_destination
from storage.destination import open_destination
from storage.paths import TABLES


def run(ctx: click.Context, shared: dict, streams: tuple[str, ...] | None) -> int:
    """Prepare the destination; returns the exit code (2 for a store that refuses, 1 for one that
    cannot be reached) after one sentence saying what is ready."""
    settings = load_command_settings(ctx, shared)
    units = settings.units(streams)
    tables = sorted({table for unit in units for table in TABLES[unit.stream]})
    destination = open_destination(settings.destination)
    old_umask = os.umask(0o077)  # as a run: what it creates is the owner's alone
    try:
        prepare_destination(destination, settings, tables, dry_run=False)
    except DestinationUnavailable as exc:
        click.echo(f"{exc}. Nothing was created; fix that, then run `run_pipeline.py prepare` again.", err=True)
        return EXIT_CONFIG if exc.refused else EXIT_FAILED
    finally:
        os.umask(old_umask)
    fmt = settings.destination.table_format
    store = "conditional writes honoured; " if settings.destination.s3 is not None else ""
    if fmt != "delta":
        made = "Parquet files need no table"
    elif tables:
        made = f"Delta tables {', '.join(tables)} in place"
    else:
        made = "no unit is configured, so no table was created"
    count = f"{len(units)} unit" + ("" if len(units) == 1 else "s")
    click.echo(f"Destination {destination.url} ready for {count}: {store}{made}.")
    return EXIT_OK

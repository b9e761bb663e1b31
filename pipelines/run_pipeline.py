#!/usr/bin/env python3
"""Pull product catalogs and orders into one deduplicated dataset (Parquet or Delta tables).

The command line only: options, subcommands and exit codes. The run itself (open each provider's
unit, fetch -> normalize -> dedup -> write, commit, report) is `pipelines/run.py`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # run as a script (cron, Task Scheduler): make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# Before pyarrow loads: its default allocator (mimalloc) keeps the memory of written row groups
# for reuse; the system allocator hands it back. Peak RSS at 100k products 217 -> 177 MB, no
# slower (bench/bench.py). A value already set in the environment wins.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

import click

from connectors.redact import Redactor
from pipelines import __version__
from pipelines.cli_options import (ConfigProblem, check_selection, load_command_settings, parse_accounts,
                                   parse_providers, parse_since, parse_streams, setup_logging, shared_options)
from pipelines.outcome import EXIT_CONFIG, EXIT_FAILED, EXIT_LOCKED, EXIT_STALE
from pipelines.runtime import Runtime
from storage.teardown import end_process

__all__ = ["cli", "Runtime"]


EXAMPLES = """\b
Examples:
  run_pipeline.py                          # every configured provider, incremental
  run_pipeline.py --verbose                # the scheduled job, with request detail
  run_pipeline.py --dry-run --providers shopify --limit 10
  run_pipeline.py --providers shopify --full-refresh
  run_pipeline.py --since 2026-11-01T00:00:00Z
  run_pipeline.py --accounts shopify:eu-store --streams products
  run_pipeline.py units                    # the units of work, one JSON line each
  run_pipeline.py prepare                  # before units fan out: the store's probe, the Delta tables
  run_pipeline.py report --html logs/report.html
  run_pipeline.py migrate --to s3://bucket/products --table-format delta
  run_pipeline.py query "SELECT * FROM products_current LIMIT 5"
  run_pipeline.py compact --destination s3://bucket/products --table-format delta

\b
Exit codes: 0 ok; 1 a unit failed; 2 usage or configuration error;
3 partial; 4 anomaly (--fail-on-anomaly); 5 stale data (report --max-age);
74 the run did its work but could not write its run-log line (full disk,
missing or read-only logs folder): the line went to stderr;
75 every selected unit was locked by another run.
"""


@click.group(invoke_without_command=True, epilog=EXAMPLES,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--providers", callback=parse_providers, metavar="LIST",
              help="Comma-separated providers to run (shopify,amazon,ebay). Default: every configured one.")
@click.option("--accounts", callback=parse_accounts, metavar="SPEC[,SPEC]",
              help="Accounts to run: provider:name, or a name unique across providers. Default: every one.")
@click.option("--streams", callback=parse_streams, metavar="LIST",
              help="Streams to run (products, orders). Default: PIPELINE_STREAMS, else each account's own (products).")
@click.option("--limit", type=click.IntRange(min=1), help="Stop after N records per unit (development).")
@click.option("--dry-run", is_flag=True, help="Fetch, normalize and dedup, then report; write no data or state.")
@click.option("--no-cache", is_flag=True, help="Bypass the HTTP disk cache.")
@click.option("--full-refresh", is_flag=True,
              help="Ignore the high-water mark and fetch everything (Shopify: with a bulk operation).")
@click.option("--since", callback=parse_since, metavar="ISO-8601",
              help="Fetch changes after this time instead of the high-water mark.")
@click.option("--fail-on-anomaly", is_flag=True,
              help="Exit 4 when a unit's volumes are off their rolling median (they are always logged).")
@click.option("--verbose", "-v", is_flag=True, help="Log every request.")
@click.option("--quiet", "-q", is_flag=True, help="Print only warnings and errors.")
@shared_options
@click.version_option(__version__, prog_name="run_pipeline")
@click.pass_context
def cli(ctx, providers, accounts, streams, limit, dry_run, no_cache, full_refresh, since, fail_on_anomaly,
        verbose, quiet, **shared):
    """Pull product catalogs and orders from Shopify, Amazon and eBay into Parquet or Delta tables.

    With no command, runs the pipeline.
    """
    if ctx.invoked_subcommand:
        return
    if full_refresh and since:
        raise click.UsageError("--full-refresh and --since exclude each other: pick one.")
    settings = load_command_settings(ctx, shared)
    check_selection(settings, providers)
    from pipelines.run import DestinationUnavailable, RunOptions, execute, select_units  # HTTP, pyarrow: not for --help
    opts = RunOptions(providers, limit, dry_run, no_cache, full_refresh, since, fail_on_anomaly, accounts, streams)
    try:
        if not select_units(settings, opts):
            raise ConfigProblem("no unit of work matches --providers, --accounts and --streams together; "
                                "`run_pipeline.py units` lists them.")
    except ValueError as exc:
        raise ConfigProblem(str(exc)) from None
    handler = setup_logging(verbose, quiet, Redactor(settings.secrets()))
    for warning in settings.warnings:
        logging.getLogger("pipeline").warning("warning: %s", warning)
    old_umask = os.umask(0o077)  # cache, state, logs and tracebacks are the owner's alone
    try:
        code, record = execute(settings, opts, ctx.obj if isinstance(ctx.obj, Runtime) else Runtime())
    except DestinationUnavailable as exc:
        click.echo(f"{exc}. Nothing was done.", err=True)
        ctx.exit(EXIT_CONFIG if exc.refused else EXIT_FAILED)
    finally:
        os.umask(old_umask)
        logging.getLogger("pipeline").removeHandler(handler)
    if code == EXIT_LOCKED:
        locks = "; ".join(u["reason"] for u in record["units"] if u["status"] == "locked")
        click.echo(f"Every selected unit is locked by another run ({locks}). Nothing was done.", err=True)
    ctx.exit(code)


@cli.command()
@click.option("--last", type=click.IntRange(min=1), default=20, show_default=True, help="Runs in the table.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a self-contained HTML report (charts of volumes and durations) here.")
@click.option("--max-age", metavar="DURATION",
              help="SLA check: exit 5 if any configured provider's last successful full run is older (e.g. 12h).")
@shared_options
@click.pass_context
def report(ctx, last, html_path, max_age, **shared):
    """Show recent runs; optionally write an HTML report or check data freshness.

    \b
    Examples:
      run_pipeline.py report
      run_pipeline.py report --html logs/report.html
  run_pipeline.py migrate --to s3://bucket/products --table-format delta
      run_pipeline.py report --max-age 13h     # from a monitoring cron: exit 5 when stale
    """
    from pipelines import report as reports
    from storage.destination import open_destination

    settings = load_command_settings(ctx, shared)
    try:
        window = reports.parse_duration(max_age) if max_age else None
    except ValueError as exc:
        raise ConfigProblem(str(exc)) from None
    run_log = open_destination(settings.destination).history
    history = run_log.read()
    click.echo(reports.table(history, last) if history else f"No runs recorded in {run_log.where}.")
    if html_path:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(reports.html_report(history), encoding="utf-8")
        click.echo(f"HTML report: {html_path}")
    if window is not None:
        units = settings.units()
        stale = reports.stale_units(history, units, window, datetime.now(timezone.utc), settings.default_accounts())
        for unit, why in stale.items():
            click.echo(f"STALE {unit}: {why} (limit {max_age})", err=True)
        if stale:
            ctx.exit(EXIT_STALE)
        click.echo(f"Fresh: every configured unit ({', '.join(map(str, units))}) succeeded within {max_age}.")


@cli.command()
@shared_options
@click.pass_context
def units(ctx, **shared):
    """Print every configured unit of work, one JSON object per line: provider, account, stream,
    ready (its settings are complete and its references resolve) and reason (why not). Schedulers
    fan out from it; it never prints a secret.
    """
    settings = load_command_settings(ctx, shared)
    for unit in settings.units():
        account = settings.account(unit)
        click.echo(json.dumps({"provider": unit.provider, "account": unit.account, "stream": unit.stream,
                               "ready": account.ready, "reason": account.reason}))


@cli.command()
@shared_options
@click.pass_context
def prepare(ctx, **shared):
    """Ready the destination before units fan out: probe an object store's conditional writes and
    create the Delta tables of every configured unit's streams. Idempotent; exit 0 when ready.
    """
    from pipelines import prepare as preparation

    ctx.exit(preparation.run(ctx, shared, ctx.parent.params.get("streams")))


@cli.command()
@click.option("--to", "to", required=True, metavar="s3://BUCKET/PREFIX", help="The destination to move to.")
@shared_options
@click.pass_context
def migrate(ctx, to, **shared):
    """Move the local dataset and its state to an object store without writing any product twice;
    --table-format delta appends the files to a Delta table there. Run it again to finish one that
    stopped part-way; the next pipeline run there makes the usual one request.
    """
    from pipelines import migrate as migration

    ctx.exit(migration.run(ctx, to, shared))


@cli.command()
@click.argument("sql", required=False)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]), default="table",
              show_default=True, help="json: one object per line; parquet needs --output.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the result here.")
@click.option("--list", "list_views", is_flag=True, help="Print each view's name and columns, one view per line.")
@shared_options
@click.pass_context
def query(ctx, sql, fmt, output, list_views, **shared):
    """Run DuckDB SQL over the dataset's views: products, products_current, products_history,
    price_changes, product_deletions, orders, order_lines, orders_current, order_lines_current,
    runs. A view whose table has no data yet is absent.

    \b
    Examples:
      run_pipeline.py query --list
      run_pipeline.py query "SELECT source, count(*) FROM products_current GROUP BY ALL"
      run_pipeline.py query "SELECT * FROM price_changes" --format parquet --output changes.parquet
    """
    from pipelines import query as queries

    queries.command(sql, fmt, output, list_views, load_command_settings(ctx, shared))


@cli.command()
@click.option("--retention-hours", type=int, default=168, show_default=True, metavar="HOURS",
              help="Vacuum files no version needs once unreferenced this long (at least 24: a running "
                   "unit's files must never go).")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
@shared_options
@click.pass_context
def compact(ctx, retention_hours, quiet, **shared):
    """Compact the small files of the destination's Delta tables, checkpoint and vacuum them, safely
    while units write; a Parquet destination is left as it is (exit 0).
    """
    from pipelines import compact as compaction

    ctx.exit(compaction.run(ctx, retention_hours, quiet or ctx.parent.params.get("quiet", False), shared))


if __name__ == "__main__":
    try:
        cli()
    except SystemExit as done:
        end_process(done.code)

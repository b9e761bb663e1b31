#!/usr/bin/env python3
"""Pull product catalogs into one deduplicated, date-partitioned Parquet dataset.

The command line only: options, subcommands and exit codes. The run itself (open each provider's
unit, fetch -> normalize -> dedup -> write, commit, report) is `pipelines/run.py`.
"""

from __future__ import annotations

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

from connectors import CONNECTORS
from connectors.redact import Redactor, RedactingFilter
from pipelines import __version__
from pipelines.config import PROVIDERS, REPO_ROOT, ConfigError, Settings, load_settings, read_environment
from pipelines.outcome import EXIT_CONFIG, EXIT_LOCKED, EXIT_STALE
from pipelines.run import RunOptions, Runtime, execute
from storage import runlog

__all__ = ["cli", "Runtime"]


def _setup_logging(verbose: bool, quiet: bool, redactor: Redactor) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(RedactingFilter(redactor))
    root = logging.getLogger("pipeline")
    root.handlers = [handler]
    root.propagate = False
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    return handler


class ConfigProblem(click.ClickException):
    exit_code = EXIT_CONFIG


def _parse_providers(ctx, param, value):
    if value is None:
        return None
    names = tuple(dict.fromkeys(n.strip().lower() for n in value.split(",") if n.strip()))
    unknown = [n for n in names if n not in PROVIDERS]
    if unknown or not names:
        raise click.BadParameter(f"unknown provider {', '.join(unknown) or '(none)'}; "
                                 f"choose from {', '.join(PROVIDERS)}")
    return names


def _parse_since(ctx, param, value):
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("use ISO-8601, e.g. 2026-11-01T00:00:00Z") from None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def shared_options(command):
    """Options every command takes, before or after the subcommand's name (after wins)."""
    options = [
        click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Output, state and quarantine. Default: <repo>/data (or PIPELINE_DATA_DIR)."),
        click.option("--logs-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Run log and tracebacks. Default: <repo>/logs (or PIPELINE_LOGS_DIR)."),
        click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="HTTP cache. Default: <repo>/.cache/api (or PIPELINE_CACHE_DIR)."),
        click.option("--env-file", type=click.Path(dir_okay=False, path_type=Path),
                     help="Settings file read under the environment. Default: <repo>/.env (or PIPELINE_ENV_FILE)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _load_settings(ctx: click.Context, shared: dict) -> Settings:
    """Settings from the environment, the env file and the shared options (a subcommand's win)."""
    given = {k: v for k, v in (ctx.parent.params if ctx.parent else {}).items() if k in shared}
    given.update({k: v for k, v in shared.items() if v is not None})
    env_file = given.get("env_file") or Path(os.environ.get("PIPELINE_ENV_FILE") or REPO_ROOT / ".env")
    _refuse_shared_env_file(env_file)
    try:
        return load_settings(read_environment(env_file), data_dir=given.get("data_dir"),
                             logs_dir=given.get("logs_dir"), cache_dir=given.get("cache_dir"))
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from None


EXAMPLES = """\b
Examples:
  run_pipeline.py                          # every configured provider, incremental
  run_pipeline.py --verbose                # the scheduled job, with request detail
  run_pipeline.py --dry-run --providers shopify --limit 10
  run_pipeline.py --providers shopify --full-refresh
  run_pipeline.py --since 2026-11-01T00:00:00Z
  run_pipeline.py report --html logs/report.html

\b
Exit codes: 0 ok; 1 a provider failed; 2 usage or configuration error;
3 partial; 4 anomaly (--fail-on-anomaly); 5 stale data (report --max-age);
74 the run did its work but could not write its run-log line (full disk,
missing or read-only logs folder): the line went to stderr;
75 every selected provider was locked by another run.
"""


@click.group(invoke_without_command=True, epilog=EXAMPLES,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--providers", callback=_parse_providers, metavar="LIST",
              help="Comma-separated providers to run (shopify,amazon,ebay). Default: every configured one.")
@click.option("--limit", type=click.IntRange(min=1), help="Stop after N records per provider (development).")
@click.option("--dry-run", is_flag=True, help="Fetch, normalize and dedup, then report; write no data or state.")
@click.option("--no-cache", is_flag=True, help="Bypass the HTTP disk cache.")
@click.option("--full-refresh", is_flag=True,
              help="Ignore the high-water mark and fetch everything (Shopify: with a bulk operation).")
@click.option("--since", callback=_parse_since, metavar="ISO-8601",
              help="Fetch changes after this time instead of the high-water mark.")
@click.option("--fail-on-anomaly", is_flag=True,
              help="Exit 4 when a provider's volumes are off their rolling median (they are always logged).")
@click.option("--verbose", "-v", is_flag=True, help="Log every request.")
@click.option("--quiet", "-q", is_flag=True, help="Print only warnings and errors.")
@shared_options
@click.version_option(__version__, prog_name="run_pipeline")
@click.pass_context
def cli(ctx, providers, limit, dry_run, no_cache, full_refresh, since, fail_on_anomaly, verbose, quiet,
        **shared):
    """Pull product catalogs from Shopify, Amazon and eBay into date-partitioned Parquet.

    With no command, runs the pipeline.
    """
    if ctx.invoked_subcommand:
        return
    if full_refresh and since:
        raise click.UsageError("--full-refresh and --since exclude each other: pick one.")
    settings = _load_settings(ctx, shared)
    _check_selection(settings, providers)
    handler = _setup_logging(verbose, quiet, Redactor(settings.secrets()))
    opts = RunOptions(providers, limit, dry_run, no_cache, full_refresh, since, fail_on_anomaly)
    old_umask = os.umask(0o077)  # cache, state, logs and tracebacks are the owner's alone
    try:
        code, record = execute(settings, opts, ctx.obj if isinstance(ctx.obj, Runtime) else Runtime())
    finally:
        os.umask(old_umask)
        logging.getLogger("pipeline").removeHandler(handler)
    if code == EXIT_LOCKED:
        locks = "; ".join(p["reason"] for p in record["providers"].values() if p["status"] == "locked")
        click.echo(f"Every selected provider is locked by another run ({locks}). Nothing was done.", err=True)
    ctx.exit(code)


def _refuse_shared_env_file(env_file: Path) -> None:
    """Like ssh with a private key: a secrets file others can read is a configuration error."""
    if os.name != "posix" or not env_file.is_file():
        return
    mode = env_file.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigProblem(f"{env_file} holds secrets but other users can read it (mode {mode:04o}); "
                            f"make it yours alone: chmod 600 {env_file}")


def _check_selection(settings: Settings, providers) -> None:
    if providers:
        named = [p for p in providers if p in settings.not_configured]
        if named:
            raise ConfigProblem("; ".join(f"{p} is {settings.not_configured[p]}" for p in named)
                                + " (see .env.example).")
        unsupported = [p for p in providers if p not in CONNECTORS]
        if unsupported:
            raise ConfigProblem(f"{', '.join(unsupported)} is not available in this version.")
    elif all(p in settings.not_configured for p in PROVIDERS):
        raise ConfigProblem("no provider is configured: set the variables of at least one provider "
                            "in the environment or in .env (see .env.example).")


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
      run_pipeline.py report --max-age 13h     # from a monitoring cron: exit 5 when stale
    """
    from pipelines import report as reports

    settings = _load_settings(ctx, shared)
    try:
        window = reports.parse_duration(max_age) if max_age else None
    except ValueError as exc:
        raise ConfigProblem(str(exc)) from None
    history = runlog.read(settings.logs_dir)
    click.echo(reports.table(history, last) if history else f"No runs recorded in {runlog.runlog_path(settings.logs_dir)}.")
    if html_path:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(reports.html_report(history), encoding="utf-8")
        click.echo(f"HTML report: {html_path}")
    if window is not None:
        configured = [p for p in PROVIDERS if p not in settings.not_configured]
        stale = reports.stale_providers(history, configured, window, datetime.now(timezone.utc))
        for name, why in stale.items():
            click.echo(f"STALE {name}: {why} (limit {max_age})", err=True)
        if stale:
            ctx.exit(EXIT_STALE)
        click.echo(f"Fresh: every configured provider ({', '.join(configured)}) succeeded within {max_age}.")


if __name__ == "__main__":
    cli()

"""The command line's shared parts: option parsers, the options every command takes, loading the
settings for a command, and logging set-up."""

from __future__ import annotations

import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import click

from connectors import CONNECTORS
from connectors.redact import Redactor, RedactingFilter
from pipelines.config import PROVIDERS, REPO_ROOT, ConfigError, Settings, load_settings, read_environment
from pipelines.outcome import EXIT_CONFIG
from storage.paths import STREAMS


class ConfigProblem(click.ClickException):
    exit_code = EXIT_CONFIG


def parse_providers(ctx, param, value):
    if value is None:
        return None
    names = tuple(dict.fromkeys(n.strip().lower() for n in value.split(",") if n.strip()))
    unknown = [n for n in names if n not in PROVIDERS]
    if unknown or not names:
        raise click.BadParameter(f"unknown provider {', '.join(unknown) or '(none)'}; "
                                 f"choose from {', '.join(PROVIDERS)}")
    return names


def parse_since(ctx, param, value):
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("use ISO-8601, e.g. 2026-11-01T00:00:00Z") from None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def parse_streams(ctx, param, value):
    if value is None:
        return None
    names = tuple(dict.fromkeys(n.strip().lower() for n in value.split(",") if n.strip()))
    unknown = [n for n in names if n not in STREAMS]
    if unknown or not names:
        raise click.BadParameter(f"unknown stream {', '.join(unknown) or '(none)'}; choose from {', '.join(STREAMS)}")
    return names


def parse_accounts(ctx, param, value):
    if value is None:
        return None
    specs = tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    if not specs:
        raise click.BadParameter("name at least one account: provider:name or name")
    return specs


def shared_options(command):
    """Options every command takes, before or after the subcommand's name (after wins)."""
    options = [
        click.option("--destination", metavar="PATH|s3://BUCKET/PREFIX",
                     help="Where data, state and quarantine go: a folder or an object store. "
                          "Default: <repo>/data (or PIPELINE_DESTINATION, PIPELINE_DATA_DIR)."),
        click.option("--table-format", type=click.Choice(["parquet", "delta"]),
                     help="Parquet files (the default) or a Delta table (or PIPELINE_TABLE_FORMAT)."),
        click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="A folder as the destination (a spelling of --destination PATH)."),
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


def load_command_settings(ctx: click.Context, shared: dict) -> Settings:
    """Settings from the environment, the env file and the shared options (a subcommand's win)."""
    given = {k: v for k, v in (ctx.parent.params if ctx.parent else {}).items() if k in shared}
    given.update({k: v for k, v in shared.items() if v is not None})
    env_file = given.get("env_file") or Path(os.environ.get("PIPELINE_ENV_FILE") or REPO_ROOT / ".env")
    _refuse_shared_env_file(env_file)
    try:
        return load_settings(read_environment(env_file), data_dir=given.get("data_dir"),
                             logs_dir=given.get("logs_dir"), cache_dir=given.get("cache_dir"),
                             destination=given.get("destination"), table_format=given.get("table_format"))
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from None


def _refuse_shared_env_file(env_file: Path) -> None:
    """Like ssh with a private key: a secrets file others can read is a configuration error."""
    if os.name != "posix" or not env_file.is_file():
        return
    mode = env_file.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigProblem(f"{env_file} holds secrets but other users can read it (mode {mode:04o}); "
                            f"make it yours alone: chmod 600 {env_file}")


def check_selection(settings: Settings, providers) -> None:
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


def setup_logging(verbose: bool, quiet: bool, redactor: Redactor) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(RedactingFilter(redactor))
    root = logging.getLogger("pipeline")
    root.handlers = [handler]
    root.propagate = False
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    return handler

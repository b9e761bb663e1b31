#!/usr/bin/env python3
"""Pull product catalogs into one deduplicated, date-partitioned Parquet dataset.

The data's path, per provider: fetch -> normalize -> dedup -> write -> commit, then one run-log
line for the whole run. Everything else lives in the stage of the same name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path

if __package__ in (None, ""):  # run as a script (cron, Task Scheduler): make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# Before pyarrow loads: its default allocator (mimalloc) keeps the memory of written row groups
# for reuse; the system allocator hands it back. Peak RSS at 100k products 217 -> 177 MB, no
# slower (bench/bench.py). A value already set in the environment wins.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

import click

from connectors import CONNECTORS
from connectors.http import CircuitOpen, HttpSettings
from connectors.shopify_bulk import Checkpoint
from normalize import amazon as amazon_normalizer
from normalize import ebay as ebay_normalizer
from normalize import shopify as shopify_normalizer
from pipelines import __version__, anomaly, metrics
from pipelines.anomaly import AnomalyRules
from pipelines.config import PROVIDERS, REPO_ROOT, ConfigError, Settings, load_settings, read_environment
from connectors.redact import Redactor, RedactingFilter
from pipelines.stages import (BATCH_SIZE, DryRunSink, Prefetch, Progress, ProviderResult, batched, keep_new,
                              lean_gc, normalize_batch)
from storage import history_db, runlog
from storage.lock import ProviderLock
from storage.parquet import PartitionWriter
from storage.quarantine import Quarantine, quarantine_path
from storage.crash import crash_point
from storage.recovery import recover
from storage.state import KnownVersions, MetaStore, ProviderState, state_path

NORMALIZERS = {"shopify": shopify_normalizer, "amazon": amazon_normalizer, "ebay": ebay_normalizer}
EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_PARTIAL, EXIT_ANOMALY, EXIT_STALE, EXIT_LOCKED = 0, 1, 2, 3, 4, 5, 75
log = logging.getLogger("pipeline")


class QualityGateFailed(Exception):
    """Too many of a provider's records were quarantined to trust the rest."""


@dataclass(frozen=True)
class RunOptions:
    providers: tuple[str, ...] | None
    limit: int | None
    dry_run: bool
    no_cache: bool
    full_refresh: bool
    since: datetime | None
    fail_on_anomaly: bool = False


@dataclass
class Runtime:
    """What tests inject instead of the real clock and sleep."""

    sleep: object = time.sleep
    clock: object = time.monotonic
    now: object = lambda: datetime.now(timezone.utc)


def run_provider(name: str, settings: Settings, opts: RunOptions, run_id: str, started: datetime,
                 rt: Runtime) -> ProviderResult:
    """One provider under its lock; a failure rolls back its files and state and fails it alone."""
    result, clock_start = ProviderResult(), time.monotonic()
    lock = ProviderLock(settings.data_dir, name)
    if not opts.dry_run and not lock.acquire():
        return ProviderResult(status="locked", reason=f"another run holds {lock.path}")
    http = state = writer = None
    try:
        http = CONNECTORS[name].make_client(settings.provider(name), _http_settings(settings, name, opts),
                                            sleep=rt.sleep, now=rt.now, clock=rt.clock)
        state = ProviderState.open(state_path(settings.data_dir, name), read_only=opts.dry_run)
        writer = (DryRunSink() if opts.dry_run else
                  PartitionWriter(settings.data_dir, name, run_id, started.date(), settings.output_file_mode,
                                  settings.rows_per_file))
        extract_load(name, settings, opts, run_id, started, rt, http, state, writer, result)
    except Exception as exc:
        _roll_back(writer, state, opts)
        result.status, result.written, result.files = "failed", 0, []
        # Redacted like the logs: a library may word its error with a URL or header it was given.
        result.error_type, result.error = type(exc).__name__, Redactor(settings.secrets())(str(exc))
        result.circuit = "open" if isinstance(exc, CircuitOpen) else None
        result.traceback = _write_traceback(settings, run_id, name, exc)
    finally:
        if state is not None:
            state.close()
        lock.release()
        if http is not None:
            http.close()
            _take_stats(result, http.stats)
        result.duration_s = time.monotonic() - clock_start
    return result


def _take_stats(result: ProviderResult, stats) -> None:
    result.requests, result.cache_hits, result.retries = stats.requests, stats.cache_hits, stats.retries
    result.throttle_wait_s, result.partial_errors, result.warnings = stats.throttle_wait_s, stats.partial_errors, stats.warnings
    if stats.partial_reason and result.status == "ok":  # a quota stopped it: what came is kept
        result.status, result.reason = "partial", stats.partial_reason


def extract_load(name, settings, opts, run_id, started, rt, http, state, writer, result) -> None:
    """fetch -> normalize -> dedup -> write, then commit the index and high-water mark."""
    connector, normalizer, provider_settings = CONNECTORS[name], NORMALIZERS[name], settings.provider(name)
    quarantine = Quarantine(quarantine_path(settings.data_dir, name, started.date(), run_id), enabled=not opts.dry_run)
    progress = Progress(name)
    if not opts.dry_run:
        recover(state, settings.data_dir, name)
        state.set("inflight_run", run_id)
    stored_mark = _stored_mark(state)
    high_water_mark = stored_mark
    meta = None if opts.dry_run else MetaStore(state_path(settings.data_dir, name))  # a dry run writes nothing
    records = connector.iter_records(http, provider_settings, since=_since(stored_mark, opts),
                                     lookback=settings.lookback, clock=rt.clock, full_refresh=opts.full_refresh,
                                     checkpoint=Checkpoint(meta), hints=meta,
                                     known=KnownVersions(state_path(settings.data_dir, name)))
    if opts.limit is None:  # a limited run must not fetch a page ahead that it will not use
        records = Prefetch(records)
    for raws in batched(islice(records, opts.limit), BATCH_SIZE):
        crash_point("after_fetch")
        result.fetched += len(raws)
        high_water_mark = max([high_water_mark, *map(connector.record_cursor, raws)], key=_cursor_key)
        products = normalize_batch(raws, normalizer, account=provider_settings.account, run_id=run_id,
                                   fetched_at=rt.now(), quarantine=quarantine)
        new = keep_new(products, state)
        writer.add(new)
        result.written += len(new)
        result.duplicates += len(products) - len(new)
        result.quarantined = quarantine.count
        progress.update(result)
    _quality_gate(result, settings.quarantine_max_percent)
    result.files = [f.as_posix() for f in writer.close()]
    if opts.limit:  # a partial look at the catalog must not move the mark past what it skipped
        high_water_mark = stored_mark
    if not opts.dry_run:
        state.commit(run_id, result.files, {"high_water_mark": _cursor_json(high_water_mark)})
    result.high_water_mark = _cursor_json(high_water_mark)
    result.samples = getattr(writer, "samples", [])


def _roll_back(writer, state, opts: RunOptions) -> None:
    """Best effort: whatever is left over, the next run's start-up sweep removes."""
    with contextlib.suppress(Exception):
        if writer is not None:
            writer.discard()
    with contextlib.suppress(Exception):
        if state is not None:
            state.forget_run()
            if not opts.dry_run:
                state.delete("inflight_run")


def execute(settings: Settings, opts: RunOptions, rt: Runtime) -> tuple[int, dict]:
    """Run every selected provider and append the run-log line; returns (exit code, record)."""
    started = rt.now()
    run_id = started.strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)
    selected = opts.providers or tuple(p for p in PROVIDERS if p not in settings.not_configured)
    results: dict[str, ProviderResult] = {}
    for name in PROVIDERS:
        if name not in selected:
            if name in settings.not_configured:
                reason = settings.not_configured[name]
                results[name] = ProviderResult(status="skipped", reason=reason)
                if reason != "not configured":  # half-configured or retired settings: say so
                    log.warning("%s: skipped: %s", name, reason)
            continue
        log.info("%s: starting (%s)", name, _mode(opts))
        with lean_gc():
            results[name] = result = run_provider(name, settings, opts, run_id, started, rt)
        _report(name, result, opts)
    history = runlog.read(settings.logs_dir)
    anomalies = _find_anomalies(settings, opts, results, history)
    code = _exit_code([results[n] for n in selected], bool(anomalies) and opts.fail_on_anomaly)
    finished = rt.now()
    record = {
        "run_id": run_id,
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat(),
        "duration_s": round((finished - started).total_seconds(), 3),
        "status": {0: "ok", 1: "failed", 3: "partial", 4: "anomaly", 75: "locked"}[code],
        "exit_code": code,
        "dry_run": opts.dry_run,
        "limited": opts.limit is not None,
        "options": {"providers": list(selected), "limit": opts.limit, "dry_run": opts.dry_run,
                    "no_cache": opts.no_cache, "full_refresh": opts.full_refresh,
                    "since": opts.since.isoformat() if opts.since else None,
                    "fail_on_anomaly": opts.fail_on_anomaly},
        "providers": {n: r.as_log() for n, r in results.items()},
        "anomalies": anomalies,
        "errors": _error_summary(results),
    }
    runlog.append(settings.logs_dir, record)
    _publish(settings, record, [*history, record])
    return code, record


def _find_anomalies(settings: Settings, opts: RunOptions, results: dict, history: list[dict]) -> list[dict]:
    """Check each provider's volumes against its rolling median; record and print what is off."""
    if opts.dry_run or opts.limit is not None:
        return []  # dry and limited runs neither count toward the baseline nor get judged
    rules = AnomalyRules(settings.anomaly_window, settings.anomaly_factor, settings.anomaly_floor)
    found = []
    for name, result in results.items():
        if result.status not in ("ok", "partial"):
            continue
        verdict = anomaly.detect({"fetched": result.fetched, "written": result.written}, history, name, rules)
        result.cold_start, result.anomalies = verdict["cold_start"], verdict["anomalies"]
        for item in verdict["anomalies"]:
            log.warning("ANOMALY %s", anomaly.describe(name, item))
            found.append({"provider": name, **item})
    return found


def _error_summary(results: dict) -> dict:
    """Errors grouped by provider and type, with counts."""
    by_provider = {}
    for name, r in results.items():
        kinds = {}
        if r.error_type:
            kinds[r.error_type] = 1
        if r.quarantined:
            kinds["Quarantined"] = r.quarantined
        if r.partial_errors:
            kinds["PartialError"] = r.partial_errors
        if r.status == "partial":
            kinds["Partial"] = 1
        if kinds:
            by_provider[name] = kinds
    return {"total": sum(sum(k.values()) for k in by_provider.values()), "by_provider": by_provider}


def _publish(settings: Settings, record: dict, history: list[dict]) -> None:
    """The SQLite history and the metrics file: reported when they fail, never failing the run."""
    try:
        history_db.write(settings.logs_dir, record)
    except Exception as exc:  # noqa: BLE001 - a sink must not sink the run
        log.warning("run history: could not write %s: %s", history_db.history_path(settings.logs_dir), exc)
    if settings.metrics_file is None or record["dry_run"]:
        return
    last_success = {}
    for past in history:
        for name in past.get("providers", {}):
            if anomaly.is_baseline_run(past, name):
                last_success[name] = past["finished_at"]
    try:
        metrics.write(settings.metrics_file, metrics.render(record, last_success))
    except Exception as exc:  # noqa: BLE001
        log.warning("metrics: could not write %s: %s", settings.metrics_file, exc)


# -- helpers ----------------------------------------------------------------------------------
def _http_settings(settings: Settings, name: str, opts: RunOptions) -> HttpSettings:
    return HttpSettings(
        connect_timeout_s=settings.connect_timeout_s, read_timeout_s=settings.read_timeout_s,
        deadline_s=settings.request_deadline_s, max_attempts=settings.max_attempts,
        max_total_wait_s=settings.max_total_wait_s, cache_ttl=settings.cache_ttl,
        breaker_threshold=settings.breaker_threshold,
        # The cache serves development runs (--dry-run, --limit): a run that writes data always
        # asks the API afresh and stores nothing, so no scheduled run can replay old answers.
        cache_dir=settings.cache_dir / name if (opts.dry_run or opts.limit) and not opts.no_cache else None,
    )


def _stored_mark(state: ProviderState):
    mark = state.get("high_water_mark")
    return (datetime.fromisoformat(mark[0]), int(mark[1])) if mark else None


def _since(stored_mark, opts: RunOptions):
    """Where to fetch from; --since and --full-refresh never lower the stored mark itself."""
    if opts.full_refresh:
        return None
    if opts.since:
        return (opts.since, 0)
    return stored_mark


def _cursor_key(cursor):
    return (0,) if cursor is None else (1, *cursor)


def _cursor_json(cursor):
    return None if cursor is None else [cursor[0].isoformat(), cursor[1]]


def _quality_gate(result: ProviderResult, max_percent: float) -> None:
    if result.fetched and result.quarantined * 100 > max_percent * result.fetched:
        raise QualityGateFailed(
            f"{result.quarantined} of {result.fetched} records "
            f"({100 * result.quarantined / result.fetched:.1f}%) broke data-quality rules, over the "
            f"{max_percent:g}% limit (PIPELINE_QUARANTINE_MAX_PERCENT); nothing was written for this "
            "provider: see the quarantine files for the reasons")


def _write_traceback(settings: Settings, run_id: str, name: str, exc: BaseException) -> str | None:
    try:
        folder = settings.logs_dir / "tracebacks"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / f"{run_id}-{name}.txt"
        text = "".join(traceback.format_exception(exc))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(Redactor(settings.secrets())(text))
        return str(path)
    except OSError:
        return None


def _exit_code(results: list[ProviderResult], anomaly_fails: bool = False) -> int:
    statuses = {r.status for r in results}
    if statuses and statuses == {"locked"}:
        return EXIT_LOCKED
    if "failed" in statuses:
        return EXIT_FAILED
    if anomaly_fails:
        return EXIT_ANOMALY
    if "partial" in statuses:
        return EXIT_PARTIAL
    return EXIT_OK


def _mode(opts: RunOptions) -> str:
    parts = ["dry run" if opts.dry_run else "writing"]
    if opts.full_refresh:
        parts.append("full refresh")
    elif opts.since:
        parts.append(f"since {opts.since.isoformat()}")
    if opts.limit:
        parts.append(f"limit {opts.limit}")
    return ", ".join(parts)


def _report(name: str, r: ProviderResult, opts: RunOptions) -> None:
    counts = (f"fetched {r.fetched}, {'would write' if opts.dry_run else 'wrote'} {r.written}, "
              f"duplicates {r.duplicates}, quarantined {r.quarantined}, "
              f"{r.requests} requests ({r.cache_hits} from cache), {r.duration_s:.1f}s")
    if r.status == "failed":
        log.error("%s: FAILED after %s: %s", name, counts, r.error)
        if r.traceback:
            log.error("%s: traceback in %s", name, r.traceback)
    elif r.status == "locked":
        log.warning("%s: skipped, %s", name, r.reason)
    elif r.status == "partial":
        log.warning("%s: partial, %s: %s", name, counts, r.reason)
    else:
        log.info("%s: %s, %s", name, r.status, counts)
    for p in r.samples:
        price = f"{p.price:.2f} {p.currency}" if p.price is not None else "-"
        click.echo(f"  would write  {p.source_id:<36} {price:>14}  {p.title[:60]}")


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
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Output, state and quarantine. Default: <repo>/data (or PIPELINE_DATA_DIR).")
@click.option("--logs-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Run log and tracebacks. Default: <repo>/logs (or PIPELINE_LOGS_DIR).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="HTTP cache. Default: <repo>/.cache/api (or PIPELINE_CACHE_DIR).")
@click.option("--env-file", type=click.Path(dir_okay=False, path_type=Path), envvar="PIPELINE_ENV_FILE",
              default=REPO_ROOT / ".env", show_default="<repo>/.env", help="Settings file read under the environment.")
@click.version_option(__version__, prog_name="run_pipeline")
@click.pass_context
def cli(ctx, providers, limit, dry_run, no_cache, full_refresh, since, fail_on_anomaly, verbose, quiet,
        data_dir, logs_dir, cache_dir, env_file):
    """Pull product catalogs from Shopify, Amazon and eBay into date-partitioned Parquet.

    With no command, runs the pipeline.
    """
    if ctx.invoked_subcommand:
        return
    if full_refresh and since:
        raise click.UsageError("--full-refresh and --since exclude each other: pick one.")
    _refuse_shared_env_file(env_file)
    try:
        settings = load_settings(read_environment(env_file), data_dir=data_dir, logs_dir=logs_dir,
                                 cache_dir=cache_dir)
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from None
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
@click.pass_context
def report(ctx, last, html_path, max_age):
    """Show recent runs; optionally write an HTML report or check data freshness.

    \b
    Examples:
      run_pipeline.py report
      run_pipeline.py report --html logs/report.html
      run_pipeline.py report --max-age 13h     # from a monitoring cron: exit 5 when stale
    """
    from pipelines import report as reports

    group = ctx.parent.params
    _refuse_shared_env_file(group["env_file"])
    try:
        settings = load_settings(read_environment(group["env_file"]), data_dir=group["data_dir"],
                                 logs_dir=group["logs_dir"], cache_dir=group["cache_dir"])
        window = reports.parse_duration(max_age) if max_age else None
    except (ConfigError, ValueError) as exc:
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

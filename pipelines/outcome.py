"""What a run leaves behind: the summary lines, the run-log record, anomalies, the exit code, the
SQLite history and metrics, and traceback files."""

from __future__ import annotations

import logging
import os
import traceback
from datetime import datetime

import click

from connectors.redact import Redactor
from pipelines import anomaly, metrics
from pipelines.anomaly import AnomalyRules
from pipelines.config import PROVIDERS, Settings
from pipelines.stages import ProviderResult
from storage import history_db, runlog
from storage.paths import UnitId

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_PARTIAL, EXIT_ANOMALY, EXIT_STALE, EXIT_LOCKED = 0, 1, 2, 3, 4, 5, 75
EXIT_UNRECORDED = 74  # EX_IOERR: the run did its work but could not record it
STATUS_OF_EXIT = {EXIT_OK: "ok", EXIT_FAILED: "failed", EXIT_PARTIAL: "partial", EXIT_ANOMALY: "anomaly",
                  EXIT_LOCKED: "locked"}
log = logging.getLogger("pipeline")


def not_configured(name: str, reason: str) -> ProviderResult:
    """A provider that was not selected because its settings are missing; half-configured is said aloud."""
    if reason != "not configured":  # half-configured or retired settings: say so
        log.warning("%s: skipped: %s", name, reason)
    return ProviderResult(status="skipped", reason=reason)


RECORD_VERSION = 2
SEVERITY = ("failed", "partial", "locked", "ok", "skipped")  # a provider's status: the worst of its units'
SUMMED = ("fetched", "quarantined", "duplicates", "written", "requests", "cache_hits", "retries", "throttle_wait_s",
          "partial_errors", "duration_s")


def record_run(settings: Settings, opts, run_id: str, started: datetime, finished: datetime,
               results: dict[UnitId, ProviderResult], skipped: dict[str, ProviderResult],
               run_log=None) -> tuple[int, dict]:
    """Judge the run (anomalies, exit code), append its run-log line to `run_log` (the destination's
    history; the local logs/runs.jsonl by default) and publish it; returns (code, record)."""
    run_log = run_log or runlog.LocalRunLog(settings.logs_dir)
    try:
        history = run_log.read()
    except Exception as exc:  # noqa: BLE001 - judged without a baseline, and said so
        log.warning("run history: could not read %s: %s", run_log.where, exc)
        history = []
    defaults = settings.default_accounts()
    anomalies = find_anomalies(settings, opts, results, history, defaults)
    code = exit_code(list(results.values()), bool(anomalies) and opts.fail_on_anomaly)
    units = [{"provider": u.provider, "account": u.account, "stream": u.stream, **r.as_log()} for u, r in results.items()]
    record = {
        "record_version": RECORD_VERSION,
        "run_id": run_id,
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat(),
        "duration_s": round((finished - started).total_seconds(), 3),
        "status": STATUS_OF_EXIT[code],
        "exit_code": code,
        "dry_run": opts.dry_run,
        "limited": opts.limit is not None,
        "options": {"providers": sorted({u.provider for u in results}, key=PROVIDERS.index),
                    "accounts": list(opts.accounts or []), "streams": list(opts.streams or []), "limit": opts.limit,
                    "dry_run": opts.dry_run, "no_cache": opts.no_cache, "full_refresh": opts.full_refresh,
                    "since": opts.since.isoformat() if opts.since else None,
                    "fail_on_anomaly": opts.fail_on_anomaly},
        "units": units,
        "providers": providers_view(units, skipped),
        "anomalies": anomalies,
        "errors": error_summary(results),
    }
    try:
        run_log.append(record)
    except OSError as exc:
        code = unrecorded(settings, record, exc, run_log.where)
    publish(settings, record, [*history, record], defaults)
    return code, record


def providers_view(units: list[dict], skipped: dict[str, ProviderResult]) -> dict[str, dict]:
    """Each provider's entry as before units: its units' counts summed, its status the worst of
    theirs; the fields of a single unit kept whole, so readers of one account per provider see no change."""
    view = {p: r.as_log() for p, r in skipped.items()}
    for provider in PROVIDERS:
        mine = [u for u in units if u["provider"] == provider]
        if len(mine) == 1:
            view[provider] = {k: v for k, v in mine[0].items() if k not in ("provider", "account", "stream")}
        elif mine:
            entry = {k: round(sum(u.get(k, 0) for u in mine), 3) for k in SUMMED}
            entry["status"] = min((u["status"] for u in mine), key=SEVERITY.index)
            entry["units"] = len(mine)
            entry["files"] = [f for u in mine for f in u.get("files", [])]
            entry["warnings"] = [w for u in mine for w in u.get("warnings", [])]
            for key in ("reason", "error_type", "error"):
                value = next((u[key] for u in mine if u.get(key)), None)
                if value is not None:
                    entry[key] = value
            view[provider] = entry
    return {p: view[p] for p in PROVIDERS if p in view}


def unrecorded(settings: Settings, record: dict, exc: OSError, path=None) -> int:
    """The run log could not take the run's line: say so in one sentence, keep the line on stderr for
    the scheduler's own log, and exit 74, which wins over 1, 3 and 4 (without the record nobody sees
    those); 75 (every unit locked: no work done) stays."""
    path = path or runlog.runlog_path(settings.logs_dir)
    problem = f"[Errno {exc.errno}] {exc.strerror}" if exc.strerror else str(exc)
    if record["exit_code"] != EXIT_LOCKED:
        record["exit_code"] = EXIT_UNRECORDED
    record["record_error"] = f"could not append to {path}: {problem}"
    click.echo(f"The run could not record itself: appending to the run log {path} failed with {problem}; "
               "its run-log line follows on stderr, free the space or fix the folder, and the next run "
               "records normally.", err=True)
    click.echo(runlog.encode(record), err=True, nl=False)
    return record["exit_code"]


def find_anomalies(settings: Settings, opts, results: dict, history: list[dict], defaults: dict[str, str]) -> list[dict]:
    """Check each unit's volumes against its rolling median; record and print what is off."""
    if opts.dry_run or opts.limit is not None:
        return []  # dry and limited runs neither count toward the baseline nor get judged
    rules = AnomalyRules(settings.anomaly_window, settings.anomaly_factor, settings.anomaly_floor)
    found = []
    for unit, result in results.items():
        if result.status not in ("ok", "partial"):
            continue
        verdict = anomaly.detect({"fetched": result.fetched, "written": result.written}, history, unit, rules, defaults)
        result.cold_start, result.anomalies = verdict["cold_start"], verdict["anomalies"]
        for item in verdict["anomalies"]:
            log.warning("ANOMALY %s", anomaly.describe(unit, item))
            found.append({"provider": unit.provider, "account": unit.account, "stream": unit.stream, **item})
    return found


def error_summary(results: dict) -> dict:
    """Errors grouped by provider (and by unit) and type, with counts."""
    by_provider, by_unit = {}, {}
    for unit, r in results.items():
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
            by_unit[str(unit)] = kinds
            mine = by_provider.setdefault(unit.provider, {})
            for kind, count in kinds.items():
                mine[kind] = mine.get(kind, 0) + count
    return {"total": sum(sum(k.values()) for k in by_unit.values()), "by_provider": by_provider, "by_unit": by_unit}


def publish(settings: Settings, record: dict, history: list[dict], defaults: dict[str, str]) -> None:
    """The SQLite history and the metrics file: reported when they fail, never failing the run."""
    try:
        history_db.write(settings.logs_dir, record)
    except Exception as exc:  # noqa: BLE001 - a sink must not sink the run
        log.warning("run history: could not write %s: %s", history_db.history_path(settings.logs_dir), exc)
    if settings.metrics_file is None or record["dry_run"]:
        return
    last_success = {}
    for past in history:
        for unit in anomaly.unit_entries(past, defaults):
            if anomaly.is_baseline_run(past, unit, defaults):
                last_success[unit] = past["finished_at"]
    try:
        metrics.write(settings.metrics_file, metrics.render(record, last_success))
    except Exception as exc:  # noqa: BLE001
        log.warning("metrics: could not write %s: %s", settings.metrics_file, exc)


def exit_code(results: list[ProviderResult], anomaly_fails: bool = False) -> int:
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


def write_traceback(settings: Settings, run_id: str, unit: UnitId, exc: BaseException) -> tuple[str | None, str | None]:
    """The redacted traceback in <logs>/tracebacks/<run_id>-<provider>.<account>.<stream>.txt: (its path, None), or
    (None, why not) when the folder cannot take it (a full disk, say)."""
    try:
        folder = settings.logs_dir / "tracebacks"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / f"{run_id}-{unit.provider}.{unit.account}.{unit.stream}.txt"
        text = "".join(traceback.format_exception(exc))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(Redactor(settings.secrets())(text))
        return str(path), None
    except OSError as exc:
        problem = f"[Errno {exc.errno}] {exc.strerror}" if exc.strerror else str(exc)
        return None, f"could not write a traceback under {settings.logs_dir / 'tracebacks'}: {problem}"


def mode(opts) -> str:
    parts = ["dry run" if opts.dry_run else "writing"]
    if opts.full_refresh:
        parts.append("full refresh")
    elif opts.since:
        parts.append(f"since {opts.since.isoformat()}")
    if opts.limit:
        parts.append(f"limit {opts.limit}")
    return ", ".join(parts)


def report(name, r: ProviderResult, opts) -> None:
    """The unit's summary line (and a dry run's sample rows)."""
    counts = (f"fetched {r.fetched}, {'would write' if opts.dry_run else 'wrote'} {r.written}, "
              f"duplicates {r.duplicates}, quarantined {r.quarantined}, "
              + (f"deletions {r.deleted}, " if r.deleted else "")
              + f"{r.requests} requests ({r.cache_hits} from cache), {r.duration_s:.1f}s")
    if r.status == "failed":
        log.error("%s: FAILED after %s: %s", name, counts, r.error)
        if r.traceback:
            log.error("%s: traceback in %s", name, r.traceback)
        if r.traceback_error:
            log.error("%s: %s", name, r.traceback_error)
    elif r.status == "locked":
        log.warning("%s: skipped, %s", name, r.reason)
    elif r.status == "skipped":
        log.warning("%s: skipped: %s", name, r.reason)
    elif r.status == "partial":
        log.warning("%s: partial, %s: %s", name, counts, r.reason)
    else:
        log.info("%s: %s, %s", name, r.status, counts)
    for row in r.samples:
        ident, amount, label = ((row.order_id, row.total_price, row.name or "") if hasattr(row, "order_id")
                                else (row.source_id, row.price, row.title))
        price = f"{amount:.2f} {row.currency}" if amount is not None else "-"
        click.echo(f"  would write  {ident:<36} {price:>14}  {label[:60]}")

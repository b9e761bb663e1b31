"""One run: every selected provider's unit, one after another, then the run's record.

Per unit: open it (lock, state, writer, quarantine, recovered), fetch -> normalize -> dedup ->
write, commit (data first, state last), report. A failing unit rolls back alone.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import islice

from connectors import CONNECTORS
from connectors.http import CircuitOpen, HttpSettings
from connectors.redact import Redactor
from connectors.shopify_bulk import Checkpoint
from normalize import amazon as amazon_normalizer
from normalize import ebay as ebay_normalizer
from normalize import shopify as shopify_normalizer
from pipelines import outcome
from pipelines.config import PROVIDERS, Settings
from pipelines.stages import BATCH_SIZE, Prefetch, Progress, ProviderResult, batched, keep_new, lean_gc, normalize_batch
from storage.crash import crash_point
from storage.destination import LocalDestination, LocalUnit, Locked

NORMALIZERS = {"shopify": shopify_normalizer, "amazon": amazon_normalizer, "ebay": ebay_normalizer}
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


def execute(settings: Settings, opts: RunOptions, rt: Runtime) -> tuple[int, dict]:
    """Run every selected provider, then record the run; returns (exit code, record)."""
    started = rt.now()
    run_id = started.strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)
    selected = opts.providers or tuple(p for p in PROVIDERS if p not in settings.not_configured)
    destination = LocalDestination(settings.data_dir, settings.output_file_mode, settings.rows_per_file)
    results: dict[str, ProviderResult] = {}
    for name in PROVIDERS:
        if name not in selected:
            if name in settings.not_configured:
                results[name] = outcome.not_configured(name, settings.not_configured[name])
            continue
        log.info("%s: starting (%s)", name, outcome.mode(opts))
        with lean_gc():
            results[name] = result = run_unit(destination, name, settings, opts, run_id, started, rt)
        outcome.report(name, result, opts)
    return outcome.record_run(settings, opts, run_id, started, rt.now(), selected, results)


def run_unit(destination: LocalDestination, name: str, settings: Settings, opts: RunOptions, run_id: str,
             started: datetime, rt: Runtime) -> ProviderResult:
    """One provider's unit under its lock; a failure rolls back its files and state and fails it alone."""
    result, clock_start, http = ProviderResult(), time.monotonic(), None
    try:
        with destination.open_unit(name, run_id=run_id, day=started.date(), dry_run=opts.dry_run) as unit:
            http = CONNECTORS[name].make_client(settings.provider(name), _http_settings(settings, name, opts),
                                                sleep=rt.sleep, now=rt.now, clock=rt.clock)
            extract_load(unit, name, settings, opts, run_id, rt, http, result)
    except Locked as exc:
        return ProviderResult(status="locked", reason=str(exc))
    except Exception as exc:
        result.status, result.written, result.files = "failed", 0, []
        # Redacted like the logs: a library may word its error with a URL or header it was given.
        result.error_type, result.error = type(exc).__name__, Redactor(settings.secrets())(str(exc))
        result.circuit = "open" if isinstance(exc, CircuitOpen) else None
        result.traceback, result.traceback_error = outcome.write_traceback(settings, run_id, name, exc)
    finally:
        if http is not None:
            http.close()
            _take_stats(result, http.stats)
        result.duration_s = time.monotonic() - clock_start
    return result


def extract_load(unit: LocalUnit, name: str, settings: Settings, opts: RunOptions, run_id: str, rt: Runtime,
                 http, result: ProviderResult) -> None:
    """fetch -> normalize -> dedup -> write, then commit the files, the index and the high-water mark."""
    connector, normalizer, account = CONNECTORS[name], NORMALIZERS[name], settings.provider(name)
    stored_mark = high_water_mark = _stored_mark(unit.state)
    records = connector.iter_records(http, account, since=_since(stored_mark, opts), lookback=settings.lookback,
                                     clock=rt.clock, full_refresh=opts.full_refresh,
                                     checkpoint=Checkpoint(unit.meta), hints=unit.meta, known=unit.known)
    if opts.limit is None:  # a limited run must not fetch a page ahead that it will not use
        records = Prefetch(records)
    progress = Progress(name)
    for raws in batched(islice(records, opts.limit), BATCH_SIZE):
        crash_point("after_fetch")
        result.fetched += len(raws)
        high_water_mark = max([high_water_mark, *map(connector.record_cursor, raws)], key=_cursor_key)
        products = normalize_batch(raws, normalizer, account=account.account, run_id=run_id,
                                   fetched_at=rt.now(), quarantine=unit.quarantine)
        new = keep_new(products, unit.state)
        unit.write(new)
        result.written += len(new)
        result.duplicates += len(products) - len(new)
        result.quarantined = unit.quarantine.count
        progress.update(result)
    _quality_gate(result, settings.quarantine_max_percent)
    if opts.limit:  # a partial look at the catalog must not move the mark past what it skipped
        high_water_mark = stored_mark
    result.files = unit.commit({"high_water_mark": _cursor_json(high_water_mark)})
    result.high_water_mark = _cursor_json(high_water_mark)
    result.samples = unit.samples


def _take_stats(result: ProviderResult, stats) -> None:
    result.requests, result.cache_hits, result.retries = stats.requests, stats.cache_hits, stats.retries
    result.throttle_wait_s, result.partial_errors, result.warnings = stats.throttle_wait_s, stats.partial_errors, stats.warnings
    if stats.partial_reason and result.status == "ok":  # a quota stopped it: what came is kept
        result.status, result.reason = "partial", stats.partial_reason


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


def _stored_mark(state):
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

"""One run: every selected unit of work (provider, account, stream), one after another, then the
run's record.

Per unit: open it (lock, state, writer, quarantine, recovered), fetch -> normalize -> dedup ->
write, commit (data first, state last), report. A failing unit rolls back alone.
"""

from __future__ import annotations

import logging
import secrets
import time
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import TYPE_CHECKING

from connectors.shopify_auth import MissingScope
from connectors.shopify_graphql import AccessDenied
from connectors.http import CircuitOpen, HttpSettings, Pacer
from connectors.redact import Redactor, remember
from connectors.shopify_bulk import Checkpoint, DownloadedResult
from pipelines import accounts, outcome, stages
from pipelines.config import Settings
from pipelines.runtime import Runtime
from pipelines.streams import UNAVAILABLE, stream_of
from pipelines.stages import (BATCH_SIZE, Prefetch, Progress, ProviderResult, batched, batches, keep_new, keep_new_rows,
                              lean_gc, normalize_batch, read_here)
from storage.crash import crash_point
from storage.destination import DestinationSettings, Locked, open_destination
from storage.paths import TABLES, UnitId

if TYPE_CHECKING:  # pyarrow: imported where a run needs it
    from pipelines.bulk_split import Job, NormalizedBatch

log = logging.getLogger("pipeline")


class QualityGateFailed(Exception):
    """Too many of a provider's records were quarantined to trust the rest."""


class DestinationUnavailable(Exception):
    """The destination cannot take a run (unreachable, or a store that ignores conditional writes:
    `refused`, a configuration error); nothing was written."""

    def __init__(self, message: str, refused: bool):
        super().__init__(message)
        self.refused = refused


@dataclass(frozen=True)
class RunOptions:
    providers: tuple[str, ...] | None
    limit: int | None
    dry_run: bool
    no_cache: bool
    full_refresh: bool
    since: datetime | None
    fail_on_anomaly: bool = False
    accounts: tuple[str, ...] | None = None  # --accounts: provider:name or name
    streams: tuple[str, ...] | None = None  # --streams (over PIPELINE_STREAMS and each account's own)


def select_units(settings: Settings, opts: RunOptions) -> list[UnitId]:
    """The units this run works on: every configured one, narrowed by --providers, --accounts and
    --streams; ValueError names an unknown or ambiguous account (listing the choices) or says why
    none of the streams named can run (Amazon has no orders)."""
    units = settings.units(opts.streams)
    if opts.providers:
        units = [u for u in units if u.provider in opts.providers]
    units = accounts.select(units, opts.accounts)
    settings.check_one_orders_unit_per_seller(units)
    unavailable = {UNAVAILABLE[(u.provider, u.stream)] for u in units if (u.provider, u.stream) in UNAVAILABLE}
    if opts.streams and units and len(unavailable) and all((u.provider, u.stream) in UNAVAILABLE for u in units):
        raise ValueError(f"--streams {','.join(opts.streams)}: nothing selected can run: " + "; ".join(sorted(unavailable)))
    return units


def execute(settings: Settings, opts: RunOptions, rt: Runtime) -> tuple[int, dict]:
    """Run every selected unit, one after another, then record the run; returns (exit code, record)."""
    started = rt.now()
    run_id = started.strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)
    selected = select_units(settings, opts)
    destination = open_destination(settings.destination or DestinationSettings(
        settings.data_dir, settings.logs_dir, file_mode=settings.output_file_mode, rows_per_file=settings.rows_per_file))
    prepare_destination(destination, settings, sorted({t for u in selected for t in TABLES[u.stream]}),
                        dry_run=opts.dry_run)
    skipped = {p: outcome.not_configured(p, reason) for p, reason in settings.not_configured.items()
               if not opts.providers or p in opts.providers}
    results: dict[UnitId, ProviderResult] = {}
    pacers: dict[tuple, Pacer] = {}  # one per credential, whichever accounts share it
    for unit in selected:
        log.info("%s: starting (%s)", unit, outcome.mode(opts))
        with lean_gc():
            results[unit] = result = run_unit(destination, unit, settings, opts, run_id, started, rt, pacers)
        outcome.report(unit, result, opts)
    return outcome.record_run(settings, opts, run_id, started, rt.now(), results, skipped, destination.history)


def prepare_destination(destination, settings: Settings, tables: list[str], *, dry_run: bool) -> None:
    """Credentials it resolved join the redaction set; then the probe and the units' tables, before any
    unit. DestinationUnavailable (redacted) when the destination cannot take a run."""
    try:
        for secret in destination.secrets():
            remember(secret)
        destination.prepare(dry_run=dry_run, tables=tables)
    except Exception as exc:
        from storage.lake.objects import StoreRefused

        message = Redactor(settings.secrets())(str(exc))
        raise DestinationUnavailable(f"the destination {destination.url} cannot take this run: {message}",
                                     refused=isinstance(exc, StoreRefused)) from exc


def run_unit(destination, unit: UnitId, settings: Settings, opts: RunOptions, run_id: str,
             started: datetime, rt: Runtime, pacers: dict | None = None) -> ProviderResult:
    """One unit under its lock; a failure rolls back its files and state and fails it alone."""
    result, clock_start, http = ProviderResult(), time.monotonic(), None
    account = settings.account(unit)
    if (unit.provider, unit.stream) in UNAVAILABLE:
        return ProviderResult(status="skipped", reason=UNAVAILABLE[(unit.provider, unit.stream)])
    if unit.stream == "orders" and settings.orders_key_problem:
        return ProviderResult(status="failed", error_type="UnresolvedReference", error=settings.orders_key_problem)
    if not account.ready:  # a secret reference that did not resolve: this unit fails, the others run
        return ProviderResult(status="failed", reason=account.reason, error_type="UnresolvedReference",
                              error=account.reason)
    try:
        heir = settings.default_accounts().get(unit.provider) == unit.account and unit.stream == "products"
        with destination.open_unit(unit, run_id=run_id, day=started.date(), dry_run=opts.dry_run, heir=heir) as store:
            pacer = (pacers if pacers is not None else {}).setdefault(_credential(unit, account.settings), Pacer())
            connector = stream_of(unit.provider, unit.stream).connector
            http = connector.make_client(account.settings, _http_settings(settings, unit, opts),
                                         counters=store.counters,
                                         sleep=rt.sleep, now=rt.now, clock=rt.clock, pacer=pacer)
            extract_load(store, unit, account.settings, settings, opts, run_id, rt, http, result)
    except Locked as exc:
        return ProviderResult(status="locked", reason=str(exc))
    except (MissingScope, AccessDenied) as exc:
        if unit.stream == "orders" and not (opts.streams and unit.stream in opts.streams):
            # A stream from the configuration that this app may not read: said, not failed. Named
            # on the command line, its absence is a failure like any other.
            result.status, result.reason = "skipped", Redactor(settings.secrets())(str(exc))
        else:
            _failed(result, exc, settings, run_id, unit)
    except Exception as exc:
        _failed(result, exc, settings, run_id, unit)
    finally:
        if http is not None:
            http.close()
            _take_stats(result, http.stats)
        result.duration_s = time.monotonic() - clock_start
    return result


def extract_load(store, unit: UnitId, account, settings: Settings, opts: RunOptions, run_id: str,
                 rt: Runtime, http, result: ProviderResult) -> None:
    """fetch -> normalize -> dedup -> write, then commit the files, the index and the high-water mark."""
    stream = stream_of(unit.provider, unit.stream)
    stored_mark = high_water_mark = _stored_mark(store.state)
    companion = None  # the deletions' first page, asked for beside the records' first page
    if stream.deletions is not None and stream.deletions.companion is not None:
        companion = stream.deletions.companion(since=_deletions_since(store, opts), lookback=settings.lookback)
    records = stream.connector.iter_records(
        http, account, since=_since(stored_mark, opts), lookback=getattr(settings, stream.lookback), clock=rt.clock,
        full_refresh=opts.full_refresh, checkpoint=Checkpoint(store.meta),  # one per unit: its state is its own
        hints=store.meta, known=store.known, companion=companion, **_stream_options(settings, unit))
    if opts.limit is None:  # a limited run must not fetch a page ahead that it will not use
        records = Prefetch(records)
    workers = min(settings.bulk_workers, stages.CORES)  # at most one a core
    if opts.limit is not None or workers < 2:  # a downloaded result read in this process
        records = read_here(records)
    progress = Progress(str(unit))
    worker = None  # a long crawl's batches are normalized by a worker process (pipelines/paging_split.py)
    try:
        for n, raws in enumerate(batches(islice(records, opts.limit), BATCH_SIZE)):
            if isinstance(raws, DownloadedResult):  # a bulk result on disk: worker processes normalize it
                high_water_mark = max(high_water_mark, load_downloaded(store, stream, raws, account, run_id, rt,
                                                                       result, progress, workers), key=_cursor_key)
                continue
            crash_point("after_fetch")
            result.fetched += len(raws)
            if worker is None and n >= stages.PAGING_WORKER_AFTER and workers >= 2 and opts.limit is None:
                from pipelines.paging_split import PagingWorker  # pyarrow: a run with a page or two never needs it

                worker = PagingWorker(_job(stream, account, run_id, rt))
            if worker is not None and worker.is_ready():
                for batch in worker.send(raws, rt.now()):
                    high_water_mark = max(high_water_mark, load_normalized(store, stream, batch, result, progress),
                                          key=_cursor_key)
                continue
            high_water_mark = max([high_water_mark, *map(stream.connector.record_cursor, raws)], key=_cursor_key)
            normalized = normalize_batch(raws, stream.normalize, stream.identity, account=account.account,
                                         run_id=run_id, fetched_at=rt.now(), quarantine=store.quarantine)
            new = keep_new(normalized, store.state)
            store.write([stream.rows(record) for record in new])
            result.written += len(new)
            result.duplicates += len(normalized) - len(new)
            result.quarantined = store.quarantine.count
            progress.update(result)
        for batch in worker.drain() if worker is not None else ():
            high_water_mark = max(high_water_mark, load_normalized(store, stream, batch, result, progress),
                                  key=_cursor_key)
    finally:
        if worker is not None:
            worker.close()
    meta = {"high_water_mark": _cursor_json(high_water_mark)}
    if stream.deletions is not None:
        meta["deletions_mark"] = extract_deletions(store, stream, account, settings, opts, run_id, rt, http, result,
                                                   companion.answer if companion is not None else None)
    _quality_gate(result, settings.quarantine_max_percent)
    if opts.limit:  # a partial look at the catalog must not move the mark past what it skipped
        high_water_mark = stored_mark
        meta = {"high_water_mark": _cursor_json(stored_mark), "deletions_mark": store.state.get("deletions_mark")}
    result.files = store.commit({k: v for k, v in meta.items() if v is not None})
    result.high_water_mark = _cursor_json(high_water_mark)
    result.samples = store.samples


def _job(stream, account, run_id: str, rt: Runtime) -> Job:
    """What a worker process needs to normalize this unit's records as this process would."""
    from pipelines.bulk_split import Job

    return Job(stream.normalize, stream.identity, stream.connector.record_cursor, stream.tables, account.account,
               run_id, rt.now())


def load_downloaded(store, stream, downloaded: DownloadedResult, account, run_id: str, rt: Runtime,
                    result: ProviderResult, progress: Progress, workers: int):
    """normalize (in worker processes) -> dedup -> write for a downloaded bulk result, batch by
    batch as for records; returns the greatest cursor seen."""
    high_water_mark = None
    job = _job(stream, account, run_id, rt)
    from pipelines.bulk_split import normalized_batches

    with closing(normalized_batches(downloaded, job, workers)) as normalized:  # closed: workers stop
        for batch in normalized:
            crash_point("after_fetch")
            result.fetched += batch.fetched
            high_water_mark = max(high_water_mark, load_normalized(store, stream, batch, result, progress),
                                  key=_cursor_key)
    return high_water_mark


def load_normalized(store, stream, batch: NormalizedBatch, result: ProviderResult, progress: Progress):
    """dedup -> write for a batch normalized in another process; returns its greatest cursor."""
    for entry in batch.rejects:
        store.quarantine.add(**entry)
    new = keep_new_rows(batch, store.state)
    for table, rows in new.items():
        store.write_table(table, rows)
    result.written += new[stream.tables[0]].num_rows
    result.duplicates += len(batch.versions) - new[stream.tables[0]].num_rows
    result.quarantined = store.quarantine.count
    progress.update(result)
    return batch.cursor


def extract_deletions(store: LocalUnit, stream, account, settings: Settings, opts: RunOptions, run_id: str,
                      rt: Runtime, http, result: ProviderResult, first_page: dict | None = None) -> str | None:
    """The products the provider deleted since the last run (lookback included), written to
    product_deletions like versions (a re-read event writes nothing); returns the new mark.
    `first_page`: their first page, when it was asked for beside the records' first page."""
    deletions, stored = stream.deletions, store.state.get("deletions_mark")
    mark = datetime.fromisoformat(stored) if stored else None
    events = deletions.iter_records(http, account, since=_deletions_since(store, opts), lookback=settings.lookback,
                                    clock=rt.clock, first_page=first_page)
    result.deleted = 0
    for raws in batched(events, BATCH_SIZE):
        mark = max(filter(None, [mark, *map(deletions.cursor, raws)]), default=None)
        records = normalize_batch(raws, deletions.normalize, deletions.identity, account=account.account,
                                  run_id=run_id, fetched_at=rt.now(), quarantine=store.quarantine)
        new = keep_new(records, store.state)
        store.write([record.rows() for record in new])
        result.deleted += len(new)
        result.quarantined = store.quarantine.count
    return mark.isoformat() if mark else None


def _deletions_since(store, opts: RunOptions) -> datetime | None:
    stored = store.state.get("deletions_mark")
    return None if opts.full_refresh or not stored else datetime.fromisoformat(stored)


def _stream_options(settings: Settings, unit: UnitId) -> dict:
    """What a stream's connector takes beyond the common arguments."""
    if unit.stream == "orders":
        key = settings.orders_customer_key
        return {"customer_key": key.get_secret_value().encode() if key is not None else None}
    return {}


def _failed(result: ProviderResult, exc: Exception, settings: Settings, run_id: str, unit: UnitId) -> None:
    result.status, result.written, result.files = "failed", 0, []
    # Redacted like the logs: a library may word its error with a URL or header it was given.
    result.error_type, result.error = type(exc).__name__, Redactor(settings.secrets())(str(exc))
    result.circuit = "open" if isinstance(exc, CircuitOpen) else None
    result.traceback, result.traceback_error = outcome.write_traceback(settings, run_id, unit, exc)


def _credential(unit: UnitId, account) -> tuple:
    """What a provider applies its request rate to: the Amazon credential, the eBay keyset, the
    Shopify shop (each shop has its own bucket)."""
    if unit.provider == "amazon":
        return unit.provider, account.credential_id
    if unit.provider == "ebay":
        return unit.provider, account.client_id or "static-token"
    return unit.provider, unit.account


def _take_stats(result: ProviderResult, stats) -> None:
    result.requests, result.cache_hits, result.retries = stats.requests, stats.cache_hits, stats.retries
    result.notes = dict(stats.notes) or None
    result.throttle_wait_s, result.partial_errors, result.warnings = stats.throttle_wait_s, stats.partial_errors, stats.warnings
    if stats.partial_reason and result.status == "ok":  # a quota stopped it: what came is kept
        result.status, result.reason = "partial", stats.partial_reason


def _http_settings(settings: Settings, unit: UnitId, opts: RunOptions) -> HttpSettings:
    return HttpSettings(
        connect_timeout_s=settings.connect_timeout_s, read_timeout_s=settings.read_timeout_s,
        deadline_s=settings.request_deadline_s, max_attempts=settings.max_attempts,
        max_total_wait_s=settings.max_total_wait_s, cache_ttl=settings.cache_ttl,
        breaker_threshold=settings.breaker_threshold,
        # The cache serves development runs (--dry-run, --limit): a run that writes data always
        # asks the API afresh and stores nothing, so no scheduled run can replay old answers.
        cache_dir=(settings.cache_dir / unit.provider / unit.account
                   if (opts.dry_run or opts.limit) and not opts.no_cache else None),
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

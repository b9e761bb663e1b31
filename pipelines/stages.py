"""The stages between a connector and the Parquet writer, and the per-provider counters."""

from __future__ import annotations

import contextlib
import gc
import os
import queue
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from itertools import islice

from connectors.local import marked_local
from normalize import Rejected
from normalize.dedup import raw_hash
from storage.quarantine import Quarantine
from storage.state import ProviderState

BATCH_SIZE = 500  # records per normalize-dedup-write step: small enough that memory stays flat
# Worker processes a run may start: at most one a core it may use (PIPELINE_BULK_WORKERS asks for
# more or fewer); a paged crawl hands its batches to one after this many (pipelines/paging_split.py).
CORES = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
PAGING_WORKER_AFTER = 2


@dataclass
class ProviderResult:
    """One provider's entry in the run log."""

    status: str = "ok"  # ok, partial, failed, skipped, locked
    reason: str | None = None
    fetched: int = 0
    quarantined: int = 0
    duplicates: int = 0
    written: int = 0
    deleted: int | None = None  # products the provider said it deleted (Shopify), new this run
    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    throttle_wait_s: float = 0.0
    partial_errors: int = 0
    warnings: list[str] = field(default_factory=list)
    notes: dict | None = None  # facts about the run of this unit (Shopify orders: how far back it can see)
    high_water_mark: list | None = None
    files: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    cold_start: bool | None = None  # fewer successful full runs than the anomaly window
    anomalies: list | None = None
    circuit: str | None = None  # "open" when the circuit breaker stopped calls to this provider
    error_type: str | None = None
    error: str | None = None
    traceback: str | None = None
    traceback_error: str | None = None  # why the traceback file could not be written
    samples: list = field(default_factory=list, repr=False)  # dry runs: rows that would be written

    def as_log(self) -> dict:
        entry = asdict(self)
        del entry["samples"]
        entry["throttle_wait_s"] = round(self.throttle_wait_s, 3)
        entry["duration_s"] = round(self.duration_s, 3)
        return {k: v for k, v in entry.items() if v is not None}


def batched(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def batches(records: Iterable, size: int) -> Iterator:
    """Lists of up to `size` records, and a downloaded bulk result on its own the moment it comes
    (the connector keeps its file only until it is asked for the next record)."""
    from connectors.shopify_bulk import DownloadedResult  # here: `--help` imports this module, not HTTP

    batch = []
    for record in records:
        if isinstance(record, DownloadedResult):
            if batch:
                yield batch
                batch = []
            yield record
            continue
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def read_here(records: Iterable) -> Iterator:
    """The records, with a downloaded bulk result's read in this process rather than handed on whole."""
    from connectors.shopify_bulk import DownloadedResult  # here: `--help` imports this module, not HTTP

    for record in records:
        if isinstance(record, DownloadedResult):
            yield from record
        else:
            yield record


def normalize_batch(raws: list, normalize, identity: tuple[str, int], *, account: str, fetched_at: datetime,
                    run_id: str, quarantine: Quarantine) -> list:
    """The normalized records (products, order versions) for the raw records that pass; the others
    go to quarantine with their reason. `identity` is (source, normalizer version), for their hash."""
    records = []
    for raw in raws:
        try:
            records.append(normalize(raw, account=account, fetched_at=fetched_at, run_id=run_id))
        except Rejected as exc:
            quarantine.add(reason=exc.reason, field=exc.field, raw_hash=_safe_hash(identity, raw),
                           record=raw, run_id=run_id)
        except Exception as exc:  # a normalizer bug must not sink the batch: quarantine and count
            quarantine.add(reason=f"normalizer error: {type(exc).__name__}", field=None,
                           raw_hash=_safe_hash(identity, raw), record=raw, run_id=run_id)
    return records


def _safe_hash(identity: tuple[str, int], raw) -> str:
    try:
        return raw_hash(*identity, raw)
    except (TypeError, ValueError):
        return ""


def keep_new(products: list, state: ProviderState) -> list:
    """The records whose raw_hash differs from the last one written for their source_id (by an
    earlier run or this one): a re-read of the latest version is dropped, a revert is kept. Every
    record's version is noted: new or duplicate, its content is in the dataset once committed."""
    flags = state.keep_changed([(p.source_id, p.raw_hash) for p in products])
    state.remember_versions([(p.source_id, p.source_updated_at) for p in products])
    return [p for p, new in zip(products, flags) if new]


def keep_new_rows(batch, state: ProviderState) -> dict:
    """What `keep_new` keeps, for a batch normalized in another process (pipelines/bulk_split.py):
    each table's Arrow rows that belong to a new record. The same state calls, in the same order."""
    import pyarrow as pa  # here: `--help` imports this module, not pyarrow

    flags = state.keep_changed([(source_id, digest) for source_id, digest, _ in batch.versions])
    state.remember_versions([(source_id, updated) for source_id, _, updated in batch.versions])
    if all(flags):  # a first run's batches: every row is kept, and filtering nested columns is not free
        return {table: rows for table, (rows, _) in batch.tables.items()}
    new = pa.array(flags, pa.bool_())
    return {table: rows.filter(new.take(owners)) for table, (rows, owners) in batch.tables.items()}


def record_rows(record, tables: tuple[str, ...]) -> dict[str, list]:
    """A normalized record's rows by table: its own `rows()` (an order and its lines), else itself in the first."""
    kind = type(record)
    own = _OWN_ROWS.get(kind)
    if own is None:  # asked of the class once: a miss on a pydantic instance raises inside (3.8 us)
        own = _OWN_ROWS[kind] = callable(getattr(kind, "rows", None))
    return record.rows() if own else {tables[0]: [record]}


_OWN_ROWS: dict[type, bool] = {}


class Progress:
    """A progress line every few seconds, only when a person watches stderr."""

    def __init__(self, provider: str, every_s: float = 5.0, stream=sys.stderr):
        self.provider, self.every_s, self.stream = provider, every_s, stream
        self.enabled = hasattr(stream, "isatty") and stream.isatty()
        self.last = time.monotonic()

    def update(self, result: ProviderResult) -> None:
        if self.enabled and time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            print(f"  {self.provider}: {result.fetched} fetched, {result.written} new so far...",
                  file=self.stream, flush=True)


@contextlib.contextmanager
def lean_gc(gen0_threshold: int = 10_000):
    """Less cyclic garbage collection while records flow: the stages allocate millions of
    short-lived, acyclic objects, and each collection rescanned every long-lived object of the
    libraries loaded at start. Those are frozen out of the collector's sight for the duration and
    collections come every 10,000 allocations, not 700: normalize + Arrow conversion about 20%
    less CPU. Reference counting frees the records as before; thresholds are restored after."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(gen0_threshold, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


_DONE = object()
_HANDOVER = object()  # the worker has stopped; the generator is the consumer's to pull


class Prefetch:
    """Runs a connector's generator in a worker thread, a bounded queue ahead of the consumer, so
    the provider prepares the next page while this process normalizes and writes the last one.

    Records cross in chunks (one queue hand-off per `chunk` records, not per record: each hand-off
    wakes the other thread, and on two cores those wake-ups cost more than the records' own work).
    The queue holds at most `depth` records (memory stays bounded); the connector's exceptions
    reach the consumer unchanged, after the records before them; closing early stops the worker.

    While it runs, the interpreter offers the GIL every 0.5 ms instead of every 5: the worker
    waits on the network and needs the GIL back after each read, and at the default interval it
    queued behind the busy consumer for up to 5 ms each time (at 100k products: about 15%
    faster end to end, measured with bench/bench.py).

    When the connector says its records now come from local disk (connectors.local: a bulk
    result, once downloaded), the worker hands the generator over and this thread pulls the rest
    itself: a thread gains nothing there, and records crossing between two computing threads cost
    15-30 us of CPU each.
    """

    SWITCH_INTERVAL_S = 0.0005

    def __init__(self, records: Iterator, depth: int = 2000, chunk: int = 100):
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch_interval, self.SWITCH_INTERVAL_S))
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth // chunk))
        self._stop = threading.Event()
        self._records, self._chunk = records, chunk
        self._thread = threading.Thread(target=self._run, name="prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        chunk, error = [], None
        try:
            for record in self._records:
                chunk.append(record)
                if len(chunk) >= self._chunk or marked_local():
                    if not self._put((chunk, None)):
                        return
                    chunk = []
                    if marked_local():  # the generator is suspended here: the consumer takes it over
                        self._put((_HANDOVER, None))
                        return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            error = exc
        if chunk and not self._put((chunk, None)):
            return
        self._put((_DONE, error))

    def __iter__(self):
        try:
            while True:
                records, error = self._queue.get()
                if records is _HANDOVER:
                    sys.setswitchinterval(self._switch_interval)
                    yield from self._records
                    return
                if records is _DONE:
                    if error is not None:
                        raise error
                    return
                yield from records
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        sys.setswitchinterval(self._switch_interval)
        close = getattr(self._records, "close", None)
        if close is not None and not self._thread.is_alive():
            close()

"""A downloaded bulk result normalized by worker processes, for the second core.

Reading and normalizing a bulk result costs about 110 us of CPU a product, dedup and writing
about 40 (BENCHMARKS.md): in one process one core does all of it while the other idles. Here the
file is cut at product lines into one byte range per worker (connectors/shopify_bulk.py,
DownloadedResult); each worker, a fresh interpreter (spawn: the parent may have run threads),
checks that its range is in Shopify's grouped order, then reads, assembles and normalizes it and
sends each batch back in file order: the valid rows as Arrow, each record's (source_id, raw_hash,
source_updated_at), the rejected records with their reasons, the greatest cursor. The run dedups,
quarantines and writes them as it does records normalized in its own process (pipelines/run.py).

A pipe per worker holds about one batch, so memory stays bounded whatever the file's size. A worker
that raises, dies or falls silent fails the unit: the run rolls back as for any failure, and the
bulk operation's checkpoint stays, so the next run downloads the same result again. If any range
is not grouped, the workers stop and this process reads the whole file the usual way (the on-disk
index takes any order).
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import wait

import pyarrow as pa

from pipelines.stages import BATCH_SIZE, CORES, batched, lean_gc, normalize_batch, record_rows
from storage.crash import crash_point
from storage.parquet import SCHEMAS, to_table

log = logging.getLogger("pipeline")

WORKERS = CORES  # at most one worker a core this process may use (PIPELINE_BULK_WORKERS asks for more or fewer)
# A worker says something every batch (a few ms) once its range is checked (seconds at 1M
# products): this long a silence means it hangs.
SILENCE_S = 300.0


class WorkerFailed(Exception):
    """A worker process raised, died or fell silent; nothing of the unit was committed."""


@dataclass(frozen=True)
class Job:
    """What a worker needs to normalize records as the run would (all picklable by reference)."""

    normalize: Callable
    identity: tuple[str, int]
    cursor: Callable  # raw record -> its cursor, or None
    tables: tuple[str, ...]
    account: str
    run_id: str
    fetched_at: datetime


@dataclass
class NormalizedBatch:
    """One batch of raw records, normalized: `tables` holds each table's rows as Arrow and, per
    table, which of `versions` each row belongs to; `versions` is each valid record's (source_id,
    raw_hash, source_updated_at), `rejects` each rejected one's quarantine entry."""

    fetched: int
    versions: list[tuple[str, str, datetime | None]]
    tables: dict[str, tuple[pa.Table, pa.Array]]
    rejects: list[dict]
    cursor: tuple | None


class _Rejects:
    """Stands in for the quarantine in a worker: keeps each entry for the run to add."""

    def __init__(self):
        self.entries, self.count = [], 0

    def add(self, **entry) -> None:
        self.entries.append(entry)
        self.count += 1


def normalize_to_arrow(raws: list, job: Job) -> NormalizedBatch:
    """A batch of raw records normalized as `normalize_batch` does, its rows as Arrow."""
    rejects = _Rejects()
    records = normalize_batch(raws, job.normalize, job.identity, account=job.account, fetched_at=job.fetched_at,
                              run_id=job.run_id, quarantine=rejects)
    rows: dict[str, list] = {table: [] for table in job.tables}
    owners: dict[str, list] = {table: [] for table in job.tables}
    for n, record in enumerate(records):
        for table, table_rows in record_rows(record, job.tables).items():
            rows[table] += table_rows
            owners[table] += [n] * len(table_rows)
    cursors = [c for c in map(job.cursor, raws) if c is not None]
    return NormalizedBatch(
        fetched=len(raws),
        versions=[(r.source_id, r.raw_hash, r.source_updated_at) for r in records],
        tables={t: (to_table(rows[t], SCHEMAS[t]), pa.array(owners[t], pa.int32())) for t in job.tables},
        rejects=rejects.entries, cursor=max(cursors, default=None))


def normalized_batches(downloaded, job: Job, workers: int = WORKERS) -> Iterator[NormalizedBatch]:
    """The downloaded result's records normalized by `workers` processes, each worker's batches in
    file order (the workers' batches interleave). WorkerFailed if one fails."""
    context = multiprocessing.get_context("spawn")
    procs, conns = {}, []
    try:
        for n, (start, end) in enumerate(downloaded.ranges(workers)):
            mine, theirs = context.Pipe(duplex=False)
            proc = context.Process(target=_work, args=(downloaded, start, end, job, theirs),
                                   name=f"bulk-worker-{n}", daemon=True)
            start_worker(proc)
            theirs.close()
            procs[mine] = proc
            conns.append(mine)
        if not all([receive(conn, procs[conn]) for conn in conns]):  # each worker's first word: grouped?
            log.info("the bulk result is not in grouped order: read in one process")
            stop_workers(procs.values())
            yield from (normalize_to_arrow(raws, job) for raws in batched(downloaded, BATCH_SIZE))
            return
        while conns:
            ready = wait(conns, timeout=SILENCE_S)
            if not ready:
                raise WorkerFailed(f"no word from the bulk result's worker processes in {SILENCE_S:g} s")
            for conn in ready:
                batch = receive(conn, procs[conn])
                if batch is None:
                    conns.remove(conn)
                else:
                    yield batch
    finally:
        stop_workers(procs.values())
        for conn in procs:
            conn.close()


def start_worker(proc) -> None:
    """Start a spawned worker without the parent's main script run again in it.

    spawn runs the script the run was started with once more in the child (as __mp_main__), for
    anything defined there to unpickle. A worker's target and job are all importable by name, and
    the entrypoint's command-line modules cost it 0.1-0.2 s of start-up, while the run normalizes
    its batches itself: the script's path and name are hidden while the process starts, and the
    child begins as under `python -c`."""
    main = sys.modules["__main__"]
    path, spec = main.__dict__.pop("__file__", None), main.__spec__
    main.__spec__ = None
    try:
        proc.start()
    finally:
        main.__spec__ = spec
        if path is not None:
            main.__file__ = path


def receive(conn, proc, work: str = "its part of the bulk result", doing: str = "reading the bulk result",
            then: str = ""):
    """The worker's next message; WorkerFailed if it died or raised (the words name its work and
    what the person reading it may do)."""
    try:
        message = conn.recv()
    except (EOFError, OSError):
        proc.join(timeout=5)
        raise WorkerFailed(f"{proc.name} ended without finishing {work} "
                           f"(exit code {proc.exitcode}); nothing of it was committed{then}") from None
    if isinstance(message, WorkerFailure):
        raise WorkerFailed(f"{proc.name} failed {doing}: {message.error}{then}")
    return message


def stop_workers(procs) -> None:
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)


@dataclass(frozen=True)
class WorkerFailure:
    error: str


def _work(downloaded, start: int, end: int, job: Job, conn) -> None:
    """A worker: its range's verdict (grouped or not), then its batches in file order, then None."""
    try:
        with lean_gc():
            grouped = downloaded.grouped(start, end)
            conn.send(grouped)
            if grouped:
                for raws in batched(downloaded.products(start, end), BATCH_SIZE):
                    crash_point("in_bulk_worker")
                    conn.send(normalize_to_arrow(raws, job))
                conn.send(None)
    except BaseException as exc:  # noqa: BLE001 - reported to the run, which fails the unit
        report_failure(conn, exc)
    finally:
        conn.close()


def report_failure(conn, exc: BaseException) -> None:
    """A worker's last word: what it raised, for the run to fail the unit with."""
    try:
        conn.send(WorkerFailure(f"{type(exc).__name__}: {exc}"))
    except (OSError, ValueError):
        pass  # the run has gone (it stopped reading): nothing to tell

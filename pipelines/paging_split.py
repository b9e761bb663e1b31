"""A long paged crawl normalized in a worker process, for the second core.

Paging keeps one core busy with the HTTP answers, their JSON and the crawl, and the same core then
normalizes, dedups and writes each batch. Once a crawl has filled PAGING_WORKER_AFTER batches (a
run that finds little never starts a process, nor imports this module), a worker process is started
beside it; while it starts, the batches go on being normalized here, and once it says it is ready,
each later batch is sent to it (in marshal's format: exact for every value JSON can carry, a NaN or
a 30-digit integer included, and 2.5 times faster to write than pickle's; the run's own work decides
the wall time) and comes back normalized as for a bulk result (pipelines/bulk_split.py: the valid
rows as Arrow, each record's version, the rejects, the greatest cursor), in the order sent, which
the run dedups and writes.

A thread here writes the batches into the worker's pipe, so the run never waits on a busy worker
while the worker waits on it; at most DEPTH batches are out at a time, so memory stays bounded. A
worker that raises, dies or falls silent fails the unit, which rolls back as for any failure.
"""

from __future__ import annotations

import logging
import marshal
import multiprocessing
import pickle
import queue
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime

from pipelines.bulk_split import (SILENCE_S, Job, NormalizedBatch, WorkerFailed, normalize_to_arrow, receive,
                                  report_failure, start_worker, stop_workers)
from pipelines.stages import PAGING_WORKER_AFTER, lean_gc
from storage.crash import crash_point

log = logging.getLogger("pipeline")

DEPTH = 2  # batches sent to the worker and not yet taken back


class PagingWorker:
    """One worker process: batches go in with `send`, come back normalized, in order."""

    def __init__(self, job: Job):
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: this process runs threads
        inbox, self._inbox = context.Pipe(duplex=False)
        self._outbox, outbox = context.Pipe(duplex=False)
        self.proc = context.Process(target=_serve, args=(job, inbox, outbox), name="paging-worker", daemon=True)
        start_worker(self.proc)
        inbox.close()
        outbox.close()
        self.ready, self.failed, self.out = False, False, 0
        self._payloads: queue.Queue = queue.Queue()
        self._writer = threading.Thread(target=self._write, name="paging-worker-feed", daemon=True)
        self._writer.start()

    def is_ready(self) -> bool:
        """True once the worker has started (never waits). One that fails to start (a spawn or
        import problem) has been handed nothing: the run goes on normalizing here."""
        if not self.ready and not self.failed and self._outbox.poll():
            try:
                self.ready = self._receive() == "ready"
            except WorkerFailed as exc:
                log.warning("%s; normalizing in this process instead", exc)
                self.failed = True
        return self.ready

    def send(self, raws: list, fetched_at: datetime) -> Iterator[NormalizedBatch]:
        """Hand the worker a batch; yields the batches it has finished while more than DEPTH are out."""
        try:
            codec, records = "marshal", marshal.dumps(raws)
        except ValueError:  # a value JSON does not make (never from a connector): pickle takes anything
            codec, records = "pickle", pickle.dumps(raws, protocol=pickle.HIGHEST_PROTOCOL)
        self._payloads.put(pickle.dumps((codec, records, fetched_at), protocol=pickle.HIGHEST_PROTOCOL))
        self.out += 1
        while self.out > DEPTH:
            yield self._next()

    def drain(self) -> Iterator[NormalizedBatch]:
        while self.out:
            yield self._next()

    def close(self) -> None:
        stop_workers([self.proc])  # a writer blocked on the pipe then fails and ends
        self._payloads.put(None)
        self._writer.join(timeout=5)
        self._inbox.close()
        self._outbox.close()

    def _next(self) -> NormalizedBatch:
        if not self._outbox.poll(SILENCE_S):
            raise WorkerFailed(f"no word from the paging worker process in {SILENCE_S:g} s")
        batch = self._receive()
        self.out -= 1
        return batch

    def _receive(self):
        return receive(self._outbox, self.proc, "the crawl's batches it was given", "normalizing the crawl's batches",
                       then="; the next run reads the crawl again (PIPELINE_BULK_WORKERS=1 keeps it in the run's "
                            "own process)")

    def _write(self) -> None:
        while (payload := self._payloads.get()) is not None:
            try:
                self._inbox.send_bytes(payload)
            except (OSError, ValueError):
                return  # the worker has gone: the run hears it from the worker's pipe


def _serve(job: Job, inbox, outbox) -> None:
    """The worker: 'ready', then each batch normalized, until the run closes the pipe."""
    try:
        with lean_gc():
            crash_point("paging_worker_start")
            outbox.send("ready")
            while True:
                try:
                    payload = inbox.recv_bytes()
                except EOFError:
                    return
                codec, records, fetched_at = pickle.loads(payload)
                raws = (marshal if codec == "marshal" else pickle).loads(records)
                crash_point("in_paging_worker")
                outbox.send(normalize_to_arrow(raws, replace(job, fetched_at=fetched_at)))
    except BaseException as exc:  # noqa: BLE001 - reported to the run, which fails the unit
        report_failure(outbox, exc)
    finally:
        outbox.close()

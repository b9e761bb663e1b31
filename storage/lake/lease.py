"""A unit's lease in the destination, `_leases/<provider>.<account>.<stream>.json`, instead of a
lock file: a lock file on a dead machine is never released, a lease expires.

Created with put-if-absent; renewed with If-Match every fifth of its duration from a background
thread; deleted with If-Match at the end. Expiry is judged by the store's clock alone: the lease
object's Last-Modified against the Date of the answer that read it, so no worker's clock matters.
A lease whose holder stopped renewing is taken over (If-Match on the expired object) once expired,
and the new holder learns the dead run's id, date and whether it had started committing, which
recovery needs. A holder whose renewal is refused has lost the lease: its commit is refused too.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import datetime, timezone

from storage.lake.objects import PreconditionFailed, StoreError
from storage.paths import UnitId, lease_name

log = logging.getLogger("pipeline.lease")
TAKEOVER_ATTEMPTS = 3


class LeaseLost(StoreError):
    """Another worker took the lease over (this one stalled past its expiry): commit nothing."""


class Lease:
    def __init__(self, objects, unit: UnitId, *, seconds: float, run_id: str, day: str):
        self.objects, self.unit, self.seconds = objects, unit, seconds
        self.name = lease_name(unit)
        self.document = {"run_id": run_id, "day": day, "host": socket.gethostname(), "pid": os.getpid(),
                         "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seconds": seconds}
        self.etag: str | None = None
        self.previous: dict | None = None  # the expired holder's document, when this lease took one over
        self.holder: str = ""  # who holds it, when acquire() failed
        self.lost = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        """Take the lease (taking over an expired one); False while a live holder has it."""
        for _ in range(TAKEOVER_ATTEMPTS):
            try:
                self.etag = self.objects.write_document(self.name, self.document, etag=None)
                return True
            except PreconditionFailed:
                pass
            held, etag, blob = self.objects.read_document(self.name)
            if held is None:  # released between our write and our read: try again
                continue
            age = (blob.store_time - blob.last_modified).total_seconds()
            # Both times have whole seconds: only an age over the duration plus one second is surely expired.
            if age <= float(held.get("seconds", self.seconds)) + 1:
                self.holder = (f"{self.objects.location.uri(self.name)} (run {held.get('run_id')} on "
                               f"{held.get('host')}, pid {held.get('pid')}, renewed {age:.0f} s ago, lease "
                               f"{held.get('seconds')} s)")
                return False
            try:
                self.etag = self.objects.write_document(self.name, self.document, etag=etag)
            except PreconditionFailed:  # renewed or taken over by someone else meanwhile
                continue
            self.previous = held
            log.warning("%s: took over the lease of run %s on %s, expired %.0f s ago", self.unit,
                        held.get("run_id"), held.get("host"), age - float(held.get("seconds", 0)))
            return True
        self.holder = self.holder or self.objects.location.uri(self.name)
        return False

    def renew(self, **marks) -> None:
        """Write the lease again (If-Match), adding `marks`; LeaseLost when someone else holds it now."""
        with self._lock:
            if self.lost:
                raise LeaseLost(f"{self.unit}: the lease {self.objects.location.uri(self.name)} was taken over")
            self.document = {**self.document, **marks, "renewed": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            try:
                self.etag = self.objects.write_document(self.name, self.document, etag=self.etag)
            except PreconditionFailed:
                self.lost = True
                raise LeaseLost(f"{self.unit}: another worker took over the lease {self.objects.location.uri(self.name)} "
                                f"(this run stalled past its {self.seconds:g} s): nothing more is committed") from None

    def start_renewing(self) -> None:
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease {self.unit}", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        interval = self.seconds / 5  # four renewals may fail before the lease expires
        while not self._stop.wait(interval):
            try:
                self.renew()
            except LeaseLost as exc:
                log.error("%s", exc)
                return
            except Exception as exc:  # noqa: BLE001 - a store hiccup: the lease is still good; try next tick
                log.warning("%s: could not renew the lease (will retry): %s", self.unit, exc)

    def release(self, *, keep: bool = False) -> None:
        """Stop renewing and delete the lease (If-Match). `keep` leaves it to expire instead, so the
        next holder runs recovery (data committed, state not)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if keep or self.lost or self.etag is None:
            return
        with self._lock:
            try:
                self.objects.delete(self.name, if_match=self.etag)
            except PreconditionFailed:
                log.warning("%s: the lease changed hands before it was released", self.unit)
            except StoreError as exc:  # it expires on its own
                log.warning("%s: could not release the lease (it expires in %g s): %s", self.unit, self.seconds, exc)
            self.etag = None


"""The run log in the destination, for workers that keep no disk between runs.

Each run's record is one new object, `_history/runs/<started>-<run_id>.json` (never overwritten,
so runs on many workers never conflict). Readers take `_history/compact.json` (folded records,
oldest first) plus every loose record still listed, each run once. A run that finds 32 or more
loose records folds them into the compact document (If-Match, so only one of two folding runs
wins), then deletes exactly those: reading the history costs a few requests whatever its length,
and a record stored while another run folds simply waits, loose, for the next fold. The compact
document keeps the newest 5,000 runs.
"""

from __future__ import annotations

import errno
import json
import logging

from storage.lake.objects import PreconditionFailed, StoreError

log = logging.getLogger("pipeline.lake")
RUNS, COMPACT = "_history/runs/", "_history/compact.json"
FOLD_AT = 32
KEEP = 5000


def record_name(record: dict) -> str:
    started = "".join(ch for ch in record["started_at"][:19] if ch.isdigit())
    return f"{RUNS}{started}-{record['run_id']}.json"


class ObjectHistory:
    def __init__(self, objects):
        self.objects = objects

    @property
    def where(self) -> str:
        return self.objects.location.uri(RUNS)

    def read(self) -> list[dict]:
        """Every run record, oldest first, each run once."""
        loose = self.objects.list(RUNS)
        compact, _ = self._compact()
        records = [d for d, _, _ in map(self.objects.read_document, loose) if d is not None]
        if len(records) < len(loose):  # folded and deleted since the listing: in a newer compact one
            compact, _ = self._compact()
        records += compact
        by_run = {r.get("run_id"): r for r in records if isinstance(r, dict)}
        return sorted(by_run.values(), key=lambda r: (r.get("started_at", ""), r.get("run_id", "")))

    def append(self, record: dict) -> str:
        """Store the run's record; OSError when the store refuses, as a local run log would."""
        name = record_name(record)
        try:
            self.objects.put(name, json.dumps(record, separators=(",", ":"), default=str).encode())
        except StoreError as exc:
            raise OSError(errno.EIO, str(exc)) from exc
        try:
            self._fold()
        except StoreError as exc:  # the record is stored; folding waits for a later run
            log.warning("run history: could not fold loose records: %s", exc)
        return self.objects.location.uri(name)

    def add_many(self, records: list[dict]) -> int:
        """Fold records from elsewhere (a local run log being migrated) into the compact document;
        a run already there is not added twice. Returns how many were new."""
        for _ in range(10):
            compact, etag = self._compact()
            known = {r.get("run_id") for r in compact}
            new = [r for r in records if r.get("run_id") not in known]
            if not new:
                return 0
            merged = sorted([*compact, *new], key=lambda r: (r.get("started_at", ""), r.get("run_id", "")))[-KEEP:]
            try:
                self.objects.write_document(COMPACT, {"records": merged}, etag=etag)
                return len(new)
            except PreconditionFailed:
                continue
        raise StoreError(f"could not update {self.objects.location.uri(COMPACT)}: too many writers at once")

    def _compact(self) -> tuple[list[dict], str | None]:
        document, etag, _ = self.objects.read_document(COMPACT)
        return (document.get("records", []), etag) if document is not None else ([], None)

    def _fold(self) -> None:
        loose = self.objects.list(RUNS)
        if len(loose) < FOLD_AT:
            return
        compact, etag = self._compact()
        records = [d for d, _, _ in map(self.objects.read_document, loose) if d is not None]
        known = {r.get("run_id") for r in compact}
        merged = sorted([*compact, *(r for r in records if r.get("run_id") not in known)],
                        key=lambda r: (r.get("started_at", ""), r.get("run_id", "")))[-KEEP:]
        try:
            self.objects.write_document(COMPACT, {"records": merged}, etag=etag)
        except PreconditionFailed:  # another run folded first
            return
        self.objects.delete_many(loose)

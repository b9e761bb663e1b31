"""An in-memory object store with the conditional-write semantics of S3 and a clock the test moves:
for lease expiry, counters and the probe without a server or a real wait. The documents and the
probe are ObjectStore's own code; only the five primitive calls are faked."""

from __future__ import annotations

import hashlib
import threading
from datetime import datetime, timedelta, timezone

from storage.lake.objects import Blob, ObjectStore, PreconditionFailed, S3Location


class StoreClock:
    """The store's clock (what Last-Modified and Date say); it moves only when told."""

    def __init__(self):
        self.now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now.replace(microsecond=0)  # S3's times have whole seconds

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeObjects(ObjectStore):
    def __init__(self, clock: StoreClock | None = None, honours_conditions: bool = True):
        self.location = S3Location("fake-bucket", "lake", "http://127.0.0.1:9")
        self.clock = clock or StoreClock()
        self.honours_conditions = honours_conditions
        self.objects: dict[str, tuple[bytes, str, datetime]] = {}
        self.writes = 0
        self._lock = threading.Lock()

    def get(self, name: str) -> Blob | None:
        with self._lock:
            found = self.objects.get(name)
        return Blob(found[0], found[1], found[2], self.clock()) if found else None

    def exists(self, name: str) -> bool:
        return name in self.objects

    def put(self, name: str, body: bytes, *, if_match: str | None = None, if_absent: bool = False) -> str:
        with self._lock:
            current = self.objects.get(name)
            if self.honours_conditions and ((if_absent and current) or (if_match and (not current or current[1] != if_match))):
                raise PreconditionFailed(f"{name} changed under us (HTTP 412)")
            etag = '"' + hashlib.md5(body + str(self.writes).encode()).hexdigest() + '"'
            self.objects[name] = (body, etag, self.clock())
            self.writes += 1
            return etag

    def delete(self, name: str, *, if_match: str | None = None) -> None:
        with self._lock:
            current = self.objects.get(name)
            if current and if_match and self.honours_conditions and current[1] != if_match:
                raise PreconditionFailed(f"{name} changed under us (HTTP 412)")
            self.objects.pop(name, None)

    def delete_many(self, names: list[str]) -> None:
        for name in names:
            self.delete(name)

    def list(self, prefix: str, *, start_after: str | None = None, limit: int | None = None) -> list[str]:
        names = sorted(n for n in self.objects if n.startswith(prefix) and (start_after is None or n > start_after))
        return names[:limit] if limit else names

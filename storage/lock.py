"""One lock per data directory and provider, so runs of different providers may overlap.

filelock's FileLock is flock(2) on POSIX (msvcrt locking on Windows): the kernel drops it when the
process dies, SIGKILL included, so a crashed run never leaves a stale lock. The lock file is never
deleted: two processes would then lock different inodes.
"""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock, Timeout


def lock_path(data_dir: Path, provider: str) -> Path:
    return data_dir / ".locks" / f"{provider}.lock"


class ProviderLock:
    def __init__(self, data_dir: Path, provider: str):
        self.path = lock_path(data_dir, provider)
        self._lock: FileLock | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; False if another run holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = FileLock(self.path, mode=0o600, thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return False
        self._lock = lock
        return True

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

"""One lock per unit of work (provider, account, stream), so runs of different units may overlap.

filelock's FileLock is flock(2) on POSIX (msvcrt locking on Windows): the kernel drops it when the
process dies, SIGKILL included, so a crashed run never leaves a stale lock. The lock file is never
deleted: two processes would then lock different inodes.
"""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock, Timeout


class FileLease:
    """A lock file held without waiting: `acquire()` is False when another process holds it."""

    def __init__(self, path: Path):
        self.path = path
        self._lock: FileLock | None = None

    def acquire(self, timeout: float = 0) -> bool:
        """Take the lock, waiting at most `timeout` seconds; False if another run holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = FileLock(self.path, mode=0o600, thread_local=False)
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            return False
        self._lock = lock
        return True

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

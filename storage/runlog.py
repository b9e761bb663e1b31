"""The run log: exactly one JSON line per run, appended with a single write.

`logs/runs.jsonl` is opened with O_APPEND and written with one os.write, so concurrent runs (of
different providers) never interleave and a reader can ignore a torn last line after a crash.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from storage.crash import armed, crash_point


def runlog_path(logs_dir: Path) -> Path:
    return logs_dir / "runs.jsonl"


def encode(record: dict) -> str:
    """The record as its run-log line (one JSON line, newline included)."""
    return json.dumps(record, separators=(",", ":"), default=str) + "\n"


def append(logs_dir: Path, record: dict) -> Path:
    """Append `record` as one line; returns the file's path. Raises OSError when it cannot (a full
    disk, a missing or read-only folder): the caller decides what a run without its record does."""
    logs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = runlog_path(logs_dir)
    line = encode(record).encode()
    if _ends_torn(path):  # a run killed mid-append left half a line: start ours on a fresh one
        line = b"\n" + line
    crash_point("before_runlog")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        if armed("during_runlog"):
            os.write(fd, line[: len(line) // 2])
            crash_point("during_runlog")
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def _ends_torn(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) != b"\n"
    except OSError:  # missing or empty
        return False


def read(logs_dir: Path) -> list[dict]:
    """Every complete run record, oldest first (a torn or foreign line is skipped)."""
    path = runlog_path(logs_dir)
    if not path.is_file():  # missing, or not a file at all (a device): no history to read
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


class LocalRunLog:
    """The run history of a destination on this machine: `logs/runs.jsonl` (an object store keeps
    its own: storage/lake/history.py)."""

    def __init__(self, logs_dir: Path):
        self.logs_dir = logs_dir

    @property
    def where(self) -> str:
        return str(runlog_path(self.logs_dir))

    def read(self) -> list[dict]:
        return read(self.logs_dir)

    def append(self, record: dict) -> str:
        return str(append(self.logs_dir, record))

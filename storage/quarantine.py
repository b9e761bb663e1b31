"""Quarantine: records that broke a data-quality rule, kept with the reason for a person to fix.

<data-dir>/quarantine/source=<provider>/date=<YYYY-MM-DD>/<account>.<stream>.<run_id>.jsonl
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from storage.paths import quarantine_path  # noqa: F401 - the path lives with the others


class Quarantine:
    """Appends rejected records; `enabled=False` (dry runs) only counts them."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled, self.count = path, enabled, 0

    def add(self, *, reason: str, field: str | None, raw_hash: str, record, run_id: str) -> None:
        self.count += 1
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        line = json.dumps({"run_id": run_id, "reason": reason, "field": field, "raw_hash": raw_hash,
                           "record": record}, ensure_ascii=False, default=str) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

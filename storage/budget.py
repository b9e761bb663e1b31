"""A daily call budget shared by every run (dry and limited runs spend real quota too).

<data-dir>/state/<provider>_calls.<keyset>.json holds {"date": "YYYY-MM-DD", "calls": N} for the current
UTC day; each call is counted under a file lock before it is made, and the file is replaced
atomically, so overlapping runs never lose a count.
"""

from __future__ import annotations

import json
import os
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Callable

from filelock import FileLock


class DailyCallBudget:
    def __init__(self, path: Path, limit: int, today: Callable[[], date] = lambda: datetime.now(timezone.utc).date()):
        self.path, self.limit, self.today = path, limit, today

    def spent(self) -> int:
        """Calls counted so far today."""
        return self._read(self.today().isoformat())

    def spend(self) -> bool:
        """Count one call; False (and nothing counted) when today's budget is used up."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        day = self.today().isoformat()
        with FileLock(self.path.with_name(self.path.name + ".lock"), mode=0o600):
            self._inherit_legacy()
            calls = self._read(day)
            if calls >= self.limit:
                return False
            staging = self.path.with_name(f".{self.path.name}.tmp")
            fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump({"date": day, "calls": calls + 1}, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(staging, self.path)
        return True

    def _inherit_legacy(self) -> None:
        """Before accounts, the count lived in <provider>_calls.json, for the one keyset there was:
        the first keyset to count after the upgrade takes it over, so today's spend is not forgotten."""
        provider = self.path.name.split("_calls.", 1)[0]
        legacy = self.path.with_name(f"{provider}_calls.json")
        if legacy != self.path and legacy.exists() and not self.path.exists():
            with FileLock(legacy.with_name(legacy.name + ".lock"), mode=0o600):
                if legacy.exists():
                    os.replace(legacy, self.path)

    def _read(self, day: str) -> int:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return 0
        return int(data.get("calls", 0)) if isinstance(data, dict) and data.get("date") == day else 0


class LocalCounters:
    """A local destination's shared counters, as the connectors ask for them (`daily_budget`)."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir

    def daily_budget(self, file_name: str, limit: int, today: Callable[[], date]) -> DailyCallBudget:
        return DailyCallBudget(self.data_dir / "state" / file_name, limit, today=today)

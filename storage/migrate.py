"""Move a local dataset and its state to another destination (an object store, or a Delta table)
without writing any product twice; the next run there makes the usual one request.

Per unit found on disk (`state/<provider>.<account>.<stream>.sqlite`, or a provider's state from
before units, whose account its rows name), under the unit's local lock and the target's lease:
  1. data: the files its state committed. Into Parquet they are copied as they are (the same
     names: copying twice writes nothing new); into a Delta table they are appended in one commit
     carrying the app transaction `migrate:<unit>`, which a table that has it never takes again.
  2. state, last: the seen hashes, versions, high-water mark and the connector's meta, written
     only where the target has none for the unit (put-if-absent), marked `migrated_from`.
Then the quarantine files, the run history (each run once) and today's shared call counters.

A migration that dies part-way is finished by running it again. Meanwhile the target's state for
the unit says `migrating`, and a run that meets it refuses the unit rather than write it twice
(storage/lake/unit.py). The target is an object store (storage/lake/migration.py).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

from storage.lock import FileLease
from storage.paths import UnitId, legacy_lock_path, lock_path
from storage.state import legacy_owner

log = logging.getLogger("pipeline.migrate")


@dataclass
class Moved:
    unit: UnitId
    files: int = 0
    rows_appended: bool = False
    state: str = "written"  # written | already there


def units_on_disk(data_dir: Path) -> list[tuple[UnitId, Path, list[str], bool]]:
    """(unit, its state file, the files it committed, whether they are from before units) for each
    unit of the dataset."""
    found = []
    for path in sorted((data_dir / "state").glob("*.sqlite")):
        parts = path.name[: -len(".sqlite")].split(".")
        if len(parts) == 1:  # <provider>.sqlite: before units
            account, files = legacy_owner(data_dir, parts[0])
            if account is not None:
                found.append((UnitId(parts[0], account), path, files, True))
            continue
        unit = UnitId(parts[0], ".".join(parts[1:-1]), parts[-1])
        found.append((unit, path, _committed_files(path), False))
    return found


def _committed_files(path: Path) -> list[str]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        return [row[0] for row in con.execute("SELECT path FROM files ORDER BY path")]
    finally:
        con.close()


def _meta(path: Path) -> dict:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        return {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta") if k != "inflight_run"}
    finally:
        con.close()


def migrate(data_dir: Path, logs_dir: Path, target, run_id: str) -> list[Moved]:
    """Move every unit of the local dataset at `data_dir` (and its history) to `target`."""
    moved = [_unit(data_dir, target, run_id, *found) for found in units_on_disk(data_dir)]
    _extras(data_dir, logs_dir, target)
    return moved


def _unit(data_dir: Path, target, run_id: str, unit: UnitId, state_file: Path, files: list[str], legacy: bool) -> Moved:
    from storage.destination import Locked

    lock = FileLease(legacy_lock_path(data_dir, unit.provider) if legacy else lock_path(data_dir, unit))
    if not lock.acquire(timeout=30):
        raise Locked(f"{unit}: a run holds {lock.path}; migrate when it has finished")
    try:
        with target.migration(unit, run_id) as place:
            moved = Moved(unit, files=len(files))
            if place.has_state(state_file):
                moved.state = "already there"
                return moved
            present = [(data_dir / f, _day(f)) for f in files if (data_dir / f).is_file()]
            if len(present) < len(files):
                missing = len(files) - len(present)
                raise FileNotFoundError(f"{unit}: {missing} committed files are missing under {data_dir}")
            moved.rows_appended = place.data(present, files)
            meta = _meta(state_file)
            place.write_state(state_file, {**meta, "legacy_files": legacy or meta.get("legacy_files", False)},
                              [path for path, _ in present])
            return moved
    finally:
        lock.release()


def _day(name: str) -> date:
    folder = next((part for part in Path(name).parts if part.startswith("date=")), None)
    if folder is None:
        raise ValueError(f"{name} is not a date-partitioned Parquet file: only a Parquet dataset migrates")
    return date.fromisoformat(folder[len("date="):])


def _extras(data_dir: Path, logs_dir: Path, target) -> None:
    quarantine = data_dir / "quarantine"
    for path in sorted(quarantine.rglob("*.jsonl")) if quarantine.is_dir() else []:
        target.copy_file(path, path.relative_to(data_dir).as_posix())
    from storage.runlog import read

    records = read(logs_dir)
    if records:
        added = target.history.add_many(records)
        log.info("run history: %d of %d runs added", added, len(records))
    today = datetime.now(timezone.utc).date().isoformat()
    for path in sorted((data_dir / "state").glob("*_calls*.json")):
        try:
            counted = json.loads(path.read_text())
        except ValueError:
            continue
        if isinstance(counted, dict) and counted.get("date") == today:
            target.seed_counter(path.name, today, int(counted.get("calls", 0)))


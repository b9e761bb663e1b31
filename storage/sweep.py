"""A unit's Parquet files on local disk: finding them, and sweeping what a crash left behind (staging
files, the files of a run that never committed). No pyarrow: a run that writes nothing needs only this.
"""

from __future__ import annotations

import os
from pathlib import Path

from storage.paths import TABLES, UnitId, dataset_root, parse_file_name


def fsync_dir(path: Path) -> None:
    if os.name != "posix":  # Windows cannot open a directory for fsync; NTFS journals the rename
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unit_files(data_dir: Path, unit: UnitId, *, legacy: bool = False) -> list[Path]:
    """The unit's Parquet and staging files in every table of its stream (and, with `legacy`, its
    provider's files from before units, whose names carry no account): never another unit's."""
    mine = []
    for table in TABLES[unit.stream]:
        mine += _files_of(dataset_root(data_dir, table) / f"source={unit.provider}", unit, legacy)
    return sorted(mine)


def _files_of(base: Path, unit: UnitId, legacy: bool) -> list[Path]:
    if not base.is_dir():
        return []
    mine = []
    for path in base.glob("date=*/*"):
        parsed = parse_file_name(path.name)
        if parsed is not None and (parsed[0] == unit.account or (legacy and parsed[0] is None)) and path.is_file():
            mine.append(path)
    return mine


def sweep(data_dir: Path, unit: UnitId, uncommitted_run: str | None, *, legacy: bool = False) -> list[Path]:
    """Remove the unit's staging files and the files of its run that never committed; returns what went."""
    removed = []
    for path in unit_files(data_dir, unit, legacy=legacy):
        _, run_id, staging = parse_file_name(path.name)
        if staging or (uncommitted_run is not None and run_id == uncommitted_run):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed

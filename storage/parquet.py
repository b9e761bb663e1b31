"""Date-partitioned Parquet: one pure function for paths, atomic writes, and the start-up sweep.

Layout: <data-dir>/normalized/products/source=<provider>/date=<YYYY-MM-DD>/<run_id>-<seq>.parquet
A file is staged as `.<name>.parquet.tmp` (no reader's `*.parquet` glob matches it), fsynced,
renamed into place, and the directory fsynced, so a reader sees a whole file or none.
"""

from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from normalize.models import SCHEMA, Product
from storage.crash import crash_point

SOURCE_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
RUN_ID_RE = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")
ROWS_PER_FILE = 100_000
COMPRESSION = "zstd"


def dataset_root(data_dir: Path) -> Path:
    return data_dir / "normalized" / "products"


def partition_dir(data_dir: Path, source: str, day: date) -> Path:
    """The partition folder; refuses any value that could escape the data directory."""
    if not SOURCE_RE.fullmatch(source):
        raise ValueError(f"invalid source name for a partition: {source!r}")
    if not isinstance(day, date):
        raise ValueError(f"invalid partition date: {day!r}")
    return dataset_root(data_dir) / f"source={source}" / f"date={day.isoformat()}"


def file_name(run_id: str, seq: int) -> str:
    if not RUN_ID_RE.fullmatch(run_id):
        raise ValueError(f"invalid run id: {run_id!r}")
    return f"{run_id}-{seq:04d}.parquet"


def fsync_dir(path: Path) -> None:
    if os.name != "posix":  # Windows cannot open a directory for fsync; NTFS journals the rename
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_table_atomic(table: pa.Table, path: Path, mode: int) -> None:
    """Write `table` to `path` so that a crash leaves the old state or the whole new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    try:
        with open(staging, "wb") as handle:
            pq.write_table(table, handle, compression=COMPRESSION, row_group_size=ROWS_PER_FILE)
            crash_point("mid_tmp_write")
            handle.flush()
            os.fsync(handle.fileno())
        crash_point("after_fsync")
        os.chmod(staging, mode)
        os.replace(staging, path)
        crash_point("after_rename")
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def to_table(products: list[Product]) -> pa.Table:
    return pa.Table.from_pylist([p.model_dump() for p in products], schema=SCHEMA)


class PartitionWriter:
    """Collects a run's new rows for one provider as Arrow tables and writes them as numbered
    files of `rows_per_file` rows (one row group each), so memory holds at most one file's rows."""

    def __init__(self, data_dir: Path, source: str, run_id: str, day: date, mode: int,
                 rows_per_file: int = ROWS_PER_FILE):
        self.directory = partition_dir(data_dir, source, day)
        self.data_dir, self.run_id, self.mode, self.rows_per_file = data_dir, run_id, mode, rows_per_file
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.files: list[Path] = []
        self.rows = 0

    def add(self, products: list[Product]) -> None:
        if not products:
            return
        self.pending.append(to_table(products))  # columnar at once: a fraction of the objects' memory
        self.pending_rows += len(products)
        while self.pending_rows >= self.rows_per_file:
            table = pa.concat_tables(self.pending)
            self._flush(table.slice(0, self.rows_per_file))
            rest = table.slice(self.rows_per_file)
            self.pending, self.pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
            crash_point("between_files")

    def close(self) -> list[Path]:
        """Flush what is pending; returns every file written, relative to the data directory."""
        if self.pending_rows:
            self._flush(pa.concat_tables(self.pending))
        self.pending, self.pending_rows = [], 0
        return [p.relative_to(self.data_dir) for p in self.files]

    def discard(self) -> None:
        """Remove every file this writer produced (the provider failed before committing)."""
        self.pending, self.pending_rows = [], 0
        for path in self.files:
            path.unlink(missing_ok=True)
        if self.files:
            fsync_dir(self.directory)
        self.files = []

    def _flush(self, table: pa.Table) -> None:
        path = self.directory / file_name(self.run_id, len(self.files) + 1)
        self.files.append(path)  # recorded first, so discard() also covers a failed write
        write_table_atomic(table.combine_chunks(), path, self.mode)
        self.rows += table.num_rows


def provider_files(data_dir: Path, source: str) -> list[Path]:
    """Every Parquet and staging file under one provider's partitions."""
    base = dataset_root(data_dir) / f"source={source}"
    if not base.is_dir():
        return []
    return sorted(p for p in base.glob("date=*/*") if p.is_file())


def sweep(data_dir: Path, source: str, uncommitted_run: str | None) -> list[Path]:
    """Remove staging files and the files of a run that never committed; returns what went."""
    removed = []
    for path in provider_files(data_dir, source):
        stale_stage = path.name.startswith(".") and path.name.endswith(".tmp")
        orphan = uncommitted_run is not None and path.name.startswith(uncommitted_run + "-")
        if stale_stage or orphan:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed

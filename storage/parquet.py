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
# A row group of 25,000 rows reads fast in DuckDB, Spark and pandas and bounds the writer's memory;
# a file of 250,000 rows (about 25 MB here) is big enough that a large catalog is a few files, not
# thousands, and small enough to rewrite or move one at a time.
ROW_GROUP_ROWS = 25_000
ROWS_PER_FILE = 250_000
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


class StagedFile:
    """A Parquet file written row group by row group under a staging name, then published whole:
    flush, fsync, rename into place, fsync the directory. Until then no reader can see it."""

    def __init__(self, path: Path, schema: pa.Schema = SCHEMA):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.staging = path, path.with_name(f".{path.name}.tmp")
        self.handle = open(self.staging, "wb")
        self.writer = pq.ParquetWriter(self.handle, schema, compression=COMPRESSION)
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self.rows += table.num_rows
        crash_point("mid_tmp_write")

    def commit(self, mode: int) -> None:
        try:
            self.writer.close()
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            crash_point("after_fsync")
            os.chmod(self.staging, mode)
            os.replace(self.staging, self.path)
            crash_point("after_rename")
        except BaseException:
            self.abort()
            raise
        fsync_dir(self.path.parent)

    def abort(self) -> None:
        for close in (self.writer.close, self.handle.close):
            try:
                close()
            except Exception:  # noqa: BLE001 - already failing; the staging file goes below
                pass
        self.staging.unlink(missing_ok=True)


def to_table(products: list[Product]) -> pa.Table:
    return pa.Table.from_pylist([p.model_dump() for p in products], schema=SCHEMA)


class PartitionWriter:
    """Streams a run's new rows for one provider into numbered Parquet files.

    Rows gather as Arrow until a row group's worth (ROW_GROUP_ROWS) is ready, which goes straight
    into the open staging file; a file is published after `rows_per_file` rows. Memory holds one
    row group at most, whatever the catalog's size.
    """

    def __init__(self, data_dir: Path, source: str, run_id: str, day: date, mode: int,
                 rows_per_file: int = ROWS_PER_FILE, row_group_rows: int = ROW_GROUP_ROWS):
        self.directory = partition_dir(data_dir, source, day)
        self.data_dir, self.run_id, self.mode = data_dir, run_id, mode
        self.rows_per_file, self.row_group_rows = rows_per_file, min(row_group_rows, rows_per_file)
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.current: StagedFile | None = None
        self.files: list[Path] = []
        self.rows = 0

    def add(self, products: list[Product]) -> None:
        if not products:
            return
        self.pending.append(to_table(products))
        self.pending_rows += len(products)
        while self.pending_rows >= self.row_group_rows:
            self._write_row_group(self.row_group_rows)

    def close(self) -> list[Path]:
        """Write what is pending and publish the last file; returns every file, relative to the data directory."""
        while self.pending_rows:
            self._write_row_group(min(self.pending_rows, self.row_group_rows))
        if self.current is not None:
            self._publish()
        return [p.relative_to(self.data_dir) for p in self.files]

    def discard(self) -> None:
        """Remove every file this writer produced (the provider failed before committing)."""
        self.pending, self.pending_rows = [], 0
        if self.current is not None:
            self.current.abort()
            self.current = None
        for path in self.files:
            path.unlink(missing_ok=True)
        if self.files:
            fsync_dir(self.directory)
        self.files = []

    def _write_row_group(self, rows: int) -> None:
        table = pa.concat_tables(self.pending)
        group, rest = table.slice(0, rows), table.slice(rows)
        self.pending, self.pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
        if self.current is None:
            path = self.directory / file_name(self.run_id, len(self.files) + 1)
            self.files.append(path)  # recorded first, so discard() also covers a failed write
            self.current = StagedFile(path)
        room = self.rows_per_file - self.current.rows
        if group.num_rows > room:  # never let a file grow past rows_per_file
            self.pending.insert(0, group.slice(room))
            self.pending_rows += group.num_rows - room
            group = group.slice(0, room)
        self.current.write(group.combine_chunks())
        self.rows += group.num_rows
        if self.current.rows >= self.rows_per_file:
            self._publish()
            crash_point("between_files")

    def _publish(self) -> None:
        self.current.commit(self.mode)
        self.current = None


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

"""Date-partitioned Parquet: atomic writes of a unit's rows (the start-up sweep of its files: storage/sweep.py).

Layout (storage/paths.py): <data-dir>/normalized/<table>/source=<provider>/date=<YYYY-MM-DD>/
<account>_<run_id>-<seq>.parquet. A file is staged as `.<name>.tmp` (no reader's `*.parquet` glob
matches it), fsynced, renamed into place, and the directory fsynced, so a reader sees a whole file
or none.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
from datetime import date, datetime
from itertools import accumulate, chain
from pathlib import Path

import pyarrow as pa
from pydantic import BaseModel

from normalize.models import Product, arrow_rows
from storage.crash import crash_point
from storage.paths import (RUN_ID_RE, SOURCE_RE, TABLES, UnitId, dataset_root, file_name,  # noqa: F401
                           parse_file_name, partition_dir)
from storage.schemas import SCHEMA, SCHEMAS
from storage.settings import ROWS_PER_FILE  # 250,000 rows a file: why, in the comment below
from storage.sweep import fsync_dir

# A row group of 25,000 rows reads fast in DuckDB, Spark and pandas and bounds the writer's memory;
# a file of 250,000 rows (about 25 MB here) is big enough that a large catalog is a few files, not
# thousands, and small enough to rewrite or move one at a time.
ROW_GROUP_ROWS = 25_000
# ... or 16 MB of Arrow, whichever comes first: a catalog with descriptions of a few KB reaches it near
# 7,000 rows. A row group is held and encoded, so its size, not its row count, sets the writer's
# memory: peak RSS 282 -> 185 MB on such a catalog, and 30% less CPU writing (bench/bulk.py).
ROW_GROUP_BYTES = 16 * 1024 * 1024
COMPRESSION = "zstd"
# A column chunk keeps its dictionary while the dictionary stays under 32 KB, then goes on plain (the
# writer's own fallback; the default limit, 1 MB, held every unique id, hash, URL, price and time of
# a 7,500-row group in a dictionary no value repeats in). Low-cardinality columns (brand, category,
# availability, tags, variant titles) stay dictionary-encoded. 20k rich products: 3.90 -> 3.59 MB,
# Parquet encoding 5.1 -> 4.7 us a product.
DICTIONARY_PAGE_BYTES = 32 * 1024


def writer_options(schema: pa.Schema) -> dict:
    """The ParquetWriter's options for a table of `schema`. Min/max statistics for the top-level
    columns only: no reader prunes by the min/max of a list's items (the variants, tags), which
    cost 0.2-0.3 us a product to gather."""
    return {"compression": COMPRESSION, "dictionary_pagesize_limit": DICTIONARY_PAGE_BYTES,
            "write_statistics": [f.name for f in schema if not pa.types.is_nested(f.type)]}


class _PandasHidden(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "pandas":
            raise ImportError("hidden from pyarrow's probe")
        return None


def _skip_pyarrow_pandas_probe() -> None:
    """The first time pyarrow converts a Python list it imports pandas, when installed, only to ask
    whether the list is a pandas object: 0.36 s of CPU a run (more than writing 20,000 products
    takes) for an answer that is always no here. The probe is answered once with pandas out of
    sight; pyarrow imports it as before for anything that needs it (`Table.to_pandas`)."""
    if "pandas" in sys.modules:
        return
    finder = _PandasHidden()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([None])
    finally:
        sys.meta_path.remove(finder)


_skip_pyarrow_pandas_probe()


class StagedFile:
    """A Parquet file written row group by row group under a staging name, then published whole:
    flush, fsync, rename into place, fsync the directory. Until then no reader can see it."""

    def __init__(self, path: Path, schema: pa.Schema = SCHEMA):
        import pyarrow.parquet as pq  # the first file a run writes: a run with nothing new needs none (9 ms)

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.staging = path, path.with_name(f".{path.name}.tmp")
        self.handle = open(self.staging, "wb")
        self.writer = pq.ParquetWriter(self.handle, schema, **writer_options(schema))
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


def to_table(rows: list, schema: pa.Schema = SCHEMA) -> pa.Table:
    """Products (read straight from the validated instances) or order rows, as an Arrow table."""
    if schema is SCHEMA:
        columns = _columns(rows)
        if columns is None:  # fields not in the model's order (never from validation): by name
            return pa.Table.from_pylist(arrow_rows(rows), schema=schema)
        return pa.Table.from_arrays(columns, schema=schema)
    return pa.Table.from_pylist([r.model_dump() for r in rows], schema=schema)


def _columns(products: list) -> list[pa.Array] | None:
    """The products' fields as one Arrow array each, in SCHEMA's order: what `Table.from_pylist`
    makes of `arrow_rows`, without a dict a row nor a lookup a field.

    A validated instance's `__dict__` holds every field in the model's order, which is SCHEMA's
    (`arrow_schema` derives it from the model), so the values are taken in that order and turned
    into columns in one pass (`zip`), each column then converted at once. None when the first
    instance's fields are not SCHEMA's, or another has more or fewer: the caller goes by name."""
    if not products or list(vars(products[0])) != SCHEMA.names:
        return None
    try:
        values = list(zip(*map(dict.values, map(vars, products)), strict=True))
    except ValueError:  # an instance with more or fewer fields than the first
        return None
    return [_array(column, field.type) for column, field in zip(values, SCHEMA)]


def _array(values: tuple, type_: pa.DataType) -> pa.Array:
    """A column's values as Arrow. A list column is its items flattened and converted at once
    (models, the variants, as their fields' dicts, as `arrow_rows` gives them), with offsets."""
    if pa.types.is_list(type_):
        if values.count(None) == len(values):
            return pa.nulls(len(values), type_)
        items = list(chain.from_iterable(filter(None, values)))
        if items and isinstance(items[0], BaseModel):
            items = list(map(vars, items))
        offsets = pa.array(list(accumulate([len(v) if v else 0 for v in values], initial=0)), pa.int32())
        mask = pa.array([v is None for v in values], pa.bool_()) if None in values else None
        return pa.ListArray.from_arrays(offsets, pa.array(items, type_.value_type), type=type_, mask=mask)
    if pa.types.is_timestamp(type_) and _one_instant(values):  # fetched_at: one time a run
        return pa.repeat(pa.scalar(values[0], type_), len(values))
    return pa.array(values, type_)


def _one_instant(values: tuple) -> bool:
    """Whether every value equals the first, a datetime without a zone or with a fixed offset: then
    they are one instant (datetime equality across zones compares instants, and with a fixed
    offset the fold plays no part), and the first converted once stands for all."""
    first = values[0] if len(values) > 1 else None
    return (isinstance(first, datetime) and (first.tzinfo is None or first.tzinfo.utcoffset(None) is not None)
            and values.count(first) == len(values))


class PartitionWriter:
    """Streams a run's new rows for one provider into numbered Parquet files.

    Rows gather as Arrow until a row group's worth (ROW_GROUP_ROWS or ROW_GROUP_BYTES) is ready, which goes straight
    into the open staging file; a file is published after `rows_per_file` rows. Memory holds one
    row group at most, whatever the catalog's size.
    """

    def __init__(self, data_dir: Path, unit: UnitId, run_id: str, day: date, mode: int,
                 rows_per_file: int = ROWS_PER_FILE, row_group_rows: int = ROW_GROUP_ROWS, table: str = "products"):
        self.directory = partition_dir(data_dir, unit.provider, day, table)
        self.data_dir, self.account, self.run_id, self.mode = data_dir, unit.account, run_id, mode
        self.schema = SCHEMAS[table]
        self.rows_per_file, self.row_group_rows = rows_per_file, min(row_group_rows, rows_per_file)
        self.pending: list[pa.Table] = []
        self.pending_rows = self.pending_bytes = 0
        self.current: StagedFile | None = None
        self.files: list[Path] = []
        self.rows = 0

    def add(self, products: list[Product]) -> None:
        if products:
            table = to_table(products, self.schema)
            # A table just built, not a slice: its buffers' sizes are its bytes, at a tenth of what
            # `nbytes` costs (0.24 us a product: it walks the offsets of every nested column).
            self.add_table(table, table.get_total_buffer_size())

    def add_table(self, table: pa.Table, nbytes: int | None = None) -> None:
        """Rows already in Arrow, in this writer's schema (a batch normalized in another process)."""
        if not table.num_rows:
            return
        self.pending.append(table)
        self.pending_rows += table.num_rows
        self.pending_bytes += table.nbytes if nbytes is None else nbytes
        while self.pending_rows >= self.row_group_rows:
            self._write_row_group(self.row_group_rows)
        if self.pending_rows and self.pending_bytes >= ROW_GROUP_BYTES:
            self._write_row_group(self.pending_rows)

    def close(self) -> list[Path]:
        """Write what is pending and publish the last file; returns every file, relative to the data directory."""
        while self.pending_rows:
            self._write_row_group(min(self.pending_rows, self.row_group_rows))
        if self.current is not None:
            self._publish()
        return [p.relative_to(self.data_dir) for p in self.files]

    def discard(self) -> None:
        """Remove every file this writer produced (the provider failed before committing)."""
        self.pending, self.pending_rows, self.pending_bytes = [], 0, 0
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
            path = self.directory / file_name(self.account, self.run_id, len(self.files) + 1)
            self.files.append(path)  # recorded first, so discard() also covers a failed write
            self.current = StagedFile(path, self.schema)
        room = self.rows_per_file - self.current.rows
        if group.num_rows > room:  # never let a file grow past rows_per_file
            self.pending.insert(0, group.slice(room))
            self.pending_rows += group.num_rows - room
            group = group.slice(0, room)
        self.pending_bytes = sum(t.nbytes for t in self.pending)
        # The batches' chunks as they are, not copied into one first: 16 MB less at the peak and
        # 0.1-0.3 us less a product; the same row group and values (pages fall where the chunks end).
        self.current.write(group)
        self.rows += group.num_rows
        if self.current.rows >= self.rows_per_file:
            self._publish()
            crash_point("between_files")

    def _publish(self) -> None:
        self.current.commit(self.mode)
        self.current = None

"""The Delta table format (delta-rs, the `deltalake` package: no JVM), on a local path or s3://.

`normalized/<table>` is a Delta table whose columns are the Parquet files' columns plus `date`
(the run's UTC start date), partitioned by `source` and `account`: each unit appends only to its
own partition, so concurrent units' commits never conflict in content, and delta-rs only has to
retry the commit number (a conditional put of `_delta_log/N.json`; retries raised to 100, as 12
writers at once exhausted the default 15, and an append that still lost is written again from a
fresh snapshot). One commit per unit per run, tagged with the run id.

A unit's rows are spooled to a local Parquet file while the run streams (memory stays flat), then
appended in that one commit at the end. Tables are created before units fan out; two first runs
creating one table at once both succeed (the loser of the race for version 0 uses the winner's).

Never read with `to_pyarrow_table()` or a threaded `to_table()`: delta-rs's runtime then aborts
the process at exit in about a fifth of the runs ("terminate called without an active exception",
rc 134). Read the dataset with use_threads=False; and a process that loaded deltalake ends through
`end_process` (storage/teardown.py), since even then about one run in a hundred aborted during
interpreter teardown.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from storage.crash import crash_point
from storage.parquet import COMPRESSION, ROW_GROUP_ROWS, SCHEMAS, to_table
from storage.paths import UnitId
from storage.teardown import end_process  # noqa: F401 - scripts that use Delta end through it

PARTITION_BY = ["source", "account"]
DATE = pa.field("date", pa.date32())
TABLE_SCHEMAS = {table: schema.append(DATE) for table, schema in SCHEMAS.items()}
MAX_COMMIT_RETRIES = 100
APPEND_ATTEMPTS = 4  # whole appends, each with MAX_COMMIT_RETRIES (DeltaTables.append)
APPEND_PAUSE_S = 0.5  # before the second; doubling, jittered (pause_after_loss)
RUN_ID_KEY, UNIT_KEY = "pipeline.run_id", "pipeline.unit"  # in each commit's commitInfo
# Statistics on these columns let a reader (and recovery, by run_id) skip files.
STATS_COLUMNS = {"products": "run_id,raw_hash,source_id,source_updated_at,fetched_at,price",
                 "orders": "run_id,raw_hash,order_id,updated_at,created_at,fetched_at",
                 "order_lines": "run_id,order_id,order_raw_hash,product_id,fetched_at",
                 "product_deletions": "run_id,raw_hash,source_id,deleted_at,fetched_at"}
# A record's table: its hash, its id and its update time, under the names the index uses.
IDENTITY = {"products": ("raw_hash", "source_id", "source_updated_at"),
            "orders": ("raw_hash", "order_id", "updated_at"),
            "product_deletions": ("raw_hash", "source_id", "deleted_at")}


def pause_after_loss(attempt: int, first_s: float, most_s: float = float("inf")) -> None:
    """Wait before trying a commit again that lost (attempt 1, 2, ...): a commit loses to a burst
    of other commits, and a pause that doubles from `first_s`, at most `most_s`, jittered so that
    losers do not come back together, lets the burst pass."""
    time.sleep(min(first_s * 2 ** (attempt - 1), most_s) * random.uniform(0.5, 1.0))


class DeltaTables:
    """The Delta tables under one destination root (a path or an s3:// URL), each opened once per
    process and reused: a fresh DeltaTable per commit slowed from 69 to 371 ms as commits piled up."""

    def __init__(self, root: str, storage_options: dict | None = None):
        self.root, self.storage_options = root.rstrip("/"), storage_options
        self._tables: dict[str, object] = {}
        self._lock = threading.Lock()
        self._appending = threading.Lock()

    def uri(self, table: str = "products") -> str:
        return f"{self.root}/normalized/{table}"

    def ensure(self, table: str = "products") -> None:
        """Create the table if it does not exist yet; idempotent, and safe when another worker
        creates it at the same moment."""
        from deltalake import CommitProperties, DeltaTable
        from deltalake.exceptions import CommitFailedError

        if DeltaTable.is_deltatable(self.uri(table), storage_options=self.storage_options):
            return
        try:
            # No commit retries: delta-rs retries a lost CREATE at the next version, writing a
            # second table definition that fails every concurrent append with "Metadata changed"
            # (measured: 5 of 8 races of 6 creators). Losing at version 0 is the answer we want.
            DeltaTable.create(self.uri(table), TABLE_SCHEMAS[table], mode="ignore", partition_by=PARTITION_BY,
                              configuration={"delta.dataSkippingStatsColumns": STATS_COLUMNS[table]},
                              storage_options=self.storage_options,
                              commit_properties=CommitProperties(max_commit_retries=0))
        except CommitFailedError:  # lost the race to create it: the winner's table is the table
            if not DeltaTable.is_deltatable(self.uri(table), storage_options=self.storage_options):
                raise

    def table(self, table: str = "products"):
        with self._lock:
            if table not in self._tables:
                from deltalake import DeltaTable
                from deltalake.exceptions import TableNotFoundError

                try:
                    self._tables[table] = DeltaTable(self.uri(table), storage_options=self.storage_options)
                except TableNotFoundError:  # prepare() was skipped, or the table was removed since
                    self.ensure(table)
                    self._tables[table] = DeltaTable(self.uri(table), storage_options=self.storage_options)
            return self._tables[table]

    def append(self, rows: Callable[[], pa.RecordBatchReader], unit: UnitId, run_id: str,
               table: str = "products") -> list[str]:
        """One commit of the rows `rows()` reads, tagged with the run; returns the data files it added,
        relative to the destination root.

        A commit that lost all of delta-rs's retries (CommitFailedError "Failed to commit transaction:
        100": seen once in CI, three writers and compactions on two loaded cores) is written again
        from a fresh snapshot, up to APPEND_ATTEMPTS times, unless the commits since name this run
        (one whose answer was lost): the rows land once. A lost attempt's files are committed
        nowhere; vacuum takes them after the retention. One append at a time in a process (the
        table object is shared: the check reads its versions)."""
        from deltalake import CommitProperties, WriterProperties, write_deltalake
        from deltalake.exceptions import CommitFailedError

        dt = self.table(table)
        with self._appending:
            for attempt in range(1, APPEND_ATTEMPTS + 1):
                before = dt.version()
                try:
                    write_deltalake(dt, rows(), mode="append", partition_by=PARTITION_BY,
                                    writer_properties=WriterProperties(compression=COMPRESSION.upper()),
                                    commit_properties=CommitProperties(
                                        custom_metadata={RUN_ID_KEY: run_id, UNIT_KEY: str(unit)},
                                        max_commit_retries=MAX_COMMIT_RETRIES))
                    break
                except CommitFailedError as exc:
                    dt.update_incremental()
                    if self.committed_since(before, unit, run_id, table):
                        break
                    if attempt == APPEND_ATTEMPTS:
                        raise CommitFailedError(
                            f"{table}: {unit}'s rows lost the race to commit {APPEND_ATTEMPTS} times ({exc}): "
                            "other writers kept committing to the table meanwhile. Nothing of this run was "
                            "committed and its state did not move, so the next run fetches it again; if this "
                            "recurs, start fewer units at once against the table") from exc
                    pause_after_loss(attempt, APPEND_PAUSE_S)
        crash_point("between_data_and_state")
        return [f"normalized/{table}/{path}" for path in self.files_of(unit, run_id, table)]

    def committed_since(self, version: int, unit: UnitId, run_id: str, table: str = "products") -> bool:
        """Whether a commit after `version` (of the table as last read) is the run's for the unit."""
        dt = self.table(table)
        newer = dt.version() - version
        return newer > 0 and any(commit.get(RUN_ID_KEY) == run_id and commit.get(UNIT_KEY) == str(unit)
                                 for commit in dt.history(newer))

    def files_of(self, unit: UnitId, run_id: str, table: str = "products") -> list[str]:
        """The table's files holding rows of `run_id` in the unit's partition (from the log's stats)."""
        actions = self.table(table).get_add_actions(flatten=True)
        columns = {name: actions.column(name).to_pylist() for name in
                   ("path", "partition.source", "partition.account", "min.run_id", "max.run_id")}
        return [path for path, source, account, low, high in zip(*columns.values())
                if (source, account) == (unit.provider, unit.account) and low <= run_id <= high]

    def rows_of(self, unit: UnitId, run_id: str, table: str = "products") -> pa.Table:
        """raw_hash, source_id and source_updated_at (IDENTITY's columns, under those names) of the
        rows `run_id` committed for the unit."""
        import pyarrow.dataset as ds

        dt = self.table(table)
        dt.update_incremental()
        # Only the files whose partition is the unit's and whose run_id statistics admit the run.
        dataset = dt.to_pyarrow_dataset(file_pruning_predicate=[
            ("source", "=", unit.provider), ("account", "=", unit.account), ("run_id", "=", run_id)])
        rows = dataset.to_table(columns=list(IDENTITY[table]), filter=ds.field("run_id") == run_id, use_threads=False)
        return rows.rename_columns(list(IDENTITY["products"]))

    def delete_run(self, unit: UnitId, run_id: str, table: str) -> int:
        """Remove the rows `run_id` committed to `table` for the unit (a child table committed before
        a run died without committing its primary table); returns how many. The predicate names the
        unit's partition, so it conflicts with no other unit's commit."""
        from deltalake import CommitProperties

        if not self.files_of(unit, run_id, table):
            return 0
        quote = lambda value: "'" + value.replace("'", "''") + "'"  # noqa: E731
        predicate = (f"source = {quote(unit.provider)} AND account = {quote(unit.account)} "
                     f"AND run_id = {quote(run_id)}")
        metrics = self.table(table).delete(predicate, commit_properties=CommitProperties(
            custom_metadata={RUN_ID_KEY: run_id, UNIT_KEY: str(unit)}, max_commit_retries=MAX_COMMIT_RETRIES))
        return int(metrics.get("num_deleted_rows", 0))

    def recover(self, unit: UnitId, run_id: str, tables: tuple[str, ...]) -> list[tuple[str, pa.Table]] | None:
        """A run of the unit that died after some of its commits: the primary table (`tables[0]`)
        commits last, so if it holds the run's rows every table does, and each table's identity
        rows (the tables whose rows are deduplicated: products and product deletions, orders) are
        returned to be adopted into the index (`adopt`); otherwise the run's rows in the other
        tables are removed, and the rerun writes them again."""
        rows = self.rows_of(unit, run_id, tables[0])
        if rows.num_rows:
            return [(tables[0], rows), *((t, self.rows_of(unit, run_id, t)) for t in tables[1:] if t in IDENTITY)]
        for table in tables[1:]:
            self.delete_run(unit, run_id, table)
        return None


def adopt(state, found: list[tuple[str, pa.Table]]) -> int:
    """Record a dead run's committed rows (DeltaTables.recover) in a unit's state as if the run had
    got to its state write: each record's latest hash, and the primary table's versions. Returns
    the rows of the primary table."""
    for n, (_, rows) in enumerate(found):
        ids = rows.column("source_id").to_pylist()
        state.keep_changed(list(zip(ids, rows.column("raw_hash").to_pylist())))
        if n == 0:
            state.remember_versions(list(zip(ids, rows.column("source_updated_at").to_pylist())))
    return found[0][1].num_rows if found else 0


def conform(table: pa.Table, schema: pa.Schema = SCHEMAS["products"]) -> pa.Table:
    """A Parquet file's rows in today's schema: columns only ever added at the end and nullable,
    so an older file gains the new ones as nulls."""
    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def append_files(tables: DeltaTables, unit: UnitId, files: list[tuple[Path, date]], run_id: str,
                 table: str = "products") -> bool:
    """Append existing Parquet files of `table` (with the date of each) as one commit, at most once
    ever per unit and table: the commit carries the Delta app transaction `migrate:<unit>`, and a
    table that already has it is left alone. Returns whether it appended."""
    from deltalake import CommitProperties, Transaction, WriterProperties, write_deltalake

    app_id = f"migrate:{unit}"
    dt = tables.table(table)
    if not files or dt.transaction_version(app_id) is not None:
        return False

    def batches():
        for path, day in files:
            for batch in conform(pq.read_table(path), SCHEMAS[table]).to_batches(ROW_GROUP_ROWS):
                yield batch.append_column("date", pa.array([day] * batch.num_rows, pa.date32()))

    write_deltalake(dt, pa.RecordBatchReader.from_batches(TABLE_SCHEMAS[table], batches()), mode="append",
                    partition_by=PARTITION_BY, writer_properties=WriterProperties(compression=COMPRESSION.upper()),
                    commit_properties=CommitProperties(custom_metadata={RUN_ID_KEY: run_id, UNIT_KEY: str(unit)},
                                                       app_transactions=[Transaction(app_id, 1)],
                                                       max_commit_retries=MAX_COMMIT_RETRIES))
    return True


class DeltaWriter:
    """The run's new rows spooled to local Parquet, then appended to the table in one commit.

    After a successful append `committed` is True and discard() can no longer take the rows back:
    if the state cannot be written, recovery adopts them instead (storage/recovery.py for a local
    destination, storage/lake/unit.py for an object store).
    """

    def __init__(self, tables: DeltaTables, unit: UnitId, run_id: str, day: date, spool_dir: Path,
                 table: str = "products"):
        self.tables, self.unit, self.run_id, self.day, self.table = tables, unit, run_id, day, table
        self.schema = SCHEMAS[table]
        self.spool = spool_dir / f".{unit.account}_{run_id}.{table}.spool.parquet"
        self.writer: pq.ParquetWriter | None = None
        self.rows, self.committed = 0, False

    def add(self, rows: list) -> None:
        if rows:
            self.add_table(to_table(rows, self.schema))

    def add_table(self, table: pa.Table) -> None:
        """Rows already in Arrow, in this writer's schema (a batch normalized in another process)."""
        if not table.num_rows:
            return
        if self.writer is None:
            self.spool.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.spool, self.schema, compression=COMPRESSION)
        self.writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        self.rows += table.num_rows

    def close(self) -> list[str]:
        """Append the spooled rows in one commit; returns the data files added (none when no row)."""
        if self.writer is None:
            return []
        self.writer.close()
        self.writer = None

        def batches():
            for batch in pq.ParquetFile(self.spool).iter_batches(batch_size=ROW_GROUP_ROWS):
                yield batch.append_column("date", pa.array([self.day] * batch.num_rows, pa.date32()))

        crash_point("before_delta_commit")
        files = self.tables.append(lambda: pa.RecordBatchReader.from_batches(TABLE_SCHEMAS[self.table], batches()),
                                   self.unit, self.run_id, self.table)
        self.committed = True
        self.spool.unlink(missing_ok=True)
        return files

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.spool.unlink(missing_ok=True)


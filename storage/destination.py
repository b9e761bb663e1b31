"""Where a unit's data and state live, behind one object per unit.

A destination is opened from its settings by `open_destination`, and offers:
  prepare(dry_run=)   checks and creates what units need before they fan out (tables, the probe)
  open_unit(unit, run_id=, day=, dry_run=) -> a unit, as a context manager, raising Locked
  history             the run log: read(), append(record), where
  secrets()           credentials it resolved at run time, for redaction
A unit offers: state (get, keep_changed, remember_versions), write(products), write_table(table, arrow
rows), commit(meta) ->
files, quarantine, meta (get/set/delete for the connector's thread), known (`version in known`),
counters (daily_budget for a shared call budget) and samples.

`LocalDestination` is the embedded default: date-partitioned Parquet (or a Delta table), SQLite
state, a lock file per unit of work (provider, account, stream), all under one data folder.
`storage/lake/` is the other implementation, an object store (s3://), imported only when used.
The run asks a destination for a unit and gets back everything that unit owns, already recovered
from any crash before it; the run then streams records through the unit and commits it.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import SimpleNamespace

from normalize.models import Product
from storage.budget import LocalCounters
from storage.lock import FileLease
from storage.paths import TABLES, UnitId, legacy_lock_path, legacy_state_path, lock_path, quarantine_path, state_path
from storage.quarantine import Quarantine
from storage.recovery import recover
from storage.runlog import LocalRunLog
from storage.settings import ROWS_PER_FILE, TABLE_FORMATS, DestinationSettings  # noqa: F401 - named here too
from storage.state import KnownVersions, MetaStore, ProviderState, inherit_legacy_state

DRY_RUN_SAMPLES = 20


def _partition_writer(*args, **kwargs):
    from storage.parquet import PartitionWriter  # pyarrow: imported once there are rows to write

    return PartitionWriter(*args, **kwargs)


class _FirstRows:
    """A table's writer, made when its first rows arrive: a run with nothing new never imports
    pyarrow (0.12 s of a rerun's 0.55 s here) and leaves no writer to close."""

    def __init__(self, make):
        self.make, self.writer = make, None

    def add(self, rows) -> None:
        self._writer().add(rows)

    def add_table(self, table, nbytes: int | None = None) -> None:
        self._writer().add_table(table, nbytes)

    def _writer(self):
        if self.writer is None:
            self.writer = self.make()
        return self.writer

    def close(self) -> list:
        return [] if self.writer is None else self.writer.close()

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.discard()


class Locked(Exception):
    """Another run holds the unit; the message says where."""


class DryRunSink:
    """Stands in for the Parquet writer in a dry run: counts and keeps a few samples."""

    def __init__(self):
        self.rows, self.samples = 0, []

    def add(self, products: list[Product]) -> None:
        self.rows += len(products)
        room = DRY_RUN_SAMPLES - len(self.samples)
        self.samples.extend(products[:room])

    def add_table(self, table) -> None:
        """Rows already in Arrow: counted, and the first few kept as samples (their fields as attributes)."""
        room = DRY_RUN_SAMPLES - len(self.samples)
        self.samples.extend(SimpleNamespace(**row) for row in table.slice(0, max(room, 0)).to_pylist())
        self.rows += table.num_rows

    def close(self) -> list:
        return []

    def discard(self) -> None:
        pass


def open_destination(settings: DestinationSettings):
    """The destination the settings name: a LocalDestination, or a LakeDestination (which imports
    boto3, and deltalake for the delta format, only now)."""
    if settings.s3 is None:
        return LocalDestination(settings.data_dir, settings.file_mode, settings.rows_per_file,
                                settings.table_format, settings.logs_dir)
    from storage.lake.unit import LakeDestination

    return LakeDestination(settings.s3, settings.table_format, settings.lease_seconds, settings.rows_per_file,
                           settings.aws or None)


@dataclass(frozen=True)
class LocalDestination:
    """A data folder on this machine."""

    data_dir: Path
    file_mode: int = 0o640
    rows_per_file: int = ROWS_PER_FILE
    table_format: str = "parquet"
    logs_dir: Path | None = None

    @property
    def url(self) -> str:
        return str(self.data_dir)

    @property
    def history(self) -> LocalRunLog:
        return LocalRunLog(self.logs_dir if self.logs_dir is not None else self.data_dir.parent / "logs")

    @property
    def tables(self):
        return _local_tables(str(self.data_dir))

    def secrets(self) -> list[str]:
        return []

    def prepare(self, *, dry_run: bool, tables=("products",)) -> None:
        """The units' Delta tables are created before units fan out (a dry run writes nothing)."""
        if self.table_format == "delta" and not dry_run:
            for table in tables:
                self.tables.ensure(table)

    def open_unit(self, unit: UnitId, *, run_id: str, day: date, dry_run: bool, heir: bool = False) -> "LocalUnit":
        """The unit under its lock, recovered and marked in flight; raises Locked if another run holds it.
        A dry run takes no lock and writes nothing: state read-only, no files, quarantine counted only.
        `heir`: the unit may inherit its provider's state from before units even when none of that
        state's files is here to say whose it was (see storage/state.py)."""
        lock = FileLease(lock_path(self.data_dir, unit))
        if not dry_run and not lock.acquire():
            raise Locked(f"another run holds {lock.path}")
        try:
            if not dry_run:
                self._upgrade(unit, heir)
            return LocalUnit(self, unit, run_id, day, dry_run, lock)
        except BaseException:
            lock.release()
            raise

    def _upgrade(self, unit: UnitId, heir: bool) -> None:
        """A first run after the upgrade to units takes over its provider's old state, under the old
        provider lock too, so a run of the previous release cannot be working on it meanwhile."""
        if state_path(self.data_dir, unit).exists() or not legacy_state_path(self.data_dir, unit.provider).exists():
            return
        old_lock = FileLease(legacy_lock_path(self.data_dir, unit.provider))
        if not old_lock.acquire(timeout=30):
            raise Locked(f"a run of the previous release holds {old_lock.path}")
        try:
            inherit_legacy_state(self.data_dir, unit, heir)
        finally:
            old_lock.release()


class UnitWriting:
    """What every destination's unit does alike: it is a context manager that rolls back on an
    error and closes, and it hands rows to its tables' writers (`self.writers`, table -> writer)."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            self.roll_back()
        self.close()

    def write(self, records: list[dict[str, list]]) -> None:
        """Add the rows of new records (each a dict of table -> rows) to the unit's tables."""
        for table, writer in self.writers.items():
            rows = [row for record in records for row in record.get(table, ())]
            if rows:
                writer.add(rows)

    def write_table(self, table: str, rows) -> None:
        """Add rows already in Arrow (a pyarrow.Table in the table's schema) to one of the unit's tables."""
        self.writers[table].add_table(rows)


class LocalUnit(UnitWriting):
    """One unit's lock, state, writer and quarantine; data is committed before state, atomically."""

    def __init__(self, destination: LocalDestination, unit: UnitId, run_id: str, day: date, dry_run: bool,
                 lock: FileLease):
        data_dir, path = destination.data_dir, state_path(destination.data_dir, unit)
        self.unit, self.run_id, self.dry_run, self.lock = unit, run_id, dry_run, lock
        self.spool_dir = None
        self.state = ProviderState.open(path, read_only=dry_run)
        try:
            self.writers = {table: self._writer(destination, unit, run_id, day, table)
                            for table in TABLES[unit.stream]}
            self.counters = LocalCounters(data_dir)
            self.quarantine = Quarantine(quarantine_path(data_dir, unit, day, run_id), enabled=not dry_run)
            # What the connector reads and writes from its own thread: the bulk checkpoint and
            # learned page size (None in a dry run, which writes nothing), and the written versions.
            self.meta = None if dry_run else MetaStore(path)
            self.known = KnownVersions(path)
            if not dry_run:
                recover(self.state, data_dir, unit, legacy=bool(self.state.get("legacy_files")),
                        tables=destination.tables if destination.table_format == "delta" else None)
                self.state.set("inflight_run", run_id)
        except BaseException:
            self.state.close()
            raise

    def _writer(self, destination: "LocalDestination", unit: UnitId, run_id: str, day: date, table: str):
        if self.dry_run:
            return DryRunSink()
        if destination.table_format == "delta":
            from storage.delta import DeltaWriter

            if self.spool_dir is None:
                self.spool_dir = Path(tempfile.mkdtemp(prefix=f"delta-{unit.provider}-"))
            return DeltaWriter(destination.tables, unit, run_id, day, self.spool_dir, table=table)
        return _FirstRows(functools.partial(_partition_writer, destination.data_dir, unit, run_id, day,
                                            destination.file_mode, destination.rows_per_file, table=table))

    def commit(self, meta: dict) -> list[str]:
        """Publish the files, then record them, the run's hashes and `meta` in one transaction;
        returns the files, relative to the data folder. A dry run commits nothing."""
        # The primary table last: recovery reads it to tell whether the run's data went in whole
        # (a Delta commit cannot be taken back, and the tables commit one by one).
        files = [Path(f).as_posix() for _, writer in reversed(self.writers.items()) for f in writer.close()]
        if not self.dry_run:
            self.state.commit(self.run_id, files, meta)
        return files

    def roll_back(self) -> None:
        """Best effort: whatever is left over, the next run's start-up sweep removes."""
        for writer in self.writers.values():
            with contextlib.suppress(Exception):
                writer.discard()
        with contextlib.suppress(Exception):
            self.state.forget_run()
            # Rows already in a Delta table cannot be taken back: the marker stays, and the next
            # run's recovery adopts them into the index instead.
            if not self.dry_run and not any(getattr(w, "committed", False) for w in self.writers.values()):
                self.state.delete("inflight_run")

    def close(self) -> None:
        try:
            self.state.close()
        finally:
            if self.spool_dir is not None:
                shutil.rmtree(self.spool_dir, ignore_errors=True)
            self.lock.release()

    @property
    def samples(self) -> list:
        """Rows a dry run would have written (a few), for the summary."""
        return getattr(next(iter(self.writers.values())), "samples", [])


_TABLES: dict[str, object] = {}


def _local_tables(root: str):
    """One DeltaTables per folder per process (the table object is reused across commits)."""
    from storage.delta import DeltaTables

    return _TABLES.setdefault(root, DeltaTables(root))

"""An object-store destination (`s3://bucket/prefix`): the second implementation of the interface
the run uses (storage/destination.py). Data, state, leases, counters and run history all live in
the bucket; the local disk holds only a scratch folder per unit, removed when the unit closes.

A unit opens by taking its lease (exit 75 / `locked` when a live worker holds it), reading its
manifest, and recovering what an expired holder left behind: its orphan index shards, its
uncommitted Parquet files, or, when it died between its Delta commit and its state write, the
rows it committed, which are adopted into the index so the rerun writes none of them twice.
Commit: renew the lease marked `committing` (a worker that lost it stops here), the data, then
the state (If-Match), then the lease is deleted.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from storage.delta import DeltaTables, DeltaWriter, adopt
from storage.destination import DryRunSink, Locked, UnitWriting
from storage.lake.budget import ObjectCounters
from storage.lake.files import ObjectPartitionWriter, SpooledQuarantine, uncommitted_files
from storage.lake.history import ObjectHistory
from storage.lake.index import LakeMeta, LakeState
from storage.lake.lease import Lease
from storage.lake.objects import ObjectStore, S3Location
from storage.paths import TABLES, UnitId, quarantine_path

log = logging.getLogger("pipeline.lake")


class MigrationUnfinished(Exception):
    """The unit's state in the destination is a migration's, not finished: running it would duplicate."""


@dataclass
class LakeDestination:
    location: S3Location
    table_format: str = "parquet"
    lease_seconds: float = 900.0
    rows_per_file: int = 250_000
    env: dict | None = None  # AWS_* from the settings (a .env included); None: boto3's own chain

    def __post_init__(self):
        self.objects = ObjectStore(self.location, self.env)
        self.history = ObjectHistory(self.objects)
        self._tables: DeltaTables | None = None

    @property
    def url(self) -> str:
        return self.location.url

    @property
    def tables(self) -> DeltaTables:
        if self._tables is None:
            self._tables = DeltaTables(self.location.url, self.location.storage_options(self.objects.credentials()))
        return self._tables

    def secrets(self) -> list[str]:
        return self.objects.secrets()

    def parquet_dataset(self, table: str, schema):
        """The Parquet files of `table` in the bucket as one Arrow dataset (pyarrow's own S3
        filesystem: nothing to download), or None when it has none."""
        import pyarrow.dataset as ds
        from pyarrow import fs

        keys = self.objects.credentials()
        endpoint = self.location.endpoint
        s3 = fs.S3FileSystem(access_key=keys["AWS_ACCESS_KEY_ID"], secret_key=keys["AWS_SECRET_ACCESS_KEY"],
                             session_token=keys.get("AWS_SESSION_TOKEN"), region=self.location.region or "us-east-1",
                             endpoint_override=endpoint.split("://", 1)[-1] if endpoint else None,
                             scheme="http" if endpoint and endpoint.startswith("http://") else "https")
        root = self.location.key(f"normalized/{table}")
        files = [info.path for info in s3.get_file_info(fs.FileSelector(f"{self.location.bucket}/{root}", recursive=True,
                                                                        allow_not_found=True))
                 if info.type == fs.FileType.File and info.path.endswith(".parquet")
                 and not info.base_name.startswith(".")]
        return ds.dataset(files, schema=schema, format="parquet", filesystem=s3) if files else None

    def prepare(self, *, dry_run: bool, tables=("products",)) -> None:
        """Before any unit: refuse a store that ignores conditional writes, create the units' tables
        (a dry run writes nothing, so it does neither)."""
        if dry_run:
            return
        self.objects.probe()
        for table in tables if self.table_format == "delta" else ():
            if not self.objects.exists(f"normalized/{table}/_delta_log/00000000000000000000.json"):
                self.tables.ensure(table)

    def open_unit(self, unit: UnitId, *, run_id: str, day: date, dry_run: bool, heir: bool = False) -> "LakeUnit":
        """The unit under its lease, recovered; raises Locked while a live worker holds the lease.
        (`heir` is for a local folder's state from before units: state from then reaches an object
        store only through `migrate`, which assigns it.)"""
        lease = None
        if not dry_run:
            lease = Lease(self.objects, unit, seconds=self.lease_seconds, run_id=run_id, day=day.isoformat())
            if not lease.acquire():
                raise Locked(f"another run holds {lease.holder}")
            lease.start_renewing()
        try:
            return LakeUnit(self, unit, run_id, day, dry_run, lease)
        except BaseException:
            if lease is not None:
                lease.release()
            raise


class LakeUnit(UnitWriting):
    """One unit's lease, state, writer, quarantine and counters in the object store."""

    def __init__(self, destination: LakeDestination, unit: UnitId, run_id: str, day: date, dry_run: bool,
                 lease: Lease | None):
        self.destination, self.unit, self.run_id, self.day, self.dry_run = destination, unit, run_id, day, dry_run
        self.lease, objects = lease, destination.objects
        self.committed = False  # the state too, not only the data
        self.workdir = Path(tempfile.mkdtemp(prefix=f"lake-{unit.provider}-"))
        self.state = None
        try:
            self.state = LakeState(objects, unit, self.workdir, read_only=dry_run)
            if self.state.get("migrating"):
                raise MigrationUnfinished(f"{unit}: a migration into {destination.url} has not finished for this unit "
                                          f"(from {self.state.get('migrating')}); run `run_pipeline.py migrate --to "
                                          f"{destination.url}` again before the pipeline, or it would write it twice")
            if lease is not None and lease.previous:
                self._recover(lease.previous)
            self.writers = {table: self._writer(table) for table in TABLES[unit.stream]}
            name = quarantine_path(Path(""), unit, day, run_id).as_posix()
            self.quarantine = SpooledQuarantine(objects, self.workdir / "quarantine.jsonl", name, enabled=not dry_run)
            self.meta = None if dry_run else LakeMeta(self.state)
            self.known = self.state
            self.counters = ObjectCounters(objects)
        except BaseException:
            self._cleanup()
            raise

    def _writer(self, table: str):
        if self.dry_run:
            return DryRunSink()
        if self.destination.table_format == "delta":
            return DeltaWriter(self.destination.tables, self.unit, self.run_id, self.day, self.workdir, table=table)
        return ObjectPartitionWriter(self.destination.objects, self.workdir / "spool", self.unit, self.run_id,
                                     self.day, self.destination.rows_per_file, table=table)

    def _recover(self, dead: dict) -> None:
        """What the expired holder left: its index shards, and its data unless its run committed
        (Parquet: removed; Delta: commits cannot be taken back, so its rows are adopted)."""
        run_id, committed = dead.get("run_id"), dead.get("run_id") in self.state.committed_runs()
        if not run_id:
            return
        swept = self.state.sweep(run_id)
        if committed:
            log.info("%s: run %s had committed; %d leftover shards removed", self.unit, run_id, swept)
            return
        if self.destination.table_format == "delta":
            if dead.get("committing"):
                found = self.destination.tables.recover(self.unit, run_id, TABLES[self.unit.stream])
                if found is not None:
                    rows = adopt(self.state, found)
                    self.state.commit(run_id, {})
                    log.warning("%s: run %s died after its Delta commit; its %d rows were adopted into the index",
                                self.unit, run_id, rows)
            return
        orphans = uncommitted_files(self.destination.objects, self.unit, run_id, date.fromisoformat(dead["day"]))
        if orphans:
            self.destination.objects.delete_many(orphans)
            log.warning("%s: removed %d files of run %s, which died before its commit", self.unit, len(orphans), run_id)

    def commit(self, meta: dict) -> list[str]:
        """Data first (after renewing the lease, marked committing), then the state (If-Match);
        returns the data files written, relative to the destination. A dry run commits nothing."""
        writers = list(reversed(self.writers.values()))  # the primary table last (see recovery)
        if self.dry_run:
            return []
        if any(w.rows or getattr(w, "pending_rows", 0) for w in writers) or self.state.has_changes(meta):
            # Only the holder commits, and recovery must know it got this far: renew, marked.
            self.lease.renew(committing=self.run_id)
        files = [f for writer in writers for f in writer.close()]
        self.state.commit(self.run_id, meta)
        self.committed = True
        return files

    def roll_back(self) -> None:
        for writer in self.writers.values():
            try:
                writer.discard()
            except Exception as exc:  # noqa: BLE001 - leftovers are swept by the next holder
                log.warning("%s: could not remove this run's files: %s", self.unit, exc)
        if self.state is not None:
            self.state.forget_run()

    def close(self) -> None:
        try:
            self.quarantine.publish()
            self.counters.close()
        finally:
            # Rows in the table without the state that records them: keep the lease (marked
            # committing) so whoever takes it over once it expires adopts them.
            stranded = any(getattr(w, "committed", False) for w in self.writers.values()) and not self.committed
            if stranded:
                log.error("%s: run %s committed its rows but not its state; the next run adopts them once "
                          "the lease expires (PIPELINE_LEASE_SECONDS)", self.unit, self.run_id)
            self._cleanup(keep_lease=stranded)

    def _cleanup(self, keep_lease: bool = False) -> None:
        try:
            if self.state is not None:
                self.state.close()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)
            if self.lease is not None:
                self.lease.release(keep=keep_lease)

    @property
    def samples(self) -> list:
        return getattr(next(iter(self.writers.values())), "samples", [])


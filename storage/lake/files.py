"""Parquet files and quarantine lines in an object store: written locally first, then uploaded.

The Parquet layout is the local one (storage/paths.py), so a reader globs
`s3://bucket/prefix/normalized/products/**/*.parquet` as it globs the local folder. An object
appears whole or not at all (a multipart upload becomes visible only when completed), so no
staging name is needed; a file is committed once the unit's manifest records its run.
"""

from __future__ import annotations

from pathlib import Path

from storage.parquet import PartitionWriter
from storage.paths import TABLES, UnitId, partition_dir
from storage.quarantine import Quarantine


class ObjectPartitionWriter(PartitionWriter):
    """PartitionWriter into a local spool folder; each published file is uploaded, then removed."""

    def __init__(self, objects, spool_dir: Path, unit: UnitId, run_id: str, day, rows_per_file: int,
                 table: str = "products"):
        super().__init__(spool_dir, unit, run_id, day, 0o600, rows_per_file, table=table)
        self.objects, self.uploaded = objects, []

    def _publish(self) -> None:
        path = self.current.path
        super()._publish()
        name = path.relative_to(self.data_dir).as_posix()
        self.objects.upload(path, name)
        self.uploaded.append(name)
        path.unlink()

    def discard(self) -> None:
        super().discard()
        if self.uploaded:
            self.objects.delete_many(self.uploaded)
            self.uploaded = []


def uncommitted_files(objects, unit: UnitId, run_id: str, day) -> list[str]:
    """The Parquet objects a run of the unit uploaded on `day` in its tables (to remove when it
    never committed)."""
    return [name for table in TABLES[unit.stream]
            for name in objects.list(partition_dir(Path(""), unit.provider, day, table).as_posix()
                                     + f"/{unit.account}_{run_id}-")]


class SpooledQuarantine(Quarantine):
    """Quarantine lines gathered in a local file and uploaded when the unit closes (kept even when
    the unit fails, like the local quarantine)."""

    def __init__(self, objects, spool: Path, name: str, enabled: bool = True):
        super().__init__(spool, enabled)
        self.objects, self.name = objects, name

    def publish(self) -> None:
        if self.enabled and self.count and self.path.exists():
            self.objects.upload(self.path, self.name)
            self.path.unlink()

"""An object store as the target of a migration (storage/migrate.py): what each step writes there.

The unit's manifest is created first, marked `migrating` (put-if-absent: a target with state of its
own for the unit is refused), so a run that meets the unit before the migration has finished
refuses it instead of writing every product again; the final state write replaces the mark with
`migrated_from`, and a second migration of the same source finds it and moves nothing.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from storage.delta import append_files
from storage.destination import Locked
from storage.lake.index import LakeState
from storage.lake.lease import Lease
from storage.lake.objects import PreconditionFailed
from storage.paths import TABLES, UnitId, counter_name


class MigrationRefused(Exception):
    """The target already holds other state for the unit: nothing was moved for it."""


class LakeMigration:
    def __init__(self, destination):
        self.destination, self.objects, self.history = destination, destination.objects, destination.history

    @contextlib.contextmanager
    def migration(self, unit: UnitId, run_id: str):
        """The unit's place in the target, under the unit's lease (Locked while a run holds it)."""
        day = datetime.now(timezone.utc).date().isoformat()
        lease = Lease(self.objects, unit, seconds=self.destination.lease_seconds, run_id=run_id, day=day)
        if not lease.acquire():
            raise Locked(f"another run holds {lease.holder}")
        lease.start_renewing()
        workdir = Path(tempfile.mkdtemp(prefix="migrate-"))
        state = None
        try:
            state = LakeState(self.objects, unit, workdir, read_only=False)
            yield _Place(self.destination, unit, run_id, state)
        finally:
            if state is not None:
                state.close()
            shutil.rmtree(workdir, ignore_errors=True)
            lease.release()

    def copy_file(self, path: Path, name: str) -> None:
        self.objects.upload(path, name)

    def seed_counter(self, file_name: str, day: str, calls: int) -> None:
        """Today's calls counted locally, as the shared counter's start (unless it has one already)."""
        with contextlib.suppress(PreconditionFailed):
            self.objects.write_document(counter_name(file_name), {"date": day, "reserved": calls}, etag=None)


class _Place:
    def __init__(self, destination, unit: UnitId, run_id: str, state: LakeState):
        self.destination, self.unit, self.run_id, self.state = destination, unit, run_id, state

    def has_state(self, state_file: Path) -> bool:
        """True when this source was migrated here already; marks the unit `migrating` otherwise."""
        source, meta = str(state_file.resolve()), self.state.manifest["meta"]
        if self.state.etag is None:
            self.state.set_meta("migrating", source)  # put-if-absent: a run arriving meanwhile refuses the unit
            return False
        if meta.get("migrated_from") == source:
            return True
        if meta.get("migrating") == source:  # an earlier attempt died part-way: finish it
            return False
        raise MigrationRefused(f"{self.destination.location.url} already holds state for {self.unit}; "
                               "migrate only into a destination that has none for it")

    def data(self, files: list[tuple[Path, object]], names: list[str]) -> bool:
        if self.destination.table_format == "delta":  # each table's files in one commit, the primary last
            appended = False
            for table in reversed(TABLES[self.unit.stream]):
                mine = [(path, day) for (path, day), name in zip(files, names) if _table_of(name) == table]
                appended |= append_files(self.destination.tables, self.unit, mine, self.run_id, table)
            return appended
        for (path, _), name in zip(files, names):  # the same names: a second copy writes nothing new
            self.destination.objects.upload(path, name)
        return bool(files)

    def write_state(self, state_file: Path, meta: dict, files: list[Path] = ()) -> None:
        self.state.absorb(state_file, files)
        kept = {k: v for k, v in self.state.manifest["meta"].items() if k != "migrating"}
        self.state.manifest = {**self.state.manifest, "meta": kept}
        self.state.commit(self.run_id, {**meta, "migrated_from": str(state_file.resolve())})


def _table_of(name: str) -> str:
    """`normalized/<table>/source=.../...parquet` -> the table."""
    parts = Path(name).parts
    return parts[parts.index("normalized") + 1]

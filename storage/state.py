"""Per-unit state: the seen-hash index, the written versions, the high-water mark and the
committed files.

One SQLite file per unit of work under <data-dir>/state/ (storage/paths.py). The index is on disk, so memory stays flat
at millions of records. A run's hashes go to a temporary table and reach the index only in the
same transaction that records its files and high-water mark: data first, state last, atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq

from storage.paths import UnitId, legacy_state_path, state_path

HASH_BYTES = 16  # 128 bits of the SHA-256: collisions are out of reach at any catalog size
IN_CHUNK = 500
VERSION_BYTES = 12

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS seen (h BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS versions (v BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, run_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def inherit_legacy_state(data_dir: Path, unit: UnitId, heir: bool = False) -> bool:
    """Upgrade in place: the first run of a unit whose state does not exist yet takes over its
    provider's state from before units (`state/<provider>.sqlite`) when the rows that state
    committed belong to this unit's account, or, when none of those files is on this machine (a CI
    runner that keeps only the state), when the unit is its provider's `heir` (the account the
    provider's variables define, by its natural id). The copy goes through SQLite's backup (a hot journal
    is rolled back first), then the old file is removed; the new state remembers that the
    provider's account-less files are this unit's. Call under the unit's lock. True if it did."""
    legacy, target = legacy_state_path(data_dir, unit.provider), state_path(data_dir, unit)
    if target.exists() or not legacy.exists() or unit.stream != "products":
        return False
    source = sqlite3.connect(legacy, isolation_level=None)
    try:
        files = [row[0] for row in source.execute("SELECT path FROM files ORDER BY path")]
        owner = _account_of(data_dir, files)
        if owner != unit.account and not (owner is None and heir):
            return False
        staging = target.with_name(f".{target.name}.tmp")
        copy = sqlite3.connect(staging, isolation_level=None)
        try:
            source.backup(copy)
            copy.execute("INSERT OR REPLACE INTO meta VALUES ('legacy_files', 'true')")
        finally:
            copy.close()
        os.replace(staging, target)
    finally:
        source.close()
    legacy.unlink()
    return True


def legacy_owner(data_dir: Path, provider: str) -> tuple[str | None, list[str]]:
    """The account a provider's state from before units belongs to (None if it has no committed
    file left), and its committed files; read-only."""
    legacy = legacy_state_path(data_dir, provider)
    con = sqlite3.connect(f"file:{legacy}?mode=ro", uri=True, isolation_level=None)
    try:
        files = [row[0] for row in con.execute("SELECT path FROM files ORDER BY path")]
    finally:
        con.close()
    return _account_of(data_dir, files), files


def _account_of(data_dir: Path, files: list[str]) -> str | None:
    """The account column of the first committed file that still exists (every row of a legacy
    state has the one account its provider had), or None when there is none."""
    for name in files:
        path = data_dir / name
        if path.is_file():
            column = pq.read_table(path, columns=["account"]).column("account")
            return column[0].as_py() if len(column) else None
    return None


def version_key(source_id: str, updated_at: datetime) -> bytes:
    """A record's version: its id and the provider's last-changed time (a connector can skip work
    for a version already written, such as fetching the rest of a product's variants again)."""
    text = f"{source_id}\n{updated_at.astimezone(timezone.utc).isoformat()}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:VERSION_BYTES]


class ProviderState:
    """Open with `ProviderState.open`; `read_only` (dry runs) never writes a byte to disk."""

    def __init__(self, con: sqlite3.Connection, read_only: bool):
        self.con = con
        self.read_only = read_only
        con.execute("CREATE TEMP TABLE run_seen (h BLOB PRIMARY KEY) WITHOUT ROWID")
        con.execute("CREATE TEMP TABLE run_versions (v BLOB PRIMARY KEY) WITHOUT ROWID")

    @classmethod
    def open(cls, path: Path, *, read_only: bool = False) -> "ProviderState":
        if read_only:
            if path.exists():
                con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
            else:
                con = sqlite3.connect(":memory:", isolation_level=None)
                con.executescript(SCHEMA_SQL)
            return cls(con, read_only=True)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        con = sqlite3.connect(path, isolation_level=None)
        con.execute("PRAGMA synchronous=FULL")
        con.executescript(SCHEMA_SQL)
        return cls(con, read_only=False)

    def close(self) -> None:
        self.con.close()

    # -- meta --------------------------------------------------------------------------------
    def get(self, key: str, default=None):
        row = self.con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set(self, key: str, value) -> None:
        """Set one meta value in its own transaction (for markers outside a run's commit)."""
        self._require_writable()
        self.con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def delete(self, key: str) -> None:
        self._require_writable()
        self.con.execute("DELETE FROM meta WHERE key = ?", (key,))

    # -- dedup -------------------------------------------------------------------------------
    def keep_unseen(self, hashes: list[str]) -> list[bool]:
        """For each hash, True if neither an earlier run nor this one has it; remembers the new."""
        keys = [bytes.fromhex(h)[:HASH_BYTES] for h in hashes]
        known = set()
        for start in range(0, len(keys), IN_CHUNK):
            chunk = keys[start:start + IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            known.update(row[0] for row in self.con.execute(
                f"SELECT h FROM main.seen WHERE h IN ({marks}) "
                f"UNION ALL SELECT h FROM temp.run_seen WHERE h IN ({marks})", chunk + chunk))
        flags = []
        for key in keys:
            flags.append(key not in known)
            known.add(key)
        fresh = [(k,) for k, new in zip(keys, flags) if new]
        self.con.executemany("INSERT INTO temp.run_seen VALUES (?)", fresh)
        return flags

    def remember_versions(self, versions: Iterable[tuple[str, datetime | None]]) -> None:
        """Note the (source_id, updated_at) of records this run writes; they count once committed."""
        self.con.executemany("INSERT OR IGNORE INTO temp.run_versions VALUES (?)",
                             [(version_key(i, t),) for i, t in versions if t is not None])

    def seen_count(self) -> int:
        return self.con.execute("SELECT count(*) FROM main.seen").fetchone()[0]

    # -- commit ------------------------------------------------------------------------------
    def committed_files(self) -> set[str]:
        return {row[0] for row in self.con.execute("SELECT path FROM files")}

    def commit(self, run_id: str, files: Iterable[Path], meta: dict) -> None:
        """Atomically: this run's hashes into the index, its files, its meta values."""
        self._require_writable()
        con = self.con
        con.execute("BEGIN IMMEDIATE")
        try:
            con.execute("INSERT OR IGNORE INTO main.seen SELECT h FROM temp.run_seen")
            con.execute("INSERT OR IGNORE INTO main.versions SELECT v FROM temp.run_versions")
            con.executemany("INSERT OR REPLACE INTO files VALUES (?, ?)",
                            [(Path(f).as_posix(), run_id) for f in files])
            con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                            [(k, json.dumps(v)) for k, v in meta.items()])
            con.execute("DELETE FROM meta WHERE key = 'inflight_run'")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("DELETE FROM temp.run_seen")
        con.execute("DELETE FROM temp.run_versions")

    def forget_run(self) -> None:
        """Drop this run's uncommitted hashes and versions (the provider failed)."""
        self.con.execute("DELETE FROM temp.run_seen")
        self.con.execute("DELETE FROM temp.run_versions")

    def adopt(self, data_dir: Path, paths: list[Path]) -> int:
        """Index Parquet files that exist but that this state does not know (a lost state file)."""
        self._require_writable()
        self.con.execute("BEGIN IMMEDIATE")
        try:
            count = 0
            for path in paths:
                table = pq.read_table(path, columns=["raw_hash", "run_id", "source_id", "source_updated_at"])
                self.con.executemany("INSERT OR IGNORE INTO main.seen VALUES (?)",
                                     [(bytes.fromhex(h)[:HASH_BYTES],) for h in table["raw_hash"].to_pylist()])
                self.con.executemany("INSERT OR IGNORE INTO main.versions VALUES (?)",
                                     [(version_key(i, t),) for i, t in zip(table["source_id"].to_pylist(),
                                                                           table["source_updated_at"].to_pylist())
                                      if t is not None])
                run_ids = table["run_id"].to_pylist()
                self.con.execute("INSERT OR REPLACE INTO files VALUES (?, ?)",
                                 (path.relative_to(data_dir).as_posix(), run_ids[0] if run_ids else ""))
                count += len(run_ids)
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        return count

    def _require_writable(self) -> None:
        if self.read_only:
            raise RuntimeError("state opened read-only (dry run)")


class MetaStore:
    """get/set/delete of one provider's meta values on a connection of its own per call, for use
    from the fetch thread (a checkpoint that must survive a crash) while the run's connection works."""

    def __init__(self, path: Path):
        self.path = path

    def _call(self, sql: str, args: tuple):
        con = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            return con.execute(sql, args).fetchone()
        finally:
            con.close()

    def get(self, key: str, default=None):
        row = self._call("SELECT value FROM meta WHERE key = ?", (key,))
        return json.loads(row[0]) if row else default

    def set(self, key: str, value) -> None:
        self._call("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def delete(self, key: str) -> None:
        self._call("DELETE FROM meta WHERE key = ?", (key,))


class KnownVersions:
    """`(source_id, updated_at) in known`: was this version written by a committed run? Usable
    from the fetch thread: each question opens its own read-only connection (questions are few:
    a connector asks only where skipping saves requests)."""

    def __init__(self, path: Path):
        self.path = path

    def __contains__(self, version: tuple[str, datetime]) -> bool:
        if not self.path.exists():
            return False
        con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None, timeout=30)
        try:
            return con.execute("SELECT 1 FROM versions WHERE v = ?", (version_key(*version),)).fetchone() is not None
        except sqlite3.OperationalError:  # a state file from before versions were kept
            return False
        finally:
            con.close()

"""Per-unit state: the latest-hash index, the written versions, the high-water mark and the
committed files.

One SQLite file per unit of work under <data-dir>/state/ (storage/paths.py). The index holds one
hash per record (product, order): the raw_hash of the last version written for it, so a record is
new when its content differs from that version (a price going 10 -> 12 -> 10 writes three rows).
It is on disk, so memory stays flat at millions of records. A run's hashes go to a temporary table
and reach the index only in the same transaction that records its files and high-water mark: data
first, state last, atomically.

Upgrade in place: a state from before the latest-hash index has `seen`, every raw_hash ever
written, and no product keys. A record with no entry in `latest` is new when its hash is not in
`seen`, so the first run after the upgrade writes nothing it wrote before; from then on each record
read has its entry. A new state never fills `seen`.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from storage.index_keys import (VERSION_BYTES, data_file_records, latest_hash, record_key, record_keys, run_order,
                                version_key)
from storage.paths import UnitId, legacy_state_path, state_path

HASH_BYTES = 16  # 128 bits of the SHA-256: collisions are out of reach at any catalog size
IN_CHUNK = 500
# A run's latest hashes and versions are held in memory up to this many entries of either, then go
# to the temporary tables in key order, in one transaction: a run of up to this size writes them
# only in its commit, straight into the index; a larger one stays flat (RSS +16 MB at 1M products,
# +9 at 25,000 for 10% more CPU), each spill touching a page of those tables once, not once a record.
RUN_BUFFER = 50_000
# Past it, a bit a key (its low 24 bits, 2 MB) tells which keys of the batch may be in
# temp.run_latest; only those are asked there (at 1M products, about 6% of the keys: a record read
# twice in a run is rare, and each lookup in the spilled table reads a page from disk).
SPILLED_BITS_MASK = (1 << 21) - 1

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS seen (h BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS latest (k INTEGER PRIMARY KEY, h INTEGER NOT NULL);
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
    import pyarrow.parquet as pq  # an upgrade's rare path: a run that needs none reads no Parquet

    for name in files:
        path = data_dir / name
        if path.is_file():
            column = pq.read_table(path, columns=["account"]).column("account")
            return column[0].as_py() if len(column) else None
    return None


class ProviderState:
    """Open with `ProviderState.open`; `read_only` (dry runs) never writes a byte to disk."""

    def __init__(self, con: sqlite3.Connection, read_only: bool):
        self.con = con
        self.read_only = read_only
        con.execute("CREATE TEMP TABLE run_latest (k INTEGER PRIMARY KEY, h INTEGER NOT NULL)")
        # A state from before the latest-hash index: its `seen` set answers for records not read since.
        self.has_legacy = con.execute("SELECT 1 FROM main.seen LIMIT 1").fetchone() is not None
        con.execute("CREATE TEMP TABLE run_versions (v BLOB PRIMARY KEY) WITHOUT ROWID")
        # This run's entries not yet in temp.run_latest / temp.run_versions (see RUN_BUFFER); an
        # entry here is newer than that table's for its key.
        self.run_latest: dict[int, int] = {}
        self.run_versions: list[bytes] = []
        # The keys spilled into temp.run_latest (SPILLED_BITS_MASK), while that table holds no
        # other row: valid while the connection's total_changes is the one after the last spill.
        self.spilled: bytearray | None = None
        self.spilled_changes = -1

    @classmethod
    def open(cls, path: Path, *, read_only: bool = False) -> "ProviderState":
        if read_only:
            if path.exists():
                con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
                if con.execute("SELECT 1 FROM sqlite_master WHERE name = 'latest'").fetchone() is None:
                    con.execute("CREATE TEMP TABLE latest (k INTEGER PRIMARY KEY, h INTEGER NOT NULL)")
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
    def keep_changed(self, records: list[tuple[str, str]], keys: list[int] | None = None) -> list[bool]:
        """For each (source_id, raw_hash), True if the hash differs from the last one written for
        that source_id, by a committed run or earlier in this run; each True becomes its record's
        latest (counted once this run commits). A record the index has no entry for is new unless
        the state's pre-upgrade `seen` set has its hash. `keys`: their record_keys, when the caller
        has them already."""
        if keys is None:
            keys = record_keys(records)
        from_bytes, fromhex = int.from_bytes, bytes.fromhex
        hashes = [from_bytes(fromhex(h[:16]), "big", signed=True) for _, h in records]  # latest_hash
        run = self.run_latest
        latest = self._latest_of(keys, hashes)
        legacy = (self._legacy_seen([h for (_, h), k in zip(records, keys) if k not in latest and k not in run])
                  if self.has_legacy else ())
        flags = []
        for key, digest, (_, raw) in zip(keys, hashes, records):
            last = run.get(key)
            if last is None:
                last = latest.get(key)
            new = raw not in legacy if last is None else digest != last
            flags.append(new)
            if new or last is None:  # a legacy duplicate still gets its entry: the next run asks latest
                run[key] = digest
        if len(run) >= RUN_BUFFER:
            self.flush_run()
        return flags

    def _latest_of(self, keys: list[int], hashes: list[int]) -> dict[int, int]:
        """The latest hash of each of these keys that has one outside this run's buffer: this
        run's in temp.run_latest (spilled, or a migration's) over the committed one."""
        con = self.con
        # Only tables with rows are asked (a unit's first run has none: its index is empty).
        committed, run_table = con.execute(
            "SELECT EXISTS (SELECT 1 FROM latest), EXISTS (SELECT 1 FROM temp.run_latest)").fetchone()
        latest = dict(zip(keys, hashes)) if committed else {}
        if committed:
            # The index returns only the keys whose hash is not the one asked about (a rerun's
            # unchanged records, most of them, return nothing): None where it has no entry.
            pairs = list(latest.items())
            for start in range(0, len(pairs), IN_CHUNK // 2):
                part = pairs[start:start + IN_CHUNK // 2]
                values = ",".join(["(?, ?)"] * len(part))
                for key, last in con.execute(f"SELECT b.column1, m.h FROM (VALUES {values}) AS b LEFT JOIN latest AS m "
                                             "ON m.k = b.column1 WHERE m.h IS NOT b.column2",
                                             [value for pair in part for value in pair]):
                    if last is None:
                        del latest[key]
                    else:
                        latest[key] = last
        if run_table:
            bits = self.spilled if con.total_changes == self.spilled_changes else None
            if bits is None:  # a row another statement put there (a migration): ask for every key
                self.spilled = None
            else:
                mask = SPILLED_BITS_MASK
                keys = [k for k in keys if bits[(k >> 3) & mask] >> (k & 7) & 1]
            for start in range(0, len(keys), IN_CHUNK):
                chunk = keys[start:start + IN_CHUNK]
                latest.update(con.execute(f"SELECT k, h FROM temp.run_latest WHERE k IN ({','.join('?' * len(chunk))})",
                                          chunk))
        return latest

    def _legacy_seen(self, raw_hashes: list[str]) -> set[str]:
        """The raw_hashes the pre-upgrade `seen` set has."""
        hashes = [bytes.fromhex(h)[:HASH_BYTES] for h in raw_hashes]
        found = set()
        for start in range(0, len(hashes), IN_CHUNK):
            chunk = hashes[start:start + IN_CHUNK]
            found.update(row[0] for row in self.con.execute(
                f"SELECT h FROM main.seen WHERE h IN ({','.join('?' * len(chunk))})", chunk))
        return {h for h in raw_hashes if bytes.fromhex(h)[:HASH_BYTES] in found}

    def remember_versions(self, versions: Iterable[tuple[str, datetime | None]]) -> None:
        """Note the (source_id, updated_at) of records this run writes; they count once committed."""
        self.remember_version_keys([version_key(i, t) for i, t in versions if t is not None])

    def remember_version_keys(self, keys: list[bytes]) -> None:
        """remember_versions for versions whose version_key the caller has already."""
        self.run_versions += keys
        if len(self.run_versions) >= RUN_BUFFER:
            self.flush_run()

    def flush_run(self) -> None:
        """This run's buffered entries into temp.run_latest and temp.run_versions, in key order, in
        one transaction (also for SQL that reads those tables: storage/lake/index.py)."""
        if not self.run_latest and not self.run_versions:
            return
        con = self.con
        bits = self.spilled if con.total_changes == self.spilled_changes else None
        if bits is None and not con.execute("SELECT EXISTS (SELECT 1 FROM temp.run_latest)").fetchone()[0]:
            bits = bytearray(SPILLED_BITS_MASK + 1)  # the first spill of the run
        own = not con.in_transaction  # else part of the caller's; outside any, a statement is one
        if own:
            con.execute("BEGIN")
        try:
            self._insert_run(con, "temp.run_latest", "temp.run_versions")
        except BaseException:
            if own:
                con.execute("ROLLBACK")
            raise
        if own:
            con.execute("COMMIT")
        if bits is not None:
            mask = SPILLED_BITS_MASK
            for k in self.run_latest:
                bits[(k >> 3) & mask] |= 1 << (k & 7)
        self.spilled, self.spilled_changes = bits, con.total_changes
        self.run_latest, self.run_versions = {}, []

    def _insert_run(self, con: sqlite3.Connection, latest: str, versions: str) -> None:
        """This run's buffered entries into these tables (a newer latest hash replaces an older one)."""
        run, keys = self.run_latest, sorted(self.run_latest)  # in key order: SQLite appends rather than splits pages
        for start in range(0, len(keys), IN_CHUNK // 2):  # a statement of many rows: a third less CPU than one a row
            part = keys[start:start + IN_CHUNK // 2]
            con.execute(f"INSERT OR REPLACE INTO {latest} VALUES {','.join(['(?, ?)'] * len(part))}",
                        [value for key in part for value in (key, run[key])])
        if self.run_versions:
            # One statement over the keys joined into one blob, cut in SQL: half the cost of a
            # statement a key.
            blob = b"".join(sorted(self.run_versions))
            con.execute(f"WITH RECURSIVE i(n) AS (SELECT 1 UNION ALL SELECT n + {VERSION_BYTES} FROM i "
                        f"WHERE n + {VERSION_BYTES} <= ?2) "
                        f"INSERT OR IGNORE INTO {versions} SELECT substr(?1, n, {VERSION_BYTES}) FROM i",
                        (blob, len(blob)))

    def latest_count(self) -> int:
        """Records (products, orders) the index has a latest hash for."""
        return self.con.execute("SELECT count(*) FROM main.latest").fetchone()[0]

    # -- commit ------------------------------------------------------------------------------
    def committed_files(self) -> set[str]:
        return {row[0] for row in self.con.execute("SELECT path FROM files")}

    def commit(self, run_id: str, files: Iterable[Path], meta: dict) -> None:
        """Atomically: this run's hashes into the index, its files, its meta values."""
        self._require_writable()
        con = self.con
        run_tables = any(con.execute(f"SELECT 1 FROM temp.{t} LIMIT 1").fetchone() for t in ("run_latest", "run_versions"))
        if run_tables:  # part of the run went to the temporary tables: the rest joins it there
            self.flush_run()
        con.execute("BEGIN IMMEDIATE")
        try:
            if run_tables:
                con.execute("INSERT OR REPLACE INTO main.latest SELECT k, h FROM temp.run_latest")
                con.execute("INSERT OR IGNORE INTO main.versions SELECT v FROM temp.run_versions")
            else:  # all of the run is in memory: straight into the index
                self._insert_run(con, "main.latest", "main.versions")
            con.executemany("INSERT OR REPLACE INTO files VALUES (?, ?)",
                            [(Path(f).as_posix(), run_id) for f in files])
            con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                            [(k, json.dumps(v)) for k, v in meta.items()])
            con.execute("DELETE FROM meta WHERE key = 'inflight_run'")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        self.forget_run()

    def forget_run(self) -> None:
        """Drop this run's uncommitted hashes and versions (the provider failed)."""
        self.run_latest, self.run_versions, self.spilled = {}, [], None
        self.con.execute("DELETE FROM temp.run_latest")
        self.con.execute("DELETE FROM temp.run_versions")

    def adopt(self, data_dir: Path, paths: list[Path]) -> int:
        """Index Parquet files that exist but that this state does not know (a lost state file):
        each record's latest hash is that of its last row, files taken in the order of their runs."""
        import pyarrow.parquet as pq  # recovery's rare path: a run that needs none reads no Parquet

        self._require_writable()
        self.con.execute("BEGIN IMMEDIATE")
        try:
            count = 0
            for path in sorted(paths, key=run_order):
                run_ids = pq.read_table(path, columns=["run_id"])["run_id"].to_pylist()
                records = data_file_records(path)
                if records is not None:  # a record's own table (products, orders), not its lines
                    ids, hashes, times = records
                    self.con.executemany("INSERT OR REPLACE INTO main.latest VALUES (?, ?)",
                                         [(record_key(i), latest_hash(h)) for i, h in zip(ids, hashes)])
                    self.con.executemany("INSERT OR IGNORE INTO main.versions VALUES (?)",
                                         [(version_key(i, t),) for i, t in zip(ids, times) if t is not None])
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

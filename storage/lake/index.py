"""A unit's state in the destination: one manifest object and its index shards.

  _state/<provider>.<account>.<stream>/manifest.json
      {"generation", "meta" (high-water mark, bulk checkpoint, learned page size), "runs" (the
       last committed run ids), "index": {"latest"|"versions": {"bits", "shards": {"<n>": [run_id, count]}}}}
  _state/<unit>/index/<run_id>/latest-<bits>-<n>.bin     per record: 8 bytes of its key, 8 of its
                                                         latest raw_hash (storage/index_keys.py), sorted
  _state/<unit>/index/<run_id>/versions-<bits>-<n>.bin   sorted 12-byte version keys

The index is sharded by the top `bits` bits of each entry's first byte: one shard while a unit has
up to 4,096 entries, 16 up to 65,536, then 256 (about 3,900 entries, 62 KB, per shard at a million
products); a growing unit is re-sharded twice in its life. A shard is fetched the first time a
record of this run lands in it, so a rerun that sees a few products downloads a few shards, not
the index. Fetched shards go into a SQLite file in the run's scratch folder, which does the
lookups exactly as the local state does (storage/state.py), with memory flat at any size.

Commit (data first, state last): every shard this run added to is written whole under the run's
own folder (a new object; nothing is overwritten), then the manifest with If-Match on the ETag
read at the start (If-None-Match when the unit is new). A worker that lost its lease, or any other
writer, cannot overwrite newer state: its manifest write is refused and the unit fails loudly.
The shards the new manifest replaced are deleted after it.
"""

from __future__ import annotations

import logging
import sqlite3
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from storage.lake.objects import StoreError
from storage.paths import UnitId, manifest_name, segment_name, segment_prefix
from storage.index_keys import VERSION_BYTES, latest_from_files, record_keys, version_key
from storage.state import ProviderState

log = logging.getLogger("pipeline.lake")
LATEST = struct.Struct(">qq")  # a record's key and its latest hash, as the local state keeps them
KINDS = {"latest": LATEST.size, "versions": VERSION_BYTES}
SHARD_BITS = ((4096, 0), (65536, 4))  # up to this many entries: this many bits; beyond: 8
RUNS_KEPT = 50  # committed run ids remembered, for recovery to tell a committed run from a dead one
PARALLEL = 16


class StateCorrupt(StoreError):
    """A shard does not have the size its manifest says."""


def empty_manifest(unit: UnitId) -> dict:
    return {"format": 2, "unit": list(unit), "generation": 0, "meta": {}, "runs": [],
            "index": {kind: {"bits": 0, "shards": {}} for kind in KINDS}}


def bits_for(entries: int) -> int:
    return next((bits for limit, bits in SHARD_BITS if entries <= limit), 8)


def shard_of(first_byte: int, bits: int) -> int:
    return first_byte >> (8 - bits)


class LakeState:
    """The state the run asks for (`get`, `keep_changed`, `remember_versions`), `version in state`
    for the connector's thread, meta writes that must survive a crash, and `commit`."""

    def __init__(self, objects, unit: UnitId, workdir: Path, *, read_only: bool):
        self.objects, self.unit, self.read_only = objects, unit, read_only
        self.name = manifest_name(unit)
        manifest, self.etag, _ = objects.read_document(self.name)
        self.manifest = manifest or empty_manifest(unit)
        self.cache_path = workdir / "index.sqlite"
        self.cache = ProviderState.open(self.cache_path)
        self.cache.con.execute("PRAGMA journal_mode=WAL")
        self.cache.con.execute("PRAGMA synchronous=OFF")  # scratch: rebuilt from the store if lost
        self.loaded = {kind: set() for kind in KINDS}  # shards (at the manifest's bits) in the cache
        self.lock = threading.RLock()
        self.traffic = {"shards_read": 0, "bytes_read": 0, "shards_written": 0, "bytes_written": 0}

    # -- what the run reads ----------------------------------------------------------------------
    def get(self, key: str, default=None):
        return self.manifest["meta"].get(key, default)

    def keep_changed(self, records: list[tuple[str, str]]) -> list[bool]:
        """For each (source_id, raw_hash), True if the hash differs from the last one written for
        that record (storage/state.py's rule); the shards holding those records are fetched first."""
        keys = record_keys(records)  # computed once: for the shards, then for the lookups
        self._load("latest", {_first_byte(key) for key in keys})
        return self.cache.keep_changed(records, keys)

    def remember_versions(self, versions) -> None:
        keys = [version_key(i, t) for i, t in versions if t is not None]
        self._load("versions", {key[0] for key in keys})
        self.cache.remember_version_keys(keys)

    def __contains__(self, version) -> bool:
        """Was this (source_id, updated_at) written by a committed run? (from the fetch thread)"""
        key = version_key(*version)
        self._load("versions", {key[0]})
        con = sqlite3.connect(self.cache_path, isolation_level=None, timeout=30)
        try:
            return con.execute("SELECT 1 FROM versions WHERE v = ?", (key,)).fetchone() is not None
        finally:
            con.close()

    def committed_runs(self) -> list[str]:
        return list(self.manifest["runs"])

    # -- meta the connector writes at once (a bulk checkpoint must survive a crash) ---------------
    def set_meta(self, key: str, value) -> None:
        with self.lock:
            if self.manifest["meta"].get(key) != value:
                self._write_manifest({**self.manifest, "meta": {**self.manifest["meta"], key: value}})

    def delete_meta(self, key: str) -> None:
        with self.lock:
            if key in self.manifest["meta"]:
                meta = {k: v for k, v in self.manifest["meta"].items() if k != key}
                self._write_manifest({**self.manifest, "meta": meta})

    # -- commit ----------------------------------------------------------------------------------
    def has_changes(self, meta: dict) -> bool:
        """Whether `commit(meta)` would write anything (a no-change run writes nothing at all)."""
        self.cache.flush_run()  # what follows reads the run's entries from the temporary tables
        return any(self._new_entries(kind) for kind in KINDS) or \
            {**self.manifest["meta"], **meta} != self.manifest["meta"]

    def commit(self, run_id: str, meta: dict) -> bool:
        """The shards this run added to, then the manifest (If-Match); False when nothing changed."""
        if self.read_only:
            raise RuntimeError("state opened read-only (dry run)")
        with self.lock:
            if not self.has_changes(meta):
                return False
            index, replaced = {}, []
            with ThreadPoolExecutor(PARALLEL) as pool:
                for kind in KINDS:
                    index[kind], old = self._commit_kind(kind, run_id, pool)
                    replaced += old
            self._write_manifest({**self.manifest, "generation": self.manifest["generation"] + 1,
                                  "meta": {**self.manifest["meta"], **meta}, "index": index,
                                  "runs": [*self.manifest["runs"], run_id][-RUNS_KEPT:]})
            self._settle()
            self._delete_quietly(replaced)
            return True

    def _commit_kind(self, kind: str, run_id: str, pool: ThreadPoolExecutor) -> tuple[dict, list[str]]:
        """Upload the shards of `kind` this run changed (all of them when the unit outgrew its
        shard count); returns the kind's new index entry and the shard objects it replaces."""
        entry, new = self.manifest["index"][kind], self._new_entries(kind)
        bits, shards = entry["bits"], dict(entry["shards"])
        total = sum(count for _, count in shards.values()) + self._new_count(kind)
        target = max(bits, bits_for(total))
        if target != bits:  # re-shard: every entry must be in the cache first
            self._load(kind, set(range(256)))
            touched = self.loaded[kind] = set(range(1 << target))
            replaced = [segment_name(self.unit, r, kind, bits, int(n, 16)) for n, (r, _) in shards.items()]
            shards = {}
        else:
            touched = {shard_of(b, bits) for b in new}
            replaced = [segment_name(self.unit, shards[f"{n:02x}"][0], kind, bits, n)
                        for n in touched if f"{n:02x}" in shards]
        pending = []
        for shard in sorted(touched):
            body = self._shard_body(kind, target, shard)
            if not body:
                shards.pop(f"{shard:02x}", None)
                continue
            pending.append(pool.submit(self.objects.put, segment_name(self.unit, run_id, kind, target, shard), body))
            shards[f"{shard:02x}"] = [run_id, len(body) // KINDS[kind]]
            self.traffic["shards_written"] += 1
            self.traffic["bytes_written"] += len(body)
            if len(pending) >= 2 * PARALLEL:  # bounded: memory holds a few shards, not the index
                pending.pop(0).result()
        for future in pending:
            future.result()
        return {"bits": target, "shards": shards}, replaced

    def _new_entries(self, kind: str) -> set[int]:
        """The first bytes of this run's entries of `kind` that no committed run has (for `latest`:
        a record new to the index, or whose latest hash changed)."""
        con = self.cache.con
        if kind == "latest":
            rows = con.execute("SELECT r.k FROM temp.run_latest AS r LEFT JOIN main.latest AS m ON m.k = r.k "
                               "WHERE m.h IS NULL OR m.h != r.h")
            return {_first_byte(row[0]) for row in rows}
        rows = con.execute("SELECT DISTINCT substr(v, 1, 1) FROM temp.run_versions "
                           "WHERE v NOT IN (SELECT v FROM main.versions)")
        return {row[0][0] for row in rows}

    def _new_count(self, kind: str) -> int:
        """Entries this run adds to `kind` (a changed latest hash replaces its entry: none added)."""
        column, temp = ("k", "run_latest") if kind == "latest" else ("v", "run_versions")
        return self.cache.con.execute(f"SELECT count(*) FROM temp.{temp} "
                                      f"WHERE {column} NOT IN (SELECT {column} FROM main.{kind})").fetchone()[0]

    def _shard_body(self, kind: str, bits: int, shard: int) -> bytes:
        """The shard's entries, committed and this run's (this run's latest hash wins), sorted."""
        low, high = shard << (8 - bits), (shard + 1) << (8 - bits)
        con = self.cache.con
        if kind == "latest":
            rows = []
            for bounds, args in _key_ranges(low, high):
                rows += con.execute(f"SELECT k, h FROM temp.run_latest WHERE {bounds} UNION ALL "
                                    f"SELECT k, h FROM main.latest WHERE {bounds} "
                                    "AND k NOT IN (SELECT k FROM temp.run_latest)", args + args).fetchall()
            rows.sort(key=lambda row: row[0] & 0xFFFFFFFFFFFFFFFF)  # the order of the key's bytes
            return b"".join(LATEST.pack(k, h) for k, h in rows)
        bounds = "v >= ?" + (" AND v < ?" if high < 256 else "")
        args = (bytes([low]), bytes([high])) if high < 256 else (bytes([low]),)
        rows = con.execute(f"SELECT v FROM main.versions WHERE {bounds} UNION SELECT v FROM temp.run_versions "
                           f"WHERE {bounds} ORDER BY 1", args + args)
        return b"".join(row[0] for row in rows)

    def _settle(self) -> None:
        """This run's latest hashes and versions become committed ones in the scratch cache too."""
        con = self.cache.con
        con.execute("INSERT OR REPLACE INTO main.latest SELECT k, h FROM temp.run_latest")
        con.execute("INSERT OR IGNORE INTO main.versions SELECT v FROM temp.run_versions")
        self.cache.forget_run()

    def forget_run(self) -> None:
        self.cache.forget_run()

    def absorb(self, state_file: Path, files: list[Path] = ()) -> None:
        """Take a local state file's latest hashes and versions as this run's own (a migration); the
        file is copied first, so the source is never written to (not even a hot journal's rollback).
        A state from before the latest-hash index knows only which hashes were ever written: its
        records' latest hashes are read from its data `files` instead, in the order of their runs."""
        copy = self.cache_path.with_name("absorbed.sqlite")
        source, target = sqlite3.connect(state_file), sqlite3.connect(copy)
        try:
            source.backup(target)
        finally:
            source.close(), target.close()
        self.cache.flush_run()  # the absorbed entries replace what the run already had
        con = self.cache.con
        con.execute("ATTACH DATABASE ? AS source", (str(copy),))
        try:
            tables = {row[0] for row in con.execute("SELECT name FROM source.sqlite_master WHERE type = 'table'")}
            if "latest" in tables:
                con.execute("INSERT OR REPLACE INTO temp.run_latest SELECT k, h FROM source.latest")
            if "seen" in tables and con.execute("SELECT 1 FROM source.seen LIMIT 1").fetchone():
                con.executemany("INSERT OR REPLACE INTO temp.run_latest VALUES (?, ?)", latest_from_files(files))
            if "versions" in tables:  # a state from before versions were kept has none
                con.execute("INSERT OR IGNORE INTO temp.run_versions SELECT v FROM source.versions")
        finally:
            con.execute("DETACH DATABASE source")
            copy.unlink()

    def _write_manifest(self, manifest: dict) -> None:
        if self.read_only:
            raise RuntimeError("state opened read-only (dry run)")
        self.etag = self.objects.write_document(self.name, manifest, etag=self.etag)
        self.manifest = {k: v for k, v in manifest.items() if k != "write"}

    # -- shards ----------------------------------------------------------------------------------
    def _load(self, kind: str, first_bytes: set[int]) -> None:
        """Fetch the committed shards of `kind` holding these first bytes (in parallel) into the cache."""
        with self.lock:
            entry = self.manifest["index"][kind]
            wanted = {shard_of(b, entry["bits"]) for b in first_bytes} - self.loaded[kind]
            todo = [(n, entry["shards"][f"{n:02x}"]) for n in sorted(wanted) if f"{n:02x}" in entry["shards"]]
            if todo:
                with ThreadPoolExecutor(min(PARALLEL, len(todo))) as pool:
                    bodies = list(pool.map(lambda item: self._fetch(kind, entry["bits"], *item), todo))
                con = sqlite3.connect(self.cache_path, isolation_level=None, timeout=30)
                try:
                    con.execute("BEGIN")
                    width = KINDS[kind]
                    for body in bodies:
                        if kind == "latest":
                            con.executemany("INSERT OR IGNORE INTO latest VALUES (?, ?)", LATEST.iter_unpack(body))
                        else:
                            con.executemany(f"INSERT OR IGNORE INTO {kind} VALUES (?)",
                                            ((body[i:i + width],) for i in range(0, len(body), width)))
                    con.execute("COMMIT")
                finally:
                    con.close()
            self.loaded[kind] |= wanted

    def _fetch(self, kind: str, bits: int, shard: int, entry: list) -> bytes:
        run_id, count = entry
        name = segment_name(self.unit, run_id, kind, bits, shard)
        blob = self.objects.get(name)
        if blob is None or len(blob.body) != count * KINDS[kind]:
            raise StateCorrupt(f"{self.objects.location.uri(name)} is {'missing' if blob is None else 'damaged'}: "
                               f"the state of {self.unit} cannot be trusted, so the unit fails rather than write "
                               "its products again; restore the object (from the bucket's versioning or a copy)")
        self.traffic["shards_read"] += 1
        self.traffic["bytes_read"] += len(blob.body)
        return blob.body

    def referenced(self) -> set[str]:
        return {segment_name(self.unit, run_id, kind, entry["bits"], int(n, 16))
                for kind, entry in self.manifest["index"].items() for n, (run_id, _) in entry["shards"].items()}

    def sweep(self, dead_run: str) -> int:
        """Delete the index shards a dead run uploaded that no manifest points at; returns how many."""
        names = [n for n in self.objects.list(segment_prefix(self.unit, dead_run)) if n not in self.referenced()]
        self._delete_quietly(names)
        return len(names)

    def _delete_quietly(self, names: list[str]) -> None:
        try:
            if names:
                self.objects.delete_many(names)
        except StoreError as exc:  # garbage, not state: the next takeover or a lifecycle rule clears it
            log.warning("%s: could not delete %d replaced index shards: %s", self.unit, len(names), exc)

    def close(self) -> None:
        self.cache.close()


def _first_byte(key: int) -> int:
    """The first byte of a record key as the shards are cut (its 8 bytes, big-endian)."""
    return (key >> 56) & 0xFF


def _key_ranges(low: int, high: int) -> list[tuple[str, tuple]]:
    """SQL bounds on the signed 64-bit key `k` for the keys whose first byte is in [low, high):
    bytes below 0x80 are the non-negative keys, the others the negative ones."""
    ranges = []
    if low < 0x80:
        top = min(high, 0x80)
        ranges.append(("k >= ?" + (" AND k < ?" if top < 0x80 else ""),
                       (low << 56, top << 56) if top < 0x80 else (low << 56,)))
    if high > 0x80:
        bottom = max(low, 0x80)
        ranges.append(("k >= ?" + (" AND k < ?" if high < 0x100 else " AND k < 0"),
                       ((bottom - 256) << 56, (high - 256) << 56) if high < 0x100 else ((bottom - 256) << 56,)))
    return ranges


class LakeMeta:
    """get/set/delete of the unit's meta for the connector's thread; each write is durable at once."""

    def __init__(self, state: LakeState):
        self.state = state

    def get(self, key: str, default=None):
        return self.state.get(key, default)

    def set(self, key: str, value) -> None:
        self.state.set_meta(key, value)

    def delete(self, key: str) -> None:
        self.state.delete_meta(key)

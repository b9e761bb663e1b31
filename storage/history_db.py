"""The run-history sink: every run-log line also lands in logs/runs.sqlite, for SQL over history.

Schema (documented in the README):
  runs(run_id PK, started_at, finished_at, duration_s, status, exit_code, dry_run, limited,
       anomalies, record)                      -- record is the run-log line as JSON
  provider_runs(run_id, provider, account, stream, status, reason, fetched, written, duplicates,
                quarantined, requests, retries, throttle_wait_s, duration_s, error_type, error)
                PK(run_id, provider, account, stream)   -- one row per unit of work; a run from
                before units has account NULL and stream 'products' (its one account per provider)
One transaction per run, so a reader sees a run whole or not at all.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT NOT NULL, duration_s REAL,
  status TEXT NOT NULL, exit_code INTEGER, dry_run INTEGER, limited INTEGER, anomalies INTEGER,
  record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS provider_runs (
  run_id TEXT NOT NULL REFERENCES runs(run_id), provider TEXT NOT NULL, account TEXT, stream TEXT NOT NULL,
  status TEXT NOT NULL, reason TEXT,
  fetched INTEGER, written INTEGER, duplicates INTEGER, quarantined INTEGER, requests INTEGER,
  retries INTEGER, throttle_wait_s REAL, duration_s REAL, error_type TEXT, error TEXT,
  PRIMARY KEY (run_id, provider, account, stream));
CREATE INDEX IF NOT EXISTS runs_started ON runs(started_at);
"""
PROVIDER_COLUMNS = ("status", "reason", "fetched", "written", "duplicates", "quarantined", "requests", "retries",
                    "throttle_wait_s", "duration_s", "error_type", "error")


def history_path(logs_dir: Path) -> Path:
    return logs_dir / "runs.sqlite"


def write(logs_dir: Path, record: dict) -> None:
    """Insert one run record (idempotent on run_id)."""
    logs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    con = sqlite3.connect(history_path(logs_dir), isolation_level=None)
    try:
        con.execute("PRAGMA synchronous=FULL")
        con.execute("BEGIN IMMEDIATE")
        _upgrade(con)
        for statement in filter(str.strip, SCHEMA_SQL.split(";")):
            con.execute(statement)
        con.execute("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?)", (
            record["run_id"], record["started_at"], record["finished_at"], record.get("duration_s"),
            record["status"], record.get("exit_code"), int(bool(record.get("dry_run"))),
            int(bool(record.get("limited"))), len(record.get("anomalies", [])), json.dumps(record, default=str)))
        con.executemany(f"INSERT OR REPLACE INTO provider_runs VALUES (?, ?, ?, ?, {','.join('?' * len(PROVIDER_COLUMNS))})",
                        [(record["run_id"], *key, *(entry.get(c) for c in PROVIDER_COLUMNS))
                         for key, entry in _unit_rows(record)])
        con.execute("COMMIT")
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise
    finally:
        con.close()


def _unit_rows(record: dict):
    """(provider, account, stream) and entry for each unit; a provider that was skipped (no account
    configured) is a row with account NULL, as is every provider of a run from before units."""
    if record.get("record_version", 1) >= 2:
        for unit in record.get("units", []):
            yield (unit["provider"], unit["account"], unit["stream"]), unit
        units_of = {u["provider"] for u in record.get("units", [])}
        for name, entry in record.get("providers", {}).items():
            if name not in units_of:
                yield (name, None, "products"), entry
    else:
        for name, entry in record.get("providers", {}).items():
            yield (name, None, "products"), entry


def _upgrade(con: sqlite3.Connection) -> None:
    """A history from before units keyed provider rows by (run, provider): move them to the new key."""
    columns = [row[1] for row in con.execute("PRAGMA table_info(provider_runs)")]
    if columns and "account" not in columns:
        con.execute("ALTER TABLE provider_runs RENAME TO provider_runs_v1")
        con.execute(SCHEMA_SQL.split(";")[1])
        keep = ", ".join(columns[2:])
        con.execute(f"INSERT INTO provider_runs (run_id, provider, account, stream, {keep}) "
                    f"SELECT run_id, provider, NULL, 'products', {keep} FROM provider_runs_v1")
        con.execute("DROP TABLE provider_runs_v1")

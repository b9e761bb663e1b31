"""The run-history sink: every run-log line also lands in logs/runs.sqlite, for SQL over history.

Schema (documented in the README):
  runs(run_id PK, started_at, finished_at, duration_s, status, exit_code, dry_run, limited,
       anomalies, record)                      -- record is the run-log line as JSON
  provider_runs(run_id, provider, status, reason, fetched, written, duplicates, quarantined,
                requests, retries, throttle_wait_s, duration_s, error_type, error)  PK(run_id, provider)
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
  run_id TEXT NOT NULL REFERENCES runs(run_id), provider TEXT NOT NULL, status TEXT NOT NULL, reason TEXT,
  fetched INTEGER, written INTEGER, duplicates INTEGER, quarantined INTEGER, requests INTEGER,
  retries INTEGER, throttle_wait_s REAL, duration_s REAL, error_type TEXT, error TEXT,
  PRIMARY KEY (run_id, provider));
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
        con.executescript(SCHEMA_SQL)
        con.execute("BEGIN IMMEDIATE")
        con.execute("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?)", (
            record["run_id"], record["started_at"], record["finished_at"], record.get("duration_s"),
            record["status"], record.get("exit_code"), int(bool(record.get("dry_run"))),
            int(bool(record.get("limited"))), len(record.get("anomalies", [])), json.dumps(record, default=str)))
        con.executemany(f"INSERT OR REPLACE INTO provider_runs VALUES (?, ?, {','.join('?' * len(PROVIDER_COLUMNS))})", [
            (record["run_id"], name, *(entry.get(c) for c in PROVIDER_COLUMNS))
            for name, entry in record.get("providers", {}).items()])
        con.execute("COMMIT")
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise
    finally:
        con.close()

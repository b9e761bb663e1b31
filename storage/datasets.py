"""The dataset's tables as Arrow, by name: what the query command reads.

`local_tables` is the one place that knows where a local destination keeps them; every view the
query command offers is SQL over these names. Another destination plugs in by returning the same
mapping (a Delta table: `deltalake.DeltaTable(uri, storage_options=...).to_pyarrow_dataset()`,
read offline, one per table). A table with no file yet is absent.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from storage.history_db import history_path
from storage.parquet import SCHEMAS
from storage.paths import dataset_root

RUNS_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("started_at", pa.timestamp("us", tz="UTC")),
    ("finished_at", pa.timestamp("us", tz="UTC")), ("duration_s", pa.float64()), ("status", pa.string()),
    ("exit_code", pa.int64()), ("dry_run", pa.bool_()), ("limited", pa.bool_()), ("anomalies", pa.int64()),
    ("record", pa.string())])


def local_tables(data_dir: Path, logs_dir: Path) -> dict[str, ds.Dataset | pa.Table]:
    """Each normalized table that has a file (products, product_deletions, orders, order_lines),
    as a dataset read with the model's schema (files from before a column was added read it as
    null), and `runs`, the run history, when logs/runs.sqlite exists."""
    tables: dict[str, ds.Dataset | pa.Table] = {}
    for name, schema in SCHEMAS.items():
        root = dataset_root(data_dir, name)
        # Staging files (.name.parquet.tmp) start with a dot: the dataset skips them, as a glob does.
        files = sorted(str(p) for p in root.glob("source=*/date=*/*.parquet")) if root.is_dir() else []
        if files:
            tables[name] = ds.dataset(files, schema=schema, format="parquet")
    runs = runs_table(logs_dir)
    if runs is not None:
        tables["runs"] = runs
    return tables


def runs_table(logs_dir: Path) -> pa.Table | None:
    """The runs of logs/runs.sqlite (one row per run, its run-log line as JSON in `record`), or None."""
    path = history_path(logs_dir)
    if not path.is_file():
        return None
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT run_id, started_at, finished_at, duration_s, status, exit_code, dry_run, "
                           "limited, anomalies, record FROM runs ORDER BY started_at").fetchall()
    except sqlite3.OperationalError:  # written by nothing yet
        return None
    finally:
        con.close()
    names = RUNS_SCHEMA.names
    columns = {name: [row[i] for row in rows] for i, name in enumerate(names)}
    for name in ("started_at", "finished_at"):
        columns[name] = [datetime.fromisoformat(v) if v else None for v in columns[name]]
    for name in ("dry_run", "limited"):
        columns[name] = [None if v is None else bool(v) for v in columns[name]]
    columns["record"] = [v if isinstance(v, str) else json.dumps(v) for v in columns["record"]]
    return pa.table(columns, schema=RUNS_SCHEMA)

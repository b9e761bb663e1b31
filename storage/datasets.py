"""The dataset's tables as Arrow, by name: what the query command reads.

`local_tables` is the one place that knows where a local Parquet destination keeps them, and
`destination_tables` gives the same mapping for any destination (a Delta table through
`deltalake.DeltaTable(uri, storage_options=...).to_pyarrow_dataset()`, read offline, one per
table); every view the query command offers is SQL over these names. A table with no data yet is
absent.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from storage.history_db import history_path
from storage.schemas import SCHEMAS
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


def destination_tables(destination) -> dict[str, ds.Dataset | pa.Table]:
    """The same mapping for any destination (storage/destination.py): a local Parquet folder as
    above; a Delta table, local or in an object store, through deltalake's Arrow dataset (offline:
    no DuckDB extension is involved); Parquet files in a bucket through pyarrow's S3 filesystem;
    `runs` from the destination's run history."""
    from storage.destination import LocalDestination

    if isinstance(destination, LocalDestination) and destination.table_format == "parquet":
        return local_tables(destination.data_dir, destination.history.logs_dir)
    tables: dict[str, ds.Dataset | pa.Table] = {}
    for name, schema in SCHEMAS.items():
        if destination.table_format == "delta":
            dataset = _delta_dataset(destination.tables, name)
        else:
            dataset = destination.parquet_dataset(name, schema)  # an object store's Parquet files
        if dataset is not None:
            tables[name] = dataset
    runs = (runs_table(destination.history.logs_dir) if isinstance(destination, LocalDestination)
            else runs_from_records(destination.history.read()))
    if runs is not None:
        tables["runs"] = runs
    return tables


def _delta_dataset(tables, name: str) -> ds.Dataset | None:
    from deltalake import DeltaTable

    uri = tables.uri(name)
    if not DeltaTable.is_deltatable(uri, storage_options=tables.storage_options):
        return None
    table = DeltaTable(uri, storage_options=tables.storage_options)
    # A table with no data file yet is absent, known from its log alone (counting rows would read
    # every file's footer, a request each in a bucket).
    return table.to_pyarrow_dataset() if table.file_uris() else None


def runs_from_records(records: list[dict]) -> pa.Table | None:
    """The runs table from run records (an object store's history), as runs.sqlite holds them."""
    if not records:
        return None
    at = lambda value: datetime.fromisoformat(value) if value else None  # noqa: E731
    rows = [{"run_id": r.get("run_id"), "started_at": at(r.get("started_at")), "finished_at": at(r.get("finished_at")),
             "duration_s": r.get("duration_s"), "status": r.get("status"), "exit_code": r.get("exit_code"),
             "dry_run": bool(r.get("dry_run")), "limited": bool(r.get("limited")),
             "anomalies": len(r.get("anomalies", [])), "record": json.dumps(r, default=str)} for r in records]
    return pa.Table.from_pylist(rows, schema=RUNS_SCHEMA)


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

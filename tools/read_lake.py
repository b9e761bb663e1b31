#!/usr/bin/env python3
"""Read a destination's Delta table with each reader the README documents, offline: deltalake's
Arrow dataset under pyarrow, pandas, polars and DuckDB (never DuckDB's own delta or httpfs
extensions, which download at run time). Prints one JSON line of row counts per reader, or, with
--sql, the rows of a DuckDB query over the table `products`.

  python tools/read_lake.py s3://bucket/prefix            # credentials and endpoint: AWS_* variables
  python tools/read_lake.py data --sql "SELECT source, count(*) FROM products GROUP BY ALL"

Each call is one a scheduler may run: `to_pyarrow_table()` and a threaded `to_table()` abort the
process at exit in about a fifth of the runs (delta-rs's runtime), so pyarrow and pandas read with
use_threads=False; DuckDB and polars read the dataset (tests/test_lake_read.py runs
this 30 times). Even so about one run in a hundred aborted in interpreter teardown: it ends with
os._exit after flushing its output (storage/delta.py, `end_process`), as a script of yours should.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage.lake.objects import parse_s3_url  # noqa: E402


def table_uri_and_options(destination: str) -> tuple[str, dict | None]:
    """The products table's URI and delta-rs options for a destination (a folder or s3://)."""
    if not destination.startswith("s3://"):
        return str(Path(destination).resolve() / "normalized" / "products"), None
    location = parse_s3_url(destination, os.environ)
    credentials = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
                   if os.environ.get(k)}
    return location.uri("normalized/products"), location.storage_options(credentials)


def counts(uri: str, options: dict | None) -> dict:
    import duckdb
    import polars as pl
    from deltalake import DeltaTable

    dataset = DeltaTable(uri, storage_options=options).to_pyarrow_dataset()
    return {
        "pyarrow": dataset.to_table(use_threads=False).num_rows,
        "pandas": len(dataset.to_table(use_threads=False).to_pandas()),
        "polars": pl.scan_pyarrow_dataset(dataset).select(pl.len()).collect().item(),
        "duckdb": duckdb.sql("SELECT count(*) FROM dataset").fetchall()[0][0],
    }


def query(uri: str, options: dict | None, sql: str):
    import duckdb
    from deltalake import DeltaTable

    products = DeltaTable(uri, storage_options=options).to_pyarrow_dataset()  # noqa: F841 - DuckDB reads it by name
    return duckdb.sql(sql)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("destination", help="a folder or s3://bucket/prefix (the pipeline's destination)")
    parser.add_argument("--sql", help="a DuckDB query over the table `products`")
    args = parser.parse_args()
    uri, options = table_uri_and_options(args.destination)
    if args.sql:
        query(uri, options, args.sql).show(max_width=120)
    else:
        print(json.dumps(counts(uri, options)))


if __name__ == "__main__":
    main()
    from storage.delta import end_process

    end_process(0)

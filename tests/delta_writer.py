"""A unit's writer for the compaction tests, as a process of its own: one-commit appends of ROWS
rows each into a destination's products table (storage.delta.DeltaTables.append, as a run commits),
at least `minimum` of them and then until the file `stop` exists, `pause` seconds apart. Prints
each commit's run id once its commit returned, so the test knows every commit that must be in the
table.

  python -m tests.delta_writer ROOT ACCOUNT MINIMUM STOP [PAUSE]   # DELTA_OPTIONS: delta-rs options as JSON
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path

import pyarrow as pa

from storage.delta import TABLE_SCHEMAS, DeltaTables, end_process
from storage.paths import UnitId

ROWS = 5
MAX_COMMITS = 200


def rows(account: str, run_id: str) -> pa.RecordBatchReader:
    now = datetime.now(timezone.utc)
    table = pa.Table.from_pylist([{"source": "shopify", "account": account, "source_id": f"{run_id}/{k}",
                                   "title": f"product {k}", "fetched_at": now, "run_id": run_id,
                                   "raw_hash": f"{account}/{run_id}/{k}", "schema_version": 1, "date": date.today()}
                                  for k in range(ROWS)], schema=TABLE_SCHEMAS["products"])
    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches())


def main() -> None:
    root, account, minimum, stop = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    pause = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    tables = DeltaTables(root, json.loads(os.environ.get("DELTA_OPTIONS") or "null"))
    unit, marker = UnitId("shopify", account), os.getpid() % 0xFFFFFF
    for n in range(MAX_COMMITS):
        if n >= minimum and stop.exists():
            break
        run_id = f"20261201T{n:06d}Z-{marker:06x}"
        tables.append(lambda: rows(account, run_id), unit, run_id)
        print(run_id, flush=True)
        time.sleep(pause)
    end_process(0)


if __name__ == "__main__":
    main()

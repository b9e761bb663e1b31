"""Product history at scale: views over the version log against a maintained history table.

Builds N products x V versions as the pipeline writes them (one Parquet file a run, row groups of
25,000, the products schema; Shopify-like: every version has its own updatedAt, a tenth of the
re-reads change nothing the model keeps), then times, through the query command's own DuckDB
connection (pipelines/query.py):

  current catalog        SELECT * FROM products_current            (every live product, to Arrow)
  one product's history  SELECT * FROM products_history WHERE source_id = ?

once over the views (what the query command does), and once over a maintained table: the
history materialized to Parquet, whose rebuild is timed too (what every run would pay to keep it).
Each question is asked twice and the faster answer is reported (the machine may be shared).

    python bench/history.py --products 1000000 --versions 10
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from storage.schemas import SCHEMA  # noqa: E402
from pipelines.query import connect  # noqa: E402
from storage.datasets import local_tables  # noqa: E402
from storage.parquet import ROW_GROUP_ROWS  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
CHUNK = 250_000


def build(data_dir: Path, products: int, versions: int, seed: int = 7) -> int:
    """Write `versions` runs over `products` products; returns the rows written."""
    rng = np.random.default_rng(seed)
    base_price = rng.integers(100, 100_000, products)  # cents
    rows = 0
    for v in range(versions):
        run_id = (T0 + timedelta(days=v)).strftime("%Y%m%dT%H%M%SZ") + f"-{v:06x}"
        folder = data_dir / "normalized" / "products" / "source=shopify" / f"date={(T0 + timedelta(days=v)).date()}"
        folder.mkdir(parents=True, exist_ok=True)
        writer = pq.ParquetWriter(folder / f"shop_{run_id}-0001.parquet", SCHEMA, compression="zstd")
        for start in range(0, products, CHUNK):
            n = min(CHUNK, products - start)
            ids = np.arange(start, start + n)
            # A version: the price moves (or not: a re-read that changed nothing the model keeps).
            moves = rng.random(n) >= 0.1 if v else np.ones(n, dtype=bool)
            base_price[start:start + n] += np.where(moves, rng.integers(-500, 500, n), 0)
            base_price[start:start + n] = np.maximum(base_price[start:start + n], 0)
            price = pa.array([Decimal(int(c)) / 100 for c in base_price[start:start + n]], pa.decimal128(18, 4))
            updated = pa.array([T0 + timedelta(days=v, seconds=int(i % 86_000)) for i in ids], pa.timestamp("us", tz="UTC"))
            table = pa.table({
                "source": pa.array(["shopify"] * n), "account": pa.array(["shop"] * n),
                "source_id": pa.array([f"gid://shopify/Product/{i}" for i in ids]),
                "title": pa.array([f"Product {i} v{v // 3}" for i in ids]),
                "price": price, "currency": pa.array(["EUR"] * n),
                "availability": pa.array(np.where(rng.random(n) < 0.05, "out_of_stock", "in_stock")),
                "total_inventory": pa.array(rng.integers(0, 500, n)),
                "source_updated_at": updated,
                "fetched_at": pa.array([T0 + timedelta(days=v, hours=1)] * n, pa.timestamp("us", tz="UTC")),
                "run_id": pa.array([run_id] * n),
                "raw_hash": pa.array([hashlib.sha256(f"{i}/{v}".encode()).hexdigest() for i in ids]),
                "schema_version": pa.array([1] * n, pa.int64()),
            })
            full = pa.table({f.name: table[f.name] if f.name in table.column_names else pa.nulls(n, f.type)
                             for f in SCHEMA}, schema=SCHEMA)
            writer.write_table(full, row_group_size=ROW_GROUP_ROWS)
            rows += n
        writer.close()
    return rows


def timed(con, sql: str, repeat: int = 2) -> tuple[float, int]:
    """(best seconds, rows) over `repeat` runs of the query, its result fetched as Arrow."""
    best, rows = float("inf"), 0
    for _ in range(repeat):
        start = time.perf_counter()
        rows = con.sql(sql).to_arrow_table().num_rows
        best = min(best, time.perf_counter() - start)
    return best, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--versions", type=int, default=10)
    parser.add_argument("--dir", type=Path, help="work folder (default: a temporary one, removed after)")
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-history-"))
    data = work / "data"
    try:
        start = time.perf_counter()
        rows = build(data, args.products, args.versions)
        size = sum(p.stat().st_size for p in data.rglob("*.parquet"))
        print(f"built {rows:,} rows ({args.products:,} products x {args.versions} versions), "
              f"{size / 1e6:,.0f} MB of Parquet, in {time.perf_counter() - start:.0f} s", flush=True)
        one = f"gid://shopify/Product/{args.products // 2}"
        con, _ = connect(local_tables(data, work / "logs"), os.environ.get("PIPELINE_QUERY_MEMORY"))
        results = {}
        results["views: current catalog"] = timed(con, "SELECT * FROM products_current")
        results["views: one product's history"] = timed(
            con, f"SELECT * FROM products_history WHERE source_id = '{one}' ORDER BY valid_from")
        views_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the build's is far less
        start = time.perf_counter()
        table = work / "products_history.parquet"
        con.execute(f"COPY (SELECT * FROM products_history ORDER BY source, account, source_id, valid_from) "
                    f"TO '{table}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ROW_GROUP_ROWS})")
        results["table: rebuild the history (every run)"] = (time.perf_counter() - start, None)
        results["table: current catalog"] = timed(con, f"SELECT * FROM read_parquet('{table}') WHERE is_current")
        results["table: one product's history"] = timed(
            con, f"SELECT * FROM read_parquet('{table}') WHERE source_id = '{one}' ORDER BY valid_from")
        for name, (seconds, count) in results.items():
            print(f"  {name:42s} {seconds:8.2f} s" + (f"  ({count:,} rows)" if count is not None else ""))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        threads, memory = con.execute("SELECT current_setting('threads'), current_setting('memory_limit')").fetchall()[0]
        print(f"peak RSS {views_peak:,.0f} MB through the views' questions, {peak:,.0f} MB in all; {os.cpu_count()} CPUs; "
              f"DuckDB threads {threads}, memory_limit {memory} (PIPELINE_QUERY_MEMORY); load {os.getloadavg()[0]:.1f}")
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

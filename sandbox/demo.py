"""`make demo`: the pipeline end to end on the sandbox, into a data directory of its own.

Runs the real CLI as a separate process, exactly as cron would (from `/`, settings from the
environment): a first run, a second run that writes nothing, then 3% of the catalog changes and a
third run writes exactly those products. Shopify is reached as a shop set up since 2026 is: a Dev
Dashboard app's client credentials, whose tokens the sandbox lets live two seconds, so the first
run outlives its token and re-mints it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from sandbox.__main__ import DEMO_TOKEN_LIFETIME_S, start_all

REPO = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO / ".demo"


def run_pipeline(env: dict, *extra: str) -> dict:
    command = [sys.executable, str(REPO / "pipelines" / "run_pipeline.py"),
               "--data-dir", str(DEMO_DIR / "data"), "--logs-dir", str(DEMO_DIR / "logs"),
               "--cache-dir", str(DEMO_DIR / "cache"), *extra]
    print("$ " + " ".join(["run_pipeline.py", *command[2:]]), flush=True)
    completed = subprocess.run(command, env=env, cwd="/")
    if completed.returncode != 0:
        sys.exit(f"demo: the pipeline exited {completed.returncode}")
    lines = (DEMO_DIR / "logs" / "runs.jsonl").read_text().splitlines()
    return json.loads(lines[-1])


def _rows(source: str) -> list[dict]:
    import pyarrow.dataset as ds

    root = DEMO_DIR / "data" / "normalized" / "products" / f"source={source}"
    return ds.dataset(root, format="parquet", partitioning="hive").to_table(columns=["source_id"]).to_pylist()


def summary(record: dict) -> str:
    parts = []
    for name, p in record["providers"].items():
        if p["status"] == "skipped":
            continue
        parts.append(f"{name}: {p['status']}, fetched {p.get('fetched', 0)}, wrote {p.get('written', 0)}, "
                     f"duplicates {p.get('duplicates', 0)}, quarantined {p.get('quarantined', 0)}")
    return "; ".join(parts)


def main() -> None:
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    started = start_all(size=500)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SHOPIFY_", "AMAZON_", "EBAY_", "PIPELINE_"))},
           **started["env"], "PIPELINE_ENV_FILE": os.devnull}
    print(f"Shopify: client credentials (SHOPIFY_CLIENT_ID, SHOPIFY_CLIENT_SECRET); the sandbox's tokens "
          f"live {DEMO_TOKEN_LIFETIME_S}s\n")
    try:
        first = run_pipeline(env)
        print(f"  run 1 -> {summary(first)}\n")
        second = run_pipeline(env)
        print(f"  run 2 -> {summary(second)}  (nothing is written twice)\n")
        servers = started["servers"]
        ebay_items = [int(r["source_id"].split("|")[1]) - 135_000_000_000 for r in _rows("ebay")]
        changed = servers["shopify"].mutate(0.03) + servers["amazon"].mutate(0.03) + servers["ebay"].mutate(0.03, ebay_items)
        print(f"The sandboxes changed {len(changed)} products.")
        third = run_pipeline(env)
        print(f"  run 3 -> {summary(third)}\n")
        print(f"The Shopify sandbox minted {servers['shopify'].oauth.minted} access tokens over the three runs.\n")
    finally:
        for server in started["servers"].values():
            server.stop()
    data = DEMO_DIR / "data" / "normalized"
    files = sorted(data.rglob("*.parquet"))
    print(f"Parquet files under {data}:")
    for path in files:
        print(f"  {path.relative_to(DEMO_DIR)}  ({path.stat().st_size} bytes)")
    query = (f"SELECT source, count(*) AS rows, count(DISTINCT source_id) AS products, "
             f"min(price) AS min_price, max(price) AS max_price "
             f"FROM read_parquet('{data}/**/*.parquet', hive_partitioning=true, union_by_name=true) GROUP BY source")
    print(f"\nDuckDB: {query}")
    import duckdb

    for row in duckdb.sql(query).fetchall():
        print("  ", row)
    print(f"\nRun log: {DEMO_DIR / 'logs' / 'runs.jsonl'}")


if __name__ == "__main__":
    main()

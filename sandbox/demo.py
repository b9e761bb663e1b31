"""`make demo`: the pipeline end to end on the sandbox, into a data directory of its own.

Runs the real CLI as a separate process, exactly as cron would (from `/`, settings from the
environment and an accounts file: two Shopify shops with their orders, Amazon, eBay US and DE of
one seller, whose orders the US account loads): a first run, a second run that writes nothing, then
3% of each catalog changes and 5% of the orders get a refund, and a third run writes exactly those.
Shopify is reached as a shop set up since 2026 is: a Dev Dashboard app's client credentials, whose
tokens the sandbox lets live two seconds, so the first run outlives its token and re-mints it.
eBay's orders are read with user tokens minted from the seller's refresh token.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from sandbox.__main__ import DEMO_SHOP, DEMO_TOKEN_LIFETIME_S, accounts_toml, start_all

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
    """One line per unit of work: its counts."""
    lines = []
    for u in record["units"]:
        lines.append(f"    {u['provider']}:{u['account']}/{u['stream']}: {u['status']}, fetched {u.get('fetched', 0)}, "
                     f"wrote {u.get('written', 0)}, duplicates {u.get('duplicates', 0)}, "
                     f"quarantined {u.get('quarantined', 0)}")
    return "\n" + "\n".join(lines)


def main() -> None:
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    started = start_all(size=500)
    text, secrets = accounts_toml(started)
    DEMO_DIR.mkdir(parents=True)
    accounts = DEMO_DIR / "accounts.toml"
    accounts.write_text(text)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SHOPIFY_", "AMAZON_", "EBAY_", "PIPELINE_"))},
           **secrets, "PIPELINE_ACCOUNTS_FILE": str(accounts), "PIPELINE_ENV_FILE": os.devnull}
    print(f"Accounts: {accounts} (two Shopify shops, Amazon, eBay US and DE of one seller; secrets as env: "
          "references)")
    print(f"Shopify {DEMO_SHOP}: client credentials, tokens living {DEMO_TOKEN_LIFETIME_S}s in the sandbox; "
          "eu-store: a legacy custom app's token")
    print("eBay us and de share the seller's refresh token: us asks for its orders (all marketplaces), de for "
          "products only\n")
    units = subprocess.run([sys.executable, str(REPO / "pipelines" / "run_pipeline.py"), "units"], env=env, cwd="/",
                           capture_output=True, text=True, check=True).stdout
    print("$ run_pipeline.py units\n" + units)
    try:
        first = run_pipeline(env)
        print(f"  run 1 -> {summary(first)}\n")
        second = run_pipeline(env)
        print(f"  run 2 -> {summary(second)}  (nothing is written twice)\n")
        servers = started["servers"]
        ebay_items = [int(r["source_id"].split("|")[1]) - 135_000_000_000 for r in _rows("ebay")]
        changed = (servers["shopify"].mutate(0.03) + servers["shopify_eu"].mutate(0.03) + servers["amazon"].mutate(0.03)
                   + servers["ebay"].mutate(0.03, ebay_items))
        refunds = (servers["shopify"].refund_orders(0.05) + servers["shopify_eu"].refund_orders(0.05)
                   + servers["ebay"].refund_orders(0.05))
        print(f"The sandboxes refunded a line of {len(refunds)} orders.")
        print(f"The sandboxes changed {len(changed)} products.")
        third = run_pipeline(env)
        print(f"  run 3 -> {summary(third)}\n")
        print(f"The Shopify sandbox minted {servers['shopify'].oauth.minted} access tokens over the three runs; "
              f"the eBay sandbox minted {servers['ebay'].user_minted} user tokens from the seller's refresh token.\n")
    finally:
        for server in started["servers"].values():
            server.stop()
    data = DEMO_DIR / "data" / "normalized"
    files = sorted(data.rglob("*.parquet"))
    print(f"Parquet files under {data}:")
    for path in files:
        print(f"  {path.relative_to(DEMO_DIR)}  ({path.stat().st_size} bytes)")
    query = (f"SELECT source, account, count(*) AS rows, count(DISTINCT source_id) AS products, "
             f"min(price) AS min_price, max(price) AS max_price "
             f"FROM read_parquet('{data}/products/**/*.parquet', hive_partitioning=true, union_by_name=true) "
             f"GROUP BY source, account ORDER BY source, account")
    print(f"\nDuckDB: {query}")
    import duckdb

    for row in duckdb.sql(query).fetchall():
        print("  ", row)
    revenue = (f"SELECT source || ':' || account AS shop, CAST(processed_at AS DATE) AS day, count(*) AS orders, "
               f"sum(total_price - total_refunded) AS revenue, any_value(currency) AS currency FROM ("
               f"SELECT *, row_number() OVER (PARTITION BY source, account, order_id ORDER BY updated_at DESC) AS n "
               f"FROM read_parquet('{data}/orders/**/*.parquet', hive_partitioning=true)) "
               f"WHERE n = 1 AND NOT coalesce(test, false) AND cancelled_at IS NULL GROUP BY shop, day "
               f"QUALIFY row_number() OVER (PARTITION BY shop ORDER BY day DESC) <= 4 ORDER BY shop, day DESC")
    print(f"\nRevenue per day per shop and eBay seller (each order's latest version, refunds taken off; test and "
          f"cancelled orders left out; eBay has no test flag; the last 4 days each):\n{revenue}")
    for row in duckdb.sql(revenue).fetchall():
        print("  ", row)
    print(f"\nRun log: {DEMO_DIR / 'logs' / 'runs.jsonl'}")


if __name__ == "__main__":
    main()

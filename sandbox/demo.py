"""`make demo`: the pipeline end to end on the sandbox, into a data directory of its own.

Runs the real CLI as a separate process, exactly as cron would (from `/`, settings from the
environment and an accounts file: two Shopify shops with their orders, Amazon, eBay US and DE of
one seller, whose orders the US account loads): a first run, a second run that writes nothing, then
3% of each catalog changes, 2% of one shop's products sell out, 1% of each shop's products are
deleted and 5% of the orders get a refund, and a third run writes exactly those (the deletions as
Shopify's destroy events). It ends with questions from the README answered by
`run_pipeline.py query`.
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


# Questions from the README's "Questions you can ask", asked of the demo's data at the end.
CURRENT_CATALOG = """SELECT source, account, count(*) AS products, min(price) AS min_price, max(price) AS max_price,
       count(*) FILTER (WHERE availability = 'out_of_stock') AS out_of_stock
FROM products_current GROUP BY source, account ORDER BY source, account"""
PRICE_HISTORY = """SELECT valid_from, valid_to, price, currency, title, is_current, is_deleted
FROM products_history
WHERE source = 'shopify' AND account = '{account}' AND source_id = '{source_id}' ORDER BY valid_from"""
WENT_OUT_OF_STOCK = """SELECT source, account, source_id, title, valid_from AS out_of_stock_since FROM (
  SELECT *, lag(availability) OVER (PARTITION BY source, account, source_id ORDER BY valid_from) AS before
  FROM products_history)
WHERE is_current AND availability = 'out_of_stock' AND before = 'in_stock'
  AND valid_from >= current_date - INTERVAL 1 DAY
ORDER BY out_of_stock_since, source_id LIMIT 5"""
REVENUE_PER_DAY = """SELECT source || ':' || account AS shop, CAST(processed_at AS DATE) AS day, count(*) AS orders,
       sum(total_price - coalesce(total_refunded, 0)) AS revenue, any_value(currency) AS currency
FROM orders_current WHERE NOT coalesce(test, false) AND cancelled_at IS NULL
GROUP BY shop, day QUALIFY row_number() OVER (PARTITION BY shop ORDER BY day DESC) <= 3 ORDER BY shop, day DESC"""


def ask(env: dict, sql: str) -> None:
    """One question through the query command, as a user would ask it."""
    command = [sys.executable, str(REPO / "pipelines" / "run_pipeline.py"), "query", sql,
               "--data-dir", str(DEMO_DIR / "data"), "--logs-dir", str(DEMO_DIR / "logs")]
    print(f"$ run_pipeline.py query \"\n{sql}\"", flush=True)
    completed = subprocess.run(command, env=env, cwd="/")
    if completed.returncode != 0:
        sys.exit(f"demo: the query exited {completed.returncode}")
    print()


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
                     f"quarantined {u.get('quarantined', 0)}" + (f", deletions {u['deleted']}" if u.get("deleted") else ""))
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
        sold_out = servers["shopify"].sell_out(0.02)
        deleted = servers["shopify"].delete(0.01) + servers["shopify_eu"].delete(0.01)
        refunds = (servers["shopify"].refund_orders(0.05) + servers["shopify_eu"].refund_orders(0.05)
                   + servers["ebay"].refund_orders(0.05))
        print(f"The sandboxes refunded a line of {len(refunds)} orders.")
        print(f"The sandboxes changed {len(changed)} products, sold out {len(sold_out)} and deleted {len(deleted)}.")
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
    print("\nQuestions you can ask (README), answered by the query command:\n")
    print("The current catalog per shop:")
    ask(env, CURRENT_CATALOG)
    print("One product's price history (a product the sandbox changed):")
    ask(env, PRICE_HISTORY.format(account=DEMO_SHOP, source_id=next(i for i in changed if i not in deleted)))
    print("Products that went out of stock since yesterday:")
    ask(env, WENT_OUT_OF_STOCK)
    print("Revenue per day per shop (each order's latest version, refunds taken off; test and cancelled orders "
          "left out; the last 3 days each):")
    ask(env, REVENUE_PER_DAY)
    print(f"\nRun log: {DEMO_DIR / 'logs' / 'runs.jsonl'}")


if __name__ == "__main__":
    main()

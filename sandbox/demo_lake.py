"""`make demo-lake`: two Shopify shops, Amazon and eBay landing in one Delta table in a local S3
from parallel workers, then a DuckDB query over it.

Everything runs on loopback: moto's S3 server (sandbox/s3.py) and the provider sandboxes. The
accounts come from an accounts file (secrets as `env:NAME` references); each unit of work runs in
a worker process of its own (`--accounts provider:name`), all at once, with an empty disk each, as
pods or CI runners would. A second round finds nothing new; the query goes through deltalake's
Arrow dataset (tools/read_lake.py), never DuckDB's downloading extensions.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from sandbox.amazon import LWA_PATH, AmazonSandbox
from sandbox.catalog import CatalogSpec
from sandbox.ebay import EbaySandbox
from sandbox.s3 import LocalS3
from sandbox.shopify import ShopifySandbox

REPO = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO / ".demo-lake"
SECRETS = {"EU_SHOP_TOKEN": "shpat_demo_lake_eu_token", "US_CLIENT_ID": "demo-lake-us-client",
           "US_CLIENT_SECRET": "demo-lake-us-secret", "AMAZON_ID": "demo-lake-amazon-id",
           "AMAZON_SECRET": "demo-lake-amazon-secret", "EBAY_ID": "demo-lake-ebay-id", "EBAY_SECRET": "demo-lake-ebay-secret"}
UNITS = ["shopify:eu-shop", "shopify:us-shop", "amazon:www.amazon.com", "ebay:us"]
QUERY = ("SELECT source, account, count(*) AS products, count(DISTINCT raw_hash) AS versions, "
         "round(avg(price), 2) AS avg_price FROM products GROUP BY ALL ORDER BY source, account")


def accounts_file(eu, us, amazon, ebay) -> Path:
    path = DEMO_DIR / "accounts.toml"
    path.write_text(f"""# The demo's accounts: every secret is a reference to a variable.
[[shopify]]
name = "eu-shop"
shop_domain = "eu-shop.myshopify.com"
access_token = "env:EU_SHOP_TOKEN"
api_base_url = "{eu.base_url}"

[[shopify]]
name = "us-shop"
shop_domain = "us-shop.myshopify.com"
client_id = "env:US_CLIENT_ID"
client_secret = "env:US_CLIENT_SECRET"
api_base_url = "{us.base_url}"

[[amazon]]
credential_id = "env:AMAZON_ID"
credential_secret = "env:AMAZON_SECRET"
version = "3.1"
partner_tag = "{amazon.partner_tag}"
search_keywords = ["steel mug|HomeAndKitchen", "headphones"]
api_base_url = "{amazon.base_url}"
token_url = "{amazon.base_url + LWA_PATH}"
requests_per_second = 20

[[ebay]]
name = "us"
marketplace_id = "EBAY_US"
client_id = "env:EBAY_ID"
client_secret = "env:EBAY_SECRET"
search_queries = ["steel mug", "camping lantern"]
api_base_url = "{ebay.base_url}"
requests_per_second = 20
""")
    return path


def worker(destination: str, unit: str, disk: Path) -> list[str]:
    """The command of one worker with a disk of its own (as empty as a new pod's)."""
    return [sys.executable, str(REPO / "pipelines" / "run_pipeline.py"), "--destination", destination,
            "--accounts", unit, "--logs-dir", str(disk / "logs"), "--cache-dir", str(disk / "cache")]


def workers(env: dict, destination: str, round_: int) -> None:
    """Every unit in its own process, all at once; each prints its summary line."""
    started = []
    for unit in UNITS:
        command = worker(destination, unit, DEMO_DIR / f"worker-{round_}-{unit.replace(':', '-')}")
        started.append((unit, subprocess.Popen(command, env=env, cwd="/", stderr=subprocess.PIPE, text=True)))
    for unit, process in started:
        _, err = process.communicate()
        summary = [line for line in err.splitlines() if line.startswith(unit.split(":")[0]) and "starting" not in line]
        print(f"  worker {unit:<24} exit {process.returncode}  {summary[-1] if summary else err[-300:]}")
        if process.returncode != 0:
            sys.exit(f"demo-lake: the worker for {unit} exited {process.returncode}")


def main() -> None:
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    DEMO_DIR.mkdir()
    with LocalS3() as s3, \
            ShopifySandbox(CatalogSpec(size=300, seed=7), token=SECRETS["EU_SHOP_TOKEN"], throttle=False) as eu, \
            ShopifySandbox(CatalogSpec(size=200, seed=8), token=None, client_id=SECRETS["US_CLIENT_ID"],
                           client_secret=SECRETS["US_CLIENT_SECRET"], throttle=False) as us, \
            AmazonSandbox(credential_id=SECRETS["AMAZON_ID"], credential_secret=SECRETS["AMAZON_SECRET"],
                          requests_per_second=50) as amazon, \
            EbaySandbox(client_id=SECRETS["EBAY_ID"], client_secret=SECRETS["EBAY_SECRET"], requests_per_second=50) as ebay:
        bucket = s3.create_bucket("demo-lake")
        destination = f"s3://{bucket}/products"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SHOPIFY_", "AMAZON_", "EBAY_", "PIPELINE_", "AWS_"))}
        env = {**base, **s3.env(bucket, "products"), **SECRETS, "PIPELINE_TABLE_FORMAT": "delta",
               "PIPELINE_ENV_FILE": os.devnull, "PIPELINE_ACCOUNTS_FILE": str(accounts_file(eu, us, amazon, ebay))}
        print(f"Local S3 on {s3.endpoint}; destination {destination} (Delta); accounts in {DEMO_DIR / 'accounts.toml'}")
        for round_, title in ((1, "first round: every catalog lands"), (2, "second round, on fresh disks: nothing new")):
            print(f"\n== {title}: {len(UNITS)} workers at once")
            began = time.monotonic()
            workers(env, destination, round_)
            print(f"  {time.monotonic() - began:.1f} s; the store saw {len(s3.log(clear=True))} requests")
        changed = eu.mutate(0.05)
        print(f"\n== {len(changed)} products of eu-shop change; its worker alone writes exactly those")
        subprocess.run(worker(destination, "shopify:eu-shop", DEMO_DIR / "worker-3"), env=env, cwd="/", check=True)
        print(f"\n== DuckDB over the Delta table (deltalake's Arrow dataset, offline):\n{QUERY}")
        subprocess.run([sys.executable, str(REPO / "tools" / "read_lake.py"), destination, "--sql", QUERY], env=env,
                       check=True)
        report = subprocess.run([sys.executable, str(REPO / "pipelines" / "run_pipeline.py"), "report",
                                 "--destination", destination, "--last", "9"], env=env, capture_output=True, text=True)
        print("== run history, read from the bucket by any worker:\n" + report.stdout)
        objects = [item["Key"] for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
                   for item in page.get("Contents", [])]
        kinds = {}
        for key in objects:
            kind = key.split("/")[1] if not key.startswith("products/normalized") else "normalized (Delta table)"
            kinds[kind] = kinds.get(kind, 0) + 1
        print("== what the bucket holds: " + json.dumps(kinds))


if __name__ == "__main__":
    main()

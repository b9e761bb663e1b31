"""`python -m sandbox.fleet WORKDIR`: a fleet's whole world on loopback, for a scheduler's check
(tools/check_airflow_dag.py) that runs in an environment without the pipeline's packages.

Starts the provider sandboxes, a local S3 (moto's server) with a bucket, and writes an accounts
file to WORKDIR whose secrets are `env:` references named after each account's Airflow
Connection (deploy/airflow/products_pipeline.py). Prints one JSON line: the variables a worker
sets (`env`), each connection (`connections`: id -> Airflow's JSON form) and the destination.
Then answers on stdin: `summary` prints one JSON line of what the bucket holds (each Delta table's
version and rows, every run record's units); end of input stops everything.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from sandbox.__main__ import (AMAZON_ID, AMAZON_RATE, AMAZON_SECRET, AMAZON_TAG, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET,
                              EBAY_ID, EBAY_RATE, EBAY_REFRESH, EBAY_SECRET, SECOND_TOKEN, start_all)
from sandbox.s3 import LocalS3

PREFIX = "fleet"
TABLES = ("products", "orders", "order_lines")
# (provider, account name, streams, connection fields): one account per way in, two units each of a
# provider that runs them one at a time (eBay) and of one that runs them at once (Shopify).
ACCOUNTS = [
    ("shopify", "demo-shop", ["products"], {"login": DEMO_CLIENT_ID, "password": DEMO_CLIENT_SECRET}),
    ("shopify", "eu-store", ["products"], {"extra": {"access_token": SECOND_TOKEN}}),
    ("amazon", "www.amazon.com", ["products"], {"login": AMAZON_ID, "password": AMAZON_SECRET}),
    ("ebay", "us", ["products", "orders"], {"login": EBAY_ID, "password": EBAY_SECRET,
                                            "extra": {"refresh_token": EBAY_REFRESH}}),
]


def connection_id(provider: str, account: str) -> str:
    """As the DAG names them: products_<provider>_<account, lower-cased, other runs of characters as _>."""
    return f"products_{provider}_{re.sub(r'[^a-z0-9]+', '_', account.lower()).strip('_')}"


def accounts_file(started: dict, path: Path) -> None:
    servers, env = started["servers"], started["env"]
    ref = {name: f"env:{connection_id(p, name).upper()}_" for p, name, _, _ in ACCOUNTS}
    path.write_text(f"""# The fleet's accounts: each secret is a reference to its Airflow connection's variable.
[[shopify]]
name = "demo-shop"
shop_domain = "demo-shop.myshopify.com"
client_id = "{ref['demo-shop']}CLIENT_ID"
client_secret = "{ref['demo-shop']}CLIENT_SECRET"
api_base_url = "{servers['shopify'].base_url}"

[[shopify]]
name = "eu-store"
shop_domain = "eu-demo-shop.myshopify.com"
access_token = "{ref['eu-store']}ACCESS_TOKEN"
api_base_url = "{servers['shopify_eu'].base_url}"

[[amazon]]
credential_id = "{ref['www.amazon.com']}CREDENTIAL_ID"
credential_secret = "{ref['www.amazon.com']}CREDENTIAL_SECRET"
version = "3.1"
partner_tag = "{AMAZON_TAG}"
search_keywords = ["steel mug|HomeAndKitchen", "headphones"]
api_base_url = "{env['AMAZON_API_BASE_URL']}"
token_url = "{env['AMAZON_TOKEN_URL']}"
requests_per_second = {AMAZON_RATE}

[[ebay]]
name = "us"
streams = ["products", "orders"]
client_id = "{ref['us']}CLIENT_ID"
client_secret = "{ref['us']}CLIENT_SECRET"
refresh_token = "{ref['us']}REFRESH_TOKEN"
search_queries = ["steel mug", "camping lantern"]
api_base_url = "{env['EBAY_API_BASE_URL']}"
requests_per_second = {EBAY_RATE}
""")


def summary(s3: LocalS3, bucket: str) -> dict:
    """Each Delta table's version and rows, and every run record's units, as the bucket holds them."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    options = {"AWS_ENDPOINT_URL": s3.endpoint, "AWS_ALLOW_HTTP": "true", **{
        k: v for k, v in s3.env().items() if k in ("AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}}
    tables = {}
    for name in TABLES:
        try:
            table = DeltaTable(f"s3://{bucket}/{PREFIX}/normalized/{name}", storage_options=options)
        except TableNotFoundError:
            continue
        tables[name] = {"version": table.version(), "rows": table.to_pyarrow_dataset().count_rows()}
    client, runs = s3.client(), []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{PREFIX}/_history/runs/"):
        for item in page.get("Contents", []):
            record = json.loads(client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
            runs.append({"run_id": record["run_id"], "started_at": record["started_at"], "units": [
                {k: u.get(k) for k in ("provider", "account", "stream", "status", "fetched", "written")}
                for u in record["units"]]})
    return {"tables": tables, "runs": sorted(runs, key=lambda r: r["started_at"])}


def main() -> None:
    workdir = Path(sys.argv[1]).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    s3 = LocalS3().start()
    started = start_all(size=int(os.environ.get("FLEET_SHOP_SIZE", "100")))
    try:
        bucket = s3.create_bucket("fleet")
        accounts_file(started, workdir / "accounts.toml")
        connections = {}
        for provider, name, _, fields in ACCOUNTS:
            connections[connection_id(provider, name)] = {"conn_type": "generic", **fields}
        env = {**s3.env(bucket, PREFIX), "PIPELINE_TABLE_FORMAT": "delta",
               "PIPELINE_ACCOUNTS_FILE": str(workdir / "accounts.toml")}
        print(json.dumps({"env": env, "connections": connections, "destination": env["PIPELINE_DESTINATION"],
                          "units": sum(len(streams) for _, _, streams, _ in ACCOUNTS)}), flush=True)
        for line in sys.stdin:
            if line.strip() == "summary":
                print(json.dumps(summary(s3, bucket)), flush=True)
    finally:
        for server in started["servers"].values():
            server.stop()
        s3.stop()
    sys.stdout.flush()
    os._exit(0)  # delta-rs's runtime may abort the interpreter's teardown (storage/delta.py)


if __name__ == "__main__":
    main()

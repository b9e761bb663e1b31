"""`query` over a Delta table, locally and in a bucket: the same views through deltalake's Arrow
dataset, the run history from the destination, and an exit code of 0 every time (delta-rs can
abort a process at exit: storage/delta.py)."""

from __future__ import annotations

import json

from sandbox.catalog import CatalogSpec
from sandbox.shopify import ShopifySandbox
from tests.conftest import TOKEN
from tests.procs import base_env, run_cli, shopify_env

COUNT = "SELECT count(*) AS n, count(DISTINCT account) AS accounts FROM products_current"


def test_query_reads_a_local_delta_table_and_a_buckets_and_exits_0_every_time(lake, tmp_path):
    s3, bucket, lake_env = lake
    with ShopifySandbox(CatalogSpec(size=25), token=TOKEN, throttle=False, orders=10) as shop:
        local = base_env(tmp_path / "local", **shopify_env(shop, TOKEN), PIPELINE_TABLE_FORMAT="delta")
        remote = base_env(tmp_path / "remote", **shopify_env(shop, TOKEN), **lake_env, PIPELINE_TABLE_FORMAT="delta")
        for env in (local, remote):
            ran = run_cli(env, "--streams", "products,orders")
            assert ran.returncode == 0, ran.stderr
    for env in (local, remote):
        listed = run_cli(env, "query", "--list")
        assert listed.returncode == 0, listed.stderr
        views = {line.split(":")[0] for line in listed.stdout.splitlines()}
        assert {"products", "products_current", "products_history", "price_changes", "orders", "order_lines",
                "orders_current", "order_lines_current", "runs"} <= views
        for _ in range(10):
            answer = run_cli(env, "query", COUNT, "--format", "json")
            assert answer.returncode == 0, answer.stderr
            assert json.loads(answer.stdout) == {"n": 25, "accounts": 1}
        runs = run_cli(env, "query", "SELECT status FROM runs", "--format", "csv")
        assert runs.returncode == 0 and runs.stdout.split() == ["status", "ok"]

"""Orders in Delta tables: `orders` and `order_lines` beside `products`, locally and in a bucket.

A unit's tables commit one by one (Delta has no transaction across tables), the primary table
(`orders`) last. A run killed after `order_lines` committed but before `orders` did leaves lines
of no order; the next run deletes them (by the unit's partition and the dead run's id) and writes
the orders and their lines once. (A run killed after its primary table committed, before its
state, has its rows adopted: tests/test_lake_crash.py, the same recovery for every stream.)
"""

from __future__ import annotations

from collections import Counter

import pytest

from sandbox.catalog import CatalogSpec
from sandbox.shopify import ShopifySandbox
from tests.conftest import TOKEN
from tests.lakes import storage_options
from tests.procs import base_env, run_cli, shopify_env

ORDERS = ("--streams", "orders")


@pytest.fixture
def shop():
    with ShopifySandbox(CatalogSpec(size=20), token=TOKEN, throttle=False, orders=30) as server:
        yield server


def delta_rows(uri: str, table: str, options: dict | None = None) -> list[dict]:
    from deltalake import DeltaTable

    dt = DeltaTable(f"{uri}/normalized/{table}", storage_options=options)
    return dt.to_pyarrow_dataset().to_table(use_threads=False).to_pylist()


def lines_per_version(rows: list[dict]) -> Counter:
    return Counter((r["order_id"], r["order_raw_hash"], r["line_id"]) for r in rows)


def test_a_run_killed_between_the_lines_and_the_orders_leaves_no_orphan_lines_after_the_rerun(shop, tmp_path):
    env = base_env(tmp_path, **shopify_env(shop, TOKEN), PIPELINE_TABLE_FORMAT="delta")
    clean_env = base_env(tmp_path / "clean", **shopify_env(shop, TOKEN), PIPELINE_TABLE_FORMAT="delta")
    clean = run_cli(clean_env, *ORDERS)
    assert clean.returncode == 0, clean.stderr
    killed = run_cli({**env, "PIPELINE_CRASH_AT": "between_data_and_state"}, *ORDERS)
    assert killed.returncode == -9  # SIGKILL after the first commit: order_lines
    data = str(tmp_path / "data")
    assert delta_rows(data, "order_lines") and not delta_rows(data, "orders")  # lines of no order, for now
    rerun = run_cli(env, *ORDERS)
    assert rerun.returncode == 0, rerun.stderr
    orders, lines = delta_rows(data, "orders"), delta_rows(data, "order_lines")
    expected_orders, expected_lines = delta_rows(str(tmp_path / "clean" / "data"), "orders"), \
        delta_rows(str(tmp_path / "clean" / "data"), "order_lines")
    assert len(orders) == len(expected_orders) == 30
    assert {(o["order_id"], o["raw_hash"]) for o in orders} == {(o["order_id"], o["raw_hash"]) for o in expected_orders}
    assert lines_per_version(lines) == lines_per_version(expected_lines)  # each line once, none orphaned
    assert max(lines_per_version(lines).values()) == 1
    assert {r["run_id"] for r in lines} == {r["run_id"] for r in orders}  # the dead run's lines are gone
    again = run_cli(env, *ORDERS)
    assert again.returncode == 0 and len(delta_rows(data, "orders")) == 30


def test_orders_and_products_land_in_the_buckets_delta_tables_and_an_empty_worker_writes_nothing(shop, lake, tmp_path):
    s3, bucket, lake_env = lake
    env = {**lake_env, "PIPELINE_TABLE_FORMAT": "delta", **shopify_env(shop, TOKEN)}
    first = run_cli(base_env(tmp_path / "w1", **env), "--streams", "products,orders")
    assert first.returncode == 0, first.stderr
    uri, options = f"s3://{bucket}/lake", storage_options(s3)
    counts = [len(delta_rows(uri, table, options)) for table in ("products", "orders", "order_lines")]
    second = run_cli(base_env(tmp_path / "w2", **env), "--streams", "products,orders")  # a fresh disk
    assert second.returncode == 0, second.stderr
    assert "wrote 0," in second.stderr and "wrote 20," not in second.stderr and "wrote 30," not in second.stderr
    assert [len(delta_rows(uri, table, options)) for table in ("products", "orders", "order_lines")] == counts
    assert len(delta_rows(uri, "products", options)) == 20
    orders, lines = delta_rows(uri, "orders", options), delta_rows(uri, "order_lines", options)
    assert len(orders) == 30 and {r["date"] for r in orders} and {r["account"] for r in orders} == {
        "test-shop.myshopify.com"}
    assert sum(o["line_count"] for o in orders) == len(lines)

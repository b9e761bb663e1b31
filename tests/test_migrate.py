"""`migrate`: a dataset the previous release wrote (tests/fixtures/release_0_1: files without
account names, one state per provider, a version-1 run log) moves to an object store without any
product written twice, and the next run there, on an empty disk, makes the usual one request."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipelines.run_pipeline import cli
from sandbox.catalog import CatalogSpec
from sandbox.shopify import ShopifySandbox
from tests.conftest import SHOP, TOKEN, catalog_requests, parquet_rows
from tests.lakes import duplicates, keys, parquet_rows as bucket_parquet_rows, table_rows

LEGACY = Path(__file__).parent / "fixtures" / "release_0_1"


@pytest.fixture
def legacy_shop():
    with ShopifySandbox(CatalogSpec(size=60), token=TOKEN, throttle=False) as server:  # the fixture's shop
        yield server


def legacy_copy(tmp_path) -> Path:
    root = tmp_path / "old"
    shutil.copytree(LEGACY, root)
    (root / "data" / "state" / "shopify.sqlite").chmod(0o600)
    return root


def invoke(monkeypatch, server, root: Path, *args):
    for name, value in {"SHOPIFY_API_BASE_URL": server.base_url, "SHOPIFY_SHOP_DOMAIN": SHOP,
                        "SHOPIFY_ACCESS_TOKEN": TOKEN}.items():
        monkeypatch.setenv(name, value)
    argv = ["--data-dir", str(root / "data"), "--logs-dir", str(root / "logs"), "--cache-dir", str(root / "cache"), *args]
    return CliRunner().invoke(cli, argv)


@pytest.mark.parametrize("fmt", ["delta", "parquet"])
def test_a_previous_release_dataset_migrates_once_and_the_next_run_makes_one_request(
        tmp_path, legacy_shop, lake, monkeypatch, fmt):
    s3, bucket, _ = lake
    old = legacy_copy(tmp_path)
    before = sorted((r["source_id"], r["raw_hash"]) for r in parquet_rows(old / "data"))
    target = ["migrate", "--to", f"s3://{bucket}/lake", "--table-format", fmt]
    result = invoke(monkeypatch, legacy_shop, old, *target)
    assert result.exit_code == 0, result.output
    assert f"shopify:{SHOP}/products: 3 files" in result.output
    read = (lambda: table_rows(s3, bucket)) if fmt == "delta" else (lambda: bucket_parquet_rows(s3, bucket))
    assert sorted((r["source_id"], r["raw_hash"]) for r in read()) == before
    again = invoke(monkeypatch, legacy_shop, old, *target)  # nothing is written twice
    assert again.exit_code == 0 and "already migrated" in again.output
    assert len(read()) == len(before) and duplicates(read()) == 0
    assert (old / "data" / "state" / "shopify.sqlite").exists()  # the source is left as it was
    fresh = tmp_path / "worker"  # an empty disk
    run = invoke(monkeypatch, legacy_shop, fresh, "--destination", f"s3://{bucket}/lake", "--table-format", fmt)
    assert run.exit_code == 0, run.output
    assert len(catalog_requests(legacy_shop)) == 1 and "wrote 0" in run.output
    report = invoke(monkeypatch, legacy_shop, fresh, "report", "--destination", f"s3://{bucket}/lake")
    assert report.output.count("\n20261201T0218") == 3  # the previous release's runs came along


def test_a_migration_that_stopped_part_way_keeps_runs_off_the_unit_until_it_is_finished(
        tmp_path, legacy_shop, lake, monkeypatch):
    from storage.lake import migration

    s3, bucket, _ = lake
    old = legacy_copy(tmp_path)
    target = ["migrate", "--to", f"s3://{bucket}/lake", "--table-format", "delta"]
    real = migration._Place.write_state
    monkeypatch.setattr(migration._Place, "write_state", lambda *a: (_ for _ in ()).throw(OSError("the worker died")))
    assert invoke(monkeypatch, legacy_shop, old, *target).exit_code != 0  # data moved, state not
    destination = ["--destination", f"s3://{bucket}/lake", "--table-format", "delta"]
    refused = invoke(monkeypatch, legacy_shop, tmp_path / "w1", *destination)
    assert refused.exit_code == 1 and "has not finished" in refused.output and legacy_shop.api_requests() == []
    monkeypatch.setattr(migration._Place, "write_state", real)
    assert invoke(monkeypatch, legacy_shop, old, *target).exit_code == 0  # finishes it: the data is not appended again
    assert len(table_rows(s3, bucket)) == 66 and duplicates(table_rows(s3, bucket)) == 0
    assert invoke(monkeypatch, legacy_shop, tmp_path / "w2", *destination).exit_code == 0
    assert len(catalog_requests(legacy_shop)) == 1
    assert keys(s3, bucket, "lake/_leases/") == []


def test_a_dataset_this_release_wrote_migrates_and_the_next_run_there_makes_one_request(run, sandbox, lake):
    s3, bucket, _ = lake
    assert run(sandbox)[0].exit_code == 0  # local: the account in every name, a state file per unit
    moved, _ = run(None, "migrate", "--to", f"s3://{bucket}/lake")
    assert moved.exit_code == 0 and f"shopify:{SHOP}/products: 1 files copied" in moved.output
    assert len(bucket_parquet_rows(s3, bucket)) == 100
    before = len(catalog_requests(sandbox))
    result, _ = run(sandbox, "--destination", f"s3://{bucket}/lake")
    assert result.exit_code == 0 and "wrote 0" in result.output
    assert len(catalog_requests(sandbox)) - before == 1


def test_an_orders_unit_migrates_into_its_two_delta_tables_and_the_next_run_writes_nothing(run, lake, dirs):
    from tests.lakes import storage_options
    from tests.test_lake_orders import delta_rows
    from tests.test_orders import table

    s3, bucket, _ = lake
    with ShopifySandbox(CatalogSpec(size=15), token=TOKEN, throttle=False, orders=25) as shop:
        first, _ = run(shop, "--streams", "products,orders")
        assert first.exit_code == 0, first.output
        local = {t: len(table(dirs, t)) for t in ("products", "orders", "order_lines")}
        moved, _ = run(None, "migrate", "--to", f"s3://{bucket}/lake", "--table-format", "delta")
        assert moved.exit_code == 0, moved.output
        uri, options = f"s3://{bucket}/lake", storage_options(s3)
        assert {t: len(delta_rows(uri, t, options)) for t in local} == local == {
            "products": 15, "orders": 25, "order_lines": local["order_lines"]}
        again, _ = run(shop, "--streams", "products,orders", "--destination", uri, "--table-format", "delta")
        assert again.exit_code == 0 and again.output.count("wrote 0,") == 2, again.output
        assert {t: len(delta_rows(uri, t, options)) for t in local} == local

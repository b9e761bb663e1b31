"""`run_pipeline.py prepare`: a scheduler's first task readies the destination before units fan out
(the store's conditional-write probe, the Delta tables of every configured unit's streams), exits
0, and does it again harmlessly; a store that ignores conditional writes is refused by name."""

from __future__ import annotations

from click.testing import CliRunner

from pipelines.run_pipeline import cli
from tests.conftest import SHOP, TOKEN
from tests.lakes import keys

SHOPIFY = {"SHOPIFY_SHOP_DOMAIN": SHOP, "SHOPIFY_ACCESS_TOKEN": TOKEN, "SHOPIFY_API_BASE_URL": "http://127.0.0.1:9"}
FIRST_COMMIT = "_delta_log/00000000000000000000.json"


def prepare(tmp_path, monkeypatch, destination: str, *args, env: dict | None = None):
    for name, value in {**SHOPIFY, **(env or {})}.items():
        monkeypatch.setenv(name, value)
    return CliRunner().invoke(cli, ["prepare", "--destination", destination, "--logs-dir", str(tmp_path / "logs"),
                                    *args])


def test_prepare_creates_every_configured_streams_delta_tables_once_and_again_changes_nothing(
        tmp_path, monkeypatch, lake):
    s3, bucket, _ = lake
    env = {"PIPELINE_STREAMS": "products,orders"}  # the shop's orders too: four tables
    first = prepare(tmp_path, monkeypatch, f"s3://{bucket}/lake", "--table-format", "delta", env=env)
    assert first.exit_code == 0, first.output
    assert "ready for 2 units: conditional writes honoured; Delta tables order_lines, orders, product_deletions, products" in first.output
    tables = {key.split("/")[2] for key in keys(s3, bucket, "lake/normalized/") if key.endswith(FIRST_COMMIT)}
    assert tables == {"products", "product_deletions", "orders", "order_lines"}
    before = keys(s3, bucket)
    s3.log(clear=True)
    again = prepare(tmp_path, monkeypatch, f"s3://{bucket}/lake", "--table-format", "delta", env=env)
    assert again.exit_code == 0, again.output
    assert keys(s3, bucket) == before  # no new commit, no new object: idempotent
    assert not [e for e in s3.log() if e["method"] == "PUT" and "/normalized/" in e["path"]]


def test_prepare_refuses_a_store_that_ignores_conditional_writes_and_creates_nothing(tmp_path, monkeypatch, lake):
    s3, bucket, _ = lake
    s3.strip_conditions()
    result = prepare(tmp_path, monkeypatch, f"s3://{bucket}/lake", "--table-format", "delta")
    assert result.exit_code == 2, result.output
    assert f"the destination s3://{bucket}/lake cannot take this run" in result.output
    assert "run `run_pipeline.py prepare` again" in result.output
    assert not keys(s3, bucket, "lake/normalized/")


def test_prepare_on_an_unreachable_store_exits_1_naming_it(tmp_path, monkeypatch):
    env = {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "AKIDPREPARETEST00000",
           "AWS_SECRET_ACCESS_KEY": "prepare-test-secret-not-real", "AWS_REGION": "us-east-1"}
    result = prepare(tmp_path, monkeypatch, "s3://nowhere/lake", env=env)
    assert result.exit_code == 1, result.output
    assert "the destination s3://nowhere/lake cannot take this run" in result.output
    assert "prepare-test-secret-not-real" not in result.output


def test_prepare_creates_a_local_delta_table_and_says_parquet_needs_none(tmp_path, monkeypatch):
    delta = prepare(tmp_path, monkeypatch, str(tmp_path / "data"), "--table-format", "delta")
    assert delta.exit_code == 0, delta.output
    assert (tmp_path / "data" / "normalized" / "products" / FIRST_COMMIT).is_file()
    assert "ready for 1 unit: Delta tables product_deletions, products in place" in delta.output
    parquet = prepare(tmp_path, monkeypatch, str(tmp_path / "files"))
    assert parquet.exit_code == 0 and "Parquet files need no table" in parquet.output
    assert not (tmp_path / "files" / "normalized").exists()

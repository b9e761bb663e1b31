"""An object store as the destination: data (a Delta table or Parquet files) and everything a later
run needs (index, high-water mark, counters, run history) in the bucket, so a worker with an empty
disk carries on; a local Delta table; both behind the one interface the run uses.

The store is moto's S3 server on loopback (sandbox/s3.py), in a process of its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date

import pytest
from click.testing import CliRunner

from pipelines.run_pipeline import Runtime, cli
from sandbox.catalog import CatalogSpec
from sandbox.shopify import ShopifySandbox
from tests.conftest import SHOP, TOKEN, catalog_requests
from tests.lakes import duplicates, keys, parquet_rows, table_rows
from tests.procs import REPO, base_env, shopify_env

SHOPIFY = {"SHOPIFY_SHOP_DOMAIN": SHOP, "SHOPIFY_ACCESS_TOKEN": TOKEN}


@pytest.fixture
def shop():
    with ShopifySandbox(CatalogSpec(size=80), token=TOKEN, throttle=False) as server:
        yield server


def worker(tmp_path, name: str, clock, monkeypatch, lake, server, *args, fmt: str = "delta", env: dict | None = None):
    """One run on a worker with its own (initially empty) disk; returns (result, its record)."""
    s3, bucket, _ = lake
    for key, value in {**SHOPIFY, "SHOPIFY_API_BASE_URL": server.base_url, **(env or {})}.items():
        monkeypatch.setenv(key, value)
    root = tmp_path / name
    argv = ["--destination", f"s3://{bucket}/lake", "--table-format", fmt, "--data-dir", str(root / "data"),
            "--logs-dir", str(root / "logs"), "--cache-dir", str(root / "cache"), *args]
    result = CliRunner().invoke(cli, argv, obj=Runtime(sleep=clock.sleep, clock=clock))
    records = [json.loads(s3.client().get_object(Bucket=bucket, Key=k)["Body"].read())
               for k in keys(s3, bucket, "lake/_history/runs/")]
    return result, max(records, key=lambda r: r["started_at"]) if records else None


@pytest.mark.parametrize("fmt", ["delta", "parquet"])
def test_an_empty_worker_after_a_complete_run_makes_one_request_and_writes_nothing(
        tmp_path, clock, monkeypatch, lake, shop, fmt):
    s3, bucket, _ = lake
    first, record = worker(tmp_path, "w1", clock, monkeypatch, lake, shop, fmt=fmt)
    assert first.exit_code == 0, first.output
    assert record["units"][0]["written"] == 80
    before = len(catalog_requests(shop))
    again, record = worker(tmp_path, "w2", clock, monkeypatch, lake, shop, fmt=fmt)  # a fresh disk
    assert again.exit_code == 0, again.output
    assert len(catalog_requests(shop)) - before == 1
    assert record["units"][0]["written"] == 0 and record["units"][0]["fetched"] <= 1
    rows = table_rows(s3, bucket) if fmt == "delta" else parquet_rows(s3, bucket)
    assert len(rows) == 80 and duplicates(rows) == 0
    assert {r["account"] for r in rows} == {SHOP} and {str(r["date"]) for r in rows} == {date.today().isoformat()}
    assert not (tmp_path / "w2" / "data").exists() and not (tmp_path / "w2" / "logs" / "runs.jsonl").exists()
    changed = shop.mutate(0.1)
    third, record = worker(tmp_path, "w3", clock, monkeypatch, lake, shop, fmt=fmt)
    assert third.exit_code == 0 and record["units"][0]["written"] == len(changed)
    rows = table_rows(s3, bucket) if fmt == "delta" else parquet_rows(s3, bucket)
    assert len(rows) == 80 + len(changed) and duplicates(rows) == 0


def test_a_no_change_rerun_writes_no_state_and_reads_a_few_small_objects(tmp_path, clock, monkeypatch, lake, shop):
    s3, bucket, _ = lake
    worker(tmp_path, "w1", clock, monkeypatch, lake, shop)
    s3.log(clear=True)
    worker(tmp_path, "w2", clock, monkeypatch, lake, shop)
    log = s3.log()
    writes = [e["path"] for e in log if e["method"] in ("PUT", "POST", "DELETE")]
    assert not [w for w in writes if "/_state/" in w or "/normalized/" in w], writes  # no state, no data
    assert sum(1 for w in writes if "/_leases/" in w) == 2  # taken and released
    assert len(log) <= 20 and sum(e["bytes_out"] for e in log) < 50_000, log


def test_the_state_is_a_manifest_and_index_shards_and_the_history_is_in_the_bucket(
        tmp_path, clock, monkeypatch, lake, shop):
    s3, bucket, _ = lake
    worker(tmp_path, "w1", clock, monkeypatch, lake, shop)
    unit = f"shopify.{SHOP}.products"
    names = keys(s3, bucket, "lake/")
    manifest = json.loads(s3.client().get_object(Bucket=bucket, Key=f"lake/_state/{unit}/manifest.json")["Body"].read())
    assert manifest["meta"]["high_water_mark"] and manifest["generation"] >= 1
    assert manifest["index"]["latest"]["bits"] == 0  # 80 products: one shard
    assert [n for n in names if f"/index/{manifest['runs'][-1]}/latest-0-00.bin" in n]
    assert not [n for n in names if n.startswith("lake/_leases/")]  # released at the end
    assert [n for n in names if n.startswith("lake/_history/runs/")]
    result, _ = worker(tmp_path, "w2", clock, monkeypatch, lake, shop, "report")  # another empty disk
    assert result.exit_code == 0 and "80/0/0" in result.output


def test_a_local_delta_table_dedups_like_parquet_files(run, dirs, sandbox):
    from deltalake import DeltaTable

    result, record = run(sandbox, "--table-format", "delta")
    assert result.exit_code == 0 and record["units"][0]["written"] == 100
    changed = sandbox.mutate(0.05)
    _, again = run(sandbox, "--table-format", "delta")
    assert again["units"][0]["written"] == len(changed)
    table = DeltaTable(str(dirs["data"] / "normalized" / "products"))
    rows = table.to_pyarrow_dataset().to_table(use_threads=False).to_pylist()
    assert len(rows) == 100 + len(changed) and duplicates(rows) == 0
    assert [h["pipeline.run_id"] for h in table.history() if h["operation"] == "WRITE"] == [again["run_id"], record["run_id"]]
    assert all((dirs["data"] / f).exists() for f in record["units"][0]["files"])


def test_a_local_parquet_run_imports_neither_deltalake_nor_boto3(sandbox, tmp_path):
    env = base_env(tmp_path, **shopify_env(sandbox, TOKEN))
    completed = subprocess.run([sys.executable, "-X", "importtime", str(REPO / "pipelines" / "run_pipeline.py")],
                               env=env, cwd="/", capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in completed.stderr.splitlines()
                if line.startswith("import time:")}
    assert "pyarrow" in imported  # the reader saw the imports
    assert not imported & {"deltalake", "boto3", "botocore"}


def test_a_run_with_nothing_new_imports_no_pyarrow(sandbox, tmp_path):
    """The 1-request rerun of an unchanged catalog writes nothing: it reads no Parquet and builds no
    Arrow, so it never pays pyarrow's import (a third of its start-up)."""
    env = base_env(tmp_path, **shopify_env(sandbox, TOKEN))
    imported = []
    for _ in range(2):
        completed = subprocess.run([sys.executable, "-X", "importtime", str(REPO / "pipelines" / "run_pipeline.py")],
                                   env=env, cwd="/", capture_output=True, text=True, timeout=120)
        assert completed.returncode == 0, completed.stderr[-2000:]
        imported.append({line.rsplit("|", 1)[-1].strip() for line in completed.stderr.splitlines()
                         if line.startswith("import time:")})
    assert "pyarrow" in imported[0] and "storage.parquet" in imported[0]  # the first run wrote the catalog
    assert {"pyarrow", "numpy", "storage.parquet", "pipelines.bulk_split"}.isdisjoint(imported[1])
    assert "storage.destination" in imported[1]  # the second ran a unit


@pytest.mark.parametrize("destination, words", [
    ("s3://AKIDEXAMPLE:wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY@bucket/p", ["must not carry credentials"]),
    ("s3://Bad_Bucket/p", ["not an S3 bucket name"]),
    ("gs://bucket/p", ["a folder or s3://bucket/prefix"]),
])
def test_a_destination_that_cannot_be_used_is_exit_2_without_echoing_a_secret(run, sandbox, destination, words):
    result, _ = run(sandbox, "--destination", destination)
    assert result.exit_code == 2
    assert all(w in result.output for w in words), result.output
    assert "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY" not in result.output


def test_plain_http_reaches_only_a_loopback_endpoint(run, sandbox, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://minio.internal:9000")
    result, _ = run(sandbox, "--destination", "s3://bucket/p")
    assert result.exit_code == 2 and "https, or http on loopback" in result.output
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://10.0.0.8:9000")  # the general variable is checked too
    assert run(sandbox, "--destination", "s3://bucket/p")[0].exit_code == 2

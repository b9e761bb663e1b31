"""Helpers for tests that run the real CLI as separate processes (crash, race and secret tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, str(REPO / "pipelines" / "run_pipeline.py")]


def base_env(root: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOPIFY_", "AMAZON_", "EBAY_", "PIPELINE_", "AWS_"))}
    env.update(PIPELINE_ENV_FILE=os.devnull, PIPELINE_DATA_DIR=str(root / "data"),
               PIPELINE_LOGS_DIR=str(root / "logs"), PIPELINE_CACHE_DIR=str(root / "cache"), **extra)
    return env


def shopify_env(server, token: str) -> dict:
    return {"SHOPIFY_API_BASE_URL": server.base_url, "SHOPIFY_SHOP_DOMAIN": "test-shop.myshopify.com",
            "SHOPIFY_ACCESS_TOKEN": token}


def run_cli(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=env, cwd="/", capture_output=True, text=True, timeout=timeout)


def start_cli(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], env=env, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def dataset_problems(root: Path) -> list[str]:
    """What a reader would trip over; empty when the dataset is whole and consistent."""
    problems = []
    data = root / "data"
    files = sorted((data / "normalized").rglob("*.parquet")) if (data / "normalized").exists() else []
    hashes = []
    for path in files:
        try:
            table = pq.read_table(path)
        except Exception as exc:  # noqa: BLE001 - any read failure is the finding
            problems.append(f"unreadable {path.name}: {exc}")
            continue
        if table.num_rows != pq.ParquetFile(path).metadata.num_rows:
            problems.append(f"row count mismatch in {path.name}")
        hashes += zip(table.column("account").to_pylist(), table.column("raw_hash").to_pylist())
    if len(hashes) != len(set(hashes)):  # dedup is per unit: the same item found by two accounts is two rows
        problems.append(f"{len(hashes) - len(set(hashes))} duplicate (account, raw_hash) values")
    staged = [p for p in data.rglob("*") if p.name.endswith(".parquet") and p.name.startswith(".")]
    if staged:
        problems.append(f"staging files match *.parquet: {staged}")
    if files:
        glob = f"{data}/normalized/**/*.parquet"
        try:
            duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning=true, union_by_name=true)").fetchall()
        except Exception as exc:  # noqa: BLE001
            problems.append(f"DuckDB read failed: {exc}")
    for record in read_runlog(root):
        for entry in record.get("providers", {}).values():
            for name in entry.get("files", []):
                if not (data / name).exists():
                    problems.append(f"run {record['run_id']} claims missing {name}")
    return problems


def read_runlog(root: Path) -> list[dict]:
    path = root / "logs" / "runs.jsonl"
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def content(root: Path) -> set[tuple]:
    """The dataset as (source, source_id, raw_hash) rows, independent of run ids and file names."""
    files = sorted((root / "data" / "normalized").rglob("*.parquet"))
    rows = set()
    for path in files:
        table = pq.read_table(path, columns=["source", "source_id", "raw_hash"])
        rows |= set(zip(*(table.column(c).to_pylist() for c in ("source", "source_id", "raw_hash"))))
    return rows

"""`run_pipeline.py query`: SQL over the views, in each format; --list; offline DuckDB."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipelines.query import default_memory_limit
from pipelines.run_pipeline import cli
from storage import history_db
from tests.test_history import deletion, h, version, write

REPO = Path(__file__).resolve().parent.parent
SQL = "SELECT source_id, price, valid_from FROM products_current ORDER BY source_id"


@pytest.fixture
def dataset(tmp_path):
    data, logs = tmp_path / "data", tmp_path / "logs"
    write(data, [version("p1", "10", updated=h(0), fetched=h(0)), version("p2", "5.5", updated=h(0), fetched=h(0))],
          [version("p1", "12", updated=h(1), fetched=h(1)), deletion("p3", h(2))])
    history_db.write(logs, {"run_id": "20261101T120000Z-abcdef", "started_at": h(0).isoformat(),
                            "finished_at": h(0.1).isoformat(), "status": "ok", "exit_code": 0, "units": [],
                            "record_version": 2})
    return ["--data-dir", str(data), "--logs-dir", str(logs), "--cache-dir", str(tmp_path / "cache")]


def query(dirs, *args):
    result = CliRunner().invoke(cli, ["query", *args, *dirs])
    return result


def test_the_table_format_aligns_columns_under_a_header(dataset):
    result = query(dataset, SQL)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["source_id", "price", "valid_from"]
    assert lines[2].split() == ["p1", "12.0000", "2026-11-01T13:00:00+00:00"]
    assert lines[-1] == "(2 rows)"


def test_csv_has_a_header_and_one_line_a_row(dataset):
    result = query(dataset, SQL, "--format", "csv")
    assert list(csv.reader(io.StringIO(result.output))) == [
        ["source_id", "price", "valid_from"], ["p1", "12.0000", "2026-11-01T13:00:00+00:00"],
        ["p2", "5.5000", "2026-11-01T12:00:00+00:00"]]


def test_json_is_one_object_a_line_with_exact_money(dataset, tmp_path):
    out = tmp_path / "out" / "current.jsonl"
    result = query(dataset, SQL, "--format", "json", "--output", str(out))
    assert result.exit_code == 0 and result.output == ""
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [{"source_id": "p1", "price": "12.0000", "valid_from": "2026-11-01T13:00:00+00:00"},
                    {"source_id": "p2", "price": "5.5000", "valid_from": "2026-11-01T12:00:00+00:00"}]
    assert [p.name for p in out.parent.iterdir()] == ["current.jsonl"]  # no staging file left


def test_parquet_needs_an_output_file_and_keeps_the_types(dataset, tmp_path):
    result = query(dataset, SQL, "--format", "parquet")
    assert result.exit_code == 2 and "--output" in result.output
    out = tmp_path / "current.parquet"
    assert query(dataset, SQL, "--format", "parquet", "--output", str(out)).exit_code == 0
    table = pq.read_table(out)
    assert table.column("price").to_pylist() == [Decimal("12"), Decimal("5.5")]
    assert str(table.schema.field("valid_from").type) == "timestamp[us, tz=UTC]"


def test_list_prints_each_view_and_its_columns_on_one_line(dataset):
    result = query(dataset, "--list")
    assert result.exit_code == 0, result.output
    lines = dict(line.split(": ", 1) for line in result.output.splitlines())
    assert list(lines) == ["products", "products_history", "products_current", "price_changes", "product_deletions",
                           "runs"]  # no orders yet: their views are absent
    assert lines["price_changes"] == ("source VARCHAR, account VARCHAR, source_id VARCHAR, title VARCHAR, "
                                      "currency VARCHAR, old_price DECIMAL(18,4), new_price DECIMAL(18,4), "
                                      "changed_at TIMESTAMP WITH TIME ZONE")
    assert all(re.fullmatch(r"\w+ [A-Z][^,]*(, \w+ [A-Z].*)*", columns) for columns in lines.values())
    assert query(dataset, "SELECT run_id, status FROM runs", "--format", "csv").output.splitlines()[1] == (
        "20261101T120000Z-abcdef,ok")


def test_a_view_whose_table_is_missing_is_absent(tmp_path):
    dirs = ["--data-dir", str(tmp_path / "data"), "--logs-dir", str(tmp_path / "logs")]
    assert "No data yet" in query(dirs, "--list").output
    result = query(dirs, "SELECT * FROM orders_current")
    assert result.exit_code == 1 and "orders_current" in result.output and "Traceback" not in result.output


def test_a_bad_query_is_duckdbs_message_and_exit_1(dataset):
    result = query(dataset, "SELEC 1")
    assert result.exit_code == 1 and "syntax error" in result.output


def test_the_command_line_imports_duckdb_only_for_the_query_command():
    code = "import sys, pipelines.run_pipeline; print('duckdb' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


def test_no_query_ever_tries_to_download_a_duckdb_extension(dataset, tmp_path):
    """DuckDB installs extensions under ~/.duckdb: with HOME empty (and, where it can, no network
    at all), a query works and one that needs a missing extension fails saying so, with no download
    tried and nothing installed."""
    home = tmp_path / "home"
    home.mkdir()
    isolate = ["unshare", "-n"] if shutil.which("unshare") and subprocess.run(
        ["unshare", "-n", "true"], capture_output=True).returncode == 0 else []
    env = {**os.environ, "HOME": str(home), "PIPELINE_ENV_FILE": os.devnull}

    def cli_query(sql: str):
        command = [*isolate, sys.executable, str(REPO / "pipelines" / "run_pipeline.py"), "query", sql,
                   "--format", "json", *dataset]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)

    ok = cli_query("SELECT CAST(valid_from AS DATE) AS day, to_json(tags) AS j FROM products_current LIMIT 1")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["day"] == "2026-11-01"
    missing = cli_query("SELECT * FROM read_parquet('s3://bucket/products.parquet')")
    assert missing.returncode == 1
    assert "requires the extension httpfs" in missing.stderr and "download" not in missing.stderr.lower()
    assert list(home.iterdir()) == []  # no ~/.duckdb/extensions: nothing was installed or fetched


def test_query_memory_bounds_duckdb_and_spills_to_a_folder_of_its_own(dataset, monkeypatch):
    sql = ("SELECT current_setting('memory_limit') AS memory, current_setting('temp_directory') AS spill")
    monkeypatch.setenv("PIPELINE_QUERY_MEMORY", "1GB")
    result = query(dataset, sql, "--format", "json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.output)
    assert row["memory"] == "953.6 MiB"  # DuckDB's words for 1 GB (10^9 bytes)
    assert Path(row["spill"]).parent == Path(tempfile.gettempdir()) and Path(row["spill"]).name.startswith(
        "pipeline-query-")
    monkeypatch.delenv("PIPELINE_QUERY_MEMORY")
    default = json.loads(query(dataset, sql, "--format", "json").output)["memory"]
    assert default != row["memory"] and default == duckdb_words(default_memory_limit())
    monkeypatch.setenv("PIPELINE_QUERY_MEMORY", "lots")
    bad = query(dataset, sql)
    assert bad.exit_code == 1 and "PIPELINE_QUERY_MEMORY" in bad.output and "Traceback" not in bad.output


def duckdb_words(limit: str) -> str:
    import duckdb

    con = duckdb.connect(":memory:", config={"memory_limit": limit})
    return con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]

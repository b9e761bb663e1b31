"""Reading the Delta table: each documented reader gives the same rows, and the command that reads
exits 0 run after run. delta-rs's runtime aborted readers at exit ("terminate called without an
active exception", rc 134) in 6 to 7 of 30 runs with `to_pyarrow_table()` or a threaded
`to_table()`: a scheduler would mark good runs failed, so exit codes are checked many times.

READ_RUNS sets how many runs (30).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import SHOP
from tests.procs import REPO

READER = [sys.executable, str(REPO / "tools" / "read_lake.py")]


def read(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*READER, *args], env=env, cwd="/", capture_output=True, text=True, timeout=120)


def test_every_reader_sees_the_table_and_the_reading_command_exits_0_every_time(run, sandbox, lake):
    s3, bucket, env = lake
    destination = f"s3://{bucket}/lake"
    result, _ = run(sandbox, "--destination", destination, "--table-format", "delta")
    assert result.exit_code == 0, result.output
    env = {**os.environ, **env}
    runs = int(os.environ.get("READ_RUNS", "30"))
    with ThreadPoolExecutor(3) as pool:  # 30 consecutive runs of one command, three at a time
        completed = list(pool.map(lambda _: read(env, destination), range(runs)))
    codes = [c.returncode for c in completed]
    assert codes == [0] * runs, [c.stderr[-300:] for c in completed if c.returncode][:3]
    assert {c.stdout for c in completed} == {json.dumps({"pyarrow": 100, "pandas": 100, "polars": 100, "duckdb": 100}) + "\n"}
    query = read(env, destination, "--sql", "SELECT account, count(*) AS n FROM products GROUP BY ALL")
    assert query.returncode == 0 and SHOP in query.stdout and "100" in query.stdout

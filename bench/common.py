"""Shared helpers for the benchmark scripts: a sandbox in its own process, timed child runs."""

from __future__ import annotations

import compileall
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")

# The pipeline's bytecode, written once as a user's first run writes it: where PYTHONDONTWRITEBYTECODE
# is set (some CI images, this project's own sandboxes), every timed run would otherwise compile each
# module changed since the last setup (`make` compiles them at setup): about 0.1 s a start.
for _package in ("pipelines", "connectors", "normalize", "storage"):
    compileall.compile_dir(REPO / _package, quiet=2)


class SandboxProcess:
    """The Shopify sandbox in a process of its own (bench/sandbox_server.py)."""

    script = "sandbox_server.py"

    def __init__(self, size: int, *extra: str):
        self.proc = subprocess.Popen([sys.executable, str(REPO / "bench" / self.script), "--size", str(size), *extra],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = json.loads(self.proc.stdout.readline())
        self.final: dict = {}

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def stop(self) -> dict:
        self.proc.stdin.close()
        line = self.proc.stdout.readline()
        self.final = json.loads(line) if line.strip() else {}
        self.proc.wait(timeout=60)
        return self.final


class ReplayProcess(SandboxProcess):
    """bench/replay.py: `record` in front of a sandbox, or `serve` a recording; the sandbox's token."""

    def __init__(self, mode: str, *args: str, token: str):
        self.proc = subprocess.Popen([sys.executable, str(REPO / "bench" / "replay.py"), mode, *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = {**json.loads(self.proc.stdout.readline()), "token": token}
        self.final = {}


def timed_run(command: list[str], env: dict) -> dict:
    """Run a command; wall seconds, the child's own CPU seconds and peak RSS (os.wait4, not RUSAGE_CHILDREN)."""
    started = time.monotonic()
    proc = subprocess.Popen(command, env=env, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime,
            "exit": os.waitstatus_to_exitcode(status),
            "stdout": out, "stderr": err}


def pipeline_env(root: Path, sandbox: SandboxProcess, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOPIFY_", "AMAZON_", "EBAY_", "PIPELINE_"))}
    env.update(PIPELINE_ENV_FILE=os.devnull, PIPELINE_DATA_DIR=str(root / "data"), PIPELINE_LOGS_DIR=str(root / "logs"),
               PIPELINE_CACHE_DIR=str(root / "cache"), SHOPIFY_API_BASE_URL=sandbox.info["base_url"],
               SHOPIFY_SHOP_DOMAIN="bench-shop.myshopify.com", SHOPIFY_ACCESS_TOKEN=sandbox.info["token"],
               SHOPIFY_BULK_MIN_PRODUCTS="0")  # paged queries, as in the dlt comparison
    env.update(extra)
    return env


def last_run(root: Path) -> dict:
    return json.loads((root / "logs" / "runs.jsonl").read_text().splitlines()[-1])


def parquet_variants(root: Path) -> int:
    """How many variants the written Parquet holds, read a batch at a time."""
    total = 0
    for path in (root / "data" / "normalized").rglob("*.parquet"):
        for batch in pq.ParquetFile(path).iter_batches(columns=["variants"]):
            total += pc.sum(pc.list_value_length(batch.column(0))).as_py() or 0
    return total


def parquet_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "data" / "normalized").rglob("*.parquet"))

"""`make bench-fleet`: a fleet of Shopify shops into one Delta table in an object store.

N shops (default 20, each a unit of work with its own account, state, lease and partition) of P
products each (default 2,000, the rich catalog) are run by K workers at once (default 1, 2 and
4), each unit as its own process with an empty disk, as pods or CI runners would: a worker takes
the next unit as soon as its last one ends. One Shopify sandbox in its own process serves every
shop (the pipeline reaches a shop through its base URL; the shop domain only names the account),
throttling off, so the figures are ours, the sandbox's and the store's. The store is moto's S3 on
loopback behind the counting proxy of sandbox/s3.py: every request and byte is counted as the store
saw it. Each K starts from a new bucket.

How commits and conflicts are counted: delta-rs commits version N with a conditional PUT of
`_delta_log/<N>.json` (If-None-Match); a writer that loses the race gets 412, reads the winner's
commit, checks it for conflicts and tries N+1. So commits are that PUT answered 200, retries are
the same PUT answered 412, and the table's version at the end cross-checks the commits.

Then, for the last K: a no-change round (every unit again, fresh disks), a round after 3% of every
catalog changed (a day's usual run), and `run_pipeline.py compact` over the table they left.
Last, the commit rate one table takes: 1 and 4 processes appending small one-commit batches as fast
as they can (`--rate-processes`, `--rate-commits` each).

  python bench/fleet.py [--shops 20] [--products 2000] [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date, datetime, timezone
from pathlib import Path
from urllib.request import Request, urlopen

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, SandboxProcess  # noqa: E402
from sandbox.s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, LocalS3  # noqa: E402

CLI = [sys.executable, str(REPO / "pipelines" / "run_pipeline.py")]
COMMIT_RE = re.compile(r"/_delta_log/\d{20}\.json$")
TOKEN_VARIABLE = "FLEET_SHOP_TOKEN"


def accounts_file(path: Path, shops: int, base_url: str) -> list[str]:
    """An accounts file with `shops` Shopify accounts on the one sandbox; returns the unit specs."""
    names = [f"shop-{i:03d}" for i in range(1, shops + 1)]
    path.write_text("".join(f'[[shopify]]\nname = "{n}"\nshop_domain = "{n}.myshopify.com"\n'
                            f'access_token = "env:{TOKEN_VARIABLE}"\napi_base_url = "{base_url}"\n\n' for n in names))
    return [f"shopify:{n}" for n in names]


def fleet_env(s3: LocalS3, bucket: str, accounts: Path, token: str) -> dict:
    theirs = ("SHOPIFY_", "AMAZON_", "EBAY_", "PIPELINE_", "AWS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(theirs)}
    return {**env, **s3.env(bucket, "fleet"), "PIPELINE_TABLE_FORMAT": "delta", "PIPELINE_ENV_FILE": os.devnull,
            "PIPELINE_ACCOUNTS_FILE": str(accounts), TOKEN_VARIABLE: token}


def round_of(units: list[str], workers: int, env: dict, scratch: Path) -> tuple[float, list[int]]:
    """Every unit once, `workers` at a time, each in a process with an empty disk; (wall s, exit codes)."""
    todo: queue.Queue = queue.Queue()
    for unit in units:
        todo.put(unit)
    codes: list[int] = []

    def worker() -> None:
        while True:
            try:
                unit = todo.get_nowait()
            except queue.Empty:
                return
            disk = Path(tempfile.mkdtemp(dir=scratch))
            paths = ["--destination", env["PIPELINE_DESTINATION"], "--data-dir", str(disk / "data"),
                     "--logs-dir", str(disk / "logs"), "--cache-dir", str(disk / "cache")]
            done = subprocess.run([*CLI, "--accounts", unit, "--quiet", *paths], env=env, cwd="/",
                                  capture_output=True, text=True)
            if done.returncode:
                print(f"  {unit} exited {done.returncode}: {done.stderr[-400:]}", file=sys.stderr)
            codes.append(done.returncode)
            shutil.rmtree(disk, ignore_errors=True)

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - started, codes


def mutate(base_url: str, fraction: float) -> None:
    request = Request(f"{base_url}/_sandbox/mutate", data=json.dumps({"fraction": fraction}).encode(), method="POST")
    with urlopen(request, timeout=60) as answer:  # noqa: S310 - the sandbox on loopback
        answer.read()


def traffic(log: list[dict]) -> dict:
    """Requests, bytes each way, Delta commits and commit retries (conditional PUTs that lost)."""
    puts = [e for e in log if e["method"] == "PUT" and COMMIT_RE.search(e["path"].split("?")[0])]
    return {"requests": len(log), "gets": sum(e["method"] == "GET" for e in log),
            "puts": sum(e["method"] == "PUT" for e in log),
            "up_mb": sum(e["bytes_in"] for e in log) / 1e6, "down_mb": sum(e["bytes_out"] for e in log) / 1e6,
            "commits": sum(e["status"] == 200 for e in puts), "retries": sum(e["status"] == 412 for e in puts)}


def delta_options(s3: LocalS3) -> dict:
    return {"AWS_ENDPOINT_URL": s3.endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY}


def table_version(s3: LocalS3, bucket: str) -> int:
    """The products table's latest version, read in a child process (deltalake stays out of this one)."""
    code = ("import json, os, sys; from deltalake import DeltaTable; "
            "print(DeltaTable(sys.argv[1], storage_options=json.loads(sys.argv[2])).version(), flush=True); os._exit(0)")
    done = subprocess.run([sys.executable, "-c", code, f"s3://{bucket}/fleet/normalized/products",
                           json.dumps(delta_options(s3))], capture_output=True, text=True, check=True)
    return int(done.stdout.strip())


def append_commits(root: str, account: str, commits: int) -> None:
    """The child of the commit-rate section: `commits` one-commit appends of 5 rows; prints the span."""
    import pyarrow as pa

    from storage.delta import TABLE_SCHEMAS, DeltaTables, end_process
    from storage.paths import UnitId

    tables = DeltaTables(root, json.loads(os.environ["FLEET_DELTA_OPTIONS"]))
    unit, marker = UnitId("shopify", account), os.getpid() % 0xFFFFFF
    tables.table("products")  # opened before the clock starts, as a run's writer is
    first = None
    for n in range(commits):
        run_id = f"20261201T{n:06d}Z-{marker:06x}"
        now = datetime.now(timezone.utc)
        batch = pa.Table.from_pylist([{"source": "shopify", "account": account, "source_id": f"{n}/{k}", "title": "t",
                                       "fetched_at": now, "run_id": run_id, "raw_hash": f"{run_id}/{k}",
                                       "date": date.today()} for k in range(5)], schema=TABLE_SCHEMAS["products"])
        first = first or time.time()
        tables.append(lambda: pa.RecordBatchReader.from_batches(batch.schema, batch.to_batches()), unit, run_id)
    print(json.dumps({"first": first, "last": time.time()}), flush=True)
    end_process(0)


def commit_rate(s3: LocalS3, processes: int, commits: int) -> dict:
    """`processes` writers of their own partitions appending `commits` each to a new table."""
    bucket = s3.create_bucket()
    root = f"s3://{bucket}/fleet"
    env = {**os.environ, "FLEET_DELTA_OPTIONS": json.dumps(delta_options(s3))}
    subprocess.run([*CLI[:1], str(Path(__file__)), "--append", root, "seed", "1"], env=env, cwd=REPO, check=True,
                   capture_output=True)  # creates the table
    s3.log(clear=True)
    children = [subprocess.Popen([sys.executable, str(Path(__file__)), "--append", root, f"shop-{i}", str(commits)],
                                 env=env, cwd=REPO, stdout=subprocess.PIPE, text=True) for i in range(processes)]
    spans = [json.loads(child.communicate()[0]) for child in children]
    seconds = max(s["last"] for s in spans) - min(s["first"] for s in spans)
    counted = traffic(s3.log(clear=True))
    return {"processes": processes, "commits": counted["commits"], "retries": counted["retries"],
            "seconds": seconds, "per_minute": counted["commits"] / seconds * 60,
            "requests_per_commit": counted["requests"] / max(1, counted["commits"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shops", type=int, default=20)
    parser.add_argument("--products", type=int, default=2000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--rate-processes", default="1,4")
    parser.add_argument("--rate-commits", type=int, default=25)
    parser.add_argument("--append", nargs=3, metavar=("ROOT", "ACCOUNT", "COMMITS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.append:
        return append_commits(args.append[0], args.append[1], int(args.append[2]))
    ks = [int(k) for k in args.workers.split(",")]
    sandbox = SandboxProcess(args.products)
    scratch = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    print(f"{args.shops} Shopify shops x {args.products:,} products (rich catalog, {sandbox.info['variants']:,} "
          f"variants a shop), one Delta table in the local S3; each unit a process with an empty disk")
    header = (f"{'K':>2} | {'round':<11} | {'wall s':>6} | {'units/min':>9} | {'exit 0':>6} | {'commits':>7} | "
              f"{'retried':>7} | {'version':>7} | {'requests':>8} | {'GET':>6} | {'PUT':>6} | {'up MB':>6} | {'down MB':>7}")
    try:
        with LocalS3() as s3:
            print(header)
            for k in ks:
                bucket = s3.create_bucket()
                units = accounts_file(scratch / f"accounts-{k}.toml", args.shops, sandbox.info["base_url"])
                env = fleet_env(s3, bucket, scratch / f"accounts-{k}.toml", sandbox.info["token"])
                rounds = [("first", units)] + ([("no change", units), ("3% changed", units)] if k == ks[-1] else [])
                for title, todo in rounds:
                    if title == "3% changed":  # every shop's catalog is the sandbox's one: each unit writes 3%
                        mutate(sandbox.info["base_url"], 0.03)
                    s3.log(clear=True)
                    wall, codes = round_of(todo, k, env, scratch)
                    t = traffic(s3.log(clear=True))
                    print(f"{k:>2} | {title:<11} | {wall:6.1f} | {len(todo) / wall * 60:9.1f} | "
                          f"{sum(c == 0 for c in codes):>3}/{len(codes):<2} | {t['commits']:>7} | {t['retries']:>7} | "
                          f"{table_version(s3, bucket):>7} | {t['requests']:>8} | {t['gets']:>6} | {t['puts']:>6} | "
                          f"{t['up_mb']:6.1f} | {t['down_mb']:7.1f}", flush=True)
            started = time.monotonic()
            done = subprocess.run([*CLI, "compact", "--destination", f"s3://{bucket}/fleet", "--table-format", "delta"],
                                  env=env, cwd="/", capture_output=True, text=True)
            t = traffic(s3.log(clear=True))
            print(f"\ncompact after K={ks[-1]} (exit {done.returncode}, {time.monotonic() - started:.1f} s, "
                  f"{t['requests']} requests): {done.stdout.strip() or done.stderr.strip()[-400:]}")
            print(f"\ncommit rate of one table: one-commit appends of 5 rows, {args.rate_commits} per process, "
                  "each process its own partition")
            print(f"{'processes':>9} | {'commits':>7} | {'retried':>7} | {'s':>6} | {'commits/min':>11} | "
                  f"{'requests/commit':>15}")
            for processes in (int(p) for p in args.rate_processes.split(",")):
                r = commit_rate(s3, processes, args.rate_commits)
                print(f"{r['processes']:>9} | {r['commits']:>7} | {r['retries']:>7} | {r['seconds']:6.1f} | "
                      f"{r['per_minute']:11.0f} | {r['requests_per_commit']:15.1f}", flush=True)
    finally:
        sandbox.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

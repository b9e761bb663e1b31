"""The bulk JSONL path end to end: a first run over a shop large enough for a bulk operation
(SHOPIFY_BULK_MIN_PRODUCTS=1), against a sandbox in its own process whose result is the rich
catalog's JSONL in Shopify's usual order (a product's line, then its variants'). Targets: the
result turned into Parquet in at most 90 s of wall time after the download, peak RSS under 250 MB.

The time after the download runs from the pipeline's "downloaded" log line to its exit (start-up,
the bulk operation's polls and the download itself come before). The script checks that every
product and variant is in the Parquet written. CPU is the pipeline's and its worker processes'
(os.wait4); "peak RSS" is the largest single process's, "tree RSS" the largest sum over the
pipeline and its workers at once (sampled from /proc every 0.2 s).

Usage: python bench/bulk.py 1000000 [more sizes]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, SandboxProcess, last_run, parquet_variants, pipeline_env  # noqa: E402

CLI = [sys.executable, str(REPO / "pipelines" / "run_pipeline.py"), "--providers", "shopify"]
AFTER_DOWNLOAD_TARGET_S, RSS_TARGET_MB = 90, 250


def sample_tree(pid: int, cpu: dict) -> float:
    """The resident memory of a process and its children (one level: the run's workers), in MB;
    notes each one's CPU seconds so far in `cpu` (by pid)."""
    pids, total = [pid], 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        return 0.0
    for each in pids:
        try:
            total += int(Path(f"/proc/{each}/statm").read_text().split()[1])
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            cpu[each] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total * os.sysconf("SC_PAGE_SIZE") / 2**20


def bench(size: int) -> dict:
    sandbox = SandboxProcess(size)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            env = pipeline_env(root, sandbox, SHOPIFY_BULK_MIN_PRODUCTS="1",
                               PIPELINE_BULK_WORKERS=os.environ.get("PIPELINE_BULK_WORKERS", "2"))
            started = time.monotonic()
            proc = subprocess.Popen(CLI, env=env, cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            seen: dict = {"lines": []}

            def watch():
                for line in proc.stderr:
                    seen["lines"].append(line)
                    if "downloaded" in line and "downloaded_at" not in seen:
                        seen["downloaded_at"] = time.monotonic()

            def sample():
                seen["cpu"] = {}
                while proc.poll() is None:
                    seen["tree_rss_mb"] = max(seen.get("tree_rss_mb", 0.0), sample_tree(proc.pid, seen["cpu"]))
                    time.sleep(0.2)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            _, status, usage = os.wait4(proc.pid, 0)
            ended = time.monotonic()
            watcher.join(timeout=10)
            if os.waitstatus_to_exitcode(status) != 0 or "downloaded_at" not in seen:
                raise SystemExit("the bulk run failed:\n" + "".join(seen["lines"][-30:]))
            entry = last_run(root)["providers"]["shopify"]
            variants = parquet_variants(root)
            result = root / "data"
            if entry["written"] != size or variants != sandbox.info["variants"]:
                raise SystemExit(f"incomplete: {entry['written']} of {size} products, "
                                 f"{variants} of {sandbox.info['variants']} variants")
            download_line = next(line for line in seen["lines"] if "downloaded" in line).strip()
            del result
    finally:
        sandbox.stop()
    return {"n": size, "variants": variants, "wall_s": ended - started, "after_s": ended - seen["downloaded_at"],
            "peak_rss_mb": usage.ru_maxrss / 1024, "tree_rss_mb": seen.get("tree_rss_mb", 0.0),
            "workers_cpu_s": sum(v for k, v in seen.get("cpu", {}).items() if k != proc.pid), "cpu_s": usage.ru_utime + usage.ru_stime,
            "download": download_line, "requests": entry["requests"]}


def main(sizes: list[int]) -> None:
    print(f"{'N':>9} {'variants':>9} {'JSONL lines':>11} {'run wall s':>10} {'after download s':>16} "
          f"{'peak RSS MB':>11} {'tree RSS MB':>11} {'our CPU s':>9} {'workers':>7} {'CPU us/product':>14} {'requests':>8}")
    for size in sizes:
        r = bench(size)
        met = r["after_s"] <= AFTER_DOWNLOAD_TARGET_S and r["peak_rss_mb"] < RSS_TARGET_MB
        print(f"{r['n']:>9} {r['variants']:>9} {r['n'] + r['variants']:>11} {r['wall_s']:>10.1f} {r['after_s']:>16.1f} "
              f"{r['peak_rss_mb']:>11.0f} {r['tree_rss_mb']:>11.0f} {r['cpu_s']:>9.1f} {r['workers_cpu_s']:>7.1f} {r['cpu_s'] / r['n'] * 1e6:>14.0f} {r['requests']:>8}   "
              f"targets <= {AFTER_DOWNLOAD_TARGET_S} s and < {RSS_TARGET_MB} MB: {'MET' if met else 'NOT MET'}"
              f"   ({r['download']})", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [100_000])

"""End-to-end size benchmark: the pipeline against a sandbox in its own process (throttling off,
the 1,000-point cap on, the rich catalog), into a temporary data directory. Prints one table row
per size, after checking that every product and every variant of the catalog is in the Parquet
written; then runs the pipeline again with nothing changed, three times (the fastest counts: the
target is 0.5 s of wall time, start-up included, and one request; `--reruns N` runs it N times and
prints the median and slowest too, for a noisy machine).

Usage: python bench/bench.py 10000 100000 [1000000] [--reruns N]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (REPO, SandboxProcess, last_run, parquet_bytes, parquet_variants, pipeline_env,  # noqa: E402
                          timed_run)

CLI = [sys.executable, str(REPO / "pipelines" / "run_pipeline.py"), "--providers", "shopify", "--quiet"]


def bench(size: int, reruns: int = 3) -> dict:
    sandbox = SandboxProcess(size)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env = pipeline_env(Path(tmp), sandbox)
            cpu_before = sandbox.cpu_seconds()
            run = timed_run(CLI, env)
            sandbox_cpu = sandbox.cpu_seconds() - cpu_before
            if run["exit"] != 0:
                raise SystemExit(f"pipeline exited {run['exit']}: {run['stderr'][-2000:]}")
            entry = last_run(Path(tmp))["providers"]["shopify"]
            size_bytes = parquet_bytes(Path(tmp))
            variants = parquet_variants(Path(tmp))
            if entry["written"] != size or variants != sandbox.info["variants"]:
                raise SystemExit(f"incomplete: {entry['written']} of {size} products, "
                                 f"{variants} of {sandbox.info['variants']} variants")
            walls = sorted(timed_run(CLI, env)["wall_s"] for _ in range(reruns))  # no-change reruns
            entry2 = last_run(Path(tmp))["providers"]["shopify"]
    finally:
        sandbox.stop()
    return {"n": size, "wall_s": run["wall_s"], "products_s": size / run["wall_s"], "requests": entry["requests"],
            "peak_rss_mb": run["peak_rss_mb"], "cpu_s": run["cpu_s"], "bytes": size_bytes, "rows": entry["written"],
            "variants": variants, "sandbox_cpu_s": sandbox_cpu, "rerun_requests": entry2["requests"],
            "rerun_rows": entry2["written"], "rerun_wall_s": walls[0], "rerun_walls": walls}


def main(sizes: list[int], reruns: int = 3) -> None:
    header = (f"{'N':>9} {'wall s':>8} {'prod/s':>8} {'requests':>8} {'peak RSS MB':>11} {'out MB':>7} {'rows':>9} "
              f"{'our CPU s':>9} {'sandbox CPU s':>13} {'variants (all)':>14} | "
              f"{'rerun req':>9} {'rerun rows':>10} {'rerun s':>7}")
    print(header)
    for size in sizes:
        r = bench(size, reruns)
        print(f"{r['n']:>9} {r['wall_s']:>8.1f} {r['products_s']:>8.0f} {r['requests']:>8} {r['peak_rss_mb']:>11.0f} "
              f"{r['bytes'] / 1e6:>7.1f} {r['rows']:>9} {r['cpu_s']:>9.1f} {r['sandbox_cpu_s']:>13.1f} "
              f"{r['variants']:>14} | {r['rerun_requests']:>9} {r['rerun_rows']:>10} {r['rerun_wall_s']:>7.2f}", flush=True)
        if reruns > 3:
            walls = r["rerun_walls"]
            print(f"{'':>9} no-change reruns: fastest {walls[0]:.2f} s, median {walls[len(walls) // 2]:.2f} s, "
                  f"slowest {walls[-1]:.2f} s of {len(walls)}", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    reruns = int(args.pop(args.index("--reruns") + 1)) if "--reruns" in args else 3
    args = [a for a in args if a != "--reruns"]
    main([int(a) for a in args] or [10_000, 100_000], reruns)

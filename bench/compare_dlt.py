"""Our pipeline against dlt on the same catalog and the same sandbox (a process of its own,
throttling off, the 1,000-point cap on), from the same run: products per second and peak RSS.

Usage: python bench/compare_dlt.py --dlt-python PATH [sizes...]
dlt runs twice, with its default writer settings and with buffer_max_items=100000; the faster counts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, SandboxProcess, last_run, pipeline_env, timed_run  # noqa: E402

OURS = [sys.executable, str(REPO / "pipelines" / "run_pipeline.py"), "--providers", "shopify", "--quiet"]
BUFFER_VARS = ("DATA_WRITER__BUFFER_MAX_ITEMS", "EXTRACT__DATA_WRITER__BUFFER_MAX_ITEMS",
               "NORMALIZE__DATA_WRITER__BUFFER_MAX_ITEMS")


def compare(size: int, dlt_python: str) -> dict:
    sandbox = SandboxProcess(size)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env = pipeline_env(Path(tmp) / "ours", sandbox)
            before = sandbox.cpu_seconds()
            ours = timed_run(OURS, env)
            ours["sandbox_cpu_s"] = sandbox.cpu_seconds() - before
            entry = last_run(Path(tmp) / "ours")["providers"]["shopify"]
            assert ours["exit"] == 0 and entry["written"] == size, ours["stderr"][-2000:]
            dlt_runs = {}
            for label, extra in (("default", {}), ("buffer 100000", {v: "100000" for v in BUFFER_VARS})):
                out = Path(tmp) / f"dlt-{label.replace(' ', '-')}"
                before = sandbox.cpu_seconds()
                run = timed_run([dlt_python, str(REPO / "bench" / "dlt_products.py"), str(out)], {**env, **extra})
                run["sandbox_cpu_s"] = sandbox.cpu_seconds() - before
                assert run["exit"] == 0, run["stderr"][-2000:]
                dlt_runs[label] = {**run, **json.loads(run["stdout"].strip().splitlines()[-1])}
    finally:
        sandbox.stop()
    best_label = min(dlt_runs, key=lambda k: dlt_runs[k]["wall_s"])
    best = dlt_runs[best_label]
    return {"n": size, "ours_s": ours["wall_s"], "ours_pps": size / ours["wall_s"], "ours_rss": ours["peak_rss_mb"],
            "ours_requests": entry["requests"], "ours_sandbox_cpu": ours["sandbox_cpu_s"],
            "dlt_sandbox_cpu": best["sandbox_cpu_s"], "dlt_config": best_label, "dlt_s": best["wall_s"],
            "dlt_pps": size / best["wall_s"], "dlt_rss": max(r["peak_rss_mb"] for r in dlt_runs.values()),
            "dlt_rss_best": best["peak_rss_mb"], "dlt_requests": best["requests"], "dlt_page": best["page_size"],
            "dlt_variants": best["variants"], "other": {k: round(v["wall_s"], 1) for k, v in dlt_runs.items()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dlt-python", required=True)
    parser.add_argument("sizes", nargs="*", type=int, default=[10_000, 100_000])
    args = parser.parse_args()
    print(f"{'N':>8} | {'ours prod/s':>11} {'RSS MB':>6} {'req':>5} {'sbx CPU s':>9} | {'dlt prod/s':>10} {'RSS MB':>6} "
          f"{'req':>6} {'page':>4} {'sbx CPU s':>9} {'config':>13} | {'speed x':>7} {'RSS ratio':>9}")
    for size in args.sizes:
        r = compare(size, os.path.abspath(args.dlt_python))  # runs from "/"; abspath keeps the venv's symlink
        print(f"{r['n']:>8} | {r['ours_pps']:>11.0f} {r['ours_rss']:>6.0f} {r['ours_requests']:>5} "
              f"{r['ours_sandbox_cpu']:>9.1f} | {r['dlt_pps']:>10.0f} {r['dlt_rss_best']:>6.0f} {r['dlt_requests']:>6} "
              f"{r['dlt_page']:>4} {r['dlt_sandbox_cpu']:>9.1f} {r['dlt_config']:>13} | "
              f"{r['ours_pps'] / r['dlt_pps']:>7.2f} {r['ours_rss'] / r['dlt_rss_best']:>9.2f}"
              f"   (dlt wall s by config: {r['other']}; dlt variants kept: {r['dlt_variants']})", flush=True)


if __name__ == "__main__":
    main()

"""Our pipeline against dlt on the same catalog (the rich one), from the same run: products per
second and peak RSS, against two servers.

- The sandbox, in a process of its own (throttling off, the 1,000-point cap on), one run each.
  On two cores the sandbox's CPU competes with the client's, so this ratio is the two clients'
  and the server's together.
- A replay server (bench/replay.py) answering each client's requests with the answers the sandbox
  gave them (recorded in a run of each client first), at almost no CPU: the clients' own speed.
  Best of --repeat runs each, as the machine may be shared.

Usage: python bench/compare_dlt.py --dlt-python PATH [--repeat 3] [sizes...]
dlt runs with its default writer settings and with buffer_max_items=100000; the faster counts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, ReplayProcess, SandboxProcess, last_run, pipeline_env, timed_run  # noqa: E402

OURS = [sys.executable, str(REPO / "pipelines" / "run_pipeline.py"), "--providers", "shopify", "--quiet"]
BUFFER_VARS = ("DATA_WRITER__BUFFER_MAX_ITEMS", "EXTRACT__DATA_WRITER__BUFFER_MAX_ITEMS",
               "NORMALIZE__DATA_WRITER__BUFFER_MAX_ITEMS")
DLT_CONFIGS = {"default": {}, "buffer 100000": {v: "100000" for v in BUFFER_VARS}}


def run_ours(server, root: Path, size: int) -> dict:
    before = server.cpu_seconds()
    run = timed_run(OURS, pipeline_env(root, server))
    run["server_cpu_s"] = server.cpu_seconds() - before
    entry = last_run(root)["providers"]["shopify"]
    assert run["exit"] == 0 and entry["written"] == size, (entry, run["stderr"][-2000:])
    return {**run, "requests": entry["requests"]}


def run_dlt(server, root: Path, size: int, dlt_python: str, extra: dict) -> dict:
    before = server.cpu_seconds()
    run = timed_run([dlt_python, str(REPO / "bench" / "dlt_products.py"), str(root)],
                    {**pipeline_env(root, server), **extra})
    run["server_cpu_s"] = server.cpu_seconds() - before
    assert run["exit"] == 0, run["stderr"][-2000:]
    stats = json.loads(run["stdout"].strip().splitlines()[-1])
    assert stats["products"] == size, stats
    return {**run, **stats}


def both(server, tmp: Path, size: int, dlt_python: str, repeat: int) -> dict:
    """Ours and dlt (each configuration), the fastest of `repeat` runs each, every run from scratch."""
    runs = {"ours": [], **{label: [] for label in DLT_CONFIGS}}
    for attempt in range(repeat):
        runs["ours"].append(run_ours(server, tmp / f"ours-{attempt}", size))
        for label, extra in DLT_CONFIGS.items():
            runs[label].append(run_dlt(server, tmp / f"dlt-{label.replace(' ', '-')}-{attempt}", size, dlt_python, extra))
    best = {name: min(results, key=lambda r: r["wall_s"]) for name, results in runs.items()}
    dlt_label = min(DLT_CONFIGS, key=lambda label: best[label]["wall_s"])
    return {"ours": best["ours"], "dlt": best[dlt_label], "dlt_config": dlt_label,
            "walls": {name: [round(r["wall_s"], 2) for r in results] for name, results in runs.items()}}


def compare(size: int, dlt_python: str, repeat: int) -> dict:
    sandbox = SandboxProcess(size)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            against_sandbox = both(sandbox, tmp / "sandbox", size, dlt_python, 1)
            recording = tmp / "recording"
            recorder = ReplayProcess("record", "--upstream", sandbox.info["base_url"], "--out", str(recording),
                                     token=sandbox.info["token"])
            try:
                run_ours(recorder, tmp / "record-ours", size)
                run_dlt(recorder, tmp / "record-dlt", size, dlt_python, {})
            finally:
                recorder.stop()
            sandbox.stop()
            player = ReplayProcess("serve", "--recording", str(recording), token=sandbox.info["token"])
            try:
                against_replay = both(player, tmp / "replay", size, dlt_python, repeat)
            finally:
                final = player.stop()
            assert final.get("misses") == 0, f"the replay server missed {final.get('misses')} requests"
    finally:
        if sandbox.proc.poll() is None:
            sandbox.stop()
    return {"n": size, "sandbox": against_sandbox, "replay": against_replay}


def row(size: int, server: str, r: dict) -> str:
    ours, dlt = r["ours"], r["dlt"]
    ours_pps, dlt_pps = size / ours["wall_s"], size / dlt["wall_s"]
    return (f"{size:>8} {server:>8} | {ours_pps:>11.0f} {ours['peak_rss_mb']:>6.0f} {ours['cpu_s']:>7.1f} "
            f"{ours['requests']:>5} {ours['server_cpu_s']:>9.1f} | {dlt_pps:>10.0f} {dlt['peak_rss_mb']:>6.0f} "
            f"{dlt['cpu_s']:>7.1f} {dlt['requests']:>6} {dlt['page_size']:>4} {dlt['server_cpu_s']:>9.1f} "
            f"{r['dlt_config']:>13} | {ours_pps / dlt_pps:>7.2f} {ours['peak_rss_mb'] / dlt['peak_rss_mb']:>9.2f}"
            f"   (wall s of each run: {r['walls']}; dlt variants kept: {dlt['variants']})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dlt-python", required=True)
    parser.add_argument("--repeat", type=int, default=3, help="runs against the replay server; the fastest counts")
    parser.add_argument("sizes", nargs="*", type=int, default=[20_000, 100_000])
    args = parser.parse_args()
    print(f"{'N':>8} {'server':>8} | {'ours prod/s':>11} {'RSS MB':>6} {'CPU s':>7} {'req':>5} {'srv CPU s':>9} | "
          f"{'dlt prod/s':>10} {'RSS MB':>6} {'CPU s':>7} {'req':>6} {'page':>4} {'srv CPU s':>9} {'config':>13} | "
          f"{'speed x':>7} {'RSS ratio':>9}")
    for size in args.sizes:
        r = compare(size, os.path.abspath(args.dlt_python), args.repeat)  # abspath keeps the venv's symlink
        print(row(size, "sandbox", r["sandbox"]), flush=True)
        print(row(size, "replay", r["replay"]), flush=True)


if __name__ == "__main__":
    main()

"""Two checkouts of the pipeline, run in turn against one replay recording: wall and CPU of each.

For a change too small to show against dlt's spread: both trees answer the same recorded catalog
(recorded once from the sandbox through bench/replay.py, with the first tree), and their runs
alternate, the order flipping each round, so a slower spell of a shared machine falls on both.

Usage: python bench/ab_replay.py [N] [ROUNDS] TREE_A TREE_B     (default 20000 products, 10 rounds)
  e.g. git worktree add /tmp/before HEAD~1 && python bench/ab_replay.py 20000 10 /tmp/before .
"""

from __future__ import annotations

import argparse
import compileall
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ReplayProcess, SandboxProcess, pipeline_env, timed_run  # noqa: E402


def command(tree: Path) -> list[str]:
    return [sys.executable, str(tree / "pipelines" / "run_pipeline.py"), "--providers", "shopify", "--quiet"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size", nargs="?", type=int, default=20_000)
    parser.add_argument("rounds", nargs="?", type=int, default=10)
    parser.add_argument("trees", nargs=2, type=lambda p: Path(p).resolve())
    args = parser.parse_args()
    for tree in args.trees:  # each tree's bytecode, as bench/common.py writes this one's
        for package in ("pipelines", "connectors", "normalize", "storage"):
            compileall.compile_dir(tree / package, quiet=2)
    sandbox = SandboxProcess(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        recorder = ReplayProcess("record", "--upstream", sandbox.info["base_url"], "--out", str(tmp / "recording"),
                                 token=sandbox.info["token"])
        try:
            subprocess.run(command(args.trees[0]), env=pipeline_env(tmp / "record", recorder), cwd="/", check=True,
                           capture_output=True)
        finally:
            recorder.stop()
            sandbox.stop()
        player = ReplayProcess("serve", "--recording", str(tmp / "recording"), token=sandbox.info["token"])
        runs: dict[Path, list[dict]] = {tree: [] for tree in args.trees}
        try:
            for n in range(args.rounds):
                for tree in args.trees if n % 2 == 0 else args.trees[::-1]:
                    root = tmp / "run"
                    run = timed_run(command(tree), pipeline_env(root, player))
                    if run["exit"] != 0:
                        sys.exit(f"{tree}: the pipeline exited {run['exit']}: {run['stderr'][-2000:]}")
                    runs[tree].append(run)
                    shutil.rmtree(root)
        finally:
            player.stop()
    print(f"{args.size:,} products against the replay server, {args.rounds} rounds in turn")
    for tree, done in runs.items():
        wall, cpu = [r["wall_s"] for r in done], [r["cpu_s"] for r in done]
        print(f"{str(tree):40s} wall median {statistics.median(wall):5.2f} s (fastest {min(wall):.2f}), "
              f"CPU median {statistics.median(cpu):5.2f} s, peak RSS {max(r['peak_rss_mb'] for r in done):.0f} MB")
        print(f"{'':40s} each run: {', '.join(f'{w:.2f}' for w in wall)}")


if __name__ == "__main__":
    main()

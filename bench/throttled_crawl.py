"""A crawl against a sandbox throttled at a real plan's figures (bucket 2000 points, restore
100/s), in real time. Target: wall time <= 1.10 x (C - 2000 + R) / 100 and no THROTTLED answer,
where C is the sum of the queries' actual costs and R the largest requested cost.

Usage: python bench/throttled_crawl.py [products]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, SandboxProcess, last_run, pipeline_env, timed_run  # noqa: E402


def main(size: int) -> None:
    sandbox = SandboxProcess(size, "--throttle", "--bucket", "2000", "--restore-rate", "100")
    with tempfile.TemporaryDirectory() as tmp:
        before = sandbox.cpu_seconds()
        run = timed_run([sys.executable, str(REPO / "pipelines" / "run_pipeline.py"), "--providers", "shopify", "--quiet"],
                        pipeline_env(Path(tmp), sandbox))
        entry = last_run(Path(tmp))["providers"]["shopify"]
        sandbox_cpu = sandbox.cpu_seconds() - before
    final = sandbox.stop()
    charged, largest = final["charged_cost"], final["max_requested"]
    ideal = (charged - 2000 + largest) / 100
    crawl = entry["duration_s"]
    print(f"products {size}  C={charged} points  R={largest}  ideal {(ideal):.1f}s  bound {1.1 * ideal:.1f}s  "
          f"crawl {crawl:.1f}s ({crawl / ideal:.3f} x ideal)  process wall {run['wall_s']:.1f}s  "
          f"THROTTLED answers {final['throttled']}  throttle wait {entry['throttle_wait_s']:.1f}s  "
          f"our CPU {run['cpu_s']:.1f}s  sandbox CPU {sandbox_cpu:.1f}s  "
          f"{'MET' if crawl <= 1.1 * ideal and final['throttled'] == 0 else 'NOT MET'}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 600)

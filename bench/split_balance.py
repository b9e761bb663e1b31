"""Where a split paging run's CPU goes: the run's threads and its worker process, against the
replay server (the clients' own work, as in compare_dlt.py).

The catalog is recorded once from the sandbox (one run of ours through the recorder), then the
pipeline runs `runs` times against the replay; while it runs, each process and thread of it is read
from /proc every 20 ms, and its last CPU figure (user + system) is printed with when it was last
seen. Linux only.

Usage: python bench/split_balance.py [N] [RUNS]     (default 100000, 3)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, ReplayProcess, SandboxProcess, pipeline_env  # noqa: E402

OURS = [sys.executable, str(REPO / "pipelines" / "run_pipeline.py"), "--providers", "shopify", "--quiet"]
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(path: str) -> tuple[str, int, float] | None:
    """(name, parent pid, CPU seconds) from a /proc stat file, None once it has gone."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return text[text.index("(") + 1:text.rindex(")")], int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def watched_run(env: dict) -> tuple[float, int, dict]:
    """Run the pipeline; (wall s, its pid, {(pid, tid): (name, CPU s, last seen s)}). Exits if it fails."""
    started = time.monotonic()
    errors = tempfile.TemporaryFile()
    proc = subprocess.Popen(OURS, env=env, cwd="/", stdout=subprocess.DEVNULL, stderr=errors)
    seen: dict = {}
    while proc.poll() is None:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            process = _stat(f"/proc/{pid}/stat")
            if process is None or proc.pid not in (int(pid), process[1]):
                continue
            try:
                threads = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in threads:
                thread = _stat(f"/proc/{pid}/task/{tid}/stat")
                if thread is not None:
                    seen[int(pid), int(tid)] = (thread[0], thread[2], time.monotonic() - started)
        time.sleep(0.02)
    if proc.returncode:
        errors.seek(0)
        sys.exit(f"the pipeline exited {proc.returncode}: {errors.read().decode()[-2000:]}")
    errors.close()
    return time.monotonic() - started, proc.pid, seen


def main(size: int, runs: int) -> None:
    sandbox = SandboxProcess(size)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        recorder = ReplayProcess("record", "--upstream", sandbox.info["base_url"], "--out", str(tmp / "recording"),
                                 token=sandbox.info["token"])
        try:
            subprocess.run(OURS, env=pipeline_env(tmp / "record", recorder), cwd="/", check=True, capture_output=True)
        finally:
            recorder.stop()
            sandbox.stop()
        player = ReplayProcess("serve", "--recording", str(tmp / "recording"), token=sandbox.info["token"])
        try:
            for n in range(runs):
                wall, run_pid, seen = watched_run(pipeline_env(tmp / f"run-{n}", player))
                print(f"run {n + 1}: {wall:.2f} s wall")
                for (pid, tid), (name, cpu, last) in sorted(seen.items()):
                    if cpu >= 0.05:
                        role = ("the run's main thread" if tid == pid == run_pid else "a thread of the run"
                                if pid == run_pid else "the worker process" if tid == pid else "a worker's thread")
                        print(f"  {role:24s} pid {pid:>7} tid {tid:>7}  CPU {cpu:6.2f} s  last seen at {last:6.2f} s")
        finally:
            player.stop()


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    main(*(args + [100_000, 3][len(args):]))

"""Render the HTML report of a made-up run history in headless Chromium: it must load with no
console error, show its three charts, and leave a screenshot to look at (bench/out/report.png).

Usage: python tools/check_report.py [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipelines.report import html_report  # noqa: E402

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]


def sample_history(runs: int = 24) -> list[dict]:
    """Four days of six-hourly runs with a spike, a drop to zero and a failure."""
    start = datetime(2026, 11, 20, tzinfo=timezone.utc)
    history = []
    for i in range(runs):
        when = start + timedelta(hours=6 * i)
        ebay_fetched = 0 if i == 18 else 1200 + (i % 5) * 20
        shopify_written = 900 if i == 12 else 5 + i % 4
        anomalies = []
        if i == 12:
            anomalies.append({"provider": "shopify", "signal": "written_spike", "value": 900, "median": 6, "threshold": 50})
        if i == 18:
            anomalies.append({"provider": "ebay", "signal": "fetched_drop", "value": 0, "median": 1240, "threshold": 413.3})
        history.append({
            "run_id": when.strftime("%Y%m%dT%H%M%SZ-") + f"{i:06x}", "started_at": when.isoformat(),
            "finished_at": (when + timedelta(seconds=40 + i)).isoformat(), "duration_s": 40.0 + (i % 6) * 7,
            "status": "failed" if i == 7 else "ok", "dry_run": False, "limited": False, "anomalies": anomalies,
            "providers": {
                "shopify": {"status": "ok", "fetched": 30 + i % 7, "written": shopify_written, "duplicates": 25, "quarantined": 0},
                "amazon": {"status": "failed" if i == 7 else "ok", "fetched": 88, "written": i % 3, "duplicates": 86, "quarantined": 1},
                "ebay": {"status": "ok", "fetched": ebay_fetched, "written": 30 + i % 9, "duplicates": 1170, "quarantined": 0},
            }})
    return history


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chromium", default="chromium")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    page = args.out / "report.html"
    page.write_text(html_report(sample_history()), encoding="utf-8")
    shot = args.out / "report.png"
    shot.unlink(missing_ok=True)
    problems = []
    with tempfile.TemporaryDirectory() as profile:
        common = [args.chromium, *FLAGS, f"--user-data-dir={profile}", "--window-size=900,1500"]
        dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
        snap = subprocess.run([*common, f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=120)
    for name, run in (("dump-dom", dom), ("screenshot", snap)):
        if run.returncode != 0:
            problems.append(f"chromium {name} exited {run.returncode}: {run.stderr[-500:]}")
        console = [line for line in run.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
        problems += [f"console: {line}" for line in console]
    if dom.stdout.count("<svg") != 3 or dom.stdout.count('class="anomaly"') != 2:
        problems.append("the rendered page lacks its three charts or two anomaly marks")
    if not shot.exists() or shot.stat().st_size < 10_000:
        problems.append("no screenshot was taken")
    for problem in problems:
        print(f"report check: {problem}")
    if not problems:
        print(f"report check: rendered in headless Chromium, 3 charts, 2 anomalies marked, no console error; "
              f"screenshot {shot}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

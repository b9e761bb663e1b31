"""Ready-to-paste scheduler entries for this checkout: `make crontab` prints the cron line.

Usage: python tools/schedule.py crontab [--every-hours 6] [--env-file PATH] [--logs-dir PATH]
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def crontab_line(repo: Path = REPO, python: Path | None = None, every_hours: int = 6,
                 env_file: Path | None = None, logs_dir: Path | None = None) -> str:
    """One crontab line: every `every_hours` hours, appending to logs/pipeline_YYYYMMDD.log.

    Cron runs it with `/bin/sh`, a bare environment and `$HOME` as the working directory; every path
    here is absolute, and cron's `%` (end of command) is escaped. Overlap is impossible: a run
    that finds a provider locked by the previous one skips it and exits 75.
    """
    python = python or repo / ".venv" / "bin" / "python"
    logs = logs_dir or repo / "logs"
    setting = f"PIPELINE_ENV_FILE={shlex.quote(str(env_file))} " if env_file else ""
    command = (f"mkdir -p {shlex.quote(str(logs))} && {setting}{shlex.quote(str(python))} "
               f"{shlex.quote(str(repo / 'pipelines' / 'run_pipeline.py'))} --verbose "
               f">> {shlex.quote(str(logs))}/pipeline_$(date +%Y%m%d).log 2>&1")
    return f"0 */{every_hours} * * * " + command.replace("%", r"\%")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=["crontab"])
    parser.add_argument("--every-hours", type=int, default=6)
    parser.add_argument("--env-file", type=Path)
    parser.add_argument("--logs-dir", type=Path)
    args = parser.parse_args(argv)
    print(crontab_line(every_hours=args.every_hours, env_file=args.env_file, logs_dir=args.logs_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

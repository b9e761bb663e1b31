"""How a process that may have loaded deltalake ends (see storage/delta.py): apart from it, so that
a process that never used Delta ends without importing pyarrow and the Delta writer to find out."""

from __future__ import annotations

import logging
import os
import sys


def end_process(code) -> None:
    """Exit with `code` (as SystemExit takes it). When deltalake is loaded, output is flushed and
    logging shut down, then the process ends without interpreter teardown, where delta-rs's runtime
    can abort a finished run (rc 134) and a scheduler would mark it failed."""
    if "deltalake" not in sys.modules:
        raise SystemExit(code)
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)

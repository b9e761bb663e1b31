"""How a process that may have loaded deltalake ends (see storage/delta.py): apart from it, so that
a process that never used Delta ends without importing pyarrow and the Delta writer to find out."""

from __future__ import annotations

import gc
import logging
import os
import sys


def end_process(code) -> None:
    """Exit with `code` (as SystemExit takes it). When deltalake is loaded, output is flushed and
    logging shut down, then the process ends without interpreter teardown, where delta-rs's runtime
    can abort a finished run (rc 134) and a scheduler would mark it failed."""
    if "deltalake" not in sys.modules:
        # The run is over and has closed what it wrote: the collector's passes over every object
        # during teardown only cost time (60 to 100 ms of a 0.6 s no-change run, bench/bench.py).
        # Frozen objects are still freed by reference counting; cycles are left to the OS.
        gc.freeze()
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

"""Named crash points for the crash-safety tests: PIPELINE_CRASH_AT=<name> SIGKILLs the process there.

Unset (always, outside those tests) each call is one dictionary lookup. SIGKILL, not an exception:
nothing gets to clean up, exactly as when the machine loses power or the OOM killer strikes.
"""

from __future__ import annotations

import os
import signal

POINTS = ("after_fetch", "mid_tmp_write", "after_fsync", "after_rename", "between_files",
          "before_runlog", "during_runlog")
# Reached only by a run into a Delta table (tests/test_lake_crash.py): the rows spooled and the
# lease marked as committing, nothing appended yet; the commit made, the state not yet written.
DELTA_POINTS = ("before_delta_commit", "between_data_and_state")
# Reached in a worker process reading a bulk result (pipelines/bulk_split.py; tests/test_bulk_split.py)
# or normalizing a paged crawl's batches (pipelines/paging_split.py; tests/test_paging_split.py).
WORKER_POINTS = ("in_bulk_worker", "in_paging_worker", "paging_worker_start")


def armed(name: str) -> bool:
    return os.environ.get("PIPELINE_CRASH_AT") == name


def crash_point(name: str) -> None:
    if armed(name):
        os.kill(os.getpid(), signal.SIGKILL)

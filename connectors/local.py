"""A connector's word to whatever pulls its records: from here on they come from local disk.

A run pulls records in a worker thread, so that the provider prepares its next page while this
process normalizes the last one. Records read from a downloaded file (a bulk operation's result)
gain nothing from that thread, and two threads computing on two cores pay for every record that
crosses between them (on the bulk path: 71 against 88-103 us of CPU a product, bench/bulk.py). The
mark is per thread; the puller in that thread reads it (pipelines/stages.py, Prefetch).
"""

from __future__ import annotations

import threading

_marks = threading.local()


def mark_local() -> None:
    """Say, from inside a generator of records, that the records it yields next come from local disk."""
    _marks.local = True


def marked_local() -> bool:
    """True once a generator running in this thread has called mark_local()."""
    return getattr(_marks, "local", False)

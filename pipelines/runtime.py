"""What a run takes from the world (the clock, sleep, the time of day), which tests inject their own
of. Apart from pipelines/run.py so that the command line can name it without loading the run."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone


@dataclass
class Runtime:
    """What tests inject instead of the real clock and sleep."""

    sleep: object = time.sleep
    clock: object = time.monotonic
    now: object = lambda: datetime.now(timezone.utc)

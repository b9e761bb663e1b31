"""A daily call budget shared by workers on several machines (an eBay keyset's searches), counted
in the destination: `_state/counters/<name>` holds {"date": "YYYY-MM-DD", "reserved": N}.

A worker reserves a block of calls with one conditional write (If-Match on the ETag it read, or
put-if-absent for the day's first) and spends it locally, so the store sees one write per block,
not one per API call. What a worker leaves unspent it gives back at the end (another conditional
write); a worker that dies keeps its block reserved until the UTC day ends, so the budget is
never exceeded, only, after a crash, under-used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date

from storage.lake.objects import PreconditionFailed, StoreError
from storage.paths import counter_name

log = logging.getLogger("pipeline.lake")
BLOCK = 25
ATTEMPTS = 20


class ReservedCallBudget:
    def __init__(self, objects, file_name: str, limit: int, today: Callable[[], date], block: int = BLOCK):
        self.objects, self.name, self.limit, self.today, self.block = objects, counter_name(file_name), limit, today, block
        self.left, self.day = 0, None  # calls reserved but not spent yet, and their day

    def spend(self) -> bool:
        """Count one call; False (nothing counted) when today's budget is used up everywhere."""
        day = self.today().isoformat()
        if self.day != day:
            self.left, self.day = 0, day  # a block is good for the day it was reserved on
        if self.left == 0 and not self._reserve(day):
            return False
        self.left -= 1
        return True

    def spent(self) -> int:
        """Calls reserved today across every worker (an upper bound of calls made)."""
        document, _, _ = self.objects.read_document(self.name)
        return int(document["reserved"]) if document and document.get("date") == self.today().isoformat() else 0

    def _reserve(self, day: str) -> bool:
        for _ in range(ATTEMPTS):
            document, etag, _ = self.objects.read_document(self.name)
            reserved = int(document["reserved"]) if document and document.get("date") == day else 0
            size = min(self.block, self.limit - reserved)
            if size <= 0:
                return False
            try:
                self.objects.write_document(self.name, {"date": day, "reserved": reserved + size}, etag=etag)
            except PreconditionFailed:  # another worker reserved meanwhile: read again
                continue
            self.left = size
            return True
        raise StoreError(f"could not reserve calls in {self.objects.location.uri(self.name)}: "
                         f"{ATTEMPTS} conflicting writers in a row")

    def give_back(self) -> None:
        """Return the calls reserved and not spent (best effort: kept reserved if it fails)."""
        day, left, self.left = self.day, self.left, 0
        if not left or day != self.today().isoformat():
            return
        try:
            for _ in range(ATTEMPTS):
                document, etag, _ = self.objects.read_document(self.name)
                if not document or document.get("date") != day:
                    return
                try:
                    reserved = max(0, int(document["reserved"]) - left)
                    self.objects.write_document(self.name, {"date": day, "reserved": reserved}, etag=etag)
                    return
                except PreconditionFailed:
                    continue
        except StoreError as exc:
            log.warning("could not give back %d reserved calls to %s: %s", left, self.name, exc)


class ObjectCounters:
    """The destination's shared counters, as the connectors ask for them (`daily_budget`)."""

    def __init__(self, objects):
        self.objects, self.budgets = objects, []

    def daily_budget(self, file_name: str, limit: int, today: Callable[[], date]) -> ReservedCallBudget:
        budget = ReservedCallBudget(self.objects, file_name, limit, today)
        self.budgets.append(budget)
        return budget

    def close(self) -> None:
        for budget in self.budgets:
            budget.give_back()

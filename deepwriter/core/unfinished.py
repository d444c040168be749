"""Items a stage could not finish because model calls failed for reasons of infrastructure.

A failed call (a server down, a timeout after every retry) is never a verdict: the item it belonged
to is left out of the stage's records, counted here, and the stage ends with UnfinishedError, so its
output stays unfinished and a re-run (same command) does exactly the missing items.
`max_share` (the stage's `max_unfinished_share`, default 0) lets a stage finish with at most that
share of its items unfinished; they are then listed in its manifest.

Once more items are unfinished than the budget allows, `over_budget()` turns true and the stage stops
starting new work: a fleet that is down would otherwise cost every remaining item its full retries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List

from deepwriter.core.errors import UnfinishedError

LISTED_IDS = 1000  # the manifest lists at most this many unfinished ids (the count is always exact)


@dataclass
class Unfinished:
    stage: str
    what: str  # "pairs", "answers", "items": how the stage counts its work
    total: int
    max_share: float = 0.0
    ids: List[str] = field(default_factory=list)
    last_error: str = ""

    @property
    def allowed(self) -> int:
        return math.floor(self.max_share * self.total + 1e-9)

    def add(self, item_id: str, error: str) -> None:
        self.ids.append(item_id)
        self.last_error = error or self.last_error

    def over_budget(self) -> bool:
        return len(self.ids) > self.allowed

    def check(self, not_started: int = 0) -> None:
        """Raise UnfinishedError when the failed items plus those never started exceed the budget.
        Items never started count as unfinished too (they are done by the re-run)."""
        count = len(self.ids) + not_started
        if count and (count > self.allowed or not_started):
            raise UnfinishedError(self.stage, self.what, count, self.total, self.last_error or "no error recorded")

    def as_dict(self) -> Dict[str, Any]:
        return {
            "count": len(self.ids),
            "total": self.total,
            "max_share": self.max_share,
            "ids": self.ids[:LISTED_IDS],
            "last_error": self.last_error,
        }

"""The simulation's clock: the ledger's ``clock=``, moved by the simulation only."""

from __future__ import annotations

import threading
from datetime import date, datetime, time
from zoneinfo import ZoneInfo


class SimulationClock:
    """An injectable clock that stands still until the simulation moves it, never backwards.

    Station threads of a concurrent run read it while the main thread holds it at the phase
    of the day they work in; moving it is guarded by a lock.
    """

    def __init__(self, now: datetime) -> None:
        if now.utcoffset() is None:
            raise ValueError("the simulation clock needs a timezone-aware datetime")
        self._now = now
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        return self._now

    @property
    def now(self) -> datetime:
        return self._now

    def move_to(self, moment: datetime) -> datetime:
        """Move to ``moment`` (a moment earlier than now leaves the clock where it is)."""
        with self._lock:
            self._now = max(self._now, moment)
            return self._now

    def at(self, day: date, hour: int, minute: int = 0, *, zone: ZoneInfo) -> datetime:
        """Move to ``hour``:``minute`` of ``day`` in ``zone``."""
        return self.move_to(datetime.combine(day, time(hour, minute), zone))

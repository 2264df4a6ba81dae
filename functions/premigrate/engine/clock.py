"""Time, for the engine: a clock to read and wait on, and the time budget a caller may give a run.

Production uses the system's clock; tests script one, so that no timing rule depends on how busy the
machine is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def sleep(self, seconds: float, wake: Callable[[float], bool] | None = None) -> None:
        """Let ``seconds`` pass. ``wake``, when given, does the waiting instead: it blocks at most the
        seconds it is given and returns True when something ended the wait early."""
        ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float, wake: Callable[[float], bool] | None = None) -> None:
        if wake is None:
            time.sleep(seconds)
        else:
            wake(seconds)


SYSTEM_CLOCK = SystemClock()


def ms_since(clock: Clock, started: float) -> float:
    return round((clock.monotonic() - started) * 1000, 1)


@dataclass(frozen=True)
class TimeBudget:
    """The seconds a caller may still run (a Lambda's remaining time), less a safety margin.

    No migration starts within the margin of the end, and the server cancels a running statement (rolling
    its migration back) half-way through it: a migration started just before the margin still gets time,
    and the caller is never killed mid-statement. Without ``time_left`` there is no limit."""

    time_left: Callable[[], float] | None
    margin_seconds: float

    def remaining(self) -> float:
        """Seconds before the margin; infinite without a budget, negative once inside the margin."""
        if self.time_left is None:
            return float("inf")
        return self.time_left() - self.margin_seconds

    def statement_timeout_ms(self, configured_seconds: float) -> int:
        """The statement_timeout to set, in ms (0 = none): the configured one (0 = none), capped by the budget."""
        limit = configured_seconds or float("inf")
        if self.time_left is not None:
            limit = min(limit, self.remaining() + self.margin_seconds / 2)
        return 0 if limit == float("inf") else max(round(limit * 1000), 100)

"""The shape of a fleet rollout, without any database: waves in order (wave 0 the canary), a failure budget
per wave, and a scheduler that keeps at most N runs going, at most M on one database server, and stops
starting new ones once a wave has failed more than it may.

The local runner (``premigrate fleet``) and the Step Functions state machine follow the same rules.
"""

from __future__ import annotations

import enum
import math
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field

from premigrate.fleet.manifest import Target

MAX_FAILED_LISTED = 50
"""The summary names at most this many failed databases (the rest are counted): it stays small whatever
the fleet's size (Step Functions caps a state's output at 256 KiB)."""


class Status(enum.StrEnum):
    MIGRATED = "migrated"
    UP_TO_DATE = "up-to-date"
    PLANNED = "planned"
    """A dry run: what the database would get."""
    FAILED = "failed"
    INVALID = "invalid"
    """Plan found a problem (validation, connection): the rollout stops before any change."""
    NOT_STARTED = "not-started"


@dataclass(frozen=True)
class Outcome:
    name: str
    wave: int
    status: Status
    applied: int = 0
    pending: int = 0
    error: str | None = None


@dataclass(frozen=True)
class RolloutOptions:
    concurrency: int = 8
    per_server: int = 2
    tolerated_failure_percentage: float = 0.0
    """For every wave but the canary, which tolerates none."""


@dataclass
class Summary:
    outcomes: list[Outcome] = field(default_factory=list)
    stopped: str | None = None
    """Why the rollout stopped early, if it did."""

    @property
    def ok(self) -> bool:
        done = (Status.MIGRATED, Status.UP_TO_DATE, Status.PLANNED)
        return self.stopped is None and all(outcome.status in done for outcome in self.outcomes)

    def counts(self) -> dict[str, int]:
        counted = Counter(outcome.status.value for outcome in self.outcomes)
        return {status.value: counted[status.value] for status in Status if counted[status.value]}

    def to_dict(self) -> dict[str, object]:
        failed = [o for o in self.outcomes if o.status in (Status.FAILED, Status.INVALID)]
        return {
            "ok": self.ok,
            "databases": len(self.outcomes),
            "counts": self.counts(),
            "stopped": self.stopped,
            "failed": [asdict(o) for o in failed[:MAX_FAILED_LISTED]],
            "failed_not_listed": max(len(failed) - MAX_FAILED_LISTED, 0),
        }


def waves(targets: Sequence[Target]) -> list[tuple[int, list[Target]]]:
    numbers = sorted({target.wave for target in targets})
    return [(number, [t for t in targets if t.wave == number]) for number in numbers]


def failure_budget(size: int, percentage: float) -> int:
    """How many of a wave's databases may fail before it stops starting others."""
    return math.floor(size * percentage / 100)


def run_limited(
    targets: Sequence[Target],
    work: Callable[[Target], Outcome],
    options: RolloutOptions,
    tolerated_failures: int,
) -> list[Outcome]:
    """``work`` on each target, at most ``concurrency`` at once and ``per_server`` on one server; once more
    than ``tolerated_failures`` failed, none is started any more (the running ones finish), and the rest
    are NOT_STARTED. ``work`` never raises: it reports a failure as an Outcome."""
    outcomes: list[Outcome] = []
    waiting = _ServerQueues(targets, options.per_server)
    running: dict[Future[Outcome], Target] = {}
    failures = 0
    with ThreadPoolExecutor(max_workers=max(options.concurrency, 1)) as pool:
        while True:
            while failures <= tolerated_failures and len(running) < options.concurrency:
                target = waiting.next_startable()
                if target is None:
                    break
                running[pool.submit(work, target)] = target
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                waiting.finished(running.pop(future))
                outcomes.append(future.result())
                failures += outcomes[-1].status in (Status.FAILED, Status.INVALID)
    outcomes += [Outcome(target.name, target.wave, Status.NOT_STARTED) for target in waiting.left()]
    return outcomes


class _ServerQueues:
    """The targets not started yet, by server, and which servers may start one more: each step is O(1),
    so ten thousand databases schedule as quickly as ten."""

    def __init__(self, targets: Sequence[Target], per_server: int) -> None:
        self.per_server = max(per_server, 1)
        self.queues: dict[str, deque[Target]] = {}
        for target in targets:
            self.queues.setdefault(target.server_key, deque()).append(target)
        self.running: Counter[str] = Counter()
        self.startable: deque[str] = deque(self.queues)

    def next_startable(self) -> Target | None:
        while self.startable:
            server = self.startable.popleft()
            queue = self.queues.get(server)
            if not queue or self.running[server] >= self.per_server:
                continue  # emptied or full since it was queued: finished() queues it again
            self.running[server] += 1
            if self.running[server] < self.per_server and len(queue) > 1:
                self.startable.append(server)
            return queue.popleft()
        return None

    def finished(self, target: Target) -> None:
        server = target.server_key
        self.running[server] -= 1
        if self.queues.get(server) and self.running[server] == self.per_server - 1:
            self.startable.append(server)

    def left(self) -> list[Target]:
        return [target for queue in self.queues.values() for target in queue]

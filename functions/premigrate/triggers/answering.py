"""What CloudFormation and CodePipeline share: a caller that waits for exactly one answer, which must
arrive before the function is killed, whatever the run is doing.

- ``SingleAnswer``: the run's own answer or the timeout guard's, whichever comes first; never both.
- ``timeout_guard``: answers FAILED shortly before the function's end, and keeps the function alive
  while that answer is on its way (Lambda freezes a process whose handler returned, mid-request).
- ``send_within``: a few tries of a send, each bounded by the time the function has left.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

GUARD_MARGIN_SECONDS = 12.0
"""The guard answers this long before the function would be killed: more than one send try
(``TRY_TIMEOUT_SECONDS``), so a slow first try still leaves time for a second."""
TRY_TIMEOUT_SECONDS = 5.0
_RESERVE_SECONDS = 1.0
"""Time left untouched at the end, for the handler to return and log."""
_MAX_TRIES = 4


class SingleAnswer:
    """Gives one answer through ``send``; later ones (the guard racing the run) are dropped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.given: object | None = None

    def claim(self, answer: object) -> bool:
        """True for the first answer, which the caller then sends; False once one was claimed."""
        with self._lock:
            if self.given is not None:
                return False
            self.given = answer
            return True


@contextmanager
def timeout_guard(time_left: Callable[[], float], answer_failed: Callable[[], object]) -> Iterator[None]:
    """Runs the body; if the function nears its end first, ``answer_failed`` is called from a timer.

    On the way out the timer is cancelled, and an answer it is sending is waited for (within the time
    left), so the process is not frozen with the request half-sent."""
    timer = threading.Timer(max(time_left() - GUARD_MARGIN_SECONDS, 0.0), answer_failed)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join(timeout=max(time_left() - _RESERVE_SECONDS, 0.0))


def send_within(
    try_once: Callable[[float], str | None],
    time_left: Callable[[], float],
    *,
    sleep: Callable[[float], None] = time.sleep,
    on_failure: Callable[[int, str], None] = lambda attempt, problem: None,
) -> bool:
    """Calls ``try_once(timeout)`` until it returns None (sent), at most a few times, with growing
    pauses; each try's timeout and each pause fit in the time left. Returns whether it was sent."""
    for attempt in range(1, _MAX_TRIES + 1):
        available = time_left() - _RESERVE_SECONDS
        if available <= 0:
            break
        problem = try_once(min(TRY_TIMEOUT_SECONDS, available))
        if problem is None:
            return True
        on_failure(attempt, problem)
        pause = 0.5 * 2 ** (attempt - 1)
        if attempt == _MAX_TRIES or time_left() - _RESERVE_SECONDS <= pause:
            break
        sleep(pause)
    return False

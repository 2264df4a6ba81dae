"""Ctrl-C and SIGTERM for the command line (a CI job cancelled, an instance stopping).

During a run, the first signal cancels the running statement on the server, so the migration lock and
table locks are released at once, and the run stops before its next statement; outside a run (starting
the embedded server, `premigrate invoke`) it ends the command where it is. A second signal exits at once:
the server then ends the session and rolls back what was open.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from premigrate.service import Service


class Interrupted(BaseException):
    """A signal arrived while no run could be cancelled; a BaseException, so no handler of errors takes it."""


class Interruptions:
    def __init__(self) -> None:
        self.service: Service | None = None
        """The run to cancel, while one runs."""
        self.signal_name: str | None = None
        self.exit_code = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interruptions:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signal_name is not None:
            print("error: interrupted again: exiting at once", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum
        if self.service is None:
            raise Interrupted
        self.service.cancel()

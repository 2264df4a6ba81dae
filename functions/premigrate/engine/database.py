"""The database port: what the engine asks of a PostgreSQL session, and nothing of any driver.

Drivers are dumb: an implementation translates, it decides nothing about migrations. Every implementation
passes ``tests/test_database_contract.py``; the contract of each method is written beside it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from premigrate.engine.report import Report

LOCK_NOT_AVAILABLE = "55P03"
IN_FAILED_TRANSACTION = "25P02"
READ_ONLY_TRANSACTION = "25006"


class ServerError(Exception):
    """The server refused a statement (an ErrorResponse); the session is still usable.

    ``position`` is the server's 1-based character position in the submitted text, when it gave one."""

    report: Report | None = None
    """What the run had done when this reached the engine's caller (set by the engine)."""

    def __init__(
        self,
        sqlstate: str,
        message: str,
        *,
        position: int | None = None,
        detail: str | None = None,
        hint: str | None = None,
        context: str | None = None,
    ) -> None:
        super().__init__(f"ERROR {sqlstate}: {message}")
        self.sqlstate = sqlstate
        self.message = message
        self.position = position
        self.detail = detail
        self.hint = hint
        self.context = context


class ConnectionLostError(Exception):
    """The session is gone (terminated, server restarted or failed over, network dropped); the connection
    cannot be used again. ``reason`` is the server's own last word when it said why (a FATAL error)."""

    report: Report | None = None
    """What the run had done when this reached the engine's caller (set by the engine)."""

    def __init__(self, description: str, reason: ServerError | None = None) -> None:
        super().__init__(description)
        self.reason = reason


class Database(Protocol):
    """One PostgreSQL session."""

    def run(self, sql: str, **params: Any) -> list[list[Any]]:
        """Run SQL and return the rows its statements return, in order (``[]`` when none returns rows).

        With no parameters ``sql`` may hold several statements, sent as one simple-protocol query: they run
        in one implicit transaction unless the text has its own BEGIN/COMMIT, exactly as psql would send
        them. With parameters ``sql`` is one statement whose ``:name`` placeholders are bound to ``params``.

        Raises ServerError when the server refuses (the session stays usable; an open transaction is then
        aborted, as PostgreSQL does), ConnectionLostError when the session is gone. Nothing else."""
        ...

    def close(self) -> None:
        """End the session. Never raises, also when the server has ended it already."""
        ...

    def wait_for_notification(self, seconds: float) -> bool:
        """Block until the server notifies this session on a channel it LISTENs to, or ``seconds`` pass:
        True when a notification came, False when the time passed. One that a ``run`` read meanwhile counts
        once, at the next call; one not read yet keeps the wait ending at once until a ``run`` reads it, so
        a caller runs something between waits. Never raises: a lost session shows at the next ``run``, and
        a session that cannot be waited on waits out the seconds."""
        ...

    def cancel(self) -> None:
        """Ask the server to cancel the statement this session is running (it then fails with ServerError
        57014). Callable from another thread or a signal handler while ``run`` waits; bounded in time; never
        raises; does nothing when no statement runs."""
        ...

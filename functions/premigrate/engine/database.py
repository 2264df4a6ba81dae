"""What the engine needs from a database connection, and how it reads the driver's errors.

The engine talks to PostgreSQL through anything with pg8000.native's ``run``: a real connection in
production and tests alike (tests use real servers, never a fake).
"""

from __future__ import annotations

from typing import Any, Protocol

from pg8000.exceptions import DatabaseError, InterfaceError

LOCK_NOT_AVAILABLE = "55P03"
IN_FAILED_TRANSACTION = "25P02"


class Database(Protocol):
    def run(self, sql: str, **params: Any) -> list[list[Any]] | None:
        """Run SQL: with no parameters a whole script (simple query protocol), with them one statement."""


# What a broken connection raises: the server went away, the socket timed out or was closed
# (pg8000 raises InterfaceError or lets the socket's OSError through, TimeoutError included).
CONNECTION_LOST = (InterfaceError, OSError)


def server_error(error: BaseException) -> dict[str, str]:
    """The fields of a server error (C = SQLSTATE, M = message, P = position, D, H, W); empty if not one.

    When the server ends a session (a refused login, pg_terminate_backend, a shutdown) it says why and
    closes the socket; pg8000's own clean-up write then fails, and its "network error" hides the server's
    reason in ``__context__``, where it is looked for too."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, DatabaseError) and seen.args and isinstance(seen.args[0], dict):
            return {str(key): str(value) for key, value in seen.args[0].items()}
        seen = seen.__context__
    return {}


def sqlstate(error: BaseException) -> str | None:
    return server_error(error).get("C")

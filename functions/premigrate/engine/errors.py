"""Errors the engine raises on purpose. ``str(error)`` is a message for a person: what went wrong,
where, and what to do. Adapters map the classes to exit codes or caller responses."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from premigrate.engine.report import Report


class PremigrateError(Exception):
    """Base class. ``report`` holds what was done before the error, when anything was."""

    report: Report | None = None


class ConfigurationError(PremigrateError):
    """Settings, connection or environment are wrong; nothing was attempted."""


class ScriptSyntaxError(PremigrateError):
    """A script cannot be split into statements; ``offset`` is where the problem starts."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


class ProblemsError(PremigrateError):
    """Several independent problems, all listed so they can be fixed in one go."""

    headline = "problems found"

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{self.headline}:\n" + "\n".join(f"  - {p}" for p in problems))


class MigrationSetError(ProblemsError):
    """The migrations folder holds files that cannot be used; nothing was applied."""

    headline = "the migration set cannot be used (nothing was applied)"


class ValidationError(ProblemsError):
    """The database's history and the migration set disagree; nothing was applied."""

    headline = "validation failed (nothing was applied)"


class LockNotAcquiredError(PremigrateError):
    """Another run held the migration lock for longer than the lock wait limit."""


class RunStoppedError(PremigrateError):
    """The run stopped after a migration that is applied and recorded; a next run continues."""


class LockLostError(RunStoppedError):
    """A migration released the migration lock itself; the run stops before another could get in."""


class MigrationFailedError(PremigrateError):
    """A statement of a migration failed; the message names the file, line, column and SQL error."""

    def __init__(
        self,
        message: str,
        *,
        script: str,
        line: int | None = None,
        column: int | None = None,
        sqlstate: str | None = None,
    ) -> None:
        super().__init__(message)
        self.script = script
        self.line = line
        self.column = column
        self.sqlstate = sqlstate


def read_only_database() -> ConfigurationError:
    """What a read-only endpoint gets, whichever statement of premigrate's own it refused first."""
    return ConfigurationError(
        "the database is read-only (transaction_read_only is on: a replica, or a reader endpoint): "
        "connect to the writer endpoint"
    )

"""What a run comes to, the same for every front door: a Result, and the one map from an error to its
category and exit code."""

from __future__ import annotations

import enum
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from premigrate.engine import ConfigurationError, LockNotAcquiredError, MigrationFailedError, PremigrateError, Report
from premigrate.engine.database import READ_ONLY_TRANSACTION, ConnectionLostError, ServerError
from premigrate.engine.errors import RunStoppedError, read_only_database


class Category(enum.StrEnum):
    """What kind of failure, the same from every front door."""

    CONFIGURATION = "configuration"
    """Settings, connection or environment are wrong; nothing was attempted."""
    VALIDATION = "validation"
    """The migration set or the history refuses the run; nothing was applied."""
    MIGRATION = "migration"
    """A migration failed; the message names file, line and SQL error."""
    DATABASE = "database"
    """The database refused something premigrate itself needed (a permission, a read-only endpoint)."""
    LOCK = "lock"
    """Another run held the migration lock for longer than the lock wait."""
    UNSAFE = "unsafe"
    """``premigrate check`` measured an error-level finding that no allow directive acknowledges."""
    NOT_READY = "not-ready"
    """``premigrate ready``: the database lacks a migration the instance's code needs (after the wait)."""
    INTERNAL = "internal"
    """A bug in premigrate."""


EXIT_CODES = {
    None: 0,
    Category.VALIDATION: 1,
    Category.MIGRATION: 1,
    Category.DATABASE: 1,
    Category.CONFIGURATION: 2,
    Category.LOCK: 3,
    Category.UNSAFE: 4,
    Category.NOT_READY: 5,
    Category.INTERNAL: 70,
}


@dataclass
class Result:
    ok: bool
    report: Report | None = None
    error: str | None = None
    error_kind: Category | None = None
    replayed: bool = False

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.error_kind]

    @property
    def stopped_for_time(self) -> bool:
        return bool(self.report and self.report.stopped_for_time)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"ok": self.ok, "replayed": self.replayed}
        if self.report is not None:
            data["report"] = self.report.to_dict()
        if self.error is not None:
            data.update(error=self.error, error_kind=str(self.error_kind))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        report = data.get("report")
        kind = data.get("error_kind")
        return cls(
            ok=bool(data.get("ok")),
            report=Report.from_dict(report) if isinstance(report, dict) else None,
            error=data.get("error"),
            error_kind=Category(kind) if kind else None,
        )


def categorize(error: Exception) -> tuple[Category, str]:
    """The one map from an error to its category and the message a person reads."""
    if isinstance(error, LockNotAcquiredError):
        return Category.LOCK, str(error)
    if isinstance(error, ConfigurationError):
        return Category.CONFIGURATION, str(error)
    if isinstance(error, MigrationFailedError | RunStoppedError):
        return Category.MIGRATION, str(error)
    if isinstance(error, PremigrateError):
        return Category.VALIDATION, str(error)
    if isinstance(error, ConnectionLostError):
        return (
            Category.CONFIGURATION,
            f"the connection to the database was lost ({error}); check the server and run again",
        )
    if isinstance(error, ServerError) and error.sqlstate == READ_ONLY_TRANSACTION:
        return categorize(read_only_database())
    if isinstance(error, ServerError):
        return Category.DATABASE, f"the database refused an operation premigrate needs: {error}"
    return Category.INTERNAL, (
        f"unexpected error ({type(error).__name__} at {_where(error)}): a premigrate bug; please report it with "
        "this line (the Lambda function's log has the whole traceback)"
    )


def _where(error: BaseException) -> str:
    """File and line the error came from: enough for a bug report, without printing values (secrets)."""
    frames = traceback.extract_tb(error.__traceback__)
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "an unknown place"


def failure(error: Exception) -> Result:
    kind, message = categorize(error)
    report = error.report if isinstance(error, PremigrateError | ServerError | ConnectionLostError) else None
    return Result(False, report=report, error=message, error_kind=kind)

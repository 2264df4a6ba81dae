"""The application service: one place where a use case runs, whichever front door asked.

    >>> result = Service(load_config("cli")).run(Request("plan"))
    >>> result.ok, result.exit_code, result.report.pending

It loads the migrations, connects (``connecting``), runs one engine action, records the run in the
ledger when the caller has a request id, and maps every error to one category and exit code. It never
raises for anything a person can fix: the Result says what happened.
"""

from __future__ import annotations

import enum
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from premigrate.adapters.folder import load_folder
from premigrate.engine import (
    ConfigurationError,
    Engine,
    LockNotAcquiredError,
    MigrationFailedError,
    MigrationSet,
    PremigrateError,
    Report,
)
from premigrate.engine.clock import SYSTEM_CLOCK, Clock, TimeBudget
from premigrate.engine.database import READ_ONLY_TRANSACTION, ConnectionLostError, Database, ServerError
from premigrate.engine.errors import RunStoppedError, read_only_database
from premigrate.engine.ledger import RunLedger
from premigrate.service.connecting import describe_database, open_database
from premigrate.service.observer import Observer
from premigrate.service.settings import Config, resolve_path

ACTIONS = ("plan", "validate", "status", "migrate", "baseline", "repair")
_LEDGERED = ("migrate", "baseline", "repair")
"""Actions that change the database: recorded in the run ledger, and replayed when delivered again. The
read-only ones write nothing, so they work on a read-only endpoint too."""


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
    INTERNAL = "internal"
    """A bug in premigrate."""


EXIT_CODES = {
    None: 0,
    Category.VALIDATION: 1,
    Category.MIGRATION: 1,
    Category.DATABASE: 1,
    Category.CONFIGURATION: 2,
    Category.LOCK: 3,
    Category.INTERNAL: 70,
}


@dataclass(frozen=True)
class Request:
    action: str
    """One of ACTIONS."""
    caller: str = "cli"
    request_id: str | None = None
    """With an id the run is recorded in the run ledger, and the same id delivered again replays it."""
    baseline_version: str | None = None
    load_migrations: Callable[[], MigrationSet] | None = None
    """Where the migrations come from (an artifact, say); None: the configured folder."""


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


class Service:
    def __init__(
        self,
        config: Config,
        *,
        observer: Observer | None = None,
        time_left: Callable[[], float] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        base_dir: str | None = None,
    ) -> None:
        """``time_left``: seconds the caller may still run (a Lambda's remaining time), None for no limit;
        ``base_dir``: what a relative migrations folder is relative to (the Lambda's code)."""
        self.config = config
        self.observer = observer or Observer()
        self.time_left = time_left
        self.clock = clock
        self.base_dir = base_dir
        self._database: Database | None = None
        self._cancelled = False

    def cancel(self) -> None:
        """Stop the run, from another thread or a signal handler: the running statement is cancelled on the
        server (its migration fails as any failed statement does), and no further migration starts."""
        self._cancelled = True
        if self._database is not None:
            self._database.cancel()

    def _stopped(self) -> bool:
        return self._cancelled

    def run(self, request: Request) -> Result:
        result = self._run(request)
        self.observer.finished(result)
        return result

    def _run(self, request: Request) -> Result:
        budget = TimeBudget(self.time_left, self.config.time_margin_seconds)
        try:
            if request.load_migrations is not None:
                migrations = request.load_migrations()
            else:
                migrations = load_folder(resolve_path(self.config.migrations, self.base_dir))
            self.observer.starting(describe_database(self.config), migrations)
            database = open_database(self.config, budget, self.clock, self.observer, self._stopped)
        except Exception as error:
            return self._failure(error)
        self._database = database
        try:
            if request.request_id is None or request.action not in _LEDGERED:
                return self._act(database, migrations, request)
            return self._ledgered(database, migrations, request)
        except Exception as error:
            return self._failure(error)
        finally:
            self._database = None
            database.close()

    def _ledgered(self, database: Database, migrations: MigrationSet, request: Request) -> Result:
        assert request.request_id is not None
        ledger = RunLedger(self.config.schema)
        ledger.ensure(database)
        if not ledger.start(database, request.caller, request.action, request.request_id):
            return self._earlier(ledger, database, request)
        result = self._act(database, migrations, request)
        applied = result.report.applied if result.report else []
        try:
            ledger.finish(
                database,
                request.request_id,
                outcome="succeeded" if result.ok else "failed",
                applied_versions=[run.version or run.script for run in applied],
                error=result.error,
                result=result.to_dict(),
            )
        except ConnectionLostError:  # the run's own error (a lost connection) is the answer that matters
            self.observer.warning("the connection was lost: the run ledger keeps this request as running")
        return result

    def _earlier(self, ledger: RunLedger, database: Database, request: Request) -> Result:
        """A request id delivered again (Lambda retries, a duplicate event): never a second run."""
        assert request.request_id is not None
        earlier = ledger.earlier_run(database, request.request_id)
        if earlier is None:
            since = ledger.started_at(database, request.request_id)
            raise ConfigurationError(
                f"request {request.request_id!r} is already being handled (started {since}), so it is not run a "
                "second time; if that invocation died, the run ledger keeps it as running: look at the history, "
                "and send a new request id to run again"
            )
        caller, action, outcome = earlier
        if (caller, action) != (request.caller, request.action):
            raise ConfigurationError(
                f"request id {request.request_id!r} was already used by {caller} for {action}: give this "
                f"{request.action} a request id of its own"
            )
        self.observer.note("request already handled: returning its earlier outcome", outcome=outcome)
        replayed = Result.from_dict(outcome)
        replayed.replayed = True
        return replayed

    def _act(self, database: Database, migrations: MigrationSet, request: Request) -> Result:
        engine = Engine(
            database,
            migrations,
            self.config.engine_settings(),
            progress=self.observer.migration,
            time_left=self.time_left,
            should_stop=self._stopped,
            clock=self.clock,
        )
        actions: dict[str, Callable[[], Report]] = {
            "plan": engine.plan,
            "validate": engine.validate,
            "status": engine.status,
            "migrate": engine.migrate,
            "repair": engine.repair,
            "baseline": lambda: engine.baseline(request.baseline_version or ""),
        }
        if request.action not in actions:
            return self._failure(ConfigurationError(f"unknown action {request.action!r}; one of {', '.join(ACTIONS)}"))
        try:
            report = actions[request.action]()
        except PremigrateError as error:
            return self._failure(error)
        for note in report.notes:
            self.observer.note(note)
        return Result(True, report=report)

    def _failure(self, error: Exception) -> Result:
        result = failure(error)
        if result.error_kind is Category.INTERNAL:
            self.observer.warning("unexpected error", exc_info=error)
        return result

"""The application service: one place where a use case runs, whichever front door asked.

    >>> result = Service(load_config("cli")).run(Request("plan"))
    >>> result.ok, result.exit_code, result.report.pending

It loads the migrations, connects (``connecting``), runs one engine action, records the run in the
ledger when the caller has a request id, and maps every error to one category and exit code. It never
raises for anything a person can fix: the Result says what happened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from premigrate.adapters.folder import load_folder
from premigrate.engine import ConfigurationError, Engine, MigrationSet, PremigrateError, Report
from premigrate.engine.clock import SYSTEM_CLOCK, Clock, TimeBudget
from premigrate.engine.database import ConnectionLostError, Database
from premigrate.engine.ledger import RunLedger
from premigrate.service.connecting import describe_database, open_database
from premigrate.service.observer import Observer
from premigrate.service.results import EXIT_CODES, Category, Result, categorize, failure
from premigrate.service.settings import Config, resolve_path

__all__ = ["ACTIONS", "EXIT_CODES", "Category", "Request", "Result", "Service", "categorize", "failure"]

ACTIONS = ("plan", "validate", "status", "migrate", "baseline", "repair")
_LEDGERED = ("migrate", "baseline", "repair")
"""Actions that change the database: recorded in the run ledger, and replayed when delivered again. The
read-only ones write nothing, so they work on a read-only endpoint too."""


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
    expected_fingerprint: str | None = None
    """The migration set the caller asks for (a custom resource's MigrationSetHash); another set is refused."""


def _check_fingerprint(migrations: MigrationSet, expected: str | None) -> None:
    if expected is not None and expected != migrations.fingerprint:
        raise ConfigurationError(
            f"asked for migration set {expected!r}, but this function holds {migrations.fingerprint!r}: deploy "
            "premigrate with that migration set first, or ask for the fingerprint of the one it holds "
            "(premigrate fingerprint); nothing was applied"
        )


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
            _check_fingerprint(migrations, request.expected_fingerprint)
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

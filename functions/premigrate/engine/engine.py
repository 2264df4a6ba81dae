"""The engine: brings a database up to date with a migration set, exactly once, however many run at once.

    >>> engine = Engine(connection, MigrationSet.from_files(files), Settings(lock_wait_seconds=60))
    >>> report = engine.migrate()          # or plan(), status(), validate(), baseline("3"), repair()
    >>> report.schema_version_after

It knows nothing of Lambda, AWS or the command line: callers hand it a connection and a migration set
and get a Report back, or a PremigrateError whose message says what to do.
"""

from __future__ import annotations

import contextlib
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from premigrate.engine.database import (
    CONNECTION_LOST,
    IN_FAILED_TRANSACTION,
    LOCK_NOT_AVAILABLE,
    Database,
    server_error,
    sqlstate,
)
from premigrate.engine.errors import (
    ConfigurationError,
    MigrationFailedError,
    MigrationSetError,
    PremigrateError,
    ValidationError,
)
from premigrate.engine.history import BASELINE, REPEATABLE, VERSIONED, HistoryRow, HistoryTable
from premigrate.engine.ledger import LEDGER_TABLE
from premigrate.engine.lock import MigrationLock
from premigrate.engine.migrations import ExecutionMode, Migration, MigrationSet, Version
from premigrate.engine.plan import Plan, make_plan
from premigrate.engine.report import MigrationRun, Report
from premigrate.engine.statements import Statement, line_and_column


@dataclass(frozen=True)
class Settings:
    schema: str = "public"
    table: str = "premigrate_schema_history"
    lock_wait_seconds: float = 300.0
    """How long to wait for another run's migration lock before giving up (exit code 3)."""
    lock_timeout_seconds: float = 5.0
    """PostgreSQL lock_timeout for migration statements: DDL queued behind a busy table gives up, rather
    than stalling every query that queues behind it."""
    statement_timeout_seconds: float = 0.0
    """PostgreSQL statement_timeout for migration statements; 0 means none."""
    lock_timeout_retries: int = 3
    """How often a migration that hit lock_timeout is tried again, with growing pauses."""
    retry_pause_seconds: float = 1.0
    allow_out_of_order: bool = False
    target: str | None = None
    """Apply versions up to and including this one only."""
    accept_database_ahead: bool = False
    """Succeed without changes when the database has newer versions than the files (a stack rollback
    deploys the older set); otherwise those versions are reported as applied migrations whose file is gone."""
    time_margin_seconds: float = 30.0
    """With a time budget: no migration starts within this margin of its end, and a running statement is
    cancelled (its migration rolled back) half-way through the margin."""


ProgressCallback = Callable[[str, MigrationRun], None]
"""Called with ("started" | "finished", run) around each migration."""


@dataclass
class Engine:
    db: Database
    migrations: MigrationSet
    settings: Settings = field(default_factory=Settings)
    progress: ProgressCallback | None = None
    time_left: Callable[[], float] | None = None
    """Seconds the caller may still run (a Lambda's remaining time); None means no limit."""

    def __post_init__(self) -> None:
        self.history = HistoryTable(self.settings.schema, self.settings.table)
        self.lock = MigrationLock(f"{self.settings.schema}.{self.settings.table}")
        try:
            self.target = Version.parse(self.settings.target) if self.settings.target else None
        except ValueError as error:
            raise ConfigurationError(f"target version: {error}") from None

    # ---- read-only commands: no lock, nothing written -------------------------------------------

    def status(self) -> Report:
        """Every migration's state, problems included; never raises for a disagreement."""
        started = time.monotonic()
        plan = self._plan(self._read_history(create=False))
        return self._report("status", plan, started, notes=plan.problems + self._invalid_index_notes())

    def plan(self) -> Report:
        """What ``migrate`` would apply; raises ValidationError (with the report) when it would refuse."""
        started = time.monotonic()
        plan = self._checked_plan(self._read_history(create=False))
        return self._report("plan", plan, started)

    validate = plan

    # ---- commands that take the lock ------------------------------------------------------------

    def migrate(self) -> Report:
        return self._locked("migrate", self._migrate)

    def baseline(self, version: str) -> Report:
        try:
            baseline_version = Version.parse(version)
        except ValueError as error:
            raise ConfigurationError(f"baseline version: {error}") from None
        return self._locked("baseline", lambda report: self._baseline(report, baseline_version))

    def repair(self) -> Report:
        return self._locked("repair", self._repair)

    def _locked(self, action: str, work: Callable[[Report], None]) -> Report:
        started = time.monotonic()
        report = Report(action)
        lock_wait = min(self.settings.lock_wait_seconds, self._budget())
        report.lock_wait_ms = round(self.lock.acquire(self.db, lock_wait) * 1000, 1)
        try:
            work(report)
        except PremigrateError as error:
            report.total_ms = _ms_since(started)
            error.report = error.report or report
            raise
        finally:
            self._release_lock()
        report.total_ms = _ms_since(started)
        return report

    def _release_lock(self) -> None:
        with contextlib.suppress(*CONNECTION_LOST):  # a lost session has released the lock already
            self.lock.release(self.db)

    def _migrate(self, report: Report) -> None:
        # Read the history only now, under the lock: a run that waited for another sees its work done.
        plan = self._checked_plan(self._read_history(create=True))
        report.schema_version_before = plan.current_version
        report.schema_version_after = plan.current_version
        report.pending = [self._run_of(m) for m in plan.pending]
        if plan.ahead_of_files:
            report.notes.append(
                f"the database is at version {plan.current_version}, ahead of this migration set "
                f"(which ends at {self.migrations.versioned[-1].version if self.migrations.versioned else 'none'}): "
                "the schema stays ahead; premigrate never undoes a migration"
            )
        for migration in plan.pending:
            if self._budget() < 0:
                report.stopped_for_time = True
                report.notes.append(
                    f"stopped before {migration.script}: less than {self.settings.time_margin_seconds:g} s "
                    "of the time budget left; the next run continues from here"
                )
                break
            migration_run = self._apply(migration)
            report.pending.pop(0)
            report.applied.append(migration_run)
            if migration_run.version is not None:
                after = report.schema_version_after
                if after is None or Version.parse(migration_run.version) > Version.parse(after):
                    report.schema_version_after = migration_run.version

    def _baseline(self, report: Report, version: Version) -> None:
        if self.history.exists(self.db) and (rows := self.history.read(self.db)):
            raise ValidationError(
                [
                    f"{self.history.qualified_name} already records {len(rows)} migration(s); a baseline is only "
                    "for a database that has no history yet"
                ]
            )
        self.history.create(self.db)
        self.db.run(
            self.history.insert_sql(
                version=version.text,
                description="<< baseline >>",
                type=BASELINE,
                script="<< baseline >>",
                checksum=None,
                execution_ms=0,
                success=True,
                execution_mode=None,
            )
        )
        report.schema_version_before = None
        report.schema_version_after = version.text
        report.notes.append(
            f"recorded version {version} as the baseline: migrations up to it count as applied and will not run"
        )

    def _repair(self, report: Report) -> None:
        history = self._read_history(create=False)
        plan = make_plan(history, self.migrations, allow_out_of_order=True)
        failed = [row for row in history if not row.success]
        if failed:
            self.history.delete_failed(self.db)
            report.notes.extend(f"removed the failed record of {row.script}: it will run again" for row in failed)
        for row, migration in plan.drifted:
            self.history.update_checksum(self.db, row.installed_rank, migration.checksum)
            report.notes.append(f"recorded the new checksum of {migration.script}")
        report.notes.extend(self._invalid_index_notes())
        if not report.notes:
            report.notes.append("nothing to repair")
        report.schema_version_before = report.schema_version_after = plan.current_version

    # ---- planning -------------------------------------------------------------------------------

    def _read_history(self, *, create: bool) -> list[HistoryRow]:
        if self.history.exists(self.db):
            return self.history.read(self.db)
        if others := self.history.other_relations(self.db, ignoring=(LEDGER_TABLE,)):
            raise ValidationError(
                [
                    f"schema {self.settings.schema!r} already has tables ({', '.join(others)}) but no "
                    f"{self.history.qualified_name} history table, so premigrate cannot tell which migrations "
                    "made them. Run `premigrate baseline --version V` with the version the database is at "
                    "(V and every lower version are then recorded as applied without running), then run again"
                ]
            )
        if create:
            self.history.create(self.db)
        return []

    def _plan(self, history: list[HistoryRow]) -> Plan:
        return make_plan(
            history,
            self.migrations,
            allow_out_of_order=self.settings.allow_out_of_order,
            target=self.target,
            accept_database_ahead=self.settings.accept_database_ahead,
        )

    def _checked_plan(self, history: list[HistoryRow]) -> Plan:
        plan = self._plan(history)
        if plan.problems:
            error = ValidationError(plan.problems)
            error.report = self._report("plan", plan, time.monotonic())
            raise error
        set_problems = [problem for migration in plan.pending for problem in migration.check()]
        if set_problems:
            raise MigrationSetError(set_problems)
        return plan

    def _report(self, action: str, plan: Plan, started: float, notes: list[str] | None = None) -> Report:
        return Report(
            action,
            schema_version_before=plan.current_version,
            schema_version_after=plan.current_version,
            pending=[self._run_of(m) for m in plan.pending if not m.check()],
            states=plan.states,
            notes=notes or [],
            total_ms=_ms_since(started),
        )

    @staticmethod
    def _run_of(migration: Migration, duration_ms: float | None = None, attempts: int = 1) -> MigrationRun:
        return MigrationRun(
            script=migration.script,
            version=str(migration.version) if migration.version else None,
            description=migration.description,
            mode=migration.mode.value,
            mode_reason=migration.mode_reason,
            duration_ms=duration_ms,
            attempts=attempts,
        )

    # ---- applying -------------------------------------------------------------------------------

    def _apply(self, migration: Migration) -> MigrationRun:
        if self.progress:
            self.progress("started", self._run_of(migration))
        started = time.monotonic()
        if migration.mode is ExecutionMode.TRANSACTION:
            attempts = self._apply_in_transaction(migration)
        else:
            attempts = self._apply_statement_by_statement(migration)
        migration_run = self._run_of(migration, _ms_since(started), attempts)
        if self.progress:
            self.progress("finished", migration_run)
        return migration_run

    def _apply_in_transaction(self, migration: Migration) -> int:
        """All statements and the history row commit together, or nothing does."""
        for attempt in range(1, self.settings.lock_timeout_retries + 2):
            started = time.monotonic()
            try:
                # The transaction's start rides with the first statement, its end with the history row:
                # as few round trips as psql needs for the same file.
                opening = f"BEGIN; {self._timeouts('SET LOCAL')};\n"
                if not migration.statements:
                    self.db.run(opening)
                for index, statement in enumerate(migration.statements):
                    self._execute(migration, statement, prefix=opening if index == 0 else "")
                self._record(migration, started, success=True, then=";\nCOMMIT")
                return attempt
            except MigrationFailedError as failure:
                self._rollback()
                if failure.sqlstate != LOCK_NOT_AVAILABLE or attempt > self.settings.lock_timeout_retries:
                    failure.args = (f"{failure}\nThe migration was rolled back: nothing of it is applied.",)
                    raise
                self._pause_before_retry(attempt)
            except BaseException:
                self._rollback()
                raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _apply_statement_by_statement(self, migration: Migration) -> int:
        """No-transaction and own-transaction files: each statement commits (or not) on its own, as in psql."""
        started = time.monotonic()
        attempts = 1
        self.db.run(self._timeouts("SET"))
        try:
            for statement in migration.statements:
                while True:
                    try:
                        self._execute(migration, statement)
                        break
                    except MigrationFailedError as failure:
                        # One statement outside a transaction is atomic, so trying it again is safe; in an
                        # own-transaction file the failure has already aborted the file's transaction.
                        if (
                            failure.sqlstate != LOCK_NOT_AVAILABLE
                            or migration.mode is not ExecutionMode.NO_TRANSACTION
                            or attempts > self.settings.lock_timeout_retries
                        ):
                            raise
                        self._pause_before_retry(attempts)
                        attempts += 1
            self._refuse_invalid_indexes_of(migration)
            self._record(migration, started, success=True)
        except MigrationFailedError as failure:
            self._record_failure(migration, started, failure)
            raise
        finally:
            self._reset_timeouts()
        return attempts

    def _execute(self, migration: Migration, statement: Statement, prefix: str = "") -> None:
        try:
            self.db.run(prefix + statement.text)
        except CONNECTION_LOST as error:
            line, column = line_and_column(migration.text, statement.offset)
            fields = server_error(error)
            why = f"{fields['M']} ({fields['C']})" if fields else f"{type(error).__name__}: {error}"
            raise MigrationFailedError(
                f"{migration.script}:{line}:{column}: the connection to the database was lost ({why}): the server "
                "ended the session (terminated, restarted, failed over) or the network dropped. Check the server, "
                "then run again",
                script=migration.script,
                line=line,
                column=column,
            ) from error
        except Exception as error:
            fields = server_error(error)
            if not fields:
                raise
            raise self._statement_failure(migration, statement, fields, len(prefix)) from error

    @staticmethod
    def _statement_failure(
        migration: Migration, statement: Statement, fields: dict[str, str], prefix_length: int
    ) -> MigrationFailedError:
        offset = statement.offset
        if fields.get("P", "").isdigit():
            offset += max(int(fields["P"]) - 1 - prefix_length, 0)
        line, column = line_and_column(migration.text, offset)
        lines = [f"{migration.script}:{line}:{column}: ERROR {fields.get('C', '?????')}: {fields.get('M', '')}"]
        lines += [
            f"  {label}: {fields[key]}"
            for key, label in (("D", "DETAIL"), ("H", "HINT"), ("W", "CONTEXT"))
            if key in fields
        ]
        if fields.get("C") == LOCK_NOT_AVAILABLE:
            lines.append("  The statement waited longer than lock_timeout for a lock another session holds.")
        return MigrationFailedError(
            "\n".join(lines), script=migration.script, line=line, column=column, sqlstate=fields.get("C")
        )

    def _record(self, migration: Migration, started: float, *, success: bool, then: str = "") -> None:
        """Write the history row; ``then`` rides along in the same round trip (the COMMIT)."""
        row = self.history.insert_sql(
            version=str(migration.version) if migration.version else None,
            description=migration.description,
            type=REPEATABLE if migration.is_repeatable else VERSIONED,
            script=migration.script,
            checksum=migration.checksum,
            execution_ms=round(_ms_since(started)),
            success=success,
            execution_mode=migration.mode.value,
        )
        self.db.run(row + then)

    def _record_failure(self, migration: Migration, started: float, failure: MigrationFailedError) -> None:
        notes = ["It ran outside premigrate's transaction, so the statements before the failing one stay applied."]
        try:
            self._rollback()
            self._record(migration, started, success=False)
            notes.append(
                "It is recorded as failed and blocks later runs: fix the database by hand, then run "
                "`premigrate repair` and run again."
            )
            notes.extend(self._invalid_index_notes())
        except CONNECTION_LOST:
            notes.append("The connection is gone, so the failure could not be recorded.")
        failure.args = (f"{failure}\n" + "\n".join(notes),)

    def _invalid_indexes(self) -> list[tuple[str, str]]:
        """(schema-qualified name, bare name) of every INVALID index in the database."""
        rows = self.db.run(
            """
            SELECT format('%I.%I', n.nspname, c.relname), c.relname FROM pg_index i
            JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE NOT i.indisvalid ORDER BY 1
            """
        )
        return [(str(qualified), str(bare)) for qualified, bare in rows or []]

    def _invalid_index_notes(self) -> list[str]:
        return [
            f"INVALID index {name} (left by a failed CREATE INDEX CONCURRENTLY): drop it with "
            f"DROP INDEX CONCURRENTLY {name}; then run `premigrate repair` and run again"
            for name, _ in self._invalid_indexes()
        ]

    def _refuse_invalid_indexes_of(self, migration: Migration) -> None:
        # An interrupted CREATE INDEX CONCURRENTLY leaves an INVALID index behind, which a rerun's
        # IF NOT EXISTS then silently accepts: a migration that names an INVALID index has not succeeded.
        named = [
            qualified
            for qualified, bare in self._invalid_indexes()
            if re.search(rf"(?<![\w$]){re.escape(bare)}(?![\w$])", migration.text, re.IGNORECASE)
        ]
        if named:
            raise MigrationFailedError(
                f"{migration.script}: its statements ran, but the index {', '.join(named)} it names is INVALID "
                "(an earlier CREATE INDEX CONCURRENTLY was interrupted, and IF NOT EXISTS kept its leftover)",
                script=migration.script,
            )

    def _rollback(self) -> None:
        """End whatever transaction is open; a lost connection has ended it already."""
        with contextlib.suppress(*CONNECTION_LOST):
            self.db.run("ROLLBACK")

    def _budget(self) -> float:
        """Seconds left before the safety margin; infinite without a time budget."""
        if self.time_left is None:
            return float("inf")
        return self.time_left() - self.settings.time_margin_seconds

    def _timeouts(self, command: str) -> str:
        # Within a time budget the server cancels a statement (rolling its migration back) half-way through
        # the margin: a migration started just before the margin still gets time, and the caller is never
        # killed mid-statement.
        statement_timeout = self.settings.statement_timeout_seconds or float("inf")
        if self.time_left is not None:
            statement_timeout = min(statement_timeout, self._budget() + self.settings.time_margin_seconds / 2)
        statement_ms = 0 if statement_timeout == float("inf") else max(round(statement_timeout * 1000), 100)
        return (
            f"{command} lock_timeout = '{round(self.settings.lock_timeout_seconds * 1000)}ms'; "
            f"{command} statement_timeout = '{statement_ms}ms'"
        )

    def _reset_timeouts(self) -> None:
        try:
            self.db.run("RESET lock_timeout; RESET statement_timeout")
        except CONNECTION_LOST:
            pass
        except Exception as error:
            if sqlstate(error) != IN_FAILED_TRANSACTION:
                raise

    def _pause_before_retry(self, attempt: int) -> None:
        time.sleep(self.settings.retry_pause_seconds * 2 ** (attempt - 1) * random.uniform(0.75, 1.25))


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)

"""Applying one migration: in one transaction with its history row, or statement by statement as psql
would; every server error turned into a message that names the file, line and column.
"""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from premigrate.engine.clock import Clock, TimeBudget
from premigrate.engine.database import (
    IN_FAILED_TRANSACTION,
    LOCK_NOT_AVAILABLE,
    ConnectionLostError,
    Database,
    ServerError,
)
from premigrate.engine.errors import MigrationFailedError
from premigrate.engine.history import REPEATABLE, VERSIONED, HistoryTable
from premigrate.engine.migrations import ExecutionMode, Migration
from premigrate.engine.report import MigrationRun
from premigrate.engine.settings import Settings
from premigrate.engine.statements import Statement, line_and_column

ProgressCallback = Callable[[str, MigrationRun], None]
"""Called with ("started" | "finished", run) around each migration."""


def run_of(migration: Migration, duration_ms: float | None = None, attempts: int = 1) -> MigrationRun:
    return MigrationRun(
        script=migration.script,
        version=str(migration.version) if migration.version else None,
        description=migration.description,
        mode=migration.mode.value,
        mode_reason=migration.mode_reason,
        duration_ms=duration_ms,
        attempts=attempts,
    )


@dataclass
class Applier:
    db: Database
    history: HistoryTable
    settings: Settings
    budget: TimeBudget
    clock: Clock
    progress: ProgressCallback | None = None

    def apply(self, migration: Migration) -> MigrationRun:
        if self.progress:
            self.progress("started", run_of(migration))
        started = self.clock.monotonic()
        if migration.mode is ExecutionMode.TRANSACTION:
            attempts = self._apply_in_transaction(migration)
        else:
            attempts = self._apply_statement_by_statement(migration)
        migration_run = run_of(migration, self._ms_since(started), attempts)
        if self.progress:
            self.progress("finished", migration_run)
        return migration_run

    def _apply_in_transaction(self, migration: Migration) -> int:
        """All statements and the history row commit together, or nothing does."""
        for attempt in range(1, self.settings.lock_timeout_retries + 2):
            started = self.clock.monotonic()
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
                self.rollback()
                if failure.sqlstate != LOCK_NOT_AVAILABLE or attempt > self.settings.lock_timeout_retries:
                    failure.args = (f"{failure}\nThe migration was rolled back: nothing of it is applied.",)
                    raise
                self._pause_before_retry(attempt)
            except BaseException:
                self.rollback()
                raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _apply_statement_by_statement(self, migration: Migration) -> int:
        """No-transaction and own-transaction files: each statement commits (or not) on its own, as in psql."""
        started = self.clock.monotonic()
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
        except ConnectionLostError as error:
            line, column = line_and_column(migration.text, statement.offset)
            raise MigrationFailedError(
                f"{migration.script}:{line}:{column}: the connection to the database was lost ({error}): the "
                "server ended the session (terminated, restarted, failed over) or the network dropped. Check the "
                "server, then run again",
                script=migration.script,
                line=line,
                column=column,
            ) from error
        except ServerError as error:
            raise _statement_failure(migration, statement, error, len(prefix)) from error

    def _record(self, migration: Migration, started: float, *, success: bool, then: str = "") -> None:
        """Write the history row; ``then`` rides along in the same round trip (the COMMIT)."""
        row = self.history.insert_sql(
            version=str(migration.version) if migration.version else None,
            description=migration.description,
            type=REPEATABLE if migration.is_repeatable else VERSIONED,
            script=migration.script,
            checksum=migration.checksum,
            execution_ms=round(self._ms_since(started)),
            success=success,
            execution_mode=migration.mode.value,
        )
        self.db.run(row + then)

    def _record_failure(self, migration: Migration, started: float, failure: MigrationFailedError) -> None:
        notes = ["It ran outside premigrate's transaction, so the statements before the failing one stay applied."]
        try:
            self.rollback()
            self._record(migration, started, success=False)
            notes.append(
                "It is recorded as failed and blocks later runs: fix the database by hand, then run "
                "`premigrate repair` and run again."
            )
            notes.extend(self.invalid_index_notes())
        except ConnectionLostError:
            notes.append("The connection is gone, so the failure could not be recorded.")
        failure.args = (f"{failure}\n" + "\n".join(notes),)

    def invalid_indexes(self) -> list[tuple[str, str]]:
        """(schema-qualified name, bare name) of every INVALID index in the database."""
        rows = self.db.run(
            """
            SELECT format('%I.%I', n.nspname, c.relname), c.relname FROM pg_index i
            JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE NOT i.indisvalid ORDER BY 1
            """
        )
        return [(str(qualified), str(bare)) for qualified, bare in rows]

    def invalid_index_notes(self) -> list[str]:
        return [
            f"INVALID index {name} (left by a failed CREATE INDEX CONCURRENTLY): drop it with "
            f"DROP INDEX CONCURRENTLY {name}; then run `premigrate repair` and run again"
            for name, _ in self.invalid_indexes()
        ]

    def _refuse_invalid_indexes_of(self, migration: Migration) -> None:
        # An interrupted CREATE INDEX CONCURRENTLY leaves an INVALID index behind, which a rerun's
        # IF NOT EXISTS then silently accepts: a migration that names an INVALID index has not succeeded.
        named = [
            qualified
            for qualified, bare in self.invalid_indexes()
            if re.search(rf"(?<![\w$]){re.escape(bare)}(?![\w$])", migration.text, re.IGNORECASE)
        ]
        if named:
            raise MigrationFailedError(
                f"{migration.script}: its statements ran, but the index {', '.join(named)} it names is INVALID "
                "(an earlier CREATE INDEX CONCURRENTLY was interrupted, and IF NOT EXISTS kept its leftover)",
                script=migration.script,
            )

    def rollback(self) -> None:
        """End whatever transaction is open; a lost connection has ended it already."""
        with contextlib.suppress(ConnectionLostError):
            self.db.run("ROLLBACK")

    def _timeouts(self, command: str) -> str:
        statement_ms = self.budget.statement_timeout_ms(self.settings.statement_timeout_seconds)
        return (
            f"{command} lock_timeout = '{round(self.settings.lock_timeout_seconds * 1000)}ms'; "
            f"{command} statement_timeout = '{statement_ms}ms'"
        )

    def _reset_timeouts(self) -> None:
        try:
            self.db.run("RESET lock_timeout; RESET statement_timeout")
        except ConnectionLostError:
            pass
        except ServerError as error:
            if error.sqlstate != IN_FAILED_TRANSACTION:
                raise

    def _pause_before_retry(self, attempt: int) -> None:
        self.clock.sleep(self.settings.retry_pause_seconds * 2 ** (attempt - 1) * random.uniform(0.75, 1.25))

    def _ms_since(self, started: float) -> float:
        return round((self.clock.monotonic() - started) * 1000, 1)


def _statement_failure(
    migration: Migration, statement: Statement, error: ServerError, prefix_length: int
) -> MigrationFailedError:
    offset = statement.offset
    if error.position is not None:
        offset += max(error.position - 1 - prefix_length, 0)
    line, column = line_and_column(migration.text, offset)
    lines = [f"{migration.script}:{line}:{column}: ERROR {error.sqlstate}: {error.message}"]
    lines += [
        f"  {label}: {value}"
        for label, value in (("DETAIL", error.detail), ("HINT", error.hint), ("CONTEXT", error.context))
        if value
    ]
    if error.sqlstate == LOCK_NOT_AVAILABLE:
        lines.append("  The statement waited longer than lock_timeout for a lock another session holds.")
    return MigrationFailedError(
        "\n".join(lines), script=migration.script, line=line, column=column, sqlstate=error.sqlstate
    )

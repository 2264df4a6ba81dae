"""Applying one migration: in one transaction with its history row, or statement by statement as psql
would; every server error turned into a message that names the file, line and column.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass

from premigrate.engine import indexes
from premigrate.engine.clock import Clock, TimeBudget, ms_since
from premigrate.engine.database import (
    LOCK_NOT_AVAILABLE,
    ConnectionLostError,
    Database,
    ServerError,
)
from premigrate.engine.errors import LockLostError, MigrationFailedError, RunStoppedError
from premigrate.engine.history import REPEATABLE, VERSIONED, HistoryTable
from premigrate.engine.lock import MigrationLock
from premigrate.engine.migrations import ExecutionMode, Migration
from premigrate.engine.report import MigrationRun
from premigrate.engine.settings import Settings
from premigrate.engine.statement_kinds import Statement
from premigrate.engine.statements import line_and_column

ProgressCallback = Callable[[str, MigrationRun], None]
"""Called with ("started" | "finished", run) around each migration."""

OWN_IDENTITY = "RESET ROLE; RESET SESSION AUTHORIZATION"
"""Before a history row is written: a migration may end as another role (SET ROLE), without rights on it."""
SESSION_RESET = "RESET ALL; CLOSE ALL; UNLISTEN *; DISCARD TEMP; DISCARD SEQUENCES"
"""What a migration may have changed in the session; each of these may run inside a transaction too."""
FRESH_SESSION = f"{OWN_IDENTITY}; {SESSION_RESET}"
"""After every migration, what a migration may have changed in the session is put back, so each one sees
the session psql would give a file of its own, and one run gives what several runs give (a pg_dump header's
``set_config('search_path', '', false)`` must not reach the next file). It is DISCARD ALL but for
pg_advisory_unlock_all (the migration lock stays ours) and DEALLOCATE ALL (the driver's prepared
statements)."""


@dataclass
class Applier:
    db: Database
    history: HistoryTable
    lock: MigrationLock
    settings: Settings
    budget: TimeBudget
    clock: Clock
    progress: ProgressCallback | None = None
    should_stop: Callable[[], bool] = lambda: False
    """True once the run was interrupted: no further statement starts."""

    def apply(self, migration: Migration) -> MigrationRun:
        if migration.mode is ExecutionMode.TRANSACTION:
            from premigrate.engine.transactions import apply_transactional

            return apply_transactional(self, [migration])[0]
        if self.progress:
            self.progress("started", MigrationRun.of(migration))
        started = self.clock.monotonic()
        attempts = self._apply_statement_by_statement(migration)
        migration_run = MigrationRun.of(migration, ms_since(self.clock, started), attempts)
        if self.progress:
            self.progress("finished", migration_run)
        return migration_run

    def _apply_statement_by_statement(self, migration: Migration) -> int:
        """No-transaction and own-transaction files: each statement commits (or not) on its own, as in psql.

        Its history row is written, as failed, before the first statement, and marked applied after the
        last: a run killed half-way leaves it recorded as failed (and so blocking), never as nothing."""
        started = self.clock.monotonic()
        rank = self._record_start(migration)
        attempts = 1
        try:
            for statement in migration.statements:
                attempts = self._execute_with_retries(migration, statement, attempts)
            self._check_session_after(migration, started, rank)
            self._refuse_invalid_indexes_of(migration)
            self.record_or_fail(migration, self._outcome(rank, started, success=True) + f";\n{FRESH_SESSION}")
        except MigrationFailedError as failure:
            self._record_failure(rank, started, failure)
            raise
        return attempts

    def _execute_with_retries(self, migration: Migration, statement: Statement, attempts: int) -> int:
        """One statement outside premigrate's transaction, tried again after lock_timeout; returns the
        attempts used so far."""
        while True:
            try:
                self.execute(migration, statement)
                return attempts
            except MigrationFailedError as failure:
                # One statement outside a transaction is atomic, so trying it again is safe; in an
                # own-transaction file the failure has already aborted the file's transaction.
                if (
                    failure.sqlstate != LOCK_NOT_AVAILABLE
                    or migration.mode is not ExecutionMode.NO_TRANSACTION
                    or attempts > self.settings.lock_timeout_retries
                ):
                    raise
                if leftover := indexes.invalid_built_by(self.db, [statement]):
                    # CREATE INDEX CONCURRENTLY gave up waiting after it had created its index: a retry
                    # would only say "already exists".
                    failure.args = (f"{failure}\n  It left the INVALID index {', '.join(leftover)} behind.",)
                    raise
                self.pause_before_retry(attempts)
                attempts += 1

    def _check_session_after(self, migration: Migration, started: float, rank: int) -> None:
        """A file run statement by statement must hand the session back as it got it: no transaction open
        (psql would roll back what is left open when the file ends) and the migration lock still held."""
        transaction_open, lock_held = self.session_state()
        if transaction_open:
            raise MigrationFailedError(
                f"{migration.script}: the file ends with a transaction still open (a BEGIN without COMMIT, or "
                "COMMIT AND CHAIN), so what that transaction did was rolled back, as psql would at the end of "
                "the file. End the file with COMMIT",
                script=migration.script,
            )
        if lock_held:
            return
        if self.lock.take_back(self.db):
            self.record_or_fail(migration, self._outcome(rank, started, success=True) + f";\n{FRESH_SESSION}")
            detail = f"no other run had started, so premigrate took the lock back and recorded {migration.script}"
        else:
            detail = (
                f"another run holds it now, so {migration.script} stays recorded as failed although it ran: "
                "check the database, then run `premigrate repair`"
            )
        raise LockLostError(
            f"{migration.script} released premigrate's migration lock (pg_advisory_unlock_all, DISCARD ALL or "
            f"similar); {detail}. The run stops here: remove the unlock from the migration"
        )

    def execute(self, migration: Migration, statement: Statement, prefix: str = "") -> None:
        if self.should_stop():
            line, column = line_and_column(migration.text, statement.offset)
            raise MigrationFailedError(
                f"{migration.script}:{line}:{column}: the run was interrupted before this statement",
                script=migration.script,
                line=line,
                column=column,
            )
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

    def session_state(self) -> tuple[bool, bool]:
        """(a transaction is open, the migration lock is held). A statement that starts a transaction of its
        own has now() equal to its own start; inside an older transaction now() is that transaction's start."""
        rows = self.db.run(f"SELECT now() <> statement_timestamp(), {self.lock.held_sql}")
        return bool(rows[0][0]), bool(rows[0][1])

    def record_or_fail(self, migration: Migration, sql: str, *, group: bool = False) -> None:
        """Run the SQL that records success (and then resets the session); a refusal there (a deferred
        constraint checked at COMMIT, say) is the migration's failure, unless the history shows it was
        committed, when only what followed the COMMIT failed. ``group``: the COMMIT ends a group of which
        ``migration`` is the last, and the server does not say which file queued a deferred check."""
        try:
            self.db.run(f"{OWN_IDENTITY};\n{sql}")
        except ServerError as error:
            self.stop_if_committed(migration, error)
            whose, what = ("the group's last", "group") if group else ("its", "file")
            raise MigrationFailedError(
                f"{migration.script}: ERROR {error.sqlstate} when {whose} history row was written and committed: "
                f"{error.message}"
                + (f"\n  DETAIL: {error.detail}" if error.detail else "")
                + f"\n  (a deferred constraint is checked at COMMIT, after the {what}'s last statement)",
                script=migration.script,
                sqlstate=error.sqlstate,
            ) from error

    def stop_if_committed(self, migration: Migration, error: ServerError) -> None:
        """After a refusal in the message that ends with COMMIT and the session's reset: when the history
        shows the migration committed, only the reset failed, and the run stops (RunStoppedError)."""
        self.rollback()
        if self._recorded_as_applied(migration):
            raise RunStoppedError(
                f"{migration.script} is applied and recorded, but resetting the session after it failed "
                f"(ERROR {error.sqlstate}: {error.message}): the run stops here; run again to continue"
            ) from error

    def _recorded_as_applied(self, migration: Migration) -> bool:
        # The newest row: under the lock only this run writes, so it is this attempt's exactly when that
        # committed. An older row of the same file (a repeatable applied with this very text before, then
        # changed and changed back) must not count.
        rows = self.db.run(
            f"SELECT script, checksum, success FROM {self.history.qualified_name} ORDER BY installed_rank DESC LIMIT 1"
        )
        return bool(rows) and rows[0] == [migration.script, migration.checksum, True]

    def row_sql(self, migration: Migration, started: float, *, success: bool, timed_by_server: bool = False) -> str:
        """The history row's INSERT; ``timed_by_server``: its execution time is the server's, since the
        message that carries it began (the row rides with the migration's statements)."""
        return self.history.insert_sql(
            version=str(migration.version) if migration.version else None,
            description=migration.description,
            type=REPEATABLE if migration.is_repeatable else VERSIONED,
            script=migration.script,
            checksum=migration.checksum,
            execution_ms=None if timed_by_server else round(ms_since(self.clock, started)),
            success=success,
            execution_mode=migration.mode.value,
            phase=migration.phase.value,
        )

    def _outcome(self, rank: int, started: float, *, success: bool) -> str:
        return self.history.outcome_sql(rank, success=success, execution_ms=round(ms_since(self.clock, started)))

    def _record_start(self, migration: Migration) -> int:
        """The row of a migration about to run statement by statement, as failed; its installed_rank."""
        started = self.clock.monotonic()
        row = self.row_sql(migration, started, success=False)
        rows = self.db.run(f"{row} RETURNING installed_rank;\n{self.timeouts('SET')}")
        return int(rows[0][0])

    def _record_failure(self, rank: int, started: float, failure: MigrationFailedError) -> None:
        notes = ["It ran outside premigrate's transaction, so the statements before the failing one stay applied."]
        try:
            self.rollback()
            self.fresh_session()
            self.db.run(self._outcome(rank, started, success=False))
            notes.extend(self.invalid_index_notes())
        except ConnectionLostError:
            pass  # it was recorded as failed before it started
        notes.append(
            "It is recorded as failed and blocks later runs: fix the database by hand, then run "
            "`premigrate repair` and run again."
        )
        failure.args = (f"{failure}\n" + "\n".join(notes),)

    def invalid_index_notes(self) -> list[str]:
        return [indexes.advice(name) for name in indexes.all_invalid(self.db)]

    def _refuse_invalid_indexes_of(self, migration: Migration) -> None:
        # An interrupted CREATE INDEX CONCURRENTLY leaves an INVALID index behind, which a rerun's
        # IF NOT EXISTS then silently accepts: a migration whose index is INVALID has not succeeded.
        if invalid := indexes.invalid_built_by(self.db, migration.statements):
            raise MigrationFailedError(
                f"{migration.script}: its statements ran, but the index {', '.join(invalid)} it names is INVALID "
                "(an earlier CREATE INDEX CONCURRENTLY was interrupted, and IF NOT EXISTS kept its leftover)",
                script=migration.script,
            )

    def rollback(self) -> None:
        """End whatever transaction is open; a lost connection has ended it already."""
        with contextlib.suppress(ConnectionLostError):
            self.db.run("ROLLBACK")

    def timeouts(self, command: str) -> str:
        statement_ms = self.budget.statement_timeout_ms(self.settings.statement_timeout_seconds)
        return (
            f"{command} lock_timeout = '{round(self.settings.lock_timeout_seconds * 1000)}ms'; "
            f"{command} statement_timeout = '{statement_ms}ms'"
        )

    def fresh_session(self) -> None:
        """Best effort after a failure: the session as a new one would be (the lock stays held). Its own
        failure must not hide the failure that matters."""
        with contextlib.suppress(ConnectionLostError, ServerError):
            self.db.run(FRESH_SESSION)

    def pause_before_retry(self, attempt: int) -> None:
        self.clock.sleep(self.settings.retry_pause_seconds * 2 ** (attempt - 1) * random.uniform(0.75, 1.25))


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

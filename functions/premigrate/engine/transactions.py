"""Transactional migrations: one file, or a group of consecutive ones (``--all-or-nothing``, Flyway's
``group``), applied in one transaction with their history rows, so a failure anywhere leaves the database
as it was before them.

Each file is one message to the server: its statements, its history row, and the session reset for the
next file or, after the last, the lock's check and COMMIT; fewer round trips than psql needs for the same
files. Should the server refuse anything, the transaction is rolled back and run again statement by
statement, which names the failing file, line and column exactly as before (and applies it, when what
failed was passing, such as a lock wait).
"""

from __future__ import annotations

from collections.abc import Sequence

from premigrate.engine.applying import FRESH_SESSION, OWN_IDENTITY, SESSION_RESET, Applier
from premigrate.engine.clock import ms_since
from premigrate.engine.database import LOCK_NOT_AVAILABLE, ConnectionLostError, ServerError
from premigrate.engine.errors import LockLostError, MigrationFailedError
from premigrate.engine.migrations import ExecutionMode, Migration
from premigrate.engine.report import MigrationRun
from premigrate.engine.statement_kinds import Statement

_LOCK_LOST = "premigrate: the migration lock was released"


class _RunAgainStatementByStatement(Exception):
    """The message-per-file path gives way to the statement-by-statement one, which names what happened."""

    def __init__(self, migration: Migration | None = None, error: ServerError | None = None) -> None:
        super().__init__()
        self.migration, self.error = migration, error


def in_groups(pending: Sequence[Migration]) -> list[list[Migration]]:
    """Consecutive transactional migrations together; a file that runs outside a transaction splits the
    group there and stands alone."""
    groups: list[list[Migration]] = []
    for migration in pending:
        transactional = migration.mode is ExecutionMode.TRANSACTION
        if transactional and groups and groups[-1][-1].mode is ExecutionMode.TRANSACTION:
            groups[-1].append(migration)
        else:
            groups.append([migration])
    return groups


def apply_group(applier: Applier, group: list[Migration]) -> list[MigrationRun]:
    """The group's migrations, all applied or none (a single non-transactional file as it always runs)."""
    if len(group) == 1:
        return [applier.apply(group[0])]
    return apply_transactional(applier, group)


def apply_transactional(applier: Applier, migrations: list[Migration]) -> list[MigrationRun]:
    """Transactional migrations in one transaction, a message per file; should the server refuse anything,
    rolled back and run again statement by statement, which names the failure as precisely as ever.
    Reports each migration started, and finished once all of them are committed."""
    if applier.progress:
        for migration in migrations:
            applier.progress("started", MigrationRun.of(migration))
    started = applier.clock.monotonic()
    try:
        runs = _in_few_round_trips(applier, migrations)
    except _RunAgainStatementByStatement as refused:
        applier.rollback()
        applier.fresh_session()
        if refused.migration is not None and refused.error is not None and applier.should_stop():
            # Interrupted: the server cancelled the file's message, and that is the answer, not a replay.
            raise _interrupted(migrations, refused.migration, refused.error) from refused.error
        attempts = apply_in_one_transaction(applier, migrations)
        each_ms = ms_since(applier.clock, started) / len(migrations)
        runs = [MigrationRun.of(migration, each_ms, attempts) for migration in migrations]
    if applier.progress:
        for run in runs:
            applier.progress("finished", run)
    return runs


def apply_in_one_transaction(applier: Applier, migrations: list[Migration]) -> int:
    """Statement by statement, all the migrations and their history rows commit together, or nothing does;
    a lock_timeout is retried. Returns the attempts it took."""
    retries = applier.settings.lock_timeout_retries
    for attempt in range(1, retries + 2):
        try:
            _statement_by_statement(applier, migrations)
            return attempt
        except MigrationFailedError as failure:
            applier.rollback()
            applier.fresh_session()
            if failure.sqlstate != LOCK_NOT_AVAILABLE or attempt > retries:
                what = "The migration was" if len(migrations) == 1 else f"The group of {_names(migrations)} was"
                failure.args = (f"{failure}\n{what} rolled back: nothing of it is applied.",)
                raise
            applier.pause_before_retry(attempt)
        except BaseException:
            applier.rollback()
            applier.fresh_session()
            raise
    raise AssertionError("unreachable: the last attempt returns or raises")


def _statement_by_statement(applier: Applier, migrations: list[Migration]) -> None:
    # The transaction's start rides with the first statement, each history row and the session reset with
    # the next file's first statement, the last row with COMMIT: as few round trips as psql needs.
    pending_sql = f"BEGIN; {applier.timeouts('SET LOCAL')};\n"
    last_row = ""
    for index, migration in enumerate(migrations):
        started = applier.clock.monotonic()
        if not migration.statements:
            applier.db.run(pending_sql)
            pending_sql = ""
        for statement in migration.statements:
            applier.execute(migration, statement, prefix=pending_sql)
            pending_sql = ""
        last_row = applier.row_sql(migration, started, success=True)
        if index < len(migrations) - 1:  # the last row is written with COMMIT
            pending_sql = _between_files(applier, migration, last_row)
    _, lock_held = applier.session_state()
    if not lock_held:
        raise _lock_lost(migrations)
    applier.record_or_fail(migrations[-1], f"{last_row};\nCOMMIT;\n{FRESH_SESSION}", group=len(migrations) > 1)


def _in_few_round_trips(applier: Applier, migrations: list[Migration]) -> list[MigrationRun]:
    """A message per file: its statements, then its history row (timed by the server) and either the
    session reset for the next file or, after the last, the lock's check and COMMIT. Only a file that
    changes standard_conforming_strings takes more, since the server parses a whole message first."""
    runs = []
    pending_sql = f"BEGIN; {applier.timeouts('SET LOCAL')};\n"
    for index, migration in enumerate(migrations):
        started = applier.clock.monotonic()
        batches = _batches(migration.statements) or [[]]
        last = index == len(migrations) - 1
        row = applier.row_sql(migration, started, success=True, timed_by_server=True)
        if last:
            ending = f"{OWN_IDENTITY};\n{_lock_check(applier)};\n{row};\nCOMMIT;\n{FRESH_SESSION}"
        else:
            ending = f"{OWN_IDENTITY};\n{row};\n{SESSION_RESET}; {applier.timeouts('SET LOCAL')};\n"
        for number, batch in enumerate(batches, start=1):
            if applier.should_stop():  # the statement-by-statement run says where, as for one statement
                raise _RunAgainStatementByStatement
            closing = number == len(batches)
            _send(
                applier,
                migrations,
                migration,
                pending_sql + _joined(batch) + (ending if closing else ""),
                last and closing,
            )
            pending_sql = ""
        runs.append(MigrationRun.of(migration, ms_since(applier.clock, started)))
    return runs


def _send(applier: Applier, migrations: list[Migration], migration: Migration, sql: str, committing: bool) -> None:
    try:
        applier.db.run(sql)
    except ConnectionLostError as error:
        raise _connection_lost(migrations, migration, error, committing=committing) from error
    except ServerError as error:
        if error.message == _LOCK_LOST:
            applier.rollback()
            applier.fresh_session()
            raise _lock_lost(migrations) from None
        if committing:
            applier.stop_if_committed(migration, error)
        raise _RunAgainStatementByStatement(migration, error) from error


def _connection_lost(
    migrations: list[Migration], migration: Migration, error: ConnectionLostError, *, committing: bool
) -> MigrationFailedError:
    """The file was one message: which of its statements ran when the session ended cannot be known."""
    lines = len(migration.text.splitlines()) or 1
    where = f"{migration.script}:1" if lines == 1 else f"{migration.script}:1-{lines}"
    if committing:
        outcome = (
            "whether its COMMIT, at the end of that message, was reached is unknown here: `premigrate status` (or "
            "the next run) shows it; either way it is never applied twice"
        )
    elif len(migrations) == 1:
        outcome = "the migration was rolled back: nothing of it is applied"
    else:
        outcome = f"the group of {_names(migrations)} was rolled back: nothing of it is applied"
    return MigrationFailedError(
        f"{where}: the connection to the database was lost while the file ran ({error}): the "
        "server ended the session (terminated, restarted, failed over) or the network dropped. Check the server, "
        f"then run again.\n{outcome[0].upper()}{outcome[1:]}.",
        script=migration.script,
    )


def _lock_check(applier: Applier) -> str:
    """Fails the transaction when a migration released the lock (pg_advisory_unlock and the like)."""
    return (
        f"DO $premigrate$ BEGIN IF NOT {applier.lock.held_sql} THEN RAISE EXCEPTION '{_LOCK_LOST}'; END IF; "
        "END $premigrate$"
    )


def _interrupted(migrations: list[Migration], migration: Migration, error: ServerError) -> MigrationFailedError:
    what = "The migration was" if len(migrations) == 1 else f"The group of {_names(migrations)} was"
    return MigrationFailedError(
        f"{migration.script}: ERROR {error.sqlstate}: {error.message}\n{what} rolled back: nothing of it is applied.",
        script=migration.script,
        sqlstate=error.sqlstate,
    )


def _joined(statements: list[Statement]) -> str:
    # A line feed before each semicolon: a statement may end in a -- comment.
    return "".join(f"{statement.text}\n;\n" for statement in statements)


def _batches(statements: list[Statement]) -> list[list[Statement]]:
    """The file's statements in as few strings as the server parses as psql's one-by-one sending would: a
    statement that changes standard_conforming_strings ends its string, since the server parses a whole
    string before running any of it."""
    batches: list[list[Statement]] = [[]]
    for statement in statements:
        batches[-1].append(statement)
        if statement.standard_strings_after is not None:
            batches.append([])
    return [batch for batch in batches if batch]


def _between_files(applier: Applier, migration: Migration, history_row: str) -> str:
    """Inside the transaction: the file's history row, written as premigrate's own role (the file may have
    ended as another), then the session as the next file would get it alone (the timeouts set again).

    Returned to ride with the next file's first statement, or, when the file changed
    standard_conforming_strings, run now: the next file must be parsed with the setting put back."""
    sql = f"{OWN_IDENTITY};\n{history_row};\n{SESSION_RESET}; {applier.timeouts('SET LOCAL')};\n"
    if any(statement.standard_strings_after is not None for statement in migration.statements):
        applier.db.run(sql)
        return ""
    return sql


def _names(migrations: list[Migration]) -> str:
    return f"{len(migrations)} migrations ({migrations[0].script} … {migrations[-1].script})"


def _lock_lost(migrations: list[Migration]) -> LockLostError:
    who = migrations[0].script if len(migrations) == 1 else f"one of the {_names(migrations)}"
    return LockLostError(
        f"{who} released premigrate's migration lock (pg_advisory_unlock_all or similar), so another run could "
        f"start: {'it was' if len(migrations) == 1 else 'they were'} rolled back, nothing of "
        f"{'it' if len(migrations) == 1 else 'them'} is applied. Remove the unlock from the migration and run again"
    )

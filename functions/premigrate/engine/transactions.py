"""Transactional migrations: one file, or a group of consecutive ones (``--all-or-nothing``, Flyway's
``group``), applied in one transaction with their history rows, so a failure anywhere leaves the database
as it was before them.

A group is sent a file per round trip (its statements, the previous file's history row and the session
reset between files ride along): fewer round trips than psql needs for the same files. Should the server
refuse anything there, the group is rolled back and run again statement by statement, which names the
failing file, line and column as precisely as a single file's run does (and applies the group, when what
failed was passing, such as a lock wait).
"""

from __future__ import annotations

from collections.abc import Sequence

from premigrate.engine.applying import FRESH_SESSION, OWN_IDENTITY, SESSION_RESET, Applier
from premigrate.engine.clock import ms_since
from premigrate.engine.database import LOCK_NOT_AVAILABLE, ServerError
from premigrate.engine.errors import LockLostError, MigrationFailedError
from premigrate.engine.migrations import ExecutionMode, Migration
from premigrate.engine.report import MigrationRun
from premigrate.engine.statement_kinds import Statement

_LOCK_LOST = "premigrate: the migration lock was released"


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
    try:
        return _in_few_round_trips(applier, group)
    except ServerError:
        applier.rollback()
        applier.fresh_session()
    started = applier.clock.monotonic()
    attempts = apply_in_one_transaction(applier, group)
    each_ms = ms_since(applier.clock, started) / len(group)
    return [MigrationRun.of(migration, each_ms, attempts) for migration in group]


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
    grouped = len(migrations) > 1
    pending_sql = f"BEGIN; {applier.timeouts('SET LOCAL')};\n"
    last_row = ""
    for index, migration in enumerate(migrations):
        started = applier.clock.monotonic()
        if grouped and applier.progress:
            applier.progress("started", MigrationRun.of(migration))
        if not migration.statements:
            applier.db.run(pending_sql)
            pending_sql = ""
        for statement in migration.statements:
            applier.execute(migration, statement, prefix=pending_sql)
            pending_sql = ""
        last_row = applier.row_sql(migration, started, success=True)
        if index < len(migrations) - 1:  # the last row is written with COMMIT
            pending_sql = _between_files(applier, migration, last_row)
        if grouped and applier.progress:
            applier.progress("finished", MigrationRun.of(migration, ms_since(applier.clock, started)))
    _, lock_held = applier.session_state()
    if not lock_held:
        raise _lock_lost(migrations)
    applier.record_or_fail(migrations[-1], f"{last_row};\nCOMMIT;\n{FRESH_SESSION}")


def _in_few_round_trips(applier: Applier, group: list[Migration]) -> list[MigrationRun]:
    runs = []
    pending_sql = f"BEGIN; {applier.timeouts('SET LOCAL')};\n"
    for migration in group:
        if applier.progress:
            applier.progress("started", MigrationRun.of(migration))
        started = applier.clock.monotonic()
        for batch in _batches(migration.statements):
            applier.db.run(pending_sql + "".join(f"{statement.text}\n;\n" for statement in batch))
            pending_sql = ""
        pending_sql += _between_files(applier, migration, applier.row_sql(migration, started, success=True))
        runs.append(MigrationRun.of(migration, ms_since(applier.clock, started)))
        if applier.progress:
            applier.progress("finished", runs[-1])
    check = (
        f"DO $premigrate$ BEGIN IF NOT {applier.lock.held_sql} THEN RAISE EXCEPTION '{_LOCK_LOST}'; END IF; "
        "END $premigrate$"
    )
    try:
        applier.db.run(f"{pending_sql}{check};\nCOMMIT;\n{FRESH_SESSION}")
    except ServerError as error:
        if error.message == _LOCK_LOST:
            applier.rollback()
            applier.fresh_session()
            raise _lock_lost(group) from None
        raise
    return runs


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

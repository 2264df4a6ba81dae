"""The engine against real PostgreSQL: applying, failing cleanly, validating, adopting, retrying."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from premigrate.adapters.connection import params_from_url
from premigrate.adapters.folder import load_folder
from premigrate.adapters.postgres import connect
from premigrate.engine import (
    ConfigurationError,
    Engine,
    LockNotAcquiredError,
    MigrationFailedError,
    Settings,
    ValidationError,
)
from premigrate.engine.clock import SYSTEM_CLOCK, TimeBudget
from premigrate.engine.database import Database
from wrapped_database import WrappedDatabase

USERS = "CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL);\n"


@pytest.fixture
def make_engine(database_url: str) -> Iterator:
    connections = []

    def make(folder: Path, time_left=None, clock=SYSTEM_CLOCK, costs=None, **settings) -> Engine:
        """``costs``: {text: seconds} a statement containing the text takes on the scripted ``clock``."""
        connection = connect(params_from_url(database_url))
        connections.append(connection)
        database = ScriptedDatabase(connection, clock, costs) if costs else connection
        return Engine(database, load_folder(folder), Settings(**settings), time_left=time_left, clock=clock)

    yield make
    for connection in connections:
        connection.close()


class ScriptedDatabase(WrappedDatabase):
    """A real session whose statements take scripted time: one that contains a key of ``costs`` moves the
    clock on by its seconds, so time-budget rules are tested without waiting and whatever the machine's load."""

    def __init__(self, database: Database, clock, costs: dict[str, float]) -> None:
        super().__init__(database)
        self.clock, self.costs = clock, costs

    def run(self, sql: str, **params):
        self.clock.advance(sum(seconds for text, seconds in self.costs.items() if text in sql))
        return self.database.run(sql, **params)


def history(db) -> list[tuple]:
    return [
        tuple(r)
        for r in db.run(
            "SELECT installed_rank, version, script, type, success, execution_mode FROM premigrate_schema_history "
            "ORDER BY installed_rank"
        )
    ]


def table_exists(db, name: str) -> bool:
    return db.run("SELECT to_regclass(:name) IS NOT NULL", name=name)[0][0]


def test_applies_everything_once_then_is_up_to_date(write_migrations, make_engine, db) -> None:
    folder = write_migrations(
        {
            "V1__users.sql": USERS,
            "V2__sessions.sql": "CREATE TABLE sessions (id int, user_id int REFERENCES users);\n",
            "V3__index.sql": "CREATE INDEX CONCURRENTLY sessions_user_idx ON sessions (user_id);\n",
            "V4__empty.sql": "-- superseded, kept so the history stays complete\n",
            "R__view.sql": "CREATE OR REPLACE VIEW user_emails AS SELECT email FROM users;\n",
        }
    )
    report = make_engine(folder).migrate()
    assert report.schema_version_before is None
    assert report.schema_version_after == "4"
    assert [(r.script, r.mode) for r in report.applied] == [
        ("V1__users.sql", "transaction"),
        ("V2__sessions.sql", "transaction"),
        ("V3__index.sql", "no-transaction"),
        ("V4__empty.sql", "transaction"),
        ("R__view.sql", "transaction"),
    ]
    assert all(r.duration_ms is not None and r.duration_ms >= 0 for r in report.applied)
    assert history(db) == [
        (1, "1", "V1__users.sql", "SQL", True, "transaction"),
        (2, "2", "V2__sessions.sql", "SQL", True, "transaction"),
        (3, "3", "V3__index.sql", "SQL", True, "no-transaction"),
        (4, "4", "V4__empty.sql", "SQL", True, "transaction"),
        (5, None, "R__view.sql", "SQL_REPEATABLE", True, "transaction"),
    ]
    assert db.run("SELECT indisvalid FROM pg_index WHERE indexrelid = 'sessions_user_idx'::regclass") == [[True]]

    again = make_engine(folder).migrate()
    assert again.applied == [] and again.pending == []
    assert again.schema_version_before == again.schema_version_after == "4"
    assert len(history(db)) == 5


def test_changed_repeatable_is_applied_again(write_migrations, make_engine, db) -> None:
    folder = write_migrations({"V1__users.sql": USERS, "R__view.sql": "CREATE VIEW v AS SELECT 1 AS one;"})
    make_engine(folder).migrate()
    write_migrations({"R__view.sql": "CREATE OR REPLACE VIEW v AS SELECT 1 AS one, 2 AS two;"})
    report = make_engine(folder).migrate()
    assert [r.script for r in report.applied] == ["R__view.sql"]
    assert db.run("SELECT two FROM v") == [[2]]


def test_failing_statement_leaves_no_trace_and_names_file_line_and_column(write_migrations, make_engine, db) -> None:
    folder = write_migrations(
        {
            "V1__users.sql": USERS,
            "V2__orders.sql": "CREATE TABLE orders (id int);\nINSERT INTO orders VALUES (1);\n"
            "INSERT INTO orders SELECT id FROM missing_table;\n",
        }
    )
    with pytest.raises(MigrationFailedError) as caught:
        make_engine(folder).migrate()
    message = str(caught.value)
    assert message.startswith('V2__orders.sql:3:35: ERROR 42P01: relation "missing_table" does not exist')
    assert "rolled back: nothing of it is applied" in message
    assert (caught.value.script, caught.value.line, caught.value.column) == ("V2__orders.sql", 3, 35)
    assert caught.value.report is not None
    assert [r.script for r in caught.value.report.applied] == ["V1__users.sql"]
    assert not table_exists(db, "orders")
    assert [r[2] for r in history(db)] == ["V1__users.sql"]

    write_migrations({"V2__orders.sql": "CREATE TABLE orders (id int);\nINSERT INTO orders VALUES (1);\n"})
    assert [r.script for r in make_engine(folder).migrate().applied] == ["V2__orders.sql"]


def test_error_without_a_position_points_at_the_statement(write_migrations, make_engine) -> None:
    folder = write_migrations({"V1__bad.sql": "SELECT 1;\n\n  SELECT 1 / 0;\n"})
    with pytest.raises(MigrationFailedError, match=r"^V1__bad.sql:3:3: ERROR 22012: division by zero"):
        make_engine(folder).migrate()


def test_error_inside_a_function_body_reports_its_context(write_migrations, make_engine) -> None:
    folder = write_migrations(
        {"V1__fn.sql": "DO $$\nBEGIN\n  RAISE EXCEPTION 'custom failure' USING HINT = 'do the thing';\nEND\n$$;\n"}
    )
    with pytest.raises(MigrationFailedError) as caught:
        make_engine(folder).migrate()
    message = str(caught.value)
    assert message.startswith("V1__fn.sql:1:1: ERROR P0001: custom failure")
    assert "HINT: do the thing" in message
    assert "CONTEXT: PL/pgSQL function inline_code_block line 3 at RAISE" in message


def test_own_transaction_file_runs_as_psql_would(write_migrations, make_engine, db) -> None:
    folder = write_migrations(
        {
            "V1__own.sql": "BEGIN;\nCREATE TABLE a (id int);\nCOMMIT;\nCREATE INDEX CONCURRENTLY a_id ON a (id);\n",
        }
    )
    report = make_engine(folder).migrate()
    assert [(r.mode, r.mode_reason) for r in report.applied] == [
        ("own-transaction", "detected: the file has its own BEGIN/COMMIT")
    ]
    assert table_exists(db, "a_id")
    assert history(db)[0][4:] == (True, "own-transaction")


@pytest.mark.reliability
def test_failed_no_transaction_migration_blocks_until_repaired(write_migrations, make_engine, db, reliability) -> None:
    folder = write_migrations(
        {
            "V1__t.sql": "CREATE TABLE t (a int);\nINSERT INTO t VALUES (1), (1);\n",
            "V2__unique.sql": "CREATE UNIQUE INDEX CONCURRENTLY t_a_key ON t (a);\n",
        }
    )
    with pytest.raises(MigrationFailedError) as caught:
        make_engine(folder).migrate()
    message = str(caught.value)
    assert message.startswith("V2__unique.sql:1:1: ERROR 23505: could not create unique index")
    assert "recorded as failed" in message
    assert "INVALID index public.t_a_key" in message
    assert "DROP INDEX CONCURRENTLY public.t_a_key" in message
    assert history(db)[-1][2:5] == ("V2__unique.sql", "SQL", False)

    with pytest.raises(ValidationError, match=r"V2__unique.sql failed on .* run `premigrate repair`"):
        make_engine(folder).migrate()

    db.run("DELETE FROM t WHERE ctid = (SELECT max(ctid) FROM t)")
    repair = make_engine(folder).repair()
    assert repair.notes[0] == "removed the failed record of V2__unique.sql: it will run again"
    assert "INVALID index public.t_a_key" in repair.notes[1]
    db.run("DROP INDEX CONCURRENTLY public.t_a_key")
    assert [r.script for r in make_engine(folder).migrate().applied] == ["V2__unique.sql"]
    assert db.run("SELECT indisvalid FROM pg_index WHERE indexrelid = 't_a_key'::regclass") == [[True]]
    reliability(
        "a failed CREATE INDEX CONCURRENTLY leaves an INVALID index",
        1,
        "recorded failed, INVALID index named with the DROP to run, blocks until repair, then applies",
        "as documented",
    )


def test_validation_problems_stop_the_run_before_anything_is_applied(write_migrations, make_engine, db) -> None:
    folder = write_migrations({"V1__users.sql": USERS, "V2__a.sql": "CREATE TABLE a ();", "V4__c.sql": "SELECT 1;"})
    make_engine(folder).migrate()
    (folder / "V2__a.sql").unlink()
    write_migrations(
        {
            "V1__users.sql": USERS + "-- edited\n",
            "V3__b.sql": "CREATE TABLE b ();",
            "V5__d.sql": "CREATE TABLE d ();",
        }
    )
    with pytest.raises(ValidationError) as caught:
        make_engine(folder).migrate()
    problems = caught.value.problems
    assert len(problems) == 3
    assert problems[0].startswith("V1__users.sql was edited after it was applied")
    assert problems[1].startswith("V2__a.sql (version 2) is applied but its file is gone")
    assert problems[2].startswith("V3__b.sql (version 3) is pending but version 4 is already applied")
    assert not table_exists(db, "d")
    assert len(history(db)) == 3

    status = make_engine(folder).status()  # status shows the same without refusing
    assert {s.script: s.state for s in status.states}["V1__users.sql"] == "checksum-drift"


def test_repair_records_the_checksum_of_an_edited_file(write_migrations, make_engine) -> None:
    folder = write_migrations({"V1__users.sql": USERS})
    make_engine(folder).migrate()
    write_migrations({"V1__users.sql": "-- a comment that changes nothing\n" + USERS})
    with pytest.raises(ValidationError):
        make_engine(folder).validate()
    assert make_engine(folder).repair().notes == ["recorded the new checksum of V1__users.sql"]
    assert make_engine(folder).validate().pending == []


def test_existing_database_must_be_baselined_first(write_migrations, make_engine, db) -> None:
    db.run(USERS)  # made by the old "if users does not exist, run everything" recipe
    folder = write_migrations(
        {
            "V1__users.sql": USERS,
            "V2__index.sql": "CREATE INDEX users_email ON users (email);",
            "V3__orders.sql": "CREATE TABLE orders ();",
        }
    )
    with pytest.raises(ValidationError, match=r"already has tables \(public\.users\).*premigrate baseline --version V"):
        make_engine(folder).migrate()
    assert not table_exists(db, "premigrate_schema_history")

    baseline = make_engine(folder).baseline("2")
    assert baseline.schema_version_after == "2"
    report = make_engine(folder).migrate()
    assert [r.script for r in report.applied] == ["V3__orders.sql"]
    assert report.schema_version_before == "2" and report.schema_version_after == "3"
    assert {s.script: s.state for s in make_engine(folder).status().states}["V1__users.sql"] == "below-baseline"
    with pytest.raises(ValidationError, match="a baseline is only for a database that has no history yet"):
        make_engine(folder).baseline("3")


def test_lock_timeout_is_retried_until_the_table_is_free(write_migrations, make_engine, database_url, db) -> None:
    folder = write_migrations({"V1__t.sql": "CREATE TABLE t (a int);"})
    make_engine(folder).migrate()
    write_migrations({"V2__alter.sql": "ALTER TABLE t ADD COLUMN b int;"})
    holder = connect(params_from_url(database_url))
    holder.run("BEGIN; LOCK TABLE t IN ACCESS SHARE MODE")
    release = threading.Timer(0.6, lambda: holder.run("COMMIT"))
    release.start()
    try:
        report = make_engine(
            folder, lock_timeout_seconds=0.2, retry_pause_seconds=0.2, lock_timeout_retries=5
        ).migrate()
    finally:
        release.join(timeout=10)
        holder.close()
    assert report.applied[0].attempts > 1
    assert db.run("SELECT count(*) FROM information_schema.columns WHERE table_name = 't' AND column_name = 'b'") == [
        [1]
    ]


@pytest.mark.reliability
def test_lock_timeout_gives_up_with_a_clear_error(write_migrations, make_engine, database_url, db, reliability) -> None:
    folder = write_migrations({"V1__t.sql": "CREATE TABLE t (a int);"})
    make_engine(folder).migrate()
    write_migrations({"V2__alter.sql": "ALTER TABLE t ADD COLUMN b int;"})
    holder = connect(params_from_url(database_url))
    holder.run("BEGIN; LOCK TABLE t IN ACCESS SHARE MODE")
    try:
        started = time.monotonic()
        with pytest.raises(MigrationFailedError) as caught:
            make_engine(folder, lock_timeout_seconds=0.1, retry_pause_seconds=0.05, lock_timeout_retries=2).migrate()
        elapsed = time.monotonic() - started
    finally:
        holder.run("ROLLBACK")
        holder.close()
    assert caught.value.sqlstate == "55P03"
    assert "waited longer than lock_timeout" in str(caught.value)
    assert elapsed < 5
    assert len(history(db)) == 1
    reliability(
        "lock_timeout: the holder never finishes",
        3,
        "gives up after the retries with 55P03 and a clear message; nothing recorded",
        f"gave up after {elapsed:.2f} s",
    )


def test_migration_lock_held_too_long_names_the_holder(write_migrations, make_engine, database_url) -> None:
    folder = write_migrations({"V1__users.sql": USERS})
    holder = connect(params_from_url(database_url), application_name="deploy-of-colleague")
    engine = make_engine(folder)
    holder.run("SELECT pg_advisory_lock(:a, :b)", a=0x5052454D, b=engine.lock.key)
    try:
        with pytest.raises(LockNotAcquiredError) as caught:
            make_engine(folder, lock_wait_seconds=0.3).migrate()
    finally:
        holder.close()
    message = str(caught.value)
    assert "application_name 'deploy-of-colleague'" in message
    assert "pid " in message and "connected since" in message
    assert engine.migrate().applied  # once the holder is gone, the lock is free again


def test_history_in_its_own_schema(write_migrations, make_engine, db) -> None:
    folder = write_migrations({"V1__users.sql": USERS})
    make_engine(folder, schema="ops").migrate()
    assert db.run("SELECT count(*) FROM ops.premigrate_schema_history") == [[1]]


class _TransactionPooler:
    """What a transaction-mode pooler does to a session: each statement may land on another server session.
    Here the lock statement goes to one real session and everything else to another."""

    def __init__(self, lock_session, other_session) -> None:
        self.lock_session, self.other_session = lock_session, other_session

    def run(self, sql: str, **params):
        session = self.lock_session if "pg_try_advisory_lock" in sql else self.other_session
        return session.run(sql, **params)


def test_lock_behind_a_transaction_pooler_is_refused(write_migrations, database_url, db) -> None:
    folder = write_migrations({"V1__users.sql": USERS})
    lock_session = connect(params_from_url(database_url))
    try:
        engine = Engine(_TransactionPooler(lock_session, db), load_folder(folder))
        with pytest.raises(ConfigurationError, match=r"transaction-mode connection pooler.*direct endpoint") as caught:
            engine.migrate()
        assert not table_exists(db, "users")
        (lock_pid,) = lock_session.run("SELECT pg_backend_pid()")[0]
        assert f"The lock may stay with server process {lock_pid} until the pooler closes" in str(caught.value)
    finally:
        lock_session.close()


@pytest.mark.parametrize(
    ("seconds_left", "applied"),
    [
        (1.5, ["V1__slow.sql"]),  # after V1 (0.8 s), 0.7 s is left: inside the 1 s margin, so V2 waits
        (1.9, ["V1__slow.sql", "V2__next.sql"]),  # after V1, 1.1 s is left: V2 still starts
    ],
)
def test_time_budget_starts_migrations_only_before_the_margin(
    write_migrations, make_engine, db, clock, seconds_left, applied
) -> None:
    folder = write_migrations({"V1__slow.sql": "SELECT 'slow';", "V2__next.sql": "CREATE TABLE next ();"})
    deadline = clock.now + seconds_left
    engine = make_engine(
        folder, lambda: deadline - clock.now, clock=clock, costs={"SELECT 'slow'": 0.8}, time_margin_seconds=1.0
    )
    report = engine.migrate()
    assert [r.script for r in report.applied] == applied
    assert table_exists(db, "next") == (len(applied) == 2)
    if len(applied) == 1:
        assert [r.script for r in report.pending] == ["V2__next.sql"]
        assert report.stopped_for_time
        assert "stopped before V2__next.sql: less than 1 s of the time budget left" in report.notes[-1]


@pytest.mark.parametrize(
    ("time_left", "configured", "expected_ms"),
    [
        (None, 0.0, 0),  # no budget, no timeout: none
        (None, 5.0, 5000),  # no budget: the configured one
        (10.0, 0.0, 8000),  # 6 s to the margin of 4 s, plus half the margin
        (10.0, 3.0, 3000),  # the configured one when it is shorter
        (4.01, 0.0, 2010),
        (0.5, 0.0, 100),  # never below 100 ms: a statement always gets a chance to start
    ],
)
def test_time_budget_caps_the_statement_timeout(time_left, configured, expected_ms) -> None:
    budget = TimeBudget(None if time_left is None else (lambda: time_left), margin_seconds=4.0)
    assert budget.statement_timeout_ms(configured) == expected_ms


def test_time_budget_cancels_a_statement_that_would_outlive_it(write_migrations, make_engine, db, clock) -> None:
    folder = write_migrations({"V1__too_slow.sql": "CREATE TABLE t ();\nSELECT pg_sleep(30);"})
    engine = make_engine(folder, time_left=lambda: 1.5, clock=clock, time_margin_seconds=1.0)
    started = time.monotonic()
    with pytest.raises(MigrationFailedError, match="ERROR 57014: canceling statement due to statement timeout"):
        engine.migrate()  # the server cancels it at 0.5 s to the margin + half the margin = 1 s
    assert time.monotonic() - started < 20  # cancelled by the server, not waited out
    assert not table_exists(db, "t")


def test_lock_wait_is_measured_on_the_clock(write_migrations, make_engine, database_url, clock) -> None:
    folder = write_migrations({"V1__users.sql": USERS})
    holder = connect(params_from_url(database_url))
    engine = make_engine(folder, clock=clock, lock_wait_seconds=300)
    holder.run("SELECT pg_advisory_lock(:a, :b)", a=0x5052454D, b=engine.lock.key)
    try:
        with pytest.raises(LockNotAcquiredError, match=r"for the whole lock wait limit \(300 s\)"):
            engine.migrate()
    finally:
        holder.close()
    assert 299.999 <= clock.slept <= 301  # polled until the wait was used up, never beyond it


def test_database_ahead_of_the_files_is_accepted_only_when_asked(write_migrations, make_engine, db) -> None:
    folder = write_migrations({"V1__users.sql": USERS, "V2__orders.sql": "CREATE TABLE orders ();"})
    make_engine(folder).migrate()
    (folder / "V2__orders.sql").unlink()  # the older set, as a stack rollback deploys it
    with pytest.raises(ValidationError, match=r"V2__orders.sql .* is applied but its file is gone"):
        make_engine(folder).migrate()
    report = make_engine(folder, accept_database_ahead=True).migrate()
    assert report.applied == [] and report.schema_version_after == "2"
    assert "the database is at version 2, ahead of this migration set (which ends at 1)" in report.notes[0]
    assert len(history(db)) == 2


@pytest.mark.reliability
def test_invalid_leftover_index_is_not_taken_for_a_success(write_migrations, make_engine, db, reliability) -> None:
    """What an interrupted CREATE INDEX CONCURRENTLY leaves, and IF NOT EXISTS would silently keep."""
    folder = write_migrations({"V1__t.sql": "CREATE TABLE t (a int);\nINSERT INTO t VALUES (1), (1);\n"})
    make_engine(folder).migrate()
    with pytest.raises(Exception, match="could not create unique index"):
        db.run("CREATE UNIQUE INDEX CONCURRENTLY t_a_key ON t (a)")
    db.run("DELETE FROM t WHERE ctid = (SELECT max(ctid) FROM t)")
    write_migrations({"V2__unique.sql": "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS t_a_key ON t (a);\n"})
    with pytest.raises(MigrationFailedError) as caught:
        make_engine(folder).migrate()
    message = str(caught.value)
    assert "V2__unique.sql: its statements ran, but the index public.t_a_key it names is INVALID" in message
    assert "DROP INDEX CONCURRENTLY public.t_a_key" in message
    db.run("DROP INDEX CONCURRENTLY public.t_a_key")
    make_engine(folder).repair()
    assert [r.script for r in make_engine(folder).migrate().applied] == ["V2__unique.sql"]

    reliability(
        "a rerun's CREATE INDEX CONCURRENTLY IF NOT EXISTS meets an INVALID leftover",
        1,
        "not recorded as a success; the documented repair path then applies it",
        "as documented",
    )


def test_history_keeps_odd_file_names_exactly(write_migrations, make_engine, db) -> None:
    name = "V1__it's_a_back\\slash_ünï.sql"
    folder = write_migrations({name: "CREATE TABLE odd ();"})
    make_engine(folder).migrate()
    assert db.run("SELECT script, description FROM premigrate_schema_history") == [[name, "it's a back\\slash ünï"]]
    assert make_engine(folder).validate().pending == []


def test_error_position_in_the_first_statement_ignores_what_rides_with_it(write_migrations, make_engine) -> None:
    folder = write_migrations({"V1__typo.sql": "  SELEC 1;\n"})
    with pytest.raises(MigrationFailedError, match=r"^V1__typo.sql:1:3: ERROR 42601: syntax error at or near"):
        make_engine(folder).migrate()

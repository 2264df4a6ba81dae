"""Exactly once, even when a migration or the environment fights back (issue 10, groups A and C): a
migration cannot defeat the bookkeeping, session state never leaks from one migration into the next, and
server errors outside migration statements name what happened."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from premigrate.adapters.connection import params_from_url
from premigrate.adapters.folder import load_folder
from premigrate.adapters.postgres import connect
from premigrate.engine import ConfigurationError, Engine, MigrationFailedError, Settings, ValidationError
from premigrate.engine.errors import LockLostError
from premigrate.engine.migrations import Migration

USERS = "CREATE TABLE users (id int PRIMARY KEY);\n"
pytestmark = pytest.mark.reliability


@pytest.fixture(autouse=True)
def _row(request, reliability) -> Iterator[None]:
    """A row of RELIABILITY.md per case: what the test proves is its name; its result is its outcome."""
    yield
    what = request.node.originalname.removeprefix("test_").replace("_", " ")
    reliability(f"exactly once: {what}", 1, "as the test's name says, on real PostgreSQL", "asserted")


@pytest.fixture
def migrate(database_url: str) -> Iterator:
    """migrate(folder, url=None, **settings) -> Report, on a connection of its own."""
    connections = []

    def run(folder: Path, url: str | None = None, **settings):
        connection = connect(params_from_url(url or database_url))
        connections.append(connection)
        return Engine(connection, load_folder(folder), Settings(retry_pause_seconds=0.01, **settings)).migrate()

    yield run
    for connection in connections:
        connection.close()


@pytest.fixture
def without_static_checks(monkeypatch) -> None:
    """The plan refuses the obvious forms of these files before they run; this proves the run-time guard
    that catches what no reading of the text can."""
    monkeypatch.setattr(Migration, "check", lambda self: [])


def rows(db, sql: str) -> list[list]:
    return db.run(sql)


def history(db) -> list[tuple]:
    return [tuple(r) for r in db.run("SELECT script, success FROM premigrate_schema_history ORDER BY installed_rank")]


# ---- A. the bookkeeping ------------------------------------------------------------------------------


def test_a_file_left_in_a_chained_transaction_is_caught_and_never_runs_twice(
    write_migrations, migrate, db, without_static_checks
) -> None:
    folder = write_migrations(
        {
            "V1__counter.sql": "CREATE TABLE counter (n int);",
            "V2__s.sql": "BEGIN; INSERT INTO counter VALUES (1); COMMIT AND CHAIN;",
        }
    )
    with pytest.raises(MigrationFailedError, match=r"V2__s.sql: the file ends with a transaction still open"):
        migrate(folder)
    for _ in range(2):  # the failure is recorded: later runs stop instead of inserting again
        with pytest.raises(ValidationError, match=r"V2__s.sql failed on"):
            migrate(folder)
    assert rows(db, "SELECT count(*) FROM counter") == [[1]]
    assert history(db) == [("V1__counter.sql", True), ("V2__s.sql", False)]


def test_a_chained_or_unfinished_transaction_is_refused_before_anything_runs(write_migrations, migrate, db) -> None:
    for text in (
        "BEGIN; INSERT INTO counter VALUES (1); COMMIT AND CHAIN;",
        "-- premigrate:no-transaction\nBEGIN;\nINSERT INTO counter VALUES (1);\n",
    ):
        folder = write_migrations({"V1__counter.sql": "CREATE TABLE counter (n int);", "V2__s.sql": text})
        with pytest.raises(Exception, match=r"V2__s.sql") as caught:
            migrate(folder)
        assert "transaction" in str(caught.value)
        assert rows(db, "SELECT to_regclass('counter')") == [[None]]  # nothing ran, V1 included


def test_a_migration_ending_as_another_role_is_still_recorded_once(write_migrations, migrate, db, limited_role) -> None:
    folder = write_migrations(
        {
            "V1__t.sql": f"-- premigrate:no-transaction\nCREATE TABLE t1 (id int);\nSET ROLE {limited_role};\n",
            "V2__u.sql": f"CREATE TABLE t2 (id int);\nSET ROLE {limited_role};\n",
            "V3__who.sql": "CREATE TABLE who AS SELECT current_user AS name;",
        }
    )
    assert [r.script for r in migrate(folder).applied] == ["V1__t.sql", "V2__u.sql", "V3__who.sql"]
    assert migrate(folder).applied == []
    assert history(db) == [("V1__t.sql", True), ("V2__u.sql", True), ("V3__who.sql", True)]
    assert rows(db, "SELECT name = current_user FROM who") == [[True]]  # V3 ran as premigrate's own role


def test_a_file_name_that_cannot_be_recorded_is_refused_before_running(tmp_path, migrate, db) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "V1__users.sql").write_text(USERS)
    Path(os.fsdecode(bytes(folder) + b"/V2__caf\xe9.sql")).write_text(
        "-- premigrate:no-transaction\nCREATE TABLE t2 ();"
    )
    with pytest.raises(Exception, match="UTF-8"):
        migrate(folder)
    assert rows(db, "SELECT to_regclass('t2'), to_regclass('users')") == [[None, None]]


@pytest.mark.parametrize("runs", [[None], ["1", None]], ids=["one run", "two runs"])
def test_session_state_never_leaks_into_the_next_migration(write_migrations, migrate, db, runs) -> None:
    folder = write_migrations(
        {
            "V1__other.sql": "CREATE SCHEMA other;\nSET search_path = other;\nSET ROLE pg_monitor;\n",
            "V2__t2.sql": "CREATE TABLE t2 (id int);",
            "V3__dump.sql": "SELECT pg_catalog.set_config('search_path', '', false);\nCREATE TABLE public.t3 ();",
            "V4__t4.sql": "CREATE TEMP TABLE scratch ();\nCREATE TABLE t4 (id int);",
            "V5__t5.sql": "CREATE TEMP TABLE scratch ();\nCREATE TABLE t5 (id int);",
        }
    )
    for target in runs:
        migrate(folder, target=target)
    assert rows(db, "SELECT to_regclass('public.t2') IS NOT NULL, to_regclass('other.t2')") == [[True, None]]
    assert rows(db, "SELECT to_regclass('public.t4') IS NOT NULL, to_regclass('public.t5') IS NOT NULL") == [
        [True, True]
    ]


def test_a_transaction_mode_migration_that_releases_the_lock_is_rolled_back(
    write_migrations, migrate, db, without_static_checks
) -> None:
    folder = write_migrations({"V1__users.sql": USERS, "R__unlock.sql": "SELECT pg_advisory_unlock_all();"})
    with pytest.raises(LockLostError, match=r"R__unlock.sql released premigrate's migration lock.*rolled back"):
        migrate(folder)
    assert history(db) == [("V1__users.sql", True)]


def test_a_no_transaction_migration_that_releases_the_lock_stops_the_run(
    write_migrations, migrate, db, without_static_checks
) -> None:
    folder = write_migrations(
        {
            "V1__unlock.sql": "-- premigrate:no-transaction\nCREATE TABLE t1 ();\nSELECT pg_advisory_unlock_all();\n",
            "V2__next.sql": "CREATE TABLE t2 ();",
        }
    )
    with pytest.raises(LockLostError, match=r"took the lock back and recorded V1__unlock.sql"):
        migrate(folder)
    assert history(db) == [("V1__unlock.sql", True)]  # its effects are recorded; V2 waits for the next run
    assert [r.script for r in migrate(folder).applied] == ["V2__next.sql"]


def test_a_role_that_owns_its_schema_but_may_not_create_schemas_can_migrate(
    write_migrations, database_url, db, migrate, monkeypatch
) -> None:
    role = f"owner_{uuid.uuid4().hex[:8]}"
    db.run(f"CREATE ROLE {role} LOGIN")
    db.run(f"CREATE SCHEMA app AUTHORIZATION {role}")
    try:
        url = database_url.replace("://postgres", f"://{role}", 1)
        assert params_from_url(url).user == role
        folder = write_migrations({"V1__t.sql": "CREATE TABLE app.t (id int);"})
        assert [r.script for r in migrate(folder, url, schema="app").applied] == ["V1__t.sql"]
        from premigrate.local_invoke import invoke

        monkeypatch.setenv("PREMIGRATE_DATABASE_URL", url)
        monkeypatch.setenv("PREMIGRATE_MIGRATIONS", str(folder))
        monkeypatch.setenv("PREMIGRATE_SCHEMA", "app")
        result = invoke({"action": "status"})  # the Lambda's run ledger is created in app too
        assert result["ok"], result
    finally:
        db.run("DROP SCHEMA app CASCADE")
        db.run(f"DROP ROLE {role}")


# ---- C. indexes, locks and errors outside statements --------------------------------------------------


def make_invalid_index(db, name: str, table: str) -> None:
    db.run(f"CREATE TABLE {table} (a int); INSERT INTO {table} VALUES (1), (1)")
    with pytest.raises(Exception, match="could not create unique index"):
        db.run(f"CREATE UNIQUE INDEX CONCURRENTLY {name} ON {table} (a)")


def test_an_invalid_index_elsewhere_does_not_fail_a_valid_one(write_migrations, migrate, db) -> None:
    folder = write_migrations({"V1__t.sql": "CREATE TABLE t (a int);"})
    migrate(folder)
    db.run("CREATE SCHEMA archive")
    make_invalid_index(db, "x", "archive.t")
    write_migrations({"V2__x.sql": "CREATE INDEX CONCURRENTLY IF NOT EXISTS x ON t (a);"})
    assert [r.script for r in migrate(folder).applied] == ["V2__x.sql"]
    assert rows(db, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'public.x'::regclass") == [[True]]


def test_an_index_build_that_times_out_says_what_it_left(write_migrations, migrate, db, database_url) -> None:
    folder = write_migrations({"V1__t.sql": "CREATE TABLE t (a int);"})
    migrate(folder)
    old_transaction = connect(params_from_url(database_url))
    # An old snapshot: CREATE INDEX CONCURRENTLY waits for it after creating its (still INVALID) index.
    old_transaction.run("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM pg_class")
    try:
        write_migrations({"V2__i.sql": "CREATE INDEX CONCURRENTLY i ON t (a);"})
        with pytest.raises(MigrationFailedError) as caught:
            migrate(folder, lock_timeout_seconds=0.2)
    finally:
        old_transaction.close()
    message = str(caught.value)
    assert "ERROR 55P03" in message and "It left the INVALID index public.i behind" in message
    assert "DROP INDEX CONCURRENTLY public.i" in message
    assert "already exists" not in message


def test_a_lock_holder_in_another_database_is_not_named(write_migrations, server, database_url, migrate) -> None:
    folder = write_migrations({"V1__users.sql": USERS})
    key_of = Engine(connect(params_from_url(database_url)), load_folder(folder)).lock.key
    holders = []
    with server.database() as other_url:
        for url, name in ((other_url, "holder-elsewhere"), (database_url, "holder-here")):
            holder = connect(params_from_url(url), application_name=name)
            holder.run("SELECT pg_advisory_lock(:a, :b)", a=0x5052454D, b=key_of)
            holders.append(holder)
        try:
            with pytest.raises(Exception, match="holder-here") as caught:
                migrate(folder, lock_wait_seconds=0.2)
            assert "holder-elsewhere" not in str(caught.value)
        finally:
            for holder in holders:
                holder.close()


def test_a_deferred_constraint_violated_at_commit_names_the_file(write_migrations, migrate, db) -> None:
    folder = write_migrations(
        {
            "V1__tables.sql": "CREATE TABLE parent (id int PRIMARY KEY);\n"
            "CREATE TABLE child (parent_id int REFERENCES parent DEFERRABLE INITIALLY DEFERRED);",
            "V2__orphan.sql": "INSERT INTO child VALUES (42);",
        }
    )
    with pytest.raises(MigrationFailedError, match=r"V2__orphan.sql: ERROR 23503 when its history row was") as caught:
        migrate(folder)
    assert "rolled back: nothing of it is applied" in str(caught.value)
    assert rows(db, "SELECT count(*) FROM child") == [[0]]
    assert history(db) == [("V1__tables.sql", True)]


def test_errors_outside_migrations_say_what_to_fix(write_migrations, migrate, db) -> None:
    folder = write_migrations({"V1__users.sql": USERS, "V2__more.sql": "CREATE TABLE more ();"})
    with pytest.raises(ConfigurationError, match="schema of the history table must not be empty"):
        migrate(folder, schema="")
    with pytest.raises(ConfigurationError, match=r"lock_timeout 1e\+08 s is above PostgreSQL's longest"):
        migrate(folder, lock_timeout_seconds=99999999)
    with pytest.raises(ConfigurationError, match=r"lock_timeout 0.0001 s is below PostgreSQL's resolution of 1 ms"):
        migrate(folder, lock_timeout_seconds=0.0001)
    with pytest.raises(ConfigurationError, match=r"target version 99 is beyond the last migration file \(2\)"):
        migrate(folder, target="99")
    db.run("CREATE SCHEMA odd; CREATE TABLE odd.premigrate_schema_history (id int)")
    with pytest.raises(ValidationError, match=r'"odd"."premigrate_schema_history" is not a premigrate history'):
        migrate(folder, schema="odd")
    assert rows(db, "SELECT to_regclass('users')") == [[None]]


def test_a_hand_edited_history_is_a_listed_problem(write_migrations, migrate, db) -> None:
    folder = write_migrations({"V1__users.sql": USERS, "V2__more.sql": "CREATE TABLE more ();"})
    migrate(folder, target="1")
    db.run(
        "INSERT INTO premigrate_schema_history (installed_rank, version, description, type, script, checksum, "
        "execution_ms, success) VALUES (7, '1.x', 'x', 'SQL', 'V1.x__x.sql', NULL, 0, true), "
        "(8, '01', 'users', 'SQL', 'V01__users.sql', NULL, 0, true)"
    )
    with pytest.raises(ValidationError) as caught:
        migrate(folder)
    message = str(caught.value)
    assert "history row 7 (V1.x__x.sql) records the version '1.x', which is not a version" in message
    assert "the history records version 1 twice ('1' in row 1, '01' in row 8)" in message
    assert rows(db, "SELECT to_regclass('more')") == [[None]]


def test_the_existing_database_guard_looks_at_every_schema(write_migrations, migrate, db) -> None:
    db.run("CREATE TABLE legacy (id int)")
    folder = write_migrations({"V1__users.sql": USERS})
    with pytest.raises(ValidationError, match=r"already has tables \(public.legacy\)"):
        migrate(folder, schema="meta")


def test_repair_says_it_cannot_bring_back_a_missing_file(write_migrations, database_url, db) -> None:
    folder = write_migrations({"V1__users.sql": USERS, "V2__more.sql": "CREATE TABLE more ();"})
    connection = connect(params_from_url(database_url))
    try:
        Engine(connection, load_folder(folder)).migrate()
        (folder / "V2__more.sql").unlink()
        notes = Engine(connection, load_folder(folder)).repair().notes
    finally:
        connection.close()
    assert notes == ["V2__more.sql is applied but its file is gone: repair cannot fix that; put the file back"]

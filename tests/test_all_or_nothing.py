"""``--all-or-nothing``: a run's consecutive transactional migrations and their history rows in one
transaction, so a failure anywhere leaves the database as it was before the group. Real PostgreSQL,
through the command line."""

from __future__ import annotations

import json

import pytest

from premigrate.cli import main
from wrapped_database import WrappedDatabase

USERS = "CREATE TABLE users (id int PRIMARY KEY);\n"
CONCURRENT_INDEX = "CREATE INDEX CONCURRENTLY users_id ON users (id);\n"


def up(capsys, database_url: str, folder, *options: str) -> tuple[int, dict, str]:
    code = main(
        ["up", "--json", "--all-or-nothing", "--database-url", database_url, "--migrations", str(folder), *options]
    )
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def transactions(db) -> list[list[str]]:
    """The history rows, grouped by the transaction that wrote them (xmin)."""
    groups: dict[str, list[str]] = {}
    for script, xmin in db.run("SELECT script, xmin::text FROM premigrate_schema_history ORDER BY installed_rank"):
        groups.setdefault(xmin, []).append(script)
    return list(groups.values())


def tables(db) -> list[str]:
    return [row[0] for row in db.run("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]


def test_the_group_commits_in_one_transaction_and_a_no_transaction_file_splits_it(
    capsys, database_url, write_migrations, db
) -> None:
    folder = write_migrations(
        {
            "V1__users.sql": USERS,
            "V2__orders.sql": "CREATE TABLE orders (id int);\nINSERT INTO orders VALUES (1);\n",
            "V3__index.sql": CONCURRENT_INDEX,
            "V4__items.sql": "CREATE TABLE items (id int);\n",
        }
    )
    assert main(["plan", "--all-or-nothing", "--database-url", database_url, "--migrations", str(folder)]) == 0
    assert capsys.readouterr().out.splitlines()[-4:] == [
        "  group 1: V1 users (transaction: default)",
        "  group 1: V2 orders (transaction: default)",
        "  group 2: V3 index (no-transaction: detected: its statements cannot run in a transaction)",
        "  group 3: V4 items (transaction: default)",
    ]
    code, report, error = up(capsys, database_url, folder)
    assert code == 0, error
    assert [run["group"] for run in report["applied"]] == [1, 1, 2, 3]
    assert transactions(db) == [["V1__users.sql", "V2__orders.sql"], ["V3__index.sql"], ["V4__items.sql"]]


def test_a_failure_anywhere_leaves_the_database_as_it_was_before_the_group(
    capsys, database_url, write_migrations, db
) -> None:
    folder = write_migrations({"V1__users.sql": USERS})
    assert up(capsys, database_url, folder)[0] == 0
    write_migrations(
        {
            "V2__orders.sql": "CREATE TABLE orders (id int);\n",
            "V3__items.sql": "CREATE TABLE items (id int);\n",
            "V4__bad.sql": "CREATE TABLE more (id int);\n\nSELECT 1 / (SELECT count(*) FROM items);\n",
        }
    )
    code, _, error = up(capsys, database_url, folder)
    assert code == 1
    # A run-time error has no position in the statement: the group was run again statement by statement to find it.
    assert "V4__bad.sql:3:1: ERROR 22012: division by zero" in error
    assert (
        "The group of 3 migrations (V2__orders.sql … V4__bad.sql) was rolled back: nothing of it is applied." in error
    )
    assert tables(db) == ["premigrate_schema_history", "users"]
    assert [row[0] for row in db.run("SELECT script FROM premigrate_schema_history")] == ["V1__users.sql"]


def test_each_file_of_a_group_gets_the_session_it_would_get_alone(
    capsys, database_url, write_migrations, db, limited_role
) -> None:
    folder = write_migrations(
        {
            "V1__dump_header.sql": "SELECT pg_catalog.set_config('search_path', '', false);\n"
            f"SET ROLE {limited_role};\nSET lock_timeout = 0;\n",
            "V2__users.sql": USERS,  # would fail with "no schema has been selected" or as the limited role
            "V3__legacy_strings.sql": "SET standard_conforming_strings = off;\n"
            "CREATE TABLE quotes AS SELECT 'it\\'s' AS text;\n",
            "V4__modern_strings.sql": "INSERT INTO quotes VALUES ('a\\b');\n",
        }
    )
    code, _, error = up(capsys, database_url, folder)
    assert code == 0, error
    assert db.run("SELECT text FROM quotes ORDER BY 1") == [["a\\b"], ["it's"]]
    assert db.run("SELECT tableowner = current_user FROM pg_tables WHERE tablename = 'users'") == [[True]]
    assert len(transactions(db)) == 1


def test_a_file_that_releases_the_lock_rolls_back_the_whole_group(capsys, database_url, write_migrations, db) -> None:
    from premigrate.engine.lock import MigrationLock

    key = MigrationLock("public.premigrate_schema_history").key
    unlock = f"SELECT pg_advisory_unlock({0x5052454D}, {key});\n"  # what no reading of the text can tell
    folder = write_migrations({"V1__users.sql": USERS, "V2__unlock.sql": unlock, "V3__more.sql": "SELECT 1;\n"})
    code, _, error = up(capsys, database_url, folder)
    assert code == 1
    assert "one of the 3 migrations (V1__users.sql … V3__more.sql) released premigrate's migration lock" in error
    assert db.run("SELECT to_regclass('users')") == [[None]]
    assert db.run("SELECT count(*) FROM premigrate_schema_history") == [[0]]


@pytest.mark.parametrize("position", ["first", "last"])
def test_a_syntax_error_names_its_file_and_line(capsys, database_url, write_migrations, db, position) -> None:
    files = {"V1__users.sql": USERS, "V2__orders.sql": "CREATE TABLE orders (id int);\n"}
    bad = "V0__bad.sql" if position == "first" else "V3__bad.sql"
    files[bad] = "CREATE TABLE fine (id int);\nCREATE TABEL broken (id int);\n"
    folder = write_migrations(files)
    code, _, error = up(capsys, database_url, folder)
    assert code == 1
    assert f'{bad}:2:8: ERROR 42601: syntax error at or near "TABEL"' in error
    assert db.run("SELECT to_regclass('users'), to_regclass('fine')") == [[None, None]]


class CountingDatabase(WrappedDatabase):
    """A real session that counts its round trips."""

    def __init__(self, database) -> None:
        super().__init__(database)
        self.round_trips = 0

    def run(self, sql: str, **params):
        self.round_trips += 1
        return self.database.run(sql, **params)


@pytest.mark.parametrize("all_or_nothing", [True, False])
def test_a_transactional_file_needs_one_round_trip(database_url, write_migrations, all_or_nothing) -> None:
    from premigrate.adapters.connection import params_from_url
    from premigrate.adapters.folder import load_folder
    from premigrate.adapters.postgres import connect
    from premigrate.engine import Engine, Settings

    files = {f"V{n}__t{n}.sql": f"CREATE TABLE t{n} (id int);\nINSERT INTO t{n} VALUES ({n});\n" for n in range(1, 21)}
    database = CountingDatabase(connect(params_from_url(database_url)))
    try:
        report = Engine(
            database, load_folder(write_migrations(files)), Settings(all_or_nothing=all_or_nothing)
        ).migrate()
    finally:
        database.close()
    assert len(report.applied) == 20
    # A message per file: its statements, its history row and, one file after another, the lock's check and
    # COMMIT; in a group, the session reset for the next file instead (one check and one COMMIT in all).
    assert 20 <= database.round_trips <= 20 + 12


@pytest.mark.parametrize("all_or_nothing", [True, False])
def test_a_last_file_that_changes_how_strings_are_read_is_recorded_once(
    capsys, database_url, write_migrations, db, all_or_nothing
) -> None:
    folder = write_migrations({"V1__users.sql": USERS, "V2__legacy.sql": "SET standard_conforming_strings = off;\n"})
    options = ["--all-or-nothing"] if all_or_nothing else []
    code = main(["up", "--database-url", database_url, "--migrations", str(folder), *options])
    assert code == 0, capsys.readouterr().err
    assert db.run("SELECT script FROM premigrate_schema_history ORDER BY installed_rank") == [
        ["V1__users.sql"],
        ["V2__legacy.sql"],
    ]

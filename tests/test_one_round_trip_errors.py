"""Errors on the one-round-trip path: a transactional file is one message to the server, and when the server
refuses it the file is replayed statement by statement, so the message names the file, line and column exactly
as the statement-by-statement path always did. Real PostgreSQL, through the engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from premigrate.adapters.connection import params_from_url
from premigrate.adapters.folder import load_folder
from premigrate.adapters.postgres import connect
from premigrate.engine import Engine, MigrationFailedError, Settings, transactions

GOOD = "CREATE TABLE good (id int PRIMARY KEY);\nINSERT INTO good VALUES (1);\n"
ROLLED_BACK = "\nThe migration was rolled back: nothing of it is applied."


class Recording:
    """A real session that keeps every message it sends: one message is one round trip."""

    def __init__(self, url: str) -> None:
        self.database, self.sent = connect(params_from_url(url)), list[str]()

    def run(self, sql: str, **params: Any) -> list[list[Any]]:
        self.sent.append(sql)
        return self.database.run(sql, **params)

    def __getattr__(self, name: str) -> Any:  # close, cancel and the rest of the Database port
        return getattr(self.database, name)

    def carrying(self, text: str) -> int:
        """How many messages carried this text (a statement of a migration: how often it was sent)."""
        return sum(text in sql for sql in self.sent)


class Failing(Protocol):
    def __call__(self, folder: Path, *, precise: bool = False, **settings: Any) -> tuple[str, Recording]: ...


@pytest.fixture
def failing(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Failing]:
    """``failing(folder)`` runs the engine, which must fail: the message and the session it used. ``precise``:
    statement by statement from the start, as before files became one message."""
    sessions: list[Recording] = []

    def fail(folder: Path, *, precise: bool = False, **settings: Any) -> tuple[str, Recording]:
        def refused(*_: object) -> None:
            raise transactions._RunAgainStatementByStatement

        session = Recording(database_url)
        sessions.append(session)
        with monkeypatch.context() as patch:
            if precise:
                patch.setattr(transactions, "_in_few_round_trips", refused)
            with pytest.raises(MigrationFailedError) as caught:
                Engine(session, load_folder(folder), Settings(**settings)).migrate()
        return str(caught.value), session

    yield fail
    for session in sessions:
        session.close()


def applied(db: Any) -> list[list[Any]]:
    rows: list[list[Any]] = db.run("SELECT script, success FROM premigrate_schema_history ORDER BY installed_rank")
    return rows


def tables(db: Any) -> list[str]:
    return [row[0] for row in db.run("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]


# Five statements; the third starts on line 15 and refers to a missing column on its second line, after
# comments, blank lines, a dollar-quoted function with semicolons in it and a string with a non-ASCII letter.
ORDERS = """\
-- Orders, and what totals them.
-- A comment; with a semicolon.

CREATE TABLE orders (id int PRIMARY KEY, total numeric);

CREATE FUNCTION order_total(o orders) RETURNS numeric
LANGUAGE plpgsql AS $fn$
BEGIN
  -- a ; in the body does not end the statement
  RETURN o.total;
END
$fn$;

/* the third statement */
INSERT INTO orders (id, total)
  SELECT id, 'né' || nope FROM generate_series(1, 3) AS id;
CREATE TABLE after_it (id int);
INSERT INTO after_it VALUES (1);
"""
MISSING_COLUMN = 'V2__orders.sql:16:22: ERROR 42703: column "nope" does not exist'
SYNTAX_ERROR = 'V2__orders.sql:15:8: ERROR 42601: syntax error at or near "INTA"'


@pytest.mark.parametrize(
    ("text", "expected"),
    [(ORDERS, MISSING_COLUMN), (ORDERS.replace("INSERT INTO orders", "INSERT INTA orders"), SYNTAX_ERROR)],
    ids=["missing-column", "syntax-error"],
)
def test_an_error_with_a_position_is_named_as_the_precise_path_names_it(
    failing: Failing, write_migrations: Any, db: Any, text: str, expected: str
) -> None:
    folder = write_migrations({"V1__good.sql": GOOD, "V2__orders.sql": text})
    precise, _ = failing(folder, precise=True)
    assert tables(db) == ["good", "premigrate_schema_history"]
    message, session = failing(folder)
    assert session.carrying("CREATE TABLE after_it") == 1  # the whole file went in one message first
    assert message == precise
    assert message == expected + ROLLED_BACK
    assert tables(db) == ["good", "premigrate_schema_history"]
    assert applied(db) == [["V1__good.sql", True]]


BROKEN = """\
-- The third of five statements fails as it runs: the server gives no position in it.
CREATE TABLE one (id int PRIMARY KEY);
INSERT INTO one VALUES (1);

    {failing};
CREATE TABLE four (id int);
INSERT INTO four VALUES (4);
"""


@pytest.mark.parametrize(
    ("failing_sql", "error"),
    [
        (
            "INSERT INTO one VALUES (1)",
            'ERROR 23505: duplicate key value violates unique constraint "one_pkey"\n'
            "  DETAIL: Key (id)=(1) already exists.",
        ),
        (
            "DO $$ BEGIN RAISE EXCEPTION 'boom'; END $$",
            "ERROR P0001: boom\n  CONTEXT: PL/pgSQL function inline_code_block line 1 at RAISE",
        ),
        ("SELECT 1 / (SELECT count(*) - 1 FROM one)", "ERROR 22012: division by zero"),
    ],
    ids=["duplicate-key", "raise", "division-by-zero"],
)
def test_an_error_without_a_position_names_the_statement_and_applies_nothing_of_the_file(
    failing: Failing, write_migrations: Any, db: Any, failing_sql: str, error: str
) -> None:
    folder = write_migrations(
        {
            "V1__good.sql": GOOD,
            "V2__broken.sql": BROKEN.format(failing=failing_sql),
            "V3__later.sql": "CREATE TABLE later ();",
        }
    )
    message, session = failing(folder)
    assert session.carrying("INSERT INTO four") == 1
    assert message == f"V2__broken.sql:5:5: {error}{ROLLED_BACK}"
    assert tables(db) == ["good", "premigrate_schema_history"]
    assert applied(db) == [["V1__good.sql", True]]
    assert failing(folder, precise=True)[0] == message


@pytest.mark.parametrize("all_or_nothing", [False, True], ids=["file-by-file", "all-or-nothing"])
@pytest.mark.parametrize(
    ("text", "error"),
    [
        # A position in the message's first statement, after the BEGIN that rides with it.
        ("  SELEC 1;\nCREATE TABLE two (id int);\n", '1:3: ERROR 42601: syntax error at or near "SELEC"'),
        # The last statement ends in a comment, and the file without a line feed.
        ("CREATE TABLE two ();\nCREATE TABLE three ();\n\nSELECT 1 / 0 -- end", "4:1: ERROR 22012: division by zero"),
        ("CREATE TABLE two ();\n\nSELECT 1 / 0, nope -- end", '3:15: ERROR 42703: column "nope" does not exist'),
    ],
    ids=["first-statement", "last-statement", "last-statement-position"],
)
def test_an_error_in_the_first_or_last_statement_of_the_second_file(
    failing: Failing, write_migrations: Any, db: Any, text: str, error: str, all_or_nothing: bool
) -> None:
    files = {"V1__good.sql": GOOD, "V2__bad.sql": text, "V3__later.sql": "CREATE TABLE later ();"}
    message, session = failing(write_migrations(files), all_or_nothing=all_or_nothing)
    assert session.carrying("CREATE TABLE two") == (text.startswith("CREATE") + 1)
    if all_or_nothing:
        outcome = "The group of 3 migrations (V1__good.sql … V3__later.sql) was rolled back: nothing of it is applied."
        assert message == f"V2__bad.sql:{error}\n{outcome}"
        assert (tables(db), applied(db)) == (["premigrate_schema_history"], [])
    else:  # the first file was committed before the second started
        assert message == f"V2__bad.sql:{error}{ROLLED_BACK}"
        assert (tables(db), applied(db)) == (["good", "premigrate_schema_history"], [["V1__good.sql", True]])


@pytest.mark.parametrize("all_or_nothing", [False, True], ids=["file-by-file", "all-or-nothing"])
def test_good_files_take_one_message_each_and_only_a_failing_one_is_replayed(
    failing: Failing, write_migrations: Any, db: Any, all_or_nothing: bool
) -> None:
    files = {f"V{n}__t{n}.sql": f"CREATE TABLE t{n} (id int);\nINSERT INTO t{n} VALUES ({n});\n" for n in range(1, 6)}
    bad = ["CREATE TABLE s1 ()", "CREATE TABLE s2 ()", "SELECT 1 / 0", "CREATE TABLE s4 ()", "CREATE TABLE s5 ()"]
    files["V6__bad.sql"] = "".join(f"{statement};\n" for statement in bad)  # the third fails
    message, session = failing(write_migrations(files), all_or_nothing=all_or_nothing)
    assert message.startswith("V6__bad.sql:3:1: ERROR 22012: division by zero\n")
    for n in range(1, 6):
        # The file's statements and its history row in one message (with its COMMIT, file by file).
        first = next(sql for sql in session.sent if f"CREATE TABLE t{n} " in sql)
        assert f"INSERT INTO t{n} " in first and f"'V{n}__t{n}.sql'" in first
        assert ("COMMIT" in first) is not all_or_nothing
        # A group is replayed whole: it was rolled back whole.
        assert session.carrying(f"CREATE TABLE t{n} ") == (2 if all_or_nothing else 1)
    assert len([sql for sql in session.sent if "CREATE TABLE t" in sql]) == (10 if all_or_nothing else 5)
    # The failing file: one message, then statement by statement again up to the failing one.
    assert [session.carrying(statement) for statement in bad] == [2, 2, 2, 1, 1]
    assert len([sql for sql in session.sent if "CREATE TABLE s1 ()" in sql and "CREATE TABLE s5 ()" in sql]) == 1
    if all_or_nothing:
        assert applied(db) == []
    else:
        assert applied(db) == [[f"V{n}__t{n}.sql", True] for n in range(1, 6)]
        assert db.run("SELECT to_regclass('t5') IS NOT NULL, to_regclass('s1')") == [[True, None]]


DEFERRED = """\
CREATE TABLE parents (id int PRIMARY KEY);
CREATE TABLE children (parent_id int REFERENCES parents DEFERRABLE INITIALLY DEFERRED);
INSERT INTO children VALUES (42);
"""


FKEY = (
    'insert or update on table "children" violates foreign key constraint "children_parent_id_fkey"\n  DETAIL: '
    'Key (parent_id)=(42) is not present in table "parents".\n  (a deferred constraint is checked at COMMIT, after '
)


@pytest.mark.parametrize("all_or_nothing", [False, True], ids=["file-by-file", "all-or-nothing"])
def test_a_deferred_constraint_fails_at_commit_and_nothing_is_recorded(
    failing: Failing, write_migrations: Any, db: Any, all_or_nothing: bool
) -> None:
    files = {"V1__good.sql": GOOD, "V2__deferred.sql": DEFERRED, "V3__later.sql": "CREATE TABLE later ();"}
    folder = write_migrations(files)
    message, session = failing(folder, all_or_nothing=all_or_nothing)
    assert session.carrying("INSERT INTO children") == 2  # in the file's message, then on its own
    assert failing(folder, precise=True, all_or_nothing=all_or_nothing)[0] == message
    if all_or_nothing:
        # The group's one COMMIT is after its last file: the server does not say which statement queued the
        # check (the DETAIL names the table), and the message says it was the group's.
        outcome = "The group of 3 migrations (V1__good.sql … V3__later.sql) was rolled back: nothing of it is applied."
        when = "ERROR 23503 when the group's last history row was written and committed"
        assert message == f"V3__later.sql: {when}: {FKEY}the group's last statement)\n{outcome}"
        assert (tables(db), applied(db)) == (["premigrate_schema_history"], [])
    else:
        when = "ERROR 23503 when its history row was written and committed"
        assert message == f"V2__deferred.sql: {when}: {FKEY}the file's last statement)\n{ROLLED_BACK.lstrip()}"
        assert (tables(db), applied(db)) == (["good", "premigrate_schema_history"], [["V1__good.sql", True]])


def test_a_repeatable_set_back_to_an_earlier_text_that_now_fails_is_reported_as_failed(
    failing: Failing, write_migrations: Any, db: Any, database_url: str
) -> None:
    view = "CREATE OR REPLACE VIEW v AS SELECT id FROM t;\n"
    folder = write_migrations({"V1__t.sql": "CREATE TABLE t (id int);\n", "R__v.sql": view})
    for files in ({}, {"V2__drop.sql": "DROP VIEW v;\nDROP TABLE t;\n", "R__v.sql": "CREATE VIEW v AS SELECT 1;\n"}):
        session = connect(params_from_url(database_url))
        Engine(session, load_folder(write_migrations(files))).migrate()
        session.close()
    write_migrations({"R__v.sql": view})  # its first text again, whose row (success, same checksum) is there
    message, _ = failing(folder)  # was: RunStoppedError "R__v.sql is applied and recorded, but ..."
    assert message == f'R__v.sql:1:44: ERROR 42P01: relation "t" does not exist{ROLLED_BACK}'
    assert len(applied(db)) == 4

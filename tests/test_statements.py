"""Statement splitting must match psql exactly on real PostgreSQL SQL."""

import pytest

from premigrate.engine.errors import ScriptSyntaxError
from premigrate.engine.statements import line_and_column, split_statements


def texts(sql: str) -> list[str]:
    return [statement.text for statement in split_statements(sql)]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1; SELECT 2;", ["SELECT 1", "SELECT 2"]),
        ("SELECT 1;\nSELECT 2", ["SELECT 1", "SELECT 2"]),  # last statement without a semicolon
        ("SELECT 'a;b'; SELECT 'it''s;'", ["SELECT 'a;b'", "SELECT 'it''s;'"]),
        (r"SELECT E'it\'s; still'; SELECT 2", [r"SELECT E'it\'s; still'", "SELECT 2"]),
        (r"SELECT e'\\'; SELECT 2", [r"SELECT e'\\'", "SELECT 2"]),
        # In a standard string a backslash is an ordinary character.
        ("SELECT 'C:\\'; SELECT 2", ["SELECT 'C:\\'", "SELECT 2"]),
        ('CREATE TABLE "a;b" ("c;""d" int); SELECT 1', ['CREATE TABLE "a;b" ("c;""d" int)', "SELECT 1"]),
        (
            "SELECT 1 /* ; /* nested ; */ still ; */; SELECT 2",
            ["SELECT 1 /* ; /* nested ; */ still ; */", "SELECT 2"],
        ),
        ("SELECT 1 -- trailing ; comment\n; SELECT 2", ["SELECT 1 -- trailing ; comment", "SELECT 2"]),
        ("DO $$ BEGIN PERFORM 1; END $$; SELECT 2", ["DO $$ BEGIN PERFORM 1; END $$", "SELECT 2"]),
        (
            "CREATE FUNCTION f() RETURNS int AS $body$ SELECT $$;$$; SELECT 1; $body$ LANGUAGE sql; SELECT 2",
            [
                "CREATE FUNCTION f() RETURNS int AS $body$ SELECT $$;$$; SELECT 1; $body$ LANGUAGE sql",
                "SELECT 2",
            ],
        ),
        ("SELECT $1::int; SELECT 2", ["SELECT $1::int", "SELECT 2"]),
        ("SELECT a$b$c FROM t; SELECT 2", ["SELECT a$b$c FROM t", "SELECT 2"]),
        (
            "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2)); SELECT 1",
            [
                "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2))",
                "SELECT 1",
            ],
        ),
        (
            "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true "
            "THEN 2 END; END; SELECT 3",
            [
                "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true "
                "THEN 2 END; END",
                "SELECT 3",
            ],
        ),
        ("SELECT 'héllo; wörld'; SELECT 'ünï'", ["SELECT 'héllo; wörld'", "SELECT 'ünï'"]),
        (";;  ;\n-- only a comment\n/* and another */", []),
        ("", []),
        ("BEGIN; SELECT 1; COMMIT;", ["BEGIN", "SELECT 1", "COMMIT"]),
    ],
)
def test_splits_where_psql_would(sql: str, expected: list[str]) -> None:
    assert texts(sql) == expected


def test_statement_offsets_point_at_the_first_token() -> None:
    sql = "-- header\n\n  /* c */ SELECT 1;\n\tCREATE TABLE t ();"
    first, second = split_statements(sql)
    assert line_and_column(sql, first.offset) == (3, 11)
    assert line_and_column(sql, second.offset) == (4, 2)


@pytest.mark.parametrize(
    ("sql", "what", "offset"),
    [
        ("SELECT 'unterminated", "unterminated string literal", 7),
        ("SELECT E'\\'", "unterminated E'' string literal", 7),
        ('SELECT "open', "unterminated quoted identifier", 7),
        ("SELECT 1; DO $x$ BEGIN END $y$", "unterminated dollar-quoted string (no closing $x$)", 13),
        ("SELECT 1 /* /* */", "unterminated /* comment", 9),
        ("SELECT 1;\n\\i other.sql", "psql meta-command", 10),
    ],
)
def test_unterminated_input_is_refused_where_it_starts(sql: str, what: str, offset: int) -> None:
    with pytest.raises(ScriptSyntaxError, match=__import__("re").escape(what)) as caught:
        split_statements(sql)
    assert caught.value.offset == offset


@pytest.mark.parametrize(
    ("sql", "in_transaction"),
    [
        ("CREATE INDEX CONCURRENTLY i ON t (c)", False),
        ("create unique index concurrently if not exists i on t (c)", False),
        ("DROP INDEX CONCURRENTLY i", False),
        ("REINDEX (VERBOSE) INDEX CONCURRENTLY i", False),
        ("REINDEX DATABASE app", False),
        ("VACUUM ANALYZE t", False),
        ("ALTER SYSTEM SET work_mem = '64MB'", False),
        ("CREATE DATABASE other", False),
        ("ALTER TABLE ONLY s.t DETACH PARTITION s.p CONCURRENTLY", False),
        ("CREATE INDEX i ON t (c)", True),
        ("REINDEX INDEX i", True),
        ("ALTER TABLE t DETACH PARTITION p", True),
        ("ALTER TYPE mood ADD VALUE 'meh'", True),
        ("SELECT 'CREATE INDEX CONCURRENTLY'", True),
    ],
)
def test_knows_which_statements_cannot_run_in_a_transaction(sql: str, in_transaction: bool) -> None:
    (statement,) = split_statements(sql)
    assert statement.runs_in_transaction_block is in_transaction


@pytest.mark.parametrize(
    ("sql", "controls"),
    [
        ("BEGIN", True),
        ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE", True),
        ("COMMIT", True),
        ("END", True),
        ("ROLLBACK", True),
        ("ROLLBACK TO SAVEPOINT s", False),
        ("SAVEPOINT s", False),
        ("DO $$ BEGIN END $$", False),
    ],
)
def test_knows_transaction_control(sql: str, controls: bool) -> None:
    (statement,) = split_statements(sql)
    assert statement.controls_transaction is controls

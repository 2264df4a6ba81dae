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


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # psql ends a -- comment at a carriage return as well as at a line feed.
        ("-- note\rCREATE TABLE a (id int);\r", ["CREATE TABLE a (id int)"]),
        ("SELECT 1 -- note\rFROM t;\rSELECT 2\r", ["SELECT 1 -- note\rFROM t", "SELECT 2"]),
        # Every character from U+0080 up is a letter to psql: in dollar-quote tags and identifiers alike.
        ("DO $€$ BEGIN PERFORM 2; END $€$; SELECT 1", ["DO $€$ BEGIN PERFORM 2; END $€$", "SELECT 1"]),
        ("DO $é1$ BEGIN PERFORM 'x;y'; END $é1$", ["DO $é1$ BEGIN PERFORM 'x;y'; END $é1$"]),
        ("SELECT 1 AS a€e'x;y'; SELECT 2", ["SELECT 1 AS a€e'x;y'", "SELECT 2"]),  # a€e is a name, not E'
        ("SELECT $1::int, x::text, a[1:2], a[lo:hi], a[1:host] FROM t", None),
        ("SELECT 1 +-- a comment ;\n2; SELECT 3", ["SELECT 1 +-- a comment ;\n2", "SELECT 3"]),
        ("1;", ["1"]),  # psql sends anything that is not whitespace or a comment
        # With standard_conforming_strings off, '…' takes backslash escapes; b'', x'' and U&'' never do.
        (
            "SET standard_conforming_strings = off;\nSELECT 'it\\'s; fine', N'a\\'b;', b'1\\', x'f\\';\n"
            "RESET standard_conforming_strings;\nSELECT 'C:\\'; SELECT 2",
            [
                "SET standard_conforming_strings = off",
                "SELECT 'it\\'s; fine', N'a\\'b;', b'1\\', x'f\\'",
                "RESET standard_conforming_strings",
                "SELECT 'C:\\'",
                "SELECT 2",
            ],
        ),
        (
            "SET LOCAL standard_conforming_strings TO 'of';\nSELECT '\\';'; SET standard_conforming_strings = yes;\n"
            "SELECT 'x\\'; SET SESSION standard_conforming_strings = 0;\nSELECT '\\';'; RESET ALL;\nSELECT '\\'",
            [
                "SET LOCAL standard_conforming_strings TO 'of'",
                "SELECT '\\';'",
                "SET standard_conforming_strings = yes",
                "SELECT 'x\\'",
                "SET SESSION standard_conforming_strings = 0",
                "SELECT '\\';'",
                "RESET ALL",
                "SELECT '\\'",
            ],
        ),
        # psql reads the setting once per line: the rest of the SET's own line keeps the old one.
        ("SET standard_conforming_strings = off; SELECT 'C:\\';\n", None),
        ("SET standard_conforming_strings = nonsense;\nSELECT 'C:\\'", None),  # the server refuses the SET
    ],
)
def test_splits_like_psql_beyond_the_ascii_basics(sql: str, expected: list[str] | None) -> None:
    assert texts(sql) == (expected or [s.strip() for s in sql.split(";") if s.strip()])


# The part of PostgreSQL's src/test/regress/sql/strings.sql that switches standard_conforming_strings.
STRINGS_SQL_EXCERPT = r"""set escape_string_warning = off;
set standard_conforming_strings = off;

show escape_string_warning;
show standard_conforming_strings;

set escape_string_warning = on;
set standard_conforming_strings = on;

select 'a\bcd' as f1, 'a\b''cd' as f2, 'a\b''''cd' as f3, 'abcd\'   as f4, 'ab\''cd' as f5, '\\' as f6;

set standard_conforming_strings = off;

select 'a\\bcd' as f1, 'a\\b\'cd' as f2, 'a\\b\'''cd' as f3, 'abcd\\'   as f4, 'ab\\\'cd' as f5, '\\\\' as f6;

set escape_string_warning = off;
set standard_conforming_strings = on;
"""


def test_postgresql_strings_regression_splits_without_a_false_meta_command() -> None:
    statements = texts(STRINGS_SQL_EXCERPT)
    assert len(statements) == 11
    assert statements[8] == (
        r"select 'a\\bcd' as f1, 'a\\b\'cd' as f2, 'a\\b\'''cd' as f3, 'abcd\\'   as f4, 'ab\\\'cd' as f5, "
        r"'\\\\' as f6"
    )


@pytest.mark.parametrize(
    ("sql", "what", "offset"),
    [
        ("SELECT 1;\0SELECT 2", "a NUL byte (\\0): PostgreSQL cannot take it", 9),
        ("-- \0 even in a comment", "a NUL byte", 3),
        ("SELECT * FROM t WHERE name = :'name'", "psql would substitute its variable here; premigrate sends plain", 29),
        ('SELECT * FROM :"table"', 'without psql variables: write the value of :"table" itself', 14),
        ("SELECT :HOST", "write the value of :HOST itself", 7),
        ("SELECT a[1:VERSION_NUM] FROM t", "the value of :VERSION_NUM itself", 10),
        ("SELECT :{?ON_ERROR_STOP}", "psql would substitute", 7),
        ("SELECT 1;\nCOPY t (a, b) FROM STDIN;\n1\t\\N\n\\.\n", "COPY ... FROM STDIN needs psql to send the data", 10),
        ("COPY (SELECT 1) TO stdout WITH (FORMAT csv)", "COPY ... TO STDOUT needs psql to receive the rows", 0),
        ("SET standard_conforming_strings = off;\nSELECT 'C:\\';", "standard_conforming_strings is off here", 46),
    ],
)
def test_what_only_psql_understands_is_refused_where_it_starts(sql: str, what: str, offset: int) -> None:
    with pytest.raises(ScriptSyntaxError, match=__import__("re").escape(what)) as caught:
        split_statements(sql)
    assert caught.value.offset == offset


def test_lines_end_at_carriage_returns_too() -> None:
    sql = "SELECT 1;\rSELECT 2;\r\n\rSELECT 3;"
    assert [line_and_column(sql, s.offset) for s in split_statements(sql)] == [(1, 1), (2, 1), (4, 1)]


@pytest.mark.parametrize(
    ("sql", "in_transaction"),
    [
        ("CLUSTER", False),
        ("cluster verbose", False),
        ("CLUSTER (VERBOSE true)", False),
        ("CLUSTER t", True),
        ('CLUSTER (VERBOSE) "T" USING i', True),
        ("DISCARD ALL", False),
        ("DISCARD PLANS", True),
    ],
)
def test_knows_the_forms_of_cluster_and_discard(sql: str, in_transaction: bool) -> None:
    (statement,) = split_statements(sql)
    assert statement.runs_in_transaction_block is in_transaction


@pytest.mark.parametrize(
    ("sql", "effect"),
    [
        ("BEGIN ISOLATION LEVEL SERIALIZABLE", "opens"),
        ("COMMIT AND CHAIN", "chains"),
        ("rollback work and chain", "chains"),
        ("COMMIT AND NO CHAIN", "closes"),
        ("PREPARE TRANSACTION 'gid'", "closes"),
        ("PREPARE transaction AS SELECT 1", None),
        ("ABORT", "closes"),
        ("ROLLBACK TO SAVEPOINT s", None),
    ],
)
def test_knows_what_each_statement_does_to_the_transaction(sql: str, effect: str | None) -> None:
    (statement,) = split_statements(sql)
    assert statement.transaction_effect == effect


def test_statement_head_is_written_as_in_the_file() -> None:
    (statement,) = split_statements("CREATE INDEX CONCURRENTLY cities_idx\n  ON cities (name)")
    assert statement.head == "CREATE INDEX CONCURRENTLY cities_idx"
    assert statement.words[:4] == ("CREATE", "INDEX", "CONCURRENTLY", "CITIES_IDX")

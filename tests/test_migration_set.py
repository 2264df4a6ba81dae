"""The migration set: Flyway names, numeric order, checksums, directives and bad files."""

import pytest

from premigrate.engine import MigrationSet, MigrationSetError, Version
from premigrate.engine.migrations import ExecutionMode, checksum


def one(name: str, sql: str | bytes):
    content = sql if isinstance(sql, bytes) else sql.encode()
    migration_set = MigrationSet.from_files([(name, content)])
    return (migration_set.versioned or migration_set.repeatable)[0]


def test_versions_order_numerically_and_repeatables_come_apart() -> None:
    files = [(f"V{v}__m.sql", b"SELECT 1") for v in ("1.2.10", "1.2.9", "10", "2", "1_3")]
    files += [("R__view.sql", b"SELECT 1"), ("README.md", b"not a migration"), ("sub/V11__x.sql", b"")]
    migration_set = MigrationSet.from_files(files)
    assert [str(m.version) for m in migration_set.versioned] == ["1.2.9", "1.2.10", "1.3", "2", "10", "11"]
    assert [m.script for m in migration_set.repeatable] == ["R__view.sql"]
    assert migration_set.versioned[-1].script == "sub/V11__x.sql"
    assert migration_set.versioned[0].description == "m"


def test_version_equality_ignores_trailing_zeros() -> None:
    assert Version.parse("1.0") == Version.parse("1")
    assert Version.parse("1.0.1") > Version.parse("1")
    with pytest.raises(ValueError, match="not a version"):
        Version.parse("1.x")


def test_checksum_ignores_line_endings_and_bom() -> None:
    unix = one("V1__a.sql", "CREATE TABLE t ();\nSELECT 1;\n")
    windows = one("V1__a.sql", b"\xef\xbb\xbfCREATE TABLE t ();\r\nSELECT 1;\r\n")
    old_mac = one("V1__a.sql", b"CREATE TABLE t ();\rSELECT 1;\r")
    assert unix.checksum == windows.checksum == old_mac.checksum == checksum("CREATE TABLE t ();\nSELECT 1;\n")
    assert one("V1__a.sql", "CREATE TABLE t ( );\n").checksum != unix.checksum


def test_every_bad_file_is_listed_with_what_to_do() -> None:
    with pytest.raises(MigrationSetError) as caught:
        MigrationSet.from_files(
            [
                ("V1__users.sql", b"SELECT 1"),
                ("V1.0__users_again.sql", b"SELECT 1"),
                ("create_users.sql", b"SELECT 1"),
                ("V2_x.sql", b"SELECT 1"),
                ("Vx__bad_version.sql", b"SELECT 1"),
                ("V3__latin1.sql", b"SELECT 1;\nSELECT 'caf\xe9';"),
                ("R__v.sql", b"SELECT 1"),
                ("r__v.sql", b"SELECT 2"),
            ]
        )
    problems = "\n".join(caught.value.problems)
    assert len(caught.value.problems) == 6
    assert "V1__users.sql: version 1 is already used by V1.0__users_again.sql" in problems
    assert "create_users.sql: the name does not match; name versioned migrations V<version>__" in problems
    assert "V2_x.sql: the name does not match" in problems
    assert "Vx__bad_version.sql: 'x' is not a version" in problems
    assert "V3__latin1.sql:2: not valid UTF-8 (byte 21); save the file as UTF-8" in problems
    assert "description is already used by R__v.sql" in problems


@pytest.mark.parametrize(
    ("sql", "mode", "reason"),
    [
        ("CREATE TABLE t (id int);\nCREATE INDEX i ON t (id);", ExecutionMode.TRANSACTION, "default"),
        (
            "CREATE INDEX CONCURRENTLY i ON t (id);\nDROP INDEX CONCURRENTLY j;",
            ExecutionMode.NO_TRANSACTION,
            "detected: its statements cannot run in a transaction",
        ),
        (
            "-- premigrate:no-transaction\nUPDATE t SET a = 1;\nCREATE INDEX CONCURRENTLY i ON t (a);",
            ExecutionMode.NO_TRANSACTION,
            "directive",
        ),
        (
            "BEGIN;\nCREATE TABLE t ();\nCOMMIT;\nCREATE INDEX CONCURRENTLY i ON t (a);",
            ExecutionMode.OWN_TRANSACTION,
            "detected: the file has its own BEGIN/COMMIT",
        ),
        ("", ExecutionMode.TRANSACTION, "default"),
        ("-- nothing to do any more\n", ExecutionMode.TRANSACTION, "default"),
    ],
)
def test_each_file_gets_the_mode_it_needs(sql: str, mode: ExecutionMode, reason: str) -> None:
    migration = one("V1__m.sql", sql)
    assert migration.check() == []
    assert migration.mode is mode
    assert migration.mode_reason == reason


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        (
            "CREATE TABLE t (a int);\n\nCREATE INDEX CONCURRENTLY i ON t (a);",
            "V1__m.sql:3: CREATE INDEX CONCURRENTLY I cannot run inside a transaction, but the file also has",
        ),
        (
            "-- premigrate:no-transactions\nSELECT 1;",
            "V1__m.sql:1: unknown directive 'premigrate:no-transactions'",
        ),
        ("SELECT 1;\nBEGIN;\nSELECT 2;", "V1__m.sql:2: the file opens a transaction and never ends it"),
        ("SELECT 1;\nSELECT $$never closed;", "V1__m.sql:2:8: unterminated dollar-quoted string"),
    ],
)
def test_files_that_cannot_run_safely_are_refused(sql: str, problem: str) -> None:
    problems = one("V1__m.sql", sql).check()
    assert len(problems) == 1
    assert problems[0].startswith(problem)

"""The migration set: Flyway names, numeric order, checksums, directives and bad files."""

import os
from typing import IO

import pytest

from premigrate.adapters import folder as folder_module
from premigrate.adapters.folder import load_folder
from premigrate.engine import ConfigurationError, MigrationSet, MigrationSetError, Version
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
            "V1__m.sql:3:1: CREATE INDEX CONCURRENTLY i cannot run inside a transaction, but the file also has",
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


def test_versions_written_with_leading_zeros_are_the_same_version() -> None:
    with pytest.raises(MigrationSetError) as caught:
        MigrationSet.from_files([("V1__a.sql", b"SELECT 1"), ("V01__b.sql", b"SELECT 2")])
    assert caught.value.problems == [
        "V1__a.sql: version 1 is already used by V01__b.sql; every migration needs its own version "
        "(repeatables their own description): rename one"
    ]


@pytest.mark.parametrize(
    ("sql", "mode", "reason"),
    [
        ("-- note\rCREATE TABLE a (id int);\r", ExecutionMode.TRANSACTION, "default"),
        ("CLUSTER;", ExecutionMode.NO_TRANSACTION, "detected: its statements cannot run in a transaction"),
        (
            "ALTER TYPE mood ADD VALUE 'meh';\nUPDATE person SET current_mood = 'meh' WHERE current_mood IS NULL;",
            ExecutionMode.NO_TRANSACTION,
            "detected: ALTER TYPE ... ADD VALUE 'meh' is used later in the file, which PostgreSQL allows only "
            "after a commit",
        ),
        (
            "ALTER TYPE mood ADD VALUE IF NOT EXISTS 'meh' BEFORE 'sad';\nSELECT 'sad';",
            ExecutionMode.TRANSACTION,
            "default",
        ),
        (  # a type made in the same transaction takes its new values at once
            "CREATE TYPE mood AS ENUM ('sad');\nALTER TYPE mood ADD VALUE 'meh';\n"
            "CREATE TABLE p (m mood DEFAULT 'meh');",
            ExecutionMode.TRANSACTION,
            "default",
        ),
        ("BEGIN;\nINSERT INTO t VALUES (1);\nCOMMIT AND NO CHAIN;", ExecutionMode.OWN_TRANSACTION, None),
        ("BEGIN;\nSELECT 1;\nCOMMIT AND CHAIN;\nSELECT 2;\nROLLBACK;", ExecutionMode.OWN_TRANSACTION, None),
        ("BEGIN;\nUPDATE t SET a = 1;\nPREPARE TRANSACTION 'x';", ExecutionMode.OWN_TRANSACTION, None),
        ("-- premigrate:no-transaction\nBEGIN;\nSELECT 1;\nEND;", ExecutionMode.NO_TRANSACTION, "directive"),
        ("DISCARD PLANS;\nDISCARD TEMP;\nRESET ALL;", ExecutionMode.TRANSACTION, "default"),
    ],
)
def test_more_files_get_the_mode_they_need(sql: str, mode: ExecutionMode, reason: str | None) -> None:
    migration = one("V1__m.sql", sql)
    assert migration.check() == []
    assert migration.mode is mode
    assert migration.mode_reason == (reason or "detected: the file has its own BEGIN/COMMIT")


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        ("SELECT 1;\nSELECT 'a\0b';", "V1__m.sql:2:10: a NUL byte (\\0): PostgreSQL cannot take it"),
        ("SELECT 1;\n\nDISCARD ALL;", "V1__m.sql:3:1: DISCARD ALL would release premigrate's migration lock"),
        (
            "CREATE TABLE t ();\n  SELECT pg_advisory_unlock_all();",
            "V1__m.sql:2:3: pg_advisory_unlock_all() would release premigrate's migration lock",
        ),
        (
            "-- premigrate:no-transaction\nDO $$ BEGIN PERFORM pg_catalog.PG_ADVISORY_UNLOCK_ALL(); END $$;",
            "V1__m.sql:2:1: pg_advisory_unlock_all() would release",
        ),
        (
            "CREATE TABLE t (a int);\nCOPY t FROM stdin;\n1\n\\N\n\\.\n",
            "V1__m.sql:2:1: COPY ... FROM STDIN needs psql to send the data; put the rows in INSERT statements or "
            "COPY FROM a server-side file",
        ),
        ("SELECT 1 FROM t WHERE a = :'a';", "V1__m.sql:1:27: psql would substitute its variable here; premigrate"),
        (
            "BEGIN;\nINSERT INTO t VALUES (1);\nCOMMIT AND CHAIN;",
            "V1__m.sql:3: the file opens a transaction and never ends it (COMMIT AND CHAIN starts a new one), so "
            "psql would roll back what is left open when the file ends; end the file with COMMIT",
        ),
        (
            "-- premigrate:no-transaction\nBEGIN;\nINSERT INTO t VALUES (1);",
            "V1__m.sql:2: the file opens a transaction and never ends it, so psql would roll back",
        ),
        ("BEGIN;\nCOMMIT;\nBEGIN;\nBEGIN;\nSELECT 1;", "V1__m.sql:3: the file opens a transaction and never ends it"),
    ],
)
def test_more_files_that_cannot_run_safely_are_refused(sql: str, problem: str) -> None:
    problems = one("V1__m.sql", sql).check()
    assert len(problems) == 1
    assert problems[0].startswith(problem)


def test_a_file_with_text_but_no_statement_is_never_recorded_as_empty(monkeypatch) -> None:
    # Should the splitter ever lose a statement, the file must be refused rather than recorded as applied.
    monkeypatch.setattr("premigrate.engine.migrations.split_statements", lambda text: [])
    assert one("V1__m.sql", "-- nothing\n/* here */ ;\n").check() == []
    problems = one("V1__m.sql", "-- note\r  CREATE TABLE a (id int);\r").check()
    assert problems == [
        "V1__m.sql:2:3: the file holds text here, but no statement premigrate could send, so it would be "
        "recorded as applied without running anything; make it SQL or a comment"
    ]


# ---- the migrations folder --------------------------------------------------------------------------------


def test_whatever_looks_like_a_migration_and_cannot_be_read_is_listed(write_migrations, tmp_path) -> None:
    folder = write_migrations({"V1__a.sql": "SELECT 1;", "sub/V3__c.sql": "SELECT 3;", ".git/V9__x.sql": b"\0"})
    (folder / "V2__x.sql").symlink_to(tmp_path / "missing.sql")
    (folder / "V4__d.sql").mkdir()
    os.mkfifo(folder / "V5__pipe.sql")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "V6__f.sql").write_text("SELECT 6;")
    (folder / "linked").symlink_to(tmp_path / "elsewhere")
    (folder / "notes.txt").symlink_to(tmp_path / "missing.txt")  # not a migration: still ignored
    with pytest.raises(MigrationSetError) as caught:
        load_folder(folder)
    assert caught.value.problems == [
        f"V2__x.sql: a symbolic link to {tmp_path / 'missing.sql'}, which does not exist; fix or remove the link",
        "V4__d.sql: a folder named like a migration; rename it (without .sql) or move it away",
        "V5__pipe.sql: not a regular file (a pipe, socket or device); replace it with the SQL file itself",
        f"linked: a symbolic link to a folder ({tmp_path / 'elsewhere'}); premigrate does not follow links to "
        "folders: move or copy the folder's files into the migrations folder",
    ]


def test_unreadable_files_and_folders_are_listed_with_the_set_problems(write_migrations, monkeypatch) -> None:
    # The tests run as root, who may read anything: the refusals the operating system would give are simulated.
    folder = write_migrations(
        {"V1__a.sql": "SELECT 1;", "V1__again.sql": "SELECT 1;", "locked/V7__x.sql": "x", "users.sql": "SELECT 1;"}
    )
    real_scandir = os.scandir

    def open_file(path: str, mode: str) -> IO[bytes]:
        if path.endswith("V1__again.sql"):
            raise PermissionError(13, "Permission denied")
        return open(path, mode)

    def scandir(path):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(folder_module, "open", open_file, raising=False)
    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(MigrationSetError) as caught:
        load_folder(folder)
    assert caught.value.problems == [
        "V1__again.sql: cannot be read (Permission denied); give the user premigrate runs as the right to read it, "
        "or move it out of the migrations folder",
        "locked/: the folder cannot be read (Permission denied), so migrations in it would be missed; give the "
        "user premigrate runs as the right to read it, or move it out of the migrations folder",
        "users.sql: the name does not match; name versioned migrations V<version>__<description>.sql (like "
        "V3__add_sessions.sql) and repeatable ones R__<description>.sql, or move the file out of the migrations folder",
    ]


def test_the_folder_itself_must_be_a_readable_folder(write_migrations, tmp_path, monkeypatch) -> None:
    folder = write_migrations({"V1__a.sql": "SELECT 1;"})
    with pytest.raises(ConfigurationError, match=r"migrations folder .*V1__a.sql is a file, not a folder; pass"):
        load_folder(folder / "V1__a.sql")
    with pytest.raises(ConfigurationError, match=r"migrations folder .*nowhere does not exist; pass --migrations"):
        load_folder(tmp_path / "nowhere")
    (tmp_path / "link").symlink_to(folder)  # the folder itself may be a link
    assert [m.script for m in load_folder(tmp_path / "link").versioned] == ["V1__a.sql"]
    monkeypatch.setattr(os, "scandir", lambda path: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
    with pytest.raises(ConfigurationError, match=r"cannot be read \(Permission denied\); give the user premigrate"):
        load_folder(folder)


def test_links_to_files_are_read_and_hidden_entries_skipped(write_migrations, tmp_path) -> None:
    folder = write_migrations({"V1__a.sql": "SELECT 1;", ".hidden/V2__b.sql": "SELECT 2;", ".V3__c.sql": "x"})
    (tmp_path / "shared.sql").write_text("SELECT 4;")
    (folder / "V4__shared.sql").symlink_to(tmp_path / "shared.sql")
    migration_set = load_folder(folder)
    assert [(m.script, m.text) for m in migration_set.versioned] == [
        ("V1__a.sql", "SELECT 1;"),
        ("V4__shared.sql", "SELECT 4;"),
    ]

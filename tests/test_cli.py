"""The command line: output, JSON, environment, exit codes, and the embedded database."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from premigrate.adapters.connection import params_from_url
from premigrate.adapters.postgres import connect
from premigrate.cli import main
from premigrate.engine.lock import MigrationLock

USERS = "CREATE TABLE users (id int PRIMARY KEY);\n"


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_up_prints_progress_and_a_summary(capsys, database_url, write_migrations) -> None:
    folder = write_migrations({"V1__users.sql": USERS, "V2__idx.sql": "CREATE INDEX CONCURRENTLY i ON users (id);"})
    code, out, _ = run(capsys, "up", "--database-url", database_url, "--migrations", str(folder))
    assert code == 0
    assert "applying V2 idx (no-transaction: detected: its statements cannot run in a transaction)" in out
    assert "schema version none -> 2: applied 2 migration(s)" in out
    code, out, _ = run(capsys, "up", "--database-url", database_url, "--migrations", str(folder))
    assert (code, out.splitlines()[-1]) == (0, "schema is up to date at version 2: nothing to apply")


def test_settings_come_from_the_environment_and_json_is_parseable(
    capsys, monkeypatch, database_url, write_migrations
) -> None:
    folder = write_migrations({"V1__users.sql": USERS, "V2__more.sql": "CREATE TABLE more ();"})
    monkeypatch.setenv("PREMIGRATE_DATABASE_URL", database_url)
    monkeypatch.setenv("PREMIGRATE_MIGRATIONS", str(folder))
    code, out, _ = run(capsys, "plan", "--json")
    assert code == 0
    plan = json.loads(out)
    assert [p["script"] for p in plan["pending"]] == ["V1__users.sql", "V2__more.sql"]
    assert plan["up_to_date"] is False
    code, out, _ = run(capsys, "up", "--json", "--target", "1")
    report = json.loads(out)
    assert (code, report["schema_version_after"], len(report["applied"])) == (0, "1", 1)
    assert report["lock_wait_ms"] >= 0 and report["total_ms"] > 0
    code, out, _ = run(capsys, "status")
    assert code == 0
    assert re.search(r"^version +description +state +installed on$", out, re.M)
    assert re.search(r"^1 +users +applied +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", out, re.M)
    assert re.search(r"^2 +more +pending$", out, re.M)
    assert out.splitlines()[-2:] == [
        "schema version 1; 1 migration(s) pending:",
        "  V2 more (transaction: default)",
    ]


def test_migration_failure_exits_1_naming_file_and_line(capsys, database_url, write_migrations) -> None:
    folder = write_migrations({"V1__bad.sql": "CREATE TABLE t (id int);\nCREATE TABLE t (id int);\n"})
    code, out, err = run(capsys, "up", "--database-url", database_url, "--migrations", str(folder), "--json")
    assert code == 1
    assert err.startswith('error: V1__bad.sql:2:1: ERROR 42P07: relation "t" already exists')
    body = json.loads(out)
    assert body["exit_code"] == 1 and body["error"].startswith("V1__bad.sql:2:1")


def test_validation_failure_exits_1(capsys, database_url, write_migrations) -> None:
    folder = write_migrations({"V1__users.sql": USERS})
    assert run(capsys, "up", "--database-url", database_url, "--migrations", str(folder))[0] == 0
    write_migrations({"V1__users.sql": USERS + "-- changed\n"})
    code, _, err = run(capsys, "validate", "--database-url", database_url, "--migrations", str(folder))
    assert code == 1
    assert "validation failed (nothing was applied):\n  - V1__users.sql was edited after it was applied" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--database-url", "mysql://x@localhost/db"], "the database URL must look like postgresql://"),
        (
            ["--database-url", "postgresql://u:secret-pw@127.0.0.1:1/db?sslmode=disable"],
            "could not connect to u@127.0.0.1:1/db",
        ),
        (
            ["--database-url", "postgresql://u@127.0.0.1/db?sslmode=sometimes"],
            "sslmode 'sometimes' is unknown",
        ),
        (["--migrations", "/nonexistent/folder"], "migrations folder /nonexistent/folder does not exist"),
    ],
)
def test_configuration_errors_exit_2_without_leaking_the_password(capsys, args, message, write_migrations) -> None:
    folder = write_migrations({"V1__users.sql": USERS})
    code, out, err = run(capsys, "up", "--migrations", str(folder), *args)
    assert code == 2
    assert message in err
    assert "secret-pw" not in out + err


def test_bad_migration_file_exits_1_listing_it(capsys, database_url, write_migrations) -> None:
    folder = write_migrations({"V1__users.sql": USERS, "users.sql": "SELECT 1;"})
    code, _, err = run(capsys, "up", "--database-url", database_url, "--migrations", str(folder))
    assert code == 1
    assert "users.sql: the name does not match" in err


def test_lock_not_obtained_exits_3(capsys, database_url, write_migrations) -> None:
    folder = write_migrations({"V1__users.sql": USERS})
    holder = connect(params_from_url(database_url))
    holder.run(
        "SELECT pg_advisory_lock(:a, :b)",
        a=0x5052454D,
        b=MigrationLock("public.premigrate_schema_history").key,
    )
    try:
        code, _, err = run(
            capsys, "up", "--database-url", database_url, "--migrations", str(folder), "--lock-wait", "300ms"
        )
    finally:
        holder.close()
    assert code == 3
    assert "held the lock for public.premigrate_schema_history for the whole lock wait limit (0.3 s)" in err


def test_bad_duration_is_a_usage_error(capsys) -> None:
    code, _, err = run(capsys, "up", "--lock-wait", "soon")
    assert code == 2
    assert err == "error: --lock-wait: 'soon' is not a duration; write it like 30, 30s, 500ms or 2min\n"


def test_new_creates_the_next_version(capsys, write_migrations) -> None:
    folder = write_migrations({"V001__users.sql": USERS, "V002__more.sql": ""})
    assert run(capsys, "new", "Add orders & items!", "--migrations", str(folder))[0] == 0
    created = folder / "V003__add_orders_items.sql"
    assert created.read_text() == "-- Add orders & items!\n"


def test_embedded_database_is_kept_between_runs(tmp_path: Path) -> None:
    """What `make run` does on a fresh machine: no database given, so the embedded one is used."""
    repo_migrations = Path(__file__).resolve().parent.parent / "migrations"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREMIGRATE_")}
    command = [sys.executable, "-m", "premigrate", "up", "--migrations", str(repo_migrations)]
    first = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert first.returncode == 0, first.stderr
    assert "applied 5 migration(s)" in first.stdout
    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[-1] == "schema is up to date at version 4: nothing to apply"
    assert (tmp_path / ".premigrate" / "pgdata" / "PG_VERSION").exists()


def test_a_database_ahead_of_the_files_is_accepted_when_asked(capsys, database_url, write_migrations, tmp_path) -> None:
    folder = write_migrations({"V1__users.sql": USERS, "V2__more.sql": "CREATE TABLE more ();"})
    assert run(capsys, "up", "--database-url", database_url, "--migrations", str(folder))[0] == 0
    older = write_migrations({"V1__users.sql": USERS}, tmp_path / "older")
    code, _, err = run(capsys, "up", "--database-url", database_url, "--migrations", str(older))
    assert code == 1 and "V2__more.sql (version 2) is applied but its file is gone" in err
    code, out, _ = run(
        capsys, "up", "--database-url", database_url, "--migrations", str(older), "--accept-database-ahead"
    )
    assert code == 0
    assert "note: the database is at version 2, ahead of this migration set (which ends at 1)" in out

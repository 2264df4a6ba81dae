"""The instance-side gate, ``premigrate ready``: read-only, one query a poll, and the same answer psql
gives with the documented query. Real PostgreSQL; the waiting runs on a scripted clock."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from pgservers import Server
from premigrate.engine.readiness import READY_BY_VERSION_SQL
from premigrate.service import load_config
from premigrate.service.readiness import ReadyQuestion, wait_until_ready

USERS = "CREATE TABLE users (id int PRIMARY KEY, name text);\n"
AFTER = "-- premigrate:after-rollout\n"
NOTHING_YET = 'not ready: "public"."premigrate_schema_history" does not exist (nothing was migrated yet)'


def config(database_url: str, folder: Path):
    return load_config("cli", {}, {"database_url": database_url, "migrations": str(folder)})


def migrate(database_url: str, folder: Path, phase: str = "all") -> None:
    from premigrate.service import Request, Service

    migrated = Service(config(database_url, folder).with_values({"phase": phase}, "test")).run(Request("migrate"))
    assert migrated.ok, migrated.error


def ready(database_url: str, folder: Path, clock, **question) -> tuple[bool, str]:
    result = wait_until_ready(config(database_url, folder), ReadyQuestion(**question), clock=clock)
    assert result.exit_code in (0, 5), result.error
    return result.ok, result.report.notes[0] if result.ok else str(result.error)


def test_by_version_counts_before_rollout_migrations_only(database_url, write_migrations, clock) -> None:
    folder = write_migrations({"V1__users.sql": USERS, "V2__index.sql": "CREATE INDEX ON users (name);\n"})
    assert ready(database_url, folder, clock, expect_version="1") == (False, NOTHING_YET)
    migrate(database_url, folder)
    assert ready(database_url, folder, clock, expect_version="2") == (
        True,
        "ready: before-rollout migrations applied up to 2 (2 expected)",
    )
    write_migrations({"V3__drop.sql": AFTER + "ALTER TABLE users DROP COLUMN name;\n"})
    migrate(database_url, folder)
    assert ready(database_url, folder, clock, expect_version="3") == (
        False,
        "not ready: before-rollout migrations applied up to 2, 3 expected",
    )


def test_by_version_compares_versions_as_numbers(database_url, write_migrations, clock) -> None:
    folder = write_migrations({"V1.10__a.sql": "SELECT 1;\n", "V20240101120000__b.sql": "SELECT 2;\n"})
    migrate(database_url, folder)
    assert ready(database_url, folder, clock, expect_version="1.9")[0] is True
    assert ready(database_url, folder, clock, expect_version="20240101120000")[0] is True
    assert ready(database_url, folder, clock, expect_version="20240101120001")[0] is False


def test_by_files_needs_every_before_rollout_file_of_the_set(database_url, write_migrations, clock, db) -> None:
    folder = write_migrations({"V1__users.sql": USERS, "V2__drop.sql": AFTER + "ALTER TABLE users DROP COLUMN name;\n"})
    migrate(database_url, folder, phase="before-rollout")
    assert ready(database_url, folder, clock) == (
        True,
        "ready: every before-rollout migration of this set is applied (at 1)",
    )
    write_migrations({"V3__orders.sql": "CREATE TABLE orders ();\n", "V4__items.sql": "CREATE TABLE items ();\n"})
    assert ready(database_url, folder, clock) == (
        False,
        "not ready: V3__orders.sql and 1 more not applied yet (before-rollout)",
    )
    db.run("UPDATE premigrate_schema_history SET success = false")
    assert ready(database_url, folder, clock)[1].startswith("not ready: V1__users.sql failed")


def test_it_waits_on_its_clock_and_says_how_long(database_url, write_migrations, clock) -> None:
    folder = write_migrations({"V1__users.sql": USERS})
    started = clock.now
    assert ready(database_url, folder, clock, expect_version="1", wait_seconds=9) == (
        False,
        f"{NOTHING_YET} (waited 9 s)",
    )
    assert clock.now - started == 9  # polls every 2 s, the last one at the end of the wait


def test_it_is_ready_as_soon_as_the_migration_lands(database_url, write_migrations, clock) -> None:
    folder = write_migrations({"V1__users.sql": USERS})

    class MigratedMeanwhile(type(clock)):  # the deploy's migration lands during the instance's first pause
        def sleep(self, seconds: float) -> None:
            super().sleep(seconds)
            if self.slept == seconds:
                migrate(database_url, folder)

    waiting = MigratedMeanwhile()
    assert ready(database_url, folder, waiting, expect_version="1", wait_seconds=300)[0] is True
    assert waiting.slept == 2.0


def test_a_folder_from_another_release_is_refused(database_url, write_migrations, clock) -> None:
    folder = write_migrations({"V1__users.sql": USERS})
    result = wait_until_ready(config(database_url, folder), ReadyQuestion(expect_fingerprint="0123"), clock=clock)
    assert (result.exit_code, result.error_kind) == (2, "configuration")
    assert "this instance carries another release's migrations" in str(result.error)


@pytest.mark.parametrize(("expected", "answer"), [("1", "t"), ("2", "f")])
def test_the_documented_query_gives_psqls_answer(
    server: Server, database_url, write_migrations, tmp_path, clock, expected, answer
):
    folder = write_migrations({"V1__users.sql": USERS})
    migrate(database_url, folder)
    script = tmp_path / "ready.sql"
    script.write_text(READY_BY_VERSION_SQL + ";\n")
    command = [
        server.tool("psql"),
        "-X",
        "-At",
        *server.client_args(database_url),
        "-v",
        f"expected={expected}",
        "-f",
        str(script),
    ]
    ran = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert (ran.returncode, ran.stdout.strip()) == (0, answer), ran.stderr
    assert ready(database_url, folder, clock, expect_version=expected)[0] is (answer == "t")


def test_the_command_line_says_ready_or_exits_5(capsys, database_url, write_migrations) -> None:
    from premigrate.cli import main

    folder = write_migrations({"V1__users.sql": USERS})
    common = ["--database-url", database_url, "--migrations", str(folder)]
    assert main(["ready", "--expect-version", "1", *common]) == 5
    assert capsys.readouterr().err == f"error: {NOTHING_YET}\n"
    migrate(database_url, folder)
    assert main(["ready", "--expect-version", "1", *common]) == 0
    assert capsys.readouterr().out == "ready: before-rollout migrations applied up to 1 (1 expected)\n"
    assert main(["ready", "--json", *common]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "ready": True,
        "summary": "ready: every before-rollout migration of this set is applied (at 1)",
    }
    assert main(["ready", "--expect-version", "one", *common]) == 2
    assert "--expect-version: 'one' is not a version" in capsys.readouterr().err

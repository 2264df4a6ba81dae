"""Two phases, one sequence of versions: before-rollout migrations (expand) run ahead of a rolling
deploy, after-rollout ones (contract, ``-- premigrate:after-rollout``) once the old code is gone. On real
PostgreSQL, through the command line."""

from __future__ import annotations

import json
import re

import pytest

from premigrate.cli import main

USERS = "CREATE TABLE users (id int PRIMARY KEY, name text, full_name text);\n"
AFTER = "-- premigrate:after-rollout\n"
EXPAND_CONTRACT = {
    "V1__users.sql": USERS,
    "V2__drop_name.sql": AFTER + "ALTER TABLE users DROP COLUMN name;\n",
    "V3__emails.sql": "CREATE TABLE emails (id int);\n",
}


def up(capsys, database_url: str, folder, *options: str) -> tuple[int, dict, str]:
    code = main(["up", "--json", "--database-url", database_url, "--migrations", str(folder), *options])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def columns(db) -> list[str]:
    rows = db.run(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'users'::regclass AND attnum > 0 AND NOT attisdropped"
    )
    return sorted(row[0] for row in rows)


def phases(db) -> list[tuple[str, str]]:
    return [tuple(row) for row in db.run("SELECT script, phase FROM premigrate_schema_history ORDER BY installed_rank")]


def test_before_rollout_leaves_the_contract_for_after_the_rollout(capsys, database_url, write_migrations, db) -> None:
    folder = write_migrations(EXPAND_CONTRACT)
    code, report, _ = up(capsys, database_url, folder, "--phase", "before-rollout")
    assert code == 0
    assert [run["script"] for run in report["applied"]] == ["V1__users.sql", "V3__emails.sql"]
    assert columns(db) == ["full_name", "id", "name"]  # the old code still reads name

    main(["status", "--database-url", database_url, "--migrations", str(folder)])
    status = capsys.readouterr().out
    assert re.search(r"^2 +drop name +pending +after-rollout$", status, re.M)
    assert re.search(r"^3 +emails +applied +\S+ \S+ +before-rollout$", status, re.M)

    # V2 is below the applied V3, and not out of order: it waited for its phase.
    code, report, _ = up(capsys, database_url, folder, "--phase", "after-rollout")
    assert code == 0
    assert [run["script"] for run in report["applied"]] == ["V2__drop_name.sql"]
    assert columns(db) == ["full_name", "id"]
    assert phases(db) == [
        ("V1__users.sql", "before-rollout"),
        ("V3__emails.sql", "before-rollout"),
        ("V2__drop_name.sql", "after-rollout"),
    ]


def test_after_rollout_refuses_while_a_before_rollout_file_is_pending(capsys, database_url, write_migrations, db):
    folder = write_migrations(EXPAND_CONTRACT)
    code, _, error = up(capsys, database_url, folder, "--phase", "after-rollout")
    assert code == 1
    assert "V1__users.sql runs before the rollout and is still pending" in error
    assert "V3__emails.sql runs before the rollout and is still pending" in error
    assert db.run("SELECT to_regclass('users')") == [[None]]


def test_all_applies_both_phases_in_version_order_by_default(capsys, database_url, write_migrations, db) -> None:
    folder = write_migrations(EXPAND_CONTRACT)
    code, report, _ = up(capsys, database_url, folder)
    assert code == 0
    assert [run["script"] for run in report["applied"]] == ["V1__users.sql", "V2__drop_name.sql", "V3__emails.sql"]
    assert [run["phase"] for run in report["applied"]] == ["before-rollout", "after-rollout", "before-rollout"]


def test_every_phase_validates_both_phases(capsys, database_url, write_migrations, db) -> None:
    folder = write_migrations(EXPAND_CONTRACT)
    assert up(capsys, database_url, folder)[0] == 0
    (folder / "V2__drop_name.sql").write_text(AFTER + "ALTER TABLE users DROP COLUMN name CASCADE;\n")
    write_migrations({"V4__more.sql": "CREATE TABLE more ();\n"})
    code, _, error = up(capsys, database_url, folder, "--phase", "before-rollout")
    assert code == 1
    assert "V2__drop_name.sql was edited after it was applied" in error
    assert db.run("SELECT to_regclass('more')") == [[None]]


def test_an_after_rollout_file_added_below_an_applied_after_rollout_one_is_out_of_order(
    capsys, database_url, write_migrations, db
) -> None:
    folder = write_migrations({"V1__users.sql": USERS, "V3__drop.sql": AFTER + "ALTER TABLE users DROP COLUMN name;\n"})
    assert up(capsys, database_url, folder)[0] == 0
    write_migrations({"V2__late.sql": AFTER + "ALTER TABLE users DROP COLUMN full_name;\n"})
    code, _, error = up(capsys, database_url, folder, "--phase", "after-rollout")
    assert code == 1
    assert "V2__late.sql (version 2) is pending but version 3 is already applied" in error


def test_a_history_from_before_phases_is_read_and_upgraded(capsys, database_url, write_migrations, db) -> None:
    folder = write_migrations({"V1__users.sql": USERS})
    assert up(capsys, database_url, folder)[0] == 0
    db.run("ALTER TABLE premigrate_schema_history DROP COLUMN phase")  # as premigrate 0.1 left it
    main(["status", "--database-url", database_url, "--migrations", str(folder)])
    assert re.search(r"^1 +users +applied", capsys.readouterr().out, re.M)
    write_migrations({"V2__drop.sql": AFTER + "ALTER TABLE users DROP COLUMN name;\n"})
    code, _, error = up(capsys, database_url, folder)
    assert code == 0, error
    assert phases(db) == [("V1__users.sql", None), ("V2__drop.sql", "after-rollout")]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("-- premigrate:after-rollouts\n", "V1__x.sql:1: unknown directive 'premigrate:after-rollouts'"),
        ("-- premigrate:after-rollout now\n", "V1__x.sql:1: '-- premigrate:after-rollout' takes nothing after it"),
        ("-- premigrate:allow table-rewrite\n", "V1__x.sql:1: write '-- premigrate:allow <rule>: <reason>'"),
    ],
)
def test_a_misspelt_directive_is_refused_before_anything_runs(capsys, database_url, write_migrations, header, message):
    folder = write_migrations({"V1__x.sql": header + "CREATE TABLE x ();\n"})
    code, _, error = up(capsys, database_url, folder)
    assert code == 1
    assert message in error


def test_a_phase_that_does_not_exist_is_a_usage_error(capsys, database_url, write_migrations) -> None:
    folder = write_migrations({"V1__users.sql": USERS})
    code = main(["up", "--database-url", database_url, "--migrations", str(folder), "--phase", "after"])
    assert code == 2
    assert "'after' is not a phase; use one of all, before-rollout, after-rollout" in capsys.readouterr().err

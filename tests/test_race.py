"""Many copies of `premigrate up` at once on one database: every migration applies exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from premigrate.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.reliability]
RUNNERS = 64
EXIT_LOCK = 3

MIGRATIONS = {
    "V1__users.sql": "CREATE TABLE users (id int PRIMARY KEY, email text);\n",
    "V2__seed.sql": "INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 20000) g;\n",
    "V3__sessions.sql": "CREATE TABLE sessions (id int, user_id int REFERENCES users);\n",
    # Built while the other runs poll for the lock: it must not wait on them, nor they deadlock with it.
    "V4__email_index.sql": "CREATE INDEX CONCURRENTLY users_email_idx ON users (email);\n",
    "V5__counter.sql": "CREATE TABLE counter (n int);\nINSERT INTO counter VALUES (1);\n",
    "V6__bump.sql": "UPDATE counter SET n = n + 1;\n",
    "R__view.sql": "CREATE OR REPLACE VIEW emails AS SELECT email FROM users;\n",
}


@pytest.mark.parametrize("already_applied", [0, 3], ids=["empty", "half-migrated"])
def test_concurrent_runs_apply_each_migration_exactly_once(
    already_applied, server, database_url, write_migrations, db, capsys, reliability
):
    folder = write_migrations(MIGRATIONS)
    up = ["up", "--database-url", database_url, "--migrations", str(folder)]
    if already_applied:
        assert main([*up, "--target", str(already_applied)]) == 0
    with server.database("single") as reference:
        assert main(["up", "--database-url", reference, "--migrations", str(folder)]) == 0
        capsys.readouterr()
        single_run = server.schema_dump(reference)

    command = [sys.executable, "-m", "premigrate", *up, "--json", "--lock-wait", "120s"]
    started = time.monotonic()
    runners = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(RUNNERS)
    ]
    outcomes = [runner.communicate(timeout=300) for runner in runners]
    elapsed = time.monotonic() - started

    codes = [runner.returncode for runner in runners]
    assert set(codes) <= {0, EXIT_LOCK}, [err for _, err in outcomes]
    reports = [json.loads(out) for out, _ in outcomes]
    applied = [run["script"] for report in reports if "applied" in report for run in report["applied"]]
    # The first run also applied the repeatable: repeatables do not wait for a target version.
    expected = [name for name in MIGRATIONS if name.startswith("V") and int(name[1]) > already_applied]
    expected += [] if already_applied else ["R__view.sql"]
    assert sorted(applied) == sorted(expected)  # each exactly once, across all runners
    rows = db.run("SELECT installed_rank, script FROM premigrate_schema_history ORDER BY installed_rank")
    assert [rank for rank, _ in rows] == list(range(1, len(MIGRATIONS) + 1))  # no gaps
    assert sorted(script for _, script in rows) == sorted(MIGRATIONS)  # no duplicates
    assert db.run("SELECT n FROM counter") == [[2]]
    assert db.run("SELECT indisvalid FROM pg_index WHERE indexrelid = 'users_email_idx'::regclass") == [[True]]
    assert server.schema_dump(database_url) == single_run
    assert elapsed < 120
    reliability(
        f"{RUNNERS} concurrent `up` processes, {'half-migrated' if already_applied else 'empty'} database, "
        "with a CREATE INDEX CONCURRENTLY",
        RUNNERS,
        "exit 0 (or 3), each migration applied once, history without gaps or duplicates, schema = one run's",
        f"{codes.count(0)} exited 0, {codes.count(EXIT_LOCK)} exited 3; wall time {elapsed:.1f} s",
    )

"""Faults in the middle of a run: the process killed, the session terminated, the server restarted,
a table locked by someone else. Afterwards the database is consistent and the next run completes."""

from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from premigrate.adapters.connection import params_from_url
from premigrate.adapters.folder import load_folder
from premigrate.adapters.postgres import connect
from premigrate.cli import main
from premigrate.engine import Engine, MigrationFailedError, Settings

pytestmark = [pytest.mark.slow, pytest.mark.reliability]
KILL_POINTS = 30
SEED = 20261125


def kill_set() -> dict[str, str]:
    files = {
        f"V{n:02d}__table_{n}.sql": f"CREATE TABLE t{n} (id int);\nINSERT INTO t{n} SELECT generate_series(1, 5000);\n"
        f"SELECT pg_sleep(0.02);\n"
        for n in range(1, 13)
    }
    files["V06__table_6.sql"] = "CREATE INDEX CONCURRENTLY IF NOT EXISTS t1_id_idx ON t1 (id);\n"
    return files


@pytest.fixture
def fresh_database(server) -> Iterator:
    """Makes as many fresh databases as a test needs; all are dropped afterwards."""
    with contextlib.ExitStack() as stack:
        yield lambda: stack.enter_context(server.database("k"))


def consistency_problems(url: str) -> list[str]:
    """For every transactional migration: its table exists if and only if its history row does."""
    connection = connect(params_from_url(url))
    try:
        if connection.run("SELECT to_regclass('premigrate_schema_history')") == [[None]]:
            recorded: dict[str, bool] = {}
        else:
            recorded = dict(connection.run("SELECT version, success FROM premigrate_schema_history"))
        problems = []
        for n in range(1, 13):
            version = f"{n:02d}"
            if n == 6:
                valid = connection.run("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('t1_id_idx')")
                if recorded.get(version) and valid != [[True]]:
                    problems.append("V06 recorded but its index is missing or invalid")
                continue
            exists = connection.run(f"SELECT to_regclass('t{n}') IS NOT NULL")[0][0]
            if exists != (version in recorded):
                problems.append(f"V{version}: table exists={exists}, history row={version in recorded}")
        return problems
    finally:
        connection.close()


def test_kill_at_random_moments_leaves_a_consistent_database(
    server, fresh_database, write_migrations, capsys, reliability
) -> None:
    folder = write_migrations(kill_set())
    rng = random.Random(SEED)
    waits, killed_mid_run = [], 0
    for _ in range(KILL_POINTS):
        url = fresh_database()
        runner = subprocess.Popen(
            [sys.executable, "-m", "premigrate", "up", "--database-url", url, "--migrations", str(folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.2, 1.4))
        runner.kill()
        runner.wait(timeout=30)
        # A transactional file is one message: its server session may still finish it (COMMIT included)
        # after the client died. The database "after the kill" is the one that session leaves.
        _wait_until_no_session_on(url)
        assert consistency_problems(url) == []
        started = time.monotonic()
        assert main(["up", "--database-url", url, "--migrations", str(folder), "--json", "--lock-wait", "60s"]) == 0
        report = json.loads(capsys.readouterr().out)
        waits.append(report["lock_wait_ms"])
        killed_mid_run += (
            bool(report["schema_version_before"]) and report["schema_version_after"] == "12" and bool(report["applied"])
        )
        assert report["schema_version_after"] == "12"
        assert time.monotonic() - started < 30
        assert consistency_problems(url) == []
    assert max(waits) < 5000  # the dead session's lock went with it
    reliability(
        "SIGKILL of `up` at seeded random moments (seed 20261125), 12 migrations incl. CREATE INDEX CONCURRENTLY",
        KILL_POINTS,
        "objects exist iff their history row does, after the kill and after the next run; next run completes",
        f"{killed_mid_run} kills landed part-way through the set; next run's lock wait median "
        f"{sorted(waits)[len(waits) // 2]:.0f} ms, max {max(waits):.0f} ms",
    )


def _wait_until_no_session_on(url: str) -> None:
    watcher = connect(params_from_url(url))
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            others = watcher.run(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'"
            )
            if others == [[0]]:
                return
            time.sleep(0.02)
        raise AssertionError("the killed run's session is still on the server after 30 s")
    finally:
        watcher.close()


def _wait_for_migrating_session(url: str, text: str) -> int:
    watcher = connect(params_from_url(url))
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows = watcher.run(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'premigrate' AND query LIKE :text",
                text=f"%{text}%",
            )
            if rows:
                return int(rows[0][0])
            time.sleep(0.05)
        raise AssertionError("the migration never started")
    finally:
        watcher.close()


SLOW_SET = {
    "V1__users.sql": "CREATE TABLE users (id int);\n",
    "V2__slow.sql": "CREATE TABLE slow (id int);\nSELECT pg_sleep(2.5);\n",
    "V3__after.sql": "CREATE TABLE after (id int);\n",
}


def test_terminated_session_and_restarted_server(server, fresh_database, write_migrations, capsys, reliability):
    folder = write_migrations(SLOW_SET)
    outcomes = []
    for fault in ("pg_terminate_backend", "server restart"):
        url = fresh_database()
        command = [sys.executable, "-m", "premigrate", "up", "--database-url", url, "--migrations", str(folder)]
        runner = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        pid = _wait_for_migrating_session(url, "pg_sleep")
        if fault == "server restart":
            server.restart()
        else:
            server.admin(f"SELECT pg_terminate_backend({pid})")
        _, err = runner.communicate(timeout=60)
        assert runner.returncode == 1
        # The file went to the server as one message: which of its lines ran when the session ended is unknown.
        assert err.startswith("error: V2__slow.sql:1-2: the connection to the database was lost while the file ran")
        assert "`premigrate status` (or the next run) shows it; either way it is never applied twice" in err
        assert consistency_of_slow_set(url) == (["V1__users.sql"], False)
        assert main(["up", "--database-url", url, "--migrations", str(folder)]) == 0
        capsys.readouterr()
        assert consistency_of_slow_set(url) == (["V1__users.sql", "V2__slow.sql", "V3__after.sql"], True)
        outcomes.append(f"{fault}: exit 1, '{err.splitlines()[0].removeprefix('error: ').split(' (')[0]}'")
    reliability(
        "the migrating session terminated; the server restarted mid-migration",
        2,
        "exit 1 naming file and line, nothing of the migration applied, the rerun completes",
        "; ".join(outcomes),
    )


def consistency_of_slow_set(url: str) -> tuple[list[str], bool]:
    connection = connect(params_from_url(url))
    try:
        scripts = [r[0] for r in connection.run("SELECT script FROM premigrate_schema_history ORDER BY 1")]
        return scripts, connection.run("SELECT to_regclass('slow') IS NOT NULL")[0][0]
    finally:
        connection.close()


def test_waiting_ddl_does_not_stall_other_queries(database_url, write_migrations, db, reliability) -> None:
    """A migration queued behind a long reader blocks everyone behind it: lock_timeout bounds that."""
    folder = write_migrations({"V1__t.sql": "CREATE TABLE t (a int);\nINSERT INTO t VALUES (1);\n"})
    connection = connect(params_from_url(database_url))
    Engine(connection, load_folder(folder)).migrate()
    write_migrations({"V2__alter.sql": "ALTER TABLE t ADD COLUMN b int;"})
    holder = connect(params_from_url(database_url))
    holder.run("BEGIN; SELECT * FROM t")  # a long report holds ACCESS SHARE and never finishes
    latencies: list[float] = []
    stop = threading.Event()

    def app_queries() -> None:
        reader = connect(params_from_url(database_url))
        while not stop.is_set() and len(latencies) < 1000:
            started = time.monotonic()
            reader.run("SELECT count(*) FROM t")
            latencies.append(time.monotonic() - started)
            time.sleep(0.02)
        reader.close()

    app = threading.Thread(target=app_queries)
    app.start()
    lock_timeout = 0.3
    settings = Settings(lock_timeout_seconds=lock_timeout, lock_timeout_retries=3, retry_pause_seconds=0.3)
    try:
        with pytest.raises(MigrationFailedError, match="55P03"):
            Engine(connection, load_folder(folder), settings).migrate()
    finally:
        stop.set()
        app.join(timeout=30)
        holder.run("ROLLBACK")
        holder.close()
        connection.close()
    assert db.run("SELECT count(*) FROM premigrate_schema_history") == [[1]]
    assert len(latencies) > 20
    assert max(latencies) < lock_timeout + 0.5
    reliability(
        "a long transaction holds the table a migration alters",
        4,
        "the ALTER retries 3 times with backoff, then fails with 55P03; other sessions' queries keep running",
        f"{len(latencies)} application queries during the attempts, slowest {max(latencies) * 1000:.0f} ms "
        f"(lock_timeout {lock_timeout * 1000:.0f} ms)",
    )


def test_lambda_reports_a_lost_connection_as_the_migration_error(
    server, fresh_database, write_migrations, monkeypatch, reliability
) -> None:
    from premigrate.local_invoke import invoke

    url = fresh_database()
    monkeypatch.setenv("PREMIGRATE_DATABASE_URL", url)
    monkeypatch.setenv("PREMIGRATE_MIGRATIONS", str(write_migrations(SLOW_SET)))
    answers: list[dict] = []
    caller = threading.Thread(target=lambda: answers.append(invoke({"action": "migrate", "request_id": "r-1"})))
    caller.start()
    server.admin(f"SELECT pg_terminate_backend({_wait_for_migrating_session(url, 'pg_sleep')})")
    caller.join(timeout=60)
    (answer,) = answers
    assert (answer["ok"], answer["error_kind"]) == (False, "migration")
    # The file went to the server as one message: which of its lines ran when the session ended is unknown.
    assert answer["error"].startswith("V2__slow.sql:1-2: the connection to the database was lost while the file ran")
    assert consistency_of_slow_set(url) == (["V1__users.sql"], False)
    # The ledger never heard the end, so the same request delivered again (a Lambda retry after the caller
    # was answered) must not run a second time; a new request continues where the first stopped.
    retried = invoke({"action": "migrate", "request_id": "r-1"})
    assert (retried["ok"], retried["error_kind"]) == (False, "configuration")
    assert retried["error"].startswith("request 'r-1' is already being handled")
    again = invoke({"action": "migrate", "request_id": "r-2"})
    assert again["ok"] and [r["script"] for r in again["report"]["applied"]] == ["V2__slow.sql", "V3__after.sql"]
    reliability(
        "Lambda: the migrating session is terminated",
        2,
        "the caller gets the migration error (not an internal one); the same request never runs twice, a new one "
        "completes",
        f"answer: '{answer['error'].split(' (')[0]}'",
    )


@pytest.mark.parametrize(("signal_number", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_cancels_the_running_statement_on_the_server(
    database_url, write_migrations, db, signal_number, code, reliability
) -> None:
    folder = write_migrations(
        {
            "V1__users.sql": "CREATE TABLE users (id int);",
            "V2__slow.sql": "CREATE TABLE slow (id int);\nSELECT pg_sleep(60);",
            "V3__later.sql": "CREATE TABLE later (id int);",
        }
    )
    command = [sys.executable, "-m", "premigrate", "up", "--database-url", database_url, "--migrations", str(folder)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pid = _wait_for_migrating_session(database_url, "pg_sleep")
        started = time.monotonic()
        process.send_signal(signal_number)
        _, err = process.communicate(timeout=30)
        elapsed = time.monotonic() - started
    finally:
        process.kill()
    assert process.returncode == code, err
    assert elapsed < 10  # not the 60 s the statement would have run
    assert f"error: interrupted by {signal.Signals(signal_number).name}: the running statement" in err
    assert "ERROR 57014" in err and "Traceback" not in err
    assert db.run("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid AND query LIKE '%pg_sleep%'", pid=pid) == [
        [0]
    ]
    assert db.run("SELECT script FROM premigrate_schema_history ORDER BY installed_rank") == [["V1__users.sql"]]
    assert db.run("SELECT to_regclass('slow'), to_regclass('later')") == [[None, None]]
    reliability(
        f"{signal.Signals(signal_number).name} during a long statement",
        1,
        "the statement is cancelled on the server, the migration rolled back, no later one started, "
        f"exit {code} with a message",
        f"exited {elapsed:.2f} s after the signal",
    )

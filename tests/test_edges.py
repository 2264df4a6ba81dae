"""Edges a review found: failures after COMMIT, interruptions at every moment, replays, the run's report
after a lost connection, and inputs that must never become an "internal" error or show a secret."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from typing import Any

import pytest

from premigrate.adapters.connection import params_from_url
from premigrate.adapters.folder import load_folder
from premigrate.adapters.postgres import connect
from premigrate.cli import main
from premigrate.engine import Engine, LockNotAcquiredError
from premigrate.engine.database import ConnectionLostError, Database, ServerError
from premigrate.engine.errors import RunStoppedError
from premigrate.local_invoke import invoke
from premigrate.service import Request, Service, load_config
from wrapped_database import WrappedDatabase

USERS = "CREATE TABLE users (id int);\n"


class FailingAfter(WrappedDatabase):
    """A real session that raises ``error`` for the first statement containing ``text``: after running it
    when ``after`` (a failure once the server did the work), instead of running it otherwise."""

    def __init__(self, database: Database, text: str, error: Exception, *, after: bool) -> None:
        super().__init__(database)
        self.text, self.error, self.after = text, error, after

    def run(self, sql: str, **params: Any) -> list[list[Any]]:
        if self.text and self.text in sql:
            self.text = ""
            if self.after:
                self.database.run(sql, **params)
            raise self.error
        return self.database.run(sql, **params)


def history(db) -> list[list]:
    return db.run("SELECT script, success FROM premigrate_schema_history ORDER BY installed_rank")


def test_a_failure_after_commit_is_not_reported_as_a_rollback(database_url, write_migrations, db) -> None:
    folder = write_migrations({"V1__users.sql": USERS, "V2__more.sql": "CREATE TABLE more ();"})
    session = FailingAfter(
        connect(params_from_url(database_url)), "DISCARD TEMP", ServerError("53200", "out of shared memory"), after=True
    )
    with pytest.raises(RunStoppedError, match=r"V1__users.sql is applied and recorded, but resetting the session"):
        Engine(session, load_folder(folder)).migrate()
    session.close()
    assert history(db) == [["V1__users.sql", True]]
    assert db.run("SELECT to_regclass('users') IS NOT NULL, to_regclass('more')") == [[True, None]]


def test_an_interruption_while_a_file_runs_stops_the_migration(database_url, write_migrations, db) -> None:
    # A transactional file goes to the server as one message: an interruption (Ctrl-C, SIGTERM) cancels it
    # there, as Service.cancel does, and nothing of the file is applied.
    folder = write_migrations({"V1__many.sql": "CREATE TABLE a ();\nSELECT pg_sleep(30);\nCREATE TABLE c ();\n"})
    service = Service(load_config("cli", {}, {"database_url": database_url, "migrations": str(folder)}))
    timer = threading.Timer(0.5, service.cancel)
    timer.start()
    try:
        result = service.run(Request("migrate"))
    finally:
        timer.cancel()
    assert (result.ok, result.error_kind) == (False, "migration")
    assert "V1__many.sql: ERROR 57014: canceling statement due to user request" in str(result.error)
    assert "The migration was rolled back: nothing of it is applied." in str(result.error)
    assert db.run("SELECT to_regclass('a'), to_regclass('premigrate_schema_history') IS NOT NULL") == [[None, True]]
    assert history(db) == []


def test_an_interruption_between_files_stops_before_the_next(database_url, write_migrations, db) -> None:
    folder = write_migrations({"V1__users.sql": USERS, "V2__more.sql": "CREATE TABLE more ();"})
    stop = {"now": False}
    session = connect(params_from_url(database_url))

    class Watching(FailingAfter):
        def run(self, sql: str, **params: Any) -> list[list[Any]]:
            rows = self.database.run(sql, **params)
            stop["now"] = stop["now"] or "CREATE TABLE users" in sql  # the signal arrives after V1
            return rows

    engine = Engine(
        Watching(session, "", ValueError(), after=False), load_folder(folder), should_stop=lambda: stop["now"]
    )
    with pytest.raises(RunStoppedError, match=r"the run was interrupted: it stopped before V2__more.sql; the next run"):
        engine.migrate()
    session.close()
    assert history(db) == [["V1__users.sql", True]]
    assert db.run("SELECT to_regclass('more')") == [[None]]


def test_a_run_cancelled_before_it_starts_changes_nothing(database_url, write_migrations, db) -> None:
    folder = write_migrations({"V1__users.sql": USERS})
    service = Service(load_config("cli", {}, {"database_url": database_url, "migrations": str(folder)}))
    service.cancel()
    result = service.run(Request("migrate"))
    assert (result.ok, result.error_kind) == (False, "migration")
    assert result.error == "the run was interrupted: it stopped before it started anything"
    assert db.run("SELECT to_regclass('premigrate_schema_history'), to_regclass('users')") == [[None, None]]


def test_an_interruption_during_the_lock_wait_says_so(database_url, write_migrations) -> None:
    folder = write_migrations({"V1__users.sql": USERS})
    holder = connect(params_from_url(database_url), application_name="the-other-run")
    engine = Engine(connect(params_from_url(database_url)), load_folder(folder), should_stop=lambda: True)
    holder.run("SELECT pg_advisory_lock(:a, :b)", a=0x5052454D, b=engine.lock.key)
    try:
        with pytest.raises(LockNotAcquiredError, match=r"interrupted while it waited for the lock.*the-other-run"):
            engine.migrate()
    finally:
        holder.close()
        engine.db.close()


def test_what_was_applied_before_a_lost_connection_is_reported(
    database_url, write_migrations, db, capsys, monkeypatch
) -> None:
    folder = write_migrations({"V1__users.sql": USERS, "V2__more.sql": "CREATE TABLE more ();"})
    real_connect = connect

    def losing_after_v1(params, **options):
        lost = ConnectionLostError("ConnectionResetError: failover")
        return FailingAfter(real_connect(params, **options), "V2__more.sql", lost, after=False)

    monkeypatch.setattr("premigrate.service.connecting.connect", losing_after_v1)
    code = main(["up", "--database-url", database_url, "--migrations", str(folder)])
    out, err = capsys.readouterr()
    assert code == 1  # lost while a migration ran: the migration's failure, naming its file
    assert "applied before the failure: V1 users" in out
    assert (
        "V2__more.sql:1: the connection to the database was lost while the file ran (ConnectionResetError: failover)"
        in err
    )


def test_the_same_request_id_for_another_caller_or_action_is_refused(
    function_env, write_migrations, db, database_url
) -> None:
    assert invoke({"action": "plan", "request_id": "r1"})["ok"]  # read-only: not a ledgered run
    migrated = invoke({"action": "migrate", "request_id": "r1"})
    assert migrated["ok"] and migrated["report"]["applied"][0]["script"] == "V1__users.sql"
    assert invoke({"action": "migrate", "request_id": "r1"})["replayed"] is True
    write_migrations({"V2__more.sql": "CREATE TABLE more ();"})
    config = load_config("cli", {}, {"database_url": database_url, "migrations": str(function_env)})
    reused = Service(config).run(Request("migrate", caller="codepipeline", request_id="r1"))
    assert (reused.ok, reused.error_kind) == (False, "configuration")
    assert (
        reused.error
        == "request id 'r1' was already used by direct for migrate: give this migrate a request id of its own"
    )
    assert db.run("SELECT to_regclass('more')") == [[None]]


def test_a_direct_invoke_that_ran_short_of_time_is_not_ok(function_env, monkeypatch) -> None:
    from premigrate.engine.report import MigrationRun, Report
    from premigrate.service import Result
    from premigrate.triggers import direct

    v1, v2 = (MigrationRun(f"V{n}__x.sql", str(n), "x", "transaction", "default") for n in (1, 2))
    half_done = Report("migrate", applied=[v1], pending=[v2], stopped_for_time=True)
    monkeypatch.setattr(direct, "run", lambda config, request, time_left: Result(True, report=half_done))
    result = invoke({"action": "migrate"})
    assert (result["ok"], result["error_kind"]) == (False, "migration")
    assert result["error"] == (
        "applied 1 migration(s), then ran short of the function's time with 1 still pending; they stay applied: "
        "invoke again to continue"
    )
    assert [run["script"] for run in result["report"]["pending"]] == ["V2__x.sql"]


def test_read_only_actions_work_on_a_read_only_database(function_env, db) -> None:
    (name,) = db.run("SELECT current_database()")[0]
    assert invoke({"action": "migrate"})["ok"]
    db.run(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    for action in ("plan", "status", "validate"):
        result = invoke({"action": action, "request_id": f"ro-{action}"})
        assert result["ok"], result


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["up", "--embedded-dir", "/proc/premigrate-cannot-be-here"], 2, "the embedded PostgreSQL in /proc"),
        (["up", "--database-url", "postgresql://app@db.example.com:²/app"], 2, "the port in the database URL is not"),
        (["up", "--database-url", "postgresql://app@h/app?connect_timeout=99999999999999999999"], 2, "connect_timeout"),
        (["up", "--lock-wait", "postgresql://u:SECRETPW@h/db"], 2, "postgresql://u:***@"),
    ],
)
def test_odd_values_are_configuration_errors_that_show_no_secret(capsys, monkeypatch, args, code, message) -> None:
    monkeypatch.delenv("PREMIGRATE_DATABASE_URL", raising=False)
    assert main(args) == code
    err = capsys.readouterr().err
    assert message in err and "SECRETPW" not in err and "unexpected error" not in err


def test_argparse_hides_a_password_with_spaces(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["status", "postgresql://u:my SECRET pw@h/db"])
    err = capsys.readouterr().err
    assert "SECRET" not in err and "postgresql://u:***@" in err


def printed_result(capsys) -> dict:
    """The result `premigrate invoke` prints last, after the function's own JSON log lines."""
    out = capsys.readouterr().out
    return json.loads(out[out.index('{\n  "') :])


def test_invoke_exits_with_the_code_of_the_category(tmp_path, capsys, write_migrations) -> None:
    event = tmp_path / "plan.json"
    event.write_text(json.dumps({"action": "plan"}))
    url = "postgresql://app@127.0.0.1:1/app?sslmode=disable"
    code = main(["invoke", str(event), "--database-url", url, "--migrations", str(write_migrations({}))])
    assert code == 2
    assert printed_result(capsys)["error_kind"] == "configuration"


def test_invoke_keeps_a_long_duration_exact(tmp_path, capsys, write_migrations, database_url) -> None:
    event = tmp_path / "plan.json"
    event.write_text(json.dumps({"action": "plan"}))
    args = ["invoke", str(event), "--database-url", database_url, "--migrations", str(write_migrations({}))]
    assert main([*args, "--lock-wait", "1000000", "--statement-timeout", "1234567ms"]) == 0
    assert printed_result(capsys)["ok"] is True


def test_a_closed_pipe_is_not_an_error(database_url, write_migrations) -> None:
    folder = write_migrations({"V1__users.sql": USERS})
    command = f"{sys.executable} -m premigrate status --database-url '{database_url}' --migrations {folder} | head -c0"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=60, check=False
    )
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
    assert done.returncode == 0, done.stderr


def test_an_internal_error_names_where_it_happened_and_no_value() -> None:
    from premigrate.service import failure

    try:
        {"password": "hunter2"}["missing-key-with-a-secret"]
    except KeyError as error:
        result = failure(error)
    assert (result.error_kind, result.exit_code) == ("internal", 70)
    assert result.error is not None and result.error.startswith("unexpected error (KeyError at test_edges.py:")
    assert "secret" not in result.error and "hunter2" not in result.error

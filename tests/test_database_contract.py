"""The Database port's contract (premigrate/engine/database.py), which every implementation must pass.

Add an implementation to IMPLEMENTATIONS and it runs the whole suite, on every real server.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from premigrate.adapters.connection import params_from_url
from premigrate.adapters.postgres import connect
from premigrate.engine.database import ConnectionLostError, Database, ServerError

IMPLEMENTATIONS: dict[str, Callable[[str], Database]] = {
    "pg8000": lambda url: connect(params_from_url(url), application_name="premigrate-contract"),
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def open_database(request: pytest.FixtureRequest, database_url: str) -> Iterator[Callable[[], Database]]:
    opened: list[Database] = []

    def make() -> Database:
        database = IMPLEMENTATIONS[request.param](database_url)
        opened.append(database)
        return database

    yield make
    for database in opened:
        database.close()


@pytest.fixture
def database(open_database: Callable[[], Database]) -> Database:
    return open_database()


def backend_pid(database: Database) -> int:
    return int(database.run("SELECT pg_backend_pid()")[0][0])


def test_rows_in_order_and_none_as_an_empty_list(database: Database) -> None:
    rows = database.run(
        "SELECT 1, 'a'; SET LOCAL lock_timeout = '1s'; SELECT 2, 'b' UNION ALL SELECT 3, 'c' ORDER BY 1"
    )
    assert rows == [[1, "a"], [2, "b"], [3, "c"]]
    assert database.run("CREATE TABLE t (id int)") == []
    assert database.run("SELECT id FROM t") == []


def test_a_script_runs_in_one_implicit_transaction(database: Database) -> None:
    database.run("CREATE TABLE t (id int)")
    with pytest.raises(ServerError):
        database.run("INSERT INTO t VALUES (1); INSERT INTO t VALUES ('x')")
    assert database.run("SELECT count(*) FROM t") == [[0]]


def test_a_script_with_its_own_commit_keeps_what_it_committed(database: Database) -> None:
    database.run("CREATE TABLE t (id int)")
    with pytest.raises(ServerError):
        database.run("BEGIN; INSERT INTO t VALUES (1); COMMIT; INSERT INTO t VALUES ('x')")
    assert database.run("SELECT count(*) FROM t") == [[1]]


def test_parameters_are_bound_by_name_in_one_statement(database: Database) -> None:
    rows = database.run(
        "SELECT CAST(:text AS text), CAST(:number AS int), CAST(:list AS text[])",
        text="it's",
        number=7,
        list=["a", "b"],
    )
    assert rows == [["it's", 7, ["a", "b"]]]


def test_a_server_error_carries_every_field_and_the_session_stays_usable(database: Database) -> None:
    with pytest.raises(ServerError) as caught:
        database.run("SELECT 1;\nSELECT * FROM missing_table")
    error = caught.value
    assert (error.sqlstate, error.message) == ("42P01", 'relation "missing_table" does not exist')
    assert error.position == len("SELECT 1;\nSELECT * FROM ") + 1  # 1-based, in the whole submitted text
    database.run(
        "CREATE FUNCTION fail() RETURNS void LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'no' USING DETAIL = 'the detail', HINT = 'the hint'; END $$"
    )
    with pytest.raises(ServerError) as caught:
        database.run("SELECT fail()")
    assert (caught.value.detail, caught.value.hint) == ("the detail", "the hint")
    assert caught.value.context is not None and "PL/pgSQL function fail()" in caught.value.context
    assert database.run("SELECT 42") == [[42]]


def test_an_error_inside_a_transaction_leaves_it_aborted_as_postgresql_does(database: Database) -> None:
    database.run("BEGIN")
    with pytest.raises(ServerError):
        database.run("SELECT 1/0")
    with pytest.raises(ServerError) as caught:
        database.run("SELECT 1")
    assert caught.value.sqlstate == "25P02"
    database.run("ROLLBACK")
    assert database.run("SELECT 1") == [[1]]


def test_a_statement_timeout_is_a_server_error(database: Database) -> None:
    database.run("SET statement_timeout = '50ms'")
    with pytest.raises(ServerError) as caught:
        database.run("SELECT pg_sleep(5)")
    assert caught.value.sqlstate == "57014"


def test_a_terminated_session_is_lost_with_the_servers_reason(open_database: Callable[[], Database]) -> None:
    victim, other = open_database(), open_database()
    other.run("SELECT pg_terminate_backend(:pid)", pid=backend_pid(victim))
    with pytest.raises(ConnectionLostError) as caught:
        victim.run("SELECT 1")
    # The server's FATAL reason is kept when the driver read it before the socket broke (timing decides).
    assert caught.value.reason is None or caught.value.reason.sqlstate == "57P01"
    with pytest.raises(ConnectionLostError):  # and stays lost
        victim.run("SELECT 1")
    victim.close()  # never raises on a dead session
    victim.close()


def test_nothing_but_the_ports_errors_escape(open_database: Callable[[], Database]) -> None:
    database = open_database()
    for sql in ("SELEC 1", "SELECT 1/0", "COMMIT; ROLLBACK; SELECT 'x'::int"):
        with pytest.raises(ServerError):
            database.run(sql)
    database.close()
    with pytest.raises(ConnectionLostError):
        database.run("SELECT 1")


def test_waiting_for_a_notification_ends_when_one_comes(open_database: Callable[[], Database]) -> None:
    listener, notifier = open_database(), open_database()
    listener.run("LISTEN contract_channel")
    assert listener.wait_for_notification(0.05) is False  # nothing sent: the time passes
    notifier.run("NOTIFY contract_channel")
    started = time.monotonic()
    assert listener.wait_for_notification(30.0) is True  # long bound: only the notification ends it soon
    assert time.monotonic() - started < 10
    assert listener.run("SELECT 1") == [[1]]  # the session reads on as before
    assert listener.wait_for_notification(0.05) is False  # and that notification does not count twice


def test_a_notification_a_run_read_counts_once(open_database: Callable[[], Database]) -> None:
    listener, notifier = open_database(), open_database()
    listener.run("LISTEN contract_channel")
    notifier.run("NOTIFY contract_channel")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not listener.wait_for_notification(0.05):
        pass
    listener.run("SELECT 1")  # reads the notification (or it was read already)
    notifier.run("NOTIFY contract_channel")
    listener.run("SELECT pg_sleep(0.2)")  # delivered while this runs or just after: read with it or waited on
    assert listener.wait_for_notification(5.0) is True
    assert listener.wait_for_notification(0.05) is False


def test_waiting_on_a_lost_session_does_not_raise(open_database: Callable[[], Database]) -> None:
    victim, other = open_database(), open_database()
    victim.run("LISTEN contract_channel")
    other.run("SELECT pg_terminate_backend(:pid)", pid=backend_pid(victim))
    for _ in range(3):  # readable (the server's goodbye), then closed: neither raises
        assert victim.wait_for_notification(0.05) in (True, False)
    with pytest.raises(ConnectionLostError):
        victim.run("SELECT 1")
    assert victim.wait_for_notification(0.05) is False

"""Waiters for the migration lock wake when it is released (LISTEN/NOTIFY), and poll when nobody says so."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from premigrate.adapters.connection import params_from_url
from premigrate.adapters.folder import load_folder
from premigrate.adapters.postgres import PostgresDatabase, connect
from premigrate.engine import Engine
from premigrate.engine.database import ServerError
from premigrate.engine.lock import MigrationLock
from wrapped_database import WrappedDatabase

TABLE = "public.premigrate_schema_history"
LONG_WAIT = 30.0
"""What a waiter's every pause is stretched to: only a notification can end one sooner."""


class WatchedClock:
    """The real clock, with every pause stretched to ``stretch`` seconds (the back-off is not under test)
    and each pause's outcome recorded: True woken, False timed out, None slept without a wake-up."""

    def __init__(self, stretch: float | None = LONG_WAIT) -> None:
        self.stretch = stretch
        self.outcomes: list[bool | None] = []
        self.waiting = threading.Event()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float, wake: Callable[[float], bool] | None = None) -> None:
        seconds = self.stretch or seconds
        self.waiting.set()
        if wake is None:
            time.sleep(min(seconds, 0.2))
            self.outcomes.append(None)
        else:
            self.outcomes.append(wake(seconds))


@pytest.fixture
def sessions(database_url: str) -> Iterator[Callable[[], PostgresDatabase]]:
    opened: list[PostgresDatabase] = []

    def open_session() -> PostgresDatabase:
        opened.append(connect(params_from_url(database_url), application_name="premigrate-lock-test"))
        return opened[-1]

    yield open_session
    for session in opened:
        session.close()


def wait_in_thread(lock: MigrationLock, session: Any) -> tuple[threading.Thread, list[object]]:
    """Acquire in another thread; the list gets the seconds waited, or the exception."""
    outcome: list[object] = []

    def acquire() -> None:
        try:
            outcome.append(lock.acquire(session, wait_seconds=120))
        except Exception as error:  # the test asserts on it
            outcome.append(error)

    waiter = threading.Thread(target=acquire, daemon=True)
    waiter.start()
    return waiter, outcome


def test_a_waiter_wakes_as_soon_as_the_holder_releases(sessions: Callable[[], PostgresDatabase]) -> None:
    holder, waiter_session = sessions(), sessions()
    MigrationLock(TABLE).acquire(holder, wait_seconds=1)
    clock = WatchedClock()
    waiter, outcome = wait_in_thread(MigrationLock(TABLE, clock), waiter_session)
    assert clock.waiting.wait(10), "the waiter never paused"
    MigrationLock(TABLE).release(holder)
    waiter.join(20)
    assert not waiter.is_alive()
    assert isinstance(outcome[0], float) and outcome[0] < LONG_WAIT / 2, outcome
    assert clock.outcomes == [True]  # one pause, ended by the release's notification
    assert waiter_session.run("SELECT pg_listening_channels()") == []  # the holder listens to nobody


def test_every_waiter_wakes_and_the_lock_goes_to_one_at_a_time(sessions: Callable[[], PostgresDatabase]) -> None:
    holder, waiting_sessions = sessions(), [sessions() for _ in range(3)]
    MigrationLock(TABLE).acquire(holder, wait_seconds=1)
    clocks = [WatchedClock() for _ in waiting_sessions]
    waiters = [wait_in_thread(MigrationLock(TABLE, c), s) for c, s in zip(clocks, waiting_sessions, strict=True)]
    assert all(clock.waiting.wait(10) for clock in clocks)
    releasing, served = holder, set[int]()
    for turn in range(1, len(waiters) + 1):
        MigrationLock(TABLE).release(releasing)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(won := {i for i, (_, got) in enumerate(waiters) if got}) < turn:
            time.sleep(0.01)
        time.sleep(0.1)  # time enough for a second winner, if the lock let one in
        won = {i for i, (_, got) in enumerate(waiters) if got}
        assert len(won) == turn, f"turn {turn}: {len(won)} waiters hold the lock"
        (winner,) = won - served
        served.add(winner)
        releasing = waiting_sessions[winner]
    for thread, got in waiters:
        thread.join(20)
        assert isinstance(got[0], float) and got[0] < LONG_WAIT / 2, got
    # Every pause of every waiter ended with a release's notification, none ran out.
    assert all(clock.outcomes and all(clock.outcomes) for clock in clocks)


class ReleasedBeforeListen(WrappedDatabase):
    """A real session for which the holder lets go just before its LISTEN reaches the server."""

    def __init__(self, database: PostgresDatabase, holder: PostgresDatabase) -> None:
        super().__init__(database)
        self.holder = holder

    def run(self, sql: str, **params: Any) -> list[list[Any]]:
        if sql.startswith("LISTEN"):
            MigrationLock(TABLE).release(self.holder)  # its NOTIFY goes to nobody: nobody listens yet
        return self.database.run(sql, **params)


def test_a_release_before_the_listen_is_not_missed(sessions: Callable[[], PostgresDatabase]) -> None:
    holder = sessions()
    MigrationLock(TABLE).acquire(holder, wait_seconds=1)
    clock = WatchedClock()
    waited = MigrationLock(TABLE, clock).acquire(ReleasedBeforeListen(sessions(), holder), wait_seconds=120)
    assert clock.outcomes == []  # tried again right after its LISTEN, before any pause
    assert waited < LONG_WAIT / 2


def test_a_holder_that_dies_says_nothing_and_polling_finds_the_lock_free(
    sessions: Callable[[], PostgresDatabase],
) -> None:
    holder, waiter_session, admin = sessions(), sessions(), sessions()
    MigrationLock(TABLE).acquire(holder, wait_seconds=1)
    clock = WatchedClock(stretch=0.3)
    waiter, outcome = wait_in_thread(MigrationLock(TABLE, clock), waiter_session)
    assert clock.waiting.wait(10)
    admin.run("SELECT pg_terminate_backend(:pid)", pid=holder.run("SELECT pg_backend_pid()")[0][0])
    waiter.join(20)
    assert isinstance(outcome[0], float), outcome
    assert clock.outcomes[-1] is False  # no notification: the pause ran out, and the next try won


class RefusingListen(WrappedDatabase):
    """A real session on a server that refuses LISTEN, as a hot standby does."""

    def run(self, sql: str, **params: Any) -> list[list[Any]]:
        if sql.startswith("LISTEN"):
            raise ServerError("25006", "cannot execute LISTEN during recovery")
        return self.database.run(sql, **params)

    def wait_for_notification(self, seconds: float) -> bool:
        raise AssertionError("a session that could not LISTEN is not waited on")


def test_where_listen_is_refused_the_waiter_polls(sessions: Callable[[], PostgresDatabase]) -> None:
    holder = sessions()
    MigrationLock(TABLE).acquire(holder, wait_seconds=1)
    clock = WatchedClock(stretch=None)
    waiter, outcome = wait_in_thread(MigrationLock(TABLE, clock), RefusingListen(sessions()))
    assert clock.waiting.wait(10)
    MigrationLock(TABLE).release(holder)
    waiter.join(20)
    assert isinstance(outcome[0], float), outcome
    assert clock.outcomes and set(clock.outcomes) == {None}


class RefusingNotify(WrappedDatabase):
    """A real session whose NOTIFY at release is refused (a full notification queue: 54000), ``after`` the
    unlock ran or before anything did."""

    def __init__(self, database: PostgresDatabase, *, after: bool) -> None:
        super().__init__(database)
        self.after = after

    def run(self, sql: str, **params: Any) -> list[list[Any]]:
        if "pg_notify" in sql:
            if self.after:
                self.database.run(sql, **params)
            raise ServerError("54000", "too many notifications in the NOTIFY queue")
        return self.database.run(sql, **params)


@pytest.mark.parametrize("after", [False, True], ids=["refused-before", "refused-at-commit"])
def test_a_refused_wake_up_leaves_the_run_successful_and_the_lock_free(
    sessions: Callable[[], PostgresDatabase], write_migrations: Any, after: bool
) -> None:
    folder = write_migrations({"V1__t.sql": "CREATE TABLE t (id int);"})
    report = Engine(RefusingNotify(sessions(), after=after), load_folder(folder)).migrate()
    assert [run.script for run in report.applied] == ["V1__t.sql"]
    assert MigrationLock(TABLE)._try(sessions()) is not None  # nobody holds it any more


def test_only_a_release_that_unlocked_wakes_anyone(sessions: Callable[[], PostgresDatabase]) -> None:
    listener, holder = sessions(), sessions()
    listener.run(f"LISTEN {MigrationLock(TABLE).channel}")
    MigrationLock(TABLE).release(holder)  # held by nobody: nothing to announce
    assert listener.wait_for_notification(0.2) is False
    MigrationLock(TABLE).acquire(holder, wait_seconds=1)
    holder.run("SET synchronous_commit = on")  # the test servers' own default is off
    MigrationLock(TABLE).release(holder)
    assert listener.wait_for_notification(10) is True
    assert holder.run("SHOW synchronous_commit") == [["on"]]  # turned off for the release's commit alone

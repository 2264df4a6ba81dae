"""The migration lock: a session-level advisory lock per database and history table.

It is taken with ``pg_try_advisory_lock`` with no transaction open, so a waiter can never block (or
deadlock with) the holder's CREATE INDEX CONCURRENTLY, which waits for older transactions. A waiter LISTENs
on the lock's channel and the holder NOTIFYs it on release, so waiters try again at once rather than at
their next poll; an idle LISTEN holds no snapshot, so it cannot block that index build either. Polling
stays as the fallback: a holder that dies releases the lock without a word.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass

from premigrate.engine.clock import SYSTEM_CLOCK, Clock
from premigrate.engine.database import Database, ServerError
from premigrate.engine.errors import ConfigurationError, LockNotAcquiredError

# First half of the two-part advisory lock key, so our locks are recognisable in pg_locks ("PREM").
_NAMESPACE = 0x5052454D
_FIRST_POLL_SECONDS = 0.05
_LONGEST_POLL_SECONDS = 1.0


def advisory_key(name: str) -> int:
    """A stable, positive 32-bit key for an advisory lock named after ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") & 0x7FFFFFFF


@dataclass(frozen=True)
class MigrationLock:
    qualified_table: str
    clock: Clock = SYSTEM_CLOCK

    @property
    def key(self) -> int:
        return advisory_key(self.qualified_table)

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel on which the holder announces the release."""
        return f"premigrate_lock_{self.key}"

    def acquire(self, db: Database, wait_seconds: float, give_up: Callable[[], bool] = lambda: False) -> float:
        """Wait until the lock is ours; returns the seconds waited. Raises LockNotAcquiredError after
        ``wait_seconds``, or as soon as ``give_up()`` says so (the run was interrupted)."""
        started = self.clock.monotonic()
        pause = _FIRST_POLL_SECONDS
        listening: bool | None = None  # None: not asked yet; False: the server refused (a hot standby)
        while (backend := self._try(db)) is None:
            waited = self.clock.monotonic() - started
            if give_up():
                raise LockNotAcquiredError(
                    f"the run was interrupted while it waited for the lock for {self.qualified_table} "
                    f"({waited:.1f} s): {self._describe_holder(db)}"
                )
            if waited >= wait_seconds:
                raise LockNotAcquiredError(
                    f"another migration run held the lock for {self.qualified_table} for the whole lock wait "
                    f"limit ({wait_seconds:g} s): {self._describe_holder(db)}. Let it finish and run again, "
                    "or raise --lock-wait; if that session is stuck, end it with pg_terminate_backend(pid)"
                )
            if listening is None:
                # Then straight back to try: a release between the first try and the LISTEN told nobody.
                listening = self._listen(db)
                continue
            wake = db.wait_for_notification if listening else None
            self.clock.sleep(min(pause * random.uniform(0.5, 1.0), max(wait_seconds - waited, 0.0)), wake=wake)
            pause = min(pause * 2, _LONGEST_POLL_SECONDS)
        if listening:
            # Best effort: the lock is ours now, and a refusal here must not leave it held unreleased. A
            # channel left listened to only fills the driver's list; the first migration's reset ends it.
            with contextlib.suppress(ServerError):
                db.run(f"UNLISTEN {self.channel}")
        self._confirm_held(db, backend)
        return self.clock.monotonic() - started

    def _listen(self, db: Database) -> bool:
        try:
            db.run(f"LISTEN {self.channel}")
        except ServerError:  # a hot standby refuses LISTEN: polling alone, then
            return False
        return True

    @property
    def held_sql(self) -> str:
        """A SQL expression, true while this session holds the lock: a migration can release it
        (pg_advisory_unlock_all, DISCARD ALL), so it is checked again before a migration is recorded."""
        return (
            "EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
            f"AND granted AND classid = {_NAMESPACE} AND objid = {self.key} AND objsubid = 2)"
        )

    def take_back(self, db: Database) -> bool:
        """Try once to hold the lock again (after a migration released it); False if another run has it."""
        return self._try(db) is not None

    def release(self, db: Database) -> None:
        """Unlock, and wake the waiters when the unlock released something. The notification goes out when
        the statement's implicit transaction commits, after the unlock, so a waiter that wakes finds the
        lock free. That commit must not cost what the run did not: synchronous_commit is off for it (no WAL
        flush, no wait for a synchronous standby), and a NOTIFY refused (a full notification queue, a
        standby) leaves the unlock standing, since a session's advisory unlock ignores its transaction."""
        try:
            db.run(
                "SELECT CASE WHEN pg_advisory_unlock(:namespace, :key) THEN CASE WHEN pg_is_in_recovery() THEN "
                "'standby' ELSE concat(set_config('synchronous_commit', 'off', true), pg_notify(:channel, '')) "
                "END END",
                namespace=_NAMESPACE,
                key=self.key,
                channel=self.channel,
            )
        except ServerError:  # refused before or after the unlock: once more, alone (a no-op if it was done)
            db.run("SELECT pg_advisory_unlock(:namespace, :key)", namespace=_NAMESPACE, key=self.key)

    def _try(self, db: Database) -> int | None:
        """The server process id that now holds the lock, or None if another session has it."""
        rows = db.run(
            "SELECT pg_try_advisory_lock(:namespace, :key), pg_backend_pid()", namespace=_NAMESPACE, key=self.key
        )
        return int(rows[0][1]) if rows and rows[0][0] else None

    def _confirm_held(self, db: Database, backend: int) -> None:
        # Behind a transaction-mode pooler the lock and our later statements can land on different
        # server sessions, which silently voids it: check that this very backend holds it.
        rows = db.run(f"SELECT {self.held_sql}")
        if not rows[0][0]:
            self.release(db)  # best effort: through a pooler it may reach another server session
            raise ConfigurationError(
                "the migration lock was taken but this session does not hold it, which happens behind a "
                "transaction-mode connection pooler such as PgBouncer. Connect to the database's direct "
                f"endpoint instead. The lock may stay with server process {backend} until the pooler closes "
                "that connection"
            )

    def _describe_holder(self, db: Database) -> str:
        rows = db.run(
            """
            SELECT a.pid, a.application_name, a.usename, a.client_addr::text, a.backend_start, a.state
            FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted
              AND l.classid = :namespace AND l.objid = :key AND l.objsubid = 2
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
            """,
            namespace=_NAMESPACE,
            key=self.key,
        )
        if not rows:
            return "it has just been released"
        pid, application, user, client, since, state = rows[0]
        return (
            f"pid {pid}, application_name {application or '(none)'!r}, user {user}, "
            f"client {client or 'local socket'}, connected since {since:%Y-%m-%d %H:%M:%S %Z}, state {state}"
        )

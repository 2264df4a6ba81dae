"""A property of the whole engine: for generated migration sets mixing the three execution modes and
session changes, with an injected failure or a killed session, one run and any split into several runs
give the same schema and the same history, and no migration's effects are ever present without its
history row.

``PREMIGRATE_PROPERTY_EXAMPLES`` sets how many sets are tried (`make reliability` tries more).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from premigrate.adapters.connection import params_from_url
from premigrate.adapters.postgres import PostgresDatabase, connect
from premigrate.engine import Engine, MigrationSet, PremigrateError, Settings
from premigrate.engine.indexes import all_invalid
from wrapped_database import WrappedDatabase

pytestmark = [pytest.mark.slow, pytest.mark.reliability]
EXAMPLES = int(os.environ.get("PREMIGRATE_PROPERTY_EXAMPLES", "6"))
MODES = ("transaction", "no-transaction", "own-transaction")
SESSION_CHANGES = (
    "",
    "SET search_path = elsewhere;",
    "SET ROLE {role};",
    "SELECT pg_catalog.set_config('search_path', '', false);",
    "RESET ALL;",
    "CREATE TEMP TABLE scratch (id int);",
)
FAULTS = (None, "failing statement", "killed session")


@dataclass(frozen=True)
class Step:
    mode: str
    change: str


def migration_text(number: int, step: Step, role: str) -> str:
    # Idempotent, as a statement-by-statement migration must be to be run again after a failure. Names
    # are unqualified, so a search_path leaked from an earlier migration would put them elsewhere.
    body = (
        f"CREATE TABLE IF NOT EXISTS t{number} (id int PRIMARY KEY);\n"
        f"INSERT INTO t{number} VALUES ({number}) ON CONFLICT DO NOTHING;\n"
    )
    change = step.change.format(role=role)
    if step.mode == "no-transaction":
        return (
            f"-- premigrate:no-transaction\n{body}"
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS t{number}_idx ON t{number} (id);\n{change}\n"
        )
    if step.mode == "own-transaction":
        return f"BEGIN;\n{body}COMMIT;\n{change}\n"
    return f"{body}{change}\n"


def migration_set(steps: list[Step], role: str, fault: tuple[str, int] | None = None) -> MigrationSet:
    files = [("V001__schemas.sql", b"CREATE SCHEMA IF NOT EXISTS elsewhere;\n")]
    for number, step in enumerate(steps, start=2):
        text = migration_text(number, step, role)
        if fault == ("failing statement", number):
            text += "SELECT 1 / 0;\n"
        files.append((f"V{number:03d}__step.sql", text.encode()))
    return MigrationSet.from_files(files)


class KillingDatabase(WrappedDatabase):
    """A real session that the server terminates just before the first statement containing ``marker``."""

    def __init__(self, database: PostgresDatabase, admin_url: str, marker: str) -> None:
        super().__init__(database)
        self.admin_url, self.marker = admin_url, marker
        self.pid = database.run("SELECT pg_backend_pid()")[0][0]

    def run(self, sql: str, **params: Any) -> list[list[Any]]:
        if self.marker and self.marker in sql:
            self.marker = ""
            admin = connect(params_from_url(self.admin_url))
            admin.run("SELECT pg_terminate_backend(:pid)", pid=self.pid)
            admin.close()
        return self.database.run(sql, **params)


def run(url: str, migrations: MigrationSet, target: str | None = None, kill_at: str = "") -> None:
    connection = connect(params_from_url(url))
    database = KillingDatabase(connection, url, kill_at) if kill_at else connection
    try:
        Engine(database, migrations, Settings(target=target, retry_pause_seconds=0.01)).migrate()
    finally:
        database.close()


def recover(url: str, migrations: MigrationSet) -> None:
    """What an operator does after a failed run: drop what an interrupted index build left, repair."""
    connection = connect(params_from_url(url))
    try:
        for name in all_invalid(connection):
            connection.run(f"DROP INDEX CONCURRENTLY {name}")
        Engine(connection, migrations).repair()
    finally:
        connection.close()


def snapshot(url: str) -> tuple[list[tuple], list[tuple]]:
    """(tables and indexes with schema and owner, history as script and outcome in order)."""
    connection = connect(params_from_url(url))
    try:
        objects = connection.run(
            "SELECT n.nspname, c.relname, c.relkind, pg_get_userbyid(c.relowner) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'elsewhere') "
            "AND c.relkind IN ('r', 'i') AND c.relname NOT LIKE 'premigrate%' ORDER BY 1, 2"
        )
        history = connection.run("SELECT script, success FROM premigrate_schema_history ORDER BY installed_rank")
        return [tuple(row) for row in objects], [tuple(row) for row in history]
    finally:
        connection.close()


def effects_without_history(url: str, count: int) -> list[str]:
    """Migrations whose table exists while the history has no row for them at all."""
    connection = connect(params_from_url(url))
    try:
        recorded = {row[0] for row in connection.run("SELECT script FROM premigrate_schema_history")}
        return [
            f"V{number:03d}__step.sql"
            for number in range(2, count + 2)
            if connection.run(f"SELECT to_regclass('public.t{number}') IS NOT NULL")[0][0]
            and f"V{number:03d}__step.sql" not in recorded
        ]
    finally:
        connection.close()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    steps=st.lists(st.builds(Step, st.sampled_from(MODES), st.sampled_from(SESSION_CHANGES)), min_size=2, max_size=5),
    cuts=st.sets(st.integers(min_value=1, max_value=5), max_size=3),
    fault=st.sampled_from(FAULTS),
    fault_at=st.integers(min_value=2, max_value=6),
)
def test_one_run_and_any_split_give_the_same_result(
    server, limited_role, steps, cuts, fault, fault_at, reliability
) -> None:
    fault_at = min(fault_at, len(steps) + 1)
    role = limited_role
    clean = migration_set(steps, role)
    with server.database("one") as one_url, server.database("split") as split_url:
        run(one_url, clean)
        expected = snapshot(one_url)

        faulty = migration_set(steps, limited_role, (fault, fault_at) if fault == "failing statement" else None)
        kill_at = f"t{fault_at} " if fault == "killed session" else ""
        for target in [str(cut + 1) for cut in sorted(cuts) if cut + 1 <= len(steps)] + [None]:
            try:
                run(split_url, faulty, target, kill_at)
            except PremigrateError:
                problems = effects_without_history(split_url, len(steps))
                assert problems == [], f"effects without a history row after a {fault}: {problems}"
                recover(split_url, clean)
                faulty, kill_at = clean, ""
                run(split_url, clean, target)
            assert effects_without_history(split_url, len(steps)) == []
        assert snapshot(split_url) == expected
    reliability(
        "generated migration sets: modes, session changes, a failure or a killed session, runs split at random",
        EXAMPLES,
        "one run and any split give the same schema (objects, schemas, owners) and history; no migration's "
        "effects without its history row, even right after the failure or the kill",
        f"{EXAMPLES} sets of 3 to 6 migrations (hypothesis)",
    )

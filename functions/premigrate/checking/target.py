"""What ``premigrate check`` reads of the target database, in one read-only transaction: which migrations
it has (as ``premigrate plan`` sees them, refusing what plan refuses) and how big each table is.

Sizes come from the catalog's statistics (``pg_class.reltuples`` and ``relpages``) and the cumulative
statistics (``pg_stat_user_tables.n_live_tup``): no user table is locked, unlike ``pg_relation_size``,
which would queue behind a migration's ACCESS EXCLUSIVE lock on a busy database.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from premigrate.checking.catalog import USER_SCHEMA
from premigrate.checking.judging import TableSize
from premigrate.engine import Engine, Migration, MigrationSet, Settings
from premigrate.engine.database import ConnectionLostError, Database

_REPLAYED_STATES = ("applied", "below-baseline")
"""Files the target has run (or adopted with a baseline): their schema is what pending migrations meet."""
_SIZES = f"""SELECT c.oid, n.nspname || '.' || c.relname, c.relkind, c.reltuples,
        c.relpages::bigint * current_setting('block_size')::bigint, s.n_live_tup
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
    WHERE c.relkind IN ('r', 'p', 'm') AND {USER_SCHEMA}"""


@dataclass(frozen=True)
class Target:
    replay: list[Migration]
    pending: list[Migration]
    sizes: dict[str, TableSize] | None


def read_target(db: Database, migrations: MigrationSet, settings: Settings, *, sizes: bool) -> Target:
    """History (and, with ``sizes``, table sizes) of the target, read-only; raises what ``plan`` raises."""
    db.run("BEGIN TRANSACTION READ ONLY; SET LOCAL lock_timeout = '5s'")
    try:
        report = Engine(db, migrations, settings).plan()
        table_sizes = read_sizes(db) if sizes else None
    finally:
        with contextlib.suppress(ConnectionLostError):
            db.run("ROLLBACK")
    by_script = {m.script: m for m in (*migrations.versioned, *migrations.repeatable)}
    replayed = {state.script for state in report.states if state.state in _REPLAYED_STATES}
    replay = [m for m in (*migrations.versioned, *migrations.repeatable) if m.script in replayed]
    return Target(replay, [by_script[run.script] for run in report.pending], table_sizes)


def read_sizes(db: Database) -> dict[str, TableSize]:
    """Every user table's estimated rows and bytes. A partitioned table has none of its own: work on it is
    measured on its partitions, each sized by its own statistics."""
    return {row[1]: TableSize(_rows(row[3], row[5]), _int(row[4])) for row in db.run(_SIZES)}


def _rows(reltuples: Any, live: Any) -> int | None:
    """The larger of the planner's estimate (-1: never analyzed) and the live rows the statistics count."""
    known = [int(value) for value in (reltuples, live) if value is not None and float(value) >= 0]
    return max(known) if known else None


def _int(value: Any) -> int | None:
    return None if value is None else int(value)

"""Run pending migrations on the scratch database, statement by statement, and measure each one inside
its transaction: the locks this session holds (pg_locks), the relations it rewrote (a new relfilenode),
the rows it read (sequential scans counted for this transaction), and what changed in the catalog.

Each migration runs as ``premigrate up`` would run it: a transaction file in one transaction, the others
statement by statement. A statement that may run in a transaction block but would run on its own is
wrapped in one transaction of its own, which commits as it would have; one that cannot (CREATE INDEX
CONCURRENTLY, VACUUM) runs on its own, and its locks, which end with it, are what PostgreSQL documents.
Every transaction commits, so that later migrations find what earlier ones made: the scratch database is
thrown away afterwards.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from premigrate.checking.catalog import (
    OBJECT_WRITES,
    OBJECTS_DIGEST,
    RELATION_KINDS,
    RELATION_ROW,
    Catalog,
    parse_relation,
    read_catalog,
    read_objects,
)
from premigrate.checking.changes import diff
from premigrate.checking.facts import (
    CHANGES_DEFINITIONS,
    HeldLock,
    Observation,
    StatementFacts,
    Unit,
    held_locks,
    measured_work,
)
from premigrate.engine.applying import FRESH_SESSION
from premigrate.engine.database import Database, ServerError
from premigrate.engine.directives import Phase
from premigrate.engine.errors import MigrationFailedError
from premigrate.engine.migrations import ExecutionMode, Migration
from premigrate.engine.statement_kinds import Statement
from premigrate.engine.statements import line_and_column

_DEFINING_MODES = ", ".join(f"'{mode}'" for mode in sorted(CHANGES_DEFINITIONS))
_MEASURE = f"""WITH held AS MATERIALIZED (
    SELECT l.relation, l.mode FROM pg_locks l
    WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())),
  defining AS (SELECT DISTINCT relation FROM held WHERE mode IN ({_DEFINING_MODES}))
SELECT (SELECT coalesce(json_agg(json_build_array(relation, mode)), '[]') FROM held),
    (SELECT coalesce(json_agg({RELATION_ROW}), '[]') FROM defining h JOIN pg_class c ON c.oid = h.relation
       JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {RELATION_KINDS}),
    (SELECT coalesce(json_agg(json_build_array(relation, pg_stat_get_xact_numscans(relation))), '[]')
       FROM (SELECT DISTINCT relation FROM held) h),
    CASE WHEN {OBJECT_WRITES} <> {{writes}} THEN {OBJECTS_DIGEST} END,
    current_setting('lock_timeout'),
    {OBJECT_WRITES}"""
"""Everything about one statement in one round trip: only the relations it may have changed are read, and
schemas, functions and types only when it wrote to their catalogs ({writes}: the count before it)."""
_SCANS_SO_FAR = "SELECT relid, seq_scan FROM pg_stat_xact_user_tables WHERE seq_scan > 0"


class Measurer:
    """One session on the scratch database, after the applied migrations were replayed into it."""

    def __init__(
        self,
        db: Database,
        *,
        lock_timeout_ms: int,
        ignored: frozenset[tuple[str, str]] = frozenset(),
        existing_per_migration: bool = False,
    ) -> None:
        """``existing_per_migration``: each migration is judged against what the ones before it made, as
        if each were deployed alone (else against what existed before the first pending one)."""
        self.db = db
        self.lock_timeout_ms = lock_timeout_ms
        self.ignored = ignored
        self.existing_per_migration = existing_per_migration
        # pg_stat_force_next_flush (15+) empties the session's pending counts after each transaction, so
        # that a transaction's counts start at zero; older servers get them read at its start.
        self.flushes = int(db.run("SHOW server_version_num")[0][0]) >= 150000
        self._flush()
        self.catalog = read_catalog(db, ignored)
        self.existing = self.catalog

    def measure(self, migration: Migration) -> list[StatementFacts]:
        """Run the migration, measuring every statement; raises MigrationFailedError when one fails."""
        after_rollout = migration.phase is Phase.AFTER_ROLLOUT
        if migration.mode is ExecutionMode.TRANSACTION:
            unit = self._open(f"BEGIN; SET LOCAL lock_timeout = '{self.lock_timeout_ms}ms'")
            for statement in migration.statements:
                unit.facts.append(self._in_unit(unit, migration, statement, after_rollout))
            facts = self._close(unit, commit=True, closing=f"COMMIT; {FRESH_SESSION}")
        else:
            self.db.run(f"SET lock_timeout = '{self.lock_timeout_ms}ms'")
            facts = self._one_by_one(migration, after_rollout)
            self.db.run(FRESH_SESSION)
        if self.existing_per_migration:
            self.existing = self.catalog
        return facts

    def _one_by_one(self, migration: Migration, after_rollout: bool) -> list[StatementFacts]:
        """No-transaction and own-transaction files: each statement as psql would send it."""
        facts: list[StatementFacts] = []
        unit: Unit | None = None
        for statement in migration.statements:
            effect = statement.transaction_effect
            if unit is not None and effect in ("closes", "chains"):
                # What PREPARE TRANSACTION did stays invisible until a COMMIT PREPARED the file does not hold.
                rolls_back = statement.words[:1] in (("ROLLBACK",), ("ABORT",), ("PREPARE",))
                facts += self._close(unit, commit=not rolls_back, closing=(migration, statement))
                unit = self._start() if effect == "chains" else None
            elif unit is not None:
                unit.facts.append(self._in_unit(unit, migration, statement, after_rollout))
            elif effect == "opens":
                self._execute(migration, statement)
                unit = self._start()
            elif effect is None and statement.runs_in_transaction_block:
                alone = self._open("BEGIN")
                alone.facts.append(self._in_unit(alone, migration, statement, after_rollout))
                facts += self._close(alone, commit=True, closing="COMMIT")
            else:
                facts.append(self._outside_transaction(migration, statement, after_rollout))
        return facts

    def _open(self, sql: str) -> Unit:
        """Start a transaction of premigrate's (``sql`` begins it), reading its counts in the same round trip."""
        rows = self.db.run(f"{sql}; SELECT {OBJECT_WRITES}")
        return self._start(int(rows[-1][0]))

    def _start(self, object_writes: int | None = None) -> Unit:
        unit = Unit(self.catalog, object_writes=object_writes)
        if not self.flushes:
            unit.scans = {int(oid): int(count) for oid, count in self.db.run(_SCANS_SO_FAR)}
        return unit

    def _close(self, unit: Unit, *, commit: bool, closing: str | tuple[Migration, Statement]) -> list[StatementFacts]:
        """End the unit's transaction; its catalog changes count only as far as they outlive it."""
        if commit:
            net = {change.key for change in diff(unit.start, self.catalog, self.existing, unit.touched)}
        else:
            net, self.catalog = set(), unit.start
        flush = "; SELECT pg_stat_force_next_flush()" if self.flushes else ""
        if isinstance(closing, str):
            self.db.run(closing + flush)
        else:
            self._execute(*closing)
            self._flush()
        return [replace(f, changes=tuple(c for c in f.changes if c.key in net)) for f in unit.facts]

    def _flush(self) -> None:
        if self.flushes:
            self.db.run("SELECT pg_stat_force_next_flush()")

    def _in_unit(self, unit: Unit, migration: Migration, statement: Statement, after_rollout: bool) -> StatementFacts:
        self._execute(migration, statement)
        if statement.words[:2] == ("ROLLBACK", "TO"):  # undoes an unknown part of the transaction: read it all
            self.catalog, unit.touched = read_catalog(self.db, self.ignored), None
        # -1 when the count at the start is unknown (a file's own BEGIN): then the digest is computed.
        row = self.db.run(_MEASURE.format(writes=-1 if unit.object_writes is None else unit.object_writes))[0]
        unit.object_writes = int(row[5])
        before, after = self.catalog, self._read_again(row)
        observed = Observation(frozenset((int(o), m) for o, m in row[0]), _scans(unit, row[2]), _ms(row[4]))
        candidates = {o for o, mode in observed.locks if mode in CHANGES_DEFINITIONS}
        if unit.touched is not None:
            unit.touched |= candidates
        # A NOT NULL or constraint PostgreSQL proved from a valid CHECK read no row: nothing to fail on data.
        changes = [
            replace(c, checks_rows=False) if c.checks_rows and not observed.scans.get(c.relation) else c
            for c in diff(before, after, self.existing, candidates)
        ]
        self.catalog = after
        line = line_and_column(migration.text, statement.offset)[0]
        wrote = {o for o, mode in observed.locks - unit.locks.keys() if mode == "RowExclusiveLock"}
        held = held_locks(unit, observed, line, self.existing)
        work = measured_work(
            before, after, self.existing, observed.scans, changes, wrote=wrote, truncates=_truncates(statement)
        )
        return StatementFacts(
            migration.script,
            line,
            _shown(statement),
            after_rollout,
            held,
            work,
            tuple(changes),
            observed.lock_timeout_ms,
        )

    def _read_again(self, row: list[Any]) -> Catalog:
        """The catalog with the relations this statement could have changed read again."""
        read = [parse_relation(r) for r in row[1]]
        locked = {int(oid) for oid, mode in row[0] if mode in CHANGES_DEFINITIONS}
        gone = locked - {relation.oid for relation in read}
        catalog = self.catalog
        if row[3] is not None and row[3] != catalog.digest:
            objects = read_objects(self.db, row[3])
            catalog = replace(catalog, schemas=objects.schemas, routines=objects.routines, types=objects.types)
            catalog = replace(catalog, digest=objects.digest)
        kept = [r for r in read if (catalog.schemas.get(r.schema_oid), r.name) not in self.ignored]
        return catalog.with_relations(kept, gone)

    def _outside_transaction(self, migration: Migration, statement: Statement, after_rollout: bool) -> StatementFacts:
        """A statement that cannot run in a transaction block: measured by the catalog before and after."""
        before = self.catalog
        self._execute(migration, statement)
        self._flush()
        self.catalog = read_catalog(self.db, self.ignored)
        changes = diff(before, self.catalog, self.existing)
        work = measured_work(before, self.catalog, self.existing, {}, changes)
        line = line_and_column(migration.text, statement.offset)[0]
        # Its locks ended with it. PostgreSQL documents ACCESS EXCLUSIVE for what rewrites a table (VACUUM
        # FULL, CLUSTER) and SHARE for what rebuilds indexes (REINDEX); CONCURRENTLY blocks neither.
        documented = {"rewrite": "ACCESS EXCLUSIVE", "index": "SHARE"}
        held = (
            ()
            if "CONCURRENTLY" in statement.words
            else tuple(HeldLock(w.relation, documented[w.kind], line) for w in work if w.kind in documented)
        )
        return StatementFacts(
            migration.script, line, _shown(statement), after_rollout, held, work, tuple(changes), documented=True
        )

    def _execute(self, migration: Migration, statement: Statement) -> None:
        try:
            self.db.run(statement.text)
        except ServerError as error:
            offset = statement.offset + max((error.position or 1) - 1, 0)
            line, column = line_and_column(migration.text, offset)
            details = "".join(
                f"\n  {label}: {value}" for label, value in (("DETAIL", error.detail), ("HINT", error.hint)) if value
            )
            raise MigrationFailedError(
                f"{migration.script}:{line}:{column}: ERROR {error.sqlstate}: {error.message}{details}\n"
                "  It failed on the scratch database, after the migrations before it: `premigrate up` would fail "
                "here too. Fix the migration, then check again",
                script=migration.script,
                line=line,
                column=column,
                sqlstate=error.sqlstate,
            ) from error


def _scans(unit: Unit, rows: list[list[Any]]) -> dict[int, int]:
    """Sequential scans of each relation since the last statement of the unit."""
    scanned = {}
    for oid, count in rows:
        now = int(count or 0)
        if now > unit.scans.get(int(oid), 0):
            scanned[int(oid)] = now - unit.scans.get(int(oid), 0)
        unit.scans[int(oid)] = now
    return scanned


_UNITS_MS = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}


def _ms(setting: Any) -> int | None:
    """lock_timeout as SHOW writes it (``5s``, ``1500ms``, ``0``), in milliseconds."""
    match = re.fullmatch(r"(\d+)\s*([a-z]*)", str(setting).strip())
    if match is None or match.group(2) not in (*_UNITS_MS, ""):
        return None
    return round(int(match.group(1)) * _UNITS_MS.get(match.group(2), 1))


def _truncates(statement: Statement) -> bool:
    """TRUNCATE gives a table a new, empty filenode: the rows are gone, not rewritten."""
    return statement.words[:1] == ("TRUNCATE",)


def _shown(statement: Statement) -> str:
    text = " ".join(statement.text.split())
    return text if len(text) <= 100 else text[:99] + "…"

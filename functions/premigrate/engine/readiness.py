"""The instance-side gate: is the database ready for the code about to start? Instances never migrate,
but one should refuse to start on a database that is behind.

Read-only: no lock, no write, one query. Ready means no failed migration, and

- by version: a before-rollout migration (or a baseline) at or above the expected version is applied,
  which an instance can ask with psql alone (``READY_BY_VERSION_SQL``);
- by files: every before-rollout file of the instance's own migration set is applied as written.
"""

from __future__ import annotations

from dataclasses import dataclass

from premigrate.engine.database import Database
from premigrate.engine.history import HistoryTable, sql_literal
from premigrate.engine.migrations import MigrationSet, Version
from premigrate.engine.plan import make_plan

_NUMERIC_VERSION = r"^[0-9]+(\.[0-9]+)*$"

READY_BY_VERSION_SQL = f"""SELECT coalesce(bool_and(success), true)
   AND coalesce(bool_or(before_rollout AND string_to_array(version, '.')::numeric[]
                                          >= string_to_array(:'expected', '.')::numeric[]), false)
FROM (SELECT success, version,
             success AND version ~ '{_NUMERIC_VERSION}'
             AND coalesce(to_jsonb(h) ->> 'phase', 'before-rollout') = 'before-rollout' AS before_rollout
      FROM public.premigrate_schema_history h) AS applied"""
"""The check ``ready --expect-version`` makes, for psql (``psql -v expected=42 -Atf ready.sql`` prints t or f);
versions compare as numbers part by part, so 1.10 is above 1.9 and timestamps work."""


@dataclass(frozen=True)
class Readiness:
    ready: bool
    summary: str
    """One line: what is there, or what is missing."""


def ready_by_version(db: Database, history: HistoryTable, expected: Version) -> Readiness:
    if not history.exists(db):
        return Readiness(False, f"not ready: {history.qualified_name} does not exist (nothing was migrated yet)")
    wanted = f"string_to_array({sql_literal(expected.text)}, '.')::numeric[]"
    rows = db.run(
        f"""
        SELECT coalesce(bool_and(success), true) AND coalesce(bool_or(before_rollout AND v >= {wanted}), false),
               (array_agg(version ORDER BY v DESC) FILTER (WHERE before_rollout))[1],
               (array_agg(script ORDER BY installed_rank) FILTER (WHERE NOT success))[1]
        FROM (SELECT success, version, script, installed_rank,
                     success AND version ~ '{_NUMERIC_VERSION}'
                     AND coalesce(to_jsonb(h) ->> 'phase', 'before-rollout') = 'before-rollout' AS before_rollout,
                     CASE WHEN version ~ '{_NUMERIC_VERSION}' THEN string_to_array(version, '.')::numeric[] END AS v
              FROM {history.qualified_name} h) AS applied
        """
    )
    ready, highest, failed = rows[0]
    if failed:
        return Readiness(False, f"not ready: {failed} failed; fix it (premigrate repair) and migrate again")
    if ready:
        return Readiness(True, f"ready: before-rollout migrations applied up to {highest} ({expected} expected)")
    return Readiness(
        False, f"not ready: before-rollout migrations applied up to {highest or 'none'}, {expected} expected"
    )


def ready_by_files(db: Database, history: HistoryTable, migrations: MigrationSet) -> Readiness:
    rows = history.read(db) if history.exists(db) else []
    # The plan of a before-rollout run: what it would apply is what this instance's code still lacks.
    plan = make_plan(rows, migrations, phase="before-rollout", allow_out_of_order=True, accept_database_ahead=True)
    failed = [state.script for state in plan.states if state.state == "failed"]
    if failed:
        return Readiness(False, f"not ready: {failed[0]} failed; fix it (premigrate repair) and migrate again")
    if plan.problems:
        return Readiness(False, f"not ready: {plan.problems[0]}")
    if plan.pending:
        more = f" and {len(plan.pending) - 1} more" if len(plan.pending) > 1 else ""
        return Readiness(False, f"not ready: {plan.pending[0].script}{more} not applied yet (before-rollout)")
    return Readiness(True, f"ready: every before-rollout migration of this set is applied (at {plan.current_version})")

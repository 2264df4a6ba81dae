"""Decide, from the history and the migration set alone, what is applied, what is pending and what is
wrong. No database access: everything here is a pure function, so every rule is tested on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from premigrate.engine.history import BASELINE, HistoryRow
from premigrate.engine.migrations import Migration, MigrationSet, Version


@dataclass(frozen=True)
class MigrationState:
    """One line of ``premigrate status``."""

    version: str | None
    description: str
    script: str
    state: str
    """applied, pending, baseline, below-baseline, failed, missing-file, checksum-drift, out-of-order,
    outdated (a repeatable whose file changed), beyond-target, ahead-of-files."""
    installed_on: str | None = None


@dataclass(frozen=True)
class Plan:
    pending: list[Migration]
    """What to apply, in order: versioned first, then repeatables whose checksum changed."""
    problems: list[str]
    """Why nothing may be applied; empty when the plan is safe."""
    states: list[MigrationState] = field(default_factory=list)
    current_version: str | None = None
    drifted: list[tuple[HistoryRow, Migration]] = field(default_factory=list)
    """Applied migrations whose file changed since: what ``repair`` re-records."""

    @property
    def ahead_of_files(self) -> bool:
        """The database has versions newer than every file (an older migration set, as in a stack rollback)."""
        return any(state.state == "ahead-of-files" for state in self.states)


def make_plan(
    history: Sequence[HistoryRow],
    migrations: MigrationSet,
    *,
    allow_out_of_order: bool = False,
    target: Version | None = None,
    accept_database_ahead: bool = False,
) -> Plan:
    problems: list[str] = []
    states: list[MigrationState] = []
    drifted: list[tuple[HistoryRow, Migration]] = []
    pending: list[Migration] = []

    failed = [row for row in history if not row.success]
    for row in failed:
        problems.append(
            f"{row.script} failed on {row.installed_on:%Y-%m-%d %H:%M:%S} and may be partly applied "
            f"({row.execution_mode} mode). Check the database, undo or finish what it did by hand, "
            "then run `premigrate repair`, which removes the failed record so the file runs again"
        )
        states.append(_state(row, "failed"))

    applied = {Version.parse(row.version): row for row in history if row.success and row.version is not None}
    baseline = max((v for v, row in applied.items() if row.type == BASELINE), default=None)
    highest = max(applied, default=None)
    files = {m.version: m for m in migrations.versioned if m.version is not None}
    last_file = max(files, default=None)

    for version, row in sorted(applied.items()):
        migration = files.get(version)
        if row.type == BASELINE:
            states.append(_state(row, "baseline"))
        elif migration is None and accept_database_ahead and (last_file is None or version > last_file):
            states.append(_state(row, "ahead-of-files"))
        elif migration is None:
            problems.append(
                f"{row.script} (version {row.version}) is applied but its file is gone. Put the file back; "
                "premigrate never undoes a migration"
            )
            states.append(_state(row, "missing-file"))
        elif migration.checksum != row.checksum:
            problems.append(
                f"{migration.script} was edited after it was applied (checksum {row.checksum and row.checksum[:12]}… "
                f"recorded, {migration.checksum[:12]}… now). Restore the applied text and put the change "
                "in a new migration, or, if the edit changes nothing in the database, run `premigrate repair` "
                "to record the new checksum"
            )
            drifted.append((row, migration))
            states.append(_state(row, "checksum-drift"))
        else:
            states.append(_state(row, "applied"))

    failed_versions = {Version.parse(row.version) for row in failed if row.version is not None}
    for version, migration in sorted(files.items()):
        if version in applied or version in failed_versions:
            continue
        if baseline is not None and version <= baseline:
            states.append(_file_state(migration, "below-baseline"))
        elif target is not None and version > target:
            states.append(_file_state(migration, "beyond-target"))
        elif highest is not None and version < highest and not allow_out_of_order:
            problems.append(
                f"{migration.script} (version {version}) is pending but version {highest} is already applied. "
                "Give it a version above the highest applied one, or allow out-of-order migrations"
            )
            states.append(_file_state(migration, "out-of-order"))
        else:
            pending.append(migration)
            states.append(_file_state(migration, "pending"))

    latest_repeatable = {row.description: row for row in history if row.version is None and row.success}
    for migration in migrations.repeatable:
        last_run = latest_repeatable.get(migration.description)
        if last_run is not None and last_run.checksum == migration.checksum:
            states.append(_state(last_run, "applied"))
        else:
            pending.append(migration)
            states.append(_file_state(migration, "outdated" if last_run else "pending"))

    current = max(applied, default=None)
    return Plan(pending, problems, states, str(current) if current else None, drifted)


def _state(row: HistoryRow, state: str) -> MigrationState:
    return MigrationState(row.version, row.description, row.script, state, f"{row.installed_on:%Y-%m-%d %H:%M:%S}")


def _file_state(migration: Migration, state: str) -> MigrationState:
    version = str(migration.version) if migration.version else None
    return MigrationState(version, migration.description, migration.script, state)

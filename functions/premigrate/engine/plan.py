"""Decide, from the history and the migration set alone, what is applied, what is pending and what is
wrong. No database access: everything here is a pure function, so every rule is tested on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from premigrate.engine.directives import Phase
from premigrate.engine.history import BASELINE, HistoryRow
from premigrate.engine.migrations import Migration, MigrationSet, Version
from premigrate.engine.report import MigrationState


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


@dataclass(frozen=True)
class _Rules:
    allow_out_of_order: bool = False
    target: Version | None = None
    accept_database_ahead: bool = False
    phase: str = "all"


def make_plan(
    history: Sequence[HistoryRow],
    migrations: MigrationSet,
    *,
    allow_out_of_order: bool = False,
    target: Version | None = None,
    accept_database_ahead: bool = False,
    phase: str = "all",
) -> Plan:
    """``phase``: all, before-rollout or after-rollout (what one run applies; see ``_pending_in_phase``)."""
    planner = _Planner(history, migrations, _Rules(allow_out_of_order, target, accept_database_ahead, phase))
    planner.failed_migrations()
    planner.applied_versions()
    planner.pending_versions()
    planner.repeatables()
    current = max(planner.applied, default=None)
    return Plan(planner.pending, planner.problems, planner.states, str(current) if current else None, planner.drifted)


class _Planner:
    """The four passes of a plan, each adding states, problems and pending migrations in order."""

    def __init__(self, history: Sequence[HistoryRow], migrations: MigrationSet, rules: _Rules) -> None:
        self.history = history
        self.migrations = migrations
        self.rules = rules
        self.problems: list[str] = []
        self.states: list[MigrationState] = []
        self.drifted: list[tuple[HistoryRow, Migration]] = []
        self.pending: list[Migration] = []
        self.failed = [row for row in history if not row.success]
        self.applied = self._applied_by_version()
        self.files = {m.version: m for m in migrations.versioned if m.version is not None}

    def _applied_by_version(self) -> dict[Version, HistoryRow]:
        """The successful versioned rows; a row whose version is no version, or repeats another's in
        another spelling (1 and 01), is a problem, never a crash or a silent overwrite."""
        applied: dict[Version, HistoryRow] = {}
        for row in self.history:
            if not row.success or row.version is None:
                continue
            version = _version_of(row)
            if version is None:
                self.problems.append(
                    f"history row {row.installed_rank} ({row.script}) records the version {row.version!r}, which is "
                    "not a version (digits separated by dots): correct it in the history table by hand"
                )
            elif first := applied.get(version):
                self.problems.append(
                    f"the history records version {first.version} twice ({first.version!r} in row "
                    f"{first.installed_rank}, {row.version!r} in row {row.installed_rank}): delete the duplicate "
                    "row by hand"
                )
            else:
                applied[version] = row
        return applied

    def failed_migrations(self) -> None:
        for row in self.failed:
            self.problems.append(
                f"{row.script} failed on {row.installed_on} and may be partly applied "
                f"({row.execution_mode} mode). Check the database, undo or finish what it did by hand, "
                "then run `premigrate repair`, which removes the failed record so the file runs again"
            )
            self.states.append(_state(row, "failed"))

    def applied_versions(self) -> None:
        last_file = max(self.files, default=None)
        for version, row in sorted(self.applied.items()):
            migration = self.files.get(version)
            if row.type == BASELINE:
                self.states.append(_state(row, "baseline"))
            elif migration is None and self.rules.accept_database_ahead and (last_file is None or version > last_file):
                self.states.append(_state(row, "ahead-of-files"))
            elif migration is None:
                self.problems.append(
                    f"{row.script} (version {row.version}) is applied but its file is gone. Put the file back; "
                    "premigrate never undoes a migration"
                )
                self.states.append(_state(row, "missing-file"))
            elif migration.checksum != row.checksum:
                self.problems.append(
                    f"{migration.script} was edited after it was applied (checksum "
                    f"{row.checksum and row.checksum[:12]}… recorded, {migration.checksum[:12]}… now). Restore the "
                    "applied text and put the change in a new migration, or, if the edit changes nothing in the "
                    "database, run `premigrate repair` to record the new checksum"
                )
                self.drifted.append((row, migration))
                self.states.append(_state(row, "checksum-drift"))
            else:
                self.states.append(_state(row, "applied"))

    def pending_versions(self) -> None:
        baseline = max((v for v, row in self.applied.items() if row.type == BASELINE), default=None)
        highest = max(self.applied, default=None)
        # An after-rollout file waits while later before-rollout ones are applied: it is out of order only
        # below an applied after-rollout version.
        highest_after = max((v for v, row in self.applied.items() if row.phase == Phase.AFTER_ROLLOUT), default=None)
        failed_versions = {_version_of(row) for row in self.failed}
        for version, migration in sorted(self.files.items()):
            if version in self.applied or version in failed_versions:
                continue
            if baseline is not None and version <= baseline:
                self.states.append(_file_state(migration, "below-baseline"))
            elif self.rules.target is not None and version > self.rules.target:
                self.states.append(_file_state(migration, "beyond-target"))
            elif (above := highest_after if migration.phase is Phase.AFTER_ROLLOUT else highest) is not None and (
                version < above and not self.rules.allow_out_of_order
            ):
                self.problems.append(
                    f"{migration.script} (version {version}) is pending but version {above} is already applied. "
                    "Give it a version above the highest applied one, or allow out-of-order migrations"
                )
                self.states.append(_file_state(migration, "out-of-order"))
            else:
                self._pending_in_phase(migration)

    def _pending_in_phase(self, migration: Migration) -> None:
        """A pending file, as the run's phase sees it: a before-rollout run leaves after-rollout files for
        later (not a problem), an after-rollout run refuses while a before-rollout file is pending (the new
        code may not be out yet), and ``all`` applies both in version order."""
        if self.rules.phase == Phase.BEFORE_ROLLOUT and migration.phase is Phase.AFTER_ROLLOUT:
            self.states.append(_file_state(migration, "after-rollout"))
            return
        if self.rules.phase == Phase.AFTER_ROLLOUT and migration.phase is Phase.BEFORE_ROLLOUT:
            self.problems.append(
                f"{migration.script} runs before the rollout and is still pending, so the rollout it belongs to "
                "has not happened: an after-rollout run applies nothing until every before-rollout migration is "
                "applied (premigrate up --phase before-rollout, or deploy)"
            )
        self.pending.append(migration)
        self.states.append(_file_state(migration, "pending"))

    def repeatables(self) -> None:
        latest_run = {row.description: row for row in self.history if row.version is None and row.success}
        for migration in self.migrations.repeatable:
            last_run = latest_run.get(migration.description)
            if last_run is not None and last_run.checksum == migration.checksum:
                self.states.append(_state(last_run, "applied"))
            elif self.rules.phase == Phase.BEFORE_ROLLOUT and migration.phase is Phase.AFTER_ROLLOUT:
                self.states.append(_file_state(migration, "after-rollout"))
            else:
                self._pending_in_phase(migration)
                if last_run:
                    self.states[-1] = _file_state(migration, "outdated")


def _version_of(row: HistoryRow) -> Version | None:
    try:
        return Version.parse(row.version) if row.version is not None else None
    except ValueError:
        return None


def _state(row: HistoryRow, state: str) -> MigrationState:
    return MigrationState(
        row.version, row.description, row.script, state, row.installed_on, row.phase or Phase.BEFORE_ROLLOUT.value
    )


def _file_state(migration: Migration, state: str) -> MigrationState:
    version = str(migration.version) if migration.version else None
    return MigrationState(version, migration.description, migration.script, state, phase=migration.phase.value)

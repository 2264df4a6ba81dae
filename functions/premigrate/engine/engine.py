"""The engine: brings a database up to date with a migration set, exactly once, however many run at once.

    >>> engine = Engine(connection, MigrationSet.from_files(files), Settings(lock_wait_seconds=60))
    >>> report = engine.migrate()          # or plan(), status(), validate(), baseline("3"), repair()
    >>> report.schema_version_after

It knows nothing of Lambda, AWS, the command line or the driver: callers hand it a ``Database`` (the port
in database.py) and a migration set, and get a Report back, or a PremigrateError whose message says what
to do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from premigrate.engine.applying import Applier, ProgressCallback
from premigrate.engine.clock import SYSTEM_CLOCK, Clock, TimeBudget, ms_since
from premigrate.engine.database import ConnectionLostError, Database, ServerError
from premigrate.engine.errors import (
    ConfigurationError,
    MigrationSetError,
    PremigrateError,
    RunStoppedError,
    ValidationError,
    read_only_database,
)
from premigrate.engine.history import BASELINE, HistoryRow, HistoryTable, sql_literal
from premigrate.engine.ledger import LEDGER_TABLE
from premigrate.engine.lock import MigrationLock
from premigrate.engine.migrations import Migration, MigrationSet, Version
from premigrate.engine.plan import Plan, make_plan
from premigrate.engine.report import MigrationRun, Report
from premigrate.engine.settings import Settings, check_settings
from premigrate.engine.transactions import apply_group, in_groups


@dataclass
class Engine:
    db: Database
    migrations: MigrationSet
    settings: Settings = field(default_factory=Settings)
    progress: ProgressCallback | None = None
    time_left: Callable[[], float] | None = None
    """Seconds the caller may still run (a Lambda's remaining time); None means no limit."""
    clock: Clock = SYSTEM_CLOCK
    should_stop: Callable[[], bool] = lambda: False
    """True once the caller interrupted the run: no statement, migration or lock wait starts after it."""

    def __post_init__(self) -> None:
        self.history = HistoryTable(self.settings.schema, self.settings.table)
        self.lock = MigrationLock(f"{self.settings.schema}.{self.settings.table}", self.clock)
        self.budget = TimeBudget(self.time_left, self.settings.time_margin_seconds)
        self.applier = Applier(
            self.db, self.history, self.lock, self.settings, self.budget, self.clock, self.progress, self.should_stop
        )
        try:
            self.target = Version.parse(self.settings.target) if self.settings.target else None
        except ValueError as error:
            raise ConfigurationError(f"target version: {error}") from None
        check_settings(self.settings)

    # ---- read-only commands: no lock, nothing written -------------------------------------------

    def status(self) -> Report:
        """Every migration's state, problems included; never raises for a disagreement."""
        started = self.clock.monotonic()
        plan = self._plan(self._read_history(create=False))
        return self._report("status", plan, started, notes=plan.problems + self.applier.invalid_index_notes())

    def plan(self) -> Report:
        """What ``migrate`` would apply; raises ValidationError (with the report) when it would refuse."""
        started = self.clock.monotonic()
        plan = self._checked_plan(self._read_history(create=False))
        return self._report("plan", plan, started)

    validate = plan

    # ---- commands that take the lock ------------------------------------------------------------

    def migrate(self) -> Report:
        return self._locked("migrate", self._migrate)

    def baseline(self, version: str) -> Report:
        try:
            baseline_version = Version.parse(version)
        except ValueError as error:
            raise ConfigurationError(f"baseline version: {error}") from None
        return self._locked("baseline", lambda report: self._baseline(report, baseline_version))

    def repair(self) -> Report:
        return self._locked("repair", self._repair)

    def _locked(self, action: str, work: Callable[[Report], None]) -> Report:
        started = self.clock.monotonic()
        report = Report(action)
        lock_wait = min(self.settings.lock_wait_seconds, self.budget.remaining())
        waited = self.lock.acquire(self.db, lock_wait, give_up=self.should_stop)
        report.lock_wait_ms = round(waited * 1000, 1)
        try:
            self._stop_if_interrupted("before it started anything")
            work(report)
        except (PremigrateError, ServerError, ConnectionLostError) as error:
            report.total_ms = ms_since(self.clock, started)
            error.report = error.report or report  # what was applied before the error, for every caller
            raise
        finally:
            self._release_lock()
        report.total_ms = ms_since(self.clock, started)
        return report

    def _stop_if_interrupted(self, where: str) -> None:
        if self.should_stop():
            raise RunStoppedError(f"the run was interrupted: it stopped {where}")

    def _release_lock(self) -> None:
        with contextlib.suppress(ConnectionLostError):  # a lost session has released the lock already
            self.lock.release(self.db)

    def _migrate(self, report: Report) -> None:
        # Read the history only now, under the lock: a run that waited for another sees its work done. (On a
        # read-only endpoint creating it fails with 25006, which every caller reports as read_only_database.)
        plan = self._checked_plan(self._read_history(create=True))
        if plan.pending:  # an up-to-date run pays no round trip for it
            self._check_writable()
        report.schema_version_before = plan.current_version
        report.schema_version_after = plan.current_version
        report.pending = self._pending_runs(plan.pending)
        if plan.ahead_of_files:
            report.notes.append(
                f"the database is at version {plan.current_version}, ahead of this migration set "
                f"(which ends at {self.migrations.versioned[-1].version if self.migrations.versioned else 'none'}): "
                "the schema stays ahead; premigrate never undoes a migration"
            )
        for group in in_groups(plan.pending) if self.settings.all_or_nothing else [[m] for m in plan.pending]:
            self._stop_if_interrupted(f"before {group[0].script}; the next run continues from there")
            if self.budget.remaining() < 0:
                report.stopped_for_time = True
                report.notes.append(
                    f"stopped before {group[0].script}: less than {self.settings.time_margin_seconds:g} s "
                    "of the time budget left; the next run continues from here"
                )
                break
            for migration_run in apply_group(self.applier, group):
                migration_run = replace(migration_run, group=report.pending.pop(0).group)  # noqa: PLW2901
                report.applied.append(migration_run)
                if migration_run.version is not None:
                    after = report.schema_version_after
                    if after is None or Version.parse(migration_run.version) > Version.parse(after):
                        report.schema_version_after = migration_run.version

    def _pending_runs(self, pending: list[Migration]) -> list[MigrationRun]:
        """The runs to come; with all-or-nothing each says its group (a no-transaction file splits them)."""
        if not self.settings.all_or_nothing:
            return [MigrationRun.of(migration) for migration in pending]
        return [
            replace(MigrationRun.of(migration), group=number)
            for number, group in enumerate(in_groups(pending), start=1)
            for migration in group
        ]

    def _baseline(self, report: Report, version: Version) -> None:
        if self.history.exists(self.db) and (rows := self.history.read(self.db)):
            raise ValidationError(
                [
                    f"{self.history.qualified_name} already records {len(rows)} migration(s); a baseline is only "
                    "for a database that has no history yet"
                ]
            )
        self.history.create(self.db)
        self.db.run(
            self.history.insert_sql(
                version=version.text,
                description="<< baseline >>",
                type=BASELINE,
                script="<< baseline >>",
                checksum=None,
                execution_ms=0,
                success=True,
                execution_mode=None,
                phase=None,
            )
        )
        report.schema_version_before = None
        report.schema_version_after = version.text
        report.notes.append(
            f"recorded version {version} as the baseline: migrations up to it count as applied and will not run"
        )

    def _repair(self, report: Report) -> None:
        history = self._read_history(create=False)
        plan = make_plan(history, self.migrations, allow_out_of_order=True)
        failed = [row for row in history if not row.success]
        if failed:
            self.history.delete_failed(self.db)
            report.notes.extend(f"removed the failed record of {row.script}: it will run again" for row in failed)
        for row, migration in plan.drifted:
            self.history.update_checksum(self.db, row.installed_rank, migration.checksum)
            report.notes.append(f"recorded the new checksum of {migration.script}")
        report.notes.extend(self.applier.invalid_index_notes())
        report.notes.extend(
            f"{state.script} is applied but its file is gone: repair cannot fix that; put the file back"
            for state in plan.states
            if state.state == "missing-file"
        )
        if not report.notes:
            report.notes.append("nothing to repair")
        report.schema_version_before = report.schema_version_after = plan.current_version

    # ---- planning -------------------------------------------------------------------------------

    def _read_history(self, *, create: bool) -> list[HistoryRow]:
        if self.history.exists(self.db):
            return self.history.read(self.db, upgrade=create)
        if others := self.history.other_relations(self.db, ignoring=(LEDGER_TABLE,)):
            raise ValidationError(
                [
                    f"the database already has tables ({', '.join(others)}) but no "
                    f"{self.history.qualified_name} history table, so premigrate cannot tell which migrations "
                    "made them. Run `premigrate baseline --version V` with the version the database is at "
                    "(V and every lower version are then recorded as applied without running), then run again"
                ]
            )
        if create:
            self.history.create(self.db)
        return []

    def _plan(self, history: list[HistoryRow]) -> Plan:
        return make_plan(
            history,
            self.migrations,
            allow_out_of_order=self.settings.allow_out_of_order,
            target=self.target,
            accept_database_ahead=self.settings.accept_database_ahead,
            phase=self.settings.phase,
        )

    def _checked_plan(self, history: list[HistoryRow]) -> Plan:
        plan = self._plan(history)
        if plan.problems:
            error = ValidationError(plan.problems)
            error.report = self._report("plan", plan, self.clock.monotonic())
            raise error
        set_problems = [problem for migration in plan.pending for problem in _problems_of(migration)]
        if set_problems:
            raise MigrationSetError(set_problems)
        last_file = self.migrations.versioned[-1].version if self.migrations.versioned else None
        if self.target is not None and (last_file is None or self.target > last_file):
            raise ConfigurationError(
                f"target version {self.target} is beyond the last migration file ({last_file or 'there is none'}); "
                "give the version of a file, or no target to apply everything"
            )
        return plan

    def _check_writable(self) -> None:
        """Refuse before anything runs what would fail only when a migration is recorded."""
        table = self.history.qualified_name
        rows = self.db.run(
            "SELECT current_setting('transaction_read_only') = 'on', current_user, "
            f"has_table_privilege({sql_literal(table)}, 'INSERT')"
        )
        read_only, user, may_insert = rows[0]
        if read_only:
            raise read_only_database()
        if not may_insert:
            raise ConfigurationError(
                f"role {user} may not INSERT into {table}, so premigrate could not record what it applies: "
                "connect as the role that owns the history table, or grant it INSERT"
            )

    def _report(self, action: str, plan: Plan, started: float, notes: list[str] | None = None) -> Report:
        return Report(
            action,
            schema_version_before=plan.current_version,
            schema_version_after=plan.current_version,
            pending=self._pending_runs([m for m in plan.pending if not m.check()]),
            states=plan.states,
            notes=notes or [],
            total_ms=ms_since(self.clock, started),
        )


def _problems_of(migration: Migration) -> list[str]:
    problems = migration.check()
    try:
        migration.script.encode("utf-8")
    except UnicodeEncodeError:
        problems.append(
            f"{migration.script!r}: the file name is not valid UTF-8, so it cannot be recorded in the history: "
            "rename the file"
        )
    return problems

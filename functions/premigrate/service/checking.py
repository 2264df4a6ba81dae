"""The use case behind ``premigrate check``: measure the pending migrations on a scratch database, judge
what was measured, and say whether an error stands (exit code 4).

    >>> result = check(load_config("cli"), CheckOptions(since="5"))
    >>> result.exit_code, [f.rule for f in result.report.findings]

Which migrations are pending, and which are replayed first: with a target database (``--database-url``
or ``--secret-id``) its history says, read in a read-only transaction, and its statistics size the
tables; with ``--since VERSION`` every versioned file below VERSION is replayed and the rest checked;
with neither, the history of the embedded database (the command line's default database) says, and no
table has a known size. The scratch database is always a new one (CREATE DATABASE on the scratch server:
``--scratch-url``, else the embedded PostgreSQL), dropped at the end, never the target.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from premigrate.adapters.connection import params_from_url
from premigrate.adapters.folder import load_folder
from premigrate.adapters.postgres import connect
from premigrate.checking.judging import Judging, TableSize, acknowledge, judge
from premigrate.checking.measuring import Measurer
from premigrate.checking.report import CheckReport
from premigrate.checking.rules import DEFAULT_MAX_LOCKED_ROWS
from premigrate.checking.target import read_target
from premigrate.engine import ConfigurationError, Engine, Migration, MigrationSet, MigrationSetError, Settings, Version
from premigrate.engine.clock import SYSTEM_CLOCK, TimeBudget
from premigrate.engine.database import Database, ServerError
from premigrate.engine.errors import MigrationFailedError
from premigrate.engine.ledger import LEDGER_TABLE
from premigrate.service.connecting import describe_database, open_database, with_embedded_database
from premigrate.service.observer import Observer
from premigrate.service.results import EXIT_CODES, Category, categorize
from premigrate.service.settings import Config, resolve_path


@dataclass(frozen=True)
class CheckOptions:
    scratch_url: str | None = None
    """A server to create the scratch database on (its user needs CREATEDB); None: the embedded one."""
    since: str | None = None
    """Without a target database: the first version to check (the ones below are replayed)."""
    max_locked_rows: int = DEFAULT_MAX_LOCKED_ROWS
    existing_per_migration: bool = False
    """Judge each migration against what the ones before it made, as if each were deployed alone."""


@dataclass
class CheckResult:
    report: CheckReport | None = None
    error: str | None = None
    error_kind: Category | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.error_kind]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"ok": self.error_kind is None, "exit_code": self.exit_code}
        if self.report is not None:
            data["report"] = self.report.to_dict()
        if self.error is not None:
            data.update(error=self.error, error_kind=str(self.error_kind))
        return data


@dataclass(frozen=True)
class _Selection:
    replay: list[Migration]
    pending: list[Migration]
    sizes: dict[str, TableSize] | None
    target: str | None


def check(
    config: Config,
    options: CheckOptions = CheckOptions(),
    *,
    migrations: MigrationSet | None = None,
    observer: Observer | None = None,
) -> CheckResult:
    """Never raises for what a person can fix: the result says what happened, as Service.run's does."""
    # Both phases are checked (a breaking change is an error in a before-rollout file only), whatever
    # phase the environment's runs apply.
    config = replace(config, phase="all")
    observer = observer or Observer()
    started = SYSTEM_CLOCK.monotonic()
    try:
        if options.max_locked_rows < 0:
            raise ConfigurationError("--max-locked-rows must be 0 or more (rows)")
        migration_set = load_folder(resolve_path(config.migrations, None)) if migrations is None else migrations
        selection = _select(config, options, migration_set, observer)
        report = _measure(config, options, selection)
    except Exception as error:
        kind, message = categorize(error)
        if kind is Category.INTERNAL:
            observer.warning("unexpected error", exc_info=error)
        return CheckResult(None, message, kind)
    report.total_ms = round((SYSTEM_CLOCK.monotonic() - started) * 1000, 1)
    if blocking := report.blocking:
        places = [f"{f.script}:{f.line} {f.rule}" for f in blocking]
        where = ", ".join(places[:5]) + (f" and {len(places) - 5} more" if len(places) > 5 else "")
        message = (
            f"{len(blocking)} error-level finding(s) stand ({where}): do it the safe way shown, or acknowledge "
            "each in its file's header with '-- premigrate:allow <rule>: <reason>'"
        )
        return CheckResult(report, message, Category.UNSAFE)
    return CheckResult(report)


def check_files(
    files: Iterable[tuple[str, bytes]],
    scratch_url: str,
    *,
    since: str = "1",
    max_locked_rows: int = DEFAULT_MAX_LOCKED_ROWS,
) -> CheckResult:
    """Check a migration set given as (file name, content) pairs, from ``since`` on, without a target
    database: what a benchmark or a test needs. ``scratch_url`` is a server where the user has CREATEDB."""
    options = CheckOptions(scratch_url=scratch_url, since=since, max_locked_rows=max_locked_rows)
    try:
        migrations = MigrationSet.from_files(files)
    except MigrationSetError as error:
        return CheckResult(None, str(error), categorize(error)[0])
    return check(Config(), options, migrations=migrations)


def _select(config: Config, options: CheckOptions, migrations: MigrationSet, observer: Observer) -> _Selection:
    explicit = bool(config.database_url or config.secret_id)
    if options.since is not None:
        if explicit:
            raise ConfigurationError(
                "--since is for checking without a target database: with --database-url (or --secret-id) the "
                "target's history says which migrations are pending; give one or the other"
            )
        return _since(config, migrations, _version(options.since, "--since"))
    # Without a target, the embedded database's history says what is pending; a laptop's table sizes say
    # nothing of production's, so none are read from it.
    source = config if explicit else with_embedded_database(config)
    database = open_database(source, TimeBudget(None, 0.0), SYSTEM_CLOCK, observer)
    try:
        target = read_target(database, migrations, source.engine_settings(), sizes=explicit)
    finally:
        database.close()
    return _Selection(target.replay, target.pending, target.sizes, describe_database(source) if explicit else None)


def _since(config: Config, migrations: MigrationSet, since: Version) -> _Selection:
    last = _version(config.target, "--target") if config.target else None
    versioned = [(m.version, m) for m in migrations.versioned if m.version is not None]
    replay = [m for version, m in versioned if version < since]
    pending = [m for version, m in versioned if version >= since and (last is None or version <= last)]
    return _Selection(replay, pending + migrations.repeatable, None, None)


def _version(text: str, option: str) -> Version:
    try:
        return Version.parse(text)
    except ValueError as error:
        raise ConfigurationError(f"{option}: {error}") from None


def _measure(config: Config, options: CheckOptions, selection: _Selection) -> CheckReport:
    if problems := [problem for m in selection.pending for problem in m.check()]:
        raise MigrationSetError(problems)
    if not selection.pending:  # no scratch database to make, nothing to replay
        return CheckReport([], 0, "none", selection.target, selection.sizes is not None, options.max_locked_rows)
    server_url = options.scratch_url or embedded_scratch_url(config)
    where = "--scratch-url" if options.scratch_url else "the embedded PostgreSQL"
    settings = config.engine_settings()
    lock_timeout_ms = round(settings.lock_timeout_seconds * 1000)
    ignored = frozenset({(settings.schema, settings.table), (settings.schema, LEDGER_TABLE)})
    with scratch_database(server_url, where) as (scratch, version):
        _replay(scratch, selection.replay, settings)
        measurer = Measurer(
            scratch,
            lock_timeout_ms=lock_timeout_ms,
            ignored=ignored,
            existing_per_migration=options.existing_per_migration,
        )
        facts = [fact for migration in selection.pending for fact in measurer.measure(migration)]
    judging = Judging(options.max_locked_rows, lock_timeout_ms, selection.sizes)
    allowances = {m.script: m.allowances for m in selection.pending if m.allowances}
    return CheckReport(
        checked=[m.script for m in selection.pending],
        replayed=len(selection.replay),
        scratch=f"PostgreSQL {version}",
        target=selection.target,
        sized=selection.sizes is not None,
        max_locked_rows=options.max_locked_rows,
        findings=acknowledge(judge(facts, judging), allowances),
    )


def _replay(scratch: Database, migrations: list[Migration], settings: Settings) -> None:
    """The applied migrations, as ``premigrate up`` would apply them to an empty database."""
    if not migrations:
        return
    subset = MigrationSet([m for m in migrations if m.version], [m for m in migrations if not m.version])
    try:
        Engine(scratch, subset, replace(settings, target=None, allow_out_of_order=True)).migrate()
    except MigrationFailedError as error:
        raise MigrationFailedError(
            f"replaying the applied migrations into the scratch database failed: {error}\n  The files no longer "
            "build the schema the history says they built; check that every applied file is unchanged",
            script=error.script,
        ) from error


@contextlib.contextmanager
def scratch_database(server_url: str, where: str = "--scratch-url") -> Iterator[tuple[Database, str]]:
    """A new, empty database on the server (yields a session on it and the server's version), dropped at the end."""
    try:
        params = params_from_url(server_url)
        admin = connect(params, application_name="premigrate-check")
    except ConfigurationError as error:  # say which of the two databases it is about
        raise ConfigurationError(f"the scratch server ({where}): {error}") from None
    name = f"premigrate_check_{uuid.uuid4().hex[:12]}"
    try:
        try:
            admin.run(f'CREATE DATABASE "{name}" TEMPLATE template0')
        except ServerError as error:
            raise ConfigurationError(
                f"the scratch server {params.describe()} refused to create a database ({error.message}): give "
                "--scratch-url a server where premigrate's user has CREATEDB, or leave it out to use the embedded one"
            ) from None
        try:
            session = connect(replace(params, database=name), application_name="premigrate-check")
            try:
                yield session, str(session.run("SHOW server_version")[0][0]).split(" ")[0]
            finally:
                session.close()
        finally:
            _drop(admin, name)
    finally:
        admin.close()


def _drop(admin: Database, name: str) -> None:
    """WITH (FORCE) (PostgreSQL 13+) ends a session an interrupted check left behind."""
    try:
        admin.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except ServerError:
        with contextlib.suppress(ServerError):
            admin.run(f'DROP DATABASE IF EXISTS "{name}"')


def embedded_scratch_url(config: Config) -> str:
    """The embedded server's URL (started if needed): the default scratch server."""
    from premigrate.adapters.embedded import start_embedded

    return start_embedded(Path(config.embedded_dir))

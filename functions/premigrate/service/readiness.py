"""``premigrate ready``: an instance waits, read-only, until the database has what its code needs.

>>> wait_until_ready(load_config("cli"), ReadyQuestion(expect_version="42", wait_seconds=300))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from premigrate.adapters.folder import load_folder
from premigrate.engine import ConfigurationError, Report, Version
from premigrate.engine.clock import SYSTEM_CLOCK, Clock, TimeBudget
from premigrate.engine.database import Database
from premigrate.engine.history import HistoryTable
from premigrate.engine.readiness import Readiness, ready_by_files, ready_by_version
from premigrate.service.connecting import open_database
from premigrate.service.observer import Observer
from premigrate.service.results import Category, Result, failure
from premigrate.service.settings import Config, resolve_path

POLL_SECONDS = 2.0


@dataclass(frozen=True)
class ReadyQuestion:
    expect_version: str | None = None
    """Ready once a before-rollout migration at or above it is applied; None: every before-rollout file."""
    expect_fingerprint: str | None = None
    """With the files: refuse a migrations folder other than the one this release was built with."""
    wait_seconds: float = 0.0


def wait_until_ready(
    config: Config, question: ReadyQuestion, *, clock: Clock = SYSTEM_CLOCK, observer: Observer | None = None
) -> Result:
    """Ready: ``Result(True)`` with the summary as its report's note; not ready once the wait is over:
    Category.NOT_READY with the one line saying what is missing. Never raises."""
    try:
        ask = _asker(config, question)
        database = open_database(config, TimeBudget(None, 0.0), clock, observer or Observer())
    except Exception as error:
        return failure(error)
    try:
        started = clock.monotonic()
        while True:
            readiness = ask(database)
            waited = clock.monotonic() - started
            if readiness.ready or waited >= question.wait_seconds:
                break
            clock.sleep(min(POLL_SECONDS, question.wait_seconds - waited))
    except Exception as error:
        return failure(error)
    finally:
        database.close()
    if readiness.ready:
        return Result(True, report=Report("ready", notes=[readiness.summary]))
    suffix = f" (waited {question.wait_seconds:g} s)" if question.wait_seconds else ""
    return Result(False, error=readiness.summary + suffix, error_kind=Category.NOT_READY)


def _asker(config: Config, question: ReadyQuestion) -> Callable[[Database], Readiness]:
    history = HistoryTable(config.schema, config.engine_settings().table)
    if question.expect_version is not None:
        try:
            expected = Version.parse(question.expect_version)
        except ValueError as error:
            raise ConfigurationError(f"--expect-version: {error}") from None
        return lambda db: ready_by_version(db, history, expected)
    migrations = load_folder(resolve_path(config.migrations, None))
    if question.expect_fingerprint not in (None, migrations.fingerprint):
        raise ConfigurationError(
            f"the migrations folder {config.migrations} has the fingerprint {migrations.fingerprint}, not "
            f"{question.expect_fingerprint}: this instance carries another release's migrations"
        )
    return lambda db: ready_by_files(db, history, migrations)

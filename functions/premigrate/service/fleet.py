"""``premigrate fleet plan|up``: one migration set, many databases, run from here with a bounded thread pool:
Plan every database (read-only; an invalid one stops the rollout before any change), then the canary
(wave 0, no failure tolerated), then each later wave within its failure budget. The Step Functions state
machine runs the same rollout in AWS; each database gets the same ``Service.run`` as a single one.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from premigrate.adapters.folder import load_folder
from premigrate.adapters.manifest_source import read_manifest
from premigrate.engine import MigrationSet
from premigrate.fleet.manifest import Target, parse_manifest
from premigrate.fleet.rollout import Outcome, RolloutOptions, Status, Summary, failure_budget, run_limited, waves
from premigrate.service.observer import Observer
from premigrate.service.results import EXIT_CODES, Category, failure
from premigrate.service.service import Request, Service
from premigrate.service.settings import Config, resolve_path

WaveCallback = Callable[[str, list[Outcome]], None]
"""Called after each step with its name ("plan", "wave 0 (canary)", "wave 2") and its outcomes."""


@dataclass(frozen=True)
class FleetRun:
    config: Config
    """The settings every database shares; each target brings its own database."""
    migrations: MigrationSet
    options: RolloutOptions = field(default_factory=RolloutOptions)
    dry_run: bool = False
    on_step: WaveCallback = lambda step, outcomes: None


@dataclass(frozen=True)
class FleetResult:
    summary: Summary | None
    error: str | None
    exit_code: int


def fleet(
    config: Config, targets_location: str, options: RolloutOptions, dry_run: bool, on_step: WaveCallback
) -> FleetResult:
    """The command line's fleet: the manifest read and checked, the migrations loaded once, the rollout run.
    Never raises; exit code 0 only when every database is migrated (or planned, in a dry run)."""
    try:
        targets = parse_manifest(read_manifest(targets_location))
        migrations = load_folder(resolve_path(config.migrations, None))
    except Exception as error:
        refused = failure(error)
        return FleetResult(None, refused.error, refused.exit_code)
    summary = run_fleet(FleetRun(config, migrations, options, dry_run, on_step), targets)
    if summary.ok:
        return FleetResult(summary, None, 0)
    return FleetResult(summary, summary.stopped or "some databases were not migrated", EXIT_CODES[Category.MIGRATION])


def run_fleet(run: FleetRun, targets: list[Target]) -> Summary:
    plans = run_limited(targets, lambda target: _one(run, target, "plan"), run.options, tolerated_failures=len(targets))
    invalid = [outcome for outcome in plans if outcome.status is Status.INVALID]
    run.on_step("plan", plans)
    if invalid:
        untouched = [
            replace(outcome, status=Status.NOT_STARTED) for outcome in plans if outcome.status is not Status.INVALID
        ]
        stopped = f"plan found {len(invalid)} database(s) that cannot be migrated; no database was changed"
        return Summary(invalid + untouched, stopped)
    if run.dry_run:
        return Summary(plans)
    outcomes: list[Outcome] = []
    later = waves(targets)
    for index, (number, members) in enumerate(later):
        tolerated = 0 if number == 0 else failure_budget(len(members), run.options.tolerated_failure_percentage)
        results = run_limited(members, lambda target: _one(run, target, "migrate"), run.options, tolerated)
        outcomes += results
        run.on_step("wave 0 (canary)" if number == 0 else f"wave {number}", results)
        failed = sum(outcome.status is Status.FAILED for outcome in results)
        if failed > tolerated:
            rest = [target for _, members_after in later[index + 1 :] for target in members_after]
            outcomes += [Outcome(target.name, target.wave, Status.NOT_STARTED) for target in rest]
            return Summary(
                outcomes, f"wave {number}: {failed} of {len(members)} failed, more than the {tolerated} tolerated"
            )
    return Summary(outcomes)


def _one(run: FleetRun, target: Target, action: str) -> Outcome:
    """One database, as a single run would migrate it; never raises."""
    config = replace(run.config, database_url=target.database_url, secret_id=target.secret_id)
    request = Request(
        action,
        caller="fleet",
        request_id=f"fleet-{uuid.uuid4().hex[:12]}-{target.name}" if action == "migrate" else None,
        load_migrations=lambda: run.migrations,
    )
    result = Service(config, observer=Observer()).run(request)
    report = result.report
    if not result.ok:
        status = Status.INVALID if action == "plan" else Status.FAILED
        return Outcome(target.name, target.wave, status, len(report.applied) if report else 0, error=result.error)
    assert report is not None
    if action == "plan":
        return Outcome(target.name, target.wave, Status.PLANNED, pending=len(report.pending))
    status = Status.MIGRATED if report.applied else Status.UP_TO_DATE
    return Outcome(target.name, target.wave, status, len(report.applied), len(report.pending))

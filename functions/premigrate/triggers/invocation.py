"""What every Lambda caller shares: settings from the environment, the connection (secret rotation,
retries, IAM auth), one engine run recorded in the ledger, metrics. Callers only translate events.

    >>> outcome = run_engine(Invocation("direct", "req-1", "plan", time_left=lambda: 60.0))
    >>> outcome.ok, outcome.report["pending"]
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pg8000.native
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from premigrate.adapters.connection import (
    AuthenticationFailedError,
    ConnectionParams,
    UnreachableError,
    close_quietly,
    connect,
    params_from_url,
)
from premigrate.adapters.folder import load_folder
from premigrate.durations import parse_duration
from premigrate.engine import (
    ConfigurationError,
    Engine,
    LockNotAcquiredError,
    MigrationFailedError,
    MigrationSet,
    PremigrateError,
    Report,
    Settings,
)
from premigrate.engine.database import CONNECTION_LOST
from premigrate.engine.ledger import RunLedger

logger = Logger(service="premigrate")
metrics = Metrics(namespace="Premigrate", service="premigrate")

_CONNECT_ATTEMPTS = 3
_TRUE = ("1", "true", "yes", "on")


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    text = environ.get(name)
    if not text:
        return default
    try:
        return parse_duration(text)
    except ValueError as error:
        raise ConfigurationError(f"{name}: {error}") from None


@dataclass(frozen=True)
class LambdaSettings:
    """The function's configuration, from its environment (template.yaml sets it)."""

    database_url: str | None
    secret_id: str | None
    sslmode: str
    ca_bundle: str | None
    iam_auth: bool
    migrations_dir: Path
    engine: Settings

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> LambdaSettings:
        database_url = environ.get("PREMIGRATE_DATABASE_URL") or None
        secret_id = environ.get("PREMIGRATE_SECRET_ID") or None
        if not database_url and not secret_id:
            raise ConfigurationError(
                "the function has no database: set PREMIGRATE_SECRET_ID to the RDS secret's ARN "
                "(or PREMIGRATE_DATABASE_URL for a local invoke)"
            )
        task_root = Path(environ.get("LAMBDA_TASK_ROOT", "."))
        bundled_ca = Path(__file__).resolve().parent.parent / "rds-ca-bundle.pem"
        return cls(
            database_url=database_url,
            secret_id=secret_id,
            sslmode=environ.get("PREMIGRATE_SSLMODE", "verify-full"),
            ca_bundle=environ.get("PREMIGRATE_CA_BUNDLE") or (str(bundled_ca) if bundled_ca.exists() else None),
            iam_auth=environ.get("PREMIGRATE_IAM_AUTH", "").lower() in _TRUE,
            migrations_dir=Path(environ.get("PREMIGRATE_MIGRATIONS") or task_root / "migrations"),
            engine=Settings(
                schema=environ.get("PREMIGRATE_SCHEMA", "public"),
                lock_wait_seconds=_seconds(environ, "PREMIGRATE_LOCK_WAIT", 300.0),
                lock_timeout_seconds=_seconds(environ, "PREMIGRATE_LOCK_TIMEOUT", 5.0),
                statement_timeout_seconds=_seconds(environ, "PREMIGRATE_STATEMENT_TIMEOUT", 0.0),
                time_margin_seconds=_seconds(environ, "PREMIGRATE_TIME_MARGIN", 30.0),
            ),
        )

    @property
    def database_identity(self) -> str:
        """Stable name of the target database (never a password): the same database gives the same id."""
        where = self.secret_id or params_from_url(self.database_url or "").describe()
        digest = hashlib.sha256(f"{where}|{self.engine.schema}".encode()).hexdigest()[:16]
        return f"premigrate-{digest}"


@dataclass
class Invocation:
    """One request from a caller, as the engine run needs it."""

    caller: str
    request_id: str
    action: str
    time_left: Callable[[], float]
    settings: LambdaSettings | None = None
    migrations: MigrationSet | None = None
    """None: the migrations bundled with the function."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Engine settings the caller may change (target, lock_wait_seconds, accept_database_ahead)."""


@dataclass
class Outcome:
    ok: bool
    report: dict[str, Any] | None = None
    error: str | None = None
    error_kind: str | None = None
    """configuration | validation | migration | lock | internal"""
    replayed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in vars(self).items() if value is not None}

    @property
    def stopped_for_time(self) -> bool:
        return bool(self.report and self.report.get("stopped_for_time"))


def run_engine(invocation: Invocation) -> Outcome:
    """Run one engine action for a caller. Never raises for anything a person can fix: the Outcome says."""
    try:
        settings = invocation.settings or LambdaSettings.from_env()
        migrations = invocation.migrations or load_folder(settings.migrations_dir)
        engine_settings = replace(settings.engine, **invocation.overrides)
        connection = open_connection(settings, invocation.time_left)
    except PremigrateError as error:
        return _failure(error)
    try:
        ledger = RunLedger(engine_settings.schema)
        ledger.ensure(connection)
        earlier = ledger.earlier_result(connection, invocation.request_id)
        if earlier is not None:
            logger.info("request already handled: returning its earlier outcome", extra={"outcome": earlier})
            return Outcome(**{**earlier, "replayed": True})
        engine = Engine(connection, migrations, engine_settings, progress=_log_progress, time_left=invocation.time_left)
        ledger.start(connection, invocation.caller, invocation.action, invocation.request_id)
        outcome = _run_action(engine, invocation.action)
        report = outcome.report or {}
        try:
            ledger.finish(
                connection,
                invocation.request_id,
                outcome="succeeded" if outcome.ok else "failed",
                applied_versions=[run["version"] or run["script"] for run in report.get("applied", [])],
                error=outcome.error,
                result=outcome.to_dict(),
            )
        except CONNECTION_LOST:  # the run's own error (a lost connection) is the answer that matters
            logger.warning("the connection was lost: the run ledger keeps this request as running")
        _record_metrics(report)
        return outcome
    except PremigrateError as error:  # settings the engine refuses, such as a target that is no version
        return _failure(error)
    except Exception as error:
        logger.exception("unexpected error")
        return Outcome(
            False, error=f"unexpected error ({type(error).__name__}); see the function's log", error_kind="internal"
        )
    finally:
        close_quietly(connection)


def _run_action(engine: Engine, action: str) -> Outcome:
    actions: dict[str, Callable[[], Report]] = {
        "plan": engine.plan,
        "validate": engine.validate,
        "status": engine.status,
        "migrate": engine.migrate,
    }
    try:
        report = actions[action]()
    except PremigrateError as error:
        return _failure(error)
    for note in report.notes:
        logger.info(note)
    return Outcome(True, report=report.to_dict())


def _failure(error: PremigrateError) -> Outcome:
    if isinstance(error, LockNotAcquiredError):
        kind = "lock"
    elif isinstance(error, ConfigurationError):
        kind = "configuration"
    elif isinstance(error, MigrationFailedError):
        kind = "migration"
    else:
        kind = "validation"
    logger.error(str(error), extra={"error_kind": kind})
    report = error.report.to_dict() if error.report else None
    return Outcome(False, report=report, error=str(error), error_kind=kind)


def _log_progress(event: str, run: Any) -> None:
    logger.info(f"{event} {run.script}", extra={"mode": run.mode, "duration_ms": run.duration_ms})


def _record_metrics(report: Mapping[str, Any]) -> None:
    metrics.add_metric("MigrationsApplied", MetricUnit.Count, len(report.get("applied", [])))
    metrics.add_metric("PendingMigrations", MetricUnit.Count, len(report.get("pending", [])))
    metrics.add_metric("MigrationDuration", MetricUnit.Milliseconds, float(report.get("total_ms", 0.0)))
    metrics.add_metric("LockWait", MetricUnit.Milliseconds, float(report.get("lock_wait_ms", 0.0)))


def open_connection(settings: LambdaSettings, time_left: Callable[[], float]) -> pg8000.native.Connection:
    """Connect, riding out a rotated secret (fetch again, then AWSPENDING) and brief outages (RDS failover)."""
    if settings.database_url:
        return _connect_with_retries(params_from_url(settings.database_url), time_left)
    assert settings.secret_id is not None
    stages: list[tuple[bool, str | None]] = [(False, None), (True, None), (True, "AWSPENDING")]
    for attempt, (force_fetch, version_stage) in enumerate(stages):
        params = _params_from_secret(settings, force_fetch=force_fetch, version_stage=version_stage)
        try:
            return _connect_with_retries(params, time_left)
        except AuthenticationFailedError:
            if attempt == len(stages) - 1:
                raise
            logger.warning(
                "the database refused the secret's credentials; reading the secret again",
                extra={"next_stage": stages[attempt + 1][1] or "AWSCURRENT"},
            )
    raise AssertionError("unreachable: the last stage returns or raises")


def _params_from_secret(settings: LambdaSettings, *, force_fetch: bool, version_stage: str | None) -> ConnectionParams:
    from premigrate.adapters.secret import read_secret

    assert settings.secret_id is not None
    params = read_secret(
        settings.secret_id,
        sslmode=settings.sslmode,
        sslrootcert=settings.ca_bundle,
        force_fetch=force_fetch,
        version_stage=version_stage,
    )
    if settings.iam_auth:
        from premigrate.adapters.iam_auth import iam_auth_token

        params = replace(params, password=iam_auth_token(params))
    return params


def _connect_with_retries(params: ConnectionParams, time_left: Callable[[], float]) -> pg8000.native.Connection:
    for attempt in range(1, _CONNECT_ATTEMPTS + 1):
        try:
            return connect(params)
        except UnreachableError:
            pause = 2.0 ** (attempt - 1) * random.uniform(0.75, 1.25)
            if attempt == _CONNECT_ATTEMPTS or time_left() < pause + 30:
                raise
            logger.warning("could not connect; trying again", extra={"attempt": attempt, "pause_s": round(pause, 2)})
            time.sleep(pause)
    raise AssertionError("unreachable: the last attempt returns or raises")

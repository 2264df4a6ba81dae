"""What the Lambda's callers share: its logger and metrics, and one call that runs a request through the
application service with the function's configuration. Callers only translate events.

    >>> result = run(function_config(), Request("plan", caller="direct", request_id="req-1"), lambda: 60.0)
    >>> result.ok, result.report.pending
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from premigrate.engine.report import MigrationRun
from premigrate.service import Config, Observer, Request, Result, Service, failure, load_config

REQUEST_SETTINGS = ("target", "lock_wait_seconds", "phase", "all_or_nothing")
"""The settings a direct invoke or CodePipeline's UserParameters may change for one run; checked as the
function's environment is."""

logger = Logger(service="premigrate")
metrics = Metrics(namespace="Premigrate", service="premigrate")


class LambdaLog(Observer):
    """A run's progress in the function's JSON log, and its numbers as metrics."""

    def migration(self, event: str, run: MigrationRun) -> None:
        logger.info(f"{event} {run.script}", extra={"mode": run.mode, "duration_ms": run.duration_ms})

    def note(self, message: str, **details: Any) -> None:
        logger.info(message, extra=details)

    def warning(self, message: str, **details: Any) -> None:
        error = details.pop("exc_info", None)
        logger.warning(message, extra=details, exc_info=error)

    def finished(self, result: Result) -> None:
        if not result.ok:
            logger.error(str(result.error), extra={"error_kind": str(result.error_kind)})
        if result.report is None or result.replayed:
            return
        report = result.report
        metrics.add_metric("MigrationsApplied", MetricUnit.Count, len(report.applied))
        metrics.add_metric("PendingMigrations", MetricUnit.Count, len(report.pending))
        metrics.add_metric("MigrationDuration", MetricUnit.Milliseconds, report.total_ms)
        metrics.add_metric("LockWait", MetricUnit.Milliseconds, report.lock_wait_ms)


def function_config(values: Mapping[str, object] | None = None, where: str = "the event") -> Config:
    """The function's configuration from its environment, with a caller's per-request values."""
    return load_config("lambda", os.environ).with_values(values or {}, where)


def refused(error: Exception) -> Result:
    """The Result for an error raised outside a service run (a malformed event, say), logged as the
    service logs its own."""
    result = failure(error)
    if result.error_kind == "internal":
        logger.exception("unexpected error", exc_info=error)
    LambdaLog().finished(result)
    return result


def run(config: Config, request: Request, time_left: Callable[[], float]) -> Result:
    """One request through the service; never raises: the Result says what happened."""
    service = Service(config, observer=LambdaLog(), time_left=time_left, base_dir=os.environ.get("LAMBDA_TASK_ROOT"))
    return service.run(request)

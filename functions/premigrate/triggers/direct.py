"""Direct invoke (``aws lambda invoke``, ``sam local invoke``, ``premigrate invoke``)::

    {"action": "plan" | "migrate" | "status" | "validate", "target": "42", "lock_wait_seconds": 60,
     "phase": "all" | "before-rollout" | "after-rollout", "request_id": "deploy-42",
     "secret_id": "prod/tenants/a"}

``phase`` defaults to the function's PREMIGRATE_PHASE (all), as on the command line. ``secret_id`` points
this one run at another database (one of a fleet, say) by its Secrets Manager secret; the function's role
must be allowed to read it. A database URL is never taken from an event: it holds a password, and an event
is kept in logs and in Step Functions' history.

Returns the service's result as JSON: ``{"ok": true, "report": {...}}`` or ``{"ok": false, "error": ...,
"error_kind": ...}``. It never takes SQL from the event: only these keys are accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from premigrate.engine import ConfigurationError
from premigrate.service import Category, Config, Request, Result
from premigrate.triggers.invocation import REQUEST_SETTINGS, function_config, refused, run

ACTIONS = ("plan", "migrate", "status", "validate")
_KEYS = ("action", "request_id", "secret_id", *REQUEST_SETTINGS)
MAX_SECRET_ID = 2048
"""Secrets Manager's own limit for a SecretId (a name or an ARN)."""


def handle(event: dict[str, Any], request_id: str, time_left: Callable[[], float]) -> dict[str, Any]:
    try:
        _check(event)
        config = function_config({key: event[key] for key in REQUEST_SETTINGS if key in event}, "the direct invoke's")
        if "secret_id" in event:
            config = for_secret(config, event["secret_id"])
    except Exception as error:
        return refused(error).to_dict()
    request = Request(event["action"], caller="direct", request_id=event.get("request_id", request_id))
    return finished(run(config, request, time_left)).to_dict()


def finished(result: Result) -> Result:
    """A run that stopped for time is a failure to a caller that reads only "ok"."""
    if not (result.stopped_for_time and result.report is not None):
        return result
    return Result(
        False,
        report=result.report,
        error=f"applied {len(result.report.applied)} migration(s), then ran short of the function's time with "
        f"{len(result.report.pending)} still pending; they stay applied: invoke again to continue",
        error_kind=Category.MIGRATION,
    )


def for_secret(config: Config, secret_id: object) -> Config:
    """The function's settings pointed at the database of ``secret_id``. The function's own URL (which would
    win over a secret) and IAM authentication (whose rds-db:connect names the function's own database user)
    do not carry over to another database."""
    if not isinstance(secret_id, str) or not secret_id.strip() or len(secret_id) > MAX_SECRET_ID:
        raise ConfigurationError(f"'secret_id' must be a secret's name or ARN (1-{MAX_SECRET_ID} characters of text)")
    return replace(config, secret_id=secret_id, database_url=None, iam_auth=False)


def check_keys(event: Mapping[str, Any], allowed: tuple[str, ...], what: str) -> None:
    for key in event:
        if key not in allowed:
            raise ConfigurationError(
                f"unknown key {key!r}; {what} takes {', '.join(allowed)} (it never runs SQL from the event, and "
                "never takes a database URL: give the database's secret_id)"
            )


def _check(event: dict[str, Any]) -> None:
    action = event.get("action")
    if action not in ACTIONS:
        raise ConfigurationError(f'unknown action {action!r}: send {{"action": "plan"}} (or {", ".join(ACTIONS[1:])})')
    check_keys(event, _KEYS, "a direct invoke")
    if not isinstance(event.get("request_id", ""), str):
        raise ConfigurationError(f"'request_id' has the wrong type ({type(event['request_id']).__name__})")

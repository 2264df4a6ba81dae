"""Direct invoke (``aws lambda invoke``, ``sam local invoke``, ``premigrate invoke``)::

    {"action": "plan" | "migrate" | "status" | "validate", "target": "42", "lock_wait_seconds": 60,
     "phase": "all" | "before-rollout" | "after-rollout"}

``phase`` defaults to the function's PREMIGRATE_PHASE (all), as on the command line.

Returns the service's result as JSON: ``{"ok": true, "report": {...}}`` or ``{"ok": false, "error": ...,
"error_kind": ...}``. It never takes SQL from the event: only these keys are accepted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from premigrate.engine import ConfigurationError
from premigrate.service import Category, Request, Result
from premigrate.triggers.invocation import REQUEST_SETTINGS, function_config, refused, run

ACTIONS = ("plan", "migrate", "status", "validate")


def handle(event: dict[str, Any], request_id: str, time_left: Callable[[], float]) -> dict[str, Any]:
    try:
        _check(event)
        config = function_config({key: event[key] for key in REQUEST_SETTINGS if key in event}, "the direct invoke's")
    except Exception as error:
        return refused(error).to_dict()
    request = Request(event["action"], caller="direct", request_id=event.get("request_id", request_id))
    result = run(config, request, time_left)
    if result.stopped_for_time and result.report is not None:
        # A caller that reads only "ok" must not take a half-done run for a finished one.
        result = Result(
            False,
            report=result.report,
            error=f"applied {len(result.report.applied)} migration(s), then ran short of the function's time with "
            f"{len(result.report.pending)} still pending; they stay applied: invoke again to continue",
            error_kind=Category.MIGRATION,
        )
    return result.to_dict()


def _check(event: dict[str, Any]) -> None:
    action = event.get("action")
    if action not in ACTIONS:
        raise ConfigurationError(f'unknown action {action!r}: send {{"action": "plan"}} (or {", ".join(ACTIONS[1:])})')
    for key in event:
        if key not in ("action", "request_id", *REQUEST_SETTINGS):
            raise ConfigurationError(
                f"unknown key {key!r}; a direct invoke takes action plus "
                f"{', '.join((*REQUEST_SETTINGS, 'request_id'))} (it never runs SQL from the event)"
            )
    if not isinstance(event.get("request_id", ""), str):
        raise ConfigurationError(f"'request_id' has the wrong type ({type(event['request_id']).__name__})")

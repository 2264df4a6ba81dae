"""Direct invoke (``aws lambda invoke``, ``sam local invoke``, ``premigrate invoke``)::

    {"action": "plan" | "migrate" | "status" | "validate", "target": "42", "lock_wait_seconds": 60}

Returns the engine's report as JSON: ``{"ok": true, "report": {...}}`` or ``{"ok": false, "error": ...,
"error_kind": ...}``. It never takes SQL from the event: only these keys are accepted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from premigrate.triggers.invocation import Invocation, Outcome, logger, run_engine

ACTIONS = ("plan", "migrate", "status", "validate")
_OPTIONS: dict[str, type | tuple[type, ...]] = {"target": str, "lock_wait_seconds": (int, float), "request_id": str}


def handle(event: dict[str, Any], request_id: str, time_left: Callable[[], float]) -> dict[str, Any]:
    problem = _problem(event)
    if problem:
        logger.error(problem)
        return Outcome(False, error=problem, error_kind="configuration").to_dict()
    overrides: dict[str, Any] = {key: event[key] for key in ("target", "lock_wait_seconds") if key in event}
    return run_engine(
        Invocation(
            caller="direct",
            request_id=event.get("request_id", request_id),
            action=event["action"],
            time_left=time_left,
            overrides=overrides,
        )
    ).to_dict()


def _problem(event: dict[str, Any]) -> str | None:
    action = event.get("action")
    if action not in ACTIONS:
        return f'unknown action {action!r}: send {{"action": "plan"}} (or {", ".join(ACTIONS[1:])})'
    for key, value in event.items():
        if key == "action":
            continue
        expected = _OPTIONS.get(key)
        if expected is None:
            return (
                f"unknown key {key!r}; a direct invoke takes action plus {', '.join(_OPTIONS)} "
                "(it never runs SQL from the event)"
            )
        if not isinstance(value, expected) or isinstance(value, bool):
            return f"{key!r} has the wrong type ({type(value).__name__})"
    return None

"""The fleet's steps: the Step Functions state machine (statemachine/fleet.asl.json) only orchestrates, and
calls this function for every piece of work, with a ``fleet`` key naming the step::

    {"fleet": "prepare", "input": <the execution's input>, "rollout": <the execution's name>}
    {"fleet": "database", "action": "plan" | "migrate", "database": {"name": ..., "secret_id": ..., "wave": 1,
     "server": ...}, "settings": {...}, "fingerprint": "...", "request_id": "..."}
    {"fleet": "check-plan", "state": <the state machine's state>}
    {"fleet": "summarize", "state": ..., "input": ..., "rollout": ...}
    {"fleet": "answer", "state": ..., "input": ...}

A database step is the same run as a direct invoke with that database's secret_id, and answers with the
compact Outcome of fleet/rollout.py (status, counts, the error cut to ERROR_CHARS), so that ten thousand
answers stay small; ``ok`` false when the database was not migrated, ``error_kind`` "lock" when another run
held its lock (the state machine waits and tries again with a new request id). No step raises: each answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from premigrate.engine import ConfigurationError
from premigrate.fleet.rollout import Outcome, Status
from premigrate.service import Request, Result
from premigrate.triggers.direct import check_keys, finished, for_secret
from premigrate.triggers.invocation import REQUEST_SETTINGS, function_config, logger, refused, run

ERROR_CHARS = 1000
"""An outcome's error keeps its first characters (file, line, SQLSTATE come first); the log has all of it."""
_DATABASE_KEYS = ("fleet", "action", "database", "settings", "fingerprint", "request_id")


def handle(event: dict[str, Any], time_left: Callable[[], float]) -> dict[str, Any]:
    from premigrate.triggers import fleet_cloudformation, fleet_prepare, fleet_summary

    step = event.get("fleet")
    if step == "database":
        return database(event, time_left)
    steps: dict[object, Callable[[dict[str, Any], Callable[[], float]], dict[str, Any]]] = {
        "prepare": fleet_prepare.prepare,
        "check-plan": fleet_summary.check_plan,
        "summarize": fleet_summary.summarize,
        "answer": fleet_cloudformation.answer,
    }
    if step not in steps:
        known = ", ".join(["database", *map(str, steps)])
        return refused(ConfigurationError(f"unknown fleet step {step!r}; one of {known}")).to_dict()
    logger.info("fleet step", extra={"step": step})
    return steps[step](event, time_left)


def database(event: dict[str, Any], time_left: Callable[[], float]) -> dict[str, Any]:
    """One database of the fleet: plan or migrate it, and answer with its compact outcome."""
    item = event.get("database")
    name, wave = _identity(item)
    action = event.get("action")
    try:
        check_keys(event, _DATABASE_KEYS, "a fleet database step")
        if action not in ("plan", "migrate"):
            raise ConfigurationError(f"a fleet database step plans or migrates, not {action!r}")
        if not isinstance(item, dict):
            raise ConfigurationError("'database' must be an object: the manifest's target (name, secret_id, wave)")
        config = for_secret(function_config(settings(event.get("settings")), "the rollout's"), item.get("secret_id"))
        fingerprint = event.get("fingerprint")
        request_id = event.get("request_id")
        if not isinstance(fingerprint, str | None) or not isinstance(request_id, str | None):
            raise ConfigurationError("'fingerprint' and 'request_id' must be text")
    except Exception as error:
        return answer(name, wave, action, refused(error))
    # Only a migration changes the database: it is recorded in the run ledger under its request id, so a
    # Lambda retry of the same invocation replays its outcome instead of running again.
    request = Request(
        str(action),
        caller="fleet",
        request_id=request_id if action == "migrate" else None,
        expected_fingerprint=fingerprint,
    )
    return answer(name, wave, action, finished(run(config, request, time_left)))


def settings(values: object) -> dict[str, object]:
    """The per-rollout settings every database run gets (phase, target, lock wait, all-or-nothing)."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigurationError("'settings' must be an object")
    check_keys(values, REQUEST_SETTINGS, "a rollout's settings")
    return dict(values)


def answer(name: str, wave: int, action: object, result: Result) -> dict[str, Any]:
    report = result.report
    if result.ok and report is not None:
        if action == "plan":
            outcome = Outcome(name, wave, Status.PLANNED, pending=len(report.pending))
        else:
            status = Status.MIGRATED if report.applied else Status.UP_TO_DATE
            outcome = Outcome(name, wave, status, len(report.applied), len(report.pending))
    else:
        status = Status.INVALID if action == "plan" else Status.FAILED
        error = str(result.error or "failed")
        cut = error if len(error) <= ERROR_CHARS else error[: ERROR_CHARS - 1] + "…"
        outcome = Outcome(name, wave, status, len(report.applied) if report else 0, error=cut)
    return {
        "ok": result.ok,
        "error_kind": str(result.error_kind) if result.error_kind else None,
        "outcome": asdict(outcome),
    }


def as_object(value: object) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one: for what a state may or may not hold yet."""
    return value if isinstance(value, dict) else {}


def _identity(item: object) -> tuple[str, int]:
    """The database's name and wave for its answer, whatever the event holds (checked again by the run)."""
    if not isinstance(item, dict):
        return "?", 0
    name, wave = item.get("name"), item.get("wave")
    return (name if isinstance(name, str) else "?"), (wave if isinstance(wave, int) else 0)

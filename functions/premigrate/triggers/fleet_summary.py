"""What the rollout came to, read from what Step Functions' ResultWriter wrote: every Map Run of the execution
exports its child executions' results under ``runs/<rollout>/results/`` (a ``manifest.json`` listing
``SUCCEEDED_n.json`` and ``FAILED_n.json`` files of entries with the child's Input, Status, and its Output or
Error and Cause). A database child ends with its compact Outcome as Output, or fails with it as Cause.

``check-plan`` counts Plan's invalid databases; ``summarize`` returns ``Summary.to_dict()`` (bounded: at most
50 failed databases listed, each error at most 1,000 characters) with a one-line ``message``, and writes every
database's outcome to ``runs/<rollout>/summary.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from premigrate.adapters.fleet_store import FleetStore
from premigrate.engine import ConfigurationError
from premigrate.fleet.rollout import Outcome, Status, Summary
from premigrate.triggers.fleet import ERROR_CHARS, as_object
from premigrate.triggers.invocation import logger, refused

_THRESHOLD = "States.ExceedToleratedFailureThreshold"
_PLAN_STOPPED = "plan found {} database(s) that cannot be migrated; no database was changed"


def check_plan(event: dict[str, Any], time_left: Callable[[], float]) -> dict[str, Any]:
    """Whether the rollout may change anything: every database planned, none invalid."""
    try:
        prepared = _prepared(event)
        plans = _Results(prepared).read("plan")
    except Exception as error:
        return {"go": False, "invalid": None, "unplanned": None, "error": refused(error).error}
    invalid = sum(outcome.status is Status.INVALID for outcome in plans.values())
    unplanned = prepared["databases"] - len(plans)
    return {"go": not invalid and not unplanned, "invalid": invalid, "unplanned": unplanned, "error": None}


def summarize(event: dict[str, Any], time_left: Callable[[], float]) -> dict[str, Any]:
    state = as_object(event.get("state"))
    try:
        summary, extra = _summary(state)
    except Exception as error:
        summary, extra = Summary([], f"the rollout's results could not be read: {refused(error).error}"), {}
    result = {**summary.to_dict(), "message": _message(summary), **extra}
    logger.info("fleet summary", extra={"ok": summary.ok, "counts": summary.counts(), "stopped": summary.stopped})
    return result


def _summary(state: dict[str, Any]) -> tuple[Summary, dict[str, Any]]:
    prepared = state.get("prepared")
    failure = state.get("failure")
    if not isinstance(prepared, dict) or not prepared.get("ok"):
        reason = prepared.get("error") if isinstance(prepared, dict) else None
        return Summary([], reason or f"the rollout stopped before it began: {_failure_text(failure)}"), {}
    results = _Results(prepared)
    names = [(item["name"], item["wave"]) for item in results.store.get_json(prepared["plan"]["items_key"])]
    plans = results.read("plan")
    invalid = [plans[name] for name, _ in names if name in plans and plans[name].status is Status.INVALID]
    if invalid or len(plans) < len(names) or (failure and "wave" not in state.get("loop", {})):
        refused_names = {outcome.name for outcome in invalid}
        untouched = [Outcome(name, wave, Status.NOT_STARTED) for name, wave in names if name not in refused_names]
        check = as_object(as_object(state.get("plan_check")).get("answer"))
        why = (
            _failure_text(failure)
            if failure
            else check.get("error") or f"{len(names) - len(plans)} database(s) unplanned"
        )
        stopped = _PLAN_STOPPED.format(len(invalid)) if invalid else f"plan did not finish: {why}"
        return _kept(results, Summary(invalid + untouched, stopped))
    if prepared.get("dry_run"):
        return _kept(results, Summary([plans[name] for name, _ in names]))
    migrated = results.read("wave")
    outcomes = [migrated.get(name) or Outcome(name, wave, Status.NOT_STARTED) for name, wave in names]
    return _kept(results, Summary(outcomes, _stopped(state, failure, outcomes)))


def _stopped(state: dict[str, Any], failure: object, outcomes: list[Outcome]) -> str | None:
    if not failure:
        return None
    wave = state.get("loop", {}).get("wave", {})
    number = wave.get("wave") if isinstance(wave, dict) else None
    if number is None:
        return f"the rollout stopped: {_failure_text(failure)}"
    members = [outcome for outcome in outcomes if outcome.wave == number]
    failed = sum(outcome.status is Status.FAILED for outcome in members)
    if isinstance(failure, dict) and failure.get("Error") == _THRESHOLD:
        tolerated = wave.get("tolerated_failure_percentage", 0)
        if not tolerated:
            return f"wave {number}: {failed} of {len(members)} failed, more than the 0% tolerated"
        # The budget is each server group's (docs/fleet.md): one group over it stops the wave.
        return f"wave {number}: {failed} of {len(members)} failed, more than {tolerated:g}% of a server group"
    return f"wave {number} stopped ({failed} of {len(members)} failed): {_failure_text(failure)}"


def _kept(results: _Results, summary: Summary) -> tuple[Summary, dict[str, Any]]:
    """The summary, with every outcome written beside the results (the state machine's copy is bounded)."""
    key = f"{results.root}/summary.json"
    everything = {**summary.to_dict(), "outcomes": [asdict(outcome) for outcome in summary.outcomes]}
    everything["failed"], everything["failed_not_listed"] = [], 0  # the outcomes say it all
    results.store.put_json(key, everything)
    return summary, {"rollout": results.rollout, "summary": f"s3://{results.store.bucket}/{key}"}


def _message(summary: Summary) -> str:
    counts = ", ".join(f"{count} {status}" for status, count in summary.counts().items()) or "no databases"
    if summary.stopped:
        return f"{summary.stopped} ({counts})"
    if summary.ok:
        return f"every database is migrated: {counts}"
    return f"some databases were not migrated, within the tolerated failures: {counts}"


def _failure_text(failure: object) -> str:
    if not isinstance(failure, dict):
        return "no error was recorded"
    cause = str(failure.get("Cause") or "")
    return f"{failure.get('Error') or 'error'}: {cause[:ERROR_CHARS]}"


def _prepared(event: dict[str, Any]) -> dict[str, Any]:
    state = event.get("state")
    prepared = state.get("prepared") if isinstance(state, dict) else None
    if not isinstance(prepared, dict) or not prepared.get("ok"):
        raise ConfigurationError("the fleet step needs the prepared rollout (the state machine's $.prepared)")
    return prepared


class _Results:
    """The child results of a rollout's Map Runs, as outcomes by database name (the latest one wins)."""

    def __init__(self, prepared: dict[str, Any]) -> None:
        self.store = FleetStore(str(prepared["bucket"]))
        self.rollout = str(prepared["rollout"])
        self.root = f"runs/{self.rollout}"

    def read(self, which: str) -> dict[str, Outcome]:
        """``plan``: Plan's results; ``wave``: every database child of every wave (not the group children)."""
        prefix = f"{self.root}/results/plan/" if which == "plan" else f"{self.root}/results/wave-"
        manifests = [key for key in self.store.keys(prefix) if key.endswith("/manifest.json") and "/groups/" not in key]
        files = [
            entry["Key"]
            for manifest in self.store.get_many(manifests)
            for status in ("SUCCEEDED", "FAILED")
            for entry in manifest.get("ResultFiles", {}).get(status, [])
        ]
        latest: dict[str, tuple[str, Outcome]] = {}
        for entries in self.store.get_many(files):
            for entry in entries if isinstance(entries, list) else []:
                found = outcome_of(entry, which) if isinstance(entry, dict) else None
                # A redriven child has a result per attempt: the one that stopped last is the database's.
                if found is not None and (found[1].name not in latest or found[0] >= latest[found[1].name][0]):
                    latest[found[1].name] = found
        return {name: outcome for name, (_, outcome) in latest.items()}


def outcome_of(entry: dict[str, Any], which: str) -> tuple[str, Outcome] | None:
    """(when it stopped, its outcome) for one child execution's result; None for anything not ours."""
    database = _loads(entry.get("Input")).get("database")
    if not isinstance(database, dict) or not isinstance(database.get("name"), str):
        return None
    name, wave = str(database["name"]), database.get("wave")
    wave = wave if isinstance(wave, int) else 0
    stop = str(entry.get("StopDate") or "")
    answer = _loads(entry.get("Output") if entry.get("Status") == "SUCCEEDED" else entry.get("Cause"))
    try:
        if answer.get("name") == name:
            error = answer.get("error")
            counts = int(answer.get("applied", 0)), int(answer.get("pending", 0))
            cut = str(error)[:ERROR_CHARS] if error is not None else None
            return stop, Outcome(name, wave, Status(answer["status"]), *counts, error=cut)
    except (KeyError, ValueError, TypeError):
        pass
    # The child ended without an answer of ours: Lambda failed past its retries, the run was stopped.
    status = Status.INVALID if which == "plan" else Status.FAILED
    why = f"{entry.get('Status')}: {entry.get('Error') or 'no error'}: {entry.get('Cause') or ''}".strip(": ")
    error = f"its run ended without an answer ({why[:ERROR_CHARS]}); the database is migrated whole or untouched"
    return stop, Outcome(name, wave, status, error=error)


def _loads(text: object) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}

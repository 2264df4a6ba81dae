"""CloudFormation custom resource: migrate on Create and Update, never touch the database on Delete,
and always answer, so a stack never waits an hour or sticks in UPDATE_ROLLBACK_FAILED because of us.

The answer is a PUT of a JSON document (at most 4096 bytes) to the event's presigned ResponseURL;
powertools has no sender for it, so ``Responder`` is ours: one answer per request, retried a few
times, bounded in time, and the URL (a credential) never logged.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.data_classes import CloudFormationCustomResourceEvent

from premigrate.service import Request, Result
from premigrate.service.connecting import database_identity
from premigrate.triggers.invocation import function_config, logger, refused, run

MAX_RESPONSE_BYTES = 4096
_SEND_ATTEMPTS = 4
_SEND_TIMEOUT_SECONDS = 10
GUARD_MARGIN_SECONDS = 10.0
"""The guard answers FAILED this long before the function would be killed."""
_REQUIRED = ("RequestType", "ResponseURL", "StackId", "RequestId", "LogicalResourceId")


class Responder:
    """Sends the one response a request gets; a second call (the timeout guard racing the run) is ignored."""

    def __init__(self, event: dict[str, Any], physical_resource_id: str) -> None:
        self.event = event
        self.physical_resource_id = physical_resource_id
        self._lock = threading.Lock()
        self.sent: dict[str, Any] | None = None

    def succeed(self, data: dict[str, str], reason: str = "") -> dict[str, Any]:
        return self._send("SUCCESS", reason, data)

    def fail(self, reason: str) -> dict[str, Any]:
        return self._send("FAILED", reason, {})

    def _send(self, status: str, reason: str, data: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            if self.sent is not None:
                logger.info("a response was sent already; not sending another", extra={"status": status})
                return self.sent
            body = self._body(status, reason, data)
            self.sent = body
        logger.info("responding to CloudFormation", extra={"status": status, "reason": body.get("Reason", "")})
        _put(str(self.event["ResponseURL"]), _encoded(body))
        return body

    def _body(self, status: str, reason: str, data: dict[str, str]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "Status": status,
            "Reason": reason or status,
            "PhysicalResourceId": self.physical_resource_id,
            "StackId": self.event.get("StackId", ""),
            "RequestId": self.event.get("RequestId", ""),
            "LogicalResourceId": self.event.get("LogicalResourceId", ""),
            "Data": data,
        }
        return _fitted(body)


_TRUNCATED = " … (truncated; the function's log has the whole message)"


def _encoded(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def _fitted(body: dict[str, Any]) -> dict[str, Any]:
    """The body within MAX_RESPONSE_BYTES, measured in bytes as sent: the Reason keeps its longest
    beginning that fits (where file, line and SQLSTATE are), found by bisection, so a bounded number of
    tries whatever the other fields hold."""
    if len(_encoded(body)) <= MAX_RESPONSE_BYTES:
        return body
    reason = str(body["Reason"])
    shortest, longest = 0, len(reason)
    while shortest < longest:
        middle = (shortest + longest + 1) // 2
        body["Reason"] = reason[:middle] + _TRUNCATED
        if len(_encoded(body)) <= MAX_RESPONSE_BYTES:
            shortest = middle
        else:
            longest = middle - 1
    body["Reason"] = reason[:shortest] + _TRUNCATED
    return body


def _put(url: str, body: bytes) -> None:
    """PUT to the presigned URL: a few tries with growing pauses, then give up (logged, never raised)."""
    for attempt in range(1, _SEND_ATTEMPTS + 1):
        request = urllib.request.Request(url, data=body, method="PUT", headers={"Content-Type": ""})
        try:
            with urllib.request.urlopen(request, timeout=_SEND_TIMEOUT_SECONDS) as response:
                if 200 <= response.status < 300:
                    return
                problem = f"HTTP {response.status}"
        except urllib.error.HTTPError as error:
            problem = f"HTTP {error.code}"
        except (urllib.error.URLError, OSError, ValueError) as error:  # ValueError: a URL urllib cannot use
            problem = type(error).__name__
        logger.warning("sending the response failed", extra={"attempt": attempt, "problem": problem})
        if attempt < _SEND_ATTEMPTS:
            time.sleep(0.5 * 2 ** (attempt - 1))
    logger.error("gave up sending the response to CloudFormation", extra={"attempts": _SEND_ATTEMPTS})


def handle(event: dict[str, Any], time_left: Callable[[], float]) -> dict[str, Any]:
    if not isinstance(event.get("ResponseURL"), str):
        logger.error("a CloudFormation event without a ResponseURL cannot be answered")
        return {"Status": "FAILED", "Reason": "malformed CloudFormation event: no ResponseURL"}
    responder = Responder(event, str(event.get("PhysicalResourceId") or "premigrate-unconfigured"))
    guard = threading.Timer(
        max(time_left() - GUARD_MARGIN_SECONDS, 0.0),
        responder.fail,
        args=(
            "premigrate ran out of time before it finished; migrations applied so far stay applied and the "
            "next deploy continues. Raise the function's timeout or split long migrations",
        ),
    )
    guard.daemon = True
    guard.start()
    try:
        return _handle(event, responder, time_left)
    except Exception as error:
        return _respond(responder, refused(error))
    finally:
        guard.cancel()


def _handle(event: dict[str, Any], responder: Responder, time_left: Callable[[], float]) -> dict[str, Any]:
    missing = [key for key in _REQUIRED if not isinstance(event.get(key), str)]
    if missing:
        return responder.fail(f"malformed CloudFormation event: {', '.join(missing)} missing or not text")
    request = CloudFormationCustomResourceEvent(event)
    if request.request_type == "Delete":
        # Dropping the resource must never drop a schema: there are no down migrations.
        return responder.succeed({}, "premigrate leaves the database as it is on Delete")
    if request.request_type not in ("Create", "Update"):
        return responder.fail(f"unknown RequestType {request.request_type!r}; expected Create, Update or Delete")

    # A stack rollback sends an Update with the older migration set: the schema stays ahead.
    rollback_safe = {"accept_database_ahead": True} if request.request_type == "Update" else {}
    config = function_config(rollback_safe, "the CloudFormation request")
    if request.request_type == "Create":
        # Derived from the database, not from time, so later Updates keep it and never cause a replacement.
        responder.physical_resource_id = database_identity(config)
    request_to_run = Request("migrate", caller="cloudformation", request_id=request.request_id)
    return _respond(responder, run(config, request_to_run, time_left))


def _respond(responder: Responder, result: Result) -> dict[str, Any]:
    if not result.ok or result.report is None:
        return responder.fail(f"premigrate {result.error_kind} error: {result.error}")
    report = result.report
    if result.stopped_for_time:
        return responder.fail(
            f"premigrate applied {len(report.applied)} migration(s), then ran short of time with "
            f"{len(report.pending)} still pending; they stay applied, and the next deploy continues"
        )
    data = {
        "SchemaVersionBefore": report.schema_version_before or "none",
        "SchemaVersionAfter": report.schema_version_after or "none",
        "AppliedCount": str(len(report.applied)),
    }
    return responder.succeed(data, "; ".join(report.notes))

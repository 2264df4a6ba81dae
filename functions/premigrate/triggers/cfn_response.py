"""The answer to a CloudFormation custom resource request: a PUT of a JSON document (at most 4096
bytes) to the event's presigned ResponseURL. Powertools has no sender for it, so this one is ours: one
answer per request, a few tries within the function's time, and the URL (a credential) never logged.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from premigrate.triggers.answering import SingleAnswer, send_within
from premigrate.triggers.invocation import logger

MAX_RESPONSE_BYTES = 4096
_TRUNCATED = " … (truncated; the function's log has the whole message)"


class Responder:
    """Sends the one response a request gets; a second call (the timeout guard racing the run) is ignored."""

    def __init__(self, event: dict[str, Any], physical_resource_id: str, time_left: Callable[[], float]) -> None:
        self.event = event
        self.physical_resource_id = physical_resource_id
        self.time_left = time_left
        self._answer = SingleAnswer()

    @property
    def sent(self) -> dict[str, Any] | None:
        return self._answer.given  # type: ignore[return-value]

    def succeed(self, data: dict[str, str], reason: str = "") -> dict[str, Any]:
        return self._send("SUCCESS", reason, data)

    def fail(self, reason: str) -> dict[str, Any]:
        return self._send("FAILED", reason, {})

    def _send(self, status: str, reason: str, data: dict[str, str]) -> dict[str, Any]:
        body = self._body(status, reason, data)
        if not self._answer.claim(body):
            logger.info("a response was sent already; not sending another", extra={"status": status})
            return self.sent or body
        logger.info("responding to CloudFormation", extra={"status": status, "reason": body["Reason"]})
        payload = json.dumps(body).encode()
        url = str(self.event["ResponseURL"])
        if not send_within(lambda timeout: _put_once(url, payload, timeout), self.time_left, on_failure=_log_try):
            logger.error("gave up sending the response to CloudFormation")
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
        return fitted(body)


def fitted(body: dict[str, Any]) -> dict[str, Any]:
    """The body within MAX_RESPONSE_BYTES, measured in bytes as sent: the Reason keeps its longest
    beginning that fits (where file, line and SQLSTATE are), found by bisection, so a bounded number of
    tries whatever the other fields hold."""

    def size() -> int:
        return len(json.dumps(body).encode())

    if size() <= MAX_RESPONSE_BYTES:
        return body
    reason = str(body["Reason"])
    shortest, longest = 0, len(reason)
    while shortest < longest:
        middle = (shortest + longest + 1) // 2
        body["Reason"] = reason[:middle] + _TRUNCATED
        if size() <= MAX_RESPONSE_BYTES:
            shortest = middle
        else:
            longest = middle - 1
    body["Reason"] = reason[:shortest] + _TRUNCATED
    return body


def _put_once(url: str, body: bytes, timeout: float) -> str | None:
    """One PUT to the presigned URL; None when it was taken, else what went wrong (never the URL)."""
    request = urllib.request.Request(url, data=body, method="PUT", headers={"Content-Type": ""})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return None if 200 <= response.status < 300 else f"HTTP {response.status}"
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code}"
    # http.client's errors (a garbled status line, a connection closed mid-answer) are not OSErrors;
    # ValueError: a URL urllib cannot use.
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
        return type(error).__name__


def _log_try(attempt: int, problem: str) -> None:
    logger.warning("sending the response failed", extra={"attempt": attempt, "problem": problem})

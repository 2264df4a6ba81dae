"""The fleet from CloudFormation: a custom resource starts a rollout, and the state machine answers it.

    FleetMigration:
      Type: Custom::DatabaseFleetMigration
      Properties:
        ServiceToken: <this function's ARN>
        ServiceTimeout: 3600                     # CloudFormation waits at most an hour: longer fleets, the pipeline
        StateMachineArn: <the stack's FleetStateMachineArn output>
        Manifest: s3://<fleet bucket>/manifests/tenants.jsonl?versionId=<version>
        MigrationSetHash: <premigrate fingerprint>
        Concurrency: 8                            # optional, as PerServer, ToleratedFailurePercentage, Phase

Create and Update start an execution named after the request (a request delivered again starts nothing new)
and do not answer: the state machine's last step (``answer``) does, on success and on failure alike. The
request, with its ResponseURL (a credential: it lets anyone answer for the stack), waits in the fleet bucket,
never in the execution's input or history. Delete, and an Update while the stack rolls back, answer at once
and touch no database: a schema has no way back.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

from premigrate.adapters.fleet_store import FleetStore
from premigrate.adapters.stack_status import is_rolling_back, stack_status
from premigrate.engine import ConfigurationError
from premigrate.triggers.cfn_response import Responder
from premigrate.triggers.fleet import as_object
from premigrate.triggers.invocation import logger, refused

REQUESTS = "runs/cloudformation/"
_REQUIRED = ("RequestType", "ResponseURL", "StackId", "RequestId", "LogicalResourceId")
_PROPERTIES = {
    "Concurrency": ("concurrency", int),
    "PerServer": ("per_server", int),
    "ToleratedFailurePercentage": ("tolerated_failure_percentage", float),
    "LockRetrySeconds": ("lock_retry_seconds", int),
}
_KNOWN = ("ServiceToken", "ServiceTimeout", "StateMachineArn", "Manifest", "MigrationSetHash", "Phase", *_PROPERTIES)


def is_fleet(event: dict[str, Any]) -> bool:
    properties = event.get("ResourceProperties")
    return isinstance(properties, dict) and "StateMachineArn" in properties


def handle(event: dict[str, Any], time_left: Callable[[], float]) -> dict[str, Any]:
    if not isinstance(event.get("ResponseURL"), str):
        logger.error("a CloudFormation event without a ResponseURL cannot be answered")
        return {"Status": "FAILED", "Reason": "malformed CloudFormation event: no ResponseURL"}
    responder = Responder(event, _physical_id(event), time_left)
    try:
        missing = [key for key in _REQUIRED if not isinstance(event.get(key), str)]
        if missing:
            return responder.fail(f"malformed CloudFormation event: {', '.join(missing)} missing or not text")
        if event["RequestType"] == "Delete":
            return responder.succeed({}, "premigrate leaves the databases as they are on Delete")
        if event["RequestType"] not in ("Create", "Update"):
            return responder.fail(f"unknown RequestType {event['RequestType']!r}; expected Create, Update or Delete")
        status = stack_status(event["StackId"])
        if event["RequestType"] == "Update" and is_rolling_back(status):
            return responder.succeed({}, f"the stack is rolling back ({status}): premigrate changed no database")
        return _start(event, responder)
    except Exception as error:
        return responder.fail(f"the fleet rollout did not start: {refused(error).error}")


def _start(event: dict[str, Any], responder: Responder) -> dict[str, Any]:
    properties = as_object(event.get("ResourceProperties"))
    rollout = _input(properties)
    bucket = os.environ.get("PREMIGRATE_FLEET_BUCKET") or ""
    if not bucket:
        raise ConfigurationError("PREMIGRATE_FLEET_BUCKET is not set: deploy the stack with EnableFleet=true")
    key = f"{REQUESTS}{event['RequestId']}.json"
    FleetStore(bucket).put_json(key, {"event": event, "physical_resource_id": responder.physical_resource_id})
    rollout["request"] = {"key": key}
    execution = _start_execution(str(properties["StateMachineArn"]), f"cfn-{event['RequestId']}"[:80], rollout)
    logger.info("fleet rollout started; the state machine answers CloudFormation", extra={"execution": execution})
    return {"Status": "STARTED", "Execution": execution}


def _input(properties: dict[str, Any]) -> dict[str, Any]:
    """The execution's input from the resource's properties (CloudFormation sends every value as text)."""
    unknown = [key for key in properties if key not in _KNOWN]
    if unknown:
        raise ConfigurationError(
            f"unknown properties {', '.join(unknown)}; the fleet resource takes {', '.join(_KNOWN)}"
        )
    for required in ("Manifest", "MigrationSetHash"):
        if not isinstance(properties.get(required), str) or not properties[required]:
            raise ConfigurationError(
                f"the fleet resource needs {required}: Manifest is s3://<fleet bucket>/manifests/<key>?versionId=V, "
                "MigrationSetHash the fingerprint of the migration set (premigrate fingerprint)"
            )
    rollout: dict[str, Any] = {"manifest": properties["Manifest"], "migration_set": properties["MigrationSetHash"]}
    for name, (key, kind) in _PROPERTIES.items():
        if name in properties:
            try:
                rollout[key] = kind(properties[name])
            except (TypeError, ValueError):
                raise ConfigurationError(f"{name} must be a number, not {properties[name]!r}") from None
    # A resource migrates ahead of the rollout its stack makes, as the single-database resource does.
    rollout["settings"] = {"phase": properties.get("Phase", "before-rollout")}
    return rollout


def _start_execution(state_machine: str, name: str, rollout: dict[str, Any]) -> str:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client("stepfunctions")
    try:
        started = client.start_execution(stateMachineArn=state_machine, name=name, input=json.dumps(rollout))
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code")
        if code == "ExecutionAlreadyExists":  # the same request again: its execution answers
            return f"{state_machine}:{name} (started already)"
        raise ConfigurationError(f"could not start the fleet state machine {state_machine} ({code})") from None
    except BotoCoreError as error:
        raise ConfigurationError(f"could not start the fleet state machine ({type(error).__name__})") from None
    return str(started["executionArn"])


def answer(event: dict[str, Any], time_left: Callable[[], float]) -> dict[str, Any]:
    """The state machine's last step: the summary, and CloudFormation's answer when a custom resource asked."""
    state = as_object(event.get("state"))
    summary = state.get("summary")
    if not isinstance(summary, dict) or "ok" not in summary:
        failure = as_object(state.get("failure"))
        message = f"the rollout failed before its summary: {failure.get('Error')}: {str(failure.get('Cause'))[:1000]}"
        summary = {"ok": False, "message": message}
    request = as_object(event.get("input")).get("request")
    if request is not None:
        _answer_cloudformation(request, summary, time_left)
    return {"summary": summary}


def _answer_cloudformation(request: object, summary: dict[str, Any], time_left: Callable[[], float]) -> None:
    key = request.get("key") if isinstance(request, dict) else None
    if not isinstance(key, str) or not key.startswith(REQUESTS) or ".." in key:
        logger.error("the rollout's request names no stored CloudFormation request; nothing to answer")
        return
    try:
        stored = FleetStore(os.environ.get("PREMIGRATE_FLEET_BUCKET") or "").get_json(key)
        responder = Responder(stored["event"], str(stored["physical_resource_id"]), time_left)
    except Exception as error:
        logger.error(
            "the CloudFormation request could not be read; the stack waits for its ServiceTimeout",
            extra={"error": refused(error).error},
        )
        return
    counts = as_object(summary.get("counts"))
    data = {"Databases": str(summary.get("databases", 0)), "Summary": str(summary.get("summary", ""))}
    data |= {_camel(status): str(count) for status, count in counts.items()}
    message = str(summary.get("message") or "")
    if summary.get("ok") is True:
        responder.succeed(data, message)
    else:
        responder.fail(message or "the fleet rollout failed")


def _camel(status: str) -> str:
    return "".join(part.capitalize() for part in status.split("-"))


def _physical_id(event: dict[str, Any]) -> str:
    """An Update keeps its resource's id (a new one would be a replacement); Create's is derived from the
    stack and the resource, never from time, so that it is the same whenever the request is delivered."""
    if isinstance(event.get("PhysicalResourceId"), str) and event["PhysicalResourceId"]:
        return str(event["PhysicalResourceId"])
    origin = f"{event.get('StackId')}|{event.get('LogicalResourceId')}"
    return f"premigrate-fleet-{hashlib.sha256(origin.encode()).hexdigest()[:16]}"

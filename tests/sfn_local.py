"""The fleet's state machine, run here: moto 5.2.5's Amazon States Language executor in process (``mock_aws``
with ``execute_state_machine``), the template's definition after its DefinitionSubstitutions, and its Lambda
tasks handed to the real handler in this process. What moto's Distributed Map lacks is in sfn_moto_gaps.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
from moto import mock_aws
from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
from samtranslator.yaml_helper import yaml_parse

from sfn_moto_gaps import PATCHES, REGION

REPO = Path(__file__).resolve().parent.parent
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:123456789012:function:premigrate"
ROLE_ARN = "arn:aws:iam::123456789012:role/premigrate-fleet"


def fleet_definition(bucket: str) -> str:
    """The template's state machine definition, with its DefinitionSubstitutions applied as CloudFormation
    would: the function's ARN and the fleet bucket's name."""
    template = yaml_parse((REPO / "template.yaml").read_text())
    machine = template["Resources"]["FleetStateMachine"]["Properties"]
    substitutions = machine["DefinitionSubstitutions"]
    assert substitutions == {
        "FunctionArn": {"Fn::GetAtt": ["MigrationFunction", "Arn"]},
        "FleetBucket": {"Ref": "FleetBucket"},
    }
    text = (REPO / machine["DefinitionUri"]).read_text()
    for name, value in {"FunctionArn": FUNCTION_ARN, "FleetBucket": bucket}.items():
        text = text.replace("${" + name + "}", value)
    assert "${" not in text, "a placeholder without a substitution"
    assert "ToleratedFailureCount" not in text  # emulated here: percentages only
    return text


class LocalStepFunctions:
    """moto's executor with the fleet's Lambda calls going to ``handler`` (the real one, in this process).

    ``fault(payload)`` may return a Lambda error code to raise for one call, after the handler ran
    ("after:ServiceException": the function ran, its answer was lost) or instead of it ("TooManyRequestsException")."""

    def __init__(self, handler: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.handler = handler
        self.calls: list[dict[str, Any]] = []
        self.fault: Callable[[dict[str, Any]], str | None] = lambda payload: None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def running(self) -> Iterator[LocalStepFunctions]:
        with contextlib.ExitStack() as stack:
            stack.enter_context(mock_aws(config={"stepfunctions": {"execute_state_machine": True}}))
            for target, name, replacement in PATCHES:
                stack.enter_context(mock.patch.object(target, name, replacement))
            stack.enter_context(mock.patch.object(lambda_eval_utils, "_invoke_lambda_function", self._invoke))
            yield self

    def _invoke(self, parameters: dict[str, Any], region: str, state_credentials: Any) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        assert parameters["FunctionName"] == FUNCTION_ARN  # the definition invokes this function, and no other
        payload = json.loads(parameters["Payload"])
        with self._lock:
            self.calls.append(payload)
        fault = self.fault(payload) or ""
        if fault and not fault.startswith("after:"):
            raise ClientError({"Error": {"Code": fault, "Message": "injected"}, "ResponseMetadata": _META}, "Invoke")
        answer = self.handler(payload)
        if fault:
            code = fault.removeprefix("after:")
            raise ClientError({"Error": {"Code": code, "Message": "injected"}, "ResponseMetadata": _META}, "Invoke")
        return {"StatusCode": 200, "Payload": json.loads(json.dumps(answer)), "ExecutedVersion": "$LATEST"}

    def run(self, machine_arn: str, rollout: dict[str, Any], name: str | None = None) -> dict[str, Any]:
        """Starts an execution and waits (at most 5 minutes) for its end: status, output, error, cause."""
        client = boto3.client("stepfunctions", region_name=REGION)
        name = name or f"rollout-{uuid.uuid4().hex[:12]}"
        arn = client.start_execution(stateMachineArn=machine_arn, name=name, input=json.dumps(rollout))["executionArn"]
        return {"arn": arn, **wait_for(arn)}

    @staticmethod
    def create(bucket: str) -> str:
        client = boto3.client("stepfunctions", region_name=REGION)
        created = client.create_state_machine(
            name=f"fleet-{uuid.uuid4().hex[:8]}", definition=fleet_definition(bucket), roleArn=ROLE_ARN, type="STANDARD"
        )
        return str(created["stateMachineArn"])


def wait_for(execution_arn: str, timeout: float = 300) -> dict[str, Any]:
    client = boto3.client("stepfunctions", region_name=REGION)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described = client.describe_execution(executionArn=execution_arn)
        if described["status"] != "RUNNING":
            output = json.loads(described["output"]) if described.get("output") else None
            return {"status": described["status"], "output": output, **_error(described)}
        time.sleep(0.05)
    raise AssertionError(f"{execution_arn} still running after {timeout} s")


def _error(described: dict[str, Any]) -> dict[str, Any]:
    return {"error": described.get("error"), "cause": described.get("cause")}


_META = {"HTTPStatusCode": 500, "RequestId": "injected"}

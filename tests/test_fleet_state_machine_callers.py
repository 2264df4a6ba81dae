"""Who starts a fleet rollout: a CloudFormation custom resource (the function starts the execution; the state
machine answers the stack at the end, on success and on failure), CodePipeline's Step Functions action
(examples/fleet-pipeline.yaml), and a person, one database at a time (a direct invoke with its secret_id)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest

from fleet_rollouts import applied, fleet_fixture, sabotage  # noqa: F401 (the fleet fixture)
from premigrate.adapters.folder import load_folder
from premigrate.local_invoke import invoke
from sfn_local import REGION, wait_for

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


class Inbox:
    """An HTTP server on 127.0.0.1 that takes the PUT CloudFormation's presigned ResponseURL would."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                inbox.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/responses/{uuid.uuid4()}?X-Amz-Signature=secret"


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    box = Inbox()
    yield box
    box.server.shutdown()


def custom_resource(fleet, inbox: Inbox, request_type: str = "Create", **properties: str) -> dict[str, Any]:
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    stack = cloudformation.create_stack(
        StackName=f"app-{uuid.uuid4().hex[:6]}",
        TemplateBody=json.dumps({"Resources": {"B": {"Type": "AWS::S3::Bucket"}}}),
    )
    folder = Path(__import__("os").environ["PREMIGRATE_MIGRATIONS"])
    return {
        "RequestType": request_type,
        "ServiceToken": "arn:aws:lambda:eu-west-1:123456789012:function:premigrate",
        "ResponseURL": inbox.url,
        "StackId": stack["StackId"],
        "RequestId": str(uuid.uuid4()),
        "LogicalResourceId": "FleetMigration",
        "ResourceType": "Custom::DatabaseFleetMigration",
        "ResourceProperties": {
            "ServiceToken": "arn:aws:lambda:eu-west-1:123456789012:function:premigrate",
            "StateMachineArn": fleet.machine,
            "Manifest": fleet.manifest(),
            "MigrationSetHash": load_folder(folder).fingerprint,
            "Concurrency": "4",
            **properties,
        },
    }


def test_a_custom_resource_starts_the_rollout_and_the_state_machine_answers_it(fleet, inbox) -> None:
    names = fleet.add(1, wave=0) + fleet.add(5, wave=1)
    started = invoke(custom_resource(fleet, inbox))
    assert started["Status"] == "STARTED" and inbox.bodies == []  # the function does not answer: the machine will
    result = wait_for(started["Execution"])
    assert result["status"] == "SUCCEEDED", result
    (answer,) = inbox.bodies
    assert answer["Status"] == "SUCCESS"
    assert (answer["Data"]["Databases"], answer["Data"]["Migrated"]) == ("6", "6")
    assert answer["Reason"] == "every database is migrated: 6 migrated"
    assert answer["PhysicalResourceId"].startswith("premigrate-fleet-")
    assert all(applied(fleet.urls[name]) == ["1", "2"] for name in names)
    # The ResponseURL (a credential) waits in the bucket: never in the execution's input or history.
    client = boto3.client("stepfunctions", region_name=REGION)
    history = client.get_execution_history(executionArn=started["Execution"], maxResults=1000)
    described = client.describe_execution(executionArn=started["Execution"])
    assert "X-Amz-Signature" not in json.dumps(history, default=str) + described["input"]
    assert json.loads(described["input"])["settings"] == {"phase": "before-rollout"}


def test_a_failed_rollout_answers_the_custom_resource_with_its_reason(fleet, inbox) -> None:
    canary = fleet.add(1, wave=0)
    fleet.add(3, wave=1)
    sabotage(fleet.urls[canary[0]])
    started = invoke(custom_resource(fleet, inbox))
    assert wait_for(started["Execution"])["status"] == "FAILED"
    (answer,) = inbox.bodies
    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith("wave 0: 1 of 1 failed, more than the 0% tolerated")


def test_the_same_request_again_starts_nothing_new(fleet, inbox) -> None:
    fleet.add(2, wave=1)
    event = custom_resource(fleet, inbox)
    first = invoke(event)
    wait_for(first["Execution"])
    again = invoke(event)  # a delivery of the same request: the execution named after it exists
    assert again["Status"] == "STARTED" and "started already" in again["Execution"]
    assert len(inbox.bodies) == 1


def test_delete_a_rollback_and_bad_properties_are_answered_at_once(fleet, inbox) -> None:
    from moto.cloudformation.models import cloudformation_backends

    (name,) = fleet.add(1, wave=1)
    assert invoke(custom_resource(fleet, inbox, "Delete"))["Status"] == "SUCCESS"
    rollback = custom_resource(fleet, inbox, "Update")
    stacks = cloudformation_backends["123456789012"][REGION].stacks
    next(
        stack for stack in stacks.values() if stack.stack_id == rollback["StackId"]
    ).status = "UPDATE_ROLLBACK_IN_PROGRESS"
    assert invoke(rollback)["Status"] == "SUCCESS"
    assert invoke(custom_resource(fleet, inbox, PerServer="two"))["Status"] == "FAILED"
    assert invoke(custom_resource(fleet, inbox, Shard="1"))["Status"] == "FAILED"
    client = boto3.client("stepfunctions", region_name=REGION)
    assert client.list_executions(stateMachineArn=fleet.machine)["executions"] == []  # none started
    assert applied(fleet.urls[name]) == []
    assert [body["Status"] for body in inbox.bodies] == ["SUCCESS", "SUCCESS", "FAILED", "FAILED"]
    assert "the stack is rolling back (UPDATE_ROLLBACK_IN_PROGRESS)" in inbox.bodies[1]["Reason"]
    assert "PerServer must be a number" in inbox.bodies[2]["Reason"]
    assert "unknown properties Shard" in inbox.bodies[3]["Reason"]


def test_one_database_by_its_secret_through_a_direct_invoke(fleet) -> None:
    (name,) = fleet.add(1, wave=1)
    secret = fleet.targets[name]["secret_id"]
    result = invoke({"action": "migrate", "secret_id": secret, "request_id": "by-hand-1"})
    assert result["ok"] and result["report"]["schema_version_after"] == "2"
    assert applied(fleet.urls[name]) == ["1", "2"]
    refused = invoke({"action": "migrate", "database_url": fleet.urls[name]})
    assert not refused["ok"] and "never takes a database URL: give the database's secret_id" in refused["error"]
    assert invoke({"action": "plan", "secret_id": ""})["error"].startswith("'secret_id' must be a secret's name")


def test_the_pipeline_example_runs_the_fleet_before_it_deploys() -> None:
    from samtranslator.yaml_helper import yaml_parse

    example = yaml_parse((REPO / "examples" / "fleet-pipeline.yaml").read_text())
    stages = example["Resources"]["Pipeline"]["Properties"]["Stages"]
    names = [stage["Name"] for stage in stages]
    assert names.index("FleetInput") < names.index("MigrateFleet") < names.index("Deploy")
    (action,) = stages[names.index("MigrateFleet")]["Actions"]
    assert action["ActionTypeId"] == {"Category": "Invoke", "Owner": "AWS", "Provider": "StepFunctions", "Version": "1"}
    configuration = action["Configuration"]
    imported = {"Fn::ImportValue": {"Fn::Sub": "${PremigrateStack}-FleetStateMachineArn"}}
    assert configuration["StateMachineArn"] == imported
    assert (configuration["InputType"], configuration["Input"]) == ("FilePath", "fleet-rollout.json")
    # The input the FleetInput stage writes pins the manifest's version and names the migration set.
    buildspec = example["Resources"]["FleetInputProject"]["Properties"]["Source"]["BuildSpec"]
    assert "?versionId=%s" in buildspec and '"migration_set": "%s"' in buildspec
    assert "--query VersionId" in buildspec and "premigrate fingerprint --migrations db/migrations" in buildspec

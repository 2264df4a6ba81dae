"""Fakes of the AWS side for the Lambda tests, used as a pytest plugin (conftest's ``pytest_plugins``):
moto's real local HTTP server (S3 for the CloudFormation ResponseURL and artifacts, Secrets Manager for
the database secret, CloudFormation for the stack's status), and a CodePipeline client whose calls are
checked against the service model (lengths, patterns, enums: botocore's Stubber checks only types) and
answered here: moto does not implement the job APIs."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from botocore.awsrequest import AWSResponse
from moto.server import ThreadedMotoServer

from premigrate.adapters.connection import params_from_url
from premigrate.adapters.folder import load_folder
from premigrate.triggers import codepipeline

USERS = "CREATE TABLE users (id int PRIMARY KEY);\n"
BUCKET = "premigrate-test"
STACK = "app"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name, value in {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    s3 = boto3.client("s3")
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):  # the server lives for the session
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    cloudformation = boto3.client("cloudformation")
    with contextlib.suppress(cloudformation.exceptions.AlreadyExistsException):
        cloudformation.create_stack(
            StackName=STACK, TemplateBody=json.dumps({"Resources": {"B": {"Type": "AWS::S3::Bucket"}}})
        )
    set_stack_status("UPDATE_IN_PROGRESS")
    parameters.clear_caches()
    yield moto_endpoint
    parameters.clear_caches()


def set_stack_status(status: str) -> None:
    """What DescribeStacks says of the stack the custom resource events come from (moto's own state:
    its server runs in this process)."""
    from moto.cloudformation.models import cloudformation_backends

    backend = cloudformation_backends["123456789012"]["eu-west-1"]
    stack = next(stack for stack in backend.stacks.values() if stack.name == STACK)
    stack.status = status


@pytest.fixture
def lambda_logs() -> Iterator[io.StringIO]:
    """Everything the function logs during the test, formatted as in Lambda (JSON lines)."""
    from premigrate.triggers.invocation import logger

    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logger.registered_formatter)
    logger._logger.addHandler(handler)
    yield buffer
    logger._logger.removeHandler(handler)


class ResponseInbox:
    """A presigned S3 PUT URL on moto's HTTP server, as CloudFormation hands one out, and what arrived."""

    def __init__(self) -> None:
        self.key = f"responses/{uuid.uuid4()}"
        s3 = boto3.client("s3")
        self.url = s3.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": self.key}, ExpiresIn=600)
        self._get_url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": self.key})

    def received(self) -> dict[str, Any]:
        with urllib.request.urlopen(self._get_url, timeout=10) as response:
            return json.loads(response.read())


def cfn_event(
    request_type: str,
    inbox: ResponseInbox,
    *,
    request_id: str | None = None,
    physical_id: str | None = None,
    migration_set: str | None = None,
    properties: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An event from the stack STACK; it asks for ``migration_set``, by default the set the function holds."""
    stack_id = boto3.client("cloudformation").describe_stacks(StackName=STACK)["Stacks"][0]["StackId"]
    if migration_set is None:
        migration_set = load_folder(Path(os.environ.get("PREMIGRATE_MIGRATIONS", "migrations"))).fingerprint
    event = {
        "RequestType": request_type,
        "ServiceToken": "arn:aws:lambda:eu-west-1:123456789012:function:premigrate",
        "ResponseURL": inbox.url,
        "StackId": stack_id,
        "RequestId": request_id or str(uuid.uuid4()),
        "LogicalResourceId": "DatabaseMigration",
        "ResourceType": "Custom::DatabaseMigration",
        "ResourceProperties": {"ServiceToken": "arn:aws:lambda:eu-west-1:123456789012:function:premigrate"}
        | (properties or {}),
    }
    if migration_set:
        event["ResourceProperties"]["MigrationSetHash"] = migration_set
    if physical_id:
        event["PhysicalResourceId"] = physical_id
    return event


def history(db) -> list[str]:
    return [row[0] for row in db.run("SELECT script FROM premigrate_schema_history ORDER BY installed_rank")]


@pytest.fixture
def secret_arn(function_env, aws, monkeypatch, database_url, password_user) -> str:
    """The function reads its database from a Secrets Manager secret (password: first-password)."""
    secret = boto3.client("secretsmanager").create_secret(
        Name=f"db-{password_user}", SecretString=secret_for(database_url, password_user, "first-password")
    )
    monkeypatch.delenv("PREMIGRATE_DATABASE_URL")
    monkeypatch.setenv("PREMIGRATE_SECRET_ID", secret["ARN"])
    monkeypatch.setenv("PREMIGRATE_SSLMODE", "disable")
    return str(secret["ARN"])


def secret_for(database_url: str, user: str, password: str) -> str:
    params = params_from_url(database_url)
    return json.dumps(
        {
            "engine": "postgres",
            "username": user,
            "password": password,
            "host": params.socket_dir or params.host,
            "port": params.port,
            "dbname": params.database,
        }
    )


class StubbedCodePipeline:
    """A real botocore client, so every call is checked against the API model (types by botocore, limits
    by ``model_problems``), whose requests are answered here instead of being sent."""

    def __init__(self) -> None:
        self.client = boto3.client("codepipeline")
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.client.meta.events.register("provide-client-params.codepipeline.*", self._record)
        self.client.meta.events.register("before-call.codepipeline.*", self._answer)

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        problems = model_problems(model.input_shape, params, model.name)
        assert not problems, problems
        self.calls.append((model.name, dict(params)))

    @staticmethod
    def _answer(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        return AWSResponse("https://codepipeline.invalid", 200, {}, None), {}

    def last(self) -> tuple[str, dict[str, Any]]:
        return self.calls[-1]


@pytest.fixture
def pipeline(monkeypatch) -> StubbedCodePipeline:
    stub = StubbedCodePipeline()
    monkeypatch.setattr(codepipeline, "codepipeline_client", lambda: stub.client)
    return stub


def model_problems(shape: Any, value: Any, path: str) -> list[str]:
    """What botocore does not check: lengths, patterns, enums and numeric ranges of the service model."""
    limits = shape.metadata
    problems = []
    if shape.type_name == "structure":
        for name, member in value.items():
            problems += model_problems(shape.members[name], member, f"{path}.{name}")
    elif shape.type_name == "map":
        for key, member in value.items():
            problems += model_problems(shape.key, key, f"{path} key {key!r}")
            problems += model_problems(shape.value, member, f"{path}[{key!r}]")
    elif shape.type_name == "list":
        for index, member in enumerate(value):
            problems += model_problems(shape.member, member, f"{path}[{index}]")
    size = len(value) if isinstance(value, str | list | dict) else value
    if "min" in limits and size < limits["min"]:
        problems.append(f"{path}: {size} is below the minimum {limits['min']}")
    if "max" in limits and size > limits["max"]:
        problems.append(f"{path}: {size} is above the maximum {limits['max']}")
    if "pattern" in limits and not re.fullmatch(limits["pattern"], value, re.DOTALL):
        problems.append(f"{path}: {value!r} does not match {limits['pattern']}")
    if "enum" in shape.metadata and value not in shape.metadata["enum"]:
        problems.append(f"{path}: {value!r} is none of {shape.metadata['enum']}")
    return problems


def job_id(name: str) -> str:
    """A job id as CodePipeline makes them (a UUID), one per name."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def job_event(
    name: str, user_parameters: str | None = None, artifact_key: str | None = None, continuation: str | None = None
) -> dict[str, Any]:
    configuration: dict[str, Any] = {"FunctionName": "premigrate"}
    if user_parameters is not None:
        configuration["UserParameters"] = user_parameters
    data: dict[str, Any] = {
        "actionConfiguration": {"configuration": configuration},
        "inputArtifacts": []
        if artifact_key is None
        else [
            {
                "name": "BuildOutput",
                "revision": None,
                "location": {"type": "S3", "s3Location": {"bucketName": BUCKET, "objectKey": artifact_key}},
            }
        ],
        "outputArtifacts": [],
        "artifactCredentials": {
            "accessKeyId": "ASIAARTIFACTKEY",
            "secretAccessKey": "artifact-secret-key",
            "sessionToken": "artifact-session-token",
        },
    }
    if continuation:
        data["continuationToken"] = continuation
    return {"CodePipeline.job": {"id": job_id(name), "accountId": "123456789012", "data": data}}


def upload_zip(key: str, files: dict[str, str]) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    boto3.client("s3").put_object(Bucket=BUCKET, Key=key, Body=buffer.getvalue())

"""The Lambda function for its three callers, against real PostgreSQL and moto's real local HTTP server
(S3 for the CloudFormation ResponseURL and artifacts, Secrets Manager for the database secret).
CodePipeline's job-result calls are answered by a stubbed client: moto does not implement them."""

from __future__ import annotations

import contextlib
import io
import json
import logging
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
from premigrate.adapters.postgres import connect
from premigrate.local_invoke import invoke
from premigrate.triggers import codepipeline

USERS = "CREATE TABLE users (id int PRIMARY KEY);\n"
BUCKET = "premigrate-test"


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
    parameters.clear_caches()
    yield moto_endpoint
    parameters.clear_caches()


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


@pytest.fixture
def function_env(function_env: Path, aws) -> Path:
    """conftest's function_env, with AWS on moto's local server."""
    return function_env


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
    request_type: str, inbox: ResponseInbox, *, request_id: str | None = None, physical_id: str | None = None
) -> dict[str, Any]:
    event = {
        "RequestType": request_type,
        "ServiceToken": "arn:aws:lambda:eu-west-1:123456789012:function:premigrate",
        "ResponseURL": inbox.url,
        "StackId": "arn:aws:cloudformation:eu-west-1:123456789012:stack/app/0a1b",
        "RequestId": request_id or str(uuid.uuid4()),
        "LogicalResourceId": "DatabaseMigration",
        "ResourceType": "Custom::DatabaseMigration",
        "ResourceProperties": {"MigrationSetHash": "abc"},
    }
    if physical_id:
        event["PhysicalResourceId"] = physical_id
    return event


def history(db) -> list[str]:
    return [row[0] for row in db.run("SELECT script FROM premigrate_schema_history ORDER BY installed_rank")]


# ---- CloudFormation -------------------------------------------------------------------------------


def test_create_update_rollback_and_delete(function_env: Path, write_migrations, db) -> None:
    create = ResponseInbox()
    invoke(cfn_event("Create", create))
    created = create.received()
    assert created["Status"] == "SUCCESS"
    assert created["Data"] == {"SchemaVersionBefore": "none", "SchemaVersionAfter": "1", "AppliedCount": "1"}
    physical_id = created["PhysicalResourceId"]
    assert physical_id.startswith("premigrate-")

    again = ResponseInbox()  # a second stack on the same database gets the same id: no time in it
    invoke(cfn_event("Create", again))
    assert again.received()["PhysicalResourceId"] == physical_id

    write_migrations({"V2__orders.sql": "CREATE TABLE orders ();"})
    update = ResponseInbox()
    invoke(cfn_event("Update", update, physical_id=physical_id))
    updated = update.received()
    assert (updated["Status"], updated["PhysicalResourceId"]) == ("SUCCESS", physical_id)
    assert updated["Data"] == {"SchemaVersionBefore": "1", "SchemaVersionAfter": "2", "AppliedCount": "1"}

    (function_env / "V2__orders.sql").unlink()  # the rollback's Update brings the older set
    rollback = ResponseInbox()
    invoke(cfn_event("Update", rollback, physical_id=physical_id))
    rolled_back = rollback.received()
    assert rolled_back["Status"] == "SUCCESS"
    assert rolled_back["Data"]["SchemaVersionAfter"] == "2"
    assert "ahead of this migration set" in rolled_back["Reason"]
    assert history(db) == ["V1__users.sql", "V2__orders.sql"]


def test_delete_never_touches_the_database(monkeypatch, aws) -> None:
    monkeypatch.setenv("PREMIGRATE_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none?sslmode=disable")
    inbox = ResponseInbox()
    invoke(cfn_event("Delete", inbox, physical_id="premigrate-0123"))
    assert inbox.received() == {
        "Status": "SUCCESS",
        "Reason": "premigrate leaves the database as it is on Delete",
        "PhysicalResourceId": "premigrate-0123",
        "StackId": "arn:aws:cloudformation:eu-west-1:123456789012:stack/app/0a1b",
        "RequestId": inbox.received()["RequestId"],
        "LogicalResourceId": "DatabaseMigration",
        "Data": {},
    }


def test_failed_migration_names_file_line_and_error(function_env, write_migrations, db) -> None:
    write_migrations({"V2__bad.sql": "CREATE TABLE a ();\nCREATE TABLE users ();\n"})
    inbox = ResponseInbox()
    invoke(cfn_event("Create", inbox))
    response = inbox.received()
    assert response["Status"] == "FAILED"
    assert 'V2__bad.sql:2:1: ERROR 42P07: relation "users" already exists' in response["Reason"]
    assert history(db) == ["V1__users.sql"]


def test_reason_is_cut_to_fit_the_4096_byte_limit(function_env, write_migrations) -> None:
    write_migrations({"V2__long.sql": f"DO $$ BEGIN RAISE EXCEPTION '{'ü' * 3000}'; END $$;"})
    inbox = ResponseInbox()
    invoke(cfn_event("Create", inbox))
    response = inbox.received()
    assert response["Status"] == "FAILED"
    assert len(json.dumps(response).encode()) <= 4096
    assert response["Reason"].endswith("(truncated; the function's log has the whole message)")


@pytest.mark.reliability
def test_timeout_guard_answers_before_the_function_is_killed(
    function_env, monkeypatch, database_url, reliability
) -> None:
    from premigrate.engine.lock import MigrationLock

    monkeypatch.setenv("PREMIGRATE_TIME_MARGIN", "0")
    monkeypatch.setenv("PREMIGRATE_LOCK_WAIT", "4")
    holder = connect(params_from_url(database_url))  # a run that hangs: the lock is never free
    holder.run("SELECT pg_advisory_lock(:a, :b)", a=0x5052454D, b=MigrationLock("public.premigrate_schema_history").key)
    try:
        inbox = ResponseInbox()
        result = invoke(cfn_event("Create", inbox), remaining_seconds=11.0)
    finally:
        holder.close()
    assert result["Status"] == "FAILED"
    assert "premigrate ran out of time before it finished" in inbox.received()["Reason"]
    reliability(
        "CloudFormation: the run hangs (the lock never frees) until 10 s before the Lambda timeout",
        1,
        "FAILED is sent by the guard before the function would be killed; one answer only",
        "FAILED received; the run's own later answer was not sent",
    )


@pytest.mark.reliability
def test_engine_stops_between_migrations_and_cloudformation_hears_failed(
    function_env, write_migrations, monkeypatch, db, reliability
):
    write_migrations({"V2__slow.sql": "SELECT pg_sleep(1.5);", "V3__later.sql": "CREATE TABLE later ();"})
    monkeypatch.setenv("PREMIGRATE_TIME_MARGIN", "11")
    inbox = ResponseInbox()
    invoke(cfn_event("Create", inbox), remaining_seconds=12.0)  # V3 would start with under 11 s left
    response = inbox.received()
    assert response["Status"] == "FAILED"
    assert "ran short of time with 1 still pending; they stay applied" in response["Reason"]
    assert history(db) == ["V1__users.sql", "V2__slow.sql"]
    next_deploy = ResponseInbox()
    invoke(cfn_event("Update", next_deploy, physical_id="premigrate-x"))
    assert next_deploy.received()["Status"] == "SUCCESS"
    assert history(db) == ["V1__users.sql", "V2__slow.sql", "V3__later.sql"]
    reliability(
        "CloudFormation: the Lambda is about to time out mid-set",
        2,
        "FAILED sent; applied migrations stay applied; the next invocation continues",
        "as expected",
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda e: e.pop("StackId"), "malformed CloudFormation event: StackId missing or not text"),
        (lambda e: e.update(RequestType="Upsert"), "unknown RequestType 'Upsert'"),
        (lambda e: e.update(RequestId=42), "RequestId missing or not text"),
    ],
)
def test_malformed_cloudformation_event_still_gets_an_answer(function_env, change, reason) -> None:
    inbox = ResponseInbox()
    event = cfn_event("Create", inbox)
    change(event)
    invoke(event)
    response = inbox.received()
    assert response["Status"] == "FAILED"
    assert reason in response["Reason"]


def test_missing_secret_still_gets_an_answer(monkeypatch, aws) -> None:
    monkeypatch.delenv("PREMIGRATE_DATABASE_URL", raising=False)
    monkeypatch.setenv("PREMIGRATE_SECRET_ID", "prod/no-such-secret")
    inbox = ResponseInbox()
    invoke(cfn_event("Create", inbox))
    response = inbox.received()
    assert response["Status"] == "FAILED"
    assert "could not read secret prod/no-such-secret" in response["Reason"]


def test_duplicate_delivery_returns_the_earlier_outcome(function_env, write_migrations, db) -> None:
    first = ResponseInbox()
    event = cfn_event("Create", first, request_id="same-request")
    invoke(event)
    write_migrations({"V2__after.sql": "CREATE TABLE after ();"})  # would be applied by a second real run
    second = ResponseInbox()
    invoke({**event, "ResponseURL": second.url})
    assert second.received()["Data"] == first.received()["Data"]
    assert history(db) == ["V1__users.sql"]
    rows = db.run("SELECT caller, request_id, outcome, applied_versions, error FROM premigrate_run_ledger")
    assert rows == [["cloudformation", "same-request", "succeeded", ["1"], None]]


# ---- Secrets Manager ----------------------------------------------------------------------------


@pytest.fixture
def secret_arn(function_env, monkeypatch, database_url, password_user) -> str:
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


@pytest.mark.reliability
def test_rotated_secret_is_fetched_again_then_pending_is_tried(
    secret_arn, database_url, password_user, server, capfd, lambda_logs, reliability
) -> None:
    secrets = boto3.client("secretsmanager")
    assert invoke({"action": "status"})["ok"]  # the secret is now cached

    # Rotation finished: the database and AWSCURRENT have the second password, the cache the first.
    server.admin(f"ALTER ROLE {password_user} PASSWORD 'second-password'")
    secrets.put_secret_value(
        SecretId=secret_arn, SecretString=secret_for(database_url, password_user, "second-password")
    )
    assert invoke({"action": "status"})["ok"]

    # Rotation half-way: the database already has the pending password, AWSCURRENT not yet.
    server.admin(f"ALTER ROLE {password_user} PASSWORD 'third-password'")
    secrets.put_secret_value(
        SecretId=secret_arn,
        SecretString=secret_for(database_url, password_user, "third-password"),
        VersionStages=["AWSPENDING"],
    )
    result = invoke({"action": "migrate"})
    assert result["ok"], result
    assert result["report"]["schema_version_after"] == "1"
    output = capfd.readouterr()
    logs = lambda_logs.getvalue()
    for password in ("first-password", "second-password", "third-password"):
        assert password not in output.out + output.err + logs
    assert logs.count("the database refused the secret's credentials; reading the secret again") == 3
    assert '"next_stage":"AWSPENDING"' in logs
    reliability(
        "secret rotation: cached, finished and half-way rotations",
        3,
        "auth failure -> fetch again -> AWSPENDING; every run connects; no password logged",
        "3 runs connected after 3 refusals",
    )


# ---- CodePipeline -------------------------------------------------------------------------------


class StubbedCodePipeline:
    """A real botocore client, so every call is checked against the API model, whose requests are
    answered here instead of being sent."""

    def __init__(self) -> None:
        self.client = boto3.client("codepipeline")
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.client.meta.events.register("provide-client-params.codepipeline.*", self._record)
        self.client.meta.events.register("before-call.codepipeline.*", self._answer)

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
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


def job_event(
    job_id: str, user_parameters: str | None = None, artifact_key: str | None = None, continuation: str | None = None
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
    return {"CodePipeline.job": {"id": job_id, "accountId": "123456789012", "data": data}}


def upload_zip(key: str, files: dict[str, str]) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    boto3.client("s3").put_object(Bucket=BUCKET, Key=key, Body=buffer.getvalue())


def test_job_success_reports_output_variables(function_env, pipeline) -> None:
    invoke(job_event("job-1"))
    assert pipeline.last() == (
        "PutJobSuccessResult",
        {
            "jobId": "job-1",
            "outputVariables": {"SchemaVersionBefore": "none", "SchemaVersionAfter": "1", "AppliedCount": "1"},
        },
    )


def test_dry_run_from_user_parameters_applies_nothing(function_env, pipeline, db) -> None:
    result = invoke(job_event("job-2", json.dumps({"dry_run": True, "lock_wait_seconds": 30})))
    assert [p["script"] for p in result["report"]["pending"]] == ["V1__users.sql"]
    assert pipeline.last()[0] == "PutJobSuccessResult"
    assert db.run("SELECT to_regclass('users')") == [[None]]


@pytest.mark.parametrize(
    ("user_parameters", "message"),
    [
        ("{not json", "UserParameters is not JSON"),
        ('["dry_run"]', "UserParameters must be a JSON object"),
        ('{"sql": "DROP TABLE users"}', "UserParameters has an unknown key 'sql'"),
        ('{"dry_run": "yes"}', "UserParameters 'dry_run' has the wrong type (str)"),
    ],
)
def test_bad_user_parameters_fail_the_job_with_a_clear_message(function_env, pipeline, user_parameters, message):
    invoke(job_event("job-3", user_parameters))
    operation, params = pipeline.last()
    assert operation == "PutJobFailureResult"
    assert message in params["failureDetails"]["message"]


def test_migrations_come_from_the_input_artifact(function_env, pipeline, db) -> None:
    upload_zip(
        "build/app.zip",
        {
            "app/server.js": "console.log(1)",
            "db/V1__users.sql": USERS,
            "db/V2__from_artifact.sql": "CREATE TABLE from_artifact ();",
        },
    )
    invoke(job_event("job-4", json.dumps({"migrations_path": "db"}), artifact_key="build/app.zip"))
    assert pipeline.last()[1]["outputVariables"]["SchemaVersionAfter"] == "2"
    assert history(db) == ["V1__users.sql", "V2__from_artifact.sql"]


def test_artifact_with_escaping_paths_is_refused_before_reading(function_env, pipeline, db, tmp_path) -> None:
    upload_zip(
        "build/evil.zip",
        {"migrations/V1__users.sql": USERS, "../../escape.sql": "SELECT 1", "/etc/cron.d/evil.sql": "SELECT 1"},
    )
    invoke(job_event("job-5", artifact_key="build/evil.zip"))
    operation, params = pipeline.last()
    assert operation == "PutJobFailureResult"
    message = params["failureDetails"]["message"]
    assert "the input artifact was refused, nothing was read from it" in message
    assert "../../escape.sql: path leaves the artifact (..)" in message
    assert "/etc/cron.d/evil.sql: absolute path" in message
    assert db.run("SELECT to_regclass('premigrate_schema_history')") == [[None]]


def test_continuation_across_two_invocations(function_env, write_migrations, pipeline, db) -> None:
    write_migrations({"V2__slow.sql": "SELECT pg_sleep(1.6);", "V3__later.sql": "CREATE TABLE later ();"})
    invoke(job_event("job-6"), remaining_seconds=2.5)  # time margin 1 s: V3 would start too late
    operation, params = pipeline.last()
    assert (operation, params) == (
        "PutJobSuccessResult",
        {
            "jobId": "job-6",
            "continuationToken": '{"step": 1, "before": null, "applied": 2}',
            "executionDetails": {
                "summary": "applied 2 migration(s) so far, 1 to go; continuing",
                "percentComplete": 67,
            },
        },
    )
    assert history(db) == ["V1__users.sql", "V2__slow.sql"]

    whole_job = {"SchemaVersionBefore": "none", "SchemaVersionAfter": "3", "AppliedCount": "3"}
    invoke(job_event("job-6", continuation=params["continuationToken"]))
    assert pipeline.last()[1]["outputVariables"] == whole_job  # the whole job, not its last invocation
    assert history(db) == ["V1__users.sql", "V2__slow.sql", "V3__later.sql"]

    invoke(job_event("job-6", continuation=params["continuationToken"]))  # CodePipeline's own retry
    assert pipeline.last()[1]["outputVariables"] == whole_job  # the earlier outcome, replayed
    assert len(history(db)) == 3


def test_a_continuation_that_cannot_progress_fails_the_job(function_env, pipeline, db) -> None:
    invoke(job_event("job-short"), remaining_seconds=0.5)  # less than the 1 s time margin from the start
    operation, params = pipeline.last()
    assert operation == "PutJobFailureResult"
    assert params["failureDetails"]["message"] == (
        "premigrate ran short of the function's time before it could apply a single migration (1 pending): "
        "raise the function's timeout"
    )
    assert db.run("SELECT to_regclass('users')") == [[None]]


@pytest.mark.parametrize("token", ['{"step": 0}', '{"step": 1, "applied": -1}', '["step"]', "not json"])
def test_a_continuation_token_premigrate_did_not_make_is_refused(function_env, pipeline, token) -> None:
    invoke(job_event("job-token", continuation=token))
    operation, params = pipeline.last()
    assert operation == "PutJobFailureResult"
    assert "the job's continuation token is not one premigrate made" in params["failureDetails"]["message"]


# ---- Direct invoke ------------------------------------------------------------------------------


def test_direct_actions_return_the_report(function_env, db) -> None:
    plan = invoke({"action": "plan"})
    assert plan["ok"] and [p["script"] for p in plan["report"]["pending"]] == ["V1__users.sql"]
    migrate = invoke({"action": "migrate", "request_id": "manual-1"})
    assert migrate["report"]["schema_version_after"] == "1"
    status = invoke({"action": "status"})
    assert [s["state"] for s in status["report"]["states"]] == ["applied"]
    assert db.run("SELECT caller, outcome FROM premigrate_run_ledger WHERE request_id = 'manual-1'") == [
        ["direct", "succeeded"]
    ]


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"action": "drop"}, "unknown action 'drop'"),
        ({}, "unknown action None"),
        ({"action": "migrate", "sql": "DROP TABLE users"}, "unknown key 'sql'"),
        ({"action": "migrate", "target": 3}, "'target': expected text, not int"),
        (["action", "plan"], "the event must be a JSON object"),
    ],
)
def test_malformed_direct_events_get_a_clear_error(function_env, event, message, db) -> None:
    result = invoke(event)
    assert result["ok"] is False
    assert message in result["error"]
    assert db.run("SELECT to_regclass('premigrate_schema_history')") == [[None]]


@pytest.mark.reliability
def test_nothing_secret_reaches_logs_or_answers(secret_arn, pipeline, capfd, lambda_logs, reliability) -> None:
    upload_zip("build/ok.zip", {"migrations/V1__users.sql": USERS, "migrations/V2__bad.sql": "SELEC 1;"})
    inbox = ResponseInbox()
    answers = [
        invoke(cfn_event("Create", inbox)),
        invoke(job_event("job-7", artifact_key="build/ok.zip")),
        invoke({"action": "status"}),
    ]
    output = capfd.readouterr()
    logs = lambda_logs.getvalue()
    assert '"message":"responding to CloudFormation"' in logs  # the logs were captured
    everything = (
        output.out + output.err + logs + json.dumps(answers) + json.dumps(inbox.received()) + json.dumps(pipeline.calls)
    )
    assert "first-password" not in everything
    assert "artifact-secret-key" not in everything and "artifact-session-token" not in everything
    assert inbox.url not in everything and "X-Amz-Signature" not in everything
    assert "V2__bad.sql:1:1: ERROR 42601" in json.dumps(pipeline.calls)  # the failure itself is reported
    reliability(
        "a known password, artifact credentials and ResponseURL through all three callers",
        3,
        "none appears in logs, errors, CloudFormation Reason/Data or CodePipeline messages",
        f"{len(everything)} characters of output searched, nothing found",
    )


# ---- Connection and delivery edges --------------------------------------------------------------


def test_unreachable_database_is_retried_a_bounded_number_of_times(monkeypatch, aws, lambda_logs, clock) -> None:
    from premigrate.adapters.postgres import UnreachableError
    from premigrate.engine.clock import TimeBudget
    from premigrate.service.connecting import open_database
    from premigrate.triggers.invocation import LambdaLog, function_config

    monkeypatch.setenv("PREMIGRATE_DATABASE_URL", "postgresql://app:pw@127.0.0.1:1/app?sslmode=disable")
    with pytest.raises(UnreachableError, match=re.escape("could not connect to app@127.0.0.1:1/app")):
        open_database(function_config(), TimeBudget(lambda: 600.0, 30.0), clock, LambdaLog())
    assert lambda_logs.getvalue().count("could not connect; trying again") == 2
    assert 0.75 + 1.5 <= clock.slept <= 1.25 + 2.5  # pauses of about 1 s and 2 s, jittered


def test_iam_auth_token_replaces_the_password(aws) -> None:
    from premigrate.adapters.iam_auth import iam_auth_token

    params = params_from_url("postgresql://app@db.example.internal:5432/app")
    token = iam_auth_token(params)
    assert token.startswith("db.example.internal:5432/?Action=connect&DBUser=app")
    assert "X-Amz-Signature=" in token


def test_response_sending_gives_up_after_a_few_tries(function_env, lambda_logs) -> None:
    event = cfn_event("Delete", ResponseInbox(), physical_id="premigrate-0123")
    event["ResponseURL"] = "http://127.0.0.1:1/nobody-listens"
    result = invoke(event)
    assert result["Status"] == "SUCCESS"
    logs = lambda_logs.getvalue()
    assert logs.count("sending the response failed") == 4
    assert "gave up sending the response to CloudFormation" in logs
    assert "nobody-listens" not in logs


@pytest.mark.parametrize(("value", "seconds"), [("300", 300.0), ("300s", 300.0), ("2min", 120.0), ("500ms", 0.5)])
def test_function_reads_durations_as_the_cli_does(monkeypatch, value, seconds) -> None:
    from premigrate.triggers.invocation import function_config

    monkeypatch.setenv("PREMIGRATE_DATABASE_URL", "postgresql://app@db.example.com/app")
    monkeypatch.setenv("PREMIGRATE_LOCK_WAIT", value)
    assert function_config().lock_wait_seconds == seconds


def test_function_refuses_a_bad_duration_clearly(monkeypatch) -> None:
    from premigrate.engine import ConfigurationError
    from premigrate.triggers.invocation import function_config

    monkeypatch.setenv("PREMIGRATE_DATABASE_URL", "postgresql://app@db.example.com/app")
    monkeypatch.setenv("PREMIGRATE_LOCK_TIMEOUT", "-5")
    with pytest.raises(ConfigurationError, match=r"PREMIGRATE_LOCK_TIMEOUT: '-5' is not a duration; write it like 30"):
        function_config()


def test_a_bad_file_is_the_same_validation_error_bundled_or_in_an_artifact(
    function_env, write_migrations, pipeline, lambda_logs
) -> None:
    upload_zip("build/bad.zip", {"migrations/V1__users.sql": USERS, "migrations/V2_one_underscore.sql": "SELECT 1;"})
    invoke(job_event("job-artifact", artifact_key="build/bad.zip"))
    from_artifact = pipeline.last()
    write_migrations({"V2_one_underscore.sql": "SELECT 1;"})
    invoke(job_event("job-bundled"))
    bundled = pipeline.last()
    for operation, params in (from_artifact, bundled):
        assert operation == "PutJobFailureResult"
        assert params["failureDetails"]["message"].startswith(
            "premigrate validation error: the migration set cannot be used (nothing was applied):\n"
            "  - V2_one_underscore.sql"
        )
    logged = [json.loads(line) for line in lambda_logs.getvalue().splitlines() if '"level":"ERROR"' in line]
    assert [entry["error_kind"] for entry in logged] == ["validation", "validation"]


def test_a_function_without_a_database_says_which_setting_is_missing(function_env, monkeypatch) -> None:
    monkeypatch.delenv("PREMIGRATE_DATABASE_URL")
    missing = "no database given: set PREMIGRATE_SECRET_ID to the RDS secret's ARN"
    direct = invoke({"action": "plan"})
    assert (direct["ok"], direct["error_kind"]) == (False, "configuration")
    assert direct["error"].startswith(missing)
    inbox = ResponseInbox()
    invoke(cfn_event("Create", inbox))
    answer = inbox.received()
    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith(f"premigrate configuration error: {missing}")


def test_an_artifact_that_cannot_be_read_is_named_in_the_failure(function_env, pipeline) -> None:
    invoke(job_event("job-missing", artifact_key="build/never-uploaded.zip"))
    operation, params = pipeline.last()
    assert operation == "PutJobFailureResult"
    assert params["failureDetails"]["message"].startswith(
        f"premigrate configuration error: could not read the input artifact s3://{BUCKET}/build/never-uploaded.zip "
        "(NoSuchKey)"
    )


def test_a_migrations_path_without_an_artifact_is_refused(function_env, pipeline, db) -> None:
    invoke(job_event("job-no-artifact", json.dumps({"migrations_path": "db"})))
    operation, params = pipeline.last()
    assert operation == "PutJobFailureResult"
    assert (
        "migrations_path names a folder of the input artifact, but the action has none"
        in (params["failureDetails"]["message"])
    )
    assert db.run("SELECT to_regclass('users')") == [[None]]


def test_a_wrong_password_without_a_rotation_says_so(secret_arn, server, password_user, lambda_logs) -> None:
    server.admin(f"ALTER ROLE {password_user} PASSWORD 'changed-behind-the-secret'")
    result = invoke({"action": "status"})
    assert (result["ok"], result["error_kind"]) == (False, "configuration")
    assert result["error"].startswith("the server refused the credentials for ")
    assert "ResourceNotFoundException" not in result["error"]


def test_a_request_still_running_elsewhere_is_never_run_twice(function_env, db) -> None:
    assert invoke({"action": "status"})["ok"]  # creates nothing: read-only
    first = invoke({"action": "migrate", "request_id": "twice"})
    assert first["ok"]
    db.run("UPDATE premigrate_run_ledger SET finished_at = NULL, outcome = 'running' WHERE request_id = 'twice'")
    again = invoke({"action": "migrate", "request_id": "twice"})
    assert (again["ok"], again["error_kind"]) == (False, "configuration")
    assert again["error"].startswith("request 'twice' is already being handled (started ")
    assert db.run("SELECT outcome FROM premigrate_run_ledger WHERE request_id = 'twice'") == [["running"]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"target": "1", "target": "2"}', "UserParameters gives 'target' more than once"),
        ('{"lock_wait_seconds": NaN}', "UserParameters holds NaN"),
        ('{"lock_wait_seconds": -Infinity}', "UserParameters holds -Infinity"),
    ],
)
def test_user_parameters_that_json_allows_but_make_no_sense_are_refused(text, message) -> None:
    from premigrate.triggers.codepipeline import UserParametersError, parse_user_parameters

    with pytest.raises(UserParametersError, match=re.escape(message)):
        parse_user_parameters(text)


@pytest.mark.parametrize("size", [10, 5000])
def test_the_reason_fits_4096_bytes_and_keeps_its_beginning(size) -> None:
    from premigrate.triggers.cloudformation import MAX_RESPONSE_BYTES, Responder

    event = {"StackId": "s" * size, "RequestId": "r", "LogicalResourceId": "l", "ResponseURL": "http://x"}
    reason = "V2__x.sql:3:1: ERROR 42601: " + "ü€😀" * 3000
    body = Responder(event, "premigrate-1")._body("FAILED", reason, {})
    sent = json.dumps(body).encode()
    if size < MAX_RESPONSE_BYTES:
        assert len(sent) <= MAX_RESPONSE_BYTES
        assert body["Reason"].startswith("V2__x.sql:3:1: ERROR 42601: ü€😀")
        assert body["Reason"].endswith("(truncated; the function's log has the whole message)")
    else:  # other fields alone are too long: it still ends, with the shortest Reason
        assert body["Reason"] == " … (truncated; the function's log has the whole message)"

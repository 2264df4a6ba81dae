"""The Lambda function's direct invoke, secrets and connection edges, against real PostgreSQL and moto's
real local HTTP server. CloudFormation and CodePipeline have files of their own."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from aws_fakes import USERS, ResponseInbox, cfn_event, job_event, secret_for, upload_zip
from premigrate.adapters.connection import params_from_url
from premigrate.local_invoke import invoke


@pytest.fixture
def function_env(function_env: Path, aws) -> Path:
    """conftest's function_env, with AWS on moto's local server."""
    return function_env


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


def test_tracing_without_the_xray_sdk_logs_a_warning_and_runs(function_env, db) -> None:
    """A package built without aws-xray-sdk must not crash at import when tracing is switched on."""
    probe = (
        "import json, sys\n"
        "sys.modules['aws_xray_sdk'] = None  # as if the package did not ship it\n"
        "from premigrate.local_invoke import invoke\n"
        "print(json.dumps(invoke({'action': 'status'})))\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PREMIGRATE_TRACING": "true"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert "PREMIGRATE_TRACING is on, but aws-xray-sdk is not in the package: running without tracing" in ran.stdout
    assert json.loads(ran.stdout.strip().splitlines()[-1])["ok"] is True


def test_a_direct_invoke_applies_every_phase_unless_it_names_one(function_env, write_migrations, db) -> None:
    write_migrations({"V2__drop.sql": "-- premigrate:after-rollout\nDROP TABLE users;\n"})
    before = invoke({"action": "migrate", "phase": "before-rollout"})
    assert [run["script"] for run in before["report"]["applied"]] == ["V1__users.sql"]
    rest = invoke({"action": "migrate"})
    assert [run["script"] for run in rest["report"]["applied"]] == ["V2__drop.sql"]

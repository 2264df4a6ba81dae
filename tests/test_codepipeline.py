"""The CodePipeline Lambda action, against real PostgreSQL; artifacts in moto's S3, job results through
a client checked against CodePipeline's service model (aws_fakes.StubbedCodePipeline)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from aws_fakes import BUCKET, USERS, history, job_event, job_id, upload_zip
from premigrate.adapters.connection import params_from_url
from premigrate.adapters.postgres import connect
from premigrate.local_invoke import invoke


@pytest.fixture
def function_env(function_env: Path, aws) -> Path:
    """conftest's function_env, with AWS on moto's local server."""
    return function_env


def test_job_success_reports_output_variables(function_env, pipeline) -> None:
    invoke(job_event("job-1"))
    assert pipeline.last() == (
        "PutJobSuccessResult",
        {
            "jobId": job_id("job-1"),
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
    assert params["failureDetails"]["type"] == "ConfigurationError"


def test_a_failed_migration_fails_the_job_as_a_job_failure(function_env, write_migrations, pipeline, db) -> None:
    write_migrations({"V2__bad.sql": "CREATE TABLE users ();\n"})
    invoke(job_event("job-bad-sql"))
    operation, params = pipeline.last()
    assert operation == "PutJobFailureResult"
    assert params["failureDetails"]["type"] == "JobFailed"
    assert 'V2__bad.sql:1:1: ERROR 42P07: relation "users" already exists' in params["failureDetails"]["message"]


@pytest.mark.reliability
def test_a_run_that_hangs_still_reports_the_job_before_the_function_ends(
    function_env, pipeline, monkeypatch, database_url, reliability
) -> None:
    from premigrate.engine.lock import MigrationLock

    monkeypatch.setenv("PREMIGRATE_LOCK_WAIT", "3")
    holder = connect(params_from_url(database_url))  # a run that hangs: the lock is never free
    holder.run("SELECT pg_advisory_lock(:a, :b)", a=0x5052454D, b=MigrationLock("public.premigrate_schema_history").key)
    try:
        invoke(job_event("job-hangs"), remaining_seconds=13.0)  # the guard answers at 12 s left
    finally:
        holder.close()
    assert [operation for operation, _ in pipeline.calls] == ["PutJobFailureResult"]  # one report only
    message = pipeline.last()[1]["failureDetails"]["message"]
    assert message.startswith("premigrate ran out of the function's time before it finished")
    reliability(
        "CodePipeline: the run hangs (the lock never frees) until 12 s before the Lambda timeout",
        1,
        "PutJobFailureResult is sent by the guard before the function would be killed; one report only",
        "one failure reported; the run's own later report was not sent",
    )


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


def test_continuation_across_two_invocations(function_env, write_migrations, pipeline, db, monkeypatch) -> None:
    write_migrations({"V2__slow.sql": "SELECT pg_sleep(1.6);", "V3__later.sql": "CREATE TABLE later ();"})
    monkeypatch.setenv("PREMIGRATE_TIME_MARGIN", "13")
    # V3 would start with under 13 s left; the timeout guard would answer only at 12 s left.
    invoke(job_event("job-6"), remaining_seconds=14.5)
    operation, params = pipeline.last()
    assert (operation, params) == (
        "PutJobSuccessResult",
        {
            "jobId": job_id("job-6"),
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


def test_a_continuation_that_cannot_progress_fails_the_job(function_env, pipeline, db, monkeypatch) -> None:
    monkeypatch.setenv("PREMIGRATE_TIME_MARGIN", "14")
    invoke(job_event("job-short"), remaining_seconds=13.5)  # less than the time margin from the start
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


def test_the_action_runs_before_the_rollout_unless_it_says_after(function_env, write_migrations, pipeline, db) -> None:
    write_migrations({"V2__drop.sql": "-- premigrate:after-rollout\nDROP TABLE users;\n"})
    invoke(job_event("job-before"))
    assert pipeline.last()[1]["outputVariables"]["SchemaVersionAfter"] == "1"
    invoke(job_event("job-after", json.dumps({"phase": "after-rollout"})))
    assert pipeline.last()[1]["outputVariables"] == {
        "SchemaVersionBefore": "1",
        "SchemaVersionAfter": "2",
        "AppliedCount": "1",
    }
    assert history(db) == ["V1__users.sql", "V2__drop.sql"]


def test_all_or_nothing_from_user_parameters(function_env, write_migrations, pipeline, db) -> None:
    write_migrations({"V2__orders.sql": "CREATE TABLE orders ();\n", "V3__bad.sql": "CREATE TABLE users ();\n"})
    invoke(job_event("job-group", json.dumps({"all_or_nothing": True})))
    operation, params = pipeline.last()
    assert operation == "PutJobFailureResult"
    assert (
        "The group of 3 migrations (V1__users.sql … V3__bad.sql) was rolled back" in params["failureDetails"]["message"]
    )
    assert db.run("SELECT to_regclass('users'), to_regclass('orders')") == [[None, None]]

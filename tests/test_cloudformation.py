"""The CloudFormation custom resource, against real PostgreSQL and moto's real local HTTP server: the
ResponseURL is a presigned S3 URL, the stack's status comes from moto's CloudFormation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aws_fakes import ResponseInbox, cfn_event, history
from premigrate.adapters.connection import params_from_url
from premigrate.adapters.postgres import connect
from premigrate.local_invoke import invoke


@pytest.fixture
def function_env(function_env: Path, aws) -> Path:
    """conftest's function_env, with AWS on moto's local server."""
    return function_env


def test_create_update_and_delete(function_env: Path, write_migrations, db) -> None:
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

    # A deploy of an older function and set (a pipeline migrated further already): not a failure.
    (function_env / "V2__orders.sql").unlink()
    older = ResponseInbox()
    invoke(cfn_event("Update", older, physical_id=physical_id))
    answer = older.received()
    assert answer["Status"] == "SUCCESS"
    assert answer["Data"]["SchemaVersionAfter"] == "2"
    assert "ahead of this migration set" in answer["Reason"]
    assert history(db) == ["V1__users.sql", "V2__orders.sql"]

    delete = ResponseInbox()
    invoke(cfn_event("Delete", delete, physical_id=physical_id))
    assert delete.received()["Status"] == "SUCCESS"
    assert history(db) == ["V1__users.sql", "V2__orders.sql"]


def test_delete_never_touches_the_database(monkeypatch, aws) -> None:
    monkeypatch.setenv("PREMIGRATE_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none?sslmode=disable")
    inbox = ResponseInbox()
    event = cfn_event("Delete", inbox, physical_id="premigrate-0123")
    invoke(event)
    assert inbox.received() == {
        "Status": "SUCCESS",
        "Reason": "premigrate leaves the database as it is on Delete",
        "PhysicalResourceId": "premigrate-0123",
        "StackId": event["StackId"],
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
        "CloudFormation: the run hangs (the lock never frees) until 12 s before the Lambda timeout",
        1,
        "FAILED is sent by the guard before the function would be killed; one answer only",
        "FAILED received; the run's own later answer was not sent",
    )


@pytest.mark.reliability
def test_engine_stops_between_migrations_and_cloudformation_hears_failed(
    function_env, write_migrations, monkeypatch, db, reliability
):
    write_migrations({"V2__slow.sql": "SELECT pg_sleep(1.0);", "V3__later.sql": "CREATE TABLE later ();"})
    monkeypatch.setenv("PREMIGRATE_TIME_MARGIN", "13.5")
    inbox = ResponseInbox()
    # V3 would start with under 13.5 s left; the guard would answer only at 12 s left.
    invoke(cfn_event("Create", inbox), remaining_seconds=14.0)
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


def test_duplicate_delivery_returns_the_earlier_outcome(function_env, db) -> None:
    first = ResponseInbox()
    event = cfn_event("Create", first, request_id="same-request")
    invoke(event)
    second = ResponseInbox()
    invoke({**event, "ResponseURL": second.url})
    # A second real run would have found nothing to apply (AppliedCount 0): this is the first run's answer.
    assert (
        second.received()["Data"]
        == first.received()["Data"]
        == {
            "SchemaVersionBefore": "none",
            "SchemaVersionAfter": "1",
            "AppliedCount": "1",
        }
    )
    assert history(db) == ["V1__users.sql"]
    rows = db.run("SELECT caller, request_id, outcome, applied_versions, error FROM premigrate_run_ledger")
    assert rows == [["cloudformation", "same-request", "succeeded", ["1"], None]]


def test_response_sending_gives_up_after_a_few_tries(function_env, lambda_logs) -> None:
    event = cfn_event("Delete", ResponseInbox(), physical_id="premigrate-0123")
    event["ResponseURL"] = "http://127.0.0.1:1/nobody-listens"
    result = invoke(event)
    assert result["Status"] == "SUCCESS"
    logs = lambda_logs.getvalue()
    assert logs.count("sending the response failed") == 4
    assert "gave up sending the response to CloudFormation" in logs
    assert "nobody-listens" not in logs


@pytest.mark.parametrize("size", [10, 5000])
def test_the_reason_fits_4096_bytes_and_keeps_its_beginning(size) -> None:
    from premigrate.triggers.cfn_response import MAX_RESPONSE_BYTES, Responder

    event = {"StackId": "s" * size, "RequestId": "r", "LogicalResourceId": "l", "ResponseURL": "http://x"}
    reason = "V2__x.sql:3:1: ERROR 42601: " + "ü€😀" * 3000
    body = Responder(event, "premigrate-1", lambda: 60.0)._body("FAILED", reason, {})
    sent = json.dumps(body).encode()
    if size < MAX_RESPONSE_BYTES:
        assert len(sent) <= MAX_RESPONSE_BYTES
        assert body["Reason"].startswith("V2__x.sql:3:1: ERROR 42601: ü€😀")
        assert body["Reason"].endswith("(truncated; the function's log has the whole message)")
    else:  # other fields alone are too long: it still ends, with the shortest Reason
        assert body["Reason"] == " … (truncated; the function's log has the whole message)"


def test_a_resource_migrates_before_the_rollout_unless_it_says_after(function_env, write_migrations, db) -> None:
    write_migrations({"V2__drop.sql": "-- premigrate:after-rollout\nDROP TABLE users;\n"})
    before = ResponseInbox()
    invoke(cfn_event("Create", before))
    assert before.received()["Data"] == {"SchemaVersionBefore": "none", "SchemaVersionAfter": "1", "AppliedCount": "1"}
    assert history(db) == ["V1__users.sql"]

    after = ResponseInbox()  # the second resource, which depends on the Auto Scaling Group
    invoke(cfn_event("Create", after, properties={"Phase": "after-rollout"}))
    assert after.received()["Data"] == {"SchemaVersionBefore": "1", "SchemaVersionAfter": "2", "AppliedCount": "1"}
    assert history(db) == ["V1__users.sql", "V2__drop.sql"]

    wrong = ResponseInbox()
    invoke(cfn_event("Create", wrong, properties={"Phase": "later"}))
    assert wrong.received()["Status"] == "FAILED"
    assert "'later' is not a phase; use one of all, before-rollout, after-rollout" in wrong.received()["Reason"]


def test_all_or_nothing_on_the_resource_rolls_back_the_whole_release(function_env, write_migrations, db) -> None:
    write_migrations({"V2__orders.sql": "CREATE TABLE orders ();\n", "V3__bad.sql": "CREATE TABLE users ();\n"})
    inbox = ResponseInbox()
    invoke(cfn_event("Create", inbox, properties={"AllOrNothing": "true"}))
    answer = inbox.received()
    assert answer["Status"] == "FAILED"
    assert "The group of 3 migrations (V1__users.sql … V3__bad.sql) was rolled back" in answer["Reason"]
    assert db.run("SELECT to_regclass('users'), to_regclass('orders')") == [[None, None]]

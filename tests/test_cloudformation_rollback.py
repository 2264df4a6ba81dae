"""A stack rollback must never fail because of premigrate (UPDATE_ROLLBACK_FAILED), and a custom
resource applies only the migration set it asks for. Real PostgreSQL; the stack's status comes from
moto's CloudFormation over HTTP, the answers go to a presigned S3 URL on moto's server.

In a rollback of the premigrate stack itself, the custom resource is rolled back before the function:
the function still holds the new set while the event asks for the old one."""

from __future__ import annotations

from pathlib import Path

import pytest

from aws_fakes import ResponseInbox, cfn_event, history, set_stack_status
from premigrate.adapters.folder import load_folder
from premigrate.local_invoke import invoke

ORDERS = "CREATE TABLE orders (id int);\n"


@pytest.fixture
def function_env(function_env: Path, aws) -> Path:
    return function_env


def deploy(request_type: str, **event: str) -> dict:
    inbox = ResponseInbox()
    invoke(cfn_event(request_type, inbox, physical_id="premigrate-db", **event))
    return inbox.received()


def schema(db) -> list[str]:
    return [row[0] for row in db.run("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]


def test_a_rollback_after_a_half_applied_migration_succeeds_and_touches_nothing(function_env, write_migrations, db):
    assert deploy("Create")["Status"] == "SUCCESS"
    old_set = load_folder(function_env).fingerprint
    write_migrations({"V2__half.sql": "-- premigrate:no-transaction\nCREATE TABLE half ();\nCREATE TABLE users ();\n"})
    forward = deploy("Update")
    assert forward["Status"] == "FAILED"
    assert "V2__half.sql:3:1: ERROR 42P07" in forward["Reason"]
    before = (schema(db), db.run("SELECT script, success FROM premigrate_schema_history ORDER BY installed_rank"))

    set_stack_status("UPDATE_ROLLBACK_IN_PROGRESS")
    rollback = deploy("Update", migration_set=old_set)
    assert rollback["Status"] == "SUCCESS"
    assert rollback["PhysicalResourceId"] == "premigrate-db"
    assert rollback["Reason"].startswith(
        "the stack is rolling back (UPDATE_ROLLBACK_IN_PROGRESS): premigrate changed nothing; the database stays at "
        "version 1, with V2__half.sql failed (fix it and deploy again)"
    )
    assert rollback["Data"] == {"SchemaVersionBefore": "1", "SchemaVersionAfter": "1", "AppliedCount": "0"}
    assert (schema(db), db.run("SELECT script, success FROM premigrate_schema_history ORDER BY installed_rank")) == (
        before
    )


def test_a_rollback_never_reapplies_an_older_repeatable(function_env, write_migrations, db) -> None:
    write_migrations({"R__view.sql": "CREATE VIEW answer AS SELECT 42 AS value;\n"})
    assert deploy("Create")["Status"] == "SUCCESS"
    old_set = load_folder(function_env).fingerprint
    # The new set changes the view's column type: the old file, applied again, would fail with 42P16.
    write_migrations({"R__view.sql": "DROP VIEW answer;\nCREATE VIEW answer AS SELECT 'forty-two'::text AS value;\n"})
    assert deploy("Update")["Status"] == "SUCCESS"
    set_stack_status("UPDATE_ROLLBACK_IN_PROGRESS")
    rollback = deploy("Update", migration_set=old_set)
    assert rollback["Status"] == "SUCCESS"
    assert db.run("SELECT value FROM answer") == [["forty-two"]]
    assert history(db) == ["V1__users.sql", "R__view.sql", "R__view.sql"]


def test_a_rollback_with_the_database_unreachable_still_succeeds(function_env, monkeypatch) -> None:
    set_stack_status("UPDATE_ROLLBACK_IN_PROGRESS")
    monkeypatch.setenv("PREMIGRATE_DATABASE_URL", "postgresql://app@127.0.0.1:1/app?sslmode=disable&connect_timeout=1")
    monkeypatch.setenv("PREMIGRATE_TIME_MARGIN", "899.5")  # no time left for a second connection try
    rollback = deploy("Update", migration_set="0123456789abcdef")
    assert rollback["Status"] == "SUCCESS"
    assert rollback["Reason"].startswith(
        "the stack is rolling back (UPDATE_ROLLBACK_IN_PROGRESS): premigrate changed nothing; the database's state "
        "could not be read: could not connect to app@127.0.0.1:1/app"
    )
    assert rollback["Data"]["SchemaVersionAfter"] == "unknown"


def test_a_resource_asking_for_another_set_fails_with_both_fingerprints(function_env, db) -> None:
    held = load_folder(function_env).fingerprint
    for request_type in ("Create", "Update"):
        answer = deploy(request_type, migration_set="0123456789abcdef")
        assert answer["Status"] == "FAILED"
        assert (
            f"asked for migration set '0123456789abcdef', but this function holds '{held}': deploy premigrate with "
            "that migration set first"
        ) in answer["Reason"]
    assert db.run("SELECT to_regclass('premigrate_schema_history')") == [[None]]


def test_a_resource_without_a_migration_set_is_refused(function_env, db) -> None:
    answer = deploy("Create", migration_set="")
    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith("premigrate configuration error: the custom resource has no MigrationSetHash")
    assert db.run("SELECT to_regclass('premigrate_schema_history')") == [[None]]


def test_a_stack_whose_status_cannot_be_read_fails_on_create(function_env, db) -> None:
    inbox = ResponseInbox()
    event = cfn_event("Create", inbox)
    event["StackId"] = "arn:aws:cloudformation:eu-west-1:123456789012:stack/other/00000000"
    invoke(event)
    answer = inbox.received()
    assert answer["Status"] == "FAILED"
    assert (
        "could not read the status of stack arn:aws:cloudformation:eu-west-1:123456789012:stack/other/00000000 "
        "(ValidationError), which tells a rollback from a deploy: the function needs cloudformation:DescribeStacks"
    ) in answer["Reason"]
    assert db.run("SELECT to_regclass('premigrate_schema_history')") == [[None]]

"""CloudFormation custom resource: migrate on Create and Update to the migration set the resource asks
for, never touch the database on Delete or during a rollback, and always answer, so a stack never waits
an hour or sticks in UPDATE_ROLLBACK_FAILED because of us.

    DatabaseMigration:
      Type: Custom::DatabaseMigration
      Properties:
        ServiceToken: <function ARN>
        MigrationSetHash: <premigrate fingerprint>
        Phase: before-rollout            # default; after-rollout in a resource that depends on the ASG
        AllOrNothing: "true"             # optional: the release's transactional migrations in one transaction
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.data_classes import CloudFormationCustomResourceEvent

from premigrate.adapters.stack_status import is_rolling_back, stack_status
from premigrate.engine import ConfigurationError, Phase
from premigrate.service import Request, Result
from premigrate.service.connecting import database_identity
from premigrate.triggers.answering import timeout_guard
from premigrate.triggers.cfn_response import Responder
from premigrate.triggers.invocation import function_config, logger, refused, run

_REQUIRED = ("RequestType", "ResponseURL", "StackId", "RequestId", "LogicalResourceId")
_OUT_OF_TIME = (
    "premigrate ran out of time before it finished; migrations applied so far stay applied and the next deploy "
    "continues. Raise the function's timeout or split long migrations"
)


def handle(event: dict[str, Any], time_left: Callable[[], float]) -> dict[str, Any]:
    if not isinstance(event.get("ResponseURL"), str):
        logger.error("a CloudFormation event without a ResponseURL cannot be answered")
        return {"Status": "FAILED", "Reason": "malformed CloudFormation event: no ResponseURL"}
    responder = Responder(event, str(event.get("PhysicalResourceId") or "premigrate-unconfigured"), time_left)
    with timeout_guard(time_left, lambda: responder.fail(_OUT_OF_TIME)):
        try:
            return _handle(event, responder, time_left)
        except Exception as error:
            return _respond(responder, refused(error))


def _handle(event: dict[str, Any], responder: Responder, time_left: Callable[[], float]) -> dict[str, Any]:
    missing = [key for key in _REQUIRED if not isinstance(event.get(key), str)]
    if missing:
        return responder.fail(f"malformed CloudFormation event: {', '.join(missing)} missing or not text")
    request = CloudFormationCustomResourceEvent(event)
    if request.request_type == "Delete":
        # Dropping the resource must never drop a schema: there are no down migrations.
        return responder.succeed({}, "premigrate leaves the database as it is on Delete")
    if request.request_type not in ("Create", "Update"):
        return responder.fail(f"unknown RequestType {request.request_type!r}; expected Create, Update or Delete")

    # Read on Create too: a missing permission or route shows on the first deploy, not in a rollback.
    status = stack_status(request.stack_id)
    if request.request_type == "Update" and is_rolling_back(status):
        return _report_rollback(responder, status, time_left)
    properties = event.get("ResourceProperties") or {}
    if not isinstance(properties, dict):
        return responder.fail("malformed CloudFormation event: ResourceProperties is not an object")
    expected = properties.get("MigrationSetHash")
    if not isinstance(expected, str) or not expected:
        raise ConfigurationError(
            "the custom resource has no MigrationSetHash property: set it to the fingerprint of the migration set "
            "to apply (premigrate fingerprint), so that a new set updates the resource and migrates"
        )
    # An Update may find the database ahead of its set (a pipeline migrated further): not an error.
    ahead_ok = {"accept_database_ahead": True} if request.request_type == "Update" else {}
    # A resource migrates ahead of the rollout its stack makes, unless it says otherwise.
    phase = {"phase": properties.get("Phase", Phase.BEFORE_ROLLOUT.value)}
    # CloudFormation passes every property as text: "true" / "false".
    group = {"all_or_nothing": properties["AllOrNothing"]} if "AllOrNothing" in properties else {}
    config = function_config({**ahead_ok, **phase, **group}, "the custom resource's property")
    if request.request_type == "Create":
        # Derived from the database, not from time, so later Updates keep it and never cause a replacement.
        responder.physical_resource_id = database_identity(config)
    migrate = Request("migrate", caller="cloudformation", request_id=request.request_id, expected_fingerprint=expected)
    return _respond(responder, run(config, migrate, time_left))


def _report_rollback(responder: Responder, stack: str, time_left: Callable[[], float]) -> dict[str, Any]:
    """A rollback's Update answers SUCCESS and changes nothing (a schema has no way back, and a failing
    answer would leave the stack in UPDATE_ROLLBACK_FAILED); it says what state the database is in."""
    prefix = f"the stack is rolling back ({stack}): premigrate changed nothing"
    try:
        result = run(
            function_config({"accept_database_ahead": True}), Request("status", caller="cloudformation"), time_left
        )
    except Exception as error:
        result = refused(error)
    if not result.ok or result.report is None:
        unknown = {"SchemaVersionBefore": "unknown", "SchemaVersionAfter": "unknown", "AppliedCount": "0"}
        return responder.succeed(unknown, f"{prefix}; the database's state could not be read: {result.error}")
    report = result.report
    version = report.schema_version_after or "none"
    failed = [state.script for state in report.states if state.state == "failed"]
    state = f"the database stays at version {version}"
    if failed:
        state += f", with {', '.join(failed)} failed (fix it and deploy again)"
    details = "; ".join([state, *report.notes])
    return responder.succeed(
        {"SchemaVersionBefore": version, "SchemaVersionAfter": version, "AppliedCount": "0"}, f"{prefix}; {details}"
    )


def _respond(responder: Responder, result: Result) -> dict[str, Any]:
    if not result.ok or result.report is None:
        return responder.fail(f"premigrate {result.error_kind} error: {result.error}")
    report = result.report
    if result.stopped_for_time:
        return responder.fail(
            f"premigrate applied {len(report.applied)} migration(s), then ran short of time with "
            f"{len(report.pending)} still pending; they stay applied, and the next deploy continues"
        )
    data = {
        "SchemaVersionBefore": report.schema_version_before or "none",
        "SchemaVersionAfter": report.schema_version_after or "none",
        "AppliedCount": str(len(report.applied)),
    }
    return responder.succeed(data, "; ".join(report.notes))

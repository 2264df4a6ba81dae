"""CodePipeline Lambda invoke action: migrate (or only plan) before the Deploy stage, and always report
the job's result, since a pipeline waits for it.

UserParameters (JSON, all optional)::

    {"dry_run": true, "migrations_path": "db/migrations", "target": "42", "lock_wait_seconds": 120}

With an input artifact, its migrations are used (read from the zip in memory); otherwise the ones
bundled with the function. When time runs short between migrations, the job gets a continuation token
and CodePipeline invokes again; each invocation has its own ledger entry, so a retried one replays.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.data_classes import CodePipelineJobEvent

from premigrate.adapters.artifact import MAX_ARCHIVE_BYTES, migrations_from_zip
from premigrate.engine import MigrationSet, MigrationSetError, PremigrateError
from premigrate.triggers.invocation import Invocation, Outcome, logger, run_engine

_PARAMETERS: dict[str, type | tuple[type, ...]] = {
    "dry_run": bool,
    "migrations_path": str,
    "target": str,
    "lock_wait_seconds": (int, float),
}
_MAX_MESSAGE = 5000


class UserParametersError(PremigrateError):
    pass


def codepipeline_client() -> Any:
    import boto3

    return boto3.client("codepipeline")


def handle(event: dict[str, Any], time_left: Callable[[], float]) -> dict[str, Any]:
    job = event.get("CodePipeline.job")
    job_id = job.get("id") if isinstance(job, dict) else None
    if not isinstance(job_id, str):
        logger.error("a CodePipeline event without a job id cannot be answered")
        return {"ok": False, "error": "malformed CodePipeline event: no job id"}
    client = codepipeline_client()
    job_event = CodePipelineJobEvent(event)
    step = 0
    try:
        step = _continuation_step(job_event)
        result = _handle(job_event, step, time_left)
    except PremigrateError as error:
        result = Outcome(False, error=str(error), error_kind="configuration")
    except Exception:
        logger.exception("unexpected error while handling a CodePipeline job")
        result = Outcome(
            False, error="premigrate hit an unexpected error; the function's log has the details", error_kind="internal"
        )
    return _report_job(client, job_id, step, result)


def _continuation_step(job: CodePipelineJobEvent) -> int:
    """Which invocation of the job this is: 0 first, then 1, 2, … as our continuation tokens count."""
    token = job.data.continuation_token
    if not token:
        return 0
    try:
        return int(json.loads(token)["step"])
    except (ValueError, KeyError, TypeError):
        raise UserParametersError("the job's continuation token is not one premigrate made") from None


def _handle(job: CodePipelineJobEvent, step: int, time_left: Callable[[], float]) -> Outcome:
    try:
        parameters = parse_user_parameters(job.data.action_configuration.configuration.user_parameters)
    except (KeyError, TypeError, AttributeError):
        raise UserParametersError("malformed CodePipeline event: no action configuration") from None
    overrides: dict[str, Any] = {}
    if "target" in parameters:
        overrides["target"] = parameters["target"]
    if "lock_wait_seconds" in parameters:
        overrides["lock_wait_seconds"] = float(parameters["lock_wait_seconds"])
    return run_engine(
        Invocation(
            caller="codepipeline",
            request_id=f"{job.get_id}#{step}",
            action="plan" if parameters.get("dry_run") else "migrate",
            time_left=time_left,
            migrations=_artifact_migrations(job, parameters.get("migrations_path", "migrations")),
            overrides=overrides,
        )
    )


def parse_user_parameters(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        parameters = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserParametersError(f"UserParameters is not JSON ({error.msg} at character {error.pos})") from None
    if not isinstance(parameters, dict):
        raise UserParametersError('UserParameters must be a JSON object, like {"dry_run": true}')
    allowed = ", ".join(_PARAMETERS)
    for key, value in parameters.items():
        expected = _PARAMETERS.get(key)
        if expected is None:
            raise UserParametersError(f"UserParameters has an unknown key {key!r}; the keys are {allowed}")
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise UserParametersError(f"UserParameters {key!r} has the wrong type ({type(value).__name__})")
    return parameters


def _artifact_migrations(job: CodePipelineJobEvent, folder: str) -> MigrationSet | None:
    artifacts = job.data.input_artifacts
    if not artifacts:
        return None
    location = artifacts[0].location.s3_location
    s3 = job.setup_s3_client()  # type: ignore[no-untyped-call]
    body = s3.get_object(Bucket=location.bucket_name, Key=location.key)["Body"]
    data = body.read(MAX_ARCHIVE_BYTES + 1)
    if len(data) > MAX_ARCHIVE_BYTES:
        raise MigrationSetError([f"the input artifact is larger than {MAX_ARCHIVE_BYTES} bytes"])
    return migrations_from_zip(data, folder)


def _report_job(client: Any, job_id: str, step: int, outcome: Outcome) -> dict[str, Any]:
    report = outcome.report or {}
    try:
        if not outcome.ok:
            message = f"premigrate {outcome.error_kind} error: {outcome.error}"
            client.put_job_failure_result(
                jobId=job_id,
                failureDetails={"type": "JobFailed", "message": message[:_MAX_MESSAGE]},
            )
        elif outcome.stopped_for_time:
            client.put_job_success_result(jobId=job_id, continuationToken=json.dumps({"step": step + 1}))
        else:
            client.put_job_success_result(
                jobId=job_id,
                outputVariables={
                    "SchemaVersionBefore": report.get("schema_version_before") or "none",
                    "SchemaVersionAfter": report.get("schema_version_after") or "none",
                    "AppliedCount": str(len(report.get("applied", []))),
                },
            )
    except Exception:
        logger.exception("could not report the job's result to CodePipeline")
    return outcome.to_dict()

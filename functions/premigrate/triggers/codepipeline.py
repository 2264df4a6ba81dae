"""CodePipeline Lambda invoke action: migrate (or only plan) before the Deploy stage, and always report
the job's result, since a pipeline waits for it.

UserParameters (JSON, all optional)::

    {"dry_run": true, "migrations_path": "db/migrations", "target": "42", "lock_wait_seconds": 120,
     "phase": "after-rollout"}

``phase`` defaults to before-rollout here (the action runs before the Deploy stage); a second action after
Deploy passes after-rollout.

With an input artifact, its migrations are used (read from the zip in memory); otherwise the ones
bundled with the function. When time runs short between migrations, the job gets a continuation token
and CodePipeline invokes again; each invocation has its own ledger entry, so a retried one replays.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.data_classes import CodePipelineJobEvent

from premigrate.adapters.artifact import MAX_ARCHIVE_BYTES, migrations_from_zip
from premigrate.engine import ConfigurationError, MigrationSet, MigrationSetError, Phase
from premigrate.engine.report import Report
from premigrate.service import Request, Result
from premigrate.triggers.answering import SingleAnswer, timeout_guard
from premigrate.triggers.invocation import REQUEST_SETTINGS, function_config, logger, refused, run

_PARAMETERS: dict[str, type] = {"dry_run": bool, "migrations_path": str}
_MAX_MESSAGE = 5000
_OUT_OF_TIME = (
    "premigrate ran out of the function's time before it finished (the database stopped answering, or a "
    "migration runs too long); migrations applied so far stay applied, and the next run continues"
)


class UserParametersError(ConfigurationError):
    pass


def codepipeline_client() -> Any:
    import boto3
    from botocore.config import Config

    # Bounded, so that the timeout guard's report still arrives when the network does not answer.
    config = Config(connect_timeout=2, read_timeout=4, retries={"total_max_attempts": 2, "mode": "standard"})
    return boto3.client("codepipeline", config=config)


def handle(event: dict[str, Any], time_left: Callable[[], float]) -> dict[str, Any]:
    job = event.get("CodePipeline.job")
    job_id = job.get("id") if isinstance(job, dict) else None
    if not isinstance(job_id, str):
        logger.error("a CodePipeline event without a job id cannot be answered")
        return {"ok": False, "error": "malformed CodePipeline event: no job id"}
    reporter = JobReporter(codepipeline_client(), job_id)
    job_event = CodePipelineJobEvent(event)
    progress = JobProgress()
    failure_type = "JobFailed"
    with timeout_guard(time_left, lambda: reporter.fail(_OUT_OF_TIME)):
        try:
            progress = JobProgress.of(job_event)
            result = _handle(job_event, progress.step, time_left)
        except UserParametersError as error:
            result, failure_type = refused(error), "ConfigurationError"
        except Exception as error:
            result = refused(error)
        return _report_job(reporter, progress, result, failure_type)


class JobReporter:
    """The one result a job gets (PutJobSuccessResult or PutJobFailureResult): the run's own or the
    timeout guard's, whichever comes first. A call that fails is logged, never raised."""

    def __init__(self, client: Any, job_id: str) -> None:
        self.client = client
        self.job_id = job_id
        self._answer = SingleAnswer()

    def fail(self, message: str, failure_type: str = "JobFailed") -> None:
        details = {"type": failure_type, "message": message[:_MAX_MESSAGE]}
        self._report("put_job_failure_result", failureDetails=details)

    def succeed(self, **result: Any) -> None:
        self._report("put_job_success_result", **result)

    def _report(self, call: str, **arguments: Any) -> None:
        if not self._answer.claim(call):
            logger.info("the job's result was reported already; not reporting another", extra={"call": call})
            return
        try:
            getattr(self.client, call)(jobId=self.job_id, **arguments)
        except Exception:
            logger.exception("could not report the job's result to CodePipeline")


@dataclass(frozen=True)
class JobProgress:
    """What the earlier invocations of a job did, carried in our continuation token: the job's output
    variables describe the whole job, not its last invocation."""

    step: int = 0
    """0 for the first invocation, then 1, 2, …"""
    version_before: str | None = None
    applied: int = 0

    @classmethod
    def of(cls, job: CodePipelineJobEvent) -> JobProgress:
        token = job.data.continuation_token
        if not token:
            return cls()
        try:
            fields = json.loads(token)
            progress = cls(int(fields["step"]), fields.get("before"), int(fields.get("applied", 0)))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UserParametersError("the job's continuation token is not one premigrate made") from None
        if progress.step < 1 or progress.applied < 0:
            raise UserParametersError("the job's continuation token is not one premigrate made")
        return progress

    def after(self, report: Report) -> JobProgress:
        """The progress once this invocation's report is counted in."""
        before = self.version_before if self.step else report.schema_version_before
        return JobProgress(self.step + 1, before, self.applied + len(report.applied))

    def token(self) -> str:
        return json.dumps({"step": self.step, "before": self.version_before, "applied": self.applied})


def _handle(job: CodePipelineJobEvent, step: int, time_left: Callable[[], float]) -> Result:
    try:
        parameters = parse_user_parameters(job.data.action_configuration.configuration.user_parameters)
        has_artifact = bool(job.data.input_artifacts) and bool(job.data.input_artifacts[0].location.s3_location.key)
    except (KeyError, TypeError, AttributeError, IndexError):
        raise UserParametersError(
            "malformed CodePipeline event: no action configuration, or input artifacts of another shape"
        ) from None
    if "migrations_path" in parameters and not has_artifact:
        raise UserParametersError(
            "UserParameters migrations_path names a folder of the input artifact, but the action has none: give "
            "the action an input artifact, or leave migrations_path out to use the migrations bundled with the function"
        )
    # A pipeline action runs in a deploy: before the rollout unless it says otherwise.
    settings = {"phase": Phase.BEFORE_ROLLOUT.value} | {
        key: parameters[key] for key in REQUEST_SETTINGS if key in parameters
    }
    config = function_config(settings, "UserParameters")
    folder = parameters.get("migrations_path", "migrations")
    request = Request(
        "plan" if parameters.get("dry_run") else "migrate",
        caller="codepipeline",
        request_id=f"{job.get_id}#{step}",
        # Read inside the run, so that a bad artifact is refused and logged as a bundled set would be.
        load_migrations=(lambda: _artifact_migrations(job, folder)) if has_artifact else None,
    )
    return run(config, request, time_left)


def parse_user_parameters(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        parameters = json.loads(text, object_pairs_hook=_refuse_duplicate_keys, parse_constant=_refuse_constant)
    except json.JSONDecodeError as error:
        raise UserParametersError(f"UserParameters is not JSON ({error.msg} at character {error.pos})") from None
    if not isinstance(parameters, dict):
        raise UserParametersError('UserParameters must be a JSON object, like {"dry_run": true}')
    allowed = ", ".join((*_PARAMETERS, *REQUEST_SETTINGS))
    for key, value in parameters.items():
        if key in REQUEST_SETTINGS:
            continue  # checked with the run's other settings
        expected = _PARAMETERS.get(key)
        if expected is None:
            raise UserParametersError(f"UserParameters has an unknown key {key!r}; the keys are {allowed}")
        if not isinstance(value, expected):
            raise UserParametersError(f"UserParameters {key!r} has the wrong type ({type(value).__name__})")
    return parameters


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if duplicated := sorted({key for key in keys if keys.count(key) > 1}):
        raise UserParametersError(f"UserParameters gives {', '.join(map(repr, duplicated))} more than once")
    return dict(pairs)


def _refuse_constant(name: str) -> Any:
    raise UserParametersError(f"UserParameters holds {name}, which is no number a setting can take")


def _artifact_migrations(job: CodePipelineJobEvent, folder: str) -> MigrationSet:
    from botocore.exceptions import BotoCoreError, ClientError

    location = job.data.input_artifacts[0].location.s3_location
    try:
        s3 = job.setup_s3_client()  # type: ignore[no-untyped-call]
        body = s3.get_object(Bucket=location.bucket_name, Key=location.key)["Body"]
        data = body.read(MAX_ARCHIVE_BYTES + 1)
    except (BotoCoreError, ClientError) as error:
        code = error.response.get("Error", {}).get("Code") if isinstance(error, ClientError) else type(error).__name__
        raise ConfigurationError(
            f"could not read the input artifact s3://{location.bucket_name}/{location.key} ({code}): check that it "
            "exists and that the pipeline's artifact credentials may read it (s3:GetObject, and kms:Decrypt for an "
            "encrypted artifact store)"
        ) from None
    if len(data) > MAX_ARCHIVE_BYTES:
        raise MigrationSetError([f"the input artifact is larger than {MAX_ARCHIVE_BYTES} bytes"])
    return migrations_from_zip(data, folder)


def _report_job(reporter: JobReporter, progress: JobProgress, result: Result, failure_type: str) -> dict[str, Any]:
    if not result.ok or result.report is None:
        reporter.fail(f"premigrate {result.error_kind} error: {result.error}", failure_type)
    elif result.stopped_for_time and not result.report.applied:
        # Another invocation would have as little time: answering with a token would loop until the
        # pipeline's 24-hour limit.
        reporter.fail(
            "premigrate ran short of the function's time before it could apply a single migration "
            f"({len(result.report.pending)} pending): raise the function's timeout"
        )
    else:
        _succeed_job(reporter, progress.after(result.report), result.report)
    return result.to_dict()


def _succeed_job(reporter: JobReporter, progress: JobProgress, report: Report) -> None:
    if report.stopped_for_time:
        done = progress.applied
        reporter.succeed(
            continuationToken=progress.token(),
            executionDetails={
                "summary": f"applied {done} migration(s) so far, {len(report.pending)} to go; continuing",
                "percentComplete": round(100 * done / (done + len(report.pending))),
            },
        )
        return
    reporter.succeed(
        outputVariables={
            "SchemaVersionBefore": progress.version_before or "none",
            "SchemaVersionAfter": report.schema_version_after or "none",
            "AppliedCount": str(progress.applied),
        },
    )

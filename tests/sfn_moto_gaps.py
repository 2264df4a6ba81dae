"""What moto 5.2.5's Amazon States Language executor does not do, done here as AWS documents it (patched in
while sfn_local runs a state machine):

- ToleratedFailurePercentage: moto counts failed children but never fails the Map Run ("TODO: add support for
  failure toleration fields" in its MapRunRecord). Here a Map Run whose failed children exceed
  floor(items x percentage / 100) starts no further child and fails with States.ExceedToleratedFailureThreshold
  (AWS: "Step Functions may continue to run child workflows ... after the tolerated failure threshold is
  exceeded, but before the Map Run fails": starting none is one of the behaviours AWS allows).
- ResultWriter: moto writes a manifest.json with empty ResultFiles ("TODO: generate result files"). Here the
  manifest lists SUCCEEDED_0.json and FAILED_0.json, whose entries carry each child's Input, Status and Output,
  or Error and Cause, as AWS's result files do; they are written for a failed Map Run too (AWS's PENDING files
  exist for the items a failed Map Run never started). PENDING files are not written: the summary never reads
  them (a database without a result is "not started").
- ResultWriter's ``Parameters`` paths (``"Prefix.$"``): moto reads them from the Map Run's results, AWS from the
  Map state's input (CDK's ResultWriterV2 ``bucketNamePath`` example: "JSON state input: {bucketName: ...}").
  Here they are read from the state's input.
- ``$$.Execution.RedriveCount``: absent from moto's context object (moto cannot redrive). Here it is 0, what AWS
  gives an execution that was never redriven.

Not patched: moto's ASL grammar takes a ToleratedFailurePercentage written with a decimal point only (``100``
is refused at CreateStateMachine, ``100.0`` is taken); the definition writes ``100.0`` and ``0.0``, which AWS
takes as the same numbers.

Everything else, moto runs as it is: the definition's Choice, Pass, Wait, Fail with CausePath, Retry, Catch,
intrinsic functions, Map with ItemReader, ItemSelector, MaxConcurrencyPath, nested Distributed Maps.
"""

from __future__ import annotations

import datetime
import json
import math
import threading
from typing import Any

import boto3
from moto.stepfunctions.parser.api import HistoryEventType, MapRunFailedEventDetails
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
    FailureEvent,
    FailureEventException,
)
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import StatesErrorNameType
from moto.stepfunctions.parser.asl.component.state.exec.state_map import state_map
from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import distributed_iteration_component
from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.itemprocessor import (
    distributed_item_processor_worker,
    inline_item_processor_worker,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.job import JobPool
from moto.stepfunctions.parser.asl.component.state.exec.state_map.result_writer import result_writer_decl
from moto.stepfunctions.parser.asl.component.state.exec.state_map.result_writer.resource_eval import (
    resource_eval_s3,
)
from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
from moto.stepfunctions.parser.asl.eval.program_state import ProgramError, ProgramStopped
from moto.stepfunctions.parser.backend import execution_worker

REGION = "eu-west-1"
_current = threading.local()


# ---- what moto's Distributed Map does not do, done as AWS documents it ---------------------------------


class _BudgetPool(JobPool):
    """moto's job pool, which starts no child once more of them failed than the Map Run tolerates, and keeps
    each child's result for the ResultWriter."""

    def __init__(self, program: Any, inputs: list[Any], tolerated: int) -> None:
        super().__init__(job_program=program, job_inputs=inputs)
        self.tolerated, self.failures, self.started = tolerated, 0, 0
        self.records: dict[int, dict[str, Any]] = {}

    def next_job(self) -> Any:
        with self._mutex:
            if self._worker_exception is not None or self.failures > self.tolerated or not self._open_jobs:
                return None
            self.started += 1
            return self._open_jobs.pop()

    def finished(self, index: int, record: dict[str, Any]) -> None:
        with self._mutex:
            self.records[index] = record
            self.failures += record["Status"] != "SUCCEEDED"

    def _is_terminated(self) -> bool:
        stopped = not self._open_jobs or self.failures > self.tolerated
        return self._worker_exception is not None or (stopped and len(self._closed_jobs) == self.started)


class _MapResults(list):  # type: ignore[type-arg]
    """The Map Run's outputs, with what the ResultWriter needs to write AWS's result files."""

    records: list[dict[str, Any]]
    map_run_arn: str


def _map_run(self: Any, env: Any, eval_input: Any) -> None:
    items = env.stack.pop()
    record = eval_input.map_run_record
    pool = _BudgetPool(
        self._get_iteration_program(), items, math.floor(len(items) * record.tolerated_failure_percentage / 100)
    )
    workers = len(items) if record.max_concurrency == 0 else min(record.max_concurrency, len(items))
    for _ in range(workers):
        self._launch_worker(env=env, eval_input=eval_input, job_pool=pool)
    pool.await_jobs()
    if pool.get_worker_exception() is not None:
        raise pool.get_worker_exception()
    results = _MapResults(closed.job_output for closed in pool.get_closed_jobs())
    results.records = [pool.records[index] for index in sorted(pool.records)]
    results.map_run_arn = record.map_run_arn
    if pool.failures > pool.tolerated:
        cause = f"{pool.failures} of {len(items)} child executions failed, more than the {pool.tolerated} tolerated"
        name = StatesErrorName(typ=StatesErrorNameType.StatesExceedToleratedFailureThreshold)
        details = MapRunFailedEventDetails(error=name.error_name, cause=cause)
        failure = FailureEventException(
            FailureEvent(env, name, HistoryEventType.MapRunFailed, EventDetails(mapRunFailedEventDetails=details))
        )
        failure.results = results  # type: ignore[attr-defined]
        raise failure
    env.stack.append(results)


_original_eval_job = distributed_item_processor_worker.DistributedItemProcessorWorker._eval_job
_original_eval_input = inline_item_processor_worker.InlineItemProcessorWorker._eval_input
_original_eval_execution = state_map.StateMap._eval_execution


def _eval_job(self: Any, env: Any, job: Any) -> None:
    _current.child_input = job.job_input
    started = _now()
    _original_eval_job(self, env, job)
    state = env.program_state()
    record = {
        "ExecutionArn": f"{self._map_run_record.map_run_arn}:{job.job_index}",
        "Input": json.dumps(_current.child_input),
        "InputDetails": {"Included": True},
        "Name": str(job.job_index),
        "RedriveCount": 0,
        "RedriveStatus": "NOT_REDRIVABLE",
        "StartDate": started,
        "StateMachineArn": self._map_run_record.map_state_machine_arn,
        "StopDate": _now(),
    }
    if isinstance(state, ProgramError) or (job.job_output is None and not isinstance(state, ProgramStopped)):
        details = state.error if isinstance(state, ProgramError) and state.error else {}
        record |= {"Status": "FAILED", "Error": details.get("error", ""), "Cause": details.get("cause", "")}
    elif isinstance(state, ProgramStopped):
        record |= {"Status": "ABORTED", "Error": state.error or "", "Cause": state.cause or ""}
    else:
        record |= {"Status": "SUCCEEDED", "Output": json.dumps(job.job_output), "OutputDetails": {"Included": True}}
    if isinstance(self._job_pool, _BudgetPool):
        self._job_pool.finished(job.job_index, record)


def _eval_input(self: Any, env_frame: Any) -> None:
    _original_eval_input(self, env_frame)
    _current.child_input = env_frame.states.get_input()  # after the ItemSelector: the child's own input


def _eval_execution(self: Any, env: Any) -> None:
    try:
        _original_eval_execution(self, env)
    except FailureEventException as failure:
        results = getattr(failure, "results", None)
        if results is not None and self.result_writer is not None:
            env.stack.append(results)
            self.result_writer.eval(env)
            env.stack.pop()
        raise


def _write_results(self: Any, env: Any) -> None:
    """ResultWriter, its Parameters read from the Map state's input (as AWS does), not from the results."""
    results = env.stack.pop()
    env.stack.append(env.states.get_input())
    self.parargs.eval(env=env)
    parameters = env.stack.pop()
    env.stack.pop()
    env.stack.extend([results, parameters])
    self.resource_eval.eval_resource(env=env)


def _put_results(env: Any, resource_runtime_part: Any, state_credentials: Any) -> None:
    parameters = env.stack.pop()
    results = env.stack.pop()
    s3 = boto3.client("s3", region_name=REGION)
    prefix = parameters["Prefix"].rstrip("/") + "/" if parameters["Prefix"] else ""
    folder = f"{prefix}{results.map_run_arn.split(':')[-1]}/"
    files: dict[str, list[dict[str, Any]]] = {"FAILED": [], "PENDING": [], "SUCCEEDED": []}
    for status in ("SUCCEEDED", "FAILED"):
        entries = [record for record in results.records if (record["Status"] == "SUCCEEDED") == (status == "SUCCEEDED")]
        if entries:
            body = json.dumps(entries).encode()
            s3.put_object(Bucket=parameters["Bucket"], Key=f"{folder}{status}_0.json", Body=body)
            files[status].append({"Key": f"{folder}{status}_0.json", "Size": len(body)})
    manifest = {"DestinationBucket": parameters["Bucket"], "MapRunArn": results.map_run_arn, "ResultFiles": files}
    s3.put_object(Bucket=parameters["Bucket"], Key=f"{folder}manifest.json", Body=json.dumps(manifest).encode())
    details = {"Bucket": parameters["Bucket"], "Key": f"{folder}manifest.json"}
    env.stack.append({"MapRunArn": results.map_run_arn, "ResultWriterDetails": details})


_original_environment = execution_worker.ExecutionWorker._get_evaluation_environment


def _environment(self: Any) -> Any:
    env = _original_environment(self)
    env.states.context_object.context_object_data["Execution"]["RedriveCount"] = 0
    return env


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


PATCHES: list[tuple[Any, str, Any]] = [
    (distributed_iteration_component.DistributedIterationComponent, "_map_run", _map_run),
    (distributed_item_processor_worker.DistributedItemProcessorWorker, "_eval_job", _eval_job),
    (inline_item_processor_worker.InlineItemProcessorWorker, "_eval_input", _eval_input),
    (state_map.StateMap, "_eval_execution", _eval_execution),
    (result_writer_decl.ResultWriter, "_eval_body", _write_results),
    (resource_eval_s3.ResourceEvalS3, "_handle_put_object", staticmethod(_put_results)),
    (execution_worker.ExecutionWorker, "_get_evaluation_environment", _environment),
]

"""The Lambda entry point (``premigrate.lambda_handler.lambda_handler`` in template.yaml).

It tells the caller from the event's shape and hands the event to that caller's adapter:
CloudFormation custom resource (``ResponseURL``; a fleet's names a ``StateMachineArn``), CodePipeline job
(``CodePipeline.job``), a step of the fleet's state machine (``fleet``) or a direct invoke (``action``).
Every caller gets an answer, whatever the event holds.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from premigrate.service.settings import tracing_enabled
from premigrate.triggers import cloudformation, codepipeline, direct
from premigrate.triggers.invocation import logger, metrics


def _handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    def time_left() -> float:
        return context.get_remaining_time_in_millis() / 1000

    metrics.add_metric("Requests", MetricUnit.Count, 1)
    if not isinstance(event, dict):
        logger.error("the event is not a JSON object")
        return {"ok": False, "error": "the event must be a JSON object", "error_kind": "configuration"}
    if "ResponseURL" in event or "RequestType" in event:
        logger.set_correlation_id(str(event.get("RequestId")))
        properties = event.get("ResourceProperties")
        if isinstance(properties, dict) and "StateMachineArn" in properties:
            from premigrate.triggers import fleet_cloudformation

            return fleet_cloudformation.handle(event, time_left)
        return cloudformation.handle(event, time_left)
    if "CodePipeline.job" in event:
        job = event["CodePipeline.job"]
        logger.set_correlation_id(str(job.get("id") if isinstance(job, dict) else None))
        return codepipeline.handle(event, time_left)
    logger.set_correlation_id(context.aws_request_id)
    if "fleet" in event:
        from premigrate.triggers import fleet  # only the fleet's state machine sends these: off cold start

        return fleet.handle(event, time_left)
    return direct.handle(event, context.aws_request_id, time_left)


if tracing_enabled(os.environ):
    # aws_xray_sdk costs about 230 ms of cold start even when idle: only when tracing is switched on.
    try:
        from aws_lambda_powertools import Tracer

        _handler = Tracer(service="premigrate").capture_lambda_handler(_handler)
    except ImportError:
        logger.warning("PREMIGRATE_TRACING is on, but aws-xray-sdk is not in the package: running without tracing")

lambda_handler = metrics.log_metrics(capture_cold_start_metric=True)(
    logger.inject_lambda_context(log_event=False)(_handler)
)

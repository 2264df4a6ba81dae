"""Run the Lambda handler in this process, with a realistic context: no Docker, no AWS account.

    >>> result = invoke({"action": "plan"}, remaining_seconds=300)

CloudFormation responses still go to the event's ResponseURL (an http://127.0.0.1 URL works locally).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LocalContext:
    """The fields of the Lambda context object that premigrate and powertools read."""

    remaining_seconds: float
    function_name: str = "premigrate-local"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/premigrate-local"
    log_stream_name: str = "local"
    _started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:local:000000000000:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(int((self.remaining_seconds - (time.monotonic() - self._started)) * 1000), 0)


def invoke(event: Any, remaining_seconds: float = 900.0) -> dict[str, Any]:
    from premigrate.lambda_handler import lambda_handler

    result: dict[str, Any] = lambda_handler(event, LocalContext(remaining_seconds))
    return result

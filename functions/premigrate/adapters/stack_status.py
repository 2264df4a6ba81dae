"""The status of the stack a custom resource request comes from (``cloudformation:DescribeStacks``).

CloudFormation rolls a stack back by sending an Update back to the old properties, with no flag in the
event: the stack's status (``UPDATE_ROLLBACK_IN_PROGRESS``) is the one reliable sign. The function needs
that one read-only permission and a route to the CloudFormation API (a NAT, or its VPC endpoint).
"""

from __future__ import annotations

from premigrate.engine import ConfigurationError


def stack_status(stack_id: str) -> str:
    """The stack's current status, like ``UPDATE_IN_PROGRESS``; ConfigurationError when it cannot be read."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    parts = stack_id.split(":")
    region = parts[3] if len(parts) > 5 and parts[2] == "cloudformation" else None
    # Bounded: the timeout guard must still be able to answer after a read that gets nowhere.
    config = Config(connect_timeout=2, read_timeout=4, retries={"total_max_attempts": 2, "mode": "standard"})
    try:
        client = boto3.client("cloudformation", region_name=region, config=config)
        stacks = client.describe_stacks(StackName=stack_id)["Stacks"]
        return str(stacks[0]["StackStatus"])
    except (BotoCoreError, ClientError, KeyError, IndexError) as error:
        code = error.response.get("Error", {}).get("Code") if isinstance(error, ClientError) else type(error).__name__
        raise ConfigurationError(
            f"could not read the status of stack {stack_id} ({code}), which tells a rollback from a deploy: the "
            "function needs cloudformation:DescribeStacks on it and a route to the CloudFormation API (a NAT "
            "gateway or the CloudFormation VPC endpoint)"
        ) from None


def is_rolling_back(status: str) -> bool:
    """UPDATE_ROLLBACK_IN_PROGRESS (and its import twin): the Update brings the stack's old properties back."""
    return status.endswith("ROLLBACK_IN_PROGRESS")

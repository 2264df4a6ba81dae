"""IAM database authentication: a 15-minute token from the function's role instead of a password.

>>> params = replace(params, password=iam_auth_token(params))
"""

from __future__ import annotations

import boto3

from premigrate.adapters.connection import ConnectionParams
from premigrate.engine import ConfigurationError


def iam_auth_token(params: ConnectionParams) -> str:
    if params.host is None or params.sslmode in ("disable", "allow", "prefer"):
        raise ConfigurationError("IAM database authentication needs a TCP host and TLS (sslmode=verify-full)")
    token: str = boto3.client("rds").generate_db_auth_token(
        DBHostname=params.host, Port=params.port, DBUsername=params.user
    )
    return token

"""The database secret from AWS Secrets Manager, as RDS writes it (username, password, host, port, dbname).

>>> params = read_secret("prod/app/db")
"""

from __future__ import annotations

from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError, TransformParameterError

from premigrate.adapters.connection import ConnectionParams, params_from_secret
from premigrate.engine import ConfigurationError


def read_secret(
    secret_id: str,
    *,
    sslmode: str | None = None,
    sslrootcert: str | None = None,
    force_fetch: bool = False,
    max_age: int = 300,
    version_stage: str | None = None,
) -> ConnectionParams:
    """Connection settings from the secret; cached for ``max_age`` seconds unless ``force_fetch``.

    ``version_stage="AWSPENDING"`` reads the value a rotation is about to make current; the cache does not
    tell stages apart, so such a read always fetches, and is kept for no time, so that the next read of the
    current value never gets the pending one from the cache.
    """
    stage = {"VersionStage": version_stage} if version_stage else {}
    try:
        secret = parameters.get_secret(
            secret_id,
            transform="json",
            max_age=0 if version_stage else max_age,
            force_fetch=force_fetch or bool(version_stage),
            **stage,
        )
    except TransformParameterError:
        raise ConfigurationError(
            f"secret {secret_id} is not JSON; it must hold username, password, host, port and dbname"
        ) from None
    except GetParameterError as error:
        raise ConfigurationError(
            f"could not read secret {secret_id}: {error}. Check the secret's name or ARN, the region "
            "(AWS_REGION) and that this role may call secretsmanager:GetSecretValue on it"
        ) from None
    return params_from_secret(secret, sslmode=sslmode, sslrootcert=sslrootcert)

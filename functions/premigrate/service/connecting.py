"""The connection policy, the same for every front door: where the database is (URL, secret, or the
embedded server on a laptop), how to log in (password or IAM token), TLS, and riding out a rotated secret
or a brief outage such as an RDS failover.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from premigrate.adapters.connection import ConnectionParams, params_from_url
from premigrate.adapters.postgres import AuthenticationFailedError, UnreachableError, connect
from premigrate.engine import ConfigurationError
from premigrate.engine.clock import Clock, TimeBudget
from premigrate.engine.database import Database
from premigrate.service.observer import Observer
from premigrate.service.settings import Config

CONNECT_ATTEMPTS = 3
_SECRET_STAGES: list[tuple[bool, str | None]] = [(False, None), (True, None), (True, "AWSPENDING")]
"""How to read the secret on each try: cached, fetched again (a finished rotation), its pending version
(a rotation half-way)."""


def bundled_ca() -> str | None:
    """The RDS CA bundle that ``make build`` puts into the Lambda package, when this is one."""
    path = Path(__file__).resolve().parent.parent / "rds-ca-bundle.pem"
    return str(path) if path.exists() else None


def describe_database(config: Config) -> str:
    """Where a run connects, for messages: never a password."""
    if config.database_url:
        return _url_params(config).describe()
    return f"the database of secret {_required_secret(config)}"


def database_identity(config: Config) -> str:
    """A stable name of the target database (never a password): the same database gives the same id."""
    where = _url_params(config).describe() if config.database_url else _required_secret(config)
    digest = hashlib.sha256(f"{where}|{config.schema}".encode()).hexdigest()[:16]
    return f"premigrate-{digest}"


def with_embedded_database(config: Config) -> Config:
    """The command line's default: with no database given, the embedded PostgreSQL under ``embedded_dir``."""
    if config.database_url or config.secret_id:
        return config
    from premigrate.adapters.embedded import start_embedded

    return replace(config, database_url=start_embedded(Path(config.embedded_dir)))


def open_database(
    config: Config,
    budget: TimeBudget,
    clock: Clock,
    observer: Observer,
    should_stop: Callable[[], bool] = lambda: False,
) -> Database:
    """A session, or a ConfigurationError that says what to check; no retry once ``should_stop()``."""
    connector = _Connector(config, budget, clock, observer, should_stop)
    if config.database_url:
        return connector.connect(_url_params(config))
    _required_secret(config)
    refused: AuthenticationFailedError | None = None
    for force_fetch, version_stage in _SECRET_STAGES:
        if refused is not None:
            observer.warning(
                "the database refused the secret's credentials; reading the secret again",
                next_stage=version_stage or "AWSCURRENT",
            )
        try:
            params = connector.secret_params(force_fetch=force_fetch, version_stage=version_stage)
        except ConfigurationError:
            if version_stage and refused is not None:  # no rotation under way: the refusal is the answer
                raise refused from None
            raise
        try:
            return connector.connect(params)
        except AuthenticationFailedError as error:
            refused = error
    assert refused is not None
    raise refused


def _required_secret(config: Config) -> str:
    if not config.secret_id:
        raise ConfigurationError(
            "no database given: set PREMIGRATE_SECRET_ID to the RDS secret's ARN, or PREMIGRATE_DATABASE_URL "
            "(--secret-id or --database-url on the command line)"
        )
    return config.secret_id


def _url_params(config: Config) -> ConnectionParams:
    return params_from_url(config.database_url or "", sslmode=config.sslmode, sslrootcert=_ca_bundle(config))


def _ca_bundle(config: Config) -> str | None:
    return config.ca_bundle or bundled_ca()


class _Connector:
    def __init__(
        self, config: Config, budget: TimeBudget, clock: Clock, observer: Observer, should_stop: Callable[[], bool]
    ) -> None:
        self.config = config
        self.budget = budget
        self.clock = clock
        self.observer = observer
        self.should_stop = should_stop

    def secret_params(self, *, force_fetch: bool, version_stage: str | None) -> ConnectionParams:
        from premigrate.adapters.secret import read_secret  # boto3 only when a secret is asked for

        assert self.config.secret_id is not None
        return read_secret(
            self.config.secret_id,
            sslmode=self.config.sslmode,
            sslrootcert=_ca_bundle(self.config),
            force_fetch=force_fetch,
            version_stage=version_stage,
        )

    def connect(self, params: ConnectionParams) -> Database:
        if self.config.iam_auth:
            from premigrate.adapters.iam_auth import iam_auth_token

            params = replace(params, password=iam_auth_token(params))
        for attempt in range(1, CONNECT_ATTEMPTS + 1):
            try:
                return connect(params)
            except UnreachableError:
                pause = 2.0 ** (attempt - 1) * random.uniform(0.75, 1.25)
                if attempt == CONNECT_ATTEMPTS or self.budget.remaining() < pause or self.should_stop():
                    raise
                self.observer.warning("could not connect; trying again", attempt=attempt, pause_s=round(pause, 2))
                self.clock.sleep(pause)
        raise AssertionError("unreachable: the last attempt returns or raises")

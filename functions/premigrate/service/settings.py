"""Every setting, declared once: its environment variable, default, kind and help text.

The CLI's options are generated from ``Config``'s fields, the Lambda reads its environment through the
same fields, and a caller's per-request values (a direct invoke's ``target``, say) are checked by the same
kinds. Engine defaults come from the engine's own ``Settings``, so no default is written twice.

    >>> config = load_config("lambda", os.environ)
    >>> config.lock_wait_seconds
    300.0
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from premigrate.adapters.connection import SSL_MODES
from premigrate.engine import ConfigurationError, Settings
from premigrate.service.setting_kinds import DURATION, FLAG, PHASE, SSLMODE, TEXT, VERSION, Kind

FRONT_DOORS = {"cli": "the command line", "lambda": "the Lambda function"}


@dataclass(frozen=True)
class Spec:
    env: str
    kind: Kind
    help: str
    metavar: str | None = None
    front_doors: frozenset[str] = frozenset(FRONT_DOORS)

    @property
    def option(self) -> str:
        return "--" + self.env.removeprefix("PREMIGRATE_").lower().replace("_", "-")


def _setting(default: Any, env: str, kind: Kind, help: str, metavar: str | None = None, **more: Any) -> Any:
    return field(default=default, metadata={"spec": Spec(env, kind, help, metavar, **more)})


_ENGINE = Settings()


@dataclass(frozen=True)
class Config:
    """Everything a run is configured with, whichever front door it came through."""

    database_url: str | None = _setting(
        None,
        "PREMIGRATE_DATABASE_URL",
        TEXT,
        "postgresql://user:password@host:5432/db?sslmode=verify-full; with neither this nor --secret-id the "
        "command line starts an embedded PostgreSQL",
        "URL",
    )
    secret_id: str | None = _setting(
        None, "PREMIGRATE_SECRET_ID", TEXT, "Secrets Manager secret (name or ARN) with the RDS connection JSON", "ID"
    )
    sslmode: str | None = _setting(
        None,
        "PREMIGRATE_SSLMODE",
        SSLMODE,
        f"TLS mode where the URL names none, and for the secret: {', '.join(SSL_MODES)} "
        "(none given: verify-full over TCP)",
        "MODE",
    )
    ca_bundle: str | None = _setting(
        None,
        "PREMIGRATE_CA_BUNDLE",
        TEXT,
        "CA bundle that signed the server's certificate, where the URL names no sslrootcert (none given: the "
        "RDS bundle in the Lambda package, else the system's)",
        "FILE",
    )
    iam_auth: bool = _setting(
        False,
        "PREMIGRATE_IAM_AUTH",
        FLAG,
        "IAM database authentication: a token from the AWS credentials replaces the password",
    )
    migrations: str = _setting(
        "migrations",
        "PREMIGRATE_MIGRATIONS",
        TEXT,
        "folder of V<version>__<description>.sql and R__<description>.sql files (in the Lambda function, "
        "relative to its code)",
        "DIR",
    )
    schema: str = _setting(_ENGINE.schema, "PREMIGRATE_SCHEMA", TEXT, "schema of the history table", "NAME")
    lock_wait_seconds: float = _setting(
        _ENGINE.lock_wait_seconds,
        "PREMIGRATE_LOCK_WAIT",
        DURATION,
        "how long to wait for another run's migration lock",
        "DURATION",
    )
    lock_timeout_seconds: float = _setting(
        _ENGINE.lock_timeout_seconds,
        "PREMIGRATE_LOCK_TIMEOUT",
        DURATION,
        "PostgreSQL lock_timeout for migration statements; a migration that hits it is retried with backoff",
        "DURATION",
    )
    statement_timeout_seconds: float = _setting(
        _ENGINE.statement_timeout_seconds,
        "PREMIGRATE_STATEMENT_TIMEOUT",
        DURATION,
        "PostgreSQL statement_timeout for migration statements, 0 = none",
        "DURATION",
    )
    target: str | None = _setting(
        _ENGINE.target, "PREMIGRATE_TARGET", VERSION, "apply versions up to this one only", "VERSION"
    )
    phase: str = _setting(
        _ENGINE.phase,
        "PREMIGRATE_PHASE",
        PHASE,
        "which migrations a run applies: before-rollout (all but the files marked -- premigrate:after-rollout), "
        "after-rollout (only those, once every before-rollout one is applied) or all (default, in version order, "
        "as GitLab's default; the custom resource and the pipeline action default to before-rollout)",
        "PHASE",
    )
    all_or_nothing: bool = _setting(
        _ENGINE.all_or_nothing,
        "PREMIGRATE_ALL_OR_NOTHING",
        FLAG,
        "apply the run's consecutive transactional migrations in one transaction (a no-transaction file splits "
        "the group): a failure leaves the database as it was before the group",
    )
    allow_out_of_order: bool = _setting(
        _ENGINE.allow_out_of_order,
        "PREMIGRATE_OUT_OF_ORDER",
        FLAG,
        "apply pending versions lower than the highest applied one",
    )
    accept_database_ahead: bool = _setting(
        _ENGINE.accept_database_ahead,
        "PREMIGRATE_ACCEPT_DATABASE_AHEAD",
        FLAG,
        "succeed without changes when the database has versions newer than the files (an older release "
        "deployed again); a CloudFormation Update always does",
    )
    time_margin_seconds: float = _setting(
        _ENGINE.time_margin_seconds,
        "PREMIGRATE_TIME_MARGIN",
        DURATION,
        "with a time budget (the Lambda function, `premigrate invoke`): no migration starts this close to its end",
        "DURATION",
    )
    tracing: bool = _setting(
        False,
        "PREMIGRATE_TRACING",
        FLAG,
        "X-Ray tracing of the Lambda handler (the function, `premigrate invoke`); costs about 230 ms of cold start",
    )
    embedded_dir: str = _setting(
        ".premigrate",
        "PREMIGRATE_EMBEDDED_DIR",
        TEXT,
        "where the embedded PostgreSQL keeps its data",
        "DIR",
        front_doors=frozenset({"cli"}),
    )

    def engine_settings(self) -> Settings:
        names = {f.name for f in fields(Settings)}
        return replace(_ENGINE, **{f.name: getattr(self, f.name) for f in fields(self) if f.name in names})

    def with_values(self, values: Mapping[str, object], where: str) -> Config:
        """This config with a caller's values (JSON, already limited to the keys it may set), checked by
        the same kinds as the environment's; ``where`` names the caller in messages."""
        checked = {name: _coerce(SPECS[name], value, f"{where} {name!r}") for name, value in values.items()}
        return replace(self, **checked)

    def to_environ(self) -> dict[str, str]:
        """The environment that configures the Lambda function as this config does (for ``premigrate invoke``)."""
        return {
            spec.env: spec.kind.format(getattr(self, name))
            for name, spec in SPECS.items()
            if "lambda" in spec.front_doors and getattr(self, name) is not None
        }


SPECS: dict[str, Spec] = {f.name: f.metadata["spec"] for f in fields(Config)}


def _coerce(spec: Spec, value: object, source: str) -> Any:
    try:
        return spec.kind.coerce(value)
    except (ValueError, OverflowError) as error:
        raise ConfigurationError(f"{source}: {hide_passwords(str(error))}") from None


_PASSWORD_IN_URL = re.compile(r"(\w+://[^\s:/@]*:).*@")
"""user:password@ in a URL, up to the last @ of the line: an unencoded password may hold spaces, / or @."""


def hide_passwords(text: str) -> str:
    """The text with the password of any URL in it replaced by ***: for messages that echo what was given."""
    return _PASSWORD_IN_URL.sub(r"\1***@", text)


def load_config(
    front_door: str, environ: Mapping[str, str] = os.environ, options: Mapping[str, object] | None = None
) -> Config:
    """Each setting from its option (the CLI's), else its environment variable, else its default.

    A setting the front door does not use is refused when given, with a message."""
    options = options or {}
    values: dict[str, Any] = {}
    for name, spec in SPECS.items():
        if options.get(name) is not None:
            source, raw = spec.option, options[name]
        elif environ.get(spec.env):
            source, raw = spec.env, environ[spec.env]
        else:
            continue
        if front_door not in spec.front_doors:
            raise ConfigurationError(
                f"{source} is a setting of {' and '.join(FRONT_DOORS[d] for d in spec.front_doors)}; "
                f"{FRONT_DOORS[front_door]} does not use it: remove it"
            )
        values[name] = _coerce(spec, raw, source)
    return Config(**values)


def tracing_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Read at import, before any config is loaded: a bad value means off here, and is refused with a
    message by the first ``load_config`` of the invocation."""
    try:
        return bool(FLAG.coerce(environ.get(SPECS["tracing"].env) or "false"))
    except ValueError:
        return False


def resolve_path(path: str, base_dir: str | None) -> Path:
    """A configured path, relative to ``base_dir`` (the Lambda's code) when it is relative."""
    return Path(base_dir, path) if base_dir and not Path(path).is_absolute() else Path(path)

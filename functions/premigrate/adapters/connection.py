"""Where and how to reach PostgreSQL: connection settings from a libpq-style URL or an RDS-style secret.

    >>> params = params_from_url("postgresql://app:pw@db.example.com:5432/app?sslmode=verify-full")
    >>> params.describe()
    'app@db.example.com:5432/app (TLS verify-full)'

TLS is verified in full (CA and host name) by default over TCP; a plaintext connection only happens
when ``sslmode=disable`` says so. Unix sockets never use TLS. No password ever appears in a message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from premigrate.engine import ConfigurationError

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


@dataclass(frozen=True)
class ConnectionParams:
    user: str
    password: str | None = field(default=None, repr=False)
    host: str | None = None
    port: int = 5432
    database: str = "postgres"
    socket_dir: str | None = None
    """Directory of the server's unix socket; used instead of host when set."""
    sslmode: str = "verify-full"
    sslrootcert: str | None = None

    def describe(self) -> str:
        """Where we connect, for messages: never includes the password."""
        where = f"{self.host}:{self.port}" if self.socket_dir is None else f"socket {self.socket_dir}"
        tls = "" if self.socket_dir is not None else f" (TLS {self.sslmode})"
        return f"{self.user}@{where}/{self.database}{tls}"


def params_from_url(url: str, *, sslmode: str | None = None, sslrootcert: str | None = None) -> ConnectionParams:
    """Read a libpq-style URL: postgresql://user:password@host:port/db?sslmode=…&sslrootcert=…&host=/socket/dir.

    ``sslmode`` and ``sslrootcert`` apply where the URL says nothing, as PGSSLMODE and PGSSLROOTCERT do for
    libpq; without either, TCP connections verify in full and unix sockets use no TLS."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ConfigurationError(
            "the database URL must look like postgresql://user:password@host:5432/dbname "
            f"(it starts with {parts.scheme + '://' if parts.scheme else 'no scheme'})"
        )
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    try:
        port = int(query.get("port") or parts.port or 5432)
    except ValueError:
        raise ConfigurationError("the port in the database URL is not a number") from None
    host = unquote(parts.hostname or "") or query.get("host")
    socket_dir = None
    if not host or host.startswith("/"):
        socket_dir = host or "/var/run/postgresql"
        host = None
    return _checked(
        ConnectionParams(
            user=unquote(parts.username or query.get("user") or "postgres"),
            password=unquote(parts.password) if parts.password else query.get("password"),
            host=host,
            port=port,
            database=unquote(parts.path.lstrip("/")) or query.get("dbname") or "postgres",
            socket_dir=socket_dir,
            sslmode=query.get("sslmode") or sslmode or ("disable" if socket_dir else "verify-full"),
            sslrootcert=query.get("sslrootcert") or sslrootcert,
        )
    )


def params_from_secret(secret: Any, *, sslmode: str | None = None, sslrootcert: str | None = None) -> ConnectionParams:
    """Read an RDS-style JSON secret: username, password, host, port, dbname (engine is ignored)."""
    if not isinstance(secret, dict):
        raise ConfigurationError(
            "the database secret must be a JSON object with username, password, host, port and dbname "
            f"(it is a {type(secret).__name__})"
        )
    missing = [key for key in ("username", "password", "host") if not isinstance(secret.get(key), str)]
    if missing:
        raise ConfigurationError(
            f"the database secret lacks {', '.join(missing)} (or they are not strings); it needs username, "
            "password, host and optionally port and dbname, as RDS writes them"
        )
    try:
        port = int(secret.get("port") or 5432)
    except (TypeError, ValueError):
        raise ConfigurationError("the database secret's port is not a number") from None
    host = secret["host"]
    return _checked(
        ConnectionParams(
            user=secret["username"],
            password=secret["password"],
            # As in libpq, a host that starts with / is the directory of a unix socket.
            host=None if host.startswith("/") else host,
            socket_dir=host if host.startswith("/") else None,
            port=port,
            database=str(secret.get("dbname") or "postgres"),
            sslmode=sslmode or "verify-full",
            sslrootcert=sslrootcert,
        )
    )


def _checked(params: ConnectionParams) -> ConnectionParams:
    if params.sslmode not in SSL_MODES:
        raise ConfigurationError(f"sslmode {params.sslmode!r} is unknown; use one of {', '.join(SSL_MODES)}")
    return params

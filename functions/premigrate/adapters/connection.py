"""Reach PostgreSQL: connection settings from a URL or an RDS-style secret, and a pg8000 connection.

    >>> params = params_from_url("postgresql://app:pw@db.example.com:5432/app?sslmode=verify-full")
    >>> params.describe()
    'app@db.example.com:5432/app (TLS verify-full)'
    >>> connection = connect(params)

TLS is verified in full (CA and host name) by default over TCP; a plaintext connection only happens
when ``sslmode=disable`` says so. Unix sockets never use TLS. No password ever appears in a message.
"""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pg8000.native
from pg8000.exceptions import DatabaseError, InterfaceError

from premigrate.engine import ConfigurationError
from premigrate.engine.database import server_error

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_AUTHENTICATION_FAILED = {"28P01", "28000"}
_TLS_HELP = (
    "give the CA bundle that signed the server's certificate with sslrootcert=FILE in the URL (for RDS, "
    "the RDS global bundle), or sslmode=disable for a local server without TLS"
)


class AuthenticationFailedError(ConfigurationError):
    """The server refused the user name or password (a rotated secret, say)."""


class UnreachableError(ConfigurationError):
    """No connection could be made at the network level: maybe brief (a failover), so worth another try."""


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


def params_from_url(url: str) -> ConnectionParams:
    """Read a libpq-style URL: postgresql://user:password@host:port/db?sslmode=…&sslrootcert=…&host=/socket/dir."""
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
            sslmode=query.get("sslmode", "disable" if socket_dir else "verify-full"),
            sslrootcert=query.get("sslrootcert"),
        )
    )


def params_from_secret(
    secret: Any, *, sslmode: str = "verify-full", sslrootcert: str | None = None
) -> ConnectionParams:
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
            sslmode=sslmode,
            sslrootcert=sslrootcert,
        )
    )


def _checked(params: ConnectionParams) -> ConnectionParams:
    if params.sslmode not in SSL_MODES:
        raise ConfigurationError(f"sslmode {params.sslmode!r} is unknown; use one of {', '.join(SSL_MODES)}")
    return params


def tls_context(params: ConnectionParams) -> ssl.SSLContext | bool | None:
    """What pg8000 takes: False = plaintext, None = TLS if offered, a context = TLS required."""
    if params.socket_dir is not None or params.sslmode == "disable":
        return False
    if params.sslmode in ("allow", "prefer"):
        return None
    try:
        context = ssl.create_default_context(cafile=params.sslrootcert)
    except (OSError, ssl.SSLError) as error:
        raise ConfigurationError(f"cannot read the CA bundle {params.sslrootcert}: {error}") from None
    if params.sslmode == "require":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif params.sslmode == "verify-ca":
        context.check_hostname = False
    return context


def _refused(params: ConnectionParams, fields: dict[str, str]) -> ConfigurationError:
    if fields.get("C") in _AUTHENTICATION_FAILED:
        return AuthenticationFailedError(
            f"the server refused the credentials for {params.describe()} ({fields.get('M')}); "
            "check the user name and password"
        )
    return ConfigurationError(f"could not connect to {params.describe()}: {fields.get('M', 'refused')}")


def connect(
    params: ConnectionParams, *, application_name: str = "premigrate", connect_timeout: float = 10.0
) -> pg8000.native.Connection:
    """A connection, or a ConfigurationError that says what to check."""
    socket_path = f"{params.socket_dir}/.s.PGSQL.{params.port}" if params.socket_dir else None
    try:
        connection = pg8000.native.Connection(
            user=params.user,
            password=params.password,
            host=params.host if socket_path is None else None,
            port=params.port,
            database=params.database,
            unix_sock=socket_path,
            ssl_context=tls_context(params),
            timeout=connect_timeout,
            tcp_keepalive=True,
            application_name=application_name,
        )
    except ssl.SSLCertVerificationError as error:
        help_text = _TLS_HELP
        if "mismatch" in str(error.verify_message):
            help_text = (
                "connect with the host name the certificate names (for RDS, the instance's or cluster's "
                "endpoint, not an IP address or an alias of your own)"
            )
        raise ConfigurationError(
            f"could not verify the TLS certificate of {params.describe()}: {error.verify_message}; {help_text}"
        ) from None
    except InterfaceError as error:
        if refusal := server_error(error):
            raise _refused(params, refusal) from None
        if "refuses SSL" in str(error):
            raise ConfigurationError(
                f"{params.describe()} does not offer TLS. Enable TLS on the server, or add sslmode=disable to "
                "the URL to connect in plaintext (only on a trusted network)"
            ) from None
        raise UnreachableError(
            f"could not connect to {params.describe()}: {error.__cause__ or error}. Check the host, port and "
            "that the network (security groups, VPC routes) lets this machine reach the database"
        ) from None
    except DatabaseError as error:
        raise _refused(params, server_error(error)) from None
    # pg8000 keeps the connect timeout as the socket's read timeout, which would cut a long
    # CREATE INDEX short; the server's statement_timeout bounds statements instead.
    connection._usock.settimeout(None)
    return connection


def close_quietly(connection: pg8000.native.Connection) -> None:
    """Close, ignoring a connection the server already ended: that must not hide the error that ended it."""
    with contextlib.suppress(InterfaceError, OSError):
        connection.close()

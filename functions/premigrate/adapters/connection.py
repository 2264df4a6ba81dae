"""Where and how to reach PostgreSQL: connection settings from a libpq-style URL or an RDS-style secret.

    >>> params = params_from_url("postgresql://app:pw@db.example.com:5432/app?sslmode=verify-full")
    >>> params.describe()
    'app@db.example.com:5432/app (TLS verify-full)'

TLS is verified in full (CA and host name) by default over TCP; a plaintext connection only happens
when ``sslmode=disable`` says so. Unix sockets never use TLS. No password ever appears in a message.
A URL is read as libpq reads it (see ``libpq_url``); where it says nothing, PGHOST, PGPORT, PGUSER,
PGDATABASE and PGPASSWORD apply, then the password file (see ``pgpass``), as for psql.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from premigrate.adapters.libpq_url import split_url
from premigrate.adapters.pgpass import DEFAULT_SOCKET_DIR, host_for_passfile, passfile_path, password_from_file
from premigrate.engine import ConfigurationError

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
DEFAULT_CONNECT_TIMEOUT = 10.0


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
    """The CA bundle to verify the server with; "system" or None: the system's CAs."""
    sslcert: str | None = None
    """A client certificate to present (its key in ``sslkey``, else in the same file)."""
    sslkey: str | None = None
    application_name: str = "premigrate"
    options: str | None = None
    """libpq's ``options``: server settings for the session, such as ``-c search_path=app``."""
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    passfile: str | None = None
    """The password file the URL names (else PGPASSFILE or ~/.pgpass), for the error a missing password causes."""

    def describe(self) -> str:
        """Where we connect, for messages: never includes the password."""
        where = f"{self.host}:{self.port}" if self.socket_dir is None else f"socket {self.socket_dir}"
        tls = "" if self.socket_dir is not None else f" (TLS {self.sslmode})"
        return f"{self.user}@{where}/{self.database}{tls}"


def params_from_url(url: str, *, sslmode: str | None = None, sslrootcert: str | None = None) -> ConnectionParams:
    """Read a libpq-style URL: postgresql://user:password@host:port/db?sslmode=…&sslrootcert=…&host=/socket/dir.

    ``sslmode`` and ``sslrootcert`` apply where the URL says nothing, as PGSSLMODE and PGSSLROOTCERT do for
    libpq; without either, TCP connections verify in full and unix sockets use no TLS. The user and the
    database default to ``postgres`` (libpq's defaults, the login name and the user name, rarely fit a
    deployment)."""
    given = split_url(url)
    host, socket_dir = _host_or_socket(given.get("host") or os.environ.get("PGHOST") or "")
    port = _port(given.get("port") or os.environ.get("PGPORT") or "5432")
    user = given.get("user") or os.environ.get("PGUSER") or "postgres"
    database = given.get("dbname") or os.environ.get("PGDATABASE") or "postgres"
    password = given.get("password") or os.environ.get("PGPASSWORD")
    if not password:
        password = password_from_file(
            passfile_path(given.get("passfile")),
            host=host_for_passfile(host, socket_dir),
            port=port,
            database=database,
            user=user,
        )
    return _checked(
        ConnectionParams(
            user=user,
            password=password or None,
            host=host,
            port=port,
            database=database,
            socket_dir=socket_dir,
            sslmode=given.get("sslmode") or sslmode or ("disable" if socket_dir else "verify-full"),
            sslrootcert=given.get("sslrootcert") or sslrootcert,
            sslcert=given.get("sslcert"),
            sslkey=given.get("sslkey"),
            application_name=given.get("application_name") or given.get("fallback_application_name") or "premigrate",
            options=given.get("options"),
            connect_timeout=_connect_timeout(given.get("connect_timeout")),
            passfile=given.get("passfile"),
        ),
        target_session_attrs=given.get("target_session_attrs", "any"),
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
    host, socket_dir = _host_or_socket(secret["host"])
    return _checked(
        ConnectionParams(
            user=secret["username"],
            password=secret["password"],
            host=host,
            socket_dir=socket_dir,
            port=port,
            database=str(secret.get("dbname") or "postgres"),
            sslmode=sslmode or "verify-full",
            sslrootcert=sslrootcert,
        )
    )


def _host_or_socket(host: str) -> tuple[str | None, str | None]:
    """(TCP host, unix socket directory): as in libpq, a host that starts with / (or none) is a socket's."""
    if not host or host.startswith("/"):
        return None, host or DEFAULT_SOCKET_DIR
    return host, None


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise ConfigurationError(f"the port {text!r} of the database is not a number from 1 to 65535")
    return int(text)


_LONGEST_CONNECT_TIMEOUT = 3600


def _connect_timeout(text: str | None) -> float:
    """libpq's reading: whole seconds, and at least 2. libpq waits forever for 0; premigrate never does."""
    if text is None:
        return DEFAULT_CONNECT_TIMEOUT
    if not (text.strip().isascii() and text.strip().isdigit()) or not 0 < int(text) <= _LONGEST_CONNECT_TIMEOUT:
        raise ConfigurationError(
            f"connect_timeout={text!r} is not a whole number of seconds from 1 to {_LONGEST_CONNECT_TIMEOUT} "
            "(premigrate never waits forever)"
        )
    return float(max(int(text), 2))


def _checked(params: ConnectionParams, *, target_session_attrs: str = "any") -> ConnectionParams:
    if params.sslmode not in SSL_MODES:
        raise ConfigurationError(f"sslmode {params.sslmode!r} is unknown; use one of {', '.join(SSL_MODES)}")
    if params.sslrootcert == "system" and params.sslmode != "verify-full":
        raise ConfigurationError(
            f"sslrootcert=system needs sslmode=verify-full (it is {params.sslmode}), as libpq requires: the "
            "system's CAs vouch for host names"
        )
    if target_session_attrs != "any":
        raise ConfigurationError(
            f"target_session_attrs={target_session_attrs} is not supported: premigrate connects to the one host "
            "the URL names, which must be the primary"
        )
    return params

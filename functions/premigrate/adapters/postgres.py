"""The pg8000 adapter: a PostgreSQL session behind the engine's ``Database`` port.

    >>> database = connect(params_from_url("postgresql://app:pw@db.example.com/app"))
    >>> database.run("SELECT 1")
    [[1]]

It only translates: pg8000's errors become the port's ServerError and ConnectionLostError, and its
connect failures a ConfigurationError that says what to check. It decides nothing about migrations.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from typing import Any

import pg8000.native
from pg8000.exceptions import DatabaseError, InterfaceError

from premigrate.adapters.connection import ConnectionParams
from premigrate.engine import ConfigurationError
from premigrate.engine.database import ConnectionLostError, ServerError

_AUTHENTICATION_FAILED = {"28P01", "28000"}
_SESSION_ENDING_SEVERITIES = {"FATAL", "PANIC"}
_TLS_HELP = (
    "give the CA bundle that signed the server's certificate with sslrootcert=FILE in the URL (for RDS, "
    "the RDS global bundle), or sslmode=disable for a local server without TLS"
)


class AuthenticationFailedError(ConfigurationError):
    """The server refused the user name or password (a rotated secret, say)."""


class UnreachableError(ConfigurationError):
    """No connection could be made at the network level: maybe brief (a failover), so worth another try."""


class PostgresDatabase:
    """One pg8000 session; see ``premigrate.engine.database.Database`` for the contract."""

    def __init__(self, connection: pg8000.native.Connection) -> None:
        self._connection = connection

    def run(self, sql: str, **params: Any) -> list[list[Any]]:
        try:
            rows = self._connection.run(sql, **params)
        except DatabaseError as error:
            refusal = _server_error(error)
            if refusal is None or _ends_session(error):
                raise ConnectionLostError(_lost(error), refusal) from error
            raise refusal from error
        except (InterfaceError, OSError) as error:
            raise ConnectionLostError(_lost(error), _server_error(error)) from error
        return rows or []

    def close(self) -> None:
        # A connection the server already ended must not hide the error that ended it.
        with contextlib.suppress(InterfaceError, OSError):
            self._connection.close()


def _fields(error: BaseException) -> dict[str, str] | None:
    """The ErrorResponse fields of a pg8000 error, also where its "network error" hides them.

    When the server ends a session (a refused login, pg_terminate_backend, a shutdown) it says why and
    closes the socket; pg8000's own clean-up write then fails, and its "network error" keeps the server's
    reason in ``__context__``."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, DatabaseError) and seen.args and isinstance(seen.args[0], dict):
            return {str(key): str(value) for key, value in seen.args[0].items()}
        seen = seen.__context__
    return None


def _server_error(error: BaseException) -> ServerError | None:
    fields = _fields(error)
    if fields is None:
        return None
    position = fields.get("P", "")
    return ServerError(
        fields.get("C", "XX000"),
        fields.get("M", ""),
        position=int(position) if position.isdigit() else None,
        detail=fields.get("D"),
        hint=fields.get("H"),
        context=fields.get("W"),
    )


def _ends_session(error: BaseException) -> bool:
    fields = _fields(error) or {}
    return fields.get("V", fields.get("S")) in _SESSION_ENDING_SEVERITIES


def _lost(error: BaseException) -> str:
    reason = _server_error(error)
    return f"{reason.message} ({reason.sqlstate})" if reason else f"{type(error).__name__}: {error}"


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


class _KeepWrappedSocket:
    """Hands pg8000 a TLS context and keeps the socket it wraps, so its timeout can be changed later."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        self.wrapped: ssl.SSLSocket | None = None

    def wrap_socket(self, sock: socket.socket, server_hostname: str | None = None) -> ssl.SSLSocket:
        self.wrapped = self._context.wrap_socket(sock, server_hostname=server_hostname)
        return self.wrapped


def _open_socket(params: ConnectionParams, timeout: float) -> socket.socket:
    if params.socket_dir is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(f"{params.socket_dir}/.s.PGSQL.{params.port}")
        except OSError:
            sock.close()
            raise
    else:
        sock = socket.create_connection((params.host or "localhost", params.port), timeout)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return sock


def connect(
    params: ConnectionParams, *, application_name: str = "premigrate", connect_timeout: float = 10.0
) -> PostgresDatabase:
    """A session, or a ConfigurationError that says what to check."""
    context = tls_context(params)
    keeper = _KeepWrappedSocket(context) if isinstance(context, ssl.SSLContext) else None
    try:
        sock = _open_socket(params, connect_timeout)
    except OSError as error:
        raise UnreachableError(
            f"could not connect to {params.describe()}: {error}. Check the host, port and that the network "
            "(security groups, VPC routes) lets this machine reach the database"
        ) from None
    try:
        connection = pg8000.native.Connection(
            user=params.user,
            password=params.password,
            host=params.host,
            port=params.port,
            database=params.database,
            sock=sock,
            ssl_context=keeper if keeper is not None else context,
            application_name=application_name,
        )
    except BaseException as error:
        sock.close()
        raise _connect_failure(params, error) from None
    # The connect timeout must not stay the socket's read timeout: it would cut a long CREATE INDEX
    # short. The server's statement_timeout bounds statements instead.
    (keeper.wrapped if keeper is not None and keeper.wrapped is not None else sock).settimeout(None)
    return PostgresDatabase(connection)


def _connect_failure(params: ConnectionParams, error: BaseException) -> BaseException:
    where = params.describe()
    if isinstance(error, ssl.SSLCertVerificationError):
        help_text = _TLS_HELP
        if "mismatch" in str(error.verify_message):
            help_text = (
                "connect with the host name the certificate names (for RDS, the instance's or cluster's "
                "endpoint, not an IP address or an alias of your own)"
            )
        return ConfigurationError(
            f"could not verify the TLS certificate of {where}: {error.verify_message}; {help_text}"
        )
    refusal = _server_error(error)
    if refusal is not None and refusal.sqlstate in _AUTHENTICATION_FAILED:
        return AuthenticationFailedError(
            f"the server refused the credentials for {where} ({refusal.message}); check the user name and password"
        )
    if refusal is not None:
        return ConfigurationError(f"could not connect to {where}: {refusal.message}")
    if "refuses SSL" in str(error):
        return ConfigurationError(
            f"{where} does not offer TLS. Enable TLS on the server, or add sslmode=disable to the URL to "
            "connect in plaintext (only on a trusted network)"
        )
    if isinstance(error, (InterfaceError, OSError)):
        return UnreachableError(
            f"could not connect to {where}: {error.__cause__ or error}. Check the host, port and that the "
            "network (security groups, VPC routes) lets this machine reach the database"
        )
    if isinstance(error, Exception):
        return ConfigurationError(
            f"could not connect to {where}: the server's answer was not understood ({type(error).__name__}: "
            f"{error}). Check that the host and port are a PostgreSQL server's"
        )
    return error  # KeyboardInterrupt, SystemExit: not ours to translate

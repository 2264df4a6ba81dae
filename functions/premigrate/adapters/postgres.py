"""The pg8000 adapter: a PostgreSQL session behind the engine's ``Database`` port.

    >>> database = connect(params_from_url("postgresql://app:pw@db.example.com/app"))
    >>> database.run("SELECT 1")
    [[1]]

It only translates: pg8000's errors become the port's ServerError and ConnectionLostError, and its
connect failures a ConfigurationError that says what to check. It decides nothing about migrations.
``cancel()`` stops the running statement from another thread or a signal handler, as psql's Ctrl-C does.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
import threading
import time
from dataclasses import replace
from typing import Any

import pg8000.native
from pg8000.exceptions import DatabaseError, InterfaceError

from premigrate.adapters.cancel_request import CANCEL_SOCKET_TIMEOUT, CancelKey, cancel_key, send_cancel_request
from premigrate.adapters.connection import ConnectionParams
from premigrate.adapters.pgpass import passfile_path, passfile_problem
from premigrate.adapters.tls import negotiate_tls, tls_context
from premigrate.engine import ConfigurationError
from premigrate.engine.database import ConnectionLostError, ServerError

__all__ = ["AuthenticationFailedError", "PostgresDatabase", "UnreachableError", "connect", "tls_context"]

_AUTHENTICATION_FAILED = {"28P01", "28000"}
CANCEL_WAIT = 3.0
"""At most this many seconds in ``cancel()``; the request goes on in the background if it takes longer."""
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

    def __init__(
        self,
        connection: pg8000.native.Connection,
        params: ConnectionParams | None = None,
        key: CancelKey | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self._connection = connection
        self._params = params
        self._cancel_key = key
        self._sock: socket.socket | None = sock
        """The session's socket (TLS-wrapped when it is), to wait on for notifications; None once lost."""
        self._woken = False
        """The last wait ended on the socket: the notification a run then reads is that one."""

    def run(self, sql: str, **params: Any) -> list[list[Any]]:
        try:
            rows = self._connection.run(sql, **params)
        except DatabaseError as error:
            refusal = _server_error(error)
            if refusal is None or _ends_session(error):
                self._forget_session()
                raise ConnectionLostError(_lost(error), refusal) from error
            raise refusal from error
        except (InterfaceError, OSError) as error:
            self._forget_session()
            raise ConnectionLostError(_lost(error), _server_error(error)) from error
        return rows or []

    def wait_for_notification(self, seconds: float) -> bool:
        # Read by a run since: the one the last wait woke for, and any other, which may have come after
        # what that run asked.
        unannounced = len(self._connection.notifications) > (1 if self._woken else 0)
        self._connection.notifications.clear()
        self._woken = False
        if unannounced:
            return True
        sock = self._sock
        try:
            if sock is None:
                raise OSError("the session is gone")
            # Bytes pg8000 buffered past its last answer are not seen here: they wait for the next run, at
            # most the caller's pause away.
            ready = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
            if not ready:
                # A selector, not select(): select() cannot take a descriptor above 1023 (many sessions).
                with selectors.DefaultSelector() as selector:
                    selector.register(sock, selectors.EVENT_READ)
                    ready = bool(selector.select(max(seconds, 0.0)))
            self._woken = ready
        except (OSError, ValueError):  # closed: the next run says why
            time.sleep(max(seconds, 0.0))
            return False
        return self._woken

    def _forget_session(self) -> None:
        """The session is gone: its pid may soon be another session's, which cancel() must not touch, and
        its socket says nothing more worth waiting for."""
        self._cancel_key = None
        self._sock = None

    def close(self) -> None:
        self._forget_session()  # first, for cancel() from another thread
        # A connection the server already ended must not hide the error that ended it.
        with contextlib.suppress(InterfaceError, OSError):
            self._connection.close()

    def cancel(self) -> None:
        """Asks the server to cancel the statement this session is running (it then fails with 57014).

        Safe from any thread or a signal handler: it never raises, never touches this session's socket and
        returns within CANCEL_WAIT seconds. A session that runs nothing ignores it; one that starts its next
        statement just then may see that one cancelled, as with libpq."""
        key, params = self._cancel_key, self._params
        if key is None or params is None:
            return
        request = threading.Thread(target=_cancel_quietly, args=(key, params), name="premigrate-cancel", daemon=True)
        try:
            request.start()
            request.join(CANCEL_WAIT)
        except Exception:  # a thread that cannot start (interpreter shutting down): nothing to cancel then
            return


def _cancel_quietly(key: CancelKey, params: ConnectionParams) -> None:
    with contextlib.suppress(Exception):
        if key.secret is not None:
            send_cancel_request(key, params)
            return
        # No secret key: a session of our own asks, as the same role may cancel its own sessions.
        helper = connect(replace(params, connect_timeout=CANCEL_SOCKET_TIMEOUT), application_name="premigrate-cancel")
        try:
            helper.run("SELECT pg_cancel_backend(:pid)", pid=key.pid)
        finally:
            helper.close()


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
    params: ConnectionParams, *, application_name: str | None = None, connect_timeout: float | None = None
) -> PostgresDatabase:
    """A session, or a ConfigurationError that says what to check.

    ``application_name`` and ``connect_timeout`` override the URL's (``params``); each step of connecting
    (TCP, TLS, login) must answer within the timeout."""
    context = tls_context(params)
    try:
        raw = _open_socket(params, connect_timeout or params.connect_timeout)
    except UnicodeError:  # from the IDNA encoding of the name: an empty or over-long label
        raise ConfigurationError(f"{params.describe()}: {params.host!r} is not a valid host name") from None
    except OSError as error:
        raise UnreachableError(
            f"could not connect to {params.describe()}: {error}. Check the host, port and that the network "
            "(security groups, VPC routes) lets this machine reach the database"
        ) from None
    sock = raw
    try:
        sock = negotiate_tls(raw, params, context)
        connection = pg8000.native.Connection(
            user=params.user,
            password=params.password,
            host=params.host,
            port=params.port,
            database=params.database,
            sock=sock,
            ssl_context=False,  # negotiated above
            application_name=application_name or params.application_name,
            startup_params={"options": params.options} if params.options else None,
        )
        key = cancel_key(connection, sock)
        if key is None:
            key = cancel_key(connection, sock, pid=_backend_pid(connection))
    except BaseException as error:
        sock.close()
        raw.close()
        raise _connect_failure(params, error) from None
    # The connect timeout must not stay the socket's read timeout: it would cut a long CREATE INDEX
    # short. The server's statement_timeout bounds statements instead.
    sock.settimeout(None)
    return PostgresDatabase(connection, params, key, sock)


def _backend_pid(connection: pg8000.native.Connection) -> int:
    """Only when pg8000 did not keep the server's BackendKeyData: one round trip more."""
    rows = connection.run("SELECT pg_backend_pid()")
    return int(rows[0][0])


def _connect_failure(params: ConnectionParams, error: BaseException) -> BaseException:
    where = params.describe()
    if isinstance(error, ConfigurationError):
        return error  # said already, by the TLS negotiation
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
        certificate = ", or the client certificate (sslcert, sslkey)" if "certificate" in refusal.message else ""
        return AuthenticationFailedError(
            f"the server refused the credentials for {where} ({refusal.message}); check the user name and "
            f"password{certificate}"
        )
    if refusal is not None:
        return ConfigurationError(f"could not connect to {where}: {refusal.message}")
    if params.password is None and _asks_for_password(error):
        problem = passfile_problem(passfile_path(params.passfile))
        return AuthenticationFailedError(
            f"could not connect to {where}: the server asks for a password and none was given: put it in the URL, "
            f"PGPASSWORD or ~/.pgpass{f' ({problem})' if problem else ''}"
        )
    if isinstance(error, InterfaceError) and "Authentication method" in str(error):
        return ConfigurationError(
            f"{where} asks for an authentication method premigrate cannot use ({error}); it can log in with "
            "a password (scram-sha-256, md5, password), a client certificate or trust"
        )
    if isinstance(error, ssl.SSLError) and not isinstance(error, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return ConfigurationError(
            f"the TLS handshake with {where} failed ({error.reason or error}); check that the host and port are "
            "a PostgreSQL server's, and that it accepts TLS 1.2 or later"
        )
    if isinstance(error, (InterfaceError, OSError)):
        return UnreachableError(
            f"could not connect to {where}: {_network_reason(error)}. Check the host, port and that the network "
            "(security groups, VPC routes) lets this machine reach the database"
        )
    if isinstance(error, Exception):
        return ConfigurationError(
            f"could not connect to {where}: the server's answer was not understood ({type(error).__name__}: "
            f"{error}). Check that the host and port are a PostgreSQL server's"
        )
    return error  # KeyboardInterrupt, SystemExit: not ours to translate


def _asks_for_password(error: BaseException) -> bool:
    """pg8000 says so for md5 and cleartext; for SCRAM it fails on the missing password (AttributeError)."""
    return isinstance(error, AttributeError) or (
        isinstance(error, InterfaceError) and "no password was provided" in str(error)
    )


def _network_reason(error: BaseException) -> str:
    cause = error.__cause__ if isinstance(error, InterfaceError) else error
    # pg8000's "network error" with no cause is an empty read: the server hung up, as it does over TLS.
    if cause is None or isinstance(cause, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return "the server closed the connection during the login (is it shutting down, or not PostgreSQL?)"
    return str(cause) or type(cause).__name__

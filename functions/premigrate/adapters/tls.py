"""TLS as libpq's sslmode says, and the SSLRequest that starts it on a PostgreSQL socket.

    >>> sock = negotiate_tls(raw_socket, params, tls_context(params))

| sslmode | TLS | server's certificate checked |
|---|---|---|
| disable | never | - |
| allow, prefer | when the server offers it | no |
| require | always | no; but with ``sslrootcert`` its chain, as verify-ca |
| verify-ca | always | its chain |
| verify-full | always | its chain and host name |

premigrate negotiates TLS itself (pg8000 gets a ready socket) so that it can tell a server without TLS, a
silent one and one that is not PostgreSQL at all apart, and reuse the negotiation to send a cancel request.
"""

from __future__ import annotations

import socket
import ssl
import struct

from premigrate.adapters.connection import ConnectionParams
from premigrate.engine import ConfigurationError

_SSL_REQUEST = struct.pack("!ii", 8, 80877103)


def tls_context(params: ConnectionParams) -> ssl.SSLContext | bool | None:
    """False = plaintext, None = TLS if offered and unchecked, a context = TLS as it says (for allow and
    prefer only when a client certificate must go with it)."""
    if params.socket_dir is not None or params.sslmode == "disable":
        return False
    optional = params.sslmode in ("allow", "prefer")
    if optional and params.sslcert is None:
        return None
    # libpq: "If a root CA file exists, the behavior of sslmode=require will be the same as that of verify-ca".
    verify_chain = params.sslmode in ("verify-ca", "verify-full") or (
        params.sslmode == "require" and params.sslrootcert is not None
    )
    if verify_chain:
        cafile = None if params.sslrootcert in (None, "system") else params.sslrootcert
        try:
            context = ssl.create_default_context(cafile=cafile)
        except (OSError, ssl.SSLError) as error:
            raise ConfigurationError(f"cannot read the CA bundle {params.sslrootcert}: {error}") from None
        context.check_hostname = params.sslmode == "verify-full"
    else:
        context = _unchecked_context()
    if params.sslcert is not None:
        _load_client_certificate(context, params.sslcert, params.sslkey)
    return context


def _load_client_certificate(context: ssl.SSLContext, certificate: str, key: str | None) -> None:
    try:
        # An empty password: an encrypted key fails here instead of OpenSSL asking for it on a terminal.
        context.load_cert_chain(certificate, key, password=b"")
    except (OSError, ssl.SSLError) as error:
        raise ConfigurationError(
            f"cannot use the client certificate {certificate} with the key {key or 'in the same file'}: "
            f"{getattr(error, 'reason', None) or error}. The key must be PEM and not encrypted"
        ) from None


def negotiate_tls(
    sock: socket.socket, params: ConnectionParams, context: ssl.SSLContext | bool | None
) -> socket.socket:
    """The socket to talk to the server on: ``sock`` itself, or wrapped in TLS after the server agreed.

    Raises ConfigurationError when the server does not offer required TLS or does not answer as PostgreSQL
    does, OSError (a timeout, a closed connection, a failed handshake) otherwise."""
    if context is False:
        return sock
    sock.sendall(_SSL_REQUEST)
    answer = sock.recv(1)
    if answer == b"S":
        wrapper = context if isinstance(context, ssl.SSLContext) else _unchecked_context()
        return wrapper.wrap_socket(sock, server_hostname=params.host)
    if answer == b"N" and params.sslmode in ("allow", "prefer"):
        return sock
    if answer == b"N":
        raise ConfigurationError(
            f"{params.describe()} does not offer TLS. Enable TLS on the server, or add sslmode=disable to the URL "
            "to connect in plaintext (only on a trusted network)"
        )
    if not answer:
        raise ConnectionAbortedError("the server closed the connection when asked for TLS")
    raise ConfigurationError(
        f"{params.describe()} did not answer the request for TLS as PostgreSQL does (it sent {answer!r}): check "
        "that the host and port are a PostgreSQL server's"
    )


def _unchecked_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context

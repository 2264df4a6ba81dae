"""Cancelling a session's running statement as libpq's PQcancel does: a CancelRequest with the session's
process id and secret key, sent on a connection of its own (no login) to the address the session uses.

    >>> key = cancel_key(pg8000_connection, raw_socket)
    >>> send_cancel_request(key, params)   # the running statement fails with 57014
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Any

from premigrate.adapters.connection import ConnectionParams
from premigrate.adapters.tls import negotiate_tls, tls_context

CANCEL_SOCKET_TIMEOUT = 2.0
_CANCEL_REQUEST_CODE = 80877102


@dataclass(frozen=True)
class CancelKey:
    family: int
    address: Any
    """The server's address as the session's socket saw it: no name lookup at cancel time, and the very
    server the session is on even when its DNS name now points elsewhere."""
    pid: int
    secret: bytes | None
    """The server's secret for this session; None when unknown, then only pg_cancel_backend(pid) can help."""


def cancel_key(connection: Any, sock: socket.socket, pid: int | None = None) -> CancelKey | None:
    """The session's key from the BackendKeyData the server sent at login, else from ``pid`` alone.

    pg8000 keeps that message (process id, then secret) in a private attribute and offers no public way to
    it; if a pg8000 release renames or reshapes it, this gives None and the caller asks the pid instead."""
    data = getattr(connection, "_backend_key_data", None)
    if isinstance(data, (bytes, bytearray)) and len(data) >= 8:
        pid, secret = int.from_bytes(data[:4], "big"), bytes(data[4:])
    elif pid is not None:
        secret = None
    else:
        return None
    return CancelKey(sock.family, sock.getpeername(), pid, secret)


def send_cancel_request(key: CancelKey, params: ConnectionParams) -> None:
    """Sends the CancelRequest and waits for the server to close the connection, which it does once it
    has passed the request on. Over TLS when the session uses TLS, so the secret is not sent in clear.
    Raises OSError or ConfigurationError when that fails; each step is bounded by CANCEL_SOCKET_TIMEOUT."""
    assert key.secret is not None
    request = struct.pack("!iii", 12 + len(key.secret), _CANCEL_REQUEST_CODE, key.pid) + key.secret
    with socket.socket(key.family, socket.SOCK_STREAM) as raw:
        raw.settimeout(CANCEL_SOCKET_TIMEOUT)
        raw.connect(key.address)
        with negotiate_tls(raw, params, tls_context(params)) as sock:
            sock.sendall(request)
            while sock.recv(64):
                pass

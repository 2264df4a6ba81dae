"""The database across a network: a TCP proxy that delays every byte by the same time each way.

In production the database is never on the migrating machine: Lambda or CodeBuild reach RDS across the
VPC, a fraction of a millisecond to a millisecond away. On one machine every round trip is nearly free,
so a tool's round trips per migration only show through such a proxy (this kernel has no netem).
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import quote

from premigrate.adapters.connection import params_from_url

_CHUNK = 65536


class DelayProxy:
    """Listens on 127.0.0.1; each connection goes on to the server at ``url``, every chunk delivered
    ``one_way_seconds`` after it was read, in order. Threads end when either side closes."""

    def __init__(self, url: str, one_way_seconds: float) -> None:
        self.params = params_from_url(url)
        self.one_way_seconds = one_way_seconds
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests = 0
        """Chunks the clients sent: each is one round trip when a client waits for the answer."""
        self._counting = threading.Lock()

    def url(self, url: str) -> str:
        """The URL of the same database, reached through the proxy."""
        params = params_from_url(url)
        return f"postgresql://{quote(params.user)}@127.0.0.1:{self.port}/{quote(params.database)}?sslmode=disable"

    def _server(self) -> socket.socket:
        if self.params.socket_dir:
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(f"{self.params.socket_dir}/.s.PGSQL.{self.params.port}")
            return upstream
        return socket.create_connection((self.params.host or "localhost", self.params.port))

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # the listener was closed: the proxy stops
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            upstream = self._server()
            self._pipe(client, upstream, counted=True)
            self._pipe(upstream, client, counted=False)

    def _pipe(self, source: socket.socket, sink: socket.socket, *, counted: bool) -> None:
        """Two threads: one reads and stamps each chunk with its delivery time, one delivers on time."""
        chunks: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()

        def read() -> None:
            with contextlib.suppress(OSError):
                while data := source.recv(_CHUNK):
                    chunks.put((time.perf_counter() + self.one_way_seconds, data))
                    if counted:
                        with self._counting:
                            self.requests += 1
            chunks.put((0.0, b""))

        def deliver() -> None:
            with contextlib.suppress(OSError):
                while (item := chunks.get())[1]:
                    due, data = item
                    if (wait := due - time.perf_counter()) > 0:
                        time.sleep(wait)
                    sink.sendall(data)
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

        for work in (read, deliver):
            threading.Thread(target=work, daemon=True).start()


@contextlib.contextmanager
def delayed(url: str, one_way_seconds: float) -> Iterator[DelayProxy]:
    proxy = DelayProxy(url, one_way_seconds)
    threading.Thread(target=proxy._accept, daemon=True).start()
    try:
        yield proxy
    finally:
        proxy.listener.close()

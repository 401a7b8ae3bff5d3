"""The TCP server on the io_uring Proactor: a multishot accept feeding pooled UringConnections.

Everything else (connection pooling, timeouts sweep, metrics, close) is
:class:`~poolalloc.net.epoll.server.TcpServer`'s; only accepting differs. One multishot accept SQE
yields a completion per new connection. When it ends with ``EMFILE``/``ENFILE`` (descriptors
exhausted) it is not re-armed until one of our connections closes or ``accept_retry`` passes,
the same rule as the Reactor's server, so a full descriptor table never makes the loop spin.
A connection accepted while the connection pool is at ``max_connections`` is closed at once
(the kernel had already completed its handshake) and accepting pauses likewise.

Example:
    >>> import poolalloc
    >>> from poolalloc.net.uring.proactor import Proactor
    >>> p = Proactor(); bufs = poolalloc.BufferPool(4096, capacity=64)
    >>> srv = UringTcpServer(p, MyProtocol, buffer_pool=bufs)  # doctest: +SKIP
"""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING, Any

from poolalloc.errors import PoolExhausted
from poolalloc.net.epoll.server import _OUT_OF_FDS, TcpServer
from poolalloc.net.uring.connection import UringConnection
from poolalloc.net.uring.ring import CQE_F_MORE, cqe_error
from poolalloc.objects import ObjectPool

if TYPE_CHECKING:
    from poolalloc.net.uring.proactor import Proactor

__all__ = ["UringTcpServer"]

ACCEPT = 5
_PEER_GONE = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR}


class _Listener:
    """The ring target of the multishot accept."""

    handlers = (lambda self, res, flags: self.complete(res, flags),) * 8

    def __init__(self, server: UringTcpServer) -> None:
        self.server = server
        self.inflight = 0
        self.armed = False
        self.closed = True  # never aborted by the proactor: the server closes it
        sock = server.sock
        self.family, self.type, self.proto = sock.family, sock.type, sock.proto

    def complete(self, res: int, flags: int) -> None:
        if not flags & CQE_F_MORE:
            self.inflight -= 1
            self.armed = False
        srv = self.server
        draining = srv.reactor.draining
        try:
            if res >= 0:
                sock = socket.socket(self.family, self.type, self.proto, fileno=res)
                if draining:  # the proactor is closing: no connection may start now
                    sock.close()
                else:
                    srv.accepted(sock)
            elif -res in _OUT_OF_FDS:
                srv._pause_accepting()
            elif res != -errno.ECANCELED and -res not in _PEER_GONE:
                srv.reactor.report(cqe_error(res), self)
        finally:  # even when adopting the connection failed: else accepting stops for good
            if srv._closed or draining:
                if self.inflight <= 0:
                    srv.reactor.retarget(srv._token, None)
            elif not self.armed and not srv.accept_paused:
                srv.arm_accept()


class UringTcpServer(TcpServer):
    """:class:`~poolalloc.net.epoll.server.TcpServer` on a Proactor (same arguments).

    Example:
        >>> UringTcpServer.make_connection_pool(None).stats()["size"] >= 0  # doctest: +SKIP
        True
    """

    reactor: Proactor  # the server's loop is a Proactor (TcpServer's is any Reactor)

    @staticmethod
    def make_connection_pool(max_connections: int | None) -> Any:
        """An ``ObjectPool`` of :class:`UringConnection` objects, reset on return."""
        return ObjectPool(UringConnection, reset=UringConnection.reset, max_size=max_connections)

    def start(self) -> None:
        """Arm the multishot accept and the timeout sweep."""
        self._listener = _Listener(self)
        self._token = self.reactor.new_token(self._listener)
        self.arm_accept()
        self._sweeper = self.reactor.call_later(self.sweep_interval, self._sweep)

    def arm_accept(self) -> None:
        """(Re-)arm the multishot accept."""
        listener = self._listener
        if listener.armed:
            return
        ring = self.reactor.ring
        ring.prep_accept(self.sock.fileno(), self._token << 8 | ACCEPT)
        listener.armed = True
        listener.inflight += 1

    def accepted(self, sock: socket.socket) -> None:
        """Adopt one accepted socket, or refuse it when the connection pool is full."""
        if self._closed:
            sock.close()
            return
        try:
            lease = self.conn_pool.acquire(timeout=0)
        except PoolExhausted:  # max_connections reached
            sock.close()
            self._pause_accepting()
            return
        self._adopt(lease, sock)

    def _stop_listening(self) -> None:
        if self._listener.armed:
            self.reactor.ring.prep_cancel(0, target=self._token << 8 | ACCEPT)

    def _start_listening(self) -> None:
        self.arm_accept()

    def close(self, *, abort: bool = True) -> None:
        """Cancel the accept; abort (or gracefully close) every connection. Idempotent."""
        if self._closed:
            return
        if getattr(self, "_listener", None) is not None and self._listener.armed:
            self.reactor.ring.prep_cancel(0, target=self._token << 8 | ACCEPT)
        super().close(abort=abort)

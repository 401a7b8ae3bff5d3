"""The TCP server on the io_uring Proactor: a multishot accept feeding pooled UringConnections.

Everything else (connection pooling, timeouts sweep, metrics, close) is
:class:`~poolalloc.net.epoll.server.TcpServer`'s; only accepting differs. One multishot accept SQE
yields a completion per new connection. When it ends with ``EMFILE``/``ENFILE`` (descriptors
exhausted) it is not re-armed until one of our connections closes or ``accept_retry`` passes,
the same rule as the Reactor's server, so a full descriptor table never makes the loop spin.

At ``max_connections`` the server stops accepting, as the Reactor's does: it cancels the
multishot accept, and further connections wait in the kernel's listen backlog. The kernel may
hand over a few more before the cancel takes effect (a multishot accept takes every connection
already queued, at once); those are not closed but kept, unread and in arrival order, in a
small queue: they are what the backlog would have held. When one of our connections closes,
the queued ones are adopted first, and the accept is re-armed only once the queue is empty
and a slot is still free. A queued connection also ends the oldest lingering one, whose slot
it then takes (see :mod:`poolalloc.net.epoll.server`), or the first connection to start
lingering while it waits. The queue holds at most
``waiting_limit`` sockets (1024, ``listen_socket``'s backlog); one arriving beyond it is
closed and counted in ``accept_dropped_total``. ``accept_waiting`` in the metrics is the
queue's length, and ``connections_total`` counts a queued connection once it is adopted.
Closing the server closes the queued ones.

Example:
    >>> import poolalloc
    >>> from poolalloc.net.uring.proactor import Proactor
    >>> p = Proactor(); bufs = poolalloc.BufferPool(4096, capacity=64)
    >>> srv = UringTcpServer(p, MyProtocol, buffer_pool=bufs)  # doctest: +SKIP
"""

from __future__ import annotations

import errno
import socket
from collections import deque
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
        self.cancelling = False  # a cancel of the armed accept is in flight
        self.closed = True  # never aborted by the proactor: the server closes it
        sock = server.sock
        self.family, self.type, self.proto = sock.family, sock.type, sock.proto

    def complete(self, res: int, flags: int) -> None:
        if not flags & CQE_F_MORE:
            self.inflight -= 1
            self.armed = self.cancelling = False
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
            elif res != -errno.ECANCELED and -res not in _PEER_GONE and srv.listening:
                # (closed, an accept armed but not yet submitted finds the listener gone: EBADF)
                srv.reactor.report(cqe_error(res), self)
        finally:  # even when adopting the connection failed: else accepting stops for good
            if not srv.listening or draining:
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
    #: The most accepted connections kept waiting at ``max_connections`` (see the module doc).
    waiting_limit = 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Accepted while at ``max_connections``: adopted first when slots free up.
        self._waiting: deque[socket.socket] = deque()

    @staticmethod
    def make_connection_pool(max_connections: int | None) -> Any:
        """An ``ObjectPool`` of :class:`UringConnection` objects, reset on return."""
        return ObjectPool(UringConnection, reset=UringConnection.reset, max_size=max_connections)

    def start(self) -> None:
        """Arm the multishot accept and the timeout sweep."""
        self._check_startable()
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
        """Adopt one accepted socket, or keep it waiting while the connection pool is full."""
        if not self.listening:
            sock.close()
            return
        if self._waiting or self.accept_paused:  # the ones before it go first
            self._wait(sock)
            return
        try:
            lease = self.conn_pool.acquire(timeout=0)
        except PoolExhausted:  # max_connections reached
            self._wait(sock)
            self._pause_accepting()
            return
        self._adopt(lease, sock)

    def _wait(self, sock: socket.socket) -> None:
        if len(self._waiting) >= self.waiting_limit:
            sock.close()
            self.totals["accept_dropped_total"] += 1
        else:
            self._waiting.append(sock)

    def _stop_listening(self) -> None:
        listener = self._listener
        if listener.armed and not listener.cancelling:
            listener.cancelling = True
            self.reactor.ring.prep_cancel(0, target=self._token << 8 | ACCEPT)

    def _start_listening(self) -> None:
        waiting = self._waiting
        while waiting:
            try:
                lease = self.conn_pool.acquire(timeout=0)
            except PoolExhausted:  # still full: the rest wait for the next slot
                self._pause_accepting()
                return
            try:
                self._adopt(lease, waiting.popleft())
            except Exception as exc:  # that one is closed; the others still wait their turn
                self.reactor.report(exc, self)
        self.arm_accept()

    def _close_listener(self) -> None:
        if getattr(self, "_listener", None) is not None:
            self._stop_listening()
        self.sock.close()
        while self._waiting:  # never adopted: their peers see the listener's end
            self._waiting.popleft().close()

    def _accept_waiting(self) -> int:
        return len(self._waiting)

    def _client_waits(self) -> bool:
        # queued here at max_connections; in the kernel's backlog after an EMFILE
        return bool(self._waiting) or super()._client_waits()

    def close(self, *, abort: bool = True) -> None:
        """Cancel the accept; abort (or gracefully close) every connection. Idempotent."""
        if self._closed:
            return
        if getattr(self, "_listener", None) is not None:
            self._stop_listening()
        super().close(abort=abort)
        while self._waiting:  # never adopted: their peers see the listener's end
            self._waiting.popleft().close()

"""One TCP (or Unix) connection on the Reactor: pooled reads, a gather-write queue, backpressure.

Lifecycle: a :class:`Connection` object comes from the server's ``ObjectPool`` and is
``open``-ed on an accepted socket; it goes back (``reset``) after ``connection_lost``.

* Reads: only when the kernel says data is ready does the connection take a lease from the
  ``BufferPool`` (an idle connection pins no buffer), with the pool's non-raising
  ``try_acquire``: an empty pool means "retry in a few milliseconds" (one timer per connection,
  cancelled when it closes). The pool's ``PoolMemoryError`` (the OS refused its memory) is
  waited out the same way and counted in ``reactor.stats["memory_refused"]``; any other
  ``MemoryError`` propagates. It hands ``(lease, nbytes)`` to the protocol's
  ``buffer_received``; a protocol that returns True keeps the lease and must release it,
  otherwise the connection releases it at once. A short read means the socket queue was drained,
  so the next edge will come from the kernel and no ``EAGAIN`` probe is needed.
* Writes: ``write`` tries the socket first; whatever does not fit joins a queue of memoryviews
  (with the lease that owns each, released once its bytes are out) and file ranges, flushed by
  ``sendmsg`` gather writes and ``os.sendfile`` when the socket becomes writable.
* Backpressure: past ``high_water`` queued bytes the connection stops reading (a client that
  never reads its responses cannot make us buffer without bound); below ``low_water`` it
  resumes, and tries a read at once because an edge-triggered fd may have fired meanwhile. A
  protocol's own ``pause_reading`` is not ended by the queue draining: it resumes it itself.
  Input held back while paused must not pin pooled blocks (a protocol hands the few unparsed
  bytes to ``hold_back`` and the lease goes back; they come back first, as :class:`HeldBytes`,
  on resume), so the blocks in use are bounded by the connections being read right now, not
  by the paused ones. The bookkeeping shared with the io_uring connection (pausing, the queue's
  accounting, closing) is :class:`~poolalloc.net.transport.BaseConnection`'s.
* Fairness: one flush sends at most ``SEND_SLICE`` bytes; a connection with more to send
  reschedules itself with ``call_soon``, so one large download cannot hold the loop while
  small requests on other connections wait.
* Callbacks scheduled for a connection (a retry timer, a resume, the next flush slice) carry
  the socket they were made for and do nothing once the connection closed or was reused.
* Closing: ``close()`` is graceful (flush, ``shutdown(SHUT_WR)``, discard input until the peer's
  EOF or ``linger`` seconds, so a client is not hit by an RST while reading an error
  response); ``abort()`` sends an RST (``SO_LINGER`` 0) and drops the queue.
"""

from __future__ import annotations

import os
import select
import socket
from typing import TYPE_CHECKING

from poolalloc.errors import PoolMemoryError
from poolalloc.net.sockets import IOV_MAX, LeaseLike
from poolalloc.net.transport import (
    BaseConnection,
    ConnectionProtocol,
    FileRange,
    Handled,
    HeldBytes,
    ReadPool,
    _Queued,
    queued_size,
)

if TYPE_CHECKING:
    from poolalloc.net.epoll.reactor import Handle, Reactor

# ConnectionProtocol, FileRange, HeldBytes, ReadPool and queued_size live in
# poolalloc.net.transport (both engines use them); this module's names stay importable.
__all__ = [
    "SEND_SLICE",
    "Connection",
    "ConnectionProtocol",
    "FileRange",
    "HeldBytes",
    "ReadPool",
    "queued_size",
]

_RDHUP = select.EPOLLRDHUP | select.EPOLLHUP
_MSG_MORE = getattr(socket, "MSG_MORE", 0)
_RETRY_EXHAUSTED = 0.005  # seconds before a read retries when the buffer pool is empty
#: Most bytes one connection sends per loop pass before other ready connections get a turn.
SEND_SLICE = 1 << 20


class Connection(BaseConnection["Reactor"]):
    """A connection on the epoll :class:`~poolalloc.net.epoll.reactor.Reactor`: reads when the
    socket is readable, writes at once and queues the rest for ``EPOLLOUT``. The bookkeeping is
    :class:`~poolalloc.net.transport.BaseConnection`'s.

    Example (an echo server's connection on a socketpair):
        >>> import socket, poolalloc
        >>> from poolalloc.net.epoll.reactor import Reactor
        >>> r = Reactor(); pool = poolalloc.BufferPool(4096, capacity=8)
        >>> a, b = socket.socketpair()
        >>> conn = Connection(); conn.open(r, b, pool, Echo())  # doctest: +SKIP
    """

    #: The pending read retry (pool exhausted), cancelled on close. A class-level default: an
    #: instance only gets this attribute if it ever retries.
    _timer: Handle | None = None
    #: True while the next flush slice is scheduled (class default, as ``_timer``).
    _more_pending = False

    def reset(self) -> None:
        """Forget the last connection (ObjectPool ``reset``)."""
        super().reset()
        if self._timer is not None:
            self._cancel_timer()
        if self._more_pending:
            self._more_pending = False

    def open(
        self,
        reactor: Reactor,
        sock: socket.socket,
        pool: ReadPool,
        protocol: ConnectionProtocol,
        chunk_size: int,
    ) -> None:
        """Adopt a connected socket, register it, and start the protocol.

        :raises OSError: the reactor could not register the socket.
        """
        sock.setblocking(False)
        self._adopt(reactor, sock, pool, protocol, chunk_size)
        reactor.register(self.fd, self._on_readable, None)
        protocol.connection_made(self)
        self._on_readable(drain=True)  # data may have arrived before registration

    # ---- reading ----
    def _on_readable(self, drain: bool = False) -> None:
        """Read while there is data; ``drain``: read until EAGAIN even after a short read.

        Edge-triggered epoll reports new input once. An edge that came while the connection
        was paused or the pool was exhausted is gone by the time reading starts again, and
        with it the sign of a FIN behind a short read: those callers drain.
        """
        if self.paused or self.closed:
            return
        if self._lingering:
            self._discard_input()
            return
        pool, sock, protocol, reactor = self.pool, self.sock, self.protocol, self.reactor
        assert pool is not None
        assert sock is not None
        assert protocol is not None
        assert reactor is not None
        recv_into, chunk, try_acquire = sock.recv_into, self._chunk, pool.try_acquire
        while True:
            try:
                lease = try_acquire()
            except PoolMemoryError:
                # The OS refused the pool memory (mmap failed): not a full pool, but waited
                # out the same way, and counted. Any other MemoryError propagates.
                reactor.stats["memory_refused"] = reactor.stats.get("memory_refused", 0) + 1
                lease = None
            if lease is None:  # every block is in use: retry shortly instead of spinning
                self._retry_later()
                return
            try:
                n = recv_into(lease)  # the lease exports its block: no view object made
            except (BlockingIOError, InterruptedError):
                lease.release()
                return
            except OSError as exc:
                lease.release()
                self.abort(exc)
                return
            if n == 0:
                lease.release()
                self._eof()
                return
            self.bytes_in += n  # BaseConnection._received, inlined: once per read
            self.last_active = reactor.now
            try:
                kept = protocol.buffer_received(lease, n)
            except Exception as exc:  # a protocol bug must not strand the lease
                lease.release()
                self.abort(exc)
                raise  # the reactor reports it
            if not kept:
                lease.release()
            # A short read drained the socket: the next edge brings more (the common exit).
            if n < chunk and not drain and not reactor.event_mask & _RDHUP:
                return
            if self.paused or self.closing or self.closed:
                return
            # A full read may have left bytes queued; a short one with the FIN: read on to EOF.

    def _read_more(self) -> None:
        self._on_readable(drain=True)  # after a pause: edges (and a FIN's) may have passed

    def _retry_later(self) -> None:
        assert self.reactor is not None
        if self._timer is None:  # each new edge would add one more timer otherwise
            self._timer = self.reactor.call_later(_RETRY_EXHAUSTED, self._retry, self.sock)

    def _retry(self, sock: socket.socket) -> None:
        if sock is self.sock and not self.closed:
            self._timer = None
            self._on_readable(drain=True)

    # ---- writing ----
    def write(
        self, data: bytes | memoryview, owner: LeaseLike | None = None, *, more: bool = False
    ) -> None:
        """Send ``data`` (tries now, queues the rest); ``owner`` is released once it is out.

        ``more=True`` tells the kernel more data follows at once (``MSG_MORE``), so a response
        head and the file body sent next share packets.

        :raises ConnectionError: the connection is closing or closed.
        """
        if self.closing or self.closed:
            self._refuse_write(owner)
        sock = self.sock
        assert sock is not None  # open and not closing
        if not self.queue:
            try:
                sent = sock.send(data, _MSG_MORE if more else 0)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                if owner is not None:
                    owner.release()
                self.abort(exc)
                return
            self.bytes_out += sent  # BaseConnection._sent, inlined: once per response
            if sent == len(data):
                if owner is not None:
                    owner.release()
                return
            data = memoryview(data)[sent:]
        self._enqueue(_Queued(memoryview(data), owner))

    def write_file(self, fd: int, offset: int, count: int, *, close_fd: bool = True) -> None:
        """Queue ``count`` bytes of file ``fd`` from ``offset``, sent with ``os.sendfile``.

        :raises ConnectionError: the connection is closing or closed.
        """
        item = FileRange(fd, offset, count, close_fd=close_fd)
        if self.closing or self.closed:
            self._refuse_write(item)
        if self._enqueue(_Queued(item, None)):
            self._flush()

    def _enqueue(self, item: _Queued) -> bool:
        """Queue ``item``; True when it is the only one (nothing was waiting before it)."""
        first = self._push(item)
        if first:
            assert self.reactor is not None
            self.reactor.modify(self.fd, self._on_readable, self._flush)
        return first

    def _flush(self) -> None:
        budget = SEND_SLICE
        try:
            while self.queue:
                head = self.queue[0].data
                if isinstance(head, FileRange):
                    sent = self._send_file(head, budget)
                else:
                    sent = self._send_views()
                if sent is None:
                    return  # socket full: wait for the next EPOLLOUT edge
                budget -= sent
                if budget <= 0 and self.queue:
                    # This pass's share is used: other ready connections go first. No edge
                    # will come for a socket that still has room, so the loop calls us back
                    # (once: a writable edge meanwhile must not add a second call).
                    if not self._more_pending:
                        self._more_pending = True
                        assert self.reactor is not None
                        self.reactor.call_soon(self._flush_more, self.sock)
                    return
        except OSError as exc:
            self.abort(exc)
            return
        self._drained()

    def _flush_more(self, sock: socket.socket | None) -> None:
        if sock is not self.sock:
            return  # the pooled object serves another socket now
        self._more_pending = False
        if not self.closed and self.queue:
            self._flush()

    def _send_views(self) -> int | None:
        queue, sock = self.queue, self.sock
        assert queue is not None
        assert sock is not None
        views: list[memoryview] = []
        for item in queue:
            head = item.data
            if not isinstance(head, memoryview) or len(views) == IOV_MAX:
                break
            views.append(head)
        try:
            sent = sock.sendmsg(views)
        except (BlockingIOError, InterruptedError):
            return None
        if sent == 0:
            return None
        self._account(sent)
        total = sent
        while sent:
            first = queue[0]
            view = first.data
            assert isinstance(view, memoryview)
            if sent < len(view):
                first.data = view[sent:]
                return None  # partial write: the socket buffer is full
            sent -= len(view)
            queue.popleft()
            if first.owner is not None:
                first.owner.release()
        return total

    def _send_file(self, item: FileRange, budget: int) -> int | None:
        """Send up to ``budget`` bytes of the file; None when the socket is full."""
        total = 0
        while item.count and total < budget:
            try:
                sent = os.sendfile(self.fd, item.fd, item.offset, min(item.count, budget - total))
            except (BlockingIOError, InterruptedError):
                return None
            if sent == 0:  # file shorter than announced: the response would be a lie
                exc = item.truncated()
                assert self.reactor is not None
                # the client sees a reset; the operator, why
                self.reactor.report(exc, Handled("the connection was reset", self))
                raise exc
            item.offset += sent
            item.count -= sent
            total += sent
            self._account(sent)
        if not item.count:
            item.discard()
            assert self.queue is not None
            self.queue.popleft()
        return total

    def _drained(self) -> None:
        self.queued = 0
        self.queue = None  # empty: an idle connection keeps no deque
        if self.closed:
            return
        assert self.reactor is not None
        self.reactor.modify(self.fd, self._on_readable, None)
        if self.closing:
            self._linger()

    # ---- closing ----
    def _discard_input(self) -> None:
        assert self.sock is not None
        while not self.closed:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._finish(None)

    def _finish(self, exc: BaseException | None) -> None:
        self.closed = True
        self._cancel_timer()
        queue, self.queue = self.queue, None
        for queued in queue or ():
            if isinstance(queued.data, FileRange):
                queued.data.discard()
            if queued.owner is not None:
                queued.owner.release()
        if self.reactor is not None and self.reactor.is_registered(self.fd):
            self.reactor.unregister(self.fd)
        self._closed_notify(exc)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

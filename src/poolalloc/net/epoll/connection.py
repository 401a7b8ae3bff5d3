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
  resumes, and tries a read at once because an edge-triggered fd may have fired meanwhile.
  Input held back while paused must not pin pooled blocks (protocols copy the few unparsed
  bytes out and release the lease; :class:`HeldBytes` carries them back in on resume), so the
  blocks in use are bounded by the connections being read right now, not by the paused ones.
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

import collections
import contextlib
import errno
import os
import select
import socket
import struct
from typing import TYPE_CHECKING, Protocol

from poolalloc.errors import PoolMemoryError
from poolalloc.net.sockets import IOV_MAX, LeaseLike, LeaseSource

if TYPE_CHECKING:
    from poolalloc.net.epoll.reactor import Handle, Reactor

__all__ = ["SEND_SLICE", "Connection", "ConnectionProtocol", "FileRange", "HeldBytes", "ReadPool"]

_RDHUP = select.EPOLLRDHUP | select.EPOLLHUP
_MSG_MORE = getattr(socket, "MSG_MORE", 0)
_LINGER_RST = struct.pack("ii", 1, 0)
_RETRY_EXHAUSTED = 0.005  # seconds before a read retries when the buffer pool is empty
#: Most bytes one connection sends per loop pass before other ready connections get a turn.
SEND_SLICE = 1 << 20


class ReadPool(LeaseSource, Protocol):
    """A pool the connections read into: ``try_acquire`` returns None when it is exhausted.

    Example:
        >>> import poolalloc
        >>> pool = poolalloc.BufferPool(64, capacity=1)
        >>> lease = pool.try_acquire(); pool.try_acquire() is None
        True
        >>> lease.release(); _ = pool.close()
    """

    def try_acquire(self) -> LeaseLike | None: ...


class HeldBytes:
    """Input held back by backpressure, copied out of its pooled block, with a lease's face.

    A paused connection keeps only these few bytes (the pooled block went back at once);
    on resume they are handed to ``buffer_received`` like a fresh read. ``release`` is a no-op.

    Example:
        >>> held = HeldBytes(b"GET / HTTP/1.1\\r\\n\\r\\n")
        >>> held.nbytes, bytes(held.view[:3])
        (18, b'GET')
        >>> held.release()
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    @property
    def view(self) -> memoryview:
        """A read-only view of the held bytes."""
        return memoryview(self.data)

    @property
    def nbytes(self) -> int:
        """How many bytes are held."""
        return len(self.data)

    def __buffer__(self, flags: int, /) -> memoryview:
        return memoryview(self.data)

    def release(self) -> None:
        """Nothing to give back: the bytes belong to this object."""


class ConnectionProtocol(Protocol):
    """What a :class:`Connection` calls; ``buffer_received`` returns True to keep the lease.

    Example:
        >>> class Echo:
        ...     def connection_made(self, conn): self.conn = conn
        ...     def buffer_received(self, lease, n):
        ...         self.conn.write(lease.view[:n], owner=lease); return True
        ...     def eof_received(self): return False
        ...     def connection_lost(self, exc): pass
    """

    def connection_made(self, conn: Connection) -> None: ...

    def buffer_received(self, lease: LeaseLike, nbytes: int) -> bool: ...

    def eof_received(self) -> bool: ...

    def connection_lost(self, exc: BaseException | None) -> None: ...


class FileRange:
    """A queued file body: ``count`` bytes of ``fd`` from ``offset``, closed when sent.

    Example:
        >>> FileRange(-1, 0, 0, close_fd=False).count
        0
    """

    __slots__ = ("close_fd", "count", "fd", "offset")

    def __init__(self, fd: int, offset: int, count: int, *, close_fd: bool = True) -> None:
        self.fd = fd
        self.offset = offset
        self.count = count
        self.close_fd = close_fd

    def discard(self) -> None:
        """Close the fd if this range owns it."""
        if self.close_fd and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


#: What a queued write stands for: bytes in memory or a file range.
QueuedData = bytes | memoryview | FileRange


class _Queued:
    """One queued write: its data and the lease released once the data is out."""

    __slots__ = ("data", "owner")

    def __init__(self, data: QueuedData, owner: LeaseLike | None) -> None:
        self.data = data
        self.owner = owner


class Connection:
    """Per-connection state; pooled, so ``open``/``reset`` replace ``__init__``/teardown.

    Example (an echo server's connection on a socketpair):
        >>> import socket, poolalloc
        >>> from poolalloc.net.epoll.reactor import Reactor
        >>> r = Reactor(); pool = poolalloc.BufferPool(4096, capacity=8)
        >>> a, b = socket.socketpair()
        >>> conn = Connection(); conn.open(r, b, pool, Echo())  # doctest: +SKIP
    """

    #: The pending read retry (pool exhausted), cancelled on close. A class-level default: an
    #: instance only gets this attribute if it ever retries (see UringConnection.reset).
    _timer: Handle | None = None
    #: True from ``resume_reading`` until the resume runs (class default, as ``_timer``).
    _resuming = False
    #: True while the next flush slice is scheduled (class default, as ``_timer``).
    _more_pending = False

    def __init__(self) -> None:
        self.high_water = 1 << 20
        self.low_water = 1 << 18
        self.linger = 2.0
        #: A protocol object kept across reuses of this pooled connection (set by servers).
        self.spare_protocol: ConnectionProtocol | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the last connection (ObjectPool ``reset``)."""
        self.reactor: Reactor | None = None
        # None between uses: callbacks scheduled for the last connection compare their socket
        # with this one, so they cannot touch the next user of this pooled object.
        self.sock: socket.socket | None = None
        self.fd = -1
        self.pool: ReadPool | None = None
        self.protocol: ConnectionProtocol | None = None
        self.on_closed: collections.abc.Callable[[Connection], None] | None = None
        self.pooled: object = None  # the ObjectPool lease holding this object, if any
        # Created by the first write that has to wait and dropped once drained: an idle
        # connection holds no deque (an empty one is ~760 bytes with its first block).
        self.queue: collections.deque[_Queued] | None = None
        self.queued = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.last_active = 0.0
        self.deadline = 0.0  # absolute reactor time; 0 = none (set by protocols)
        self.paused = False
        self.closing = False
        self.closed = False
        self._lingering = False
        self._chunk = 65536
        if self._timer is not None:
            self._cancel_timer()
        if self._resuming:
            self._resuming = False
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
        self.reactor, self.sock, self.fd = reactor, sock, sock.fileno()
        self.pool, self.protocol, self._chunk = pool, protocol, chunk_size
        self.last_active = reactor.now
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
            self.bytes_in += n
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

    def _retry_later(self) -> None:
        assert self.reactor is not None
        if self._timer is None:  # each new edge would add one more timer otherwise
            self._timer = self.reactor.call_later(_RETRY_EXHAUSTED, self._retry, self.sock)

    def _retry(self, sock: socket.socket) -> None:
        if sock is self.sock and not self.closed:
            self._timer = None
            self._on_readable(drain=True)

    def _eof(self) -> None:
        assert self.protocol is not None
        if self.closing:
            self._finish(None)
        elif not self.protocol.eof_received():
            self.close()

    def pause_reading(self) -> None:
        """Stop reading until :meth:`resume_reading`."""
        self.paused = True

    def resume_reading(self) -> None:
        """Read again (from the next loop pass); tries at once since edges may have passed.

        The connection stays paused until then: input that arrives meanwhile must not overtake
        what the protocol held back when it paused.
        """
        if self.paused and not self.closed and not self._resuming:
            self._resuming = True
            assert self.reactor is not None
            self.reactor.call_soon(self._resumed, self.sock)

    def _resumed(self, sock: socket.socket | None) -> None:
        if sock is not self.sock or self.closed:
            return  # the connection closed (or the pooled object was reused) meanwhile
        self._resuming = False
        if self.queued > self.high_water and not self._lingering:
            return  # filled up again meanwhile: stay paused
        self.paused = False
        hook = getattr(self.protocol, "resume_reading", None)
        if hook is not None and not self.closed:
            hook()  # the protocol may hold back part of an earlier read
        if not self.paused:
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
        if not self.queue:
            try:
                sent = self.sock.send(data, _MSG_MORE if more else 0)  # type: ignore[union-attr]
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                if owner is not None:
                    owner.release()
                self.abort(exc)
                return
            self.bytes_out += sent
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

    def _refuse_write(self, owner: LeaseLike | FileRange | None) -> None:
        """A write after ``close``: free what it handed over, then raise (both engines)."""
        if isinstance(owner, FileRange):
            owner.discard()
        elif owner is not None:
            owner.release()
        raise ConnectionError("write on a closing connection")

    def _enqueue(self, item: _Queued) -> bool:
        """Queue ``item``; True when it is the only one (nothing was waiting before it)."""
        queue = self.queue
        if queue is None:
            queue = self.queue = collections.deque()
        first = not queue
        queue.append(item)
        self.queued += queued_size(item.data)
        if first:
            self.reactor.modify(self.fd, self._on_readable, self._flush)  # type: ignore[union-attr]
        if self.queued > self.high_water and not self.paused:
            self.paused = True
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
                        self.reactor.call_soon(self._flush_more, self.sock)  # type: ignore[union-attr]
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
        queue = self.queue
        assert queue is not None
        views: list[memoryview] = []
        for item in queue:
            head = item.data
            if not isinstance(head, memoryview) or len(views) == IOV_MAX:
                break
            views.append(head)
        try:
            sent = self.sock.sendmsg(views)  # type: ignore[union-attr]
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
                raise OSError(errno.EIO, "file truncated while sending")
            item.offset += sent
            item.count -= sent
            total += sent
            self._account(sent)
        if not item.count:
            item.discard()
            assert self.queue is not None
            self.queue.popleft()
        return total

    def _account(self, sent: int) -> None:
        self.bytes_out += sent
        self.queued -= sent
        self.last_active = self.reactor.now  # type: ignore[union-attr]
        if self.paused and self.queued <= self.low_water and not self.closing:
            self.resume_reading()

    def _drained(self) -> None:
        self.queued = 0
        self.queue = None  # empty: an idle connection keeps no deque
        if self.closed:
            return
        self.reactor.modify(self.fd, self._on_readable, None)  # type: ignore[union-attr]
        if self.closing:
            self._linger()

    # ---- closing ----
    def close(self) -> None:
        """Graceful close: flush what is queued, half-close, drain input, then close."""
        if self.closing or self.closed:
            return
        self.closing = True
        if not self.queue:
            self._linger()

    def _linger(self) -> None:
        assert self.sock is not None
        assert self.reactor is not None
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._finish(None)
            return
        self._lingering = True
        self.paused = False
        self.deadline = self.reactor.now + self.linger
        self._discard_input()

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

    def abort(self, exc: BaseException | None = None) -> None:
        """Abortive close: drop the queue and reset the connection (RST to the peer)."""
        if self.closed:
            return
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        self._finish(exc)

    def timed_out(self) -> None:
        """Called by the server's sweep when ``deadline`` or the idle limit passed."""
        if self._lingering or self.closing:
            self.abort(TimeoutError("linger timeout"))
        else:
            self.abort(TimeoutError("connection timed out"))

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

    def _closed_notify(self, exc: BaseException | None) -> None:
        """Close the socket and tell the protocol and the owner (the end of both engines' close)."""
        if self.sock is not None:
            self.sock.close()
        protocol, on_closed = self.protocol, self.on_closed
        if protocol is not None:
            protocol.connection_lost(exc)
        if on_closed is not None:
            on_closed(self)


def queued_size(item: QueuedData) -> int:
    """Bytes a queued item stands for (a view's length or a file range's count).

    Example:
        >>> queued_size(b"abc"), queued_size(FileRange(-1, 0, 7, close_fd=False))
        (3, 7)
    """
    return item.count if isinstance(item, FileRange) else len(item)

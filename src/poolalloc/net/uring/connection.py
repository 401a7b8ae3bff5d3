"""A connection on the io_uring Proactor, with the Reactor connection's interface.

Protocols see the same calls as on the Reactor (``connection_made``, ``buffer_received(lease,
n)`` returning True to keep the lease, ``eof_received``, ``connection_lost``) and use the same
methods (``write(data, owner=...)``, ``write_file``, ``pause_reading``, ``close``, ``abort``).
What differs is underneath:

* Reads: one multishot receive per connection, buffers chosen by the kernel from the
  provided-buffer ring of the connection's BufferPool. The completion names the buffer id; the
  lease behind it goes to the protocol. ``ENOBUFS`` hands the connection to the proactor, which
  grows and refills the ring and re-arms the receive: the bytes wait in the socket meanwhile.
* Pausing cancels the receive; completions already on their way are held and delivered, in
  order, on resume, so nothing is dropped. They are few and bounded: at most the buffers the
  pool ring had staged when the cancel went in (one refill more if a loop pass ran between
  the pause and the next ``io_uring_enter``). Each is held as its lease, not copied (a relay
  writes it on as it is), while the connections of that pool ring hold fewer than its
  ``hold_limit`` blocks together (a quarter of a bounded pool); past it the bytes are copied
  out and the block goes back at once. So paused connections together never pin more than
  ``hold_limit`` pooled blocks, and the others always find blocks to read into.
* Writes queue and are flushed once per loop pass, one operation in flight per connection
  (two sends in flight on one socket could complete out of order): ``send`` for one buffer
  (``SEND_ZC`` above the proactor's threshold, to a peer with a wide window), ``sendmsg`` to
  gather several. Files go file -> pipe -> socket with two splices. A buffer's owner is
  released after the completion, or for ``SEND_ZC`` after the notification.
* Closing cancels the operations in flight. Their buffers stay with a small :class:`_Remains`
  record until the last completion arrives, because the kernel may still be using them; the
  pooled connection object itself is free for reuse at once (its next token differs).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import os
import socket
from typing import TYPE_CHECKING, Any

from poolalloc.net._tcp_info import send_window
from poolalloc.net.sockets import IOV_MAX, LeaseLike
from poolalloc.net.transport import (
    BaseConnection,
    ConnectionProtocol,
    FileRange,
    Handled,
    HeldBytes,
    ReadPool,
    _Queued,
)
from poolalloc.net.uring.ring import (
    CQE_BUFFER_SHIFT,
    CQE_F_BUFFER,
    CQE_F_MORE,
    CQE_F_NOTIF,
    CSEND_MAX,
    SEND_MAX,
    cqe_error,
    new_iov,
)

if TYPE_CHECKING:
    from poolalloc.net.uring._buffers import PoolRing
    from poolalloc.net.uring.proactor import Proactor

__all__ = ["UringConnection"]

RECV, SEND, SPLICE_IN, SPLICE_OUT, CSENT = 1, 2, 3, 4, 5
_FLUSH_PENDING: list[Any] = []  # marker: the connection is on the proactor's flush list
_WAIT_COPIED: list[Any] = []  # marker: the queue waits until the ring's copied sends are out
_PIPE_SIZE = 1 << 20
#: A write goes as ``SEND_ZC`` only while the peer advertises at least this window. Where the
#: kernel must copy a zero-copy send after all (the deferred copy: loopback, measured; veth
#: takes the same path, not measured), it copies each segment into pages of its own, so a
#: 576-byte segment costs the receiver about 4.9 KB of receive memory against 1.4 KB copied.
#: A peer with a receive buffer of a few KiB then drops segments and advertises less than one
#: MSS, and TCP sends only on its persist timer, a window-sized probe about every 200 ms:
#: 1.4 KB/s where copied sends ran at 56 KB/s. From 16 KiB windows on both ran alike; a
#: normal client advertises 64 KiB from its first ACK.
ZC_MIN_WINDOW = 1 << 15


class _Remains:
    """What a closed connection left in flight: released when its last completion arrives."""

    # CSENT (kind 5) is an event of the ring's copied sends, not an operation: nothing to count
    handlers = (
        (lambda self, res, flags: self.complete(res, flags),) * 5
        + (lambda self, res, flags: None,)
        + (lambda self, res, flags: self.complete(res, flags),) * 2
    )

    def __init__(self, conn: UringConnection, owners: list[Any]) -> None:
        self.proactor, self.token = conn.proactor, conn.token
        self.pool_ring, self.inflight = conn.pool_ring, conn.inflight
        self.owners = owners
        self.pipe = conn._x.pipe if conn._x is not None else None

    def complete(self, res: int, flags: int) -> None:
        if flags & CQE_F_BUFFER and self.pool_ring is not None:
            self.pool_ring.discard(res, flags)
        if not flags & CQE_F_MORE:
            self.inflight -= 1
        if self.inflight <= 0:
            owners, self.owners = self.owners, []
            _release_all(owners)
            _close_pipe(self.pipe)
            self.pipe = None
            self.proactor.retarget(self.token, None)


class _Rare:
    """Per-connection state that only an EOF while paused, zero-copy or files need."""

    __slots__ = ("eof", "pipe", "pipe_fill", "zc_owners")

    def __init__(self) -> None:
        self.eof = False  # the peer's EOF came while paused: it follows the held bytes
        self.zc_owners: list[list[Any]] = []  # per SEND_ZC awaiting its notification
        self.pipe: tuple[int, int] | None = None
        self.pipe_fill = 0


class UringConnection(BaseConnection["Proactor"]):
    """A connection on a :class:`~poolalloc.net.uring.proactor.Proactor`; the sibling of the
    epoll :class:`~poolalloc.net.epoll.connection.Connection`, with the same bookkeeping
    (:class:`~poolalloc.net.transport.BaseConnection`) and its own reads, sends and close.

    Example:
        >>> import socket, poolalloc
        >>> from poolalloc.net.uring.proactor import Proactor
        >>> p = Proactor(); pool = poolalloc.BufferPool(4096, capacity=64)
        >>> a, b = socket.socketpair()
        >>> conn = UringConnection(); conn.open(p, b, pool, Echo(), 4096)  # doctest: +SKIP
    """

    # pool_ring, recv_armed: read by the batch walk in C, as the base's; _bytes_out: behind
    # the bytes_out property, _csent: the user_data of the copied sends (computed once per
    # socket, not per write); slots, so the instance dict keeps its few keys
    __slots__ = ("_bytes_out", "_csent", "pool_ring", "recv_armed")

    def reset(self) -> None:
        """Forget the last connection (ObjectPool ``reset``)."""
        super().reset()
        # Few attributes on purpose: past 30 an instance no longer shares its dict keys with its
        # class (CPython's SHARED_KEYS_MAX_SIZE), and 10,000 idle connections pay for each one.
        self.pool_ring: PoolRing | None = None
        self.token = 0
        self._csent = CSENT  # token 0's: no socket yet
        self.inflight = 0
        self.recv_armed = False
        self._ring: Any = None
        # pins of the send in flight; _FLUSH_PENDING while queued for the next flush; None idle
        self._sending: list[Any] | None = None
        self._x: _Rare | None = None  # state that most connections never need

    @property
    def bytes_out(self) -> int:
        """Bytes sent. Those of the ring's copied sends count when the kernel completes them
        (the ring counts them in C; they are added here when read), so a peer that does not
        read is credited with what its socket took, as on epoll, not with what was written."""
        ring = self._ring
        if ring is not None and not self.closed and self.fd >= 0:
            self._bytes_out += ring.csend_sent(self.fd)
        return self._bytes_out

    @bytes_out.setter
    def bytes_out(self, value: int) -> None:
        self._bytes_out = value

    def _sent(self, nbytes: int) -> None:
        self._bytes_out += nbytes  # not through the property: no call into the ring
        assert self.reactor is not None
        self.last_active = self.reactor.now

    @property
    def proactor(self) -> Proactor:
        """The loop this connection runs on (its ``reactor``)."""
        proactor = self.reactor
        assert proactor is not None, "the connection is not open"
        return proactor

    def _rare(self) -> _Rare:
        if self._x is None:
            self._x = _Rare()
        return self._x

    def open(
        self,
        reactor: Proactor,
        sock: socket.socket,
        pool: ReadPool,
        protocol: ConnectionProtocol,
        chunk_size: int,
    ) -> None:
        """Adopt a connected socket, arm its multishot receive and start the protocol.

        :raises TypeError: ``reactor`` is not a Proactor.
        :raises OSError: the ring refused the receive.
        """
        if not hasattr(reactor, "pool_ring"):
            raise TypeError("UringConnection needs a poolalloc.net.uring.proactor.Proactor")
        sock.setblocking(True)  # io_uring polls internally; the socket is never read directly
        self._adopt(reactor, sock, pool, protocol, chunk_size)
        self._ring = reactor.ring
        self.pool_ring = reactor.pool_ring(pool)
        self.token = reactor.new_token(self)
        self._csent = self.token << 8 | CSENT
        self._ring.csend_detach(self.fd)  # whatever an earlier socket with this fd left
        protocol.connection_made(self)
        if not self.closed:
            self.arm_recv()

    # ---- completions ----
    def complete(self, kind: int, res: int, flags: int) -> None:
        """Route one completion of this connection (the proactor calls ``handlers`` directly)."""
        self.handlers[kind](self, res, flags)

    # ---- reading ----
    def arm_recv(self) -> None:
        """Start (or restart) the multishot receive, unless paused or closed."""
        if self.recv_armed or self.closed or (self.paused and not self._lingering):
            return
        assert self.pool_ring is not None
        self._ring.prep_recv(self.fd, self.pool_ring.bgid, self.token << 8 | RECV)
        self.recv_armed = True
        self.inflight += 1

    def _on_unknown(self, res: int, flags: int) -> None:
        raise LookupError(f"completion of an unknown kind (res {res}, flags {flags:#x})")

    def _on_recv(self, res: int, flags: int) -> None:
        if not flags & CQE_F_MORE:
            self.recv_armed = False
            self.inflight -= 1
        if flags & CQE_F_BUFFER:
            try:
                pool_ring = self.pool_ring
                assert pool_ring is not None
                bid = flags >> CQE_BUFFER_SHIFT
                if pool_ring.incremental:
                    if self.paused or self.closed or self._lingering or res <= 0:
                        self._deliver(pool_ring.arrived(bid, res, flags), res)
                    else:  # the common case: the ring lends its reusable slice
                        self.bytes_in += res
                        self.last_active = self.reactor.now  # type: ignore[union-attr]
                        try:
                            pool_ring.receive(bid, res, flags, self.protocol)
                        except Exception as exc:
                            self.abort(exc)  # the slice is back: a protocol bug strands nothing
                            raise
                elif self.paused or self.closed or self._lingering or res <= 0:
                    self._deliver(pool_ring.take(bid), res)
                else:  # the common case, inline
                    self.bytes_in += res
                    self.last_active = self.reactor.now  # type: ignore[union-attr]
                    lease = pool_ring.leases[bid]
                    if lease is None:
                        raise LookupError(f"buffer id {bid} is not in the ring")
                    try:
                        kept = self.protocol.buffer_received(lease, res)  # type: ignore[union-attr]
                    except Exception as exc:
                        # A protocol bug must not strand the block or the connection (as on epoll):
                        # the lease goes back to the pool, the connection is aborted, the loop
                        # reports the exception.
                        pool_ring.take(bid)
                        lease.release()
                        self.abort(exc)
                        raise
                    except BaseException:
                        pool_ring.take(bid)  # the protocol may hold it: it leaves the ring
                        raise
                    if kept:
                        pool_ring.take(bid)
                    elif lease.exports:
                        # A view of it outlives the call: the block leaves the ring and goes back
                        # through the pool, whose release waits for the last view, as on epoll.
                        pool_ring.take(bid)
                        lease.release()
                    else:  # not kept: the very block goes back into the ring, no pool round trip
                        pool_ring.recycle_bids.append(bid)
            finally:
                # also when a KeyboardInterrupt cut the protocol short: the receive that ended
                # with this completion is armed again (nothing if closed or paused)
                if not self.recv_armed:
                    self.arm_recv()
        elif res == 0:
            if self.paused and not self._lingering:
                # The protocol sees the EOF after the bytes held back before it, on resume,
                # as the epoll engine reads it only then: delivered now it would close the
                # connection and drop them.
                self._rare().eof = True
            else:
                self._eof()
        elif res == -errno.ENOBUFS:
            assert self.proactor is not None
            assert self.pool_ring is not None
            self.proactor.starved(self, self.pool_ring)
        elif res == -errno.ECANCELED:
            # The receive a pause cancelled has ended. If the connection resumed before this
            # completion came, the resume found the receive still armed and left it: arm it now
            # (arm_recv does nothing while paused or closed), or the connection would hang.
            if not self.recv_armed:
                self.arm_recv()
        elif not self.closed:
            self.abort(cqe_error(res))

    def _deliver(self, lease: LeaseLike | HeldBytes, n: int) -> None:
        if self.closed or self._lingering or n <= 0:
            lease.release()  # after close() input is discarded until the peer's EOF
            return
        if self.paused:
            self._hold_paused(lease, n)
            return
        self._received(n)
        assert self.protocol is not None
        if not self.protocol.buffer_received(lease, n):
            lease.release()

    def _hold_paused(self, lease: LeaseLike | HeldBytes, n: int) -> None:
        """Keep a receive that raced the pause's cancel, to deliver it on resume.

        The block itself is kept while the pool ring's ``hold_limit`` allows, so that the
        protocol gets the very lease on resume (no copy); past it the bytes are copied out and
        the block goes back at once, as a paused epoll connection holds no block.
        """
        pool_ring = self.pool_ring
        if pool_ring is not None and pool_ring.held < pool_ring.hold_limit:
            pool_ring.held += 1
            self._hold_lease(lease, n)
            return
        if pool_ring is not None:
            pool_ring.held_copied += 1
        self._hold_arrival(lease.view[:n].tobytes())
        lease.release()

    def _held_lease_gone(self, lease: LeaseLike) -> None:
        pool_ring = self.pool_ring
        if pool_ring is not None:
            pool_ring.held -= 1

    def _stop_reading(self) -> None:
        """Reading paused: the receive is cancelled, arrivals that race the cancel are held."""
        if self.recv_armed:
            self._ring.prep_cancel(0, target=self.token << 8 | RECV)

    def _read_more(self) -> None:
        """After a pause, once what was held is delivered: the held EOF, or receive again."""
        x = self._x
        if x is not None and x.eof:
            x.eof = False
            self._eof()
            return  # nothing follows the EOF: no receive to arm
        self.arm_recv()

    # ---- writing ----
    def write(
        self, data: bytes | memoryview, owner: LeaseLike | None = None, *, more: bool = False
    ) -> None:
        """Queue ``data`` for the next flush; ``owner`` is released once the kernel is done.

        ``more`` (more data follows at once) needs no action here: everything written during a
        loop pass goes out together, gathered, just before the next ``io_uring_enter``.

        :raises ConnectionError: the connection is closing or closed.
        """
        if self.closing or self.closed:
            self._refuse_write(owner)
        if type(data) is bytes and self._sending is None and not self.queue:
            # Small bytes with nothing queued: the ring copies and sends them itself and handles
            # the completion in C (Python sees it only on failure), so nothing is pinned here.
            n = len(data)
            if 0 < n <= CSEND_MAX and not self._ring.csend_raw(self.fd, data, n, self._csent):
                if owner is not None:
                    owner.release()
                return  # counted in bytes_out when the kernel completes it (bytes_out)
        if type(data) is not bytes:
            data = memoryview(data)
            if not data.c_contiguous:  # refused here, as epoll's send does, not at the flush
                raise BufferError("memoryview: underlying buffer is not C-contiguous")
            if data.format != "B" or data.ndim != 1:
                data = data.cast("B")
        n = len(data)
        if not n:
            if owner is not None:
                owner.release()
            return
        # _queue_item and _push inlined: a relay comes here once per read
        if self._sending is None:
            self._want_flush()
        queue = self.queue
        if queue is None:
            queue = self.queue = collections.deque()
        queue.append(_Queued(data, owner))
        self.queued += n
        if self.queued > self.high_water and not self.paused:
            self._pause_for_output()

    def write_file(self, fd: int, offset: int, count: int, *, close_fd: bool = True) -> None:
        """Queue ``count`` bytes of file ``fd`` from ``offset``, sent with splice.

        :raises ConnectionError: the connection is closing or closed.
        """
        item = FileRange(fd, offset, count, close_fd=close_fd)
        if self.closing or self.closed:
            self._refuse_write(item)
        if not item.count:  # nothing to send (a splice of 0 bytes is refused: EINVAL)
            item.discard()
            return
        self._queue_item(_Queued(item, None))

    def _queue_item(self, item: _Queued) -> None:
        if self._sending is None:
            self._want_flush()
        self._push(item)

    def _want_flush(self) -> None:
        """Flush the queue before the next enter, or once the copied sends are out."""
        if self._ring.csend_busy(self.fd, self._csent):
            self._sending = _WAIT_COPIED  # _on_csent flushes: queued bytes go after copied ones
        else:
            self._sending = _FLUSH_PENDING
            self.proactor.want_flush(self)

    def _on_csent(self, res: int, flags: int) -> None:
        """The ring's copied sends failed (``res`` < 0) or, as asked, are all out (``res`` 0)."""
        if self.closed:
            return
        if res < 0:
            self.abort(cqe_error(res))
            return
        if self._sending is _WAIT_COPIED:
            self._sending = None
            if self.queue:
                self.flush_now()
            else:
                self._drained()

    def flush_now(self) -> None:
        """Submit the head of the queue (called by the proactor before it enters the kernel)."""
        if self._sending is _FLUSH_PENDING:
            self._sending = None
        queue = self.queue
        if self._sending is not None or self.closed or not queue:
            return
        head = queue[0].data
        if isinstance(head, FileRange):
            self._splice_start(head)
            return
        if len(queue) == 1:  # the common case: one response, one send
            if len(head) > SEND_MAX:  # one send moves at most this: the rest goes in the next
                head = memoryview(head)[:SEND_MAX]
            zc = self.proactor.zc_threshold
            # zero-copy sends are TCP's (a Unix socket refuses them: EOPNOTSUPP), and only for a
            # peer whose window is wide: a small window makes them crawl (see ZC_MIN_WINDOW)
            big = (
                zc is not None
                and len(head) >= zc
                and self.sock.family != socket.AF_UNIX  # type: ignore[union-attr]
                and (send_window(self.sock) or 0) >= ZC_MIN_WINDOW
            )
            self._sending = [
                self._ring.prep_send_buffer(self.fd, head, self.token << 8 | SEND, big)
            ]
            self.inflight += 1
            return
        views: list[Any] = []
        for item in queue:
            data = item.data
            if type(data) is FileRange or len(views) == IOV_MAX:
                break
            views.append(data)
        self._gather_send(views)

    def _gather_send(self, views: list[Any]) -> None:
        """Gather several queued buffers into one sendmsg; C writes the iovecs.

        The iovec array is sized to this send and lives only as long as it: one kept per
        connection at ``IOV_MAX`` entries (16 KiB, zeroed, so every page touched) made each
        connection that ever gathered two writes 16 KiB heavier for the rest of its life.
        """
        iov, msg = new_iov(len(views))
        pins = self._ring.prep_sendv(self.fd, views, iov, msg, self.token << 8 | SEND)
        pins += (iov, msg)  # the kernel reads the iovecs and msghdr too
        self._sending = pins
        self.inflight += 1

    def _on_send(self, res: int, flags: int) -> None:
        if flags & CQE_F_NOTIF:
            self.inflight -= 1
            _release_all(self._rare().zc_owners.pop(0))
            return
        zc_pending = bool(flags & CQE_F_MORE)
        if not zc_pending:
            self.inflight -= 1
        pins, self._sending = self._sending, None
        if self.closed:
            return
        queue = self.queue
        assert queue is not None  # a send was in flight, so its data is still queued
        if res == self.queued and not zc_pending and len(queue) == 1:
            # The common case, kept short: one buffer queued, all of it sent. The deque goes, as
            # on epoll: small bytes writes are sent by the ring without it, and an idle
            # connection holding an empty deque costs ~760 bytes.
            owner = queue.popleft().owner
            self.queue = None
            if owner is not None:
                owner.release()
            self._account(res)  # all that was queued: queued is 0, an output pause ends
            if self.closing and not self._lingering:
                self._linger()
            return
        if res < 0:
            self.abort(cqe_error(res))
            return
        if res == self.queued and not zc_pending:
            # A gather that sent everything queued: its owners go back in one sweep, without
            # the partial-send bookkeeping of _consume.
            while queue:
                first = queue[0]
                if type(first.data) is FileRange:
                    break  # an empty file range: spliced (and discarded) as before
                queue.popleft()
                owner = first.owner
                if owner is not None:
                    owner.release()
            self._account(res)
            if self.queue:
                self.flush_now()
            else:
                self._drained()
            return
        done = self._consume(res)
        if zc_pending:
            self._rare().zc_owners.append([*done, pins])
        else:
            _release_all(done)
        self._account(res)
        if self.queue:
            self.flush_now()
        else:
            self._drained()

    def _consume(self, sent: int) -> list[Any]:
        """Drop ``sent`` bytes from the head of the queue; return the owners now done."""
        done: list[Any] = []
        queue = self.queue
        while sent and queue:
            first = queue[0]
            view: Any = first.data  # bytes or a memoryview: files are sent by splice
            if sent < len(view):
                first.data = memoryview(view)[sent:]
                break
            sent -= len(view)
            queue.popleft()
            if first.owner is not None:
                done.append(first.owner)
        return done

    def _drained(self) -> None:
        self.queued = 0
        self.queue = None  # empty: an idle connection keeps no deque
        if self.closing and not self.closed and not self._lingering:
            self._linger()

    # ---- files: file -> pipe -> socket ----
    def _splice_start(self, item: FileRange) -> None:
        x = self._rare()
        if x.pipe is None:
            x.pipe = _new_pipe()
        n = min(item.count, _PIPE_SIZE)
        ud = self.token << 8 | SPLICE_IN
        self._ring.prep_splice(item.fd, x.pipe[1], off_in=item.offset, nbytes=n, ud=ud)
        self._sending = []
        self.inflight += 1

    def _on_splice_in(self, res: int, flags: int = 0) -> None:
        self.inflight -= 1
        if self.closed:
            return
        assert self.queue is not None
        item = self.queue[0].data
        assert isinstance(item, FileRange)
        if res <= 0:
            err = cqe_error(res) if res else item.truncated()
            if not res:  # the client sees a reset; the operator, why (as on epoll)
                assert self.reactor is not None
                self.reactor.report(err, Handled("the connection was reset", self))
            self.abort(err)
            return
        item.offset += res
        item.count -= res
        self._rare().pipe_fill = res
        self._splice_out()

    def _splice_out(self) -> None:
        x = self._rare()
        assert x.pipe is not None
        ud = self.token << 8 | SPLICE_OUT
        self._ring.prep_splice(x.pipe[0], self.fd, nbytes=x.pipe_fill, ud=ud)
        self.inflight += 1

    def _on_splice_out(self, res: int, flags: int = 0) -> None:
        self.inflight -= 1
        if self.closed:
            return
        if res <= 0:
            self.abort(cqe_error(res) if res else ConnectionResetError(errno.EPIPE, "peer gone"))
            return
        x = self._rare()
        x.pipe_fill -= res
        self._account(res)
        if x.pipe_fill:
            self._splice_out()
            return
        queue = self.queue
        assert queue is not None
        item = queue[0].data
        assert isinstance(item, FileRange)
        if item.count:
            self._splice_start(item)
            return
        item.discard()
        queue.popleft()
        self._sending = None
        if queue:
            self.flush_now()
        else:
            self._drained()

    #: completion handlers by kind (``user_data & 0xff``), plain functions called as
    #: ``handlers[kind](conn, res, flags)``: a tuple of bound methods on the instance would make
    #: every connection a reference cycle, and a cycle that holds a pinned memoryview must never
    #: reach the garbage collector (it cannot clear a memoryview that is still exported).
    handlers = (_on_unknown, _on_recv, _on_send, _on_splice_in, _on_splice_out, _on_csent)

    # ---- closing ----
    def _output_pending(self) -> bool:
        sending = self._sending  # identity checks: the markers are (distinct) empty lists
        if self.queue or not (sending is None or sending is _FLUSH_PENDING):
            return True
        if sending is not None:
            return False
        ud = self._csent
        if not self.closing:  # e.g. a timeout asks: copied bytes a peer has not taken count
            return bool(self._ring.csend_busy(self.fd, ud, notify=False) == 1)
        # close() asks: the ring's copied sends must be out before the shutdown
        if self._ring.csend_busy(self.fd, ud):
            self._sending = _WAIT_COPIED  # _on_csent lingers once they are
            return True
        return False

    def _discard_input(self) -> None:
        # Lingering (the base class's _linger): what arrives is released as its receive
        # completes, until the peer's EOF; the receive may have been cancelled by a pause.
        self.arm_recv()

    def _finish(self, exc: BaseException | None) -> None:
        self.closed = True
        if self._sending is _FLUSH_PENDING or self._sending is _WAIT_COPIED:
            self._sending = None  # queued for a flush, nothing submitted yet
        sending = self._sending is not None
        in_flight = self._cancel_inflight()
        queue, self.queue = self.queue, None
        for queued in queue or ():
            # While an operation is in flight the kernel may read any queued item's memory or
            # file: those wait for the last completion; otherwise they are freed now.
            keep = queued.data if isinstance(queued.data, FileRange) else queued.owner
            if keep is not None and sending:
                in_flight.append(keep)
            elif keep is not None:
                _release_all([keep])
        self._hand_over(in_flight)
        # What is queued for this socket (a copied send, a receive, the cancels) names it by fd
        # number, resolved at submission: submitted after the close below, it could act on a
        # socket that took the number meanwhile.
        with contextlib.suppress(OSError):
            self._ring.submit()
        self._closed_notify(exc)

    def _cancel_inflight(self) -> list[Any]:
        # The ring cancels and frees its copied sends itself. If it cannot queue the cancel (a
        # full submission queue), closing must still go on: the send then ends with the peer.
        # Nor may a refused cancel stop the close half-way (no connection_lost, the socket
        # left open): the operation then ends with the peer or the ring's teardown.
        with contextlib.suppress(OSError):
            self._bytes_out += self._ring.csend_detach(self.fd)
        if self.recv_armed:
            with contextlib.suppress(OSError):
                self._ring.prep_cancel(0, target=self.token << 8 | RECV)
        held: list[Any] = []
        x = self._x
        if self._sending is not None:
            kind = SEND if x is None or not x.pipe or x.pipe_fill == 0 else SPLICE_OUT
            with contextlib.suppress(OSError):
                self._ring.prep_cancel(0, target=self.token << 8 | kind)
                self._ring.prep_cancel(0, target=self.token << 8 | SPLICE_IN)
            held.append(self._sending)
        if x is not None:
            for owners in x.zc_owners:
                held.extend(owners)
            x.zc_owners.clear()
        return held

    def _hand_over(self, in_flight: list[Any]) -> None:
        """Leave what the kernel may still touch to a :class:`_Remains` until its completions."""
        assert self.proactor is not None
        if self.inflight > 0:
            self.proactor.retarget(self.token, _Remains(self, in_flight))
        else:
            _release_all(in_flight)
            _close_pipe(self._x.pipe if self._x is not None else None)
            self.proactor.retarget(self.token, None)
        self._x = None
        self._sending = None
        self.inflight = 0
        self.recv_armed = False


def _release_all(items: list[Any]) -> None:
    for item in items:
        if isinstance(item, list):
            _release_all(item)
        elif isinstance(item, FileRange):
            item.discard()
        elif hasattr(item, "release"):
            item.release()


def _new_pipe() -> tuple[int, int]:
    r, w = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # pipe-max-size is lower: splices move less per round
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    return r, w


def _close_pipe(pipe: tuple[int, int] | None) -> None:
    if pipe is not None:
        os.close(pipe[0])
        os.close(pipe[1])

"""The connection as its protocol sees it (:class:`Transport`), and what both engines share.

:class:`BaseConnection` keeps the per-connection state that does not depend on how bytes move:
the protocol hookup, ``open``/``reset`` (connections are pooled), pausing and resuming with the
input held back meanwhile, the write queue's accounting and its high/low-water marks,
``close``/``abort``/``timed_out``, the closed notification and the byte counters. The epoll
:class:`~poolalloc.net.epoll.connection.Connection` and the io_uring
:class:`~poolalloc.net.uring.connection.UringConnection` derive from it, as siblings, and add
only their engine's half: how a read arrives, how the queue is sent, what closing must cancel.

* Held-back input: while a connection is paused, what arrives is not given to the protocol; a
  protocol that paused in the middle of a read hands the unread rest to :meth:`hold_back`.
  Both are kept here, in one queue, the protocol's rest first, and handed to
  ``buffer_received`` in order on resume: ``bytes`` (the pooled block went back at once) as
  :class:`HeldBytes`, and the pooled blocks an engine kept (io_uring receives that completed
  while paused, within a bound the engine enforces, see ``held_blocks``) as the leases they
  are, so that a relay writes them on without a copy.
* The protocol sees its connection only through :class:`Transport` (write, pause, resume,
  close, a deadline): never the loop or the engine's internals. :class:`StreamTransport` is
  the part an asyncio transport also has.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import os
import socket
import struct
import termios
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from poolalloc._lease import ViewLeaseBase
from poolalloc.net.sockets import LeaseLike, LeaseSource

__all__ = [
    "BaseConnection",
    "ConnectionProtocol",
    "FileRange",
    "Handled",
    "HeldBytes",
    "Loop",
    "ReadPool",
    "Releasable",
    "StreamTransport",
    "Transport",
    "all_acknowledged",
    "queued_size",
]

_LINGER_RST = struct.pack("ii", 1, 0)
#: reads a linger's end makes to drain the peer's input before it closes
_LINGER_DRAIN_READS = 16


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


class HeldBytes(ViewLeaseBase):
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
        # the C base exports these bytes by the buffer protocol (memoryview(held)) on every
        # Python version
        super().__init__(memoryview(data))
        self.data = data

    @property
    def view(self) -> memoryview:
        """A fresh read-only view of the held bytes (``with held.view as v`` is safe)."""
        return memoryview(self.data)

    @view.setter
    def view(self, value: memoryview) -> None:
        raise AttributeError("HeldBytes.view is read-only: the held bytes do not change")

    @property
    def nbytes(self) -> int:
        """How many bytes are held."""
        return len(self.data)

    def release(self) -> None:
        """Nothing to give back: the bytes belong to this object."""


class StreamTransport(Protocol):
    """What a protocol may ask of any byte-stream transport: an asyncio ``Transport`` has it,
    and so do both engines' connections.

    Example:
        >>> import asyncio
        >>> from poolalloc.net.epoll.connection import Connection
        >>> names = ("write", "pause_reading", "resume_reading", "is_closing", "close", "abort")
        >>> all(callable(getattr(c, n)) for c in (Connection, asyncio.Transport) for n in names)
        True
    """

    def write(self, data: bytes, /) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def is_closing(self) -> bool: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class Transport(StreamTransport, Protocol):
    """A pooled connection as its protocol sees it (both engines' connections satisfy it).

    Beyond :class:`StreamTransport`: writes that release their lease once sent, files,
    input held back by a protocol that paused mid-read, a deadline, and the state flags.

    Example:
        >>> from poolalloc.net.epoll.connection import Connection
        >>> t: Transport = Connection()
        >>> t.closed, t.paused  # closed until it is opened on a socket
        (True, False)
    """

    @property
    def paused(self) -> bool: ...

    @property
    def closing(self) -> bool: ...

    @property
    def closed(self) -> bool: ...

    def write(
        self, data: bytes | memoryview, owner: LeaseLike | None = None, *, more: bool = False
    ) -> None: ...

    def write_file(self, fd: int, offset: int, count: int, *, close_fd: bool = True) -> None: ...

    def close(self, *, linger: bool = True) -> None: ...

    def hold_back(self, data: bytes) -> None: ...

    def set_deadline(self, seconds: float | None) -> None: ...

    #: The deadline as loop time (0: none); a protocol may move it later as work arrives.
    deadline: float


class ConnectionProtocol(Protocol):
    """What a connection calls; ``buffer_received`` returns True to keep the lease.

    A protocol may also define ``timed_out() -> bool``, which the connection calls when the
    server's sweep finds its ``deadline`` or the idle limit passed, with nothing queued to send
    and no close begun. Returning True says the protocol ended the connection itself,
    gracefully (e.g. an HTTP server answers ``408`` and closes, or just closes an idle
    keep-alive connection: the peer reads a FIN, not a reset); it must then have called
    ``close``. Without the method, or when it returns False, the connection is aborted (RST),
    as it always is when output is still queued (a graceful close would wait on a peer that
    does not read). A graceful close whose linger time passed is closed plainly, never reset:
    the kernel still delivers what it holds for the peer.

    Example:
        >>> class Echo:
        ...     def connection_made(self, conn): self.conn = conn
        ...     def buffer_received(self, lease, n):
        ...         self.conn.write(lease.view[:n], owner=lease); return True
        ...     def eof_received(self): return False
        ...     def connection_lost(self, exc): pass
    """

    def connection_made(self, conn: Any) -> None: ...

    def buffer_received(self, lease: LeaseLike, nbytes: int) -> bool: ...

    def eof_received(self) -> bool: ...

    def connection_lost(self, exc: BaseException | None) -> None: ...


class Releasable(Protocol):
    """What holds a pooled connection object: a lease with ``release``.

    Example:
        >>> from poolalloc.objects import ObjectPool
        >>> lease: Releasable = ObjectPool(list).acquire(); lease.release()
    """

    def release(self) -> None: ...


class Loop(Protocol):
    """The event loop a connection runs on, as far as the shared bookkeeping needs it.

    Example:
        >>> from poolalloc.net.epoll.reactor import Reactor
        >>> with Reactor() as r:
        ...     loop: Loop = r
        ...     loop.now > 0
        True
    """

    now: float

    @property
    def closed(self) -> bool: ...

    def call_soon(self, callback: Callable[..., object], *args: Any) -> Any: ...

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Any: ...


class Handled:
    """The ``where`` of an error that the code reporting it to the loop's ``exception_handler``
    dealt with already (``what`` says how; ``source`` is where it happened): the default
    handler logs it as one line at WARNING, with no traceback, where an exception that escaped
    a callback (a bug) is logged as unhandled, with its traceback.

    Example:
        >>> Handled("the connection was reset")
        the connection was reset
    """

    __slots__ = ("source", "what")

    def __init__(self, what: str, source: object = None) -> None:
        self.what, self.source = what, source

    def __repr__(self) -> str:
        return self.what


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

    def truncated(self) -> OSError:
        """The error for a file that ended before ``count`` more bytes from ``offset``: its
        name (when ``/proc`` gives one) and what is missing, for the operator's log (the
        client only sees its answer cut by a reset).

        Example:
            >>> FileRange(-1, 10, 5, close_fd=False).truncated().strerror
            'file truncated while sending: it ends before byte 15, answered as its length'
        """
        try:
            name = os.readlink(f"/proc/self/fd/{self.fd}")
        except OSError:
            name = None
        end = self.offset + self.count
        why = f"file truncated while sending: it ends before byte {end}, answered as its length"
        return OSError(errno.EIO, why, name)

    def discard(self) -> None:
        """Close the fd if this range owns it."""
        if self.close_fd and self.fd >= 0:
            # EBADF: the caller's fd was not open (its send failed for that and the connection
            # is being aborted); raising here would stop that abort half-way
            with contextlib.suppress(OSError):
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


def queued_size(item: QueuedData) -> int:
    """Bytes a queued item stands for (a view's length or a file range's count).

    Example:
        >>> queued_size(b"abc"), queued_size(FileRange(-1, 0, 7, close_fd=False))
        (3, 7)
    """
    return item.count if isinstance(item, FileRange) else len(item)


LoopT = TypeVar("LoopT", bound=Loop)


def _input_waiting(sock: socket.socket | None) -> bool:
    """Whether bytes wait unread in ``sock``'s receive queue (not an EOF, not an error)."""
    try:
        return sock is not None and bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:  # BlockingIOError: nothing waits; any other: closing cannot reset
        return False


#: How often a quiet close looks whether the peer acknowledged everything (seconds)
_ACK_POLL = 0.02


def all_acknowledged(sock: socket.socket | None) -> bool:
    """Whether the peer acknowledged every byte written to ``sock`` (``SIOCOUTQ`` is 0): only
    then may a socket close without the linger. A byte the peer sends after the close makes
    the kernel reset the connection and drop what it still holds to send: a 300 KB answer was
    cut at about 100 KB by a stray CRLF arriving 5 ms after the request.

    Example:
        >>> import socket
        >>> a, b = socket.socketpair()  # not TCP: the ioctl answers for what a has queued
        >>> all_acknowledged(a), all_acknowledged(None)
        (True, False)
        >>> a.close(); b.close()
    """
    try:
        held = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0") if sock else b""
        return len(held) == 4 and struct.unpack("i", held)[0] == 0
    except OSError:  # cannot tell: linger
        return False


class BaseConnection(Generic[LoopT]):
    """The bookkeeping both engines' connections share; pooled, so ``open``/``reset`` replace
    ``__init__``/teardown. An engine supplies ``open``, ``write``, ``write_file``, how reading
    starts again (``_read_more``), lingering (``_discard_input``) and ``_finish``.

    Example:
        >>> from poolalloc.net.epoll.connection import Connection
        >>> from poolalloc.net.uring.connection import UringConnection
        >>> issubclass(Connection, BaseConnection), issubclass(UringConnection, Connection)
        (True, False)
    """

    # What a receive reads and writes, as slots: loads at fixed offsets, for the bytecode and
    # for the io_uring batch walk in C (poolalloc.net.uring._fastpath), which reads them by
    # their member descriptors. The rest stays in the instance dict.
    __slots__ = (
        "__dict__", "__weakref__", "_lingering", "bytes_in", "closed", "last_active", "paused",
        "protocol",
    )  # fmt: skip

    #: True from ``resume_reading`` until the resume runs. A class-level default, as the next:
    #: an instance only gets the attribute if it ever needs it (idle connections are many).
    _resuming = False
    #: Input kept while paused, oldest first (see the module docstring): ``bytes``, or a
    #: ``(lease, nbytes)`` pair for a pooled block an engine kept; None when empty.
    _held: collections.deque[bytes | tuple[LeaseLike, int]] | None = None
    #: Pooled blocks among ``_held`` (a class default, as ``_resuming``).
    _held_leases = 0
    #: After ``close(linger=False)``: ``bytes_in`` then (the peer owes no input, so the close
    #: need not linger unless input comes all the same); -1 otherwise. A class default, as
    #: ``_resuming``.
    _quick_close = -1
    #: True while reading is paused because the write queue passed ``high_water`` and for no
    #: other reason: only such a pause ends by itself once the queue drains below ``low_water``.
    #: A protocol's own ``pause_reading`` (flow control of its own) is its to end.
    _output_paused = False

    def __init__(self) -> None:
        self.high_water = 1 << 20
        self.low_water = 1 << 18
        self.linger = 2.0
        #: A protocol object kept across reuses of this pooled connection (set by servers).
        self.spare_protocol: ConnectionProtocol | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the last connection (ObjectPool ``reset``)."""
        self.reactor: LoopT | None = None
        # None between uses: callbacks scheduled for the last connection compare their socket
        # with this one, so they cannot touch the next user of this pooled object.
        self.sock: socket.socket | None = None
        self.fd = -1
        self.pool: ReadPool | None = None
        self.protocol: ConnectionProtocol | None = None
        self.on_closed: Callable[[Any], None] | None = None
        #: Told when the connection starts lingering (its answer is out; see ``_half_close``).
        self.on_lingering: Callable[[Any], None] | None = None
        self.pooled: Releasable | None = None  # the ObjectPool lease holding this object
        # Created by the first write that has to wait (epoll drops it once drained, so an
        # idle connection there holds no deque: an empty one is ~760 bytes).
        self.queue: collections.deque[_Queued] | None = None
        self.queued = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.last_active = 0.0
        self.deadline = 0.0  # absolute loop time; 0 = none (set by protocols)
        self.paused = False
        self.closing = False
        # Closed until open: a protocol that kept this object past its connection_lost finds
        # it closed (close and abort do nothing, write raises), not open without a socket.
        self.closed = True
        self._lingering = False
        self._chunk = 65536
        if self._resuming:
            self._resuming = False
        if self._quick_close >= 0:
            self._quick_close = -1
        if self._output_paused:
            self._output_paused = False
        if self._held is not None:
            self._drop_held()

    def open(
        self,
        reactor: LoopT,
        sock: socket.socket,
        pool: ReadPool,
        protocol: ConnectionProtocol,
        chunk_size: int,
    ) -> None:
        """Adopt a connected socket and start the protocol (the engine's half)."""
        raise NotImplementedError

    def _adopt(
        self,
        reactor: LoopT,
        sock: socket.socket,
        pool: ReadPool,
        protocol: ConnectionProtocol,
        chunk_size: int,
    ) -> None:
        self.reactor = reactor
        self.sock, self.fd = sock, sock.fileno()
        self.pool, self.protocol, self._chunk = pool, protocol, chunk_size
        self.last_active = reactor.now
        self.closed = False

    # ---- the transport interface's small parts ----
    def is_closing(self) -> bool:
        """True once ``close`` or ``abort`` was called (as asyncio transports say it)."""
        return self.closing or self.closed

    def set_deadline(self, seconds: float | None) -> None:
        """End the connection if it is still open ``seconds`` from now (None: no deadline).

        The server's timeout sweep enforces it, so it is as precise as the sweep interval;
        it ends the connection through :meth:`timed_out` (the protocol may close it
        gracefully, else it is aborted).
        """
        if seconds is None:
            self.deadline = 0.0
        else:
            assert self.reactor is not None
            self.deadline = self.reactor.now + seconds

    # ---- reading ----
    def _received(self, nbytes: int) -> None:
        """Count ``nbytes`` that arrived (the one place ``bytes_in`` grows)."""
        self.bytes_in += nbytes
        assert self.reactor is not None
        self.last_active = self.reactor.now

    def hold_back(self, data: bytes) -> None:
        """Keep ``data``, the unread rest of the read being delivered, until the connection
        resumes: it is delivered again first, ahead of anything that arrived after it."""
        if type(data) is not bytes:  # a bytearray or view: copied, it may change or go away
            data = bytes(data)
        held = self._held
        if held is None:
            held = self._held = collections.deque()
        held.appendleft(data)

    @property
    def held_blocks(self) -> int:
        """Pooled blocks this paused connection holds for its protocol (0 on epoll, which
        reads nothing while paused; on io_uring, receives that completed while paused)."""
        return self._held_leases

    def _hold_arrival(self, data: bytes) -> None:
        """Keep ``data``, which arrived while paused (counted now), behind what is held."""
        self._received(len(data))
        held = self._held
        if held is None:
            held = self._held = collections.deque()
        held.append(data)

    def _hold_lease(self, lease: LeaseLike, nbytes: int) -> None:
        """Keep the pooled block ``lease``, which arrived while paused with ``nbytes`` (counted
        now), behind what is held; it is released if the connection closes first."""
        self._received(nbytes)
        held = self._held
        if held is None:
            held = self._held = collections.deque()
        held.append((lease, nbytes))
        self._held_leases += 1

    def _held_lease_gone(self, lease: LeaseLike) -> None:
        """A held block left the queue (delivered or released): the engine's bookkeeping."""

    def _drop_held(self) -> None:
        held = self._held
        if held is None:
            return
        self._held = None
        if self._held_leases:
            self._held_leases = 0
            for item in held:
                if isinstance(item, tuple):
                    lease = item[0]
                    self._held_lease_gone(lease)
                    lease.release()

    def pause_reading(self) -> None:
        """Stop delivering input until :meth:`resume_reading` (the caller's pause: the write
        queue draining does not end it)."""
        if self._output_paused:
            self._output_paused = False
        if self.paused or self.closed:
            return
        self.paused = True
        self._stop_reading()

    def _stop_reading(self) -> None:
        """Reading was paused (the engine's half: nothing to do where reads wait for readiness)."""

    def _pause_for_output(self) -> None:
        """The write queue passed ``high_water``: pause reading until it drains below
        ``low_water`` (a client that never reads cannot make the server buffer without bound)."""
        if not self.paused and not self.closed:
            self.paused = True
            self._output_paused = True  # before the engine's half: set even if that raises
            self._stop_reading()

    def resume_reading(self) -> None:
        """Deliver what was held, then read again (from the next loop pass).

        The connection stays paused until then: input that arrives meanwhile must not overtake
        what was held back when it paused.
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
            self._output_paused = True  # filled up again meanwhile: paused until it drains
            return
        self.paused = False
        hook = getattr(self.protocol, "resume_reading", None)  # optional, for a protocol's own
        if hook is not None and not self.closed:  # state; held input is the connection's
            try:
                hook()
            except Exception as exc:  # as for a read: a protocol bug ends the connection
                self.abort(exc)
                raise
        held = self._held
        protocol = self.protocol
        while held and not self.paused and not self.closed:
            item = held.popleft()
            assert protocol is not None
            # A protocol that pauses again hands the unread rest back with hold_back.
            if isinstance(item, bytes):
                try:
                    protocol.buffer_received(HeldBytes(item), len(item))
                except Exception as exc:
                    self.abort(exc)
                    raise
                continue
            lease, nbytes = item
            self._held_leases -= 1
            self._held_lease_gone(lease)
            try:
                kept = protocol.buffer_received(lease, nbytes)
            except Exception as exc:
                # As for a fresh read: a protocol bug must not strand the block or the
                # connection; the lease goes back, the connection is aborted, the loop reports.
                lease.release()
                self.abort(exc)
                raise
            if not kept:
                lease.release()
        if not self.paused and not self.closed:
            self._read_more()

    def _read_more(self) -> None:
        """Read again after a pause (the engine's half)."""
        raise NotImplementedError

    def _eof(self) -> None:
        assert self.protocol is not None
        if self.closing:
            if not self._lingering and self._output_pending():
                # The peer only half-closed: it may still read what close() is flushing. Once
                # that is out, _linger shuts down our side and reads this EOF again.
                return
            self._finish(None)
            return
        try:
            keep_open = self.protocol.eof_received()
        except Exception as exc:
            # As for a read: a protocol bug ends the connection (the peer would otherwise
            # wait for the idle timeout), and the loop reports it.
            self.abort(exc)
            raise
        if not keep_open:
            self.close()

    # ---- the write queue's accounting ----
    def _refuse_write(self, owner: LeaseLike | FileRange | None) -> None:
        """A write after ``close``: free what it handed over, then raise."""
        if isinstance(owner, FileRange):
            owner.discard()
        elif owner is not None:
            owner.release()
        raise ConnectionError("write on a closing connection")

    def _push(self, item: _Queued) -> bool:
        """Queue ``item`` and pause past ``high_water``; True when nothing was waiting before."""
        queue = self.queue
        if queue is None:
            queue = self.queue = collections.deque()
        first = not queue
        queue.append(item)
        self.queued += queued_size(item.data)
        if self.queued > self.high_water and not self.paused:
            self._pause_for_output()
        return first

    def _sent(self, nbytes: int) -> None:
        """Count ``nbytes`` that left (the one place ``bytes_out`` grows)."""
        self.bytes_out += nbytes
        assert self.reactor is not None
        self.last_active = self.reactor.now

    def _account(self, sent: int) -> None:
        """``sent`` queued bytes left: count them, resume below ``low_water``."""
        self._sent(sent)
        self.queued -= sent
        if self._output_paused and self.queued <= self.low_water and not self.closing:
            self._output_paused = False
            self.resume_reading()

    def _output_pending(self) -> bool:
        return bool(self.queue)

    # ---- closing ----
    def close(self, *, linger: bool = True) -> None:
        """Graceful close: flush what is queued, half-close, drain input, then close.

        ``linger=False`` says the peer owes no input (an HTTP request was read whole): once the
        output is out the socket is closed at once, with a FIN, unless input is waiting (held,
        or in the socket's receive queue), which a close would answer with a reset that can
        destroy the response the peer has not read yet; then it lingers as with ``True``. A
        ``close()`` during a ``close(linger=False)`` whose output is still going asks for the
        linger after all (a protocol that finds more input behind the request it closed on).
        """
        if self.closed:
            return
        if self.closing:
            if linger and self._quick_close >= 0:
                self._quick_close = -1
            return
        self.closing = True
        if not linger:
            self._quick_close = self.bytes_in
        if not self._output_pending():
            self._linger()

    def _linger(self) -> None:
        """Half-close, then discard input until the peer's EOF or ``linger`` seconds; after
        ``close(linger=False)``, once the current callback is done, close at once when no
        input is waiting and the peer acknowledged everything written (as nginx's
        ``lingering_close on``)."""
        assert self.sock is not None
        if self._quick_close >= 0:
            # Decided in a later callback: the protocol that closed may still find more input
            # behind its request in the read it is walking, and ask for the linger.
            assert self.reactor is not None
            self.reactor.call_soon(self._close_unless_input, self.sock)
            return
        self._half_close()

    def _close_unless_input(self, sock: socket.socket | None) -> None:
        if sock is not self.sock or self.closed or self._lingering:
            return  # closed (or the pooled object reused) meanwhile, or decided already
        quiet, self._quick_close = self._quick_close == self.bytes_in, -1
        quiet = quiet and not self._held and not _input_waiting(sock)
        if quiet and all_acknowledged(sock):
            self._finish(None)
            return
        self._half_close()
        if quiet and self._lingering:  # waiting for the acknowledgement only (not on loopback)
            self._end_when_acknowledged(sock)

    def _end_when_acknowledged(self, sock: socket.socket | None) -> None:
        """A quiet close lingers only until the peer acknowledged everything (our FIN too),
        looked at every 20 ms: closed then, if no input is waiting, rather than holding its
        connection slot for the whole linger over a link with a round trip to wait for."""
        if sock is not self.sock or self.closed or not self._lingering:
            return
        if all_acknowledged(sock) and not _input_waiting(sock):
            self._finish(None)
        else:
            assert self.reactor is not None
            self.reactor.call_later(_ACK_POLL, self._end_when_acknowledged, sock)

    def _half_close(self) -> None:
        assert self.sock is not None
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._finish(None)
            return
        self._lingering = True
        self.paused = False
        self._drop_held()
        self.set_deadline(self.linger)
        on_lingering = self.on_lingering
        if on_lingering is not None:  # before the drain, which may find the EOF and finish
            on_lingering(self)
        elif self.reactor is not None and not self.reactor.closed:
            # No server's sweep looks at this connection's deadline (a program opened it
            # itself, a client): a timer ends the linger instead.
            self.reactor.call_later(self.linger, self._linger_expired, self.sock)
        self._discard_input()

    def _linger_expired(self, sock: socket.socket | None) -> None:
        if sock is self.sock and not self.closed and self._lingering:
            self._end_linger()

    def _discard_input(self) -> None:
        """Drop input until the peer's EOF (the engine's half)."""
        raise NotImplementedError

    def abort(self, exc: BaseException | None = None) -> None:
        """Abortive close: drop the queue and reset the connection (RST to the peer)."""
        if self.closed:
            return
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        self._finish(exc)

    def timed_out(self) -> None:
        """Called by the server's sweep when ``deadline`` or the idle limit passed.

        A lingering connection (its linger time passed) is closed without a reset
        (:meth:`_end_linger`); a closing one whose output never drained, and one with output
        queued, are aborted; otherwise the protocol's optional ``timed_out`` may end it
        gracefully (see :class:`ConnectionProtocol`), else it is aborted too.
        """
        if self._lingering:
            self._end_linger()
            return
        if self.closing:  # its output never drained: the peer does not read it
            self.abort(TimeoutError("close timed out"))
            return
        if not self._output_pending():
            hook = getattr(self.protocol, "timed_out", None)
            try:
                handled = hook is not None and hook()
            except Exception as exc:  # a protocol bug: the connection still ends
                self.abort(exc)
                raise
            if handled and (self.closing or self.closed):
                return
        if not self.closed:
            self.abort(TimeoutError("connection timed out"))

    def end_linger(self) -> None:
        """End a lingering close now, as its linger time's end does (a server making room for
        a new connection, see ``TcpServer``); nothing if the connection is not lingering."""
        if self._lingering and not self.closed:
            self._end_linger()

    def _end_linger(self) -> None:
        """The linger time is over and the peer has not closed: close without a reset. Our
        FIN went out at the half-close; the kernel still delivers what it holds for the peer
        before it (a slow reader of a ``Connection: close`` download gets all of it), which a
        reset would throw away. What the peer sent meanwhile is read first (a bounded number
        of reads): unread input at close makes the kernel reset after all."""
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                for _ in range(_LINGER_DRAIN_READS):
                    if not sock.recv(65536, socket.MSG_DONTWAIT):
                        break
        self._finish(None)

    def _finish(self, exc: BaseException | None) -> None:
        """Mark closed, free the queue, end with :meth:`_closed_notify` (the engine's half)."""
        raise NotImplementedError

    def _closed_notify(self, exc: BaseException | None) -> None:
        """Close the socket and tell the protocol and the owner (the end of every close)."""
        self._drop_held()
        if self.sock is not None:
            self.sock.close()
        protocol, on_closed = self.protocol, self.on_closed
        try:
            if protocol is not None:
                protocol.connection_lost(exc)
        finally:  # a protocol that raised there (the loop reports it) must not strand the
            if on_closed is not None:  # pooled connection: the owner still takes it back
                on_closed(self)

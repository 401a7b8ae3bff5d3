"""asyncio streams whose reads land in pooled memory: ``open_connection`` and ``start_server``.

The functions and the reader/writer pair have the signatures and the behaviour of
:mod:`asyncio`'s streams (``read``, ``readexactly``, ``readuntil``, ``readline`` return bytes and
raise ``asyncio.IncompleteReadError`` / ``asyncio.LimitOverrunError`` as asyncio does; ``limit``
bounds ``readuntil`` and drives backpressure the same way), so they are a drop-in replacement.
Underneath, the transport reads straight into pooled leases: the protocol is a
``BufferedProtocol`` whose ``get_buffer`` hands out the view of a lease from ``pool``.

The lease variants hand the received bytes out *without copying*:

* :meth:`PooledStreamReader.read_lease` -- the next received piece (arrivals into one block);
* :meth:`PooledStreamReader.readexactly_lease` -- exactly ``n`` bytes;
* :meth:`PooledStreamReader.readuntil_lease` -- up to and including a separator.

Each returns a :class:`PooledBytes`: one or a few zero-copy views of pooled blocks (one per
block the bytes span). Release it (or use ``with``) when done; the blocks
go back to the pool when the last view of them is released. The writer accepts a
:class:`PooledBytes` or a lease as well as bytes, and gives it back to its pool once the
transport is done with it.

How memory is held: once a read has landed, the reader returns the lease at once and keeps only
views of the filled part; a lease released with views alive is *parked* by the lease layer and
its block comes back when the last view dies. Later reads land in the same block's free tail
until a quarter of it is filled, so small arrivals do not pin a block each. A pool created with
``strict=True`` refuses to park, so over such a pool each read is copied out of its lease
(correct, but not zero copy). A stream whose pool is exhausted fails that connection (the
reader raises ``PoolExhausted``), never the loop.

Backpressure is asyncio's: reading pauses while more than ``2 * limit`` bytes wait unread, and
resumes at ``limit``. It runs unchanged on the default loop and on uvloop.

Example:
    >>> import asyncio
    >>> async def main() -> bytes:
    ...     async def echo(reader, writer):
    ...         with await reader.readuntil_lease(b"!") as data:
    ...             writer.write(data)  # zero copy in, zero copy out
    ...         writer.close()
    ...     server = await start_server(echo, "127.0.0.1", 0)
    ...     port = server.sockets[0].getsockname()[1]
    ...     reader, writer = await open_connection("127.0.0.1", port)
    ...     writer.write(b"hello!")
    ...     reply = await reader.read()
    ...     writer.close(); await writer.wait_closed()
    ...     server.close(); await server.wait_closed()
    ...     return reply
    >>> asyncio.run(main())
    b'hello!'
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import operator
import re
import warnings
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

from poolalloc.buffers import BufferPool
from poolalloc.net.sockets import LeaseSource

__all__ = [
    "PooledBytes",
    "PooledStreamReader",
    "PooledStreamWriter",
    "default_pool",
    "open_connection",
    "open_unix_connection",
    "start_server",
    "start_unix_server",
]

#: asyncio's default ``limit`` (64 KiB).
DEFAULT_LIMIT = 2**16
#: Block size of the default pool: asyncio's transports read at most 256 KiB at a time, and
#: 64 KiB holds a typical read whole.
DEFAULT_BLOCK = 2**16

#: While unread bytes accumulate, a block keeps taking reads until a quarter of it
#: (len >> _FILL_SHIFT) is filled: however small a peer's writes, unread bytes pin at most four
#: times their size in blocks (plus the block being filled and the one being read from). A read
#: of a quarter block or more, or one into an empty reader, takes a block of its own, as before.
_FILL_SHIFT = 2
#: Over a strict pool each read is copied: a copy joins the last one while both fit in this
#: many bytes, so a byte at a time does not cost a view object (~200 bytes) per byte.
_COPY_JOIN = 4096

_default_pool: BufferPool | None = None

ClientConnected = Callable[["PooledStreamReader", "PooledStreamWriter"], Awaitable[None] | None]


def default_pool() -> BufferPool:
    """The process-wide pool (64 KiB blocks, no capacity) used when ``pool=None``.

    Example:
        >>> default_pool() is default_pool(), default_pool().size
        (True, 65536)
    """
    global _default_pool  # noqa: PLW0603 -- created on first use, shared afterwards
    if _default_pool is None or _default_pool.closed:
        _default_pool = BufferPool(DEFAULT_BLOCK, name="poolalloc.net.streams")
    return _default_pool


def _check_size(n: int) -> None:
    # before anything is taken: a float got half way through _take, dropped the pieces it had
    # passed and left the byte count out of step with them (the reader broken for good);
    # asyncio's reader raises the same TypeError, also with nothing consumed
    operator.index(n)


def _drop(view: memoryview) -> None:
    """Let go of a view now; if someone still exports it, its last user lets go later."""
    with contextlib.suppress(BufferError):
        view.release()


class PooledBytes:
    """Received bytes in pooled memory: one or more zero-copy views, released together.

    ``views`` are the pieces in order (one per pooled block the bytes span). ``view`` is one
    contiguous view: the piece itself when there is one, else a copy (say ``views`` to avoid
    it). ``bytes(data)`` copies. After :meth:`release` the views are gone.

    Example:
        >>> data = PooledBytes([memoryview(b"ab"), memoryview(b"cd")])
        >>> len(data), bytes(data), len(data.views)
        (4, b'abcd', 2)
        >>> data.release(); data.released
        True
    """

    __slots__ = ("_views", "nbytes")

    def __init__(self, views: Iterable[memoryview]) -> None:
        self._views: tuple[memoryview, ...] | None = tuple(views)
        self.nbytes = sum(len(v) for v in self._views)

    @property
    def views(self) -> tuple[memoryview, ...]:
        """The zero-copy pieces, in order.

        :raises ValueError: already released.
        """
        if self._views is None:
            raise ValueError("PooledBytes: already released")
        return self._views

    @property
    def view(self) -> memoryview:
        """One contiguous view: zero copy for a single piece, a copy when it spans blocks."""
        views = self.views
        if len(views) == 1:
            return views[0]
        return memoryview(b"".join(views))

    @property
    def released(self) -> bool:
        """True once :meth:`release` ran."""
        return self._views is None

    def tobytes(self) -> bytes:
        """A copy of the bytes."""
        views = self.views
        return views[0].tobytes() if len(views) == 1 else b"".join(views)

    def __bytes__(self) -> bytes:
        return self.tobytes()

    def __len__(self) -> int:
        return self.nbytes

    def __buffer__(self, flags: int, /) -> memoryview:
        return self.view

    def release(self) -> None:
        """Let go of the pieces; their blocks go back once nothing else views them. Idempotent."""
        views, self._views = self._views, None
        if views is not None:
            for view in views:
                _drop(view)

    def __enter__(self) -> PooledBytes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self._views is None else f"{len(self._views)} piece(s)"
        return f"<PooledBytes nbytes={self.nbytes} {state}>"


class PooledStreamReader:
    """asyncio's ``StreamReader`` over pooled reads, with zero-copy ``*_lease`` variants.

    Example:
        >>> import asyncio
        >>> async def main():
        ...     reader = PooledStreamReader()
        ...     reader.feed_data(b"line one\\nrest"); reader.feed_eof()
        ...     return await reader.readline(), await reader.read()
        >>> asyncio.run(main())
        (b'line one\\n', b'rest')
    """

    def __init__(
        self, limit: int = DEFAULT_LIMIT, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        if limit <= 0:
            raise ValueError("Limit cannot be <= 0")
        self._limit = limit
        self._loop = loop
        self._pieces: collections.deque[memoryview] = collections.deque()
        self._size = 0
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None
        self._exception: BaseException | None = None
        self._transport: Any = None  # pause_reading/resume_reading: a ReadTransport
        self._paused = False
        # set while the protocol fills a block it would let go of once everything is read
        self._on_empty: Callable[[], None] | None = None

    def __repr__(self) -> str:
        info = [f"{self._size} bytes"] if self._size else []
        if self._eof:
            info.append("eof")
        if self._exception is not None:
            info.append(f"exception={self._exception!r}")
        if self._paused:
            info.append("paused")
        return "<PooledStreamReader " + " ".join(info) + ">"

    # -- fed by the protocol ----------------------------------------------------------------

    def exception(self) -> BaseException | None:
        """The error the stream failed with, if any."""
        return self._exception

    def set_exception(self, exc: BaseException) -> None:
        """Fail the stream: the waiting and every later read raise ``exc``."""
        self._exception = exc
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.cancelled():
            waiter.set_exception(exc)

    def set_transport(self, transport: asyncio.BaseTransport) -> None:
        """The transport to pause and resume (set once)."""
        assert self._transport is None, "Transport already set"
        self._transport = transport

    def _wakeup_waiter(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.cancelled():
            waiter.set_result(None)

    def _maybe_resume_transport(self) -> None:
        if self._paused and self._size <= self._limit:
            self._paused = False
            self._transport.resume_reading()

    def feed_eof(self) -> None:
        """The peer sent EOF: reads return what is buffered, then b'' (or raise as asyncio)."""
        self._eof = True
        self._wakeup_waiter()

    def at_eof(self) -> bool:
        """True when EOF was fed and nothing is buffered."""
        return self._eof and not self._size

    def feed_data(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes not from a pool (a copy is kept): for tests and adapters."""
        if data:
            self.feed_view(memoryview(bytes(data)))

    def feed_view(self, view: memoryview) -> None:
        """Append a view the reader now owns (the protocol feeds views of pooled blocks)."""
        assert not self._eof, "feed_view after feed_eof"
        self._pieces.append(view)
        self._fed(len(view))

    def _grow_last(self, old: memoryview, new: memoryview) -> bool:
        """Put ``new`` (``old`` and the bytes just after it in one block) in ``old``'s place.

        One piece per run of reads into a block, not one per read: a peer that sends a byte at a
        time costs a view object per block, not per byte. False when ``old`` is no longer the
        last piece (partly read, or taken): then the caller feeds a piece of its own.
        """
        pieces = self._pieces
        if self._eof or not pieces or pieces[-1] is not old:
            return False
        pieces[-1] = new
        added = len(new) - len(old)
        _drop(old)
        self._fed(added)
        return True

    def _fed(self, n: int) -> None:
        self._size += n
        self._wakeup_waiter()
        if self._transport is not None and not self._paused and self._size > 2 * self._limit:
            try:
                self._transport.pause_reading()
            except NotImplementedError:
                self._transport = None  # cannot pause: the limit then only bounds readuntil
            else:
                self._paused = True

    def discard(self) -> int:
        """Drop everything buffered (its blocks go back); returns the bytes dropped."""
        dropped = self._size
        while self._pieces:
            _drop(self._pieces.popleft())
        self._size = 0
        self._maybe_resume_transport()
        if self._on_empty is not None:
            self._on_empty()
        return dropped

    async def _wait_for_data(self, func_name: str) -> None:
        if self._waiter is not None:
            raise RuntimeError(
                f"{func_name}() called while another coroutine is already waiting for incoming data"
            )
        assert not self._eof, "_wait_for_data after EOF"
        if self._paused:  # a read is asked for: let data come even above the limit
            self._paused = False
            self._transport.resume_reading()
        loop = self._loop if self._loop is not None else asyncio.get_running_loop()
        self._waiter = loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    # -- taking bytes out -------------------------------------------------------------------

    def _take(self, n: int) -> list[memoryview]:
        """Remove the first ``n`` buffered bytes (n <= size) as views."""
        out: list[memoryview] = []
        pieces = self._pieces
        left = n
        while left:
            head = pieces[0]
            if len(head) <= left:
                out.append(pieces.popleft())
                left -= len(head)
            else:
                out.append(head[:left])
                pieces[0] = head[left:]
                _drop(head)
                left = 0
        self._size -= n
        self._maybe_resume_transport()
        if not self._size and self._on_empty is not None:
            self._on_empty()
        return out

    def _take_bytes(self, n: int) -> bytes:
        views = self._take(n)
        data = views[0].tobytes() if len(views) == 1 else b"".join(views)
        for view in views:
            _drop(view)
        return data

    def _find(self, pattern: re.Pattern[bytes], sep: bytes, offset: int) -> int:
        """Position of the first ``sep`` starting at or after ``offset``, or -1."""
        seplen = len(sep)
        pos = 0
        tail = b""  # the last seplen-1 bytes before the current piece (a match may straddle)
        for piece in self._pieces:
            size = len(piece)
            if seplen > 1 and tail:
                window = tail + piece[: seplen - 1].tobytes()
                at = window.find(sep)
                while at != -1 and pos - len(tail) + at < offset:
                    at = window.find(sep, at + 1)
                if at != -1 and at < len(tail):
                    return pos - len(tail) + at
            if pos + size > offset:
                found = pattern.search(piece, max(0, offset - pos))
                if found is not None:
                    return pos + found.start()
            if seplen > 1:
                if size >= seplen - 1:
                    tail = piece[size - (seplen - 1) :].tobytes()
                else:
                    tail = (tail + piece.tobytes())[-(seplen - 1) :]
            pos += size
        return -1

    async def _until(self, separator: bytes) -> int:
        """Wait until ``separator`` is buffered; the length through it (asyncio's rules)."""
        if not isinstance(separator, bytes | bytearray):
            raise TypeError("separator must be bytes (a tuple of separators is not supported)")
        seplen = len(separator)
        if seplen == 0:
            raise ValueError("Separator should be at least one-byte string")
        if self._exception is not None:
            raise self._exception
        sep = bytes(separator)
        pattern = re.compile(re.escape(sep))
        offset = 0
        while True:
            if self._size - offset >= seplen:
                isep = self._find(pattern, sep, offset)
                if isep != -1:
                    break
                offset = self._size + 1 - seplen
                if offset > self._limit:
                    raise asyncio.LimitOverrunError(
                        "Separator is not found, and chunk exceed the limit", offset
                    )
            if self._eof:
                chunk = self._take_bytes(self._size)
                raise asyncio.IncompleteReadError(chunk, None)
            await self._wait_for_data("readuntil")
        if isep > self._limit:
            raise asyncio.LimitOverrunError(
                "Separator is found, but chunk is longer than limit", isep
            )
        return isep + seplen

    async def _exactly(self, n: int) -> None:
        _check_size(n)
        if n < 0:
            raise ValueError("readexactly size can not be less than zero")
        if self._exception is not None:
            raise self._exception
        while self._size < n:
            if self._eof:
                incomplete = self._take_bytes(self._size)
                raise asyncio.IncompleteReadError(incomplete, n)
            await self._wait_for_data("readexactly")

    # -- asyncio's API (bytes) --------------------------------------------------------------

    async def readline(self) -> bytes:
        """Read through ``\\n`` (or to EOF); ``ValueError`` past the limit, as asyncio."""
        sep = b"\n"
        try:
            line = await self.readuntil(sep)
        except asyncio.IncompleteReadError as e:
            return e.partial
        except asyncio.LimitOverrunError as e:
            if self._size >= e.consumed + 1 and self._peek(e.consumed, 1) == sep:
                self._take_bytes(e.consumed + 1)
            else:
                self.discard()
            self._maybe_resume_transport()
            raise ValueError(e.args[0]) from None
        return line

    def _peek(self, at: int, n: int) -> bytes:
        out = b""
        pos = 0
        for piece in self._pieces:
            if pos + len(piece) > at:
                out += piece[max(0, at - pos) : at - pos + n].tobytes()
                if len(out) >= n:
                    break
            pos += len(piece)
        return out[:n]

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        """Read through ``separator``; raises as ``asyncio.StreamReader.readuntil`` does.

        :raises asyncio.IncompleteReadError: EOF before the separator (``partial`` holds all).
        :raises asyncio.LimitOverrunError: no separator within ``limit`` (the data stays).
        """
        return self._take_bytes(await self._until(separator))

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (``-1``: everything until EOF); b'' at EOF."""
        _check_size(n)
        if self._exception is not None:
            raise self._exception
        if n == 0:
            return b""
        if n < 0:
            blocks = []
            while True:
                block = await self.read(self._limit)
                if not block:
                    break
                blocks.append(block)
            return b"".join(blocks)
        if not self._size and not self._eof:
            await self._wait_for_data("read")
        return self._take_bytes(min(n, self._size))

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes.

        :raises asyncio.IncompleteReadError: EOF came first (``partial`` holds what came).
        """
        await self._exactly(n)
        return self._take_bytes(n) if n else b""

    # -- zero-copy variants -----------------------------------------------------------------

    async def read_lease(self, n: int = -1) -> PooledBytes | None:
        """The next received bytes (at most ``n``; -1: one whole piece), zero copy; None at EOF.

        Each result is one view of one pooled block: what the transport delivered into it since
        the last read (several small arrivals into one block come out as one piece).
        """
        _check_size(n)
        if self._exception is not None:
            raise self._exception
        if n == 0:
            return PooledBytes(())
        if not self._size and not self._eof:
            await self._wait_for_data("read")
        if not self._size:
            return None
        first = len(self._pieces[0])
        return PooledBytes(self._take(first if n < 0 else min(n, first)))

    async def readexactly_lease(self, n: int) -> PooledBytes:
        """Exactly ``n`` bytes as zero-copy views (one per pooled block they span).

        :raises asyncio.IncompleteReadError: EOF came first.
        """
        await self._exactly(n)
        return PooledBytes(self._take(n))

    async def readuntil_lease(self, separator: bytes = b"\n") -> PooledBytes:
        """:meth:`readuntil` without the copy: the bytes through ``separator`` as views."""
        return PooledBytes(self._take(await self._until(separator)))

    def __aiter__(self) -> PooledStreamReader:
        return self

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if line == b"":
            raise StopAsyncIteration
        return line


class _PooledStreamProtocol(asyncio.BufferedProtocol):
    """Reads into pooled leases and feeds their views to a reader; asyncio's flow control."""

    def __init__(
        self,
        reader: PooledStreamReader,
        pool: LeaseSource,
        loop: asyncio.AbstractEventLoop,
        client_connected_cb: ClientConnected | None = None,
    ) -> None:
        self._reader: PooledStreamReader | None = reader
        self._pool = pool
        self._loop = loop
        self._cb = client_connected_cb
        self._lease: Any = None  # only between get_buffer and buffer_updated, or a strict pool's
        # the block being filled: a view of a lease released at its first read (parked by the
        # lease layer until its last view dies, this one too); later reads land after _fill
        self._whole: memoryview | None = None
        self._fill = 0
        self._last: memoryview | None = None  # the piece fed last from _whole, at _last_start
        self._last_start = 0
        self._view: memoryview | None = None  # the free tail of _whole handed to the transport
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Future[None] | None = None
        self._paused = False
        self._drain_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._connection_lost = False
        self._closed: asyncio.Future[None] = loop.create_future()
        self._over_ssl = False
        self._buffer_error: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream protocol is only ever given a stream transport (asyncio types the argument
        # as the base class, shared with datagram and subprocess transports).
        stream = cast(asyncio.Transport, transport)
        self._transport = stream
        reader = self._reader
        assert reader is not None
        reader.set_transport(transport)
        self._over_ssl = transport.get_extra_info("sslcontext") is not None
        if self._cb is not None:
            writer = PooledStreamWriter(stream, self, reader, self._loop)
            result = self._cb(reader, writer)
            if asyncio.iscoroutine(result):
                self._task = self._loop.create_task(result)
                self._task.add_done_callback(self._handler_done)
            self._cb = None

    def _handler_done(self, task: asyncio.Future[None]) -> None:
        if self._connection_lost and self._reader is not None:
            self._reader.discard()  # the handler is gone: nobody will read what is left
        if task.cancelled():
            if self._transport is not None:
                self._transport.close()
            return
        exc = task.exception()
        if exc is not None:
            self._loop.call_exception_handler(
                {
                    "message": "Unhandled exception in client_connected_cb",
                    "exception": exc,
                    "transport": self._transport,
                }
            )
            if self._transport is not None:
                self._transport.close()

    def get_buffer(self, sizehint: int) -> memoryview:
        view = self._view
        if view is None:  # else kept from a read that found nothing (EAGAIN)
            whole = self._whole
            if whole is None:
                try:
                    lease = self._lease = self._pool.acquire(0)
                except Exception as exc:
                    self._buffer_error = exc  # uvloop reports it as a RuntimeError: keep the cause
                    raise
                whole = self._whole = lease.view
                self._fill = 0
            view = self._view = whole[self._fill :] if self._fill else whole
        return view

    def buffer_updated(self, nbytes: int) -> None:
        tail, self._view = self._view, None
        whole = self._whole
        assert tail is not None
        assert whole is not None
        if tail is not whole:
            _drop(tail)  # uvloop may still export it until this call returns: then it lets go
        start = self._fill
        end = self._fill = start + nbytes
        reader = self._reader
        lease, self._lease = self._lease, None
        if lease is not None:
            try:
                lease.release()  # parked until the last view of the block dies, ours too
            except BufferError:
                # a strict pool refuses to park a viewed block: keep a copy, and the lease
                # for the next read, from its start
                self._lease = lease
                self._fill = 0
                if reader is not None:
                    self._feed_copy(reader, whole[start:end].tobytes())
                return
        if reader is None:
            self._let_go()
            return
        kept = last = self._last
        if last is not None:  # this block has taken reads before: grow the last piece
            merged = whole[self._last_start : end]
            if reader._grow_last(last, merged):
                last = merged
            else:
                merged.release()
                last = None
        if last is None:
            last = whole[start:end]
            self._last_start = start
            reader.feed_view(last)
        if end >= len(whole) >> _FILL_SHIFT or (kept is None and reader._size == nbytes):
            # a quarter full (the bulk path: one block per read), or the reader had nothing
            # unread (the app keeps up: its read takes the piece, nothing accumulates)
            self._whole = None
            if kept is not None:
                self._last = None
                reader._on_empty = None
            _drop(whole)
        else:
            self._last = last
            reader._on_empty = self._reader_empty

    def _feed_copy(self, reader: PooledStreamReader, data: bytes) -> None:
        last = self._last
        if (
            last is not None
            and reader._pieces
            and reader._pieces[-1] is last  # else read (and maybe released) meanwhile
            and len(last) + len(data) <= _COPY_JOIN
        ):
            joined = memoryview(last.tobytes() + data)
            if reader._grow_last(last, joined):
                self._last = joined
                return
        self._last = memoryview(data)
        reader.feed_view(self._last)

    def _let_go(self) -> None:
        """Stop filling the current block: it goes back once the reader and its users drop it."""
        whole, self._whole = self._whole, None
        self._last = None
        if self._reader is not None:
            self._reader._on_empty = None
        if whole is not None:
            _drop(whole)

    def _reader_empty(self) -> None:
        # everything read: an idle connection holds no block (the next read takes a fresh one)
        if self._view is None and self._lease is None:
            self._let_go()

    def eof_received(self) -> bool:
        self._drop_lease()
        if self._reader is not None:
            self._reader.feed_eof()
        return not self._over_ssl  # keep the write side open after a half-close

    def connection_lost(self, exc: Exception | None) -> None:
        self._drop_lease()
        if exc is not None and self._buffer_error is not None:
            exc = self._buffer_error
        reader = self._reader
        if reader is not None and self._task is not None and self._task.done():
            reader.discard()  # the handler is gone: nobody will read what is left
        if reader is not None:
            if exc is None:
                reader.feed_eof()
            else:
                reader.set_exception(exc)
        if not self._closed.done():
            if exc is None:
                self._closed.set_result(None)
            else:
                self._closed.set_exception(exc)
                self._closed.exception()  # retrieved: nobody has to await it
        self._connection_lost = True
        for waiter in self._drain_waiters:
            if not waiter.done():
                if exc is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(exc)
        self._transport = None
        self._task = None

    def _drop_lease(self) -> None:
        view, self._view = self._view, None
        if view is not None:
            _drop(view)
        self._let_go()
        lease, self._lease = self._lease, None
        if lease is not None:
            try:
                lease.release()
            except BufferError:
                # a strict pool, and the transport still views the lease (EOF is reported
                # from inside its read): try again once the transport's call has returned
                self._loop.call_soon(_release_quietly, lease)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _drain_helper(self) -> None:
        if self._connection_lost:
            raise ConnectionResetError("Connection lost")
        if not self._paused:
            return
        waiter = self._loop.create_future()
        self._drain_waiters.append(waiter)
        try:
            await waiter
        finally:
            self._drain_waiters.remove(waiter)


def _release_quietly(lease: Any) -> None:
    with contextlib.suppress(BufferError):
        lease.release()  # still viewed: the lease layer returns it when its views die


def _is_plain(data: object) -> bool:
    # not a lease nor a PooledBytes: bytes-like objects go to the transport as they are, and so
    # does anything else, for the transport's own TypeError (a str is not bytes-like). Looked
    # up on the type: PooledBytes.view is a property that joins its parts.
    kind = type(data)
    return isinstance(data, bytes | bytearray | memoryview) or not (
        hasattr(kind, "view") and hasattr(kind, "release")
    )


class PooledStreamWriter:
    """asyncio's ``StreamWriter``; ``write`` also takes a :class:`PooledBytes` or a lease.

    A pooled argument is given back (released) by the writer once the transport is done with
    it: at once when it was sent whole, else when the transport drops its view of it.

    Example:
        >>> PooledStreamWriter.__name__
        'PooledStreamWriter'
    """

    def __init__(
        self,
        transport: asyncio.WriteTransport,
        protocol: _PooledStreamProtocol,
        reader: PooledStreamReader | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        self._reader = reader
        self._loop = loop
        self._busy: list[Any] = []  # leases of a strict pool, released once the buffer empties

    def __repr__(self) -> str:
        return f"<PooledStreamWriter transport={self._transport!r}>"

    def __del__(self, warn: Any = warnings.warn) -> None:
        # A writer dropped unclosed closes its transport, as asyncio's does from Python 3.13
        # on (on every version here): a handler that returns without close() must not leave
        # its connection open for good, nor the server's wait_closed() waiting on it.
        transport = getattr(self, "_transport", None)
        if transport is None or transport.is_closing():
            return
        if self._loop.is_closed():
            warn("loop is closed", ResourceWarning, stacklevel=1)
            return
        self.close()
        warn(f"unclosed {self!r}", ResourceWarning, stacklevel=1)

    @property
    def transport(self) -> asyncio.WriteTransport:
        """The underlying transport."""
        return self._transport

    def _give_back(self, owned: Any) -> None:
        try:
            owned.release()
        except BufferError:  # a strict pool will not park a block that is still viewed
            self._busy.append(owned)

    def _retry_busy(self) -> None:
        if self._busy and (
            self._transport.is_closing() or self._transport.get_write_buffer_size() == 0
        ):
            busy, self._busy = self._busy, []
            for owned in busy:
                with contextlib.suppress(BufferError):
                    owned.release()

    def write(self, data: Any) -> None:
        """Queue ``data``: bytes-like, a :class:`PooledBytes`, or a lease.

        A lease or :class:`PooledBytes` is the writer's from then on: released once its bytes
        are queued, and released too if the transport refuses them (``write()`` after
        ``write_eof()`` raises ``RuntimeError``); only what is not a buffer at all
        (``TypeError``) stays the caller's.
        """
        if _is_plain(data):
            self._transport.write(data)
            return
        view = None
        if isinstance(data, PooledBytes):
            views = data.views
        else:
            view = memoryview(data.view)
        try:
            if view is not None:
                self._transport.write(view)
            elif len(views) == 1:
                self._transport.write(views[0])
            else:
                self._transport.writelines(views)
        finally:
            # a refused write must not strand the block: the caller, holding a lease the
            # writer took, had no way to know it was still theirs to release
            if view is not None:
                _drop(view)
            self._give_back(data)
        self._retry_busy()

    def writelines(self, data: Iterable[Any]) -> None:
        """Queue several buffers (any mix of what :meth:`write` takes) in one call; leases
        and :class:`PooledBytes` among them are the writer's, as for :meth:`write`."""
        bufs: list[Any] = []
        owned: list[Any] = []
        made: list[memoryview] = []
        try:
            for item in data:
                if _is_plain(item):
                    if not isinstance(item, bytes | bytearray | memoryview):
                        memoryview(item).release()  # not bytes-like: TypeError, nothing taken
                    bufs.append(item)
                elif isinstance(item, PooledBytes):
                    bufs.extend(item.views)
                    owned.append(item)
                else:
                    view = memoryview(item.view)
                    bufs.append(view)
                    made.append(view)
                    owned.append(item)
        except BaseException:
            for view in made:  # nothing was taken: every item stays the caller's
                _drop(view)
            raise
        try:
            self._transport.writelines(bufs)
        finally:
            for view in made:
                _drop(view)
            for item in owned:
                self._give_back(item)
        self._retry_busy()

    def write_eof(self) -> None:
        """Half-close: send EOF after the queued data."""
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        """Whether :meth:`write_eof` is possible (not over TLS)."""
        return self._transport.can_write_eof()

    def close(self) -> None:
        """Close the transport (queued data is still sent)."""
        self._transport.close()

    def is_closing(self) -> bool:
        """True once closing or closed."""
        return self._transport.is_closing()

    async def wait_closed(self) -> None:
        """Wait until the connection is closed; raises the error it was lost with, if any."""
        await self._protocol._closed
        self._retry_busy()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The transport's ``get_extra_info``."""
        return self._transport.get_extra_info(name, default)

    async def drain(self) -> None:
        """Wait until the transport's buffer is below its high-water mark (asyncio's rules)."""
        if self._reader is not None:
            exc = self._reader.exception()
            if exc is not None:
                raise exc
        if self._transport.is_closing():
            await asyncio.sleep(0)  # let connection_lost run, so drain raises on a lost peer
        await self._protocol._drain_helper()
        self._retry_busy()


def _pool_for(pool: LeaseSource | None) -> LeaseSource:
    return default_pool() if pool is None else pool


async def open_connection(
    host: str | None = None,
    port: int | str | None = None,
    *,
    pool: LeaseSource | None = None,
    limit: int = DEFAULT_LIMIT,
    **kwds: Any,
) -> tuple[PooledStreamReader, PooledStreamWriter]:
    """``asyncio.open_connection`` with reads into ``pool`` (None: :func:`default_pool`).

    Other keywords go to ``loop.create_connection`` (``ssl``, ``family``, ``local_addr``...).

    Example:
        >>> open_connection.__name__
        'open_connection'
    """
    loop = asyncio.get_running_loop()
    reader = PooledStreamReader(limit=limit, loop=loop)
    protocol = _PooledStreamProtocol(reader, _pool_for(pool), loop)
    transport, _ = await loop.create_connection(
        lambda: protocol, cast(Any, host), cast(Any, port), **kwds
    )
    return reader, PooledStreamWriter(transport, protocol, reader, loop)


async def start_server(
    client_connected_cb: ClientConnected,
    host: str | None = None,
    port: int | str | None = None,
    *,
    pool: LeaseSource | None = None,
    limit: int = DEFAULT_LIMIT,
    **kwds: Any,
) -> asyncio.Server:
    """``asyncio.start_server``: ``client_connected_cb(reader, writer)`` per connection.

    The callback may be a coroutine function (run as a task; if it raises, the error is
    reported to the loop's exception handler and the connection closed). Other keywords go to
    ``loop.create_server``.

    Example:
        >>> start_server.__name__
        'start_server'
    """
    loop = asyncio.get_running_loop()
    source = _pool_for(pool)

    def factory() -> _PooledStreamProtocol:
        reader = PooledStreamReader(limit=limit, loop=loop)
        return _PooledStreamProtocol(reader, source, loop, client_connected_cb)

    return await loop.create_server(factory, host, cast(Any, port), **kwds)


async def open_unix_connection(
    path: str | None = None,
    *,
    pool: LeaseSource | None = None,
    limit: int = DEFAULT_LIMIT,
    **kwds: Any,
) -> tuple[PooledStreamReader, PooledStreamWriter]:
    """``asyncio.open_unix_connection`` on pooled reads.

    Example:
        >>> open_unix_connection.__name__
        'open_unix_connection'
    """
    loop = asyncio.get_running_loop()
    reader = PooledStreamReader(limit=limit, loop=loop)
    protocol = _PooledStreamProtocol(reader, _pool_for(pool), loop)
    transport, _ = await loop.create_unix_connection(lambda: protocol, path, **kwds)
    return reader, PooledStreamWriter(transport, protocol, reader, loop)


async def start_unix_server(
    client_connected_cb: ClientConnected,
    path: str | None = None,
    *,
    pool: LeaseSource | None = None,
    limit: int = DEFAULT_LIMIT,
    **kwds: Any,
) -> asyncio.Server:
    """``asyncio.start_unix_server`` on pooled reads.

    Example:
        >>> start_unix_server.__name__
        'start_unix_server'
    """
    loop = asyncio.get_running_loop()
    source = _pool_for(pool)

    def factory() -> _PooledStreamProtocol:
        reader = PooledStreamReader(limit=limit, loop=loop)
        return _PooledStreamProtocol(reader, source, loop, client_connected_cb)

    return await loop.create_unix_server(factory, path, **kwds)

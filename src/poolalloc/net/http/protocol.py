"""The per-connection HTTP/1.1 state machine: heads, bodies, pipelining, errors.

States: ``HEAD`` (looking for the blank line), ``BODY`` (``Content-Length`` bytes left) and
``CHUNKED``. Each pooled read is walked from ``pos`` to ``nbytes``; several pipelined requests
in one read are answered in order, synchronously, so responses cannot overtake each other.

A head split across reads is the only copy: its bytes are collected in a small bytearray
(bounded by ``max_head``; a slow sender is ended by ``header_timeout``). Body bytes go from the
lease to the request's sink (memory for handlers, a file for uploads) as memoryview slices.

Fast path: a read that is exactly one request head seen before, whose answer is a static
response (``app.static_reply``), is looked up whole in the server's reply cache
(:class:`~poolalloc.net.http._cache.ReplyCache`, ``app.replies``) and answered with one
write: no regex, no :class:`~poolalloc.net.http.parser.Request`, no handler call. The same head
bytes always parse the same way, so the answer cannot differ; other heads seen before skip the
parse through the same cache. A head split across reads (an io_uring receive that filled the
rest of its buffer's block) is looked up by its whole bytes the same way once it is complete.

The protocol talks to its connection only through
:class:`~poolalloc.net.transport.Transport` (write, pause, close, a deadline, hold back), and
the server answers through the protocol (:meth:`HttpProtocol.send`,
:meth:`HttpProtocol.send_file`), which counts requests and errors in one place (``_tally``).

Backpressure: when too much output is queued the connection pauses, and the rest of the read
(pipelined requests) waits: the protocol hands those few bytes to the connection's
``hold_back`` (a copy; the pooled block goes back at once), which delivers them first on resume.
A paused client never pins pool memory, however many of them there are.

Any :class:`HttpError` is answered with its status, ``Connection: close``, and a graceful
close, so the client reads the error before the connection goes.

Timeouts (:meth:`HttpProtocol.timed_out`, called by the server's sweep): a request not
received whole in time (its head within ``header_timeout``, its body within ``body_timeout``
plus a second per ``body_min_rate`` bytes received, or a body that stopped for the idle limit)
is answered ``408 Request Timeout`` the same way; an idle keep-alive connection is
closed with a FIN. A connection whose output the client is not reading is still aborted.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Protocol

from poolalloc.net.http._cache import ReplyCache
from poolalloc.net.http.parser import (
    BLANK_LINE,
    ChunkedReader,
    HttpError,
    Request,
    line_end,
    parse_head,
)

if TYPE_CHECKING:
    from poolalloc.net.sockets import LeaseLike
    from poolalloc.net.transport import HeldBytes, Transport

__all__ = ["BodySink", "HttpProtocol"]

#: The end of a head, as every real client sends it: one C-level substring search.
_HEAD_END = re.compile(rb"\r\n\r\n")
#: A head whose lines may end in a bare LF (RFC 9112 2.2 lets a recipient take one as a line
#: end, as nginx and h11 do) is found with the parser's BLANK_LINE, searched only where the
#: CRLF CRLF search cannot answer.
_HEAD, _BODY, _CHUNKED = range(3)
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CRLF2 = b"\r\n\r\n"
_EOL = (13, 10)
#: Reads up to this size may be looked up whole in ``app.replies`` (its ``max_key``).
_REPLY_KEY_MAX = 1024


def _eol_run(tail: bytearray) -> int:
    """How many CR and LF bytes end ``tail``."""
    return len(tail) - len(tail.rstrip(b"\r\n"))


class BodySink(Protocol):
    """Where a request body goes; ``close`` runs when the body is complete.

    Example:
        >>> class Collect:
        ...     def write(self, data): pass
        ...     def close(self): pass
        ...     def abort(self): pass
    """

    def write(self, data: memoryview) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class HttpApp(Protocol):
    """What the protocol needs from the server object (``HttpServer`` implements it)."""

    max_head: int
    max_target: int
    header_timeout: float
    #: A body must be whole within ``body_timeout`` seconds plus one second per
    #: ``body_min_rate`` bytes received (Apache mod_reqtimeout's ``body=20,MinRate=500``).
    body_timeout: float
    body_min_rate: float
    #: Request heads seen before: their parse, and the bytes that answer them when static.
    replies: ReplyCache

    def static_reply(self, req: Request) -> bytes | None: ...

    def body_limit(self, req: Request) -> int: ...

    def begin(self, proto: HttpProtocol, req: Request) -> BodySink | None:
        """Where the body goes (None: dropped); raises HttpError to refuse the request."""

    def finish(self, proto: HttpProtocol, req: Request) -> None: ...

    def error_reply(self, status: int, message: str, *, with_body: bool = True) -> bytes:
        """The bytes of an error response that closes the connection."""


class HttpProtocol:
    """HTTP/1.1 over a :class:`~poolalloc.net.transport.Transport` (either engine's
    connection).

    Example:
        >>> HttpProtocol(app=None).requests  # doctest: +SKIP
        0
    """

    def __init__(self, app: HttpApp) -> None:
        self.app = app
        self._transport: Transport | None = None
        self.requests = 0
        self.errors = 0
        self._reset_request()

    def _reset_request(self) -> None:
        self._state = _HEAD
        self._partial: bytearray | None = None
        self._req: Request | None = None
        self._sink: BodySink | None = None
        self._left = 0
        self._chunks: ChunkedReader | None = None
        #: The request answered was not read whole (its body may still come): its close
        #: lingers, as an error's does.
        self._body_unread = False

    # ---- ConnectionProtocol ----
    def connection_made(self, conn: Transport) -> None:
        """Start a fresh connection (the object is reused across pooled connections)."""
        self._transport = conn
        self.requests = 0
        self.errors = 0
        self._reset_request()

    def _tally(self, requests: int, errors: int = 0) -> None:
        """Count requests started and error answers (the one place both counters grow)."""
        self.requests += requests
        self.errors += errors

    def buffer_received(self, lease: LeaseLike | HeldBytes, nbytes: int, pos: int = 0) -> bool:
        """Walk the read from ``pos``; never keeps the lease (held input is copied out)."""
        view = lease.view
        conn = self._transport
        app = self.app
        assert conn is not None
        whole = None  # the read's bytes, when looked up whole: also the cache key of its head
        if pos == 0 and nbytes <= _REPLY_KEY_MAX and self._state == _HEAD and self._partial is None:
            # The fastest case: this whole read is a request head already answered with a
            # static response (same bytes, same answer); no parse, no Request, one write.
            # a receive's view (io_uring) is exactly the read: no slice to make and drop
            whole = (view if len(view) == nbytes else view[:nbytes]).tobytes()
            wire = app.replies.answers.get(whole)
            if wire is not None and not (conn.paused or conn.closing or conn.closed):
                self.requests += 1  # _tally(1), inlined: the fast path's whole cost counts
                conn.write(wire)
                return False
        try:
            while pos < nbytes and not (conn.paused or conn.closing or conn.closed):
                if self._state == _HEAD and self._partial is None:
                    # The common case, inlined: a whole head inside this read. Empty lines
                    # before it stay in the head (the parser skips them) unless nothing else
                    # precedes the blank line that matched.
                    m = _HEAD_END.search(view, pos, nbytes)
                    if m is not None and m.start() - pos <= app.max_head:
                        start, stop = m.span()
                        if start - pos < 2 and not view[pos:start].tobytes().strip(b"\n"):
                            pos = self._skip_empty_lines(stop, nbytes)
                            continue
                        if whole is not None and pos == 0 and stop == nbytes:
                            key = whole  # the read is this one head: no second copy
                        else:
                            key = view[pos:stop].tobytes()
                        try:
                            req = app.replies.parse(key, app.max_target, app.static_reply)
                        except HttpError:
                            # A head whose lines end in bare LF may end before this CRLF CRLF
                            # (then what follows is the next request): retry up to its end.
                            head = key[:-4]
                            blank = BLANK_LINE.search(head)
                            if blank is None:
                                raise
                            head = head[: line_end(head, blank.start())]
                            stop = pos + blank.end()
                            if not head.strip(b"\r\n"):
                                pos = self._skip_empty_lines(stop, nbytes)
                                continue
                            req = parse_head(head, app.max_target)
                        pos = stop
                        self._start(req)
                        continue
                if self._state == _HEAD:
                    pos = self._read_head(view, pos, nbytes)
                elif self._state == _BODY:
                    pos = self._read_body(view, pos, nbytes)
                else:
                    pos = self._read_chunked(view, pos, nbytes)
        except HttpError as exc:
            self.fail(exc.status, str(exc), self._failing_method(exc.method))
            return False
        if pos < nbytes:
            if conn.closing:
                # Input behind the request the close answered: the client is pipelining and
                # may send more, so the close lingers (nginx lingers on pipelined bytes too).
                conn.close()
            elif conn.paused and not conn.closed:
                # Too much output is queued: the rest of this read (pipelined requests) waits
                # until the client has read some, so queued responses stay bounded. The bytes
                # are copied (at most one read) so the pooled block goes back now.
                conn.hold_back(view[pos:nbytes].tobytes())
        return False

    def _skip_empty_lines(self, pos: int, nbytes: int) -> int:
        """RFC 9112 2.2: empty lines before a request are skipped, any number (as nginx does).
        A read that ends with them starts a partial head, so ``header_timeout`` bounds a peer
        that sends nothing else."""
        if pos == nbytes:
            self._partial = bytearray()
            self._header_deadline()
        return pos

    def _header_deadline(self) -> None:
        """A head has begun: it must be whole within ``header_timeout``."""
        assert self._transport is not None
        self._transport.set_deadline(self.app.header_timeout)

    def eof_received(self) -> bool:
        """Peer half-closed: finish what was queued, then close (a half-read request is lost)."""
        if self._sink is not None:
            self._sink.abort()
            self._sink = None
        return False

    def timed_out(self) -> bool:
        """The connection's deadline or idle limit passed (nothing is queued to send): an
        unfinished request (head or body) is answered ``408`` with ``Connection: close``,
        an idle keep-alive connection is just closed; both gracefully (RFC 9110 15.5.9,
        RFC 9112 9.5). Returns True: the connection is closing.

        Example:
            >>> proto.timed_out()  # doctest: +SKIP
            True
        """
        conn = self._transport
        assert conn is not None
        if self._state == _HEAD and self._partial is None:
            conn.close()  # between requests: a FIN, the client retries on a new connection
            return True
        self.fail(408, "request timeout", self._failing_method(None))
        return True

    def drain(self) -> None:
        """The server stops (``HttpServer.shutdown``): a connection between requests is
        closed once what is queued is out (a FIN after the last byte of a download); one in
        the middle of a request goes on, and its answer closes it."""
        conn = self._transport
        if conn is None or conn.closing or conn.closed:
            return
        if self._state == _HEAD and self._partial is None:
            conn.close(linger=False)

    def _failing_method(self, method: str | None) -> str | None:
        """The method of the request an error answers, when known (its answer to a ``HEAD``
        has no body): ``method``, the request being read, or a head that never ended."""
        method = method or (self._req.method if self._req else None)
        if method is None and self._partial is not None and self._partial[:5] == b"HEAD ":
            method = "HEAD"  # e.g. a 431 or 408 for a HEAD request whose head never ended
        return method

    def connection_lost(self, exc: BaseException | None) -> None:
        """Drop any half-received body; the connection releases its own buffers."""
        if self._sink is not None:
            self._sink.abort()
        self._reset_request()
        # The transport stays: callers up the stack may still look at its (closed) flags.

    # ---- parsing ----
    def _read_head(self, view: memoryview, pos: int, end: int) -> int:
        app = self.app
        if self._partial is None:
            if view[pos] in _EOL:
                # Empty lines before the request line (RFC 9112 2.2), skipped here: kept, they
                # hid a head behind them in the same read (one with bare LF line ends, which
                # the fast path does not look for), which then waited for a read that a client
                # waiting for its answer never sends, until header_timeout.
                rest = view[pos:end].tobytes()
                pos = end - len(rest.lstrip(b"\r\n"))
                if pos == end:
                    return self._skip_empty_lines(pos, end)
            m = BLANK_LINE.search(view, pos, end)
            if m is not None:
                start, stop = line_end(view, m.start()), m.end()
                if start - pos > app.max_head:
                    self._partial = bytearray(view[pos:start])
                    self._check_head_size()
                self._start(parse_head(view[pos:start].tobytes(), app.max_target))
                return stop
            self._partial = bytearray(view[pos:end])
            self._header_deadline()
            self._check_head_size()
            return end
        old = len(self._partial)
        self._partial += view[pos:end]
        if self._partial and self._partial[0] in _EOL:  # empty lines before the request line
            lead = len(self._partial) - len(self._partial.lstrip(b"\r\n"))
            del self._partial[:lead]
            old -= lead  # offsets below stay relative to this read
        m = BLANK_LINE.search(self._partial, max(0, old - 2))
        if m is None:
            self._check_head_size()
            return end
        stop = m.end()
        # A head that ends in CRLF CRLF is the reply cache's key, as a whole one in a read is:
        # a head split across reads (an io_uring receive that filled its buffer's block) is
        # then answered as the one that was not.
        key = bytes(self._partial[:stop]) if self._partial.endswith(_CRLF2, 0, stop) else None
        del self._partial[line_end(self._partial, m.start()) :]
        self._check_head_size()
        head = bytes(self._partial) if key is None else b""
        self._partial = None
        conn = self._transport
        assert conn is not None
        conn.set_deadline(None)
        if key is None:
            self._start(parse_head(head, max_target=app.max_target))
        elif (wire := app.replies.answers.get(key)) is not None:
            self._tally(1)  # its static answer, as buffer_received's fast path writes it
            conn.write(wire)
        else:
            self._start(app.replies.parse(key, app.max_target, app.static_reply))
        return pos + stop - old

    def _check_head_size(self) -> None:
        partial = self._partial
        assert partial is not None
        max_head = self.app.max_head
        # A head whose blank line has not come whole may end in its first bytes ("\r\n\r"):
        # they are no part of the head, which a read that holds the blank line measures
        # without them (the same head was refused or not as TCP happened to split it).
        if len(partial) > max_head and len(partial) - _eol_run(partial[-3:]) > max_head:
            first = partial.find(b"\r\n")
            if first < 0 or first > self.app.max_target:
                raise HttpError(414, "request target too long")
            raise HttpError(431, "request header fields too large")
        if len(partial) > 2 and partial.lstrip(b"\r\n")[:1].isspace():
            raise HttpError(400, "malformed request line")

    def _start(self, req: Request) -> None:
        self._tally(1)
        if not (req.chunked or req.content_length):
            self.app.finish(self, req)  # no body: answer at once (the common case)
            return
        limit = self.app.body_limit(req)
        if req.content_length is not None and req.content_length > limit:
            raise HttpError(413, "request body too large", req.method)  # before any 100
        self._req = req
        self._sink = self.app.begin(self, req)  # an HttpError here is answered by the caller
        conn = self._transport
        assert conn is not None
        if req.expect_continue:
            if self._sink is None:
                # Nobody wants this body (e.g. a 404): answer now instead of asking for it
                # (RFC 9110 10.1.1), then close, since the client may send it or not.
                self._req = None
                req.keep_alive = False
                self._body_unread = True
                self.app.finish(self, req)
                return
            conn.write(_CONTINUE)
        if req.chunked:
            self._state = _CHUNKED
            self._chunks = ChunkedReader(max_body=limit)
        else:
            self._state = _BODY
            self._left = req.content_length or 0
        # The idle limit alone let a body trickle in forever (a byte every few seconds): the
        # body gets a deadline, pushed back by what arrives at the minimum rate.
        conn.set_deadline(self.app.body_timeout)

    def _body_arrived(self, nbytes: int) -> None:
        """``nbytes`` of the body arrived: its deadline moves a second per ``body_min_rate``."""
        rate = self.app.body_min_rate
        if rate:
            conn = self._transport
            assert conn is not None
            conn.deadline += nbytes / rate

    def _read_body(self, view: memoryview, pos: int, end: int) -> int:
        take = min(self._left, end - pos)
        self._body_arrived(take)
        if self._sink is not None:
            self._sink.write(view[pos : pos + take])
        self._left -= take
        if self._left == 0:
            self._complete()
        return pos + take

    def _read_chunked(self, view: memoryview, pos: int, end: int) -> int:
        assert self._chunks is not None
        used, spans = self._chunks.feed(view, pos, end)
        self._body_arrived(used)
        if self._sink is not None:
            for start, stop in spans:
                self._sink.write(view[start:stop])
        if self._chunks.done:
            self._complete()
        return pos + used

    def _complete(self) -> None:
        req, sink = self._req, self._sink
        self._reset_request()
        conn = self._transport
        assert conn is not None
        conn.set_deadline(None)  # the body's (the answer's close may set a linger's)
        if sink is not None:
            sink.close()
        assert req is not None
        self.app.finish(self, req)

    # ---- answering (what the server calls) ----
    def send(self, data: bytes, *, status: int = 200, close: bool = False) -> None:
        """Write a response (``status`` is counted: 400 and above are errors); ``close``
        closes the connection gracefully once it is out.

        Example:
            >>> proto.send(b"HTTP/1.1 204 No Content\\r\\n\\r\\n")  # doctest: +SKIP
        """
        if status >= 400:
            self._tally(0, 1)
        conn = self._transport
        assert conn is not None
        conn.write(data)
        if close:
            conn.close(linger=self._body_unread)

    def send_file(
        self, head: bytes, fd: int, offset: int, count: int, *, close: bool = False
    ) -> None:
        """Write a response ``head``, then ``count`` bytes of file ``fd`` from ``offset``; the fd
        is closed once sent (or at once, if the connection closed meanwhile).

        Example:
            >>> proto.send_file(head, fd, 0, size)  # doctest: +SKIP
        """
        conn = self._transport
        assert conn is not None
        conn.write(head, more=True)
        if conn.closed:
            os.close(fd)
            return
        conn.write_file(fd, offset, count)
        if close:
            conn.close(linger=self._body_unread)

    def fail(self, status: int, message: str, method: str | None = None) -> None:
        """Answer ``status`` with ``Connection: close`` and close gracefully; the answer to a
        ``HEAD`` request (``method``, when known) has no body."""
        self._tally(0, 1)
        if self._sink is not None:
            self._sink.abort()
        self._reset_request()
        conn = self._transport
        if conn is None or conn.closing or conn.closed:
            return
        conn.write(self.app.error_reply(status, message, with_body=method != "HEAD"))
        conn.close()

"""One HTTP/1.1 connection serving an ASGI 3 application: an asyncio BufferedProtocol.

The transport reads into a pooled lease that the connection keeps while it lives (the lease is
reused read after read, so steady state acquires nothing). Heads are found with a compiled
pattern over the lease's view and parsed by :func:`poolalloc.net.http.parser.parse_head`;
bodies are cut from the view (Content-Length) or decoded in place by
:class:`~poolalloc.net.http.parser.ChunkedReader`, and each piece is copied once into the
``bytes`` that ASGI's ``http.request`` message must carry.

One request runs at a time per connection: bytes of a pipelined next request wait (copied,
bounded; reading pauses past the bound) until the current response is complete, so responses
leave in request order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import struct
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import quote, unquote

from poolalloc.errors import PoolExhausted
from poolalloc.net._tcp_info import acked_bytes
from poolalloc.net.http.parser import (
    BLANK_LINE,
    ChunkedReader,
    HttpError,
    Request,
    line_end,
    parse_head,
    valid_field,
)
from poolalloc.net.sockets import LeaseSource
from poolalloc.net.transport import StreamTransport

logger = logging.getLogger("poolalloc.asgi")

#: what an ``http.response.body`` may carry
_Body = bytes | bytearray | memoryview


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class ClientDisconnected(OSError):
    """A streamed body's ``send()`` (``more_body=True``) on a connection that is gone (ASGI
    HTTP spec 2.4): the client went away, or a timeout or a framing error of the response
    ended the connection. The response can no longer be delivered; an application that
    catches it should stop sending. A response's start and last body are dropped instead.
    The server logs it, raised out of the application after the connection ended, at
    ``DEBUG`` only.

    Example:
        >>> issubclass(ClientDisconnected, OSError)
        True
        >>> async def app(scope, receive, send):
        ...     try:
        ...         while True:  # a stream to a client that may leave
        ...             await send({"type": "http.response.body", "body": b".", "more_body": True})
        ...     except ClientDisconnected:
        ...         return  # gone: nothing more to do
    """


_HEAD_END = BLANK_LINE  # a head's end; its lines may end in a bare LF (RFC 9112 2.2)
_ASGI = {"version": "3.0", "spec_version": "2.3"}
#: Reason phrases: the standard library's table, with RFC 9110's names where they changed
#: (Python 3.11 still has RFC 7231's)
_REASON = {int(code): code.phrase for code in HTTPStatus} | {
    413: "Content Too Large",
    414: "URI Too Long",
    416: "Range Not Satisfiable",
    422: "Unprocessable Content",
}
_STATUS_LINES: dict[int, bytes] = {}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_EOL = b"\r\n"

_date_cache: list[Any] = [0, b""]
_LINGER_RESET = struct.pack("ii", 1, 0)
#: Seconds a connection answered 503 keeps reading (and dropping) what its client still sends.
_REFUSE_LINGER = 1.0
#: Seconds a connection closed while its client may still be sending (a body left unread,
#: pipelined bytes, a protocol error) reads and drops what comes, waiting for the client's FIN:
#: the HTTP server's ``linger``.
_LINGER = 2.0
#: Where a connection that found no free read buffer reads what it is sent, to drop it.
_SCRATCH = memoryview(bytearray(4096))


def _date_header() -> bytes:
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = b"date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
    value: bytes = _date_cache[1]
    return value


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        reason = _REASON.get(status, "")
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1")
    return line


def _simple_response(status: int, text: str, *, close: bool) -> bytes:
    body = text.encode()
    return b"".join(
        [
            _status_line(status),
            _date_header(),
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n" if close else b"",
            b"\r\n",
            body,
        ]
    )


#: A parsed head and the scope fields derived from it: (request, http_version, path, raw_path,
#: query_string, headers).
_Parsed = tuple[Request, str, str, bytes, bytes, list[tuple[bytes, bytes]]]
#: Parsed heads by their exact bytes: keep-alive clients send the same head again and again,
#: so most requests skip the parsing and the scope's string work. Only heads that parsed are
#: stored (the Request is only read after parsing); bounded, cleared when full.
_heads: dict[bytes, _Parsed] = {}
_HEADS_MAX = 512
_HEAD_CACHE_MAX = 2048


def _parsed(head: bytes) -> _Parsed:
    hit = _heads.get(head)
    if hit is None:
        req = parse_head(head)
        raw_path, _, query = req.target.partition("?")
        if raw_path[:1] not in ("/", "*"):  # absolute-form (RFC 9112 3.2.2): the path in it
            raw_path = req.path
        hit = (
            req,
            "1.0" if req.version[1] == 0 else "1.1",  # HTTP/1.2 is 1.1 to us (RFC 9110 2.5)
            unquote(raw_path) if "%" in raw_path else raw_path,
            raw_path.encode("latin-1"),
            query.encode("latin-1"),
            req.headers,
        )
        if len(head) <= _HEAD_CACHE_MAX:
            if len(_heads) >= _HEADS_MAX:
                _heads.clear()
            _heads[head] = hit
    return hit


class ServerState:
    """What the connections of one server share: the app, pools, limits and bookkeeping."""

    def __init__(
        self,
        app: App,
        pool: LeaseSource,
        *,
        root_path: str = "",
        max_head: int = 65536,
        max_body: int = 1 << 30,
        keep_alive_timeout: float = 5.0,
        idle_timeout: float = 60.0,
        body_timeout: float,
        body_min_rate: float,
        pipeline_limit: int = 65536,
    ) -> None:
        self.app = app
        self.pool = pool
        self.root_path = root_path
        self.root_raw_path = quote(root_path, safe="/:@!$&'()*+,;=").encode("ascii")
        self.max_head = max_head
        self.max_body = max_body
        self.keep_alive_timeout = keep_alive_timeout
        #: A request body that stops arriving for this long while the app waits for it ends
        #: the request (the HTTP server's name and default for the same bound).
        self.idle_timeout = idle_timeout
        #: A request body must be whole within ``body_timeout`` seconds plus one per
        #: ``body_min_rate`` bytes received (the HTTP server's rule: Apache mod_reqtimeout's
        #: ``body=20,MinRate=500``), or a body trickled in under ``idle_timeout`` ran for ever.
        self.body_timeout = body_timeout
        self.body_min_rate = body_min_rate
        self.pipeline_limit = pipeline_limit
        self.state: dict[str, Any] = {}  # the lifespan state, copied into each request scope
        self.connections: set[HttpAsgiProtocol] = set()
        #: The application's request tasks: one may run on after its response (a Starlette
        #: BackgroundTask), so a shutdown waits for these, not for the connections alone.
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = False  # graceful shutdown: finish what is in flight, take nothing new
        self.requests = 0
        #: Timeouts that ended a connection: idle, a head or a body not received in time.
        self.timeouts = 0
        self.overloaded = 0  # connections answered 503: no read buffer was free


class _Cycle:
    """One request/response exchange: the ASGI ``receive`` and ``send`` of one request."""

    __slots__ = (
        "_body",
        "_body_left",
        "_chunked_out",
        "_drop_body",
        "_head_only",
        "_waiters",
        "body_done",
        "client_done",
        "continue_sent",
        "deadline",
        "disconnected",
        "expect_100",
        "final_sent",
        "finished",
        "headers",
        "keep_alive",
        "length_left",
        "proto",
        "reader",
        "scope",
        "started",
        "status",
        "told_done",
    )

    def __init__(self, proto: HttpAsgiProtocol, scope: Scope, req: Request) -> None:
        self.proto = proto
        self.scope = scope
        self.keep_alive = req.keep_alive
        self.expect_100 = req.expect_continue
        self.continue_sent = False
        self._head_only = req.method == "HEAD"
        self._body: deque[bytes] = deque()
        self._waiters: list[asyncio.Future[None]] = []
        self.reader = ChunkedReader(max_body=proto.state.max_body) if req.chunked else None
        self.length_left = 0 if req.chunked else (req.content_length or 0)
        self.body_done = not req.chunked and not self.length_left
        #: when the body must be whole (loop time): it starts with the head, or with the
        #: 100 Continue when the client waits for one, and moves with what arrives
        self.deadline = math.inf
        if not self.body_done and not self.expect_100:
            self.deadline = proto.loop.time() + proto.state.body_timeout
        self.final_sent = False  # the http.request with more_body=False went to the app
        self.disconnected = False
        self.client_done = False  # the client half-closed: it sends no more, it still reads
        self.told_done = False  # receive() said http.disconnect for that half-close
        self.started = False
        self.finished = False
        self._chunked_out = False
        self._drop_body = self._head_only  # HEAD (and 204, 205, 304: _head): no body goes out
        self._body_left = -1  # bytes the response's own Content-Length still allows (-1: none)
        self.status = 0
        self.headers: list[Any] = []

    # -- fed by the connection --------------------------------------------------------------

    def feed(self, data: memoryview | bytes | bytearray, pos: int, end: int) -> int:
        """Take body bytes from ``data[pos:end]``; returns where the body ended (or ``end``)."""
        if self.reader is not None:
            used, spans = self.reader.feed(cast(Any, data), pos, end)  # slices a bytearray too
            for s, e in spans:
                self._body.append(bytes(data[s:e]))
            if self.reader.done:
                self.body_done = True
        else:
            used = min(self.length_left, end - pos)
            if used:
                self._body.append(bytes(data[pos : pos + used]))
                self.length_left -= used
            if not self.length_left:
                self.body_done = True
        pos += used
        rate = self.proto.state.body_min_rate
        if rate:
            self.deadline += used / rate
        self._wake()
        return pos

    def buffered(self) -> int:
        return sum(len(b) for b in self._body)

    def _wake(self) -> None:
        # every receive() waiting (an app may wait in two tasks: a body reader and a disconnect
        # listener) has a future of its own, so that cancelling one touches no other; each
        # woken one looks at the state again
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def lost(self) -> None:
        self.disconnected = True
        self._wake()

    def half_closed(self) -> None:
        """The client sent its FIN after this request's whole body: ``receive()`` says
        ``http.disconnect`` once the body is handed out (it will send nothing more), while the
        response is still written (it may still read)."""
        self.client_done = True
        self._wake()

    # -- the ASGI callables -----------------------------------------------------------------

    async def receive(self) -> Message:
        proto = self.proto
        if self.expect_100 and not self.continue_sent and not self.started:
            self.continue_sent = True
            if not self.body_done:
                proto.write(_CONTINUE)
                self.deadline = proto.loop.time() + proto.state.body_timeout
        # A call made while the body was still to come is answered with a body message once
        # woken, even if another task waiting beside it took the bytes (an empty one then, with
        # the current more_body, as uvicorn answers): a body reader must always see the end.
        wants_body = not self.final_sent
        woken = False
        while True:
            if self._body and (self.body_done or not self.disconnected):
                data = self._body.popleft() if len(self._body) == 1 else b"".join(self._body)
                self._body.clear()
                more = not self.body_done
                self.final_sent = not more
                proto.maybe_resume()
                return {"type": "http.request", "body": data, "more_body": more}
            if self.disconnected:
                return {"type": "http.disconnect"}
            if self.body_done and not self.final_sent:
                self.final_sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            # nothing to hand out: more body is coming, or (body all read) a disconnect or
            # the end of the response is what the app waits for
            if self.finished:
                return {"type": "http.disconnect"}
            if self.client_done:
                self.told_done = True
                return {"type": "http.disconnect"}
            if woken and wants_body:
                return {"type": "http.request", "body": b"", "more_body": not self.body_done}
            proto.maybe_resume()
            waiter = proto.loop.create_future()
            self._waiters.append(waiter)
            timer = None
            if not self.body_done:
                # more body is due: the client has idle_timeout to send some, and the whole
                # body its deadline
                left = self.deadline - proto.loop.time()
                timer = proto.loop.call_later(
                    max(0.0, min(proto.state.idle_timeout, left)), self._body_stalled
                )
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()
                if waiter in self._waiters:  # cancelled: not woken
                    self._waiters.remove(waiter)
            woken = True

    def _body_stalled(self) -> None:
        if not self.body_done and not self.disconnected and self._waiters:
            self.proto.body_timed_out(self)

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            status = message["status"]
            headers = list(message.get("headers", ()))
            status, headers = _checked_start(status, headers)  # a refusal is a clean 500
            self.started = True
            self.status = status
            self.headers = headers
            return
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message type {kind!r} for an http scope")
        if not self.started:
            raise RuntimeError("http.response.body before http.response.start")
        if self.finished:
            raise RuntimeError("http.response.body after the response was complete")
        body = message.get("body", b"")
        if isinstance(body, memoryview):  # its length in bytes, not in items ("i" items: 4)
            body = _byte_view(body)
        elif not isinstance(body, bytes | bytearray):
            body = None
        if body is None:
            if not self.status:  # the head is out: this response cannot be completed
                self._framing_failed()
            # before the head: nothing written, a clean 500 (it went out as a 200 with no body)
            raise TypeError(
                "http.response.body: body must be bytes or a contiguous buffer, not "
                f"{type(message.get('body')).__name__}"
            )
        more = bool(message.get("more_body", False))
        if self._gone():
            if more:
                await self._stream_gone()
            self.finished = True
            return  # the end of a response nobody reads: dropped, as uvicorn drops it
        proto = self.proto
        out: list[bytes] = []
        if self.status:  # the head is not written yet
            head = self._head(body, more)
            self._check_length(body)  # raises before anything is written: a clean 500
            if not more and self._body_left > 0:  # the whole body, short: also a clean 500
                raise RuntimeError(
                    f"the response body ended {self._body_left} bytes short of its content-length"
                )
            out.append(head)
            self.status = 0
        elif not self._drop_body:
            try:
                self._check_length(body)
            except RuntimeError:
                self._framing_failed()
                raise
        if self._drop_body:
            body = b""
        if self._chunked_out:
            if body:
                out.append(b"%x\r\n" % len(body))
                out.append(body)
                out.append(b"\r\n")
            if not more:
                out.append(b"0\r\n\r\n")
        elif body:
            out.append(body)
        proto.write(out[0] if len(out) == 1 else b"".join(out))
        if not more and self._body_left > 0:
            self._framing_failed()
            raise RuntimeError(
                f"the response body ended {self._body_left} bytes short of its content-length"
            )
        if more:
            await proto.drain()
        else:
            self.finished = True
            self._wake()
            proto.response_done(self)

    def _gone(self) -> bool:
        """The client left: disconnected, or a transport closing under a response that is not
        complete (a write that failed on a reset closes it at once, but connection_lost comes
        only on the loop's next turn, which a send that never waits never gives it)."""
        transport = self.proto.transport
        if self.disconnected or transport is None or transport.is_closing():
            self.lost()  # (already, or before connection_lost says it)
            return True
        return False

    async def _stream_gone(self) -> None:
        """A streamed body's send after the client left raises (ASGI 2.4): an app that streams
        until a send fails would otherwise stream into nothing forever, holding the loop.
        Only streamed parts do: a response's start and last body are dropped without a word
        (as uvicorn drops them), so that what an app runs after them (Starlette's background
        tasks) still runs. The yield first lets a framework's disconnect listener, woken by
        the same loss, cancel the stream cleanly (Starlette's under spec 2.3)."""
        await asyncio.sleep(0)
        raise ClientDisconnected("http.response.body not sent: the client is gone")

    def _head(self, body: _Body, more: bool) -> bytes:
        status = self.status
        parts = [_status_line(status), _date_header()]
        has_length = False
        said_keep_alive = False
        no_body = status in (204, 205, 304)
        for name, value in self.headers:
            lname = name.lower()
            if lname == b"content-length":
                if status in (204, 205):
                    continue  # 204: no Content-Length (RFC 9110 8.6); 205: 0, written below
                length = _content_length(value)
                if has_length:
                    if length != self._body_left:
                        raise RuntimeError("two different content-length headers in the response")
                    continue  # one field: "7" and "07" conflict for h11 and our own parser
                has_length = True
                self._body_left = length
            elif lname == b"connection":
                # a list of case-insensitive options (RFC 9110 7.6.1): a "close" among them
                # must close the connection after this response (RFC 9112 9.6)
                options = {o.strip(b" \t") for o in value.lower().split(b",")}
                if b"close" in options:
                    self.keep_alive = False
                    if len(options) == 1:
                        continue  # the server's own "connection: close" says it
                said_keep_alive = said_keep_alive or b"keep-alive" in options
            elif lname == b"transfer-encoding":
                continue  # the server frames the body itself
            parts += (name, b": ", value, b"\r\n")
        if no_body:
            self._drop_body = True  # RFC 9110 15.3.5, 15.4.5: whatever the app gives, no body
        if self._drop_body:
            self._body_left = -1  # a HEAD's or 304's length is the GET's, not what goes out
        if status == 205:  # RFC 9110 15.3.6: no content, and a length that says so
            parts.append(b"content-length: 0\r\n")
        if not has_length and not no_body:
            if not more:  # a HEAD's answer says the length the GET's body has
                parts.append(b"content-length: %d\r\n" % len(body))
            elif self.scope["http_version"] == "1.1":
                # a HEAD's answer says how the GET's body would be framed, and sends none
                self._chunked_out = not self._head_only
                parts.append(b"transfer-encoding: chunked\r\n")
            else:
                self.keep_alive = False  # HTTP/1.0 without a length: the close ends the body
        if not self.body_done:
            self.keep_alive = False  # the app did not read the whole body: do not guess
        if not self.keep_alive or self.proto.state.closing:
            self.keep_alive = False
            parts.append(b"connection: close\r\n")
        elif self.scope["http_version"] == "1.0" and not said_keep_alive:
            # HTTP/1.0 keep-alive is opt-in: the client keeps the connection only if told
            parts.append(b"connection: keep-alive\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def _check_length(self, body: _Body) -> None:
        """Refuse body bytes past the response's own ``Content-Length`` (a client would read
        them as the next response): nothing of them is written."""
        left = self._body_left
        if left < 0 or self._drop_body:
            return
        if len(body) > left:
            raise RuntimeError(
                f"the response body is longer than its content-length ({len(body)} bytes "
                f"where {left} were left)"
            )
        self._body_left = left - len(body)

    def _framing_failed(self) -> None:
        """The response cannot be framed as its head said: the connection cannot carry
        another one (RFC 9112 6.3), so it closes once what was written is out."""
        self.keep_alive = False
        self.proto.framing_failed(self)


def _checked_start(status: Any, headers: list[Any]) -> tuple[int, list[tuple[bytes, bytes]]]:
    """An ``http.response.start``'s status and headers as plain ``int`` and ``bytes`` (an
    ``HTTPStatus``, a ``bytearray`` are fine), or ``RuntimeError`` when they would not make a
    valid head: a status that is not a final one (200-599), or a header name or value that
    would break the head (a CR or LF in a value is a second header, or a second response: RFC
    9110 5.5)."""
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        # RFC 9110 15: codes are 100-599, and a 1xx is interim, never the answer (a client
        # would skip it and take the next response for this request's)
        raise RuntimeError(f"invalid final response status {status!r}")
    checked = []
    for given_name, given_value in headers:
        if not isinstance(given_name, bytes | bytearray) or not isinstance(
            given_value, bytes | bytearray
        ):
            raise RuntimeError(f"response header {given_name!r}: {given_value!r} is not bytes")
        name, value = bytes(given_name), bytes(given_value)
        if not valid_field(name, value):
            raise RuntimeError(f"invalid response header {name!r}: {value!r}")
        checked.append((name, value))
    return int(status), checked


def _content_length(value: bytes) -> int:
    text = value.strip(b" \t")
    if not text.isdigit() or len(text) > 18:
        raise RuntimeError(f"invalid content-length header value {value!r} in the response")
    return int(text)


class HttpAsgiProtocol(asyncio.BufferedProtocol):
    """HTTP/1.1 for an ASGI app on an asyncio transport, reading into a pooled lease."""

    def __init__(self, state: ServerState, loop: asyncio.AbstractEventLoop) -> None:
        self.state = state
        self.loop = loop
        #: Only the StreamTransport part of asyncio's transport is used.
        self.transport: StreamTransport | None = None
        self._lease: Any = None
        self._view: memoryview | None = None
        self._pending = bytearray()  # a partial head, or bytes of the next pipelined request
        self.cycle: _Cycle | None = None
        self._read_paused = False
        #: when reading was paused, and the request then running (its body's deadline waits
        #: the pause out)
        self._paused_at = 0.0
        self._paused_cycle: _Cycle | None = None
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._next_when_drained = False  # a pipelined request waits for the last response
        self._output_watch: list[asyncio.TimerHandle] | None = None  # see _watch_output
        self._idle_handle: asyncio.TimerHandle | None = None
        self._idle_since: float | None = None
        self._server: tuple[str, int] | None = None
        self._client: tuple[str, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: Any = None
        #: lingering (after a 503, or a close while the client may still send): what arrives is
        #: read and dropped until the client's FIN or the linger's end (_linger)
        self._refusing = False
        self._linger_handle: asyncio.TimerHandle | None = None
        self._timed_out = False  # a timeout ends this connection: counted (once)
        self._client_eof = False  # the client half-closed: answer what came whole, then close

    # -- transport events -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(StreamTransport, transport)  # a stream: it has write()
        self.state.connections.add(self)
        self._sock = transport.get_extra_info("socket")  # for a reset (_send_stalled)
        sockname = transport.get_extra_info("sockname")
        peername = transport.get_extra_info("peername")
        self._server = tuple(sockname[:2]) if isinstance(sockname, tuple) else None
        self._client = tuple(peername[:2]) if isinstance(peername, tuple) else None
        self._arm_idle()

    def get_buffer(self, sizehint: int) -> memoryview:
        view = self._view
        if view is None:  # one lease per connection, reused for every read
            if self._refusing:
                return _SCRATCH
            try:
                self._lease = self.state.pool.acquire(0)
            except PoolExhausted:
                # No read buffer is free (the pool's capacity is reached): this read goes to
                # scratch and is dropped, and the client is answered 503 in buffer_updated (a
                # transport refused a buffer resets the connection and logs a traceback, and
                # one closed from inside get_buffer is still being read into).
                return _SCRATCH
            view = self._view = self._lease.view
        return view

    def buffer_updated(self, nbytes: int) -> None:
        view = self._view
        if view is None:
            self._overloaded()
            return
        if self._refusing:
            return  # lingering: dropped
        self._data(view, nbytes)

    def _overloaded(self) -> None:
        """Answer ``503 Service Unavailable`` with ``Connection: close``, as a server at its
        limit answers, once; then send the FIN and read what the client still sends (dropped)
        for a second before closing: closed with unread bytes, the socket would reset and the
        client could lose the 503."""
        if self._refusing or self.transport is None or self.transport.is_closing():
            return
        self.state.overloaded += 1
        self.transport.write(_simple_response(503, "Service Unavailable", close=True))
        self._linger(_REFUSE_LINGER)

    def eof_received(self) -> bool:
        """The client's FIN. A request whose body is still to come can never be whole: a
        disconnect, and the connection closes. Otherwise the client only says it sends no
        more (``shutdown(SHUT_WR)``, ``nc -N``): the requests it sent whole are answered, in
        order, and the connection closes after the last (the transport stays open for
        writing); their ``receive()`` says ``http.disconnect`` once the body is read."""
        if self._refusing:
            return False  # the FIN a linger waits for: close
        cycle = self.cycle
        if cycle is not None and not cycle.body_done:
            cycle.lost()
            return False  # close the transport
        if cycle is None and not self._pending:
            return False  # idle between requests: nothing is owed
        self._client_eof = True  # reading is over: the transport reads no more after this
        if cycle is not None:
            cycle.half_closed()
        elif not self._next_when_drained:
            # no request runs: the pending bytes are a head the FIN cut short (a whole one
            # would have started), and _next ends the connection; a pipelined request that
            # waits for the last response to drain is started by that drain instead
            self.loop.call_soon(self._next)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        cycle = self.cycle
        if cycle is not None:
            cycle.lost()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()
        if self._idle_handle is not None:
            self._idle_handle.cancel()
        if self._linger_handle is not None:
            self._linger_handle.cancel()
            self._linger_handle = None
        if self._output_watch is not None:
            self._output_watch[0].cancel()
            self._output_watch = None
        self._next_when_drained = False
        self.transport = None
        self._sock = None
        view, self._view = self._view, None
        if view is not None:
            with contextlib.suppress(BufferError):  # the transport may still export it
                view.release()
        lease, self._lease = self._lease, None
        if lease is not None:
            try:
                lease.release()
            except BufferError:  # a strict pool while a view lives: it comes back with it
                self.loop.call_soon(_release_quietly, lease)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()
        if self._next_when_drained:
            self._next_when_drained = False
            if self._output_watch is not None:
                self._output_watch[0].cancel()
                self._output_watch = None
            self.loop.call_soon(self._next, True)

    def _write_resumed(self) -> bool:
        return not self._write_paused

    def write(self, data: bytes) -> None:
        """Send ``data`` unless the connection is gone (then it is dropped, as a write to a
        closed asyncio transport would be, or after the half-close of a linger)."""
        if self.transport is not None and not self._refusing:
            self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the transport's buffer is full; a client that takes nothing of it for
        ``idle_timeout`` is reset (see :meth:`_watch_output`), and the app's streamed sends
        raise :class:`ClientDisconnected` from then on, as for a client gone."""
        if self._write_paused and self.transport is not None:
            waiter = self.loop.create_future()
            self._drain_waiters.append(waiter)
            timer = self._watch_output(waiter.done)
            try:
                await waiter
            finally:
                timer[0].cancel()

    def _watch_output(self, done: Callable[[], bool]) -> list[asyncio.TimerHandle]:
        """Until ``done()`` (or the connection is gone), reset the connection if its client's
        TCP acknowledges none of our output for ``idle_timeout`` (as the HTTP server resets a
        peer that never reads): while a ``send`` waits for room, while a response written
        whole waits in the buffer for the connection's close, while a pipelined request waits
        for the last response to drain. A client reading on is waited for: its TCP acknowledges
        more each time it frees about a segment of its buffer. Returns the one pending timer
        (replaced in place as the watch goes on) for the caller to cancel."""
        # The first sample comes half a timeout in, not at once: bytes in flight when the
        # wait began are acknowledged by a client that reads nothing, too.
        timer: list[asyncio.TimerHandle] = []
        half = self.state.idle_timeout / 2
        timer.append(self.loop.call_later(half, self._stall_sample, done, timer))
        return timer

    def _stall_sample(self, done: Callable[[], bool], timer: list[asyncio.TimerHandle]) -> None:
        if done() or self.transport is None:
            return
        acked = acked_bytes(self._sock)
        half = self.state.idle_timeout / 2
        timer[0] = self.loop.call_later(half, self._stalled, done, acked, timer)

    def _stalled(
        self, done: Callable[[], bool], acked: int | None, timer: list[asyncio.TimerHandle]
    ) -> None:
        if done() or self.transport is None:
            return  # the client took some meanwhile, or is gone
        now = acked_bytes(self._sock)
        if acked is not None and now != acked:
            # it reads on, slower than the buffers drain: look again a whole timeout later
            timeout = self.state.idle_timeout
            timer[0] = self.loop.call_later(timeout, self._stalled, done, now, timer)
            return
        self._count_timeout()
        if self.cycle is not None:
            self.cycle.lost()
        # A reset (SO_LINGER 0), not a plain close: closed, the socket would live on in the
        # kernel with its unsent bytes for as long as the peer keeps its window shut.
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        self.transport.abort()  # connection_lost wakes every drain

    # -- reading requests -------------------------------------------------------------------

    def _data(self, view: memoryview, end: int) -> None:
        pos = 0
        cycle = self.cycle
        if cycle is not None and not cycle.body_done and not self._pending:
            try:
                pos = cycle.feed(view, 0, end)
            except HttpError as exc:
                self._fail(exc)
                return
            if cycle.buffered() > self.state.pipeline_limit:
                self._pause_reading()
        elif cycle is None and not self._pending:
            pos = self._start(view, 0, end)  # the common case: parse straight from the lease
        if pos < end:
            pending = self._pending
            pending += view[pos:end]
            if self.cycle is None:
                # No request runs: the pending bytes begin with the next head, which may have
                # come whole only now (its start came with the last request's bytes).
                self._next()
            if self.cycle is None and len(pending) > self.state.max_head:
                # Still no whole head: it is too large (a whole one, pipelined requests behind
                # it, is never refused for what follows it)
                self._fail(HttpError(431, "request head too large"))
            elif len(pending) > self.state.pipeline_limit:
                self._pause_reading()

    def _next(self, after_response: bool = False) -> None:
        """Start the request whose bytes begin ``_pending`` (called with no cycle running)."""
        if self.cycle is not None or self.transport is None or self._refusing:
            return
        buf = self._pending
        if not buf:
            if self._client_eof:
                self._close()  # every request the client sent whole is answered
                return
            self._arm_idle()
            return
        used = self._start(buf, 0, len(buf))
        del buf[:used]
        if self._client_eof and (self.cycle is None or not self.cycle.body_done):
            # a head or body cut by the FIN can never be whole: its app (if it started) sees a
            # disconnect, and nothing more is answered
            if self.cycle is not None:
                self.cycle.lost()
            self._close()
            return
        if (
            after_response
            and self.cycle is None
            and self.transport is not None
            and not self.transport.is_closing()
        ):
            # a partial head pipelined behind the response that just ended has the keep-alive
            # time from now, not from before that request; a head that merely trickles in
            # keeps the stamp it had (or one byte at a time would hold it open for good)
            self._arm_idle()

    def _start(self, buf: memoryview | bytearray, pos: int, end: int) -> int:
        """Parse a head at ``buf[pos:]`` and start its request; returns the bytes consumed."""
        if self.state.closing:
            self._close()
            return end
        while pos < end and buf[pos] in _EOL:
            # RFC 9112 2.2: empty lines before a request line are skipped, any number (as the
            # HTTP server and nginx skip them); they do not restart the keep-alive time
            pos += 1
        found = _HEAD_END.search(buf, pos, end)
        if found is None:
            return pos  # incomplete: the caller keeps the bytes
        at = line_end(buf, found.start())
        try:
            if at - pos > self.state.max_head:
                raise HttpError(431, "request head too large")
            parsed = _parsed(bytes(buf[pos:at]))
            req = parsed[0]
            if req.method == "CONNECT":
                raise HttpError(501, "CONNECT is not supported")
            if req.content_length is not None and req.content_length > self.state.max_body:
                raise HttpError(413, "request body too large")
        except HttpError as exc:
            self._fail(exc)
            return end
        cycle = self.cycle = _Cycle(self, self._scope(parsed), req)
        if self._client_eof:
            cycle.client_done = True
        pos = found.end()
        if not cycle.body_done:
            try:
                pos = cycle.feed(buf, pos, end)
            except HttpError as exc:
                self._fail(exc)
                return end
        self.state.requests += 1
        task = self._task = self.loop.create_task(self._run(cycle))
        self.state.tasks.add(task)
        task.add_done_callback(self.state.tasks.discard)
        return pos

    def _scope(self, parsed: _Parsed) -> Scope:
        req, http_version, path, raw_path, query, headers = parsed
        state = self.state
        if state.root_path:
            # ASGI: path is the whole path, root_path included (as uvicorn gives it); the
            # application routes on what follows root_path and builds its URLs from path
            path = state.root_path + path
            raw_path = state.root_raw_path + raw_path
        return {
            "type": "http",
            "asgi": _ASGI,
            "http_version": http_version,
            "server": self._server,
            "client": self._client,
            "scheme": "http",
            "method": req.method,
            "root_path": state.root_path,
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "headers": list(headers),  # the app's own list: it may change it
            "state": state.state.copy(),
        }

    async def _run(self, cycle: _Cycle) -> None:
        try:
            await self.state.app(cycle.scope, cycle.receive, cycle.send)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                self._close()
                raise
            if cycle.disconnected and _client_gone(exc):
                # the app stopped because its send raised ClientDisconnected (or its framework
                # turned that into its own exception): the client left, the app is fine
                logger.debug(
                    "ASGI application ended by the client's disconnect: %s %s (%r)",
                    cycle.scope["method"], cycle.scope["path"], exc,
                )  # fmt: skip
            else:
                logger.error(
                    "Exception in ASGI application\n%s",
                    "".join(traceback.format_exception(exc)),
                )
            self._app_failed(cycle)
        else:
            if not cycle.finished and cycle.told_done and not cycle.disconnected:
                # it heard the client's FIN as a disconnect and stopped: an answer cut short
                # (or none), nothing failed; the close tells the client the answer ended
                cycle.lost()
                self._close()
            elif not cycle.finished and not cycle.disconnected:  # the client is gone: no answer
                logger.error(
                    "ASGI application returned without completing a response: %s %s",
                    cycle.scope["method"],
                    cycle.scope["path"],
                )
                self._app_failed(cycle)

    def _app_failed(self, cycle: _Cycle) -> None:
        if cycle.finished or cycle.disconnected or self.transport is None:
            return  # answered already, or nobody to answer (a 408 or a reset went out)
        if cycle.status or not cycle.started:  # nothing written yet: a clean 500
            cycle.finished = True
            self.transport.write(_simple_response(500, "Internal Server Error", close=True))
        self._close()

    def response_done(self, cycle: _Cycle) -> None:
        """The response went out whole: next request, or close."""
        if cycle is not self.cycle:
            return
        self.cycle = None
        if not cycle.keep_alive or self.transport is None:
            self._close(linger=not cycle.body_done)
            return
        self.maybe_resume()
        if not self._pending:
            if self._client_eof:
                self._close()  # the last request the client sent before its FIN
                return
            self._arm_idle()
        elif self._write_paused:
            # The client has not taken this response yet: the next one waits for room, or a
            # client pipelining requests and reading nothing would have every answer buffered
            # here (one a few bytes of request, each as large as the app makes it).
            self._next_when_drained = True
            self._output_watch = self._watch_output(self._write_resumed)
        else:
            self.loop.call_soon(self._next, True)

    # -- helpers ----------------------------------------------------------------------------

    def maybe_resume(self) -> None:
        if self._read_paused and self.transport is not None and not self._client_eof:
            cycle = self.cycle
            if len(self._pending) <= self.state.pipeline_limit and (
                cycle is None or cycle.buffered() <= self.state.pipeline_limit
            ):
                self._read_paused = False
                self.transport.resume_reading()
                if cycle is not None and cycle is self._paused_cycle:
                    # Reading was paused for the app, which had not taken what came: the
                    # client could send nothing meanwhile, so that time is not the body's. A
                    # fast upload to a slow app got a 408 once the pause outlasted the slack
                    # its bytes had earned (with body_min_rate=0, once it outlasted
                    # body_timeout).
                    cycle.deadline += self.loop.time() - self._paused_at
                self._paused_cycle = None

    def _pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None:
            self._read_paused = True
            self._paused_at, self._paused_cycle = self.loop.time(), self.cycle
            self.transport.pause_reading()

    def _arm_idle(self) -> None:
        """The connection went idle: close it after the keep-alive timeout without traffic.

        One timer per connection, not one per request: going idle only stamps the time, and
        a timer that fires early (the connection was busy meanwhile) re-arms for what is left.
        A head that trickles in does not reset the stamp, so it must be whole in that time,
        or it is answered ``408 Request Timeout`` with ``Connection: close``; an idle
        connection is closed gracefully (a FIN: the asyncio transport's ``close``).
        """
        if self.state.closing:
            self._close()
            return
        self._idle_since = self.loop.time()
        if self._idle_handle is None:
            self._idle_handle = self.loop.call_later(
                self.state.keep_alive_timeout, self._idle_check
            )

    def _idle_check(self) -> None:
        self._idle_handle = None
        if self.transport is None or self.transport.is_closing() or self._refusing:
            return  # a close's buffered output has its own watch (_close), a linger its end
        if self.cycle is not None or self._idle_since is None or self._next_when_drained:
            # busy (a request runs, or the next waits for the last response to drain)
            self._idle_handle = self.loop.call_later(
                self.state.keep_alive_timeout, self._idle_check
            )
            return
        left = self._idle_since + self.state.keep_alive_timeout - self.loop.time()
        if left > 0:
            self._idle_handle = self.loop.call_later(left, self._idle_check)
        elif self._pending:  # a head begun and not finished in time (RFC 9110 15.5.9)
            self._count_timeout()
            self._fail(HttpError(408, "Request Timeout"))
        else:
            self._count_timeout()
            self._close()  # idle between requests: a FIN (RFC 9112 9.5)

    def body_timed_out(self, cycle: _Cycle) -> None:
        """The app waits for body that stopped arriving for ``idle_timeout``, or that is not
        whole by its deadline (RFC 9110 15.5.9): ``408 Request Timeout`` with ``Connection:
        close`` if nothing of the response was written yet, then the connection closes;
        ``receive()`` says ``http.disconnect``."""
        self._count_timeout()
        if self.transport is not None and (cycle.status or not cycle.started):
            self.transport.write(_simple_response(408, "Request Timeout", close=True))
        cycle.lost()  # what the app sends from now on raises ClientDisconnected
        self._close()

    def framing_failed(self, cycle: _Cycle) -> None:
        """The app's response does not match its own ``Content-Length``: nothing more of it is
        written, and the connection closes after what was (the client sees a short body and
        the close, never bytes it would take for the next response)."""
        cycle.lost()  # what the app sends from now on raises ClientDisconnected
        self._close()

    def _fail(self, exc: HttpError) -> None:
        if self.transport is not None and (self.cycle is None or not self.cycle.started):
            self.transport.write(_simple_response(exc.status, str(exc), close=True))
        self._close(linger=True)  # a protocol error: the client may be sending on

    def _count_timeout(self) -> None:
        """Count the timeout that ends this connection. Once: the watches that may still fire
        as it ends (a stalled send's, the close's on its buffered output) count a connection
        that a timeout already ended no second time."""
        if not self._timed_out:
            self._timed_out = True
            self.state.timeouts += 1

    def _close(self, *, linger: bool = False) -> None:
        """Close after what is buffered has gone out; a client that takes none of it for
        ``idle_timeout`` is reset then (a timeout, counted unless one ended it already).

        While the client may still be sending (``linger``: a body left unread, a protocol
        error; or bytes not taken yet, or a request whose body is still due), the close
        lingers (see :meth:`_linger`)."""
        transport = self.transport
        if transport is None or transport.is_closing() or self._linger_handle is not None:
            return  # closing, or lingering: the linger's end closes
        cycle = self.cycle
        if not self._client_eof and (
            linger or self._pending or (cycle is not None and not cycle.body_done)
        ):
            self._linger(_LINGER)
        else:
            self._close_now()

    def _linger(self, seconds: float) -> None:
        """Half-close (the FIN follows what is buffered) and read what the client still sends,
        dropping it, until its FIN or ``seconds``, then close: closed with input unread, or
        with input still to come, the socket is reset, and a reset drops what the kernel still
        holds of the answer (a 300 KB answer to an upload left unread arrived as 32 KB). The
        HTTP server's lingering close, and nginx's. A request still running sees a disconnect."""
        transport = self.transport
        assert transport is not None
        stream = cast(asyncio.WriteTransport, transport)  # asyncio's: it half-closes
        if not stream.can_write_eof():
            self._close_now()
            return
        self._refusing = True
        self._pending.clear()
        if self.cycle is not None:
            self.cycle.lost()  # what the app sends from now on is dropped, or raises
        if self._read_paused:  # what the client sends must be read, or it stalls
            self._read_paused = False
            transport.resume_reading()
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        stream.write_eof()
        self._linger_handle = self.loop.call_later(seconds, self._linger_ended)
        self._watch_close()

    @property
    def lingering(self) -> bool:
        """In a linger: answered, half-closed, reading what the client still sends."""
        return self._refusing

    def _linger_ended(self) -> None:
        self._linger_handle = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()  # the watch the linger began goes on

    def _close_now(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()  # connection_lost once the buffer is out: that ends the watch
            self._watch_close()

    def _watch_close(self) -> None:
        if self._output_watch is not None:  # a pipelined request's wait: this one instead
            self._output_watch[0].cancel()
        self._output_watch = self._watch_output(_never)

    def shutdown(self) -> None:
        """Graceful shutdown: an idle connection closes now, a busy one after its response."""
        if self.cycle is None:
            self._close()


#: Frameworks' own disconnect exceptions, raised while handling ours: Starlette's, Django's.
_FRAMEWORK_GONE = frozenset({"ClientDisconnect", "RequestAborted"})


def _client_gone(exc: BaseException) -> bool:
    """``exc`` is :class:`ClientDisconnected`, a framework's own disconnect exception raised
    while handling it, or a group of such (any other exception raised meanwhile is a bug of
    the app's, logged as one)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_client_gone(e) for e in exc.exceptions)
    return isinstance(exc, ClientDisconnected) or (
        type(exc).__name__ in _FRAMEWORK_GONE and isinstance(exc.__context__, ClientDisconnected)
    )


def _byte_view(body: memoryview) -> memoryview | None:
    """``body`` as bytes (a view of them), or None when it is not contiguous."""
    if not body.c_contiguous:
        return None
    return body if body.format == "B" and body.ndim == 1 else body.cast("B")


def _never() -> bool:
    return False


def _release_quietly(lease: Any) -> None:
    with contextlib.suppress(BufferError):
        lease.release()  # still viewed: the lease layer gives the block back when the view dies

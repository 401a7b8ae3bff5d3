"""What an application's response may put on the wire, and requests the ASGI server must take.

The server frames what the app sends: a response that says it has no body sends none, one that
says its own length sends no more and no less on a connection that stays open, and a header
that would break the head is refused. These run on poolalloc and on uvicorn: the exact answer
may differ (poolalloc refuses before writing anything where it can), the wire may never carry
bytes a client would read as the next response.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from typing import Any

import pytest

import poolalloc
from poolalloc.net.asgi import AsgiServer

pytestmark = [pytest.mark.net, pytest.mark.timeout(60)]

NEXT = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"


async def app(scope: Any, receive: Any, send: Any) -> None:
    """One route per case; ``/next`` answers ``next-ok``."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    body, headers, status = b"next-ok", [(b"content-length", b"7")], 200
    if path in ("/204", "/304"):
        status, headers, body = int(path[1:]), [], b"SHOULD-NOT-BE-SENT"
    elif path == "/long":
        headers, body = [(b"content-length", b"3")], b"abcDEFGHIJ"
    elif path == "/short":
        headers, body = [(b"content-length", b"10")], b"abc"
    elif path == "/inject":
        headers, body = [(b"x-a", b"1\r\nSet-Cookie: evil=1")], b"x"
    elif path == "/length-twice":  # one length, written twice
        headers = [(b"content-length", b"7"), (b"Content-Length", b"07")]
    elif path == "/version":
        body = scope["http_version"].encode()
        headers = [(b"content-length", b"%d" % len(body))]
    elif path.startswith("/close/"):  # "connection: close" as one element of a list
        headers.append((b"connection", path[7:].replace("_", " ").encode()))
    elif path.startswith("/ctl/"):  # a value with the byte 0xNN inside it
        headers, body = [(b"x-a", b"1%c2" % int(path[5:], 16)), (b"content-length", b"1")], b"x"
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(params=["poolalloc", "uvicorn"])
def server(request: pytest.FixtureRequest, make_server: Any) -> Any:
    return make_server(request.param, app)


def exchange(server: Any, data: bytes, timeout: float = 3.0) -> tuple[bytes, bool]:
    """Send ``data``; everything that comes back within ``timeout``, and whether the server
    closed the connection by then."""
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(data)
        sock.settimeout(0.2)
        got, closed, deadline = b"", False, time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            got += chunk
    return got, closed


@pytest.mark.parametrize("status", [204, 304])
def test_a_response_without_content_sends_no_body(server: Any, status: int) -> None:
    """RFC 9110 15.3.5, 15.4.5: whatever body the app gives a 204 or 304, none goes out.
    poolalloc drops it and answers the pipelined next request right after the head (uvicorn
    closes the connection instead)."""
    got, _ = exchange(server, b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % status + NEXT, 1.5)
    assert b"SHOULD-NOT-BE-SENT" not in got
    if server.kind == "poolalloc":
        first, _, rest = got.partition(b"\r\n\r\n")
        assert first.startswith(b"HTTP/1.1 %d " % status)
        assert b"content-length" not in first.lower() or status == 304
        assert rest.startswith(b"HTTP/1.1 200 ")
        assert rest.endswith(b"next-ok")


def test_a_body_longer_than_its_content_length_never_reaches_the_wire(server: Any) -> None:
    """The bytes past the app's own Content-Length would be read as the next response: they
    are not sent, and the connection closes (the pipelined request is not answered)."""
    got, closed = exchange(server, b"GET /long HTTP/1.1\r\nHost: x\r\n\r\n" + NEXT)
    assert b"DEFGHIJ" not in got
    assert b"next-ok" not in got
    assert closed


def test_a_body_shorter_than_its_content_length_closes_the_connection(server: Any) -> None:
    """The client would take the next response as the rest of the body: the connection closes
    (poolalloc, seeing the whole body short before writing anything, answers 500)."""
    got, closed = exchange(server, b"GET /short HTTP/1.1\r\nHost: x\r\n\r\n" + NEXT)
    assert b"next-ok" not in got
    assert closed
    if server.kind == "poolalloc":
        assert got.startswith(b"HTTP/1.1 500 ")


def test_a_header_value_that_would_break_the_head_is_refused(server: Any) -> None:
    """RFC 9110 5.5: a CR or LF in a value would add a header of the app's choosing (or a whole
    response); no such header goes out (poolalloc answers 500, uvicorn closes)."""
    got, closed = exchange(server, b"GET /inject HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"Set-Cookie" not in got
    assert closed
    if server.kind == "poolalloc":
        assert got.startswith(b"HTTP/1.1 500 ")


@pytest.mark.parametrize("value", ["close,_x-a", "x-a,close", "Close", "x-a,_CLOSE_,_x-b"])
def test_a_connection_close_in_a_list_closes(server: Any, value: str) -> None:
    """RFC 9112 9.6: a server that sends the ``close`` option closes after the response. A
    ``connection`` header is a list (RFC 9110 7.6.1), of case-insensitive options: ``close``
    among others went out while the connection stayed open, and the pipelined request was
    answered to a client that had been told none would be."""
    got, closed = exchange(
        server, b"GET /close/%s HTTP/1.1\r\nHost: x\r\n\r\n" % value.encode() + NEXT
    )
    assert got.startswith(b"HTTP/1.1 200 ")
    assert got.count(b"next-ok") == 1  # the first response's body, not the next request's
    assert closed


def test_a_content_length_given_twice_goes_out_once(make_server: Any) -> None:
    """RFC 9110 8.6: a length repeated with one value may be read as that value, but a
    recipient that compares the fields (h11, this server's own parser) refuses ``7`` and ``07``
    as conflicting: the response goes out with the first one only, and the connection
    serves the next request."""
    server = make_server("poolalloc", app)
    got, closed = exchange(server, b"GET /length-twice HTTP/1.1\r\nHost: x\r\n\r\n" + NEXT, 1.5)
    first, _, rest = got.partition(b"\r\n\r\n")
    assert first.lower().count(b"content-length") == 1
    assert b"content-length: 7\r\n" in first + b"\r\n"
    assert rest.startswith(b"next-okHTTP/1.1 200 ")
    assert not closed


def test_a_later_http_1_minor_version_is_served_as_1_1(make_server: Any) -> None:
    """RFC 9110 2.5: a request of a higher minor version (HTTP/1.2) is handled as the highest
    this server speaks, 1.1: it was handed to the app as "1.0", and answered as HTTP/1.0
    keep-alive (``connection: keep-alive``, a streamed body closing the connection)."""
    server = make_server("poolalloc", app)
    got, closed = exchange(server, b"GET /version HTTP/1.2\r\nHost: x\r\n\r\n" + NEXT, 1.5)
    first, _, rest = got.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 ")
    assert b"connection" not in first.lower()
    assert rest.startswith(b"1.1HTTP/1.1 200 ")
    assert rest.endswith(b"next-ok")
    assert not closed


@pytest.mark.parametrize("byte", [0x01, 0x08, 0x0B, 0x0C, 0x1F, 0x7F])
def test_a_header_value_with_a_control_byte_is_refused(make_server: Any, byte: int) -> None:
    """RFC 9110 5.5: a field value is visible bytes, spaces and tabs; a control byte is none,
    and the server's own parser refuses a request that carries one. h11 refuses to read a
    response with a VT or FF in a header (uvicorn's h11 server refuses to send those, not the
    others). None goes out: a 500, as for a CR or LF."""
    server = make_server("poolalloc", app)
    got, closed = exchange(
        server, b"GET /ctl/%x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % byte
    )
    assert got.startswith(b"HTTP/1.1 500 ")
    assert b"x-a" not in got.lower()
    assert closed


def test_a_header_value_with_a_tab_goes_out(server: Any) -> None:
    got, _ = exchange(server, b"GET /ctl/9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 200 ")
    assert b"x-a: 1\t2\r\n" in got


def test_several_receivers_all_get_their_messages(make_server: Any) -> None:
    """An app that waits in ``receive()`` from two tasks, a disconnect listener that started
    first and drops body messages (as Starlette's streaming responses do under ASGI 2.3) and a
    body reader: the reader still sees the body's end (an empty message with
    ``more_body=False`` if the listener took the last bytes), so the response is sent, and the
    listener hears the end once it is complete. Which task gets which bytes is the app's race
    (uvicorn answers the same way)."""
    ended: list[str] = []

    async def two_receivers(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return

        async def body() -> bytes:
            data = b""
            while True:
                message = await receive()
                data += message.get("body", b"")
                if message["type"] != "http.request" or not message["more_body"]:
                    return data

        async def listener() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            ended.append("listener")

        listening = asyncio.ensure_future(listener())
        await asyncio.sleep(0)  # the listener waits first
        data = await body()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"%d" % len(data))]})  # fmt: skip
        await send({"type": "http.response.body", "body": data})
        await asyncio.wait_for(listening, 5)

    for kind in ("poolalloc", "uvicorn"):
        server = make_server(kind, two_receivers)
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabc")
            time.sleep(0.3)
            sock.sendall(b"def")
            got = b""
            while b"\r\n\r\n" not in got or not _whole(got):
                chunk = sock.recv(65536)
                assert chunk, f"{kind}: closed before the answer: {got!r}"
                got += chunk
        assert got.startswith(b"HTTP/1.1 200 ")
        deadline = time.monotonic() + 5
        while len(ended) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ended == ["listener"], kind
        ended.clear()


def _whole(response: bytes) -> bool:
    head, _, body = response.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return len(body) >= length


@pytest.mark.parametrize("kind", ["poolalloc", "uvicorn"])
def test_a_streamed_echo_of_a_paced_upload_is_answered(make_server: Any, kind: str) -> None:
    """Starlette's ``StreamingResponse(request.stream())`` under ASGI 2.3 runs a disconnect
    listener that waits in ``receive()`` beside the body reader (and drops what it gets): the
    response still completes, as on uvicorn; it hung on the server before. (Which bytes the
    listener takes is Starlette's race: neither server echoes them all.)"""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def echo(request: Request) -> StreamingResponse:
        return StreamingResponse(request.stream())

    server = make_server(kind, Starlette(routes=[Route("/", echo, methods=["POST"])]))
    payload = bytes(range(256)) * 1024  # 256 KiB, sent in 8 pieces
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n" % len(payload))  # fmt: skip
        for i in range(0, len(payload), 32768):
            sock.sendall(payload[i : i + 32768])
            time.sleep(0.02)
        got = b""
        while chunk := sock.recv(1 << 20):
            got += chunk
    assert got.startswith(b"HTTP/1.1 200 ")
    assert got.endswith(b"\r\n0\r\n\r\n")  # the chunked body ended: the response is whole


def test_a_cancelled_receive_leaves_the_others_waiting(make_server: Any) -> None:
    """``receive()`` cancelled while waiting (``wait_for``, or Starlette's
    ``is_disconnected()``) touches no other waiter and no later call: a task waiting beside it
    stays waiting, and the body that arrives afterwards reaches the next call."""
    seen: list[Any] = []

    async def polls(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        beside = asyncio.ensure_future(receive())
        await asyncio.sleep(0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receive(), 0.05)
        await asyncio.sleep(0)
        seen.append(beside.done())  # not cancelled with the other
        beside.cancel()
        message = await receive()
        seen.append(message.get("body"))
        body = message.get("body", b"")
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"%d" % len(body))]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    server = make_server("poolalloc", polls)
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
        time.sleep(0.3)
        sock.sendall(b"hello")
        got = b""
        while not got.endswith(b"hello"):
            chunk = sock.recv(65536)
            assert chunk, got
            got += chunk
    assert got.startswith(b"HTTP/1.1 200 ")
    assert seen == [False, b"hello"]


def test_a_status_given_as_an_httpstatus_is_taken(make_server: Any) -> None:
    """Starlette passes ``status_code`` through: ``HTTPStatus.CREATED`` is 201."""
    from http import HTTPStatus

    async def created(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": HTTPStatus.CREATED,
                        "headers": [(bytearray(b"x-a"), bytearray(b"1"))]})  # fmt: skip
            await send({"type": "http.response.body", "body": b""})

    server = make_server("poolalloc", created)
    got, _ = exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 201 Created\r\n")
    assert b"\r\nx-a: 1\r\n" in got


def test_a_whole_body_short_of_its_content_length_is_a_clean_500(make_server: Any) -> None:
    """A first and last ``send`` whose body is shorter than the head's own length is refused
    before anything is written: the client gets a 500, not a truncated 200."""

    async def short(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"10")]})  # fmt: skip
            await send({"type": "http.response.body", "body": b"abc"})

    server = make_server("poolalloc", short)
    got, closed = exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + NEXT)
    assert got.startswith(b"HTTP/1.1 500 ")
    assert b"abc" not in got
    assert closed


@pytest.mark.parametrize("first", [True, False], ids=["first-body", "later-body"])
def test_a_body_that_is_not_bytes_is_refused(make_server: Any, first: bool) -> None:
    """A ``str`` body failed in the join after the head was marked written: the client got
    nothing at all and a closed connection. Refused before anything is written it is a 500;
    after the head it ends the response's connection, as a framing error does."""

    async def text(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            length = b"4" if first else b"8"  # the body's length: only its type is wrong
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", length)]})  # fmt: skip
            if not first:
                await send({"type": "http.response.body", "body": b"abcd", "more_body": True})
            await send({"type": "http.response.body", "body": "zzzz"})

    server = make_server("poolalloc", text)
    got, closed = exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + NEXT)
    if first:
        assert got.startswith(b"HTTP/1.1 500 ")
    else:
        assert got.startswith(b"HTTP/1.1 200 ")
        assert got.endswith(b"\r\n\r\nabcd")
    assert b"zzzz" not in got
    assert closed


def test_a_head_that_trickles_in_still_times_out() -> None:
    """A head sent a byte at a time gets no more than the keep-alive timeout to be whole (each
    byte re-armed it before): then 408 and a close."""

    def client(address: tuple[str, int]) -> tuple[bytes, float]:
        got = b""
        with socket.create_connection(address, timeout=10) as sock:
            started = time.monotonic()
            try:
                for byte in b"GET /next HTTP/1.1\r\nHost: x\r\n" * 4:
                    sock.sendall(bytes([byte]))
                    time.sleep(0.1)
            except OSError:
                pass  # closed by the server: what it said is read below
            try:
                while chunk := sock.recv(65536):
                    got += chunk
            except ConnectionResetError:
                pass
            return got, time.monotonic() - started

    async def main() -> tuple[bytes, float]:
        server = AsgiServer(app, "127.0.0.1", 0, keep_alive_timeout=0.5, lifespan="off")
        await server.start()
        reply = await asyncio.to_thread(client, server.address)
        await server.shutdown(1)
        return reply

    reply, waited = asyncio.run(main())
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert waited < 5


def test_a_head_whose_lines_end_in_a_bare_lf_is_answered(make_server: Any) -> None:
    """RFC 9112 2.2: a recipient may take a bare LF as a line end; the HTTP server does, and so
    does the ASGI server (it waited for a CRLF CRLF that never came, then answered 408)."""
    server = make_server("poolalloc", app)
    started = time.monotonic()
    got, _ = exchange(server, b"GET /next HTTP/1.1\nHost: x\n\n", 1.0)
    assert got.startswith(b"HTTP/1.1 200 ")
    assert got.endswith(b"next-ok")
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("lines", [b"\r\n\r\n", b"\n\n\n", b"\r\n" * 5])
def test_empty_lines_before_a_request_are_skipped(make_server: Any, lines: bytes) -> None:
    """RFC 9112 2.2: empty lines before a request line are skipped, any number, as the HTTP
    server skips them (and nginx); two or more were taken for an empty head: 400 and the
    close, also for a request behind a body followed by the CRLFs old clients add."""
    server = make_server("poolalloc", app)
    got, _ = exchange(server, lines + NEXT, 1.0)
    assert got.startswith(b"HTTP/1.1 200 ")
    assert got.endswith(b"next-ok")
    posted = b"POST /next HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab"
    got, closed = exchange(server, posted + lines + NEXT, 1.0)
    assert got.count(b"HTTP/1.1 200 ") == 2
    assert got.endswith(b"next-ok")
    assert not closed


def test_an_absolute_form_target_gives_the_app_its_path(make_server: Any) -> None:
    """RFC 9112 3.2.2: a server must accept an absolute-form target of its own schemes; the
    scope carries the path and query in it, as for the origin form."""
    seen: list[tuple[str, bytes, bytes]] = []

    async def paths(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append((scope["path"], scope["raw_path"], scope["query_string"]))
            await app(dict(scope, path="/next"), receive, send)

    server = make_server("poolalloc", paths)
    got, _ = exchange(server, b"GET http://x/abs%20p?q=1 HTTP/1.1\r\nHost: x\r\n\r\n", 1.0)
    assert got.endswith(b"next-ok")
    assert seen == [("/abs p", b"/abs%20p", b"q=1")]
    # another scheme than http(s) names no resource of this server: 400, the app not called
    got, closed = exchange(server, b"GET ftp://x/abs HTTP/1.1\r\nHost: x\r\n\r\n", 1.0)
    assert got.startswith(b"HTTP/1.1 400 ")
    assert closed
    assert seen == [("/abs p", b"/abs%20p", b"q=1")]


def test_a_connection_with_no_free_read_buffer_gets_a_503() -> None:
    """With every read buffer out (one here, held by an idle keep-alive connection), a new
    connection is answered 503 with ``Connection: close`` and counted, not reset."""

    async def main() -> tuple[bytes, bytes, dict[str, float]]:
        pool = poolalloc.BufferPool(4096, capacity=1)
        server = AsgiServer(app, "127.0.0.1", 0, pool=pool, lifespan="off")
        await server.start()
        first_r, first_w = await asyncio.open_connection(*server.address)
        first_w.write(NEXT)
        first = await first_r.readuntil(b"next-ok")
        second_r, second_w = await asyncio.open_connection(*server.address)
        # a body the server will not read: the 503 must not be lost to a reset
        second_w.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n")
        second_w.write(b"z" * 300000)
        second = await asyncio.wait_for(second_r.read(), 5)
        metrics = server.metrics()
        for writer in (first_w, second_w):
            writer.close()
        await server.shutdown(1)
        pool.close()
        return first, second, metrics

    first, second, metrics = asyncio.run(main())
    assert first.startswith(b"HTTP/1.1 200 ")
    assert second.startswith(b"HTTP/1.1 503 ")
    head = second.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 503 ")
    assert b"\r\nconnection: close" in head
    assert metrics["overloaded_total"] == 1


def test_the_app_shuts_down_when_the_address_cannot_be_bound() -> None:
    """The lifespan startup ran, then the bind failed: the app's shutdown runs before the
    error reaches the caller, as after serving."""
    events: list[str] = []

    async def lifespan_app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            events.append(message["type"])
            kind = message["type"].rpartition(".")[2]
            await send({"type": f"{message['type']}.complete"})
            if kind == "shutdown":
                return

    async def main() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            server = AsgiServer(lifespan_app, "127.0.0.1", taken.getsockname()[1])
            with pytest.raises(OSError, match="address already in use"):
                await server.start()

    asyncio.run(main())
    assert events == ["lifespan.startup", "lifespan.shutdown"]


@pytest.mark.parametrize("rcvbuf", [4096, 0])  # 0: the kernel's default, grown on the way
def test_a_client_that_never_reads_a_streamed_response_is_reset_at_idle_timeout(
    rcvbuf: int,
) -> None:
    """The app streams with ``more_body`` to a client that reads nothing: once the socket's
    buffers are full, ``send`` waits ``idle_timeout`` for the client to take some, not more
    (what was in flight when the wait began is acknowledged without a read); then the
    connection is reset, counted, and the app's next send raises ``ClientDisconnected``, as
    for a client gone, instead of waiting forever."""
    from poolalloc.net.asgi import ClientDisconnected

    sent: list[int] = []
    ended_by: list[type[BaseException]] = []

    async def stream(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = b"x" * 65536
        try:
            for _ in range(2000):  # 128 MiB: far more than any socket buffer holds
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent.append(1)
            await send({"type": "http.response.body", "body": b""})
        except OSError as exc:
            ended_by.append(type(exc))

    async def main() -> tuple[float, dict[str, float], bool]:
        server = AsgiServer(stream, "127.0.0.1", 0, idle_timeout=1.0, lifespan="off")
        await server.start()
        with socket.create_connection(server.address) as client:
            if rcvbuf:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            client.sendall(NEXT)
            started = time.monotonic()
            while not ended_by and len(sent) < 2000 and time.monotonic() - started < 10:
                await asyncio.sleep(0.05)
            ended = time.monotonic() - started
            client.setblocking(False)
            try:
                while client.recv(1 << 20):
                    pass
                reset = False
            except ConnectionResetError:
                reset = True
            except BlockingIOError:
                reset = False
        metrics = server.metrics()
        await server.shutdown(1)
        return ended, metrics, reset

    ended, metrics, reset = asyncio.run(main())
    assert ended_by == [ClientDisconnected]  # the app was not left waiting in send()
    assert 1.0 <= ended < 1.8  # one timeout after the buffers filled (in milliseconds)
    assert metrics["timeouts_total"] == 1
    assert reset


def test_a_client_reading_a_streamed_response_slowly_gets_all_of_it() -> None:
    """The client takes a 1 MiB body at a few hundred KB/s: the app's ``send`` waits seconds
    for the buffers to drain, far past ``idle_timeout``, but the client reads on: it is not
    reset, and it gets every byte."""
    body = bytes(range(256)) * 4096  # 1 MiB

    async def stream(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def main() -> tuple[bytes, float, dict[str, float]]:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)  # accepted ones inherit
        server = AsgiServer(stream, sock=listener, idle_timeout=0.5, lifespan="off")
        await server.start()
        loop = asyncio.get_running_loop()

        def read_slowly() -> tuple[bytes, float]:
            with socket.create_connection(server.address) as client:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
                client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                client.settimeout(5)
                got = bytearray()
                started = time.monotonic()
                while data := client.recv(4096):
                    got += data
                    time.sleep(0.01)  # under 400 KB/s
                return bytes(got), time.monotonic() - started

        got, took = await loop.run_in_executor(None, read_slowly)
        metrics = server.metrics()
        await server.shutdown(1)
        return got, took, metrics

    got, took, metrics = asyncio.run(main())
    assert took > 1.5  # several idle timeouts
    assert metrics["timeouts_total"] == 0
    chunks = got.partition(b"\r\n\r\n")[2].split(b"\r\n")
    assert b"".join(chunks[1::2]) == body  # the data of the chunked framing


def _big_answers(size: int) -> tuple[Any, list[int]]:
    """An app answering every request with ``size`` bytes in one ``send``, and its count."""
    ran: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        ran.append(1)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"y" * size})

    return app, ran


def _until_gone(server: Any, seconds: float) -> float:
    """Seconds from the server's first connection until it has none (at most ``seconds``)."""
    deadline = time.monotonic() + 5
    while not server.connections and time.monotonic() < deadline:
        time.sleep(0.005)
    started = time.monotonic()
    while server.connections and time.monotonic() - started < seconds:
        time.sleep(0.02)
    return time.monotonic() - started


def _never_read(app: Any, request: bytes) -> tuple[float, dict[str, float]]:
    """Send ``request`` to ``app`` served with ``idle_timeout`` 1 s and read nothing: (seconds
    until the server ended the connection, its metrics then)."""

    async def main() -> tuple[float, dict[str, float]]:
        server = AsgiServer(app, "127.0.0.1", 0, idle_timeout=1.0, keep_alive_timeout=0.5)
        await server.start()
        loop = asyncio.get_running_loop()
        with socket.create_connection(server.address) as client:
            client.sendall(request)
            took = await loop.run_in_executor(None, _until_gone, server, 10.0)
        metrics = server.metrics()
        await server.shutdown(1)
        return took, metrics

    return asyncio.run(main())


def test_pipelined_requests_of_a_client_that_never_reads_are_not_all_answered_into_memory() -> None:
    """150 pipelined requests (4 KB) from a client that reads nothing, each answered with 2 MB:
    the next request waits for the last answer to drain, so the server holds about one answer,
    not 300 MB, and the connection is reset one ``idle_timeout`` after its client stopped
    taking anything (counted once)."""
    app, ran = _big_answers(2_000_000)
    took, metrics = _never_read(app, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 150)
    assert len(ran) <= 4  # (the kernel's buffers take the first few answers)
    assert took < 5
    assert metrics["timeouts_total"] == 1


def test_a_whole_response_to_a_client_that_never_reads_is_reset_at_idle_timeout() -> None:
    """A 20 MB answer written in one ``send`` with ``Connection: close`` waits in the buffer
    for the close: a client that reads none of it is reset one ``idle_timeout`` later, not
    kept (with its 20 MB) until the server shuts down; counted once."""
    app, _ = _big_answers(20_000_000)
    request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    took, metrics = _never_read(app, request)
    assert 0.9 < took < 5
    assert metrics["timeouts_total"] == 1


@pytest.mark.parametrize("catches", [True, False], ids=["app-catches", "app-lets-it-out"])
def test_a_send_after_the_client_left_raises_an_oserror(
    make_server: Any, caplog: pytest.LogCaptureFixture, catches: bool
) -> None:
    """ASGI HTTP 2.4: ``send()`` on a connection whose client hung up raises
    ``ClientDisconnected``, an ``OSError``: an app streaming until a send fails ends at once
    (each send returned at once before, and such a loop spun forever, holding the event loop).
    Let out of the app, it is not logged as an error: the client left, nothing failed."""
    from poolalloc.net.asgi import ClientDisconnected

    ended: list[Any] = []
    chunk = b"x" * 65536

    async def streams(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        sent = 0
        try:
            while sent < 100_000:  # bounded, so that the code before this fix ends too
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent += 1
        except OSError as exc:
            ended.append((type(exc), time.monotonic()))
            if not catches:
                raise
        else:
            ended.append(("returned after every send", time.monotonic()))

    server = make_server("poolalloc", streams)
    with caplog.at_level(logging.DEBUG, logger="poolalloc.asgi"):
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        left = time.monotonic()  # a reset: the server's next write or read sees it
        deadline = left + 20
        while not ended and time.monotonic() < deadline:
            time.sleep(0.01)
    assert ended, "the app never ended"
    kind, at = ended[0]
    assert kind is ClientDisconnected
    assert issubclass(kind, OSError)
    assert at - left < 2.0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    if not catches:
        assert any("ended by the client's disconnect" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("middleware", [False, True], ids=["plain", "base-http-middleware"])
def test_a_starlette_event_stream_ends_when_its_client_leaves(
    make_server: Any, caplog: pytest.LogCaptureFixture, middleware: bool
) -> None:
    """A server-sent event stream that waits for its next event ends as soon as its client
    leaves, with nothing logged as an error. The scope says ASGI ``spec_version`` 2.3 for this:
    under 2.4 Starlette stops running its disconnect listener beside a streamed response and
    relies on ``send()`` raising, which only happens at the next event (never, here)."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    closed: list[float] = []

    async def events() -> Any:
        try:
            yield b"data: first\n\n"
            await asyncio.Event().wait()  # the next event never comes
        finally:
            closed.append(time.monotonic())

    async def sse(request: Request) -> StreamingResponse:
        return StreamingResponse(events(), media_type="text/event-stream")

    async def passes(request: Request, call_next: Any) -> Any:
        return await call_next(request)

    app = Starlette(
        routes=[Route("/", sse)],
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=passes)] if middleware else [],
    )
    server = make_server("poolalloc", app)
    with caplog.at_level(logging.DEBUG, logger="poolalloc.asgi"):
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while b"first" not in got:
                chunk = sock.recv(65536)
                assert chunk, got
                got += chunk
        left = time.monotonic()
        deadline = left + 10
        while not closed and time.monotonic() < deadline:
            time.sleep(0.01)
    assert closed, "the event stream outlived its client"
    assert closed[0] - left < 1.0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


@pytest.mark.parametrize("streamed", [False, True], ids=["plain-response", "streaming-response"])
def test_a_starlette_background_task_runs_when_the_client_gave_up(
    make_server: Any, streamed: bool
) -> None:
    """A response's start and last body sent after its client left are dropped without a word
    (as uvicorn drops them): raising there skipped what Starlette runs after them, a
    ``BackgroundTask`` (an e-mail, an audit write), lost at DEBUG level."""
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    ran: list[str] = []

    async def work() -> None:
        ran.append("background ran")

    async def parts() -> Any:
        yield b"a"
        yield b"b"

    async def slow(request: Request) -> Response:
        await asyncio.sleep(0.5)  # the client gives up meanwhile
        if streamed:
            return StreamingResponse(parts(), background=BackgroundTask(work))
        return PlainTextResponse("ok", background=BackgroundTask(work))

    server = make_server("poolalloc", Starlette(routes=[Route("/", slow, methods=["POST"])]))
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        time.sleep(0.1)
    deadline = time.monotonic() + 5
    while not ran and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ran == ["background ran"]


def test_a_memoryview_body_counts_its_bytes_not_its_items(make_server: Any) -> None:
    """A body's length is in bytes: a ``memoryview`` of 3 four-byte items went out with
    ``content-length: 3`` and 12 bytes, 9 of them read as the next pipelined answer."""
    import array

    async def wide(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            body = memoryview(array.array("i", [1, 2, 3]))
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})

    server = make_server("poolalloc", wide)
    got, _ = exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = got.partition(b"\r\n\r\n")
    assert b"\r\ncontent-length: 12\r\n" in head.lower()
    assert body == array.array("i", [1, 2, 3]).tobytes()


@pytest.mark.parametrize("kind", ["poolalloc", "uvicorn"])
def test_a_root_path_is_part_of_the_scope_path(kind: str) -> None:
    """ASGI: ``path`` (and ``raw_path``) is the whole path, ``root_path`` included, as uvicorn
    gives it: a request for ``/items`` behind a proxy that stripped ``/api`` is ``/api/items``.
    Starlette routes on what follows ``root_path`` and builds ``request.url`` (and its slash
    redirects) from ``path``: without the prefix they pointed outside the application."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    seen: list[tuple[str, bytes, str]] = []

    async def items(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(request.url))

    starlette = Starlette(routes=[Route("/items/", items)])

    async def paths(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append((scope["path"], scope["raw_path"], scope["root_path"]))
        await starlette(scope, receive, send)

    async def ask(address: tuple[str, int], target: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(*address)
        writer.write(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % target)
        reply = await reader.read()
        writer.close()
        return reply

    async def main() -> tuple[bytes, bytes]:
        if kind == "poolalloc":
            server = AsgiServer(paths, "127.0.0.1", 0, lifespan="off", root_path="/api")
            await server.start()
            address = server.address
        else:
            import uvicorn

            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            address = sock.getsockname()
            config = uvicorn.Config(paths, lifespan="off", root_path="/api", http="h11")
            userver = uvicorn.Server(config)
            task = asyncio.ensure_future(userver.serve(sockets=[sock]))
            while not userver.started:
                await asyncio.sleep(0.01)
        try:
            return await ask(address, b"/it%65ms/"), await ask(address, b"/items")
        finally:
            if kind == "poolalloc":
                await server.shutdown(1)
            else:
                userver.should_exit = True
                await task
                sock.close()

    found, moved = asyncio.run(asyncio.wait_for(main(), 20))
    assert seen[0] == ("/api/items/", b"/api/it%65ms/", "/api")
    assert found.startswith(b"HTTP/1.1 200 ")
    assert found.endswith(b"\r\n\r\nhttp://x/api/items/")
    assert moved.startswith(b"HTTP/1.1 307 ")
    assert b"\r\nlocation: http://x/api/items/\r\n" in moved.lower()


def _refusing_upload(size: int) -> Any:
    """An app that answers an upload without reading it (a 401 with a page of ``size``)."""

    async def refuse(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        page = b"p" * size
        headers = [(b"content-length", b"%d" % size)]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": page})

    return refuse


def _upload_then_read(address: tuple[str, int], body: int, prefix: bytes) -> tuple[bytes, bool]:
    """Send a request head and ``body`` bytes of body while the answer comes (a client with a
    small receive buffer, reading only once it has sent all it could); what it then read,
    and whether its sending was cut by the server's reset."""
    with socket.create_connection(address, timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.sendall(prefix % body)
        sent, cut = 0, False
        try:
            while sent < body:
                sent += sock.send(b"y" * min(65536, body - sent))
        except OSError:
            cut = True
        time.sleep(0.3)
        got = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                got += chunk
    return got, cut


@pytest.mark.parametrize(
    "prefix",
    [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n",
    ],
    ids=["length", "chunked"],
)
def test_an_answer_to_a_body_left_unread_is_not_cut_by_a_reset(prefix: bytes) -> None:
    """An app that answers without reading the body (a 401 to an upload) has its connection
    closed after the answer; the client still sending, a plain close reset the connection and
    dropped what the kernel still held of the answer (300 KB arrived as 32 KB). The server now
    half-closes and reads what the client still sends (dropped) until its FIN or a linger of
    2 s, as the HTTP server's lingering close does: the whole answer arrives."""
    size = 300_000

    async def main() -> tuple[bytes, bool, float]:
        server = AsgiServer(_refusing_upload(size), "127.0.0.1", 0, lifespan="off")
        await server.start()
        loop = asyncio.get_running_loop()
        got, cut = await loop.run_in_executor(
            None, _upload_then_read, server.address, 1_000_000, prefix
        )
        began = time.monotonic()
        await server.shutdown(5)
        return got, cut, time.monotonic() - began

    got, cut, shutdown = asyncio.run(asyncio.wait_for(main(), 30))
    head, _, page = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 ")
    assert b"\r\nconnection: close" in head.lower()
    assert len(page) == size
    assert not cut  # read and dropped: the client sent all of its body
    assert shutdown < 1  # the client's close ended the linger

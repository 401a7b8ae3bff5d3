"""The ASGI server's framing of requests and answers, with raw sockets: HTTP/1.0 keep-alive,
HEAD answers, pipelined requests split across reads and many small pipelined requests."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

import pytest
from rawhttp import read_to_close

pytestmark = [pytest.mark.net, pytest.mark.timeout(60)]


async def no_length_app(scope: Any, receive: Any, send: Any) -> None:
    """Answers ``hello-ok`` (8 bytes) with no Content-Length; ``/stream`` in two parts."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    if scope["path"] == "/stream":
        await send({"type": "http.response.body", "body": b"hello", "more_body": True})
        await send({"type": "http.response.body", "body": b"-ok"})
    else:
        await send({"type": "http.response.body", "body": b"hello-ok"})


def _read_answers(sock: socket.socket, count: int, marker: bytes = b"hello-ok") -> bytes:
    sock.settimeout(10)
    got = b""
    while got.count(marker) < count:
        chunk = sock.recv(1 << 16)
        assert chunk, f"closed after {got.count(marker)} answers: {got[-200:]!r}"
        got += chunk
    return got


@pytest.fixture
def server(make_server: Any) -> Any:
    return make_server("poolalloc", no_length_app)


def test_http_10_keep_alive_is_granted_in_so_many_words(server: Any) -> None:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        for _ in range(2):  # the same connection serves the next request
            sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            head, _, body = _read_answers(sock, 1).partition(b"\r\n\r\n")
            assert b"\r\nconnection: keep-alive" in head.lower()
            assert body == b"hello-ok"


def test_a_head_answer_says_the_length_the_get_would_have(server: Any) -> None:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nHEAD /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # framing holds: this one follows
        got = _read_answers(sock, 1)
    first, second, third = got.split(b"HTTP/1.1 200")[1:]
    assert b"content-length: 8\r\n" in first.lower()
    assert first.endswith(b"\r\n\r\n")  # no body
    assert b"transfer-encoding: chunked\r\n" in second.lower()
    assert second.endswith(b"\r\n\r\n")  # no body, not even a last chunk
    assert third.endswith(b"\r\n\r\nhello-ok")


def test_a_pipelined_head_cut_across_reads_is_answered(server: Any) -> None:
    """The start of the next request came with the last one; the rest comes later, alone."""
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHo")
        _read_answers(sock, 1)
        time.sleep(0.1)  # the first answer is out and the half head waits
        sock.sendall(b"st: x\r\n\r\n")
        _read_answers(sock, 1)


def test_many_small_pipelined_requests_are_all_answered(server: Any) -> None:
    """3000 pipelined requests (81 KB, past the 64 KiB head limit together): each head is
    small, so each is answered, in order."""
    count = 3000
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * count)
        time.sleep(0.5)  # everything arrives while the first answers are being made
        got = _read_answers(sock, count)
    assert got.count(b"HTTP/1.1 200") == count
    assert b" 431 " not in got


async def slow_echo_app(scope: Any, receive: Any, send: Any) -> None:
    """Reads the whole body, waits 0.2 s (a handler's own work), then answers the path and the
    body; ``/listen`` answers what a second ``receive()`` says after the body."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await asyncio.sleep(0.2)
    if scope["path"] == "/listen":
        body = (await asyncio.wait_for(receive(), 5))["type"].encode()
    out = scope["path"].encode() + b":" + body
    headers = [(b"content-length", str(len(out)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": out})


def _half_closed_exchange(server: Any, requests: bytes) -> bytes:
    """Send ``requests``, half-close (``shutdown(SHUT_WR)``, as ``nc -N``), read to the end."""
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(requests)
        sock.shutdown(socket.SHUT_WR)
        return read_to_close(sock)


def test_a_client_that_half_closes_after_its_request_is_answered(make_server: Any) -> None:
    """The FIN after a whole request says the client sends no more, not that it left: the
    answer that is owed still goes out, then the connection closes."""
    server = make_server("poolalloc", slow_echo_app)
    for _ in range(3):
        got = _half_closed_exchange(
            server, b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
        )
        assert got.startswith(b"HTTP/1.1 200"), got
        assert got.endswith(b"\r\n\r\n/a:hi")


def test_pipelined_requests_before_a_half_close_are_all_answered_in_order(
    make_server: Any,
) -> None:
    server = make_server("poolalloc", slow_echo_app)
    requests = b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5))
    got = _half_closed_exchange(server, requests)
    assert got.count(b"HTTP/1.1 200") == 5
    bodies = [answer.rpartition(b"\r\n\r\n")[2] for answer in got.split(b"HTTP/1.1 200")[1:]]
    assert bodies == [b"/%d:" % i for i in range(5)]


def test_after_a_half_close_the_app_hears_a_disconnect_and_its_answer_still_goes(
    make_server: Any,
) -> None:
    """A disconnect listener learns the client sends no more (as from servers that close on
    the FIN); what the app then sends is still written."""
    server = make_server("poolalloc", slow_echo_app)
    got = _half_closed_exchange(server, b"GET /listen HTTP/1.1\r\nHost: x\r\n\r\n")
    assert got.endswith(b"\r\n\r\n/listen:http.disconnect")


def test_a_half_close_that_cuts_a_body_or_a_head_ends_the_connection(make_server: Any) -> None:
    server = make_server("poolalloc", slow_echo_app)
    # a body cut short: no answer can be whole, the app sees a disconnect
    got = _half_closed_exchange(
        server, b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nhi"
    )
    assert got == b""
    # a whole request, then a head cut short: the first is answered, nothing else
    got = _half_closed_exchange(server, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHo")
    assert got.count(b"HTTP/1.1 ") == 1
    assert got.endswith(b"\r\n\r\n/a:")
    # a whole request, then one whose body is cut: the first is answered, nothing else
    got = _half_closed_exchange(
        server,
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nhi",
    )
    assert got.count(b"HTTP/1.1 ") == 1
    assert got.endswith(b"\r\n\r\n/a:")


def test_a_half_close_that_cuts_a_head_with_no_request_running_ends_at_once(
    make_server: Any,
) -> None:
    """Nothing runs and the pending bytes can never become a request: closed at once, not held
    for the keep-alive time and answered 408."""
    server = make_server("poolalloc", slow_echo_app)
    started = time.monotonic()
    got = _half_closed_exchange(server, b"GET /p HTTP/1.1\r\nHost: x\r\n")
    assert got == b""
    assert time.monotonic() - started < 2.0  # the keep-alive time is 5 s


async def answers_nothing_app(scope: Any, receive: Any, send: Any) -> None:
    """Returns without a response and without calling ``receive()``: a bug of the app's."""
    if scope["type"] == "http":
        await asyncio.sleep(0.2)


def test_an_app_that_answers_nothing_after_a_half_close_gets_its_500(
    make_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Only an app told of the FIN (its ``receive()`` said ``http.disconnect``) may stop
    without an answer quietly; one that never asked still gets its 500 and error line."""
    server = make_server("poolalloc", answers_nothing_app)
    with caplog.at_level(logging.ERROR, logger="poolalloc.asgi"):
        got = _half_closed_exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 500 ")
    assert any("without completing a response" in r.getMessage() for r in caplog.records)


def test_a_starlette_streamed_response_ends_at_a_half_close(make_server: Any) -> None:
    """Pinned as documented: under ASGI spec 2.3 Starlette listens for the disconnect beside a
    streamed (or file) response, hears the FIN as one, and stops before its head, as on
    uvicorn; the connection then closes with nothing sent."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def parts() -> Any:
        await asyncio.sleep(0.2)
        yield b"part"

    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(parts())

    server = make_server("poolalloc", Starlette(routes=[Route("/", stream)]))
    assert _half_closed_exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == b""

"""Faulty peers: the server keeps serving others and every pooled buffer comes back."""

from __future__ import annotations

import logging
import os
import socket
import struct
import time
from typing import Any

import budget
import pytest
from rawhttp import connect, exchange, is_closed_by_peer, read_response

from poolalloc.net.http.server import Response

pytestmark = [pytest.mark.net, pytest.mark.timeout(60)]

GET = b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n"


def served(port: int) -> bool:
    return exchange(port, GET)[0][2] == b"Hello, World!"


def live_connections(srv: Any) -> int:
    return int(srv.call(lambda: len(srv.http.tcp.connections)))


def wait_until(cond: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.02)


def test_disconnect_mid_request_and_mid_body(make_server: Any) -> None:
    srv = make_server()
    srv.http.route("/echo", lambda req: Response(body=req.body))
    for raw in (b"GET /te", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc"):
        sock = connect(srv.port)
        sock.sendall(raw)
        sock.close()
    assert served(srv.port)
    wait_until(lambda: live_connections(srv) == 0)


def test_reset_connections(make_server: Any) -> None:
    srv = make_server()
    for _ in range(20):
        sock = connect(srv.port)
        sock.sendall(GET + b"GET /te")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST
    assert served(srv.port)
    wait_until(lambda: live_connections(srv) == 0)
    assert srv.call(srv.http.metrics)["connections_active"] == 0


def test_half_close_still_gets_the_response(make_server: Any) -> None:
    srv = make_server()
    with connect(srv.port) as sock:
        sock.sendall(GET + GET)
        sock.shutdown(socket.SHUT_WR)
        f = sock.makefile("rb")
        assert [read_response(f)[2] for _ in range(2)] == [b"Hello, World!"] * 2
        assert is_closed_by_peer(sock)


def test_slowloris_is_ended_by_the_header_timeout(make_server: Any) -> None:
    srv = make_server(header_timeout=0.3, sweep_interval=0.05)
    slow = connect(srv.port)
    start = time.monotonic()
    closed = False
    for byte in GET[:-4]:
        try:
            slow.send(bytes([byte]))
        except OSError:
            closed = True
            break
        assert served(srv.port)  # everyone else is served meanwhile
        time.sleep(0.05)
        if time.monotonic() - start > 3:
            break
    assert closed or is_closed_by_peer(slow, 3)
    assert time.monotonic() - start < 3
    slow.close()
    assert srv.call(srv.http.metrics)["timeouts_total"] >= 1


def test_idle_connections_are_closed(make_server: Any) -> None:
    srv = make_server(idle_timeout=0.3, sweep_interval=0.05)
    with connect(srv.port) as sock:
        sock.sendall(GET)
        read_response(sock.makefile("rb"))
        start = time.monotonic()
        assert is_closed_by_peer(sock, 3)
        assert 0.2 < time.monotonic() - start < 3


def test_client_that_never_reads_is_paused_not_buffered(make_server: Any) -> None:
    big = b"z" * (256 << 10)
    srv = make_server(high_water=1 << 20, low_water=256 << 10)
    srv.http.route("/big", lambda req: Response(body=big))
    hog = connect(srv.port)
    hog.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * 200)  # 50 MiB of responses asked for
    time.sleep(0.3)
    assert served(srv.port)

    def queued() -> list[int]:
        return [c.queued for c in srv.http.tcp.connections]

    wait_until(lambda: max(srv.call(queued), default=0) > 0)
    worst = max(srv.call(queued))
    assert worst <= (1 << 20) + len(big) + 4096  # high water + one response, not 50 MiB
    # Now the hog reads everything: reading resumes and all 200 responses arrive.
    f = hog.makefile("rb")
    for _ in range(200):
        assert len(read_response(f)[2]) == len(big)
    f.close()  # the makefile reference would keep the descriptor open
    hog.close()
    wait_until(lambda: live_connections(srv) == 0)


def test_many_clients_with_faults_leave_pools_balanced(make_server: Any) -> None:
    srv = make_server()
    end = time.monotonic() + 0.5 * budget.seconds()
    rounds = 0
    while time.monotonic() < end or rounds < 3:
        rounds += 1
        socks = [connect(srv.port) for _ in range(20)]
        for i, s in enumerate(socks):
            s.sendall(GET if i % 3 else GET[:10])
            if i % 4 == 0:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        assert served(srv.port)
    wait_until(lambda: live_connections(srv) == 0)
    assert srv.call(srv.pool.outstanding) == 0


def test_a_route_that_raises_is_answered_500_and_closed_gracefully(make_server: Any) -> None:
    """A bug in a route is the server's error: 500 with ``Connection: close`` and the whole
    answer delivered (not a reset), the exception to the loop's handler, the others served."""
    srv = make_server()
    errors: list[type] = []  # types only: a kept exception keeps its frames and their views
    srv.reactor.exception_handler = lambda exc, where: errors.append(type(exc))

    def boom(req: Any) -> Response:
        raise ValueError("route bug")

    srv.call(srv.http.route, "/boom", boom)
    sock = connect(srv.port)
    sock.sendall(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n" + GET)  # a second request behind it
    f = sock.makefile("rb")
    status, headers, body = read_response(f)
    assert (status, headers["connection"], body) == (500, "close", b"500 internal server error\n")
    assert is_closed_by_peer(sock)  # graceful: the pipelined request is not answered
    sock.close()
    head = exchange(srv.port, b"HEAD /boom HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head[0][0] == 500
    assert served(srv.port)
    assert errors == [ValueError, ValueError]
    assert srv.call(srv.http.metrics)["errors_total"] >= 2


@pytest.mark.parametrize(
    "fields",
    [
        {"headers": (("X-Echo", "a\r\nSet-Cookie: evil=1"),)},
        {"headers": (("X-Echo", "a\nSet-Cookie: evil=1"),)},
        {"headers": (("X-Echo", "a\x0bb"),)},
        {"headers": (("X-Echo", "a\x00b"),)},
        {"headers": (("Set-Cookie: evil=1\r\nX", "1"),)},
        {"headers": (("X Echo", "1"),)},
        {"headers": (("", "1"),)},
        {"headers": (("X-Echo", "\u2028"),)},  # not Latin-1: no bytes to send
        {"content_type": "text/plain\r\nSet-Cookie: evil=1"},
        # the server frames the body: a second length or a coding would cut it elsewhere, the
        # rest read as the next response
        {"body": b"hello", "headers": (("Content-Length", "2"),)},
        {"body": b"hello", "headers": (("transfer-encoding", "chunked"),)},
        {"headers": (("Connection", "keep-alive"),)},  # the server decides to keep one open
        {"headers": (("Connection", "close, upgrade"),)},
        {"status": 100},  # interim: the client would wait for the real answer
        # no content (RFC 9110 15.3.5, 15.4.5): a client reads the body as the next response
        {"status": 204, "body": b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"},
        {"status": 304, "body": b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"},
        {"status": 1200},
    ],
)
def test_a_response_that_would_break_the_head_is_refused(make_server: Any, fields: Any) -> None:
    """RFC 9110 5.5: a CR or LF in a header a route reflects from the request would add
    headers (or a response) of the client's choosing. ``Response`` refuses such a field, or a
    status that is not a final one, when it is made; made in a route, the client gets the
    route's 500."""
    with pytest.raises(ValueError, match="Response"):
        Response(**fields)
    srv = make_server()
    srv.reactor.exception_handler = lambda exc, where: None
    srv.call(srv.http.route, "/reflect", lambda req: Response(**fields))
    got = exchange(srv.port, b"GET /reflect HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [r[0] for r in got] == [500]
    assert b"evil" not in got[0][2]
    assert "set-cookie" not in got[0][1]
    assert served(srv.port)


@pytest.mark.parametrize(
    "resp",
    [
        Response(body=b"bye", headers=(("Connection", "close"),)),
        Response(body=b"bye", headers=(("X-A", "1"), ("connection", "Close"))),
        Response(body=b"bye", close=True),
        Response(body=b"bye", content_type="text/x", close=True),
        Response(body=b"bye", headers=(("Connection", "close,"),)),  # RFC 9110 5.6.1
    ],
)
def test_a_route_that_asks_for_a_close_gets_one(make_server: Any, resp: Response) -> None:
    """RFC 9112 9.6: a route's ``Connection: close`` (or ``close=True``) is sent once, by the
    server, and the connection is closed after it; a request pipelined behind is not read."""
    assert resp.close
    assert all(n.lower() != "connection" for n, _ in resp.headers)
    srv = make_server()
    srv.call(srv.http.route, "/bye", lambda req: resp)  # made per request
    srv.call(srv.http.route, "/bye-static", resp)  # the static route's reply cache
    for path in (b"/bye", b"/bye-static"):
        sock = connect(srv.port)
        sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n" + GET + GET)
        f = sock.makefile("rb")
        status, headers, body = read_response(f)
        assert (status, headers["connection"], body) == (200, "close", b"bye")
        assert is_closed_by_peer(sock)  # the two requests behind it are not answered
        sock.close()
    assert served(srv.port)


def test_responses_with_equal_but_different_header_sets_keep_their_own_values() -> None:
    """The per-header-set check remembers a set by equality, and 1 == 1.0 == True: each
    Response keeps its own values (a Connection: close is taken out of its own fields)."""
    first = Response(headers=(("X-N", 1), ("Connection", "close")))  # type: ignore[arg-type]
    second = Response(headers=(("X-N", True), ("Connection", "close")))  # type: ignore[arg-type]
    assert (first.headers, second.headers) == ((("X-N", 1),), (("X-N", True),))
    assert [type(v) for _, v in second.headers] == [bool]
    assert (first.close, second.close) == (True, True)


def test_a_response_with_valid_fields_is_made(make_server: Any) -> None:
    resp = Response(299, b"x", 'text/x; a="b\tc"', (("X-A", "1\t\xe92"), ("X-B", "")))
    srv = make_server()
    srv.call(srv.http.route, "/ok", resp)
    status, headers, body = exchange(srv.port, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")[0]
    assert (status, headers["x-a"], headers["x-b"], body) == (299, "1\t\xe92", "", b"x")


def test_a_header_value_that_is_a_number_is_sent_as_its_digits(make_server: Any) -> None:
    """The head writes each field with a format, so a route that gives a count as a number
    (not a str) was answered with it; the check of the fields takes it the same way."""
    srv = make_server()
    srv.call(srv.http.route, "/n", lambda req: Response(body=b"x", headers=(("X-Count", 5),)))
    status, headers, body = exchange(srv.port, b"GET /n HTTP/1.1\r\nHost: x\r\n\r\n")[0]
    assert (status, headers["x-count"], body) == (200, "5", b"x")


def test_headers_given_as_a_generator_all_go_out(make_server: Any) -> None:
    """The field check walked a generator of headers to its end, and the head then found it
    empty: the response went out without them. Any iterable is taken as a tuple, once."""
    srv = make_server()
    srv.call(
        srv.http.route,
        "/g",
        lambda req: Response(body=b"x", headers=((n, v) for n, v in (("X-A", "1"), ("X-B", "2")))),
    )
    status, headers, body = exchange(srv.port, b"GET /g HTTP/1.1\r\nHost: x\r\n\r\n")[0]
    assert (status, headers.get("x-a"), headers.get("x-b"), body) == (200, "1", "2", b"x")


def test_a_response_made_for_each_request_checks_its_fields_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The field check costs more than the rest of a Response: a route that makes one for
    each request with the same headers pays it once, and headers that vary (made from each
    request) keep what is remembered bounded; a bad field is refused every time."""
    from poolalloc.net.http import server as http_server

    checked: list[bytes] = []
    real = http_server.valid_field

    def counting(name: bytes, value: bytes) -> bool:
        checked.append(name)
        return real(name, value)

    monkeypatch.setattr(http_server, "valid_field", counting)
    monkeypatch.setattr(http_server, "_CHECKED_FIELDS", {}, raising=False)
    fields = (("Cache-Control", "no-store"), ("X-A", "1"))
    for _ in range(100):
        Response(body=b"{}", content_type="application/json", headers=fields)
    assert len(checked) == 3  # the content type and the two headers, for the first one only
    for i in range(3 * http_server._CHECKED_FIELDS_MAX):
        Response(headers=(("ETag", f'"{i}"'),))
    assert len(http_server._CHECKED_FIELDS) <= http_server._CHECKED_FIELDS_MAX
    for _ in range(2):
        with pytest.raises(ValueError, match="invalid header"):
            Response(headers=(("X-A", "1\r\nSet-Cookie: a=1"),))


@pytest.mark.parametrize("static", [True, False])
@pytest.mark.parametrize("status", [204, 304])
def test_a_response_without_content_has_no_length_and_no_body(
    make_server: Any, status: int, static: bool
) -> None:
    """RFC 9110 8.6, 15.4.5: a 304 carries no content, and a Content-Length only if it is the
    200's (not the 0 of its own empty body), so no content metadata, as a file's 304; the
    next pipelined request is answered right after the head (twice: the second from the
    reply cache)."""
    srv = make_server()
    resp = Response(status)
    srv.call(srv.http.route, "/none", resp if static else lambda req: resp)
    for _ in range(2):
        with connect(srv.port) as sock:
            sock.sendall(b"GET /none HTTP/1.1\r\nHost: x\r\n\r\n" + GET)
            f = sock.makefile("rb")
            head = b"".join(iter(f.readline, b"\r\n")).lower()
            assert head.startswith(b"http/1.1 %d " % status)
            assert b"content-length" not in head
            assert b"content-type" not in head
            assert read_response(f)[::2] == (200, b"Hello, World!")


def _read_to_eof(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until its FIN; a reset (ConnectionResetError) or no end
    within ``timeout`` fails the test."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _head_of(reply: bytes) -> tuple[bytes, bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    return head.lower(), body


def test_an_idle_keep_alive_connection_is_closed_gracefully(make_server: Any) -> None:
    """RFC 9112 9.5: between requests the server may close an idle connection, with a FIN: the
    client's next read is a clean EOF, not a reset (which could destroy data in flight)."""
    srv = make_server(idle_timeout=0.3, sweep_interval=0.05)
    with connect(srv.port) as sock:
        sock.sendall(GET)
        f = sock.makefile("rb")
        assert read_response(f)[2] == b"Hello, World!"
        f.close()
        start = time.monotonic()
        assert _read_to_eof(sock) == b""
        assert 0.2 < time.monotonic() - start < 3
    wait_until(lambda: live_connections(srv) == 0)
    assert srv.call(srv.http.metrics)["timeouts_total"] >= 1


def test_a_head_not_finished_in_time_gets_a_408(make_server: Any) -> None:
    """RFC 9110 15.5.9: a request head that is not whole within ``header_timeout`` is answered
    ``408 Request Timeout`` with ``Connection: close`` (no body for a HEAD), then a FIN."""
    srv = make_server(header_timeout=0.3, sweep_interval=0.05)
    for partial, with_body in ((b"GET /test HTTP/1.1\r\nHo", True), (b"HEAD /test HTT", False)):
        with connect(srv.port) as sock:
            sock.sendall(partial)
            start = time.monotonic()
            reply = _read_to_eof(sock)
            assert time.monotonic() - start < 3
        head, body = _head_of(reply)
        assert head.startswith(b"http/1.1 408 request timeout\r\n")
        assert b"\r\nconnection: close" in head
        assert (body == b"408 request timeout\n") if with_body else body == b""
    metrics = srv.call(srv.http.metrics)
    assert metrics["timeouts_total"] >= 2
    assert metrics["errors_total"] >= 2
    assert served(srv.port)


def test_a_body_not_finished_in_time_gets_a_408(make_server: Any) -> None:
    """A request whose body stops coming is incomplete too: past the idle limit it is answered
    408 with ``Connection: close`` and the connection ends with a FIN."""
    srv = make_server(idle_timeout=0.3, sweep_interval=0.05)
    srv.http.route("/echo", lambda req: Response(body=req.body))
    with connect(srv.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        head, _ = _head_of(_read_to_eof(sock))
    assert head.startswith(b"http/1.1 408 ")
    assert b"\r\nconnection: close" in head
    wait_until(lambda: live_connections(srv) == 0)


def small_window_client(port: int, rcvbuf: int) -> socket.socket:
    """A client whose receive buffer holds about ``rcvbuf`` bytes: what it does not read
    stays on the server's side."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    return sock


def assert_reset_at_first_timeout(srv: Any) -> None:
    """The server's only connection ends in bounded time, by its first timeout: not closed
    gracefully first, then aborted by a second."""
    start = time.monotonic()
    wait_until(lambda: live_connections(srv) == 0)
    assert time.monotonic() - start < 5
    assert srv.call(srv.http.metrics)["timeouts_total"] == 1


def test_a_peer_that_never_reads_is_still_reset_when_idle(make_server: Any) -> None:
    """A graceful close would wait on output the peer never reads: such a connection is
    aborted (RST) at its first timeout, in bounded time, and counted once."""
    big = b"z" * (8 << 20)
    srv = make_server(idle_timeout=0.3, sweep_interval=0.05)
    srv.http.route("/big", lambda req: Response(body=big))
    hog = small_window_client(srv.port, 4096)
    try:
        hog.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: max(srv.call(lambda: [c.queued for c in srv.http.tcp.connections])
                               or [0]) > 0)  # fmt: skip
        assert_reset_at_first_timeout(srv)
    finally:
        hog.close()


def test_a_peer_that_never_reads_small_answers_is_reset_at_its_first_timeout(
    make_server: Any,
) -> None:
    """The same with answers small enough that the io_uring engine copies them and sends them
    in C: bytes the peer has not taken count as output still to send there too."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # accepted sockets inherit
    srv = make_server(sock=listener, idle_timeout=0.3, sweep_interval=0.05)
    srv.http.route("/small", lambda req: Response(body=b"z" * 15000))
    hog = small_window_client(srv.port, 2048)
    try:
        hog.sendall(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
        wait_until(lambda: live_connections(srv) == 1)
        assert_reset_at_first_timeout(srv)
    finally:
        hog.close()


def test_a_slow_reader_of_a_download_is_not_cut_by_the_idle_timeout(make_server: Any) -> None:
    """A client that reads on, but slower than the kernel's send buffer drains within one idle
    timeout (so that no write of the server completes for longer than that), is still taking
    the download: it gets all of it, with no timeout counted."""
    body = bytes(range(256)) * 1280  # 320 KiB, more than the send buffer holds
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 128 << 10)  # accepted ones inherit
    srv = make_server(sock=listener, idle_timeout=0.6, sweep_interval=0.05)
    srv.http.route("/big", lambda req: Response(body=body))
    sock = small_window_client(srv.port, 16384)
    try:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        got = bytearray()
        started = time.monotonic()
        while len(got.partition(b"\r\n\r\n")[2]) < len(body) and (chunk := sock.recv(1024)):
            got += chunk
            time.sleep(0.01)  # under 100 KB/s: a third of the send buffer takes ~0.9 s
        assert time.monotonic() - started > 2.0  # it did read slowly, over several timeouts
        assert srv.call(srv.http.metrics)["timeouts_total"] == 0
        assert got.partition(b"\r\n\r\n")[2] == body
    finally:
        sock.close()


def test_a_slow_reader_of_a_closing_download_gets_all_of_it(make_server: Any) -> None:
    """``Connection: close``: the server half-closes once the last bytes are handed to the
    kernel and lingers for the client's EOF; a client still reading when the linger time runs
    out must get the rest of the body and a FIN, not a reset that discards it."""
    body = bytes(range(256)) * 4096  # 1 MiB
    srv = make_server(sweep_interval=0.05)
    srv.http.route("/big", lambda req: Response(body=body))
    sock = small_window_client(srv.port, 8192)  # most of it waits on the server's side
    try:
        wait_until(lambda: live_connections(srv) == 1)
        srv.call(lambda: [setattr(c, "linger", 0.2) for c in srv.http.tcp.connections])
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        sock.settimeout(5)
        got = bytearray()
        started = time.monotonic()
        while chunk := sock.recv(16384):  # ~1.3 s at this pace: well past the linger time
            got += chunk
            time.sleep(0.02)
        assert time.monotonic() - started > 0.5
        assert got.partition(b"\r\n\r\n")[2] == body
    finally:
        sock.close()


def test_a_lingering_close_is_bounded_by_linger_not_by_the_idle_limit(make_server: Any) -> None:
    """After the FIN of an idle close the server lingers (discarding input) until the client's
    EOF or ``linger`` seconds, however short ``idle_timeout`` is; then it ends the connection."""
    srv = make_server(idle_timeout=0.3, sweep_interval=0.05)
    with connect(srv.port) as sock:
        sock.sendall(GET)
        f = sock.makefile("rb")
        assert read_response(f)[2] == b"Hello, World!"
        f.close()
        assert _read_to_eof(sock) == b""  # the FIN; the client does not close yet
        linger = srv.call(lambda: [c.linger for c in srv.http.tcp.connections])
        assert linger == [2.0]
        time.sleep(0.6)  # twice the idle limit: still lingering
        assert live_connections(srv) == 1
        wait_until(lambda: live_connections(srv) == 0, timeout=5)


def _read_to_end(sock: socket.socket) -> None:
    while sock.recv(1 << 20):
        pass


def test_a_file_truncated_while_sent_is_reported(make_server: Any, tmp_path: Any) -> None:
    """A file that shrinks while its answer is sent (rewritten in place by a deploy) cannot
    keep the announced length: the client's connection is reset, so it cannot take the cut
    answer for the whole file, and the loop's exception handler gets an error naming the file
    (before, nothing was said on either engine: the operator never learnt it)."""
    size = 32 << 20  # far past what the socket buffers take before the client reads
    (tmp_path / "shrinks.bin").write_bytes(b"x" * size)
    srv = make_server(root=tmp_path)
    errors: list[tuple[type, str | None, str]] = []  # not the exception: it keeps its frames
    srv.reactor.exception_handler = lambda exc, where: errors.append(
        (type(exc), getattr(exc, "filename", None), str(exc))
    )
    with connect(srv.port) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /shrinks.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        got = sock.recv(65536)
        assert got.startswith(b"HTTP/1.1 200 OK\r\n")
        os.truncate(tmp_path / "shrinks.bin", 1 << 20)
        with pytest.raises(ConnectionResetError):  # a reset, never a clean end of the answer
            _read_to_end(sock)
    wait_until(lambda: bool(errors))
    ((kind, filename, message),) = errors
    assert (kind, filename) == (OSError, str(tmp_path / "shrinks.bin"))
    assert "truncated while sending" in message
    assert served(srv.port)


REACTOR_LOG = "poolalloc.net.epoll.reactor"


def test_errors_the_server_handled_are_one_log_line(
    make_server: Any, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """With the loop's default handler: a file truncated while sent (the client's connection
    is reset, as it must be) is one WARNING line that names the file and what was done, with
    no traceback. It was logged as ``unhandled exception in reactor callback <Connection
    object at 0x...>``, an ERROR with the exception attached, for a case the server had
    handled. Clients that reset their connections (mid-answer, mid-body, mid-head) and
    requests refused with a 4xx log nothing at all."""
    size = 32 << 20
    (tmp_path / "shrinks.bin").write_bytes(b"x" * size)
    srv = make_server(root=tmp_path, uploads=True)
    caplog.set_level(logging.DEBUG, logger=REACTOR_LOG)
    for raw in (
        b"GARBAGE\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000 + b"\r\n\r\n",
        b"POST /test HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"PUT /up.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc",
        b"GET /shrinks.bin HTTP/1.1\r\nHost: x\r\n\r\n" * 3,
    ):
        with connect(srv.port) as sock:
            sock.sendall(raw)
            time.sleep(0.05)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    wait_until(lambda: live_connections(srv) == 0)
    assert caplog.records == []
    with connect(srv.port) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /shrinks.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
        os.truncate(tmp_path / "shrinks.bin", 1 << 20)
        with pytest.raises(ConnectionResetError):
            _read_to_end(sock)
    wait_until(lambda: bool(caplog.records))
    time.sleep(0.1)  # a second record would have come by now
    srv.call(lambda: None)  # the reactor thread is out of the logging call
    ((record,),) = [caplog.records]
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    message = record.getMessage()
    assert "unhandled" not in message
    assert "truncated while sending" in message
    assert str(tmp_path / "shrinks.bin") in message
    assert message.endswith(": the connection was reset")


def test_a_bug_in_a_route_is_still_logged_with_its_traceback(
    make_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A route that raises is a bug: answered 500 and logged as an ERROR with the traceback
    (the one-line form is for errors the server handled)."""
    srv = make_server()
    caplog.set_level(logging.DEBUG, logger=REACTOR_LOG)

    def broken(req: Any) -> Response:
        raise ZeroDivisionError("route bug")

    srv.call(srv.http.route, "/broken", broken)
    assert exchange(srv.port, b"GET /broken HTTP/1.1\r\nHost: x\r\n\r\n")[0][0] == 500
    wait_until(lambda: bool(caplog.records))
    # The reactor thread may still be in the logging call that stored the record (passing it
    # to the handlers after caplog's): once it answers, it is done. The record then went to
    # the next phase's handlers too, on a loaded machine, and kept the read buffer out.
    srv.call(lambda: None)
    # what is asserted, then the records go: a traceback keeps the frames, and they the
    # connection's read buffer, which must be back in the pool at the end of the test
    seen = [(r.levelno, r.exc_info and r.exc_info[0], r.getMessage()) for r in caplog.records]
    caplog.clear()
    ((level, kind, message),) = seen
    assert (level, kind) == (logging.ERROR, ZeroDivisionError)
    assert "broken" in message

"""RFC 9110/9112 message rules over real sockets: keep-alive by version, Host, target forms,
line ends, Expect, and error answers. Every case also runs on io_uring (test_net_suites_on_uring).

docs/http.md has the table of cases these tests pin down.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest
from rawhttp import connect, is_closed_by_peer, read_response, read_to_close

from poolalloc.net.http.parser import Request
from poolalloc.net.http.server import Response

pytestmark = [pytest.mark.net, pytest.mark.timeout(60)]


def _echo(req: Request) -> Response:
    return Response(body=req.method.encode() + b" " + req.body)


def test_http10_keep_alive_is_granted_and_kept(make_server: Any, tmp_path: Any) -> None:
    (tmp_path / "f.txt").write_bytes(b"file")
    srv = make_server(root=tmp_path)
    srv.http.route("/echo", _echo)
    with connect(srv.port) as sock:
        f = sock.makefile("rb")
        for target, body in [("/test", b"Hello, World!")] * 3 + [
            ("/echo", b"GET "),
            ("/f.txt", b"file"),
            ("/missing", b"404 not found\n"),
        ]:
            sock.sendall(f"GET {target} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".encode())
            status, headers, got = read_response(f)
            assert (got, headers.get("connection")) == (body, "keep-alive"), target
        sock.sendall(b"GET /test HTTP/1.0\r\n\r\n")  # no keep-alive asked: answered, closed
        status, headers, got = read_response(f)
        assert (status, got, headers.get("connection")) == (200, b"Hello, World!", "close")
        assert is_closed_by_peer(sock)


def test_http11_keep_alive_answers_do_not_say_keep_alive(make_server: Any) -> None:
    srv = make_server()
    with connect(srv.port) as sock:
        f = sock.makefile("rb")
        for _ in range(2):
            sock.sendall(b"GET /test HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
            assert "connection" not in read_response(f)[1]


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /test HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /test HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n",
        b"GET /test HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
    ],
)
def test_connection_close_ends_the_connection(make_server: Any, raw: bytes) -> None:
    srv = make_server()
    with connect(srv.port) as sock:
        sock.sendall(raw + b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n")  # not answered
        data = read_to_close(sock)
    assert data.count(b"HTTP/1.1 200") == 1
    assert b"Connection: close\r\n" in data


def test_transfer_encoding_in_http10_is_400_and_close(make_server: Any) -> None:
    srv = make_server()
    srv.http.route("/echo", _echo)
    with connect(srv.port) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        )
        status, headers, _ = read_response(sock.makefile("rb"))
        assert (status, headers["connection"]) == (400, "close")
        assert is_closed_by_peer(sock)


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /test HTTP/1.1\nHost: x\n\n",
        b"GET /test HTTP/1.1\r\nHost: x\n\r\n",
        b"GET /test HTTP/1.1\nHost: x\r\n\n",
    ],
)
def test_bare_lf_heads_are_answered(make_server: Any, raw: bytes) -> None:
    srv = make_server()
    with connect(srv.port) as sock:
        f = sock.makefile("rb")
        sock.sendall(raw + raw)  # pipelined
        assert [read_response(f)[2] for _ in range(2)] == [b"Hello, World!"] * 2
        sock.sendall(raw + b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")  # then a CRLF head
        assert [read_response(f)[0] for _ in range(2)] == [200, 404]
        for i in range(len(raw)):  # and one byte per send: the head's end is found across reads
            sock.sendall(raw[i : i + 1])
        assert read_response(f)[2] == b"Hello, World!"
        for lead in (b"\n", b"\r\n\r\n"):  # empty lines before it, in the same read: answered
            sock.sendall(lead + raw)  # at once (it waited for another read until the 408)
            assert read_response(f)[:3:2] == (200, b"Hello, World!"), lead


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /test HTTP/1.1\rHost: x\r\n\r\n",
        b"GET /test HTTP/1.1\r\nHost: x\r\nA: b\r\r\n\r\n",  # a CR before a line's CRLF
        b"GET /test HTTP/1.1\r\nHost: x\r\nA: b\r\r\n\n",
    ],
)
def test_bare_cr_is_400(make_server: Any, raw: bytes) -> None:
    srv = make_server()
    with connect(srv.port) as sock:
        sock.sendall(raw)
        assert read_response(sock.makefile("rb"))[0] == 400
        assert is_closed_by_peer(sock)


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /test HTTP/1.1\r\n\r\n",  # no Host
        b"GET /test HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /test HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
        b"GET /test HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
        b"GET /test HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET /test HTTP/1.1\r\nHost: a/b\r\n\r\n",
        b"GET /test HTTP/1.1\r\nHost: a@b\r\n\r\n",
        b"GET test HTTP/1.1\r\nHost: a\r\n\r\n",  # no leading slash
        b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",  # asterisk-form is for OPTIONS only
        b"GET http:/test HTTP/1.1\r\nHost: a\r\n\r\n",
        # absolute-form of another scheme than http(s) names no resource of this server
        b"GET ftp://a/test HTTP/1.1\r\nHost: a\r\n\r\n",
        b"OPTIONS gopher://a/test HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST x-y+z.1://a/test HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_host_and_target_form_errors_are_400(make_server: Any, raw: bytes) -> None:
    srv = make_server()
    with connect(srv.port) as sock:
        sock.sendall(raw)
        status, headers, _ = read_response(sock.makefile("rb"))
        assert (status, headers["connection"]) == (400, "close")
        assert is_closed_by_peer(sock)


def test_absolute_form_routes_on_its_path(make_server: Any) -> None:
    srv = make_server()
    srv.http.route("/q", lambda req: Response(body=f"{req.path}|{req.query}".encode()))
    with connect(srv.port) as sock:
        f = sock.makefile("rb")
        sock.sendall(f"GET http://127.0.0.1:{srv.port}/test HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert read_response(f)[2] == b"Hello, World!"
        sock.sendall(b"GET HTTP://other/q?a=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(f)[2] == b"/q|a=1"
        sock.sendall(b"GET https://other/q?b HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(f)[2] == b"/q|b"
        sock.sendall(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(f)[0] == 404  # a valid request for no resource here


def test_empty_lines_before_a_request_are_ignored(make_server: Any) -> None:
    srv = make_server()
    srv.http.route("/echo", _echo)
    with connect(srv.port) as sock:
        f = sock.makefile("rb")
        sock.sendall(b"\r\n\r\n\nGET /test HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(f)[2] == b"Hello, World!"
        # An old client's extra CRLF after a body, in a read of its own, then the next request.
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab\r\n")
        assert read_response(f)[2] == b"POST ab"
        sock.sendall(b"\r\n")
        sock.sendall(b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(f)[2] == b"Hello, World!"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"HEAD /test HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"HEAD /test HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", 413),
        (b"HEAD /test HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"HEAD /nothing HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"HEAD /test HTTP/1.1\r\nHost: x\r\nX: " + b"x" * 20000 + b"\r\n\r\n", 431),
    ],
)
def test_answers_to_head_have_no_body(make_server: Any, raw: bytes, status: int) -> None:
    srv = make_server()
    with connect(srv.port) as sock:
        sock.sendall(raw + b"GET /test HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = read_to_close(sock)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status)
    assert b"\r\nContent-Length: " in head
    # Nothing follows the head but, for an answer that keeps the connection, the next response.
    assert rest == b"" or rest.startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("blank_line_sent", [0, 1, 2, 3, 4], ids=lambda n: f"{n}-bytes-first")
def test_the_head_limit_does_not_depend_on_where_the_head_is_split(
    make_server: Any, blank_line_sent: int
) -> None:
    """A head of exactly ``max_head`` bytes is served however TCP splits it: before, one whose
    first read ended inside its blank line ("...\r\n\r", the rest later) counted those bytes
    as head and was refused 431, while the same bytes in one read were served. One byte more
    is refused either way."""
    srv = make_server()
    limit = srv.http.max_head
    base = b"GET /test HTTP/1.1\r\nHost: x\r\nX: "
    for size, status in ((limit, 200), (limit + 1, 431)):
        head = base + b"v" * (size - len(base))
        data = head + b"\r\n\r\n"
        with connect(srv.port) as sock:
            sock.sendall(data[: size + blank_line_sent])
            time.sleep(0.1)  # the server reads the first part alone before the rest comes
            with contextlib.suppress(OSError):  # a 431 may come before the rest is sent
                sock.sendall(data[size + blank_line_sent :])
            assert read_response(sock.makefile("rb"))[0] == status, size


def test_no_100_continue_for_http10(make_server: Any) -> None:
    srv = make_server()
    srv.http.route("/echo", _echo)
    with connect(srv.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.0\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc")
        data = read_to_close(sock)
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b" 100 " not in data


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"POST /nothing HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n", 404),
        (b"POST /test HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n", 413),
        (b"PUT /nothing HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n", 404),
    ],
)
def test_no_100_continue_for_a_request_refused_anyway(
    make_server: Any, raw: bytes, status: int
) -> None:
    srv = make_server()
    with connect(srv.port) as sock:
        sock.sendall(raw + b"Expect: 100-continue\r\n\r\n")  # and no body: the client waits
        data = read_to_close(sock)
    assert data.startswith(b"HTTP/1.1 %d " % status)
    assert b"Connection: close\r\n" in data
    assert b" 100 " not in data


def test_100_continue_still_sent_when_the_body_is_wanted(make_server: Any) -> None:
    srv = make_server()
    srv.http.route("/echo", _echo)
    with connect(srv.port) as sock:
        f = sock.makefile("rb")
        sock.sendall(
            b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
        )
        assert f.readline().startswith(b"HTTP/1.1 100 ")
        assert f.readline() == b"\r\n"
        sock.sendall(b"ok")
        assert read_response(f)[2] == b"PUT ok"


@pytest.mark.parametrize(
    "chunk",
    [
        b"3;a\x00b\r\nabc\r\n0\r\n\r\n",
        b"3;a=\x7f\r\nabc\r\n0\r\n\r\n",
        b"3;\r\nabc\r\n0\r\n\r\n",
        b"3\r\nabc\r\n0\r\nT\x00: 1\r\n\r\n",
    ],
)
def test_control_bytes_in_chunk_extensions_and_trailers_are_400(
    make_server: Any, chunk: bytes
) -> None:
    srv = make_server()
    srv.http.route("/echo", _echo)
    with connect(srv.port) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk
        )
        status, headers, _ = read_response(sock.makefile("rb"))
        assert (status, headers["connection"]) == (400, "close")
        assert is_closed_by_peer(sock)


def test_valid_chunk_extensions_and_trailers_are_served(make_server: Any) -> None:
    srv = make_server()
    srv.http.route("/echo", _echo)
    with connect(srv.port) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'3;a=1;b="x y"\r\nabc\r\n0\r\nT: 1\r\n\r\n'
        )
        assert read_response(sock.makefile("rb"))[2] == b"POST abc"


def test_only_empty_lines_are_ended_by_the_header_timeout(make_server: Any) -> None:
    srv = make_server(header_timeout=0.3, sweep_interval=0.05)
    with connect(srv.port) as sock:
        sock.sendall(b"\r\n" * 100)
        assert is_closed_by_peer(sock, 5)

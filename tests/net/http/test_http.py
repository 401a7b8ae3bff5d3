"""The HTTP/1.1 server with real clients: keep-alive, pipelining, bodies, files, errors."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import os
import re
from typing import Any

import pytest
from rawhttp import connect, exchange, is_closed_by_peer, read_response

from poolalloc.net.http import server as http_server
from poolalloc.net.http.parser import Request
from poolalloc.net.http.server import Response

pytestmark = [pytest.mark.net, pytest.mark.timeout(60)]


@pytest.fixture
def root(tmp_path: Any) -> Any:
    (tmp_path / "small.txt").write_bytes(b"small file\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "index.html").write_bytes(b"<p>index</p>")
    (tmp_path / "empty.bin").write_bytes(b"")
    return tmp_path


def echo(req: Request) -> Response:
    return Response(body=req.method.encode() + b" " + req.body)


def test_get_test_keep_alive_with_http_client(make_server: Any) -> None:
    srv = make_server()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    for _ in range(20):
        conn.request("GET", "/test")
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"Hello, World!")
        assert resp.getheader("Connection") is None  # keep-alive is the 1.1 default
    conn.close()
    metrics = srv.call(srv.http.metrics)
    assert metrics["connections_total"] == 1
    assert metrics["requests_total"] == 20


def test_pipelined_requests_are_answered_in_order(make_server: Any, root: Any) -> None:
    srv = make_server(root=root)
    raw = (
        b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n"
        b"HEAD /small.txt HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /sub/ HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    with connect(srv.port) as sock:
        sock.sendall(raw)
        f = sock.makefile("rb")
        got = [read_response(f, m) for m in ("GET", "GET", "HEAD", "GET")]
    assert [g[0] for g in got] == [200, 200, 200, 200]
    assert got[0][2] == b"Hello, World!"
    assert got[1][2] == b"small file\n"
    assert got[2][1]["content-length"] == "11"
    assert got[3][2] == b"<p>index</p>"


def test_request_split_across_reads(make_server: Any) -> None:
    srv = make_server()
    with connect(srv.port) as sock:
        for piece in (b"GE", b"T /te", b"st HTTP/1.1\r\nHo", b"st: x\r", b"\n\r", b"\n"):
            sock.sendall(piece)
        assert read_response(sock.makefile("rb"))[2] == b"Hello, World!"


def test_content_length_and_chunked_bodies(make_server: Any) -> None:
    srv = make_server()
    srv.http.route("/echo", echo)
    chunked = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\nabcd\r\n3;ext=1\r\nefg\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    fixed = b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    got = exchange(srv.port, chunked + fixed, 2)
    assert got[0][2] == b"POST abcdefg"
    assert got[1][2] == b"PUT hello"


def test_expect_100_continue(make_server: Any) -> None:
    srv = make_server()
    srv.http.route("/echo", echo)
    with connect(srv.port) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
        )
        f = sock.makefile("rb")
        assert f.readline().startswith(b"HTTP/1.1 100")
        f.readline()
        sock.sendall(b"abc")
        assert read_response(f)[2] == b"POST abc"


def test_connection_close_and_http10(make_server: Any) -> None:
    srv = make_server()
    for raw in (
        b"GET /test HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /test HTTP/1.0\r\n\r\n",
    ):
        with connect(srv.port) as sock:
            sock.sendall(raw)
            status, headers, body = read_response(sock.makefile("rb"))
            assert (status, body, headers.get("connection")) == (200, b"Hello, World!", "close")
            assert is_closed_by_peer(sock)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /test HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
        (b"GET /test HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (
            b"GET /test HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (b"GET /test HTTP/2.0\r\n\r\n", 505),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET /test HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"b" * 20000 + b"\r\n\r\n", 431),
        (b"POST /test HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", 413),
        (b"POST /test HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n", 400),
        (b"POST /test HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    ],
)
def test_bad_requests_get_status_and_clean_close(make_server: Any, raw: bytes, status: int) -> None:
    srv = make_server()
    with connect(srv.port) as sock:
        sock.sendall(raw)
        got, headers, _ = read_response(sock.makefile("rb"))
        assert got == status
        assert headers["connection"] == "close"
        assert is_closed_by_peer(sock)
    assert (
        exchange(srv.port, b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n")[0][0] == 200
    )  # still serving


def test_chunked_body_over_limit_is_413(make_server: Any) -> None:
    srv = make_server(max_body=10)
    srv.http.route("/echo", echo)
    raw = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    raw += b"8\r\n12345678\r\n8\r\n12345678\r\n"
    assert exchange(srv.port, raw)[0][0] == 413


def test_static_files_and_traversal(make_server: Any, root: Any) -> None:
    srv = make_server(root=root)
    (root.parent / "secret.txt").write_bytes(b"secret")
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    for path, status, body in [
        ("/small.txt", 200, b"small file\n"),
        ("/empty.bin", 200, b""),
        ("/missing", 404, None),
        ("/../secret.txt", 404, None),
        ("/%2e%2e/secret.txt", 404, None),
        ("/sub", 301, None),
        ("/sub/", 200, b"<p>index</p>"),
    ]:
        conn.request("GET", path)
        resp = conn.getresponse()
        data = resp.read()
        assert resp.status == status, path
        if body is not None:
            assert data == body
    conn.request("DELETE", "/small.txt")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 405
    assert "GET" in resp.getheader("Allow", "")
    conn.close()


def test_big_upload_then_download(make_server: Any, root: Any) -> None:
    srv = make_server(root=root, uploads=True)
    data = os.urandom(8 << 20)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
    conn.request("PUT", "/big.bin", body=data)
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 201
    assert (root / "big.bin").read_bytes() == data
    assert not [p for p in os.listdir(root) if ".part-" in p]
    conn.request("GET", "/big.bin")
    resp = conn.getresponse()
    assert resp.read() == data
    conn.request("POST", "/chunky.bin", body=iter([data[:100_000], data[100_000:300_000]]))
    resp = conn.getresponse()  # an iterable body is sent chunked by http.client
    resp.read()
    assert resp.status == 201
    assert (root / "chunky.bin").read_bytes() == data[:300_000]
    conn.request("PUT", "/nodir/x.bin", body=b"x")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 409  # RFC 4918 9.7.1 (test_upload_into_a_missing_directory_...)
    conn.close()
    for target, status in (("/sub", 409), ("/sub/", 409)):  # a directory's name is taken
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
        conn.request("PUT", target, body=b"data")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == status
        conn.close()
    assert (root / "sub").is_dir()
    assert not [p for p in os.listdir(root) if ".part-" in p]


def test_a_route_keeps_the_body_limit_when_uploads_are_on(make_server: Any, root: Any) -> None:
    """A route's body is read into memory: with uploads on it is still bounded by max_body
    (the upload limit is for bodies streamed to a file under root)."""
    srv = make_server(root=root, uploads=True, max_body=64 * 1024)
    srv.call(srv.http.route, "/echo", lambda req: Response(body=req.body))
    with connect(srv.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        status, _, _ = read_response(sock.makefile("rb"), "POST")
    assert status == 413
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
    conn.request("POST", "/echo", body=b"y" * 1000)  # within the limit: answered by the route
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (200, b"y" * 1000)
    conn.request("PUT", "/file.bin", body=b"z" * 100_000)  # not a route: an upload, as before
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 201
    conn.close()
    assert (root / "file.bin").read_bytes() == b"z" * 100_000


def test_put_creates_with_201_and_replaces_with_204(make_server: Any, root: Any) -> None:
    """RFC 9110 9.3.4: 201 Created only when the target did not exist; replacing an existing
    file answers 204 No Content (no body), and the file then holds the new content. An upload
    by POST to an existing name is answered the same way (nothing was created)."""
    srv = make_server(root=root, uploads=True)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
    answers = []
    for method, body in (("PUT", b"first"), ("PUT", b"second, longer"), ("POST", b"third")):
        conn.request(method, "/new.txt", body=body)
        resp = conn.getresponse()
        answers.append((resp.status, resp.read(), resp.getheader("Content-Length")))
        assert (root / "new.txt").read_bytes() == body
    conn.request("POST", "/other.txt", body=b"x")
    resp = conn.getresponse()
    answers.append((resp.status, resp.read(), resp.getheader("Content-Length")))
    conn.close()
    assert answers == [
        (201, b"created\n", "8"),
        (204, b"", None),
        (204, b"", None),
        (201, b"created\n", "8"),
    ]
    assert not [p for p in os.listdir(root) if ".part-" in p]


def test_a_partial_put_is_refused_and_the_file_kept(make_server: Any, root: Any) -> None:
    """RFC 9110 14.5: a server without partial PUT answers a PUT with Content-Range 400; the
    fragment must not replace the whole file."""
    srv = make_server(root=root, uploads=True)
    (root / "doc.txt").write_bytes(b"0123456789")
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
    conn.request("PUT", "/doc.txt", body=b"HELLO", headers={"Content-Range": "bytes 0-4/10"})
    resp = conn.getresponse()
    assert resp.status == 400
    assert b"Content-Range" in resp.read()
    conn.close()
    assert (root / "doc.txt").read_bytes() == b"0123456789"
    assert not [p for p in os.listdir(root) if ".part-" in p]


def test_request_targets_that_name_no_file_are_refused(make_server: Any, root: Any) -> None:
    """A fragment (never part of a request target), a broken percent-escape and a name longer
    than the file system takes are the client's errors, for reads and uploads alike; none of
    them becomes a file of that literal name."""
    srv = make_server(root=root, uploads=True)
    before = sorted(os.listdir(root))
    long_name = "/" + "n" * 300
    cases = [("/f.txt#sec", 400), ("/%zz", 400), ("/ends%", 400), ("/%4", 400), (long_name, 414)]
    for method in ("GET", "PUT"):
        for target, status in cases:
            with connect(srv.port) as sock:
                sock.sendall(
                    f"{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx".encode()
                )
                got = read_response(sock.makefile("rb"))[0]
            assert got == status, (method, target)
    assert sorted(os.listdir(root)) == before


def test_an_empty_put_stores_an_empty_file(make_server: Any, root: Any) -> None:
    """A PUT with no body stores an empty file (201 when new, 204 when it replaced one)."""
    srv = make_server(root=root, uploads=True)
    (root / "full.txt").write_bytes(b"old content")
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
    answers = []
    for target in ("/empty.txt", "/empty.txt", "/full.txt"):
        conn.request("PUT", target, body=b"")
        resp = conn.getresponse()
        answers.append((resp.status, resp.read()))
    conn.close()
    assert answers == [(201, b"created\n"), (204, b""), (204, b"")]
    assert (root / "empty.txt").read_bytes() == b""
    assert (root / "full.txt").read_bytes() == b""
    assert not [p for p in os.listdir(root) if ".part-" in p]


def test_an_upload_without_framing_is_refused_and_the_file_kept(
    make_server: Any, root: Any
) -> None:
    """RFC 9110 15.5.12: a PUT or POST with neither Content-Length nor Transfer-Encoding is
    answered 411 Length Required; the existing file is not emptied, no new one appears, and
    the connection serves the next request."""
    srv = make_server(root=root, uploads=True)
    (root / "full.txt").write_bytes(b"old content")
    before = sorted(os.listdir(root))
    with connect(srv.port) as sock:
        f = sock.makefile("rb")
        for method in ("PUT", "POST"):
            for target in ("/full.txt", "/new.txt"):
                sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                status, _, body = read_response(f, method)
                assert (status, method, target) == (411, method, target)
                assert b"length required" in body
        sock.sendall(b"GET /full.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(f, "GET")[::2] == (200, b"old content")
    assert (root / "full.txt").read_bytes() == b"old content"
    assert sorted(os.listdir(root)) == before


def test_an_upload_evaluates_its_preconditions(make_server: Any, root: Any) -> None:
    """RFC 9110 13.1.1-13.1.4: an upload with a failing If-Match, If-None-Match or
    If-Unmodified-Since is answered 412 before its body is asked for, and the file is kept:
    ``If-None-Match: *`` creates only, ``If-Match`` replaces only the version the client has
    (a lost update otherwise: both were ignored and the file replaced)."""
    srv = make_server(root=root, uploads=True)
    (root / "full.txt").write_bytes(b"old content")
    with connect(srv.port) as sock:
        f = sock.makefile("rb")
        sock.sendall(b"GET /full.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = read_response(f, "GET")
    tag = headers["etag"]
    refused = [
        ("PUT", "/full.txt", "If-None-Match: *"),
        ("POST", "/full.txt", f"If-None-Match: {tag}"),
        ("PUT", "/full.txt", f"If-None-Match: W/{tag}"),  # weak comparison
        ("PUT", "/full.txt", 'If-Match: "other"'),
        ("PUT", "/full.txt", f"If-Match: W/{tag}"),  # strong comparison: never a weak tag
        ("PUT", "/new.txt", "If-Match: *"),  # no current file
        ("PUT", "/full.txt", "If-Unmodified-Since: Thu, 01 Jan 1970 00:00:00 GMT"),
    ]
    for method, target, field in refused:
        # Expect: 100-continue and no body sent: the 412 comes at once, not a 100
        head = f"{method} {target} HTTP/1.1\r\nHost: x\r\n{field}\r\nContent-Length: 3\r\n"
        with connect(srv.port) as sock:
            sock.sendall(head.encode() + b"Expect: 100-continue\r\n\r\n")
            status, headers, _ = read_response(sock.makefile("rb"), method)
        assert (status, headers.get("connection")) == (412, "close"), field
    assert (root / "full.txt").read_bytes() == b"old content"
    assert not (root / "new.txt").exists()
    allowed = [
        ("PUT", "/new.txt", "If-None-Match: *", 201),
        ("PUT", "/full.txt", f"If-Match: {tag}", 204),
        ("POST", "/full.txt", "If-Match: *", 204),
        ("PUT", "/full.txt", 'If-None-Match: "other"', 204),
        ("PUT", "/full.txt", "If-Unmodified-Since: Fri, 01 Jan 2100 00:00:00 GMT", 204),
    ]
    for method, target, field, expected in allowed:
        head = f"{method} {target} HTTP/1.1\r\nHost: x\r\n{field}\r\nContent-Length: 3\r\n"
        with connect(srv.port) as sock:
            sock.sendall(head.encode() + b"\r\nnew")
            assert read_response(sock.makefile("rb"), method)[0] == expected, field
    assert (root / "full.txt").read_bytes() == (root / "new.txt").read_bytes() == b"new"


@pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed-file", "part-name"])
def test_a_create_only_upload_does_not_replace_a_file_that_appeared_meanwhile(
    make_server: Any, root: Any, monkeypatch: pytest.MonkeyPatch, unnamed: bool
) -> None:
    """``If-None-Match: *`` holds when the body begins; a file that takes the name while the
    body comes is not replaced: the name is claimed when the upload is complete (412 then)."""
    monkeypatch.setattr(http_server, "_UNNAMED", http_server._UNNAMED and unnamed)
    srv = make_server(root=root, uploads=True)
    with connect(srv.port) as sock:
        sock.sendall(
            b"PUT /race.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: *\r\nContent-Length: 6\r\n\r\nupl"
        )
        with contextlib.suppress(TimeoutError):
            sock.settimeout(0.3)
            assert sock.recv(1) == b"", "answered before the body ended"
        (root / "race.txt").write_bytes(b"theirs")
        sock.settimeout(10)
        sock.sendall(b"oad")
        status, _, _ = read_response(sock.makefile("rb"), "PUT")
    assert status == 412
    assert (root / "race.txt").read_bytes() == b"theirs"
    assert sorted(os.listdir(root)) == ["empty.bin", "race.txt", "small.txt", "sub"]


def test_an_upload_stored_is_answered_when_its_part_name_cannot_be_removed(
    make_server: Any, root: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Once the upload has its name, a failure to remove the temporary part name does not
    turn the answer into an error: the client is told the file was stored (it was), and the
    stray name is counted and removed by a later retry. An upload refused for its name is
    answered 409 all the same."""
    # part names are what a filesystem without unnamed files (O_TMPFILE) uses, and what
    # replacing an existing file uses for an instant
    monkeypatch.setattr(http_server, "_open_unnamed", lambda directory: None)
    srv = make_server(root=root, uploads=True)
    real_unlink = os.unlink

    def failing_unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        if ".part-" in os.fspath(path) and os.path.lexists(path):
            raise PermissionError(1, "Operation not permitted", os.fspath(path))
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", failing_unlink)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
    answers = []
    for target, body in (("/kept.txt", b"first"), ("/kept.txt", b"second"), ("/sub", b"x")):
        conn.request("PUT", target, body=body)
        resp = conn.getresponse()
        answers.append((resp.status, resp.read()[:3]))
        if resp.status >= 400:
            conn.close()  # an upload refused is answered with Connection: close
    assert (root / "kept.txt").read_bytes() == b"second"
    metrics = srv.call(srv.http.metrics)
    monkeypatch.undo()
    conn.close()
    # The first upload claimed a new name by a hard link, whose part name then stayed; the
    # second replaced the file by a rename, which leaves no part name behind; the third could
    # not take a directory's name, and its part name stayed too.
    assert answers == [(201, b"cre"), (204, b""), (409, b"409")]
    # each is one warning line (it was an ERROR saying "unhandled exception", the exception
    # attached), naming the part and what becomes of it
    stray = [r for r in caplog.records if r.name == "poolalloc.net.epoll.reactor"]
    assert [(r.levelno, r.exc_info) for r in stray] == [(logging.WARNING, None)] * 2
    assert all(".part-" in r.getMessage() and "retried" in r.getMessage() for r in stray)
    assert metrics["upload_leftovers_total"] == 2
    assert metrics["upload_leftovers_pending"] == 2
    _wait_for(lambda: srv.call(srv.http.metrics)["upload_leftovers_pending"] == 0)
    assert not [p for p in os.listdir(root) if ".part-" in p]
    assert (root / "kept.txt").read_bytes() == b"second"


def _upload_fd_path(root: Any) -> str | None:
    """Where this process has a file open under ``root`` (the server runs in this process)."""
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(f"{root}/"):
                return target
    return None


@pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed", "part-name"])
def test_an_upload_cannot_be_named_by_a_request_while_it_is_written(
    make_server: Any, root: Any, monkeypatch: pytest.MonkeyPatch, unnamed: bool
) -> None:
    """A half-written upload had a predictable name in the served root (``NAME.part-PID-N``):
    a GET served the partial body, and a PUT to that name replaced it, so the uploader was told
    201 while the file held the other client's bytes. Now the body has no name until it is
    complete; where the filesystem cannot make unnamed files, a hidden, random one."""
    if not unnamed:
        monkeypatch.setattr(http_server, "_open_unnamed", lambda directory: None)
    elif (fd := http_server._open_unnamed(str(root))) is None:
        pytest.skip(f"no unnamed files (O_TMPFILE) on the filesystem of {root}")
    else:
        os.close(fd)
    srv = make_server(root=root, uploads=True)
    before = sorted(os.listdir(root))
    with connect(srv.port) as sock:
        sock.sendall(b"PUT /victim.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n0123456789")
        _wait_for(lambda: _upload_fd_path(root) is not None)
        added = sorted(set(os.listdir(root)) - set(before))
        if unnamed:
            assert added == []
            assert (_upload_fd_path(root) or "").endswith(" (deleted)")
        else:
            assert len(added) == 1
            assert re.fullmatch(r"\.victim\.txt\.part-[0-9a-f]{16}", added[0])
        sock.sendall(b"abcdefghij")
        status, _, _ = read_response(sock.makefile("rb"), "PUT")
    assert status == 201
    assert (root / "victim.txt").read_bytes() == b"0123456789abcdefghij"
    assert sorted(os.listdir(root)) == sorted([*before, "victim.txt"])


def test_an_unnamed_upload_whose_link_is_refused_is_stored_all_the_same(
    make_server: Any, root: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where an unnamed file can be made but not named (a security module, a sandbox's /proc
    refuses the link), the body is copied to a part name and renamed into place: stored, not
    a 409; later uploads take part names from the start."""
    monkeypatch.setattr(http_server, "_UNNAMED", http_server._UNNAMED)  # restored afterwards
    if (fd := http_server._open_unnamed(str(root))) is None:
        pytest.skip(f"no unnamed files (O_TMPFILE) on the filesystem of {root}")
    os.close(fd)

    def refused(fd: int, path: str) -> None:
        raise PermissionError(1, "Operation not permitted", path)

    monkeypatch.setattr(http_server, "_link_fd", refused)
    srv = make_server(root=root, uploads=True)
    before = sorted(os.listdir(root))
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
    answers = []
    for body in (b"first body", b"second"):
        conn.request("PUT", "/refused.txt", body=body)
        resp = conn.getresponse()
        answers.append((resp.status, resp.read()[:3]))
    conn.close()
    assert answers == [(201, b"cre"), (204, b"")]
    assert (root / "refused.txt").read_bytes() == b"second"
    assert sorted(os.listdir(root)) == sorted([*before, "refused.txt"])
    assert http_server._UNNAMED is False


def test_an_unnamed_upload_over_an_existing_file_whose_link_is_refused_is_stored(
    make_server: Any, root: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel reports an existing name (EEXIST) before it refuses a link (EPERM), so an
    upload replacing a file went the replace path, whose link was refused too: a 409. Now
    copied to a part name and renamed over the old file (204)."""
    monkeypatch.setattr(http_server, "_UNNAMED", http_server._UNNAMED)  # restored afterwards
    if (fd := http_server._open_unnamed(str(root))) is None:
        pytest.skip(f"no unnamed files (O_TMPFILE) on the filesystem of {root}")
    os.close(fd)

    def refused(fd: int, path: str) -> None:
        if os.path.lexists(path):
            raise FileExistsError(17, "File exists", path)
        raise PermissionError(1, "Operation not permitted", path)

    monkeypatch.setattr(http_server, "_link_fd", refused)
    (root / "old.txt").write_bytes(b"old")
    srv = make_server(root=root, uploads=True)
    before = sorted(os.listdir(root))
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
    conn.request("PUT", "/old.txt", body=b"new body")
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (204, b"")
    conn.close()
    assert (root / "old.txt").read_bytes() == b"new body"
    assert sorted(os.listdir(root)) == before
    assert http_server._UNNAMED is False


def test_upload_cut_short_leaves_no_file(make_server: Any, root: Any) -> None:
    srv = make_server(root=root, uploads=True)
    with connect(srv.port) as sock:
        sock.sendall(
            b"PUT /partial.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 5000
        )
    srv.call(lambda: None)
    _wait_for(lambda: srv.call(lambda: len(srv.http.tcp.connections)) == 0)
    assert not os.path.exists(root / "partial.bin")
    assert not [p for p in os.listdir(root) if ".part-" in p]


@pytest.mark.parametrize(
    "case",
    [
        ("/no/such/dir/f.txt", b"409 parent directory does not exist\n"),
        ("/afile/f.txt", b"409 parent is not a directory\n"),
    ],
)
@pytest.mark.parametrize("method", ["PUT", "POST"])
@pytest.mark.parametrize("length", [3, 0])
def test_upload_into_a_missing_directory_is_a_conflict(
    make_server: Any, root: Any, case: tuple[str, bytes], method: str, length: int
) -> None:
    """RFC 4918 9.7.1: a PUT whose parent collection does not exist MUST fail with 409
    Conflict (Apache mod_dav's answer; nginx's dav module answers 500 and logs it as
    critical): the client can resolve it, by making the directory. It was a 404, which says
    the resource is missing, for a request that creates it. Answered before the body is
    asked for (with a body unread, the connection then closes, as for every refusal before
    the body); nothing is created."""
    target, why = case
    (root / "afile").write_bytes(b"x")
    before = sorted(os.listdir(root))
    srv = make_server(root=root, uploads=True)
    raw = f"{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n"
    raw += "abc"[:length] + "GET /test HTTP/1.1\r\nHost: x\r\n\r\n"
    answers = exchange(srv.port, raw.encode(), 1 if length else 2)
    status, headers, answer = answers[0]
    assert (status, answer) == (409, why)
    if length:
        assert headers["connection"] == "close"
    else:  # the request ended at its head: the connection goes on
        assert answers[1][0] == 200
    assert sorted(os.listdir(root)) == before


def test_asyncio_streams_client(make_server: Any) -> None:
    srv = make_server()

    async def client() -> list[bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        bodies = []
        for _ in range(5):
            writer.write(b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            bodies.append(await reader.readexactly(length))
        writer.close()
        await writer.wait_closed()
        return bodies

    async def many() -> list[list[bytes]]:
        return await asyncio.gather(*(client() for _ in range(20)))

    results = asyncio.run(many())
    assert all(b == b"Hello, World!" for bodies in results for b in bodies)


def _wait_for(cond: Any, timeout: float = 5.0) -> None:
    import time

    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.01)

"""A request body has a time limit, pushed back by a minimum rate (a slowloris on the body).

Every test takes ``make_server``, so tests/net/uring/test_net_suites_on_uring.py runs them on
io_uring too.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from poolalloc.net.epoll.reactor import Reactor
from poolalloc.net.http.server import HttpServer, Response

pytestmark = [pytest.mark.net, pytest.mark.timeout(60)]

#: The idle limit is far above the gaps between the trickled bytes: only the body's own limit
#: can end these requests. A fast sweep makes the deadlines exact to 50 ms.
OPTIONS: dict[str, Any] = {"idle_timeout": 30.0, "sweep_interval": 0.05}


def _trickle(sock: socket.socket, head: bytes, pieces: list[bytes], gap: float) -> bytes:
    """Send ``head``, then each piece ``gap`` seconds apart while no answer came; the answer
    (up to EOF) and when it began, in seconds from the head."""
    sock.sendall(head)
    began = time.monotonic()
    sock.settimeout(gap)
    answer = b""
    for piece in pieces:
        try:
            answer = sock.recv(65536)
        except TimeoutError:
            sock.sendall(piece)
            continue
        break
    sock.settimeout(10)
    if not answer:
        answer = sock.recv(65536)
    took = time.monotonic() - began
    while chunk := sock.recv(65536):
        answer += chunk
    return answer + f"\n[{took:.2f}]".encode()


def _took(answer: bytes) -> float:
    return float(answer.rsplit(b"[", 1)[1].rstrip(b"]"))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_trickled_in_is_answered_408(make_server: Any, chunked: bool) -> None:
    """A byte every 0.2 s (each gap far under the idle limit) is cut at ``body_timeout`` (plus
    what the bytes earned at ``body_min_rate``): ``408`` with ``Connection: close``, then EOF.
    It was never ended: a handful of such clients held connection slots forever."""
    srv = make_server(body_timeout=1.0, body_min_rate=500, **OPTIONS)
    srv.http.route("/echo", lambda req: Response(body=req.body))
    if chunked:
        head = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        pieces = [b"1\r\nx\r\n"] * 100
    else:
        head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
        pieces = [b"x"] * 99
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        answer = _trickle(sock, head, pieces, 0.2)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    assert b"\r\nConnection: close\r\n" in answer
    assert 0.9 < _took(answer) < 3, answer


def test_an_upload_trickled_in_is_answered_408_and_leaves_no_file(
    make_server: Any, tmp_path: Path
) -> None:
    srv = make_server(root=str(tmp_path), uploads=True, body_timeout=1.0, **OPTIONS)
    head = b"PUT /slow.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        answer = _trickle(sock, head, [b"x"] * 999, 0.2)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    assert 0.9 < _took(answer) < 3, answer
    assert list(tmp_path.iterdir()) == []  # no file, no part name


def test_a_body_sent_at_the_minimum_rate_is_taken(make_server: Any) -> None:
    """The limit grows a second per ``body_min_rate`` bytes received: a body that takes longer
    than ``body_timeout`` but comes faster than that rate is served. (Each piece is sent at
    least 1.4 s before the deadline it beats: a loaded machine may stall the client.)"""
    srv = make_server(body_timeout=2.0, body_min_rate=1000, **OPTIONS)
    srv.http.route("/echo", lambda req: Response(body=str(len(req.body)).encode()))
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        answer = _trickle(sock, head, [b"x" * 1000] * 4 + [b""], 0.6)  # 2.4 s, 1,667 B/s
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
    assert b"\r\n\r\n4000\n[" in answer
    assert _took(answer) > 2.0  # longer than body_timeout


def test_a_keep_alive_connection_after_a_body_has_no_body_deadline(make_server: Any) -> None:
    """The body's deadline ends with the body: the connection then waits for its next request
    under the idle limit alone."""
    srv = make_server(body_timeout=0.5, **OPTIONS)
    srv.http.route("/echo", lambda req: Response(body=req.body))
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
        assert sock.recv(65536).endswith(b"\r\n\r\nok")
        time.sleep(1.5)
        sock.sendall(b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")


def test_bad_body_limits_are_refused(buffer_pool: Any) -> None:
    with Reactor() as reactor:
        for bad in ({"body_timeout": 0}, {"body_timeout": float("nan")},
                    {"body_min_rate": -1}, {"body_min_rate": float("inf")}):  # fmt: skip
            with pytest.raises(ValueError, match=next(iter(bad))):
                HttpServer(reactor, buffer_pool=buffer_pool, **bad)


@pytest.mark.parametrize("engine", ["epoll", "uring"])
def test_serve_takes_the_body_limits_from_its_command_line(tmp_path: Path, engine: str) -> None:
    """``poolalloc serve --uploads --body-timeout 1``: a chunked upload trickled in is
    answered 408 after about a second, though the idle limit is 30 s."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [sys.executable, "-m", "poolalloc.cli", "serve", "--port", str(port), "--engine"]
    cmd += [engine, "--root", str(tmp_path), "--uploads", "--idle-timeout", "30"]
    cmd += ["--body-timeout", "1", "--body-min-rate", "100"]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        end = time.monotonic() + 20
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < end
                assert proc.poll() is None
                time.sleep(0.05)
        with sock:
            head = b"PUT /up.bin HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            answer = _trickle(sock, head, [b"1\r\nx\r\n"] * 100, 0.2)
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
        assert 0.9 < _took(answer) < 4, answer
        assert list(tmp_path.iterdir()) == []
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0

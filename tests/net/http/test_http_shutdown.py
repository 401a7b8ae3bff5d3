"""``HttpServer.shutdown``: a graceful stop lets the answers under way end whole.

Every test takes ``make_server``, so tests/net/uring/test_net_suites_on_uring.py runs them on
io_uring too. The signals of ``poolalloc serve`` are tested in test_serve_shutdown.py.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from poolalloc.net.http.server import Response

pytestmark = [pytest.mark.net, pytest.mark.timeout(60)]

SIZE = 32 << 20  # far more than the kernel's socket buffers hold: most of it is unsent


def _big_file(tmp_path: Path) -> bytes:
    data = bytes(range(256)) * (SIZE // 256)
    (tmp_path / "big.bin").write_bytes(data)
    return data


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # the answer waits in the server
    return sock


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before the head: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _read_exactly(sock: socket.socket, count: int, got: bytes = b"") -> bytes:
    parts = [got]
    have = len(got)
    while have < count:
        chunk = sock.recv(min(1 << 20, count - have))
        if not chunk:
            break
        parts.append(chunk)
        have += len(chunk)
    return b"".join(parts)


def _shutdown(srv: Any, timeout: float = 30.0) -> threading.Event:
    done = threading.Event()
    srv.call(srv.http.shutdown, timeout, done.set)
    return done


def test_shutdown_lets_a_download_in_flight_end_whole(make_server: Any, tmp_path: Path) -> None:
    """A download under way when the stop begins gets its whole body, then a clean EOF (it was
    reset: ``close()`` aborted every connection); an idle keep-alive connection gets a FIN at
    once; a new client is refused; ``done`` is called once the connections are gone."""
    data = _big_file(tmp_path)
    srv = make_server(root=str(tmp_path))
    with _connect(srv.port) as fetching, _connect(srv.port) as idle:
        idle.sendall(b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n")
        head, rest = _read_head(idle)
        assert head.startswith(b"HTTP/1.1 200"), head
        fetching.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        head, rest = _read_head(fetching)
        assert head.startswith(b"HTTP/1.1 200"), head
        rest = _read_exactly(fetching, 1 << 20, rest)  # under way: most of it still unsent
        done = _shutdown(srv)
        idle.settimeout(5)
        assert idle.recv(100) == b""  # a FIN, not a reset, and no wait for the download
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", srv.port), timeout=5).close()
        assert not done.is_set()  # the download is still going
        body = _read_exactly(fetching, SIZE, rest)
        assert len(body) == SIZE
        assert body == data
        assert fetching.recv(100) == b""  # then the server closes it
    assert done.wait(10)


def test_shutdown_answers_a_request_being_read_with_connection_close(
    make_server: Any, tmp_path: Path
) -> None:
    """A request whose head (or body) is still coming when the stop begins is answered, with
    ``Connection: close``, and its connection closed; nothing waits for the idle timeout."""
    srv = make_server(root=str(tmp_path))
    srv.http.route("/echo", lambda req: Response(body=req.body))
    with _connect(srv.port) as head_client, _connect(srv.port) as body_client:
        head_client.sendall(b"GET /test HTTP/1.1\r\nHost: x\r\n")
        body_client.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
        time.sleep(0.2)
        done = _shutdown(srv)
        time.sleep(0.2)
        head_client.sendall(b"\r\n")
        body_client.sendall(b"cd")
        for client, body in ((head_client, b"Hello, World!"), (body_client, b"abcd")):
            client.settimeout(5)
            head, rest = _read_head(client)
            assert head.startswith(b"HTTP/1.1 200"), head
            assert b"\r\nConnection: close" in head
            assert _read_exactly(client, len(body) + 1, rest) == body  # then EOF
    assert done.wait(10)


def test_shutdown_resets_what_is_left_after_its_timeout(make_server: Any, tmp_path: Path) -> None:
    """A client that stops reading holds the stop for ``timeout`` seconds, no longer: its
    connection is then reset and ``done`` is called."""
    _big_file(tmp_path)
    srv = make_server(root=str(tmp_path))
    with _connect(srv.port) as stalled:
        stalled.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        _read_head(stalled)
        began = time.monotonic()
        done = _shutdown(srv, 0.5)
        assert done.wait(10)
        took = time.monotonic() - began
        assert 0.4 < took < 5
        with pytest.raises(ConnectionResetError):
            _read_exactly(stalled, SIZE + 1)
    assert srv.call(lambda: len(srv.http.tcp.connections)) == 0


def test_shutdown_refuses_a_bad_timeout(make_server: Any) -> None:
    srv = make_server()
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="timeout"):
            srv.http.shutdown(bad)  # refused before it changes anything

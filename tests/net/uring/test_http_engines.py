"""The HTTP server on both engines: the same requests, faults and balance checks for each."""

from __future__ import annotations

import contextlib
import gc
import http.client
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import budget
import pytest
from rawhttp import read_to_close

from poolalloc.buffers import BufferPool
from poolalloc.net.epoll.reactor import Reactor
from poolalloc.net.epoll.server import TcpServer
from poolalloc.net.http.serve import _metrics_handler
from poolalloc.net.http.server import HttpServer
from poolalloc.net.uring.proactor import Proactor, available

pytestmark = [pytest.mark.net, pytest.mark.timeout(60)]
SECONDS = budget.seconds()


def _engines() -> list[Any]:
    ok, reason = available()
    skip = pytest.mark.skip(reason=f"io_uring unavailable: {reason}")
    return ["epoll", pytest.param("uring", marks=[pytest.mark.uring] + ([] if ok else [skip]))]


class Served:
    """An HttpServer on the chosen engine, its loop in a background thread."""

    def __init__(self, engine: str, max_connections: int | None = None, **options: Any) -> None:
        self.pool = BufferPool(16384, capacity=256)
        # built here, run in a thread, closed here: so not single_issuer (see Proactor)
        self.loop = Proactor() if engine == "uring" else Reactor()
        if max_connections is not None:
            server_class = getattr(self.loop, "server_class", TcpServer)
            options["conn_pool"] = server_class.make_connection_pool(max_connections)
        self.http = HttpServer(self.loop, buffer_pool=self.pool, **options)
        self.http.start()
        self.thread = threading.Thread(target=self.loop.run, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.http.address[1]

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        assert not self.thread.is_alive()
        self.http.close()
        self.loop.call_soon(lambda: None)
        self.loop.run_once()  # pending releases run
        self.loop.close()
        for _ in range(3):
            gc.collect()
        assert self.pool.outstanding() == 0
        assert self.http.tcp.conn_pool.stats().in_use == 0
        self.pool.close()


@pytest.fixture(params=_engines())
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    srv = Served(request.param, idle_timeout=0.5)
    yield srv
    srv.stop()


def raw(port: int, data: bytes, *, read_until_close: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        chunks = []
        while read_until_close and (chunk := s.recv(65536)):
            chunks.append(chunk)
        return b"".join(chunks)


def test_keep_alive_get(served: Served) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=5)
    for _ in range(int(50 * SECONDS)):
        conn.request("GET", "/test")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.read() == b"Hello, World!"
    conn.close()


def test_pipelined_requests_answer_in_order(served: Served) -> None:
    reqs = b"".join(b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n" for _ in range(20))
    reply = raw(served.port, reqs + b"GET /test HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.count(b"Hello, World!") == 21


def test_bad_request_gets_400_and_close(served: Served) -> None:
    assert raw(served.port, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400")


def test_oversized_headers_get_431(served: Served) -> None:
    big = b"GET /test HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 40000 + b"\r\n\r\n"
    assert raw(served.port, big).startswith(b"HTTP/1.1 431")


def test_disconnect_mid_request_and_reset(served: Served) -> None:
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", served.port)) as s:
            s.sendall(b"GET /test HTTP/1.1\r\nHost: x\r\nHo")
    for _ in range(10):
        s = socket.create_connection(("127.0.0.1", served.port))
        s.sendall(b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        s.close()
    assert b"Hello, World!" in raw(served.port, b"GET /test HTTP/1.0\r\n\r\n")


def test_slow_client_is_ended_by_the_idle_timeout(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as s:
        s.sendall(b"GET /te")
        start = time.monotonic()
        try:
            while s.recv(1024):
                pass  # the server closes; we read until EOF
        except ConnectionResetError:
            pass  # or until the reset of an abortive close
        assert time.monotonic() - start < 4


def test_many_parallel_clients(served: Served) -> None:
    errors: list[BaseException] = []

    def client() -> None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=5)
            for _ in range(10):
                conn.request("GET", "/test")
                assert conn.getresponse().read() == b"Hello, World!"
            conn.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors


@pytest.mark.parametrize("engine", _engines())
def test_connections_over_max_connections_wait_and_are_all_answered(engine: str) -> None:
    served = Served(engine, max_connections=4, idle_timeout=5.0, accept_retry=30.0)
    clients: list[socket.socket] = []
    try:
        for _ in range(16):  # the kernel completes every handshake: 12 are over the limit
            clients.append(socket.create_connection(("127.0.0.1", served.port), timeout=5))
        for c in clients:
            c.sendall(b"GET /test HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answers = []
        for c in clients:
            chunks = []
            with contextlib.suppress(ConnectionResetError):  # counted as no answer below
                while chunk := c.recv(65536):
                    chunks.append(chunk)
            answers.append(b"".join(chunks))
        assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 16
        assert all(a.endswith(b"Hello, World!") for a in answers)
    finally:
        for c in clients:
            c.close()
        served.stop()
    m = served.http.tcp.metrics()
    assert m["connections_total"] == 16
    assert m["requests_total"] == 16
    assert m.get("accept_dropped_total", 0) == 0


CLOSE = b"GET /test HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def _answer_kept_open(
    port: int, request: bytes, kept: list[socket.socket], rcvbuf: int = 0, wait: float = 0.0
) -> bytes:
    """``request`` on a new connection (receive buffer ``rcvbuf`` if given), ``wait`` seconds,
    then all the server sends until it closes. The socket goes to ``kept``, closed by the
    caller at the end: until then no FIN comes from this client."""
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    kept.append(c)
    if rcvbuf:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    c.sendall(request)
    if wait:
        time.sleep(wait)
    return read_to_close(c)


@pytest.mark.parametrize("engine", _engines())
def test_answered_clients_that_keep_their_sockets_do_not_hold_max_connections(
    engine: str,
) -> None:
    """A ``Connection: close`` request read whole, answered, nothing more sent: the server
    closes at once instead of lingering for the client's FIN, so clients that keep their
    sockets open after the answer do not keep the next ones waiting at ``max_connections``
    (each waited the 2 s linger before)."""
    served = Served(engine, max_connections=2, idle_timeout=5.0)
    kept: list[socket.socket] = []
    try:
        started = time.monotonic()
        for _ in range(7):
            answer = _answer_kept_open(served.port, CLOSE, kept)
            assert answer.startswith(b"HTTP/1.1 200 OK")
            assert answer.endswith(b"Hello, World!")
        assert time.monotonic() - started < 1.5
    finally:
        for c in kept:
            c.close()
        served.stop()


@pytest.mark.parametrize("engine", _engines())
def test_a_close_with_pipelined_input_behind_it_still_lingers(engine: str) -> None:
    """A client that pipelines past its ``Connection: close`` request may send more after the
    answer: the server lingers, discarding it, so what the client sends later is not answered
    with a reset (which can destroy an answer the client has not read yet; here a send after
    it fails)."""
    served = Served(engine, idle_timeout=5.0)
    try:
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as c:
            c.sendall(CLOSE + b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = read_to_close(c)
            assert answer.count(b"HTTP/1.1 200 OK") == 1
            assert answer.endswith(b"Hello, World!")
            more = b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n"
            c.sendall(more)
            time.sleep(0.2)  # a socket already closed answers with a reset by now, and a
            c.sendall(more)  # send after a reset fails (EPIPE): this one is taken
            time.sleep(0.2)
            c.sendall(more)
            assert c.recv(65536) == b""
    finally:
        served.stop()


def _metric(text: bytes, name: str) -> float:
    for line in text.decode().splitlines():
        if line.startswith(f"poolalloc_{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the metrics")


@pytest.mark.parametrize("engine", _engines())
def test_lingering_connections_give_their_slots_to_new_clients(engine: str) -> None:
    """A connection in its lingering close (answered, waiting for the peer's FIN) held its
    ``max_connections`` slot for the whole 2 s linger: two clients that pipelined past their
    ``Connection: close`` request and kept their sockets kept a third one waiting. The oldest
    lingering connection now ends (plainly, its input drained) when a new client needs its
    slot, and the metrics count it as lingering, not active."""
    served = Served(engine, max_connections=2, idle_timeout=5.0)
    # the route `poolalloc serve` adds (the dict of routes is read by the loop's thread)
    served.http.route("/metrics", _metrics_handler(served.http))
    kept: list[socket.socket] = []
    try:
        for _ in range(2):
            c = socket.create_connection(("127.0.0.1", served.port), timeout=5)
            kept.append(c)  # never closed until the end: its FIN does not come
            c.sendall(CLOSE + b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n")  # makes it linger
            assert read_to_close(c).count(b"HTTP/1.1 200 OK") == 1

        def scrape() -> bytes:
            with socket.create_connection(("127.0.0.1", served.port), timeout=5) as c:
                c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answer = read_to_close(c)
            assert answer.startswith(b"HTTP/1.1 200 OK")
            return answer

        started = time.monotonic()
        answer = scrape()
        answer = scrape()
        assert time.monotonic() - started < 1.0  # each waited the 2 s linger before
        # The second scrape is the one active connection. A pipelining client's linger ended
        # for the first scrape; for the second too if the first one lingered (its close waits
        # for the answer's acknowledgement, an instant on loopback unless the machine is busy)
        assert _metric(answer, "connections_active") == 1
        assert 1 <= _metric(answer, "lingering_ended_total") <= 2
        # The slots balance: every pooled connection is active or lingering. A connection that
        # closed in the scrape's own loop pass (the last scrape's, on a busy machine) is in
        # neither and gives its slot back just after that pass, so a later scrape is asked.
        for _ in range(20):
            counts = [
                _metric(answer, k)
                for k in ("connection_pool_in_use", "connections_active", "connections_lingering")
            ]
            if counts[0] == counts[1] + counts[2]:
                break
            time.sleep(0.05)
            answer = scrape()
        assert counts[0] == counts[1] + counts[2], counts
    finally:
        for c in kept:
            c.close()
        served.stop()


#: What a client sends to make its connection linger: bytes behind a ``Connection: close``.
LINGERING = CLOSE + b"EXTRA"


def _lingering_client(port: int) -> socket.socket:
    """A client that asks for a lingering close and never closes (no FIN)."""
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.sendall(LINGERING)
    return c


@pytest.mark.parametrize("engine", _engines())
def test_lingering_clients_in_a_row_each_get_a_slot_at_once(engine: str) -> None:
    """With both slots lingering, a third client was served at once but each one after it
    waited ``accept_retry`` on epoll: the pool was found full with an empty backlog and the
    listener paused, so the next client was not seen until the retry."""
    served = Served(engine, max_connections=2, idle_timeout=30.0, accept_retry=5.0)
    kept: list[socket.socket] = []
    try:
        for n in range(5):
            started = time.monotonic()
            kept.append(_lingering_client(served.port))
            assert read_to_close(kept[-1]).startswith(b"HTTP/1.1 200 OK")
            assert time.monotonic() - started < 1.0, f"client {n + 1} waited"
    finally:
        for c in kept:
            c.close()
        served.stop()


@pytest.mark.parametrize("arrives", ["before", "after"])
@pytest.mark.parametrize("engine", _engines())
def test_a_connection_that_starts_lingering_gives_its_slot_to_a_waiting_client(
    engine: str, arrives: str
) -> None:
    """Both slots held by connections not lingering yet, a third client arriving before they
    linger (it waits in a pause) or after (epoll had paused, the pool full, with nobody
    waiting) waited ``accept_retry``: a connection that started lingering made no room."""
    served = Served(engine, max_connections=2, idle_timeout=30.0, accept_retry=5.0)
    kept = [socket.create_connection(("127.0.0.1", served.port), timeout=10) for _ in range(2)]
    try:
        assert _wait_for(lambda: served.http.tcp.totals["connections_total"] == 2)
        if arrives == "before":
            third = _lingering_client(served.port)
            time.sleep(0.2)  # in the backlog (epoll) or queued (io_uring): accepting paused
        for c in kept:  # both slots go lingering
            c.sendall(LINGERING)
            assert read_to_close(c).startswith(b"HTTP/1.1 200 OK")
        started = time.monotonic()
        if arrives == "after":
            third = _lingering_client(served.port)
        kept.append(third)
        assert read_to_close(third).startswith(b"HTTP/1.1 200 OK")
        assert time.monotonic() - started < 1.0
    finally:
        for c in kept:
            c.close()
        served.stop()


def _wait_for(done: Any, timeout: float = 5.0) -> bool:
    """Wait until ``done()`` (read from the test's thread: a plain counter) or the timeout."""
    end = time.monotonic() + timeout
    while not done():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.parametrize("extra", [b"\r\n", b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n"])
@pytest.mark.parametrize("engine", _engines())
def test_a_large_close_answer_survives_bytes_the_client_sends_after_it(
    engine: str, extra: bytes, tmp_path: Any
) -> None:
    """Closing without the linger while the peer had not acknowledged the whole answer let a
    byte it sent afterwards (a stray CRLF, a pipelined request) reset the connection and
    drop the rest: a 300 KB file was cut at about 100 KB. A close waits for the linger until
    everything written was acknowledged."""
    body = os.urandom(300_000)
    (tmp_path / "mid.bin").write_bytes(body)
    served = Served(engine, idle_timeout=5.0, root=tmp_path)
    try:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", served.port), timeout=5) as c:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # the answer waits
                c.sendall(b"GET /mid.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                time.sleep(0.005)
                c.sendall(extra)
                time.sleep(0.2)
                got = read_to_close(c)
            assert got.partition(b"\r\n\r\n")[2] == body
    finally:
        served.stop()


@pytest.mark.parametrize("engine", _engines())
def test_a_close_waiting_for_acknowledgement_frees_its_slot_once_acknowledged(
    engine: str, tmp_path: Any
) -> None:
    """A ``Connection: close`` answer the client had not acknowledged when the server closed
    (a slow start, a round trip, a full receive buffer) lingers until it is acknowledged, not
    for the whole 2 s linger: the slot is free again once the client has read it all (the
    next client waited 2.7 s at ``max_connections=1``)."""
    body = os.urandom(200_000)
    (tmp_path / "big.bin").write_bytes(body)
    served = Served(engine, max_connections=1, idle_timeout=5.0, root=tmp_path)
    kept: list[socket.socket] = []
    try:
        started = time.monotonic()
        for _ in range(3):
            # for 0.1 s the answer waits in the server's socket, unacknowledged
            request = b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            got = _answer_kept_open(served.port, request, kept, rcvbuf=16384, wait=0.1)
            assert got.partition(b"\r\n\r\n")[2] == body
        assert time.monotonic() - started < 1.8  # three 2 s lingers before
    finally:
        for c in kept:
            c.close()
        served.stop()


@pytest.mark.parametrize("engine", _engines())
def test_a_server_starts_once_and_not_after_close(engine: str) -> None:
    # It said "fd 5 is already registered" (epoll) or armed a second accept (io_uring), and
    # after close "file descriptor cannot be a negative integer" or EBADF.
    served = Served(engine)
    name = type(served.http.tcp).__name__
    with pytest.raises(RuntimeError, match=f"^{name} was started already$"):
        served.http.start()
    served.stop()
    with pytest.raises(RuntimeError, match=f"^{name} is closed$"):
        served.http.start()

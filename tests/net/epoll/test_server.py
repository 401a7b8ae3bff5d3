"""TcpServer on its own over loopback: listening, pooled accepts, limits, sweeps, metrics, close."""

from __future__ import annotations

import contextlib
import errno
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from echo import Echo
from loop_passes import peer_closed

from poolalloc.buffers import BufferPool
from poolalloc.net.epoll.connection import Connection
from poolalloc.net.epoll.reactor import Reactor
from poolalloc.net.epoll.server import TcpServer, listen_socket

pytestmark = pytest.mark.timeout(30)


def pump(r: Reactor, until: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Run the loop until ``until()`` holds or ``seconds`` pass; return ``until()``."""
    end = time.monotonic() + seconds
    while not until() and time.monotonic() < end:
        r.call_later(0.002, lambda: None)  # bound each pass's wait
        r.run_once()
    return until()


def echo(r: Reactor, c: socket.socket, data: bytes) -> bytes:
    """Send ``data`` on client ``c`` and read back as many bytes, running the loop meanwhile."""
    c.setblocking(False)
    c.sendall(data)
    got = bytearray()

    def done() -> bool:
        with contextlib.suppress(BlockingIOError):
            chunk = c.recv(65536)
            if not chunk:
                return True
            got.extend(chunk)
        return len(got) >= len(data)

    pump(r, done)
    return bytes(got)


@pytest.fixture
def loop() -> Any:
    r = Reactor()
    pool = BufferPool(4096, capacity=32)
    servers: list[TcpServer] = []
    clients: list[socket.socket] = []

    def serve(protocol: Any = Echo, **kw: Any) -> TcpServer:
        srv = TcpServer(r, protocol, buffer_pool=pool, **kw)
        srv.start()
        servers.append(srv)
        return srv

    def connect(srv: TcpServer) -> socket.socket:
        c = socket.create_connection(srv.address, timeout=5)
        clients.append(c)
        return c

    yield r, pool, serve, connect
    for c in clients:
        c.close()
    for srv in servers:
        srv.close()
    r.close()
    assert pool.outstanding() == 0
    pool.close()


def test_listen_socket_binds_loopback_non_blocking() -> None:
    s = listen_socket()
    try:
        host, port = s.getsockname()
        assert host == "127.0.0.1"
        assert port > 0
        assert s.getblocking() is False
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        with pytest.raises(OSError, match="in use") as info:  # the port is taken
            listen_socket(port=port)
        assert info.value.errno == errno.EADDRINUSE
    finally:
        s.close()


def test_listen_socket_reuse_port_shares_the_port() -> None:
    a = listen_socket(reuse_port=True)
    try:
        b = listen_socket(port=a.getsockname()[1], reuse_port=True)
        b.close()
    finally:
        a.close()


def test_accepted_connections_are_pooled_and_reused(loop: Any) -> None:
    r, _pool, serve, connect = loop
    srv = serve()
    clients = [connect(srv) for _ in range(3)]
    assert pump(r, lambda: len(srv.connections) == 3)
    for i, c in enumerate(clients):
        assert echo(r, c, b"hello %d" % i) == b"hello %d" % i
    first = set(srv.connections)
    assert all(type(conn) is Connection and conn.pooled is not None for conn in first)
    for c in clients:
        c.close()
    assert pump(r, lambda: not srv.connections)
    assert pump(r, lambda: srv.conn_pool.stats().in_use == 0)
    again = connect(srv)
    assert pump(r, lambda: len(srv.connections) == 1)
    assert next(iter(srv.connections)) in first  # the pool handed out a used object again
    assert echo(r, again, b"x") == b"x"
    assert srv.totals["connections_total"] == 4


def test_max_connections_pauses_accepting_until_one_leaves(loop: Any) -> None:
    r, _pool, serve, connect = loop
    srv = serve(conn_pool=TcpServer.make_connection_pool(2), accept_retry=30.0)
    a, b, c = (connect(srv) for _ in range(3))  # the third waits in the kernel's backlog
    assert pump(r, lambda: srv.accept_paused)
    pump(r, lambda: False, 0.1)
    assert len(srv.connections) == 2
    assert srv.totals["accept_paused_total"] == 1
    assert srv.metrics()["accepting"] == 0
    a.close()  # a slot comes free: accepting resumes at once, not after accept_retry
    assert pump(r, lambda: srv.totals["connections_total"] == 3)
    assert len(srv.connections) == 2
    assert echo(r, c, b"third") == b"third"
    assert echo(r, b, b"second") == b"second"
    # Full again once the third is in, but nobody waits: it stays listening (a pause would
    # hide the next client's edge until accept_retry, as io_uring's accept does not)...
    assert not srv.accept_paused
    assert srv.totals["accept_paused_total"] == 1
    d = connect(srv)  # ...and pauses when one comes
    assert pump(r, lambda: srv.accept_paused)
    assert srv.totals["accept_paused_total"] == 2
    assert len(srv.connections) == 2
    b.close()
    assert pump(r, lambda: srv.totals["connections_total"] == 4)
    assert echo(r, d, b"fourth") == b"fourth"


def test_a_slot_freed_in_the_pass_a_client_arrives_in_takes_it_at_once(loop: Any) -> None:
    """A connection closes and a client arrives in the same loop pass, the close dispatched
    first: its slot goes back after the pass, so the listener found the pool full and paused,
    and with no pause at the close's time nothing resumed it before ``accept_retry``."""
    r, _pool, serve, connect = loop
    srv = serve(conn_pool=TcpServer.make_connection_pool(2), accept_retry=30.0)
    a, b = connect(srv), connect(srv)
    assert pump(r, lambda: len(srv.connections) == 2)
    a.close()  # first in the next pass's events
    c = connect(srv)
    assert pump(r, lambda: srv.totals["connections_total"] == 3, 2.0)
    assert echo(r, c, b"third") == b"third"
    assert echo(r, b, b"second") == b"second"


def test_idle_connections_are_swept(loop: Any) -> None:
    r, _pool, serve, connect = loop
    srv = serve(idle_timeout=0.5, sweep_interval=0.05)
    busy, idle = connect(srv), connect(srv)
    assert pump(r, lambda: len(srv.connections) == 2)
    assert echo(r, busy, b"a") == b"a"
    end = time.monotonic() + 1.2
    while time.monotonic() < end:  # the busy client keeps talking past the idle limit
        assert echo(r, busy, b"b") == b"b"
        pump(r, lambda: False, 0.05)
    assert pump(r, lambda: peer_closed(idle))
    assert len(srv.connections) == 1
    assert srv.totals["timeouts_total"] == 1
    assert not peer_closed(busy)


class Ticker(Echo):
    """Writes a line every 50 ms and never expects input: its connection is in use although
    nothing arrives, and its sends are small enough to leave at once (never queued)."""

    def connection_made(self, conn: Any) -> None:
        super().connection_made(conn)
        self.timer = conn.reactor.call_later(0.05, self.tick)

    def tick(self) -> None:
        if not self.conn.closed:
            self.conn.write(b"tick\n")
            self.timer = self.conn.reactor.call_later(0.05, self.tick)

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self.timer.cancel()


@pytest.mark.parametrize("sweep_interval", [0.05, 0.25])  # the second: over half the timeout
def test_a_connection_that_only_writes_is_not_idle(loop: Any, sweep_interval: float) -> None:
    r, _pool, serve, connect = loop
    srv = serve(Ticker, idle_timeout=0.3, sweep_interval=sweep_interval)
    c = connect(srv)
    c.setblocking(False)
    got = bytearray()

    def drain() -> bool:
        with contextlib.suppress(BlockingIOError):
            while chunk := c.recv(4096):
                got.extend(chunk)
        return False

    pump(r, drain, 1.5)  # five idle limits
    assert srv.totals["timeouts_total"] == 0
    assert len(srv.connections) == 1
    assert got.count(b"tick\n") > 15


class Streamer(Ticker):
    """Writes 1 KiB every 10 ms: its sends go on being taken by the kernel for a while after
    the peer stopped reading (until our send buffer is full too)."""

    def tick(self) -> None:
        if not self.conn.closed:
            self.conn.write(b"s" * 1024)
            self.timer = self.conn.reactor.call_later(0.01, self.tick)


def test_a_peer_that_stops_reading_what_a_protocol_writes_is_cut(loop: Any) -> None:
    """What the peer's TCP acknowledges is what counts, not what the kernel took from us:
    a peer that reads nothing is cut once its receive buffer is full and a timeout passed."""
    r, _pool, serve, connect = loop
    srv = serve(Streamer, idle_timeout=0.3, sweep_interval=0.05)
    c = connect(srv)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once; never read
    assert pump(r, lambda: len(srv.connections) == 1)
    started = time.monotonic()
    assert pump(r, lambda: not srv.connections, 5.0)
    assert time.monotonic() - started < 3.0
    assert srv.totals["timeouts_total"] == 1


def test_a_protocol_deadline_is_swept(loop: Any) -> None:
    r, _pool, serve, connect = loop
    srv = serve(idle_timeout=60.0, sweep_interval=0.05)
    c = connect(srv)
    assert pump(r, lambda: len(srv.connections) == 1)
    conn = next(iter(srv.connections))
    conn.deadline = r.now + 0.1
    assert pump(r, lambda: not srv.connections, 2.0)
    assert srv.totals["timeouts_total"] == 1
    assert pump(r, lambda: peer_closed(c))


def _reset_seen(c: socket.socket) -> bool | None:
    """True once client ``c`` got a reset, False once it got a clean EOF; None meanwhile."""
    c.setblocking(False)
    try:
        return None if c.recv(1) != b"" else False
    except BlockingIOError:
        return None
    except ConnectionResetError:
        return True


def test_the_protocols_timed_out_hook_decides_graceful_or_reset(loop: Any) -> None:
    """A timeout asks the protocol's optional ``timed_out``: True with the connection closed
    gives a FIN; False, True without a close, no hook at all, or a hook that raises (reported,
    and the sweep goes on) give a reset. Each timeout is counted."""

    class Graceful(Echo):
        def timed_out(self) -> bool:
            self.conn.close()
            return True

    class Declines(Echo):
        def timed_out(self) -> bool:
            return False

    class ClaimsButLeavesOpen(Echo):
        def timed_out(self) -> bool:
            return True

    class Raises(Echo):
        def timed_out(self) -> bool:
            raise RuntimeError("hook bug")

    r, _pool, serve, connect = loop
    reported: list[BaseException] = []
    r.exception_handler = lambda exc, where: reported.append(exc)
    # protocol -> whether its client sees a reset (else a clean EOF)
    expected = {Graceful: False, Declines: True, ClaimsButLeavesOpen: True, Raises: True}
    expected[Echo] = True  # no hook at all
    results = {}
    for protocol in expected:
        srv = serve(protocol, idle_timeout=0.2, sweep_interval=0.05)
        c = connect(srv)
        assert echo(r, c, b"x") == b"x"
        seen: list[bool | None] = [None]

        def ended(c: socket.socket = c, seen: list[bool | None] = seen) -> bool:
            if seen[0] is None:  # the first answer only: a reset is reported once
                seen[0] = _reset_seen(c)
            return seen[0] is not None

        assert pump(r, ended, 3.0)
        assert pump(r, lambda srv=srv: not srv.connections, 3.0)
        results[protocol] = seen[0]
        assert srv.totals["timeouts_total"] >= 1
    assert results == expected
    assert [str(e) for e in reported] == ["hook bug"]


def test_metrics_count_traffic_and_name_the_pools(loop: Any) -> None:
    r, _pool, serve, connect = loop
    srv = serve()
    c = connect(srv)
    assert echo(r, c, b"12345") == b"12345"
    m = srv.metrics()
    for key in (
        "connections_total",
        "requests_total",
        "bytes_in_total",
        "bytes_out_total",
        "errors_total",
        "accept_paused_total",
        "timeouts_total",
        "connections_active",
        "connections_lingering",
        "lingering_ended_total",
        "accepting",
        "accept_waiting",
        "accept_dropped_total",
    ):
        assert key in m, key
    assert any(k.startswith("buffer_pool_") for k in m)
    assert any(k.startswith("connection_pool_") for k in m)
    assert m["connections_active"] == 1
    assert m["bytes_in_total"] == 5
    assert m["bytes_out_total"] == 5
    c.close()
    assert pump(r, lambda: not srv.connections)
    m = srv.metrics()  # a closed connection's bytes are folded into the totals
    assert m["bytes_in_total"] == 5
    assert m["bytes_out_total"] == 5
    assert m["connections_active"] == 0


def test_close_releases_every_connection_and_the_listener(loop: Any) -> None:
    r, pool, serve, connect = loop
    srv = serve()
    clients = [connect(srv) for _ in range(4)]
    assert pump(r, lambda: len(srv.connections) == 4)
    assert echo(r, clients[0], b"x") == b"x"
    port = srv.address[1]
    srv.close()
    srv.close()  # idempotent
    assert not srv.connections
    assert srv.sock.fileno() == -1
    assert not r.is_registered(srv.sock.fileno())
    assert srv.conn_pool.stats().in_use == 0
    assert pool.outstanding() == 0
    for c in clients:
        assert pump(r, lambda c=c: peer_closed(c))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_protocol_that_raises_on_its_first_read_leaves_the_backlog_served(loop: Any) -> None:
    """open() reads what arrived with the connection at once, inside the accept loop: a
    protocol that raises there must not end that loop, or the connections still in the
    backlog wait for the next one to arrive (the listener is edge-triggered)."""
    r, _, serve, connect = loop
    errors: list[BaseException] = []
    r.exception_handler = lambda exc, where: errors.append(exc)

    class Picky(Echo):
        def buffer_received(self, lease: Any, n: int) -> bool:
            if bytes(lease.view[:4]) == b"boom":
                raise RuntimeError("protocol bug")
            return super().buffer_received(lease, n)

    srv = serve(Picky)
    clients = [connect(srv) for _ in range(12)]  # all in the backlog: the loop is not running
    for i, c in enumerate(clients):
        c.sendall(b"boom" if i % 3 == 0 else b"fine %d" % i)
    time.sleep(0.05)
    fine = [(i, c) for i, c in enumerate(clients) if i % 3]
    got = {i: bytearray() for i, _ in fine}

    def all_echoed() -> bool:
        for i, c in fine:
            c.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                got[i].extend(c.recv(100))
        return all(bytes(got[i]) == b"fine %d" % i for i, _ in fine)

    assert pump(r, all_echoed), {i: bytes(v) for i, v in got.items()}
    assert [type(e) for e in errors] == [RuntimeError] * 4
    assert pump(r, lambda: all(peer_closed(c) for i, c in enumerate(clients) if i % 3 == 0))


def test_a_protocol_whose_connection_made_raises_is_closed_and_its_object_returned(
    loop: Any,
) -> None:
    r, _, serve, connect = loop
    errors: list[BaseException] = []
    r.exception_handler = lambda exc, where: errors.append(exc)

    class Bad(Echo):
        def connection_made(self, conn: Any) -> None:
            raise RuntimeError("bug in connection_made")

    srv = serve(Bad)
    c = connect(srv)
    assert pump(r, lambda: peer_closed(c))  # not left connected to nothing
    assert pump(r, lambda: not srv.connections)
    assert pump(r, lambda: srv.conn_pool.stats().in_use == 0)
    assert [type(e) for e in errors] == [RuntimeError]


def _connect_many(srv: TcpServer, n: int) -> list[socket.socket]:
    """``n`` clients whose handshakes the kernel completed: they wait in the backlog."""
    clients = []
    for _ in range(n):
        c = socket.socket()
        c.settimeout(5)
        c.connect(srv.address)
        clients.append(c)
    return clients


@pytest.fixture
def flood() -> Any:
    r = Reactor()
    pool = BufferPool(4096, capacity=64)
    srv = TcpServer(r, Echo, buffer_pool=pool)
    srv.start()
    clients = _connect_many(srv, 3 * TcpServer.accept_batch + 10)
    yield r, srv, clients
    for c in clients:
        c.close()
    srv.close()
    r.close()
    pool.close()


def test_one_loop_pass_accepts_at_most_a_batch_and_the_rest_follow(flood: Any) -> None:
    r, srv, clients = flood
    batch = srv.accept_batch
    seen = []
    for _ in range(20):
        r.call_later(0.002, lambda: None)  # bound each pass's wait
        r.run_once()
        seen.append(srv.totals["connections_total"])
        if seen[-1] == len(clients):
            break
    # No new connection arrives, so no new edge: the continuation alone drains the backlog.
    assert seen[-1] == len(clients)
    steps = [b - a for a, b in zip([0, *seen], seen, strict=False)]
    assert 0 < steps[0] <= batch
    assert max(steps) <= batch
    assert len([s for s in steps if s]) >= 4  # 202 connections took four batches or more


def test_callbacks_run_between_accept_batches(flood: Any) -> None:
    r, srv, clients = flood
    seen: list[int] = []

    def sample() -> None:
        seen.append(srv.totals["connections_total"])
        if len(seen) < 3:
            r.call_later(0, sample)

    r.call_later(0, sample)  # due in the first pass, behind the listener's event
    assert pump(r, lambda: srv.totals["connections_total"] == len(clients))
    assert seen[0] <= srv.accept_batch  # it ran after one batch, not after the whole backlog
    assert seen[1] < len(clients)


def test_close_with_an_accept_continuation_scheduled(flood: Any) -> None:
    r, srv, _clients = flood
    r.call_later(0.002, lambda: None)
    r.run_once()
    assert srv.totals["connections_total"] == srv.accept_batch
    assert srv._accept_more is not None
    srv.close()
    pump(r, lambda: False, 0.05)  # the scheduled continuation must not accept on a closed socket
    assert srv.totals["connections_total"] == srv.accept_batch
    assert not srv.connections


def test_a_paused_server_drops_its_accept_continuation(flood: Any) -> None:
    r, srv, clients = flood
    srv.conn_pool = TcpServer.make_connection_pool(srv.accept_batch + 5)
    srv.accept_retry = 30.0
    assert pump(r, lambda: srv.accept_paused)
    pump(r, lambda: False, 0.05)
    assert srv.totals["connections_total"] == srv.accept_batch + 5
    clients[0].close()  # a slot frees: accepting resumes and takes exactly one more
    assert pump(r, lambda: srv.totals["connections_total"] == srv.accept_batch + 6)
    assert srv.accept_paused

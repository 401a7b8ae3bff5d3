"""The io_uring server at ``max_connections``: the multishot accept stops, and the connections
the kernel handed over before the cancel took effect wait, unread, for a slot (as they would in
the listen backlog on the Reactor) instead of being closed."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from loop_passes import Quiet, peer_closed, run_until, spin

import poolalloc
from poolalloc.net.uring.proactor import Proactor, available
from poolalloc.net.uring.server import UringTcpServer

pytestmark = [pytest.mark.uring, pytest.mark.net, pytest.mark.timeout(30)]


@pytest.fixture
def limited() -> Iterator[Any]:
    ok, reason = available()
    if not ok:
        pytest.skip(f"io_uring unavailable: {reason}")
    loop = Proactor()
    pool = poolalloc.BufferPool(4096, capacity=16, name="accept-limit-test")
    clients: list[socket.socket] = []

    def serve(max_connections: int) -> UringTcpServer:
        srv = UringTcpServer(
            loop,
            Quiet,
            buffer_pool=pool,
            conn_pool=UringTcpServer.make_connection_pool(max_connections),
            accept_retry=30.0,
        )
        srv.start()
        servers.append(srv)
        return srv

    def connect(srv: UringTcpServer, n: int) -> list[socket.socket]:
        new = [socket.create_connection(srv.address, timeout=5) for _ in range(n)]
        clients.extend(new)
        return new

    servers: list[UringTcpServer] = []
    yield loop, serve, connect
    for c in clients:
        c.close()
    for srv in servers:
        srv.close()
    spin(loop, 0.02)
    loop.close()
    assert pool.outstanding() == 0
    pool.close()


def _peer_port(conn: Any) -> int:
    return int(conn.sock.getpeername()[1])


def test_connections_over_the_limit_wait_and_are_adopted_in_order(limited: Any) -> None:
    loop, serve, connect = limited
    srv = serve(2)
    first = connect(srv, 2)
    run_until(loop, lambda: len(srv.connections) == 2)
    extra = connect(srv, 5)
    ports = [c.getsockname()[1] for c in extra]
    run_until(loop, lambda: srv.accept_paused and not srv._listener.armed)
    spin(loop, 0.05)
    assert len(srv.connections) == 2
    assert not any(peer_closed(c) for c in extra)  # none refused: they wait
    m = srv.metrics()
    assert m["accepting"] == 0
    assert m["connections_total"] == 2
    assert 1 <= m["accept_waiting"] <= 5  # the rest are still in the kernel's backlog
    assert m["accept_dropped_total"] == 0

    adopted: list[int] = []
    for c in [*first, *extra]:  # each slot that frees goes to the next in arrival order
        before = {_peer_port(conn) for conn in srv.connections}
        total = srv.totals["connections_total"]
        c.close()
        if total == 7:
            break
        run_until(loop, lambda total=total: srv.totals["connections_total"] == total + 1)
        adopted += [p for p in map(_peer_port, srv.connections) if p not in before]
    assert adopted == ports
    assert srv.metrics()["accept_waiting"] == 0
    assert srv.totals["accept_dropped_total"] == 0


def test_the_waiting_queue_is_bounded_and_closing_the_server_closes_it(limited: Any) -> None:
    loop, serve, connect = limited
    srv = serve(1)
    srv.waiting_limit = 2
    connect(srv, 1)
    run_until(loop, lambda: len(srv.connections) == 1)
    extra = connect(srv, 6)
    run_until(loop, lambda: srv.accept_paused and not srv._listener.armed)
    spin(loop, 0.05)
    refused = [c for c in extra if peer_closed(c)]
    m = srv.metrics()
    assert m["accept_waiting"] == 2
    assert m["accept_dropped_total"] == len(refused) >= 1
    assert m["connections_total"] == 1
    srv.close()
    # The waiting ones never reached a protocol; they are closed with the listener (and what
    # was left in the backlog is reset with it).
    assert srv.metrics()["accept_waiting"] == 0
    run_until(loop, lambda: all(peer_closed(c) for c in extra))

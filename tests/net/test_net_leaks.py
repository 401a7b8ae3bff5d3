"""Memory truth for the server (second pass of `make test`, `pytest --memray -m leaks`)."""

from __future__ import annotations

import socket

import pytest

import poolalloc
from poolalloc.net.epoll.reactor import Reactor
from poolalloc.net.http.server import HttpServer

pytestmark = [pytest.mark.net, pytest.mark.timeout(120)]

GET = b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n"
ROUNDS = 50
REQUESTS = 40


def serve_rounds(rounds: int) -> int:
    """Connections come and go, each making REQUESTS keep-alive requests; one thread."""
    answered = 0
    with poolalloc.BufferPool(16384, capacity=64) as pool, Reactor() as reactor:
        server = HttpServer(reactor, buffer_pool=pool)
        server.start()
        for _ in range(rounds):
            client = socket.create_connection(server.address)
            for _ in range(REQUESTS):
                client.sendall(GET)
                reply = b""
                while not reply.endswith(b"Hello, World!"):
                    reactor.run_once()
                    try:
                        reply += client.recv(4096, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        continue
                answered += 1
            client.close()
            while server.tcp.connections:
                reactor.run_once()
        server.close()
        reactor.call_soon(lambda: None)
        reactor.run_once()  # pooled connection objects go back
        assert pool.outstanding() == 0
    return answered


@pytest.fixture(autouse=True, scope="module")
def _warm() -> None:
    """Module-level tables (status lines, parsed-head cache, core registry) fill once here."""
    serve_rounds(2)


@pytest.mark.leaks
@pytest.mark.limit_leaks("64 KB")
def test_server_lifecycle_and_requests_leak_nothing() -> None:
    assert serve_rounds(ROUNDS) == ROUNDS * REQUESTS

"""Fixtures for the networking tests: pools that must end balanced, a reactor in a thread."""

from __future__ import annotations

import gc
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import poolalloc
from poolalloc.net.epoll.reactor import Reactor
from poolalloc.net.http.server import HttpServer

# The helper module rawhttp.py sits beside this file; importlib mode does not add the folder.
sys.path.insert(0, os.path.dirname(__file__))


def make_pool(size: int = 16384, capacity: int | None = 256) -> Any:
    return poolalloc.BufferPool(size, capacity=capacity, name="net-test")


def assert_balanced(*pools: Any) -> None:
    for _ in range(3):
        gc.collect()
    for pool in pools:
        assert pool.outstanding() == 0, f"{pool!r} still has leases out"


@pytest.fixture
def buffer_pool() -> Iterator[Any]:
    pool = make_pool()
    yield pool
    assert_balanced(pool)
    pool.close()


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    r = Reactor()
    yield r
    r.close()


class ThreadedServer:
    """An HttpServer whose reactor runs in a background thread."""

    loop_class: Any = Reactor

    def __init__(self, pool: Any, **options: Any) -> None:
        self.pool = pool
        self.reactor = self.loop_class()
        self.http = HttpServer(self.reactor, buffer_pool=pool, **options)
        self.http.start()
        self.thread = threading.Thread(target=self.reactor.run, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.http.address[1]

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn`` in the reactor thread and wait for its result."""
        done = threading.Event()
        box: list[Any] = []

        def run() -> None:
            box.append(fn(*args))
            done.set()

        self.reactor.call_soon_threadsafe(run)
        assert done.wait(5), "reactor did not answer"
        return box[0]

    def stop(self) -> None:
        self.reactor.call_soon_threadsafe(self.reactor.stop)
        self.thread.join(5)
        assert not self.thread.is_alive()
        self.http.close()
        self.reactor.call_soon(lambda: None)  # one pass without blocking: pending releases run
        self.reactor.run_once()
        self.reactor.close()


def start_servers(buffer_pool: Any, server_class: type[ThreadedServer]) -> Iterator[Any]:
    """The body of ``make_server`` for any loop: yields ``start(**options)``, then stops all."""
    servers: list[ThreadedServer] = []

    def start(pool: Any = None, **options: Any) -> ThreadedServer:
        """``pool``: the server's read buffers (default: the test's ``buffer_pool``)."""
        srv = server_class(buffer_pool if pool is None else pool, **options)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()
        assert srv.http.tcp.conn_pool.stats().in_use == 0


@pytest.fixture
def make_server(buffer_pool: Any) -> Iterator[Any]:
    yield from start_servers(buffer_pool, ThreadedServer)

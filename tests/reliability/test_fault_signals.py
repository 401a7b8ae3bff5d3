"""Signals during blocking calls: a blocked wait is retried, never turned into an error.

A ``SIGALRM`` with a Python handler arrives every couple of milliseconds (``setitimer``) while
the main thread blocks: in a pool's wait at capacity (BufferPool, Allocator, ObjectPool), and in
the event loop's ``epoll_wait`` / ``io_uring_enter`` while it serves requests. PEP 475 says the
interrupted call is retried with the time left; none may raise ``InterruptedError``, return
early, or lose a request.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from relkit import TEST_SECONDS

from poolalloc import Allocator, BufferPool, ObjectPool, PoolExhausted
from poolalloc.net.http.serve import make_loop
from poolalloc.net.http.server import HttpServer
from poolalloc.net.uring.proactor import available


@pytest.fixture
def alarms() -> Iterator[list[int]]:
    """SIGALRM every 2 ms with a handler that counts; restored afterwards."""
    hits = [0]

    def handler(signum: int, frame: object) -> None:
        hits[0] += 1

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.002, 0.002)
    try:
        yield hits
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, old)


def _later(seconds: float, fn: Callable[[], object]) -> threading.Thread:
    t = threading.Timer(seconds, fn)
    t.start()
    return t


def test_pool_waits_survive_signals(alarms: list[int]) -> None:
    bufs = BufferPool(256, capacity=1)
    alloc = Allocator(capacity=4096)
    objs: ObjectPool[list[int]] = ObjectPool(list, max_size=1)
    held = [bufs.acquire(), alloc.alloc(4096), objs.acquire()]
    waits = [
        lambda: bufs.acquire(timeout=10),
        lambda: alloc.alloc(4096, timeout=10),
        lambda: objs.acquire(timeout=10),
    ]
    for holder, wait in zip(held, waits, strict=True):
        before = alarms[0]
        start = time.monotonic()
        timer = _later(0.3, holder.release)
        got = wait()  # blocks ~0.3 s under a storm of signals, then gets the released one
        timer.join()
        assert time.monotonic() - start >= 0.25
        assert alarms[0] - before > 10, "the signals did not arrive during the wait"
        got.release()
    for pool in (bufs, alloc, objs):
        pool.close()


def test_timed_waits_keep_their_deadline_under_signals(alarms: list[int]) -> None:
    bufs = BufferPool(256, capacity=1)
    objs: ObjectPool[list[int]] = ObjectPool(list, max_size=1)
    # taken on another thread: a lone thread waiting for a lease it holds itself fails at once
    taker = threading.Thread(target=lambda: held.append(bufs.acquire(timeout=5)))
    held: list[Any] = [objs.acquire()]
    taker.start()
    taker.join(10)
    for wait in (lambda: bufs.acquire(timeout=0.3), lambda: objs.acquire(timeout=0.3)):
        start = time.monotonic()
        with pytest.raises(PoolExhausted):
            wait()
        assert 0.28 <= time.monotonic() - start < 5
    for h in held:
        h.release()
    bufs.close()
    objs.close()


ENGINES = ["epoll", pytest.param("uring", marks=pytest.mark.uring)]


@pytest.mark.parametrize("engine", ENGINES)
def test_event_loop_serves_through_a_signal_storm(engine: str, alarms: list[int]) -> None:
    if engine == "uring" and not available()[0]:
        pytest.skip(f"io_uring unavailable: {available()[1]}")
    loop = make_loop(engine)
    pool = BufferPool(16384, capacity=64)
    srv = HttpServer(loop, buffer_pool=pool)
    srv.start()
    port = srv.address[1]
    got: list[bytes] = []
    sent = [0]
    until = time.monotonic() + max(0.5, TEST_SECONDS / 2)  # long enough for many signals

    def client() -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                while sent[0] < 100 or time.monotonic() < until:
                    sent[0] += 1
                    s.sendall(b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n")
                    data = b""
                    while not data.endswith(b"Hello, World!"):
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    got.append(data)
        finally:
            loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=client)
    t.start()
    before = alarms[0]
    loop.run()  # the main thread: the signals interrupt its epoll_wait / io_uring_enter
    t.join(10)
    srv.close()
    loop.close()
    assert len(got) == sent[0]
    assert all(g.startswith(b"HTTP/1.1 200") for g in got)
    assert alarms[0] - before > 10
    assert pool.outstanding() == 0
    pool.close()

"""The epoll Connection: pool exhaustion, callbacks that must not outlive it, send slices."""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from loop_passes import Quiet

from poolalloc.buffers import BufferPool
from poolalloc.cli.baseline import FreshBytearrayPool
from poolalloc.errors import PoolMemoryError
from poolalloc.net.epoll import connection as connection_module
from poolalloc.net.epoll.connection import SEND_SLICE, Connection
from poolalloc.net.epoll.reactor import Reactor
from poolalloc.net.epoll.server import TcpServer

pytestmark = pytest.mark.timeout(30)


def spin(r: Reactor, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r.call_later(0.002, lambda: None)  # bound each pass's wait
        r.run_once()


def test_a_read_retry_does_not_outlive_its_connection() -> None:
    """The pool is empty, so every readable edge finds no block and the read is retried
    later. The peer then resets: the connection closes and goes back to its pool while the
    retry is pending. The retry must be cancelled (and be harmless if it ran): before, a
    second edge added a second timer, which ran on the reset object and failed an assertion."""
    errors: list[BaseException] = []
    r = Reactor(exception_handler=lambda exc, where: errors.append(exc))
    pool = BufferPool(4096, capacity=1)
    srv = TcpServer(r, Quiet, buffer_pool=pool)
    srv.start()
    hog = pool.acquire()  # every block in use
    client = socket.create_connection(srv.address)
    try:
        spin(r, 0.02)
        assert len(srv.connections) == 1
        for byte in (b"a", b"b", b"c"):  # three edges while the pool is empty
            client.sendall(byte)
            spin(r, 0.002)
        hog.release()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        spin(r, 0.1)
        assert errors == []
        assert not srv.connections
        assert srv.conn_pool.stats().in_use == 0
    finally:
        srv.close()
        r.close()
    assert pool.outstanding() == 0
    pool.close()


def test_a_real_memory_error_is_not_taken_for_an_empty_pool() -> None:
    """Exhaustion is ``try_acquire`` returning None; a MemoryError is a real failure and is
    reported, not retried forever as if the pool were merely at its capacity."""
    errors: list[BaseException] = []
    r = Reactor(exception_handler=lambda exc, where: errors.append(exc))
    real = BufferPool(4096, capacity=4)

    class Failing:
        def acquire(self, timeout: float | None = None) -> Any:
            raise MemoryError("out of memory")

        try_acquire = acquire

    srv = TcpServer(r, Quiet, buffer_pool=real)
    srv.start()
    srv.buffer_pool = Failing()
    client = socket.create_connection(srv.address)
    try:
        client.sendall(b"x")
        spin(r, 0.05)
        assert any(isinstance(e, MemoryError) for e in errors), errors
    finally:
        client.close()
        srv.close()
        r.close()
        real.close()


def test_memory_the_os_refused_is_waited_out_and_counted() -> None:
    """The pool's PoolMemoryError (mmap refused) is not a bug to report: the read is retried
    like for a full pool, counted in the reactor's stats, and served once memory is back."""
    errors: list[BaseException] = []
    r = Reactor(exception_handler=lambda exc, where: errors.append(exc))
    real = BufferPool(4096, capacity=4)
    refusals = [3]

    class Refusing:
        def acquire(self, timeout: float | None = None) -> Any:
            return real.acquire(timeout)

        def try_acquire(self) -> Any:
            if refusals[0]:
                refusals[0] -= 1
                raise PoolMemoryError("acquire: Cannot allocate memory")
            return real.try_acquire()

    got: list[bytes] = []

    class Keep(Quiet):
        def buffer_received(self, lease: Any, n: int) -> bool:
            got.append(bytes(lease.view[:n]))
            return False

    srv = TcpServer(r, Keep, buffer_pool=real)
    srv.start()
    srv.buffer_pool = Refusing()
    client = socket.create_connection(srv.address)
    try:
        client.sendall(b"x")
        spin(r, 0.1)
        assert errors == []
        assert got == [b"x"]
        assert r.stats["memory_refused"] == 3
    finally:
        client.close()
        srv.close()
        r.close()
    assert real.outstanding() == 0
    real.close()


def test_pools_offer_a_non_raising_acquire() -> None:
    with BufferPool(64, capacity=1) as pool:
        lease = pool.try_acquire()
        assert lease is not None
        assert pool.try_acquire() is None
        lease.release()
    fresh = FreshBytearrayPool(8)
    assert fresh.try_acquire().nbytes == 8


def test_a_large_file_goes_out_in_slices_that_let_others_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One flush sends at most SEND_SLICE bytes, then the loop runs other callbacks before
    the next slice (before, one sendfile call asked for up to 1 GiB); the bytes arrive whole."""
    size = 8 * SEND_SLICE + 12345
    path = tmp_path / "f.bin"
    with open(path, "wb") as f:
        f.truncate(size)
        f.seek(size - 5)
        f.write(b"tail!")
    counts: list[int] = []  # what each sendfile call asked for
    sent = [0]
    turns: list[int] = []  # bytes sent so far, each time another callback got the loop
    real_sendfile = os.sendfile

    def sendfile(out_fd: int, in_fd: int, offset: int, count: int) -> int:
        counts.append(count)
        n = real_sendfile(out_fd, in_fd, offset, count)
        sent[0] += n
        return n

    monkeypatch.setattr(connection_module.os, "sendfile", sendfile)
    r = Reactor()
    pool = BufferPool(4096, capacity=8)
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    received = bytearray()

    def reader() -> None:
        while len(received) < size:
            chunk = b.recv(1 << 20)
            if not chunk:
                break
            received.extend(chunk)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()

    def other() -> None:
        turns.append(sent[0])
        if len(received) < size and thread.is_alive():
            r.call_soon(other)

    conn = Connection()
    conn.open(r, a, pool, Quiet(), 4096)
    conn.write_file(os.open(path, os.O_RDONLY), 0, size)
    r.call_soon(other)
    end = time.monotonic() + 20
    while thread.is_alive() and time.monotonic() < end:
        r.call_later(0.01, lambda: None)
        r.run_once()
    thread.join(1)
    monkeypatch.undo()
    try:
        assert len(received) == size
        assert bytes(received[-5:]) == b"tail!"
        assert max(counts) <= SEND_SLICE
        # Between two turns of the other callback (one loop pass) at most a slice from the
        # writable edge and one from the rescheduled flush went out.
        steps = [b - a for a, b in itertools.pairwise(turns)]
        assert max(steps) <= 2 * SEND_SLICE
        assert len(set(turns)) >= 3  # the download took several passes, others ran between
    finally:
        conn.abort()
        r.close()
        b.close()
    assert pool.outstanding() == 0
    pool.close()


class Echo(Quiet):
    """Writes back what it reads."""

    def buffer_received(self, lease: Any, n: int) -> bool:
        self.conn.write(lease.view[:n], owner=lease)
        return True


def test_an_idle_connection_holds_no_write_queue() -> None:
    """The write queue is created only when a write has to wait and dropped once it drains:
    an idle connection, fresh or after a reply that did not fit the socket, holds no deque."""
    r = Reactor()
    pool = BufferPool(4096, capacity=64)
    a, b = socket.socketpair()
    conn = Connection()
    try:
        conn.open(r, a, pool, Echo(), 4096)
        assert conn.queue is None  # opened, nothing written
        b.sendall(b"ping")
        spin(r, 0.05)
        assert b.recv(16) == b"ping"
        assert conn.queue is None  # the reply went out at once: nothing was queued
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        big = b"x" * (1 << 20)
        conn.write(big)
        assert conn.queue is not None  # the socket is full: the rest waits
        assert conn.queued > 0
        received = bytearray()
        b.setblocking(False)
        end = time.monotonic() + 10
        while len(received) < len(big) and time.monotonic() < end:
            spin(r, 0.002)
            with contextlib.suppress(BlockingIOError):
                received.extend(b.recv(1 << 20))
        assert len(received) == len(big)
        spin(r, 0.01)
        assert conn.queue is None  # drained: the deque is gone again
        assert conn.queued == 0
    finally:
        conn.abort()
        r.close()
        b.close()
    assert conn.queue is None
    assert pool.outstanding() == 0
    pool.close()

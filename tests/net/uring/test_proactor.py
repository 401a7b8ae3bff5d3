"""The Proactor end to end over 127.0.0.1: echo, ring and pool exhaustion, floods, close, files."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from echo import Echo

from poolalloc.buffers import BufferPool
from poolalloc.net.uring.proactor import Proactor
from poolalloc.net.uring.server import UringTcpServer

pytestmark = [pytest.mark.uring, pytest.mark.net]


def start(p: Proactor, factory: Callable[[], Any], pool: Any) -> UringTcpServer:
    srv = UringTcpServer(p, factory, buffer_pool=pool)
    srv.start()
    return srv


def roundtrip(addr: tuple[str, int], payload: bytes) -> bytes:
    with socket.create_connection(addr, timeout=10) as c:
        sender = threading.Thread(target=lambda: (c.sendall(payload), c.shutdown(socket.SHUT_WR)))
        sender.start()
        chunks = []
        while chunk := c.recv(1 << 16):
            chunks.append(chunk)
        sender.join()
    return b"".join(chunks)


def test_multishot_accept_and_recv_echo(proactor: Proactor, run_with_client: Any) -> None:
    pool = BufferPool(4096, capacity=256)
    srv = start(proactor, Echo, pool)
    payloads = [os.urandom(n) for n in (1, 100, 4096, 4097, 300_000)]

    def client(out: dict[str, Any]) -> None:
        out["echo"] = [roundtrip(srv.address, p) for p in payloads]

    out = run_with_client(proactor, client)
    assert out["echo"] == payloads
    assert proactor.stats["completions"] > 0
    assert srv.totals["connections_total"] == 5
    srv.close()
    proactor.close()
    assert pool.outstanding() == 0
    pool.close()


def test_ring_exhaustion_loses_nothing(run_with_client: Any) -> None:
    p = Proactor(ring_buffers=4, initial_buffers=1)
    pool = BufferPool(1024, capacity=64)
    srv = start(p, Echo, pool)
    payload = os.urandom(1 << 20)  # 1 MiB through 1 KiB buffers, 4 at most in the ring

    def client(out: dict[str, Any]) -> None:
        out["echo"] = roundtrip(srv.address, payload)

    out = run_with_client(p, client)
    assert out["echo"] == payload
    assert p.stats["enobufs"] > 0, "the test must really empty the ring"
    srv.close()
    p.close()
    assert pool.outstanding() == 0
    pool.close()


class Hoarder(Echo):
    """Keeps every lease until the pool is empty, then gives them all back a little later."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.kept, self.data = capacity, [], bytearray()

    def buffer_received(self, lease: Any, n: int) -> bool:
        self.data += lease.view[:n]
        self.kept.append(lease)
        if len(self.kept) >= self.capacity // 2:
            self.conn.reactor.call_later(0.02, self.give_back)
        return True

    def give_back(self) -> None:
        kept, self.kept = self.kept, []
        for lease in kept:
            lease.release()

    def eof_received(self) -> bool:
        self.give_back()
        self.conn.write(bytes(self.data))
        return False


def test_pool_exhaustion_waits_and_loses_nothing(run_with_client: Any) -> None:
    # whole buffers: each kept lease is a block, so the hoarder really empties the pool
    p = Proactor(ring_buffers=8, initial_buffers=8, incremental=False)
    pool = BufferPool(512, capacity=8)
    srv = start(p, lambda: Hoarder(8), pool)
    payload = os.urandom(64 * 1024)

    def client(out: dict[str, Any]) -> None:
        out["echo"] = roundtrip(srv.address, payload)

    out = run_with_client(p, client)
    assert out["echo"] == payload
    assert p.ring_stats()["bgid1"]["pool_exhausted"] > 0
    srv.close()
    p.close()
    assert pool.outstanding() == 0
    pool.close()


def test_flood_of_connections_larger_than_the_ring(run_with_client: Any) -> None:
    p = Proactor(ring_buffers=16, initial_buffers=4)
    pool = BufferPool(2048, capacity=64)
    srv = start(p, Echo, pool)
    n = 300

    def client(out: dict[str, Any]) -> None:
        socks = [socket.create_connection(srv.address, timeout=10) for _ in range(n)]
        for i, s in enumerate(socks):
            s.sendall(b"%05d" % i * 100)
        replies = []
        for s in socks:
            got = b""
            while len(got) < 500:
                got += s.recv(4096)
            replies.append(got)
            s.close()
        out["ok"] = [r == b"%05d" % i * 100 for i, r in enumerate(replies)]

    out = run_with_client(p, client)
    assert len(out["ok"]) == n
    assert all(out["ok"])
    srv.close()
    p.close()
    assert pool.outstanding() == 0
    pool.close()


class Blaster(Echo):
    """Answers the first byte with a reply far larger than the socket buffers."""

    def buffer_received(self, lease: Any, n: int) -> bool:
        self.conn.write(b"z" * (8 << 20))
        return False


def drain(sock: socket.socket) -> None:
    while sock.recv(1 << 20):
        pass


def test_close_cancels_operations_in_flight(run_with_client: Any) -> None:
    p = Proactor(ring_buffers=16, initial_buffers=16)
    pool = BufferPool(4096, capacity=64)
    srv = start(p, Blaster, pool)
    held: list[socket.socket] = []

    def client(out: dict[str, Any]) -> None:
        held.extend(socket.create_connection(srv.address) for _ in range(5))  # idle: recv armed
        stuck = socket.create_connection(srv.address)
        stuck.sendall(b"!")  # the reply never fits: the send stays in flight
        stuck.recv(1)
        held.append(stuck)
        deadline = time.monotonic() + 5
        while len(srv.connections) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)  # until every accept completion was handled by the loop

    run_with_client(p, client)
    conns = list(srv.connections)
    assert sum(c.recv_armed for c in conns) == 5, "each idle connection has a receive armed"
    assert sum(c.paused and c.inflight == 1 for c in conns) == 1, "the stuck one: a send only"
    srv.close()
    p.close()
    assert p._targets == {}
    assert pool.outstanding() == 0
    held[-1].settimeout(5)
    with pytest.raises(ConnectionResetError):
        drain(held[-1])
    for s in held:
        s.close()
    pool.close()


class Pauser(Echo):
    """Pauses after the first buffer, resumes later; records the order of what arrived."""

    def __init__(self) -> None:
        self.data = bytearray()

    def buffer_received(self, lease: Any, n: int) -> bool:
        self.data += lease.view[:n]
        if len(self.data) == n:
            self.conn.pause_reading()
            self.conn.reactor.call_later(0.05, self.conn.resume_reading)
        return False

    def eof_received(self) -> bool:
        self.conn.write(bytes(self.data))
        return False


def test_pause_holds_data_and_keeps_order(proactor: Proactor, run_with_client: Any) -> None:
    pool = BufferPool(1024, capacity=128)
    srv = start(proactor, Pauser, pool)
    payload = os.urandom(200_000)

    def client(out: dict[str, Any]) -> None:
        out["echo"] = roundtrip(srv.address, payload)

    assert run_with_client(proactor, client)["echo"] == payload
    srv.close()
    proactor.close()
    assert pool.outstanding() == 0
    pool.close()


class FileSender(Echo):
    path = ""

    def connection_made(self, conn: Any) -> None:
        fd = os.open(self.path, os.O_RDONLY)
        conn.write(b"HEAD")
        conn.write_file(fd, 0, os.fstat(fd).st_size)
        conn.write(b"TAIL")
        conn.close()


def test_file_body_goes_out_by_splice(proactor: Proactor, run_with_client: Any) -> None:
    body = os.urandom(3 << 20)
    with tempfile.NamedTemporaryFile() as f:
        f.write(body)
        f.flush()
        FileSender.path = f.name
        pool = BufferPool(4096, capacity=32)
        srv = start(proactor, FileSender, pool)

        def client(out: dict[str, Any]) -> None:
            out["got"] = roundtrip(srv.address, b"")

        got = run_with_client(proactor, client)["got"]
    assert got == b"HEAD" + body + b"TAIL"
    srv.close()
    proactor.close()
    pool.close()


class ZeroCopy(Echo):
    """Sends one big lease-owned buffer; counts when the lease is released."""

    released: list[int] = []  # noqa: RUF012

    def connection_made(self, conn: Any) -> None:
        self.conn = conn
        lease = conn.pool.acquire()
        lease.view[:] = b"q" * lease.nbytes
        original = lease.release

        class Owner:
            def release(self) -> None:
                ZeroCopy.released.append(1)
                original()

        conn.write(lease.view, owner=Owner())
        conn.close()


def test_send_zc_releases_the_buffer_after_the_notification(run_with_client: Any) -> None:
    p = Proactor(zc_threshold=1 << 16)
    if p.zc_threshold is None:
        p.close()
        pytest.skip("the kernel has no IORING_OP_SEND_ZC")
    pool = BufferPool(1 << 18, capacity=4)
    srv = start(p, ZeroCopy, pool)
    ZeroCopy.released.clear()

    def client(out: dict[str, Any]) -> None:
        out["got"] = roundtrip(srv.address, b"")

    assert run_with_client(p, client)["got"] == b"q" * (1 << 18)
    srv.close()
    p.close()
    assert ZeroCopy.released == [1]
    assert pool.outstanding() == 0
    pool.close()


class HalfClose(Echo):
    def __init__(self) -> None:
        self.n = 0

    def buffer_received(self, lease: Any, n: int) -> bool:
        self.n += n
        return False

    def eof_received(self) -> bool:
        self.conn.write(b"got %d" % self.n)
        self.conn.close()
        return True


def test_half_close_gets_a_reply(proactor: Proactor, run_with_client: Any) -> None:
    pool = BufferPool(4096, capacity=16)
    srv = start(proactor, HalfClose, pool)

    def client(out: dict[str, Any]) -> None:
        out["got"] = roundtrip(srv.address, b"x" * 10_000)

    assert run_with_client(proactor, client)["got"] == b"got 10000"
    srv.close()
    proactor.close()
    pool.close()


def test_peer_reset_is_survived(proactor: Proactor, run_with_client: Any) -> None:
    pool = BufferPool(4096, capacity=64)
    srv = start(proactor, Blaster, pool)

    def client(out: dict[str, Any]) -> None:
        for _ in range(5):
            s = socket.create_connection(srv.address)
            s.sendall(b"!")
            s.recv(1000)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            s.close()  # RST while the server is still sending
        out["echo"] = roundtrip(srv.address, b"")  # and the server still serves

    run_with_client(proactor, client)
    srv.close()
    proactor.close()
    assert srv.totals["connections_total"] == 6
    assert pool.outstanding() == 0
    pool.close()


def test_idle_connection_object_costs_about_what_the_reactors_does() -> None:
    """10,000 idle connections: the object must keep sharing its dict keys with its class
    (CPython stops at 29 attributes), or each costs 2.5 KB instead of 1.1 KB."""
    import tracemalloc

    from poolalloc.net.epoll.connection import Connection
    from poolalloc.net.uring.connection import UringConnection

    def per_object(cls: type) -> float:
        cls()  # warm the class's shared keys
        tracemalloc.start()
        objs = [cls() for _ in range(2000)]
        size = tracemalloc.get_traced_memory()[0] / len(objs)
        tracemalloc.stop()
        return size

    assert per_object(UringConnection) <= 1.25 * per_object(Connection)


def test_a_resume_that_comes_before_the_cancelled_receive_ends_rearms_it(
    proactor: Proactor, run_with_client: Any
) -> None:
    """Pause (which cancels the multishot receive) and resume within one loop pass: the resume
    runs before the cancellation is even submitted, so it finds the receive still armed; the
    cancellation's completion must then arm it again, or the connection stops reading."""
    pool = BufferPool(4096, capacity=64)

    class Flipper(Echo):
        def buffer_received(self, lease: Any, n: int) -> bool:
            self.conn.pause_reading()  # as a protocol does when its output piles up...
            self.conn.resume_reading()  # ... and the peer catches up in the same pass
            return super().buffer_received(lease, n)

    srv = start(proactor, Flipper, pool)

    def client(out: dict[str, Any]) -> None:
        with socket.create_connection(srv.address, timeout=2.0) as c:
            for i in range(20):  # a connection that stopped reading shows as a timeout here
                byte = bytes([i])
                c.sendall(byte)
                assert c.recv(16) == byte, f"round {i}"
            out["rounds"] = i + 1

    out = run_with_client(proactor, client, timeout=30)
    assert "error" not in out, out.get("error")
    assert out["rounds"] == 20
    srv.close()
    proactor.close()
    assert pool.outstanding() == 0
    pool.close()

"""Closing on the Proactor where something is still pending: a connection waiting for a
receive buffer, a zero-length file range, a server left open, a zero-copy send whose
notification never comes."""

from __future__ import annotations

import gc
import os
import socket
import tempfile
import threading
import time
import warnings
from typing import Any

import pytest
from loop_passes import Quiet, run_until

import poolalloc
from poolalloc.net.uring import proactor as proactor_module
from poolalloc.net.uring.connection import UringConnection
from poolalloc.net.uring.proactor import Proactor, available
from poolalloc.net.uring.server import UringTcpServer

pytestmark = [pytest.mark.uring, pytest.mark.net, pytest.mark.timeout(60)]


@pytest.fixture(autouse=True)
def _need_uring() -> None:
    ok, reason = available()
    if not ok:
        pytest.skip(f"io_uring unavailable: {reason}")


def test_a_connection_closed_while_it_waits_for_a_receive_buffer_does_not_stop_the_loop() -> None:
    """ENOBUFS puts a connection on the Proactor's starved list; closed (and its pooled object
    reset) before blocks come back, the next pass must skip it, not raise out of run()."""
    kept: list[Any] = []

    class Keeper(Quiet):
        def buffer_received(self, lease: Any, nbytes: int) -> bool:
            kept.append(lease)  # every block stays with the protocol: the pool runs dry
            return True

    protos: list[Keeper] = []
    loop = Proactor(incremental=False, ring_buffers=4, initial_buffers=1)
    pool = poolalloc.BufferPool(1024, capacity=2, name="starved-close-test")
    server = UringTcpServer(loop, lambda: protos.append(Keeper()) or protos[-1], buffer_pool=pool)
    server.start()
    client = socket.create_connection(server.address, timeout=5)
    try:
        for n, piece in enumerate((b"A", b"B"), 1):
            client.sendall(piece * 100)
            run_until(loop, lambda n=n: len(kept) == n)  # type: ignore[misc]
        conn = protos[0].conn
        starved_before = loop.stats["enobufs"]
        client.sendall(b"C" * 100)  # no block is left for it: the receive waits for one
        run_until(loop, lambda: loop.stats["enobufs"] > starved_before and not conn.recv_armed)
        conn.abort()
        for _ in range(20):  # the reset comes from a callback; then the pass sees the list
            loop.call_later(0.002, lambda: None)
            loop.run_once()
        assert protos[0].lost
    finally:
        client.close()
        for lease in kept:
            lease.release()
        server.close()
        loop.close()
    assert pool.outstanding() == 0
    pool.close()


def test_an_empty_file_range_is_skipped_and_what_follows_is_sent() -> None:
    loop = Proactor()
    pool = poolalloc.BufferPool(4096, capacity=16, name="empty-range-test")
    client, server_side = socket.socketpair()
    with tempfile.NamedTemporaryFile() as f:
        f.write(b"xyz")
        f.flush()
        fd = os.open(f.name, os.O_RDONLY)
        conn, proto = UringConnection(), Quiet()
        conn.open(loop, server_side, pool, proto, 4096)
        conn.write(memoryview(b"head|"))
        conn.write_file(fd, 0, 0)  # nothing to send (the range closes its fd)
        conn.write(memoryview(b"|tail"))
        conn.close()
        got = bytearray()
        client.setblocking(False)

        def eof() -> bool:
            try:
                chunk = client.recv(100)
            except BlockingIOError:
                return False
            got.extend(chunk)
            return not chunk

        run_until(loop, eof)
        assert bytes(got) == b"head||tail"
    client.close()
    loop.close()
    assert pool.outstanding() == 0
    pool.close()


def test_closing_the_proactor_with_a_server_left_open_neither_waits_nor_accepts() -> None:
    loop = Proactor()
    pool = poolalloc.BufferPool(4096, capacity=8, name="open-server-close-test")
    server = UringTcpServer(loop, Quiet, buffer_pool=pool)
    server.start()
    loop.call_later(0.02, loop.stop)
    loop.run()
    started = time.monotonic()
    loop.close()  # the cancelled accept must not be armed again
    assert time.monotonic() - started < 1.0
    assert not server._listener.armed
    server.close()
    pool.close()


def test_a_zero_copy_send_the_kernel_still_holds_at_close_keeps_its_block() -> None:
    """A SEND_ZC to a peer that half-closed and never reads: its notification comes only once
    the orphaned socket is gone, long after close() stopped waiting. The block must stay out of
    the pool (the kernel transmits from its pages), with a warning, never handed out again."""
    size = 1 << 16
    pool = poolalloc.BufferPool(size, capacity=8, name="zc-close-test")

    class Sender(Quiet):
        def connection_made(self, conn: Any) -> None:
            super().connection_made(conn)
            lease = conn.pool.acquire()
            lease.view[:] = b"Q" * size
            conn.write(lease.view, owner=lease)  # a whole block: above the SEND_ZC threshold

    loop = Proactor()
    if loop.zc_threshold is None:
        loop.close()
        pytest.skip("the kernel has no IORING_OP_SEND_ZC")
    server = UringTcpServer(loop, Sender, buffer_pool=pool)
    server.start()
    client = socket.socket()
    client.connect(server.address)
    # after connect: the server saw a 64 KiB window, so it sends zero-copy (a window this small
    # from the start gets a copied send), but the block does not fit the buffer: it stays queued
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    run_until(loop, lambda: pool.outstanding() > 0)
    client.shutdown(socket.SHUT_WR)  # the server closes gracefully; the peer reads nothing
    end = time.monotonic() + 0.3
    run_until(loop, lambda: time.monotonic() > end)
    server.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loop.close()
    assert [w.category for w in caught] == [ResourceWarning]
    assert loop.stats["stranded"] == 1
    del loop, server
    gc.collect()
    assert pool.outstanding() == 1  # the block the kernel still reads from
    others = [pool.acquire() for _ in range(7)]
    for lease in others:
        lease.view[:] = b"X" * size  # what the process writes next
    got = bytearray()
    client.settimeout(3)
    reader = threading.Thread(target=lambda: got.extend(_read_all(client)))
    reader.start()
    reader.join(10)
    assert got == b"Q" * size
    client.close()
    for lease in others:
        lease.release()
    # The peer has everything and is gone: the kernel has let go of the pages, and the test
    # may hand the block back (a process has no such moment and keeps it)
    proactor_module._STRANDED.clear()
    gc.collect()
    assert pool.outstanding() == 0
    pool.close()


def _read_all(sock: socket.socket) -> bytes:
    out = bytearray()
    try:
        while chunk := sock.recv(1 << 16):
            out.extend(chunk)
    except (TimeoutError, ConnectionError):
        pass
    return bytes(out)

"""The peer's EOF reaches a paused connection's protocol after every byte sent before it.

A protocol that pauses reading (a full write queue, a relay whose other side is slow) may see
the peer send the rest of its data and half-close meanwhile. Edge-triggered epoll reports
that input once, while the connection is paused; io_uring completes the receives and the FIN
while they are held. Both engines must deliver all the bytes, then the EOF, once resumed.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

import poolalloc
from poolalloc.net.epoll.connection import Connection
from poolalloc.net.epoll.reactor import Reactor

TOTAL = 120_000  # fits the socket buffers: all of it is queued before reading starts
CHUNK = 65536


def _loop(engine: str) -> tuple[Any, type]:
    if engine == "uring":
        from poolalloc.net.uring.connection import UringConnection
        from poolalloc.net.uring.proactor import Proactor, available

        ok, reason = available()
        if not ok:
            pytest.skip(f"io_uring unavailable: {reason}")
        return Proactor(ring_buffers=64, initial_buffers=8), UringConnection
    return Reactor(), Connection


class PauseOnce:
    """Pauses on the first read; resumed from another thread (through the loop's wakeup)."""

    def __init__(self) -> None:
        self.got = bytearray()
        self.eof_at: int | None = None
        self.paused_once = False

    def connection_made(self, conn: Any) -> None:
        self.conn = conn

    def buffer_received(self, lease: Any, nbytes: int) -> bool:
        self.got += lease.view[:nbytes]
        if not self.paused_once:
            self.paused_once = True
            self.conn.pause_reading()
        return False

    def eof_received(self) -> bool:
        self.eof_at = len(self.got)
        self.conn.reactor.stop()
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        pass


@pytest.mark.parametrize("engine", ["epoll", "uring"])
def test_eof_comes_after_the_bytes_that_arrived_while_paused(engine: str) -> None:
    loop, connection_class = _loop(engine)
    payload = bytes(range(256)) * (TOTAL // 256) + bytes(TOTAL % 256)
    # A socketpair: reading it wakes nobody, unlike TCP's window updates, which make epoll
    # report the socket again and would hide a lost edge.
    client, server_side = socket.socketpair()
    # Everything, FIN included, is in the socket before the connection reads: epoll reports
    # it in one edge and io_uring completes it in one batch, both while the protocol is paused.
    client.sendall(payload)
    client.shutdown(socket.SHUT_WR)
    proto = PauseOnce()

    def resume_later() -> None:
        # From another thread, so that the last event the loop saw is its wakeup, not the FIN.
        threading.Event().wait(0.3)
        loop.call_soon_threadsafe(proto.conn.resume_reading)

    resumer = threading.Thread(target=resume_later, daemon=True)
    with poolalloc.BufferPool(CHUNK, capacity=64) as pool:
        conn = connection_class()
        try:
            conn.open(loop, server_side, pool, proto, CHUNK)
            resumer.start()
            timer = loop.call_later(10.0, loop.stop)
            loop.run()
            timer.cancel()
            if not conn.closed:
                conn.abort()
            loop.run_once()
        finally:
            resumer.join(5)
            loop.close()
            client.close()
        assert proto.paused_once
        assert proto.eof_at is not None, f"no EOF after {len(proto.got)} of {TOTAL} bytes"
        assert proto.eof_at == TOTAL
        assert bytes(proto.got) == payload
        assert pool.outstanding() == 0

"""Receives that complete between a pause and its cancel: held as their leases, bounded.

A multishot receive on a socket that already holds several blocks' worth of data completes
them all in one batch; a protocol that pauses on the first sees the others arrive while it is
paused. They are kept as the pooled leases they arrived in (no copy), delivered in order on
resume, released if the connection closes first, and never more than the pool ring's
``hold_limit`` at once (past it they are copied out, as before).
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from loop_passes import run_until, spin

import poolalloc
from poolalloc.net.transport import HeldBytes
from poolalloc.net.uring._buffers import PoolRing
from poolalloc.net.uring.connection import UringConnection
from poolalloc.net.uring.proactor import Proactor, available
from poolalloc.net.uring.ring import Ring

pytestmark = [pytest.mark.uring, pytest.mark.net, pytest.mark.timeout(60)]

BLOCK = 4096
PIECES = 5  # blocks' worth of data in the socket before the connection reads


@pytest.fixture(autouse=True)
def _need_uring() -> None:
    ok, reason = available()
    if not ok:
        pytest.skip(f"io_uring unavailable: {reason}")


class PauseFirst:
    """Pauses on the first read; records every delivery (its bytes and the object's type)."""

    def __init__(self) -> None:
        self.conn: Any = None
        self.got: list[tuple[type, bytes]] = []
        self.lost: list[BaseException | None] = []
        self.fail_on_held = False

    def connection_made(self, conn: Any) -> None:
        self.conn = conn

    def buffer_received(self, lease: Any, nbytes: int) -> bool:
        self.got.append((type(lease), lease.view[:nbytes].tobytes()))
        if len(self.got) == 1:
            self.conn.pause_reading()
        elif self.fail_on_held:
            raise RuntimeError("protocol bug")
        return False

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)


def _paused_with_racing_receives(
    capacity: int = 64,
) -> tuple[Proactor, Any, UringConnection, PauseFirst, socket.socket, bytes]:
    """A connection paused by its first read, with the rest of the data completed meanwhile."""
    loop = Proactor(ring_buffers=16, initial_buffers=8)
    pool = poolalloc.BufferPool(BLOCK, capacity=capacity, name="held-test")
    client, server_side = socket.socketpair()
    payload = bytes(i % 251 for i in range(PIECES * BLOCK))
    client.sendall(payload)  # all queued before the receive is armed: one batch completes it
    proto = PauseFirst()
    conn = UringConnection()
    conn.open(loop, server_side, pool, proto, BLOCK)
    run_until(loop, lambda: len(proto.got) == 1)
    spin(loop, 0.05)  # the cancel goes in; nothing more arrives
    return loop, pool, conn, proto, client, payload


def _all_returned(pool: poolalloc.BufferPool) -> None:
    """Every lease came back (each acquire has its release); the pool closes."""
    assert pool.outstanding() == 0
    stats = pool.stats()
    assert stats.acquires == stats.releases
    pool.close()


def _stats(loop: Proactor) -> dict[str, int]:
    return loop.ring_stats()["bgid1"]


def test_racing_receives_are_held_as_leases_and_delivered_in_order_on_resume() -> None:
    loop, pool, conn, proto, client, payload = _paused_with_racing_receives()
    try:
        assert conn.paused
        assert len(proto.got) == 1
        held = conn.held_blocks
        assert held >= 1, "no receive completed after the pause: the test did not race"
        assert _stats(loop)["held"] == held
        assert _stats(loop)["held_copied"] == 0
        # the held blocks are the pool's: outstanding beyond what the ring stages
        assert pool.outstanding() == _stats(loop)["in_ring"] + held
        conn.resume_reading()
        run_until(loop, lambda: sum(len(data) for _, data in proto.got) == len(payload))
        assert b"".join(data for _, data in proto.got) == payload
        kinds = {kind for kind, _ in proto.got}
        assert HeldBytes not in kinds  # no copy: every delivery was a pooled lease
        assert conn.held_blocks == 0
        assert _stats(loop)["held"] == 0
        assert not conn.paused
    finally:
        conn.abort()
        loop.close()
        client.close()
    _all_returned(pool)


@pytest.mark.parametrize("how", ["close", "abort"])
def test_held_receives_go_back_to_the_pool_when_the_connection_closes(how: str) -> None:
    loop, pool, conn, proto, client, _ = _paused_with_racing_receives()
    try:
        assert conn.held_blocks >= 1
        if how == "close":
            conn.close()  # graceful: half-close, then discard input until the peer's EOF
            client.close()
            run_until(loop, lambda: conn.closed)
        else:
            conn.abort()
        assert conn.held_blocks == 0
        assert _stats(loop)["held"] == 0
        assert len(proto.got) == 1  # what was held is dropped, not delivered
        assert proto.lost == [None]
        spin(loop, 0.02)
        assert pool.outstanding() == _stats(loop)["in_ring"]
    finally:
        loop.close()
        client.close()
    _all_returned(pool)


def test_past_the_hold_limit_racing_receives_are_copied_out() -> None:
    # capacity 8: the ring stages at most 4 blocks and paused connections hold at most 2
    loop, pool, conn, proto, client, payload = _paused_with_racing_receives(capacity=8)
    try:
        stats = _stats(loop)
        assert stats["hold_limit"] == 2
        assert conn.held_blocks <= 2
        assert stats["held"] == conn.held_blocks
        kept, copied = stats["held"], stats["held_copied"]
        assert kept + copied >= 1, "no receive completed after the pause: the test did not race"
        assert copied == max(0, kept + copied - 2)
        conn.resume_reading()
        run_until(loop, lambda: sum(len(data) for _, data in proto.got) == len(payload))
        assert b"".join(data for _, data in proto.got) == payload
        # in arrival order: the kept blocks first, then the copies of the later ones
        kinds = [kind for kind, _ in proto.got[1 : 1 + kept + copied]]
        assert HeldBytes not in kinds[:kept]
        assert kinds[kept:] == [HeldBytes] * copied
        assert _stats(loop)["held"] == 0
    finally:
        conn.abort()
        loop.close()
        client.close()
    assert pool.outstanding() == 0
    pool.close()


def test_a_protocol_error_on_a_held_lease_releases_it_and_aborts() -> None:
    loop, pool, conn, proto, client, _ = _paused_with_racing_receives()
    errors: list[BaseException] = []
    loop.exception_handler = lambda exc, where: errors.append(exc)
    try:
        assert conn.held_blocks >= 1
        proto.fail_on_held = True
        conn.resume_reading()
        run_until(loop, lambda: conn.closed)
        assert [type(e) for e in errors] == [RuntimeError]
        assert isinstance(proto.lost[0], RuntimeError)
        assert _stats(loop)["held"] == 0
    finally:
        loop.close()
        client.close()
    assert pool.outstanding() == 0
    pool.close()


def test_ring_bytes_bounds_the_staged_blocks() -> None:
    ring = Ring(8)
    big = poolalloc.BufferPool(1 << 20, capacity=64)
    small = poolalloc.BufferPool(BLOCK, capacity=64)
    try:
        limits = [
            PoolRing(ring, big, bgid=1, entries=16, initial=8, max_bytes=2 << 20).limit,
            PoolRing(ring, big, bgid=2, entries=16, initial=8, max_bytes=1).limit,
            PoolRing(ring, big, bgid=3, entries=16, initial=8).limit,
            PoolRing(ring, small, bgid=4, entries=16, initial=8, max_bytes=2 << 20).limit,
        ]
        # 2 MiB of 1 MiB blocks; never fewer than two; no bound; the entries bind first
        assert limits == [2, 2, 16, 16]
    finally:
        ring.close()
        big.close()
        small.close()


def test_a_proactor_with_ring_bytes_stages_no_more() -> None:
    loop = Proactor(ring_buffers=16, initial_buffers=8, ring_bytes=128 << 10)
    pool = poolalloc.BufferPool(64 << 10, capacity=64)
    try:
        stats = loop.pool_ring(pool).stats()
        assert (stats["limit"], stats["target"], stats["in_ring"]) == (2, 2, 2)
    finally:
        loop.close()
    assert pool.outstanding() == 0
    pool.close()

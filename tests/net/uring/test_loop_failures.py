"""A Proactor pass cut short by KeyboardInterrupt, and operations that fail: every other
connection goes on, the failing one is aborted (it would otherwise wait for good).

The input side of a cut pass (undispatched completions) is checked on both engines in
``tests/net/test_transport.py``; here the Proactor's own lists: connections waiting for their
flush, and connections waiting for a receive buffer.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from loop_passes import Quiet, run_until

import poolalloc
from poolalloc.net.uring.connection import UringConnection
from poolalloc.net.uring.proactor import Proactor, available

pytestmark = [pytest.mark.uring, pytest.mark.net, pytest.mark.timeout(60)]


@pytest.fixture
def setup() -> Iterator[tuple[Proactor, list[tuple[UringConnection, Quiet, socket.socket]]]]:
    ok, reason = available()
    if not ok:
        pytest.skip(f"io_uring unavailable: {reason}")
    loop = Proactor(ring_buffers=16, initial_buffers=4)
    errors: list[BaseException] = []
    loop.exception_handler = lambda exc, where: errors.append(exc)
    loop.errors = errors  # type: ignore[attr-defined]
    pool = poolalloc.BufferPool(4096, capacity=64, name="cut-pass-test")
    conns = []
    for _ in range(3):
        client, server_side = socket.socketpair()
        proto, conn = Quiet(), UringConnection()
        conn.open(loop, server_side, pool, proto, 4096)
        conns.append((conn, proto, client))
    yield loop, conns
    for conn, _, client in conns:
        if not conn.closed:
            conn.abort()
        client.close()
    loop.close()
    assert pool.outstanding() == 0
    pool.close()


def _received(client: socket.socket, n: int) -> Callable[[], bool]:
    got = bytearray()

    def done() -> bool:
        with contextlib.suppress(BlockingIOError):
            got.extend(client.recv(1 << 20, socket.MSG_DONTWAIT))
        return len(got) >= n

    return done


def test_flushes_a_cut_pass_left_are_made_by_the_next(setup: Any) -> None:
    loop, conns = setup
    payload = memoryview(b"x" * 40_000)  # not a small bytes write: queued for the pass's flush
    first = conns[0][0]
    real_flush = first.flush_now
    calls: list[int] = []

    def interrupted_flush() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        real_flush()

    first.flush_now = interrupted_flush  # type: ignore[method-assign]
    for conn, _, _ in conns:
        conn.write(payload)
    with pytest.raises(KeyboardInterrupt):
        loop.run_once()
    done = [_received(client, len(payload)) for _, _, client in conns]
    run_until(loop, lambda: sum(d() for d in done) == len(done))  # every peer reads each pass
    assert len(calls) == 2  # the interrupted flush was made again, once
    assert loop.errors == []


def test_a_receive_the_ring_refuses_to_rearm_aborts_its_connection_only(setup: Any) -> None:
    loop, conns = setup
    (refused, refused_proto, _), (other, other_proto, other_client) = conns[0], conns[1]

    def no_receive() -> None:
        raise OSError(errno.EBUSY, "the ring refused the receive")

    refused.recv_armed = False  # as after ENOBUFS ended the multishot receive
    refused.arm_recv = no_receive  # type: ignore[method-assign]
    loop.starved(refused, refused.pool_ring)
    run_until(loop, lambda: bool(refused_proto.lost))
    assert isinstance(refused_proto.lost[0], OSError)
    assert [type(e) for e in loop.errors] == [OSError]
    # the loop goes on: the other connections still read and write
    other.write(memoryview(b"y" * 30_000))
    run_until(loop, _received(other_client, 30_000))
    assert not other_proto.lost


def test_a_flush_that_fails_aborts_its_connection_only(setup: Any) -> None:
    loop, conns = setup
    (failing, failing_proto, _), (other, other_proto, other_client) = conns[0], conns[1]

    def broken_flush() -> None:
        raise RuntimeError("the ring refused the send")

    failing.flush_now = broken_flush  # type: ignore[method-assign]
    failing.write(memoryview(b"z" * 30_000))
    other.write(memoryview(b"y" * 30_000))
    run_until(loop, _received(other_client, 30_000))
    run_until(loop, lambda: bool(failing_proto.lost))
    assert isinstance(failing_proto.lost[0], RuntimeError)
    assert [type(e) for e in loop.errors] == [RuntimeError]
    assert not other_proto.lost


def test_a_large_write_on_a_unix_socket_is_sent_without_zero_copy(setup: Any) -> None:
    """Zero-copy sends are TCP's: a write past the threshold on a Unix socket (which refuses
    SEND_ZC) is sent as an ordinary send, not aborted."""
    loop, conns = setup
    conn, proto, client = conns[0]
    payload = bytes(range(256)) * 1024  # 256 KiB, past the 64 KiB zero-copy threshold
    conn.write(memoryview(payload))
    run_until(loop, _received(client, len(payload)))
    assert not proto.lost
    assert loop.errors == []


def test_an_output_pause_whose_cancel_fails_still_ends_when_the_queue_drains(
    setup: Any,
) -> None:
    loop, conns = setup
    conn, _, client = conns[0]
    conn.high_water, conn.low_water = 64 * 1024, 16 * 1024

    def refused_cancel() -> None:
        raise OSError(16, "the ring refused the cancel")

    conn._stop_reading = refused_cancel  # type: ignore[method-assign]
    with pytest.raises(OSError, match="refused the cancel"):
        conn.write(memoryview(bytearray(200 * 1024)))
    assert conn.paused
    run_until(loop, _received(client, 200 * 1024))
    run_until(loop, lambda: not conn.paused)  # the pause was the queue's: it ended with it

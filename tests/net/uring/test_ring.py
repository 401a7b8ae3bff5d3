"""The raw ring: setup and teardown, batched completions, buffer rings, probe, bad arguments."""

from __future__ import annotations

import array
import ctypes
import errno
import mmap
import os
import socket
from typing import Any

import pytest

from poolalloc.errors import PoolValueError
from poolalloc.net.uring.proactor import available
from poolalloc.net.uring.ring import (
    CQE_BUFFER_SHIFT,
    CQE_F_BUFFER,
    CQE_F_MORE,
    Ring,
    new_iov,
    probe,
)

pytestmark = pytest.mark.uring


@pytest.fixture(autouse=True)
def _need_uring() -> None:
    ok, reason = available()
    if not ok:
        pytest.skip(f"io_uring unavailable: {reason}")


def test_probe_reports_the_environment() -> None:
    result = probe()
    assert result.ok
    assert result.reason == "io_uring is available"
    assert result.io_uring_disabled in (-1, 0, 1)
    assert result.memlock_bytes > 0
    with open("/proc/self/status") as f:
        seccomp = next(int(line.split()[1]) for line in f if line.startswith("Seccomp:"))
    assert result.seccomp == seccomp


def test_setup_and_teardown_many_rings() -> None:
    for _ in range(50):
        ring = Ring(32)
        assert ring.fd >= 0
        assert not ring.closed
        ring.close()
        ring.close()  # idempotent
        assert ring.closed


def test_completions_come_back_in_one_batch() -> None:
    ring = Ring(64)
    try:
        for ud in range(40):
            ring.prep_nop(ud)
        assert ring.pending() == 40
        got = list(ring.enter(40, 1_000_000_000))
        assert sorted(ud for ud, _, _ in got) == list(range(40))
        assert all(res == 0 for _, res, _ in got)
        assert ring.pending() == 0
    finally:
        ring.close()


def test_full_submission_queue_is_flushed_not_lost() -> None:
    ring = Ring(8)
    try:
        for ud in range(100):  # far more than the 8 SQ slots
            ring.prep_nop(ud)
        seen: list[int] = []
        while len(seen) < 100:
            seen += [ud for ud, _, _ in ring.enter(1, 1_000_000_000)]
        assert sorted(seen) == list(range(100))
    finally:
        ring.close()


def test_timeout_returns_nothing_without_error() -> None:
    ring = Ring(8)
    try:
        assert list(ring.enter(1, 5_000_000)) == []
    finally:
        ring.close()


@pytest.mark.parametrize("entries", [0, 3, 65536])
def test_bad_buffer_ring_sizes_raise(entries: int) -> None:
    ring = Ring(8)
    try:
        with pytest.raises(PoolValueError):
            ring.new_bufring(1, entries)
    finally:
        ring.close()


def test_bad_ring_size_raises() -> None:
    with pytest.raises(PoolValueError):
        Ring(0)


def test_send_to_bad_descriptor_raises() -> None:
    ring = Ring(8)
    try:
        with pytest.raises(OSError, match="Bad file descriptor") as info:
            ring.prep_send(-1, 4096, 1, 1)
        assert info.value.errno == errno.EBADF
    finally:
        ring.close()


def test_sendv_gathers_buffers_in_order() -> None:
    ring = Ring(8)
    a, b = socket.socketpair()
    try:
        views = [b"ab", bytearray(b"cde"), memoryview(b"wxyz")[1:3], b"!"]
        iov, msg = new_iov(len(views))
        pins = ring.prep_sendv(a.fileno(), views, iov, msg, 42)
        assert len(pins) == len(views)
        assert list(ring.enter(1, -1)) == [(42, 8, 0)]
        assert b.recv(64) == b"abcdexy!"
    finally:
        a.close()
        b.close()
        ring.close()


def test_sendv_takes_a_view_of_4_gib_and_more() -> None:
    # Lengths travel as 64-bit values: a 32-bit one made a view of 4 GiB or more an
    # OverflowError before anything was queued. The peer is gone before the ring enters, so the
    # send fails at once and the mapping is never touched beyond its first page; it is private
    # and reserves no swap, so no machine has to be able to back 4 GiB.
    noreserve = getattr(mmap, "MAP_NORESERVE", 0x4000)  # a named constant from 3.13
    big = mmap.mmap(-1, (4 << 30) + 10, flags=mmap.MAP_PRIVATE | noreserve)
    big[:5] = b"hello"
    ring = Ring(8)
    a, b = socket.socketpair()
    view = memoryview(big)
    pins: list[Any] = []
    try:
        iov, msg = new_iov(1)
        pins = ring.prep_sendv(a.fileno(), [view], iov, msg, 7)
        assert iov[1] == len(big)  # the iovec C wrote carries the whole length
        b.close()
        [(ud, res, _flags)] = list(ring.enter(1, 5_000_000_000))
        assert ud == 7
        assert res in (-errno.EPIPE, -errno.ECONNRESET)
    finally:
        pins.clear()  # first: a pin still held would keep the view from being released
        view.release()
        a.close()
        b.close()
        ring.close()
        big.close()


def test_sendv_refused_raises_and_unpins_at_once() -> None:
    ring = Ring(8)
    try:
        data = bytearray(b"abc")
        iov, msg = new_iov(1)
        with pytest.raises(OSError, match="Bad file descriptor") as info:
            ring.prep_sendv(-1, [data], iov, msg, 1)
        assert info.value.errno == errno.EBADF
        data += b"d"  # a pin still held would make this a BufferError
        with pytest.raises(PoolValueError, match="sendmsg"):
            ring.prep_sendv(0, [], iov, msg, 1)  # nothing to send
        assert ring.pending() == 0
    finally:
        ring.close()


def test_multishot_recv_picks_buffers_and_reports_enobufs() -> None:
    ring = Ring(16)
    br = ring.new_bufring(3, 4)
    blocks = [bytearray(8) for _ in range(4)]
    keep = [memoryview(b) for b in blocks]
    for bid, block in enumerate(blocks):
        addr = ctypes.addressof((ctypes.c_char * 8).from_buffer(block))
        br.add(addr, 8, bid)
    br.publish()
    a, b = socket.socketpair()
    try:
        ring.prep_recv(b.fileno(), 3, 7)
        a.sendall(b"x" * 40)  # 40 bytes, 4 buffers of 8: the fifth receive finds none
        got, enobufs = [], False
        for _ in range(20):
            for ud, res, flags in ring.enter(1, 200_000_000):
                assert ud == 7
                if flags & CQE_F_BUFFER:
                    got.append((flags >> CQE_BUFFER_SHIFT, res, bool(flags & CQE_F_MORE)))
                elif res == -errno.ENOBUFS:
                    enobufs = True
            if enobufs:
                break
        assert [bid for bid, _, _ in got] == [0, 1, 2, 3]
        assert sum(n for _, n, _ in got) == 32
        assert enobufs
        assert bytes(blocks[0]) == b"x" * 8
        assert b.recv(100) == b"x" * 8  # the rest stayed in the socket: nothing lost
    finally:
        br.close()
        ring.close()
        a.close()
        b.close()
        del keep


def test_cancel_ends_a_multishot_receive() -> None:
    ring = Ring(16)
    br = ring.new_bufring(1, 8)
    block = bytearray(64)
    br.add(ctypes.addressof((ctypes.c_char * 64).from_buffer(block)), 64, 0)
    br.publish()  # an empty ring would end the receive at once with ENOBUFS
    a, b = socket.socketpair()
    try:
        ring.prep_recv(b.fileno(), 1, 11)
        ring.prep_cancel(99, target=11)
        seen = {}
        for _ in range(10):
            seen.update({ud: res for ud, res, _ in ring.enter(1, 200_000_000)})
            if len(seen) == 2:
                break
        assert seen == {11: -errno.ECANCELED, 99: 0}
    finally:
        br.close()
        ring.close()
        a.close()
        b.close()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_inherited_ring_refuses_in_a_forked_child() -> None:
    ring = Ring(8)
    try:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                ring.prep_nop(1)
            except OSError as exc:
                code = 0 if exc.errno == errno.ECHILD else 2
            try:
                child_ring = Ring(8)  # a child builds its own ring
                child_ring.prep_nop(3)
                ok = list(child_ring.enter(1, 1_000_000_000)) == [(3, 0, 0)]
                child_ring.close()
                code = code if ok else 3
            except BaseException:
                code = 4
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        ring.prep_nop(5)  # the parent's ring is untouched
        assert list(ring.enter(1, 1_000_000_000)) == [(5, 0, 0)]
    finally:
        ring.close()


def test_single_issuer_ring_belongs_to_the_first_thread_that_enters() -> None:
    import threading

    ring = Ring(8, single_issuer=True)
    ring.prep_nop(1)  # queuing from the building thread is fine: nothing entered yet
    got: list[object] = []
    worker = threading.Thread(target=lambda: got.extend(ring.enter(1, 1_000_000_000)))
    worker.start()
    worker.join()
    assert got == [(1, 0, 0)]
    try:
        with pytest.raises(OSError, match="exists") as info:
            list(ring.enter(0, 0))
        assert info.value.errno == errno.EEXIST
    finally:
        ring.close()


def test_default_ring_may_change_threads() -> None:
    import threading

    ring = Ring(8)
    ring.prep_nop(1)
    worker = threading.Thread(target=lambda: list(ring.enter(1, 1_000_000_000)))
    worker.start()
    worker.join()
    ring.prep_nop(2)
    assert list(ring.enter(1, 1_000_000_000)) == [(2, 0, 0)]
    ring.close()


def test_a_closed_ring_and_its_buffer_rings_raise_ebadf() -> None:
    """Every call on a closed ring or buffer ring raises ``OSError(EBADF)`` (as on a closed
    socket): they raised cffi's ``TypeError`` about a NULL pointer before, and the counters
    (``pending``) read freed memory. A buffer ring left open when its ring closes is closed
    with it: its close afterwards followed the ring's freed C structure."""
    ring = Ring(8)
    bufring = ring.new_bufring(1, 8)
    block = mmap.mmap(-1, 4096)
    address = ctypes.addressof(ctypes.c_char.from_buffer(block))
    iov, msg = new_iov(1)
    ring.close()
    ring.close()  # idempotent
    assert ring.closed
    assert ring.fd == -1
    assert ring.pending() == 0
    assert ring.csend_inflight() == 0
    assert ring.registered_index == -1
    ring.submit()  # nothing queued: nothing to say
    calls = [
        lambda: ring.prep_nop(1),
        lambda: ring.prep_accept(0, 1),
        lambda: ring.prep_recv(0, 1, 1),
        lambda: ring.prep_send(0, address, 1, 1),
        lambda: ring.prep_send_buffer(0, b"x", 1),
        lambda: ring.prep_sendmsg(0, iov, 1, msg, 1),
        lambda: ring.prep_sendv(0, [b"x"], iov, msg, 1),
        lambda: ring.prep_poll(0, 1, 1),
        lambda: ring.prep_cancel(1),
        lambda: ring.prep_cancel_all(1),
        lambda: ring.prep_splice(0, 1, nbytes=1, ud=1),
        lambda: ring.enter(0, 0),
        lambda: ring.reap(0, 0),
        lambda: ring.csend(0, b"x", 1),
        lambda: ring.csend_busy(0, 1),
        lambda: ring.new_bufring(2, 8),
        lambda: bufring.add(address, 4096, 0),
        lambda: bufring.add_many([(address, 0)], 4096),
        bufring.publish,
        lambda: bufring.readd(array.array("H", [0])),
        lambda: bufring.readd(array.array("H")),  # nothing to stage: closed all the same
        lambda: bufring.add_many([], 4096),
    ]
    for call in calls:
        with pytest.raises(OSError, match="Bad file descriptor") as caught:
            call()
        assert caught.value.errno == errno.EBADF, caught.value
    bufring.close()  # closed with the ring already: idempotent
    block.close()

"""Work the ring does in C: copied small sends, recycled receive buffers, the registered ring fd."""

from __future__ import annotations

import errno
import mmap
import socket
import threading
import time
from typing import Any, ClassVar

import pytest
from loop_passes import Quiet, run_until

from poolalloc.buffers import BufferPool
from poolalloc.net.uring.proactor import Proactor, available
from poolalloc.net.uring.ring import CSEND_MAX, CSEND_PENDING_MAX, SEND_MAX, Ring
from poolalloc.net.uring.server import UringTcpServer

pytestmark = [pytest.mark.uring, pytest.mark.net]


@pytest.fixture(autouse=True)
def _need_uring() -> None:
    ok, reason = available()
    if not ok:
        pytest.skip(f"io_uring unavailable: {reason}")


def drain(ring: Ring, until: Any, limit: float = 5.0) -> list[tuple[int, int, int]]:
    """Enter until ``until(events)`` holds (bounded); returns every event seen."""
    seen: list[tuple[int, int, int]] = []
    deadline = time.monotonic() + limit
    while not until(seen):
        assert time.monotonic() < deadline, f"timed out; events so far: {seen}"
        seen += list(ring.enter(1, 20_000_000))
    return seen


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, "peer closed early"
        out += chunk
    return bytes(out)


def test_copied_sends_arrive_in_order_and_post_no_completion() -> None:
    ring = Ring(16)
    a, b = socket.socketpair()
    try:
        parts = [bytes([i]) * (i + 1) for i in range(50)]  # written while one is in flight
        for part in parts:
            assert ring.csend(a.fileno(), part, 7 << 8 | 5) == 0
        want = b"".join(parts)
        drain(ring, lambda _: ring.csend_inflight() == 0)
        assert recv_exactly(b, len(want)) == want
        assert list(ring.enter(0, 0)) == []  # success is handled in C: nothing for Python
        ring.csend_detach(a.fileno())
    finally:
        ring.close()
        a.close()
        b.close()


def test_copied_send_notifies_when_asked() -> None:
    ring = Ring(16)
    a, b = socket.socketpair()
    try:
        assert ring.csend(a.fileno(), b"hello", 9) == 0
        assert ring.csend_busy(a.fileno(), 11) == 1  # the ud given here is the one notified
        events = drain(ring, lambda ev: ev)
        assert events == [(11, 0, 0)]
        assert ring.csend_busy(a.fileno(), 11) == 0
        assert recv_exactly(b, 5) == b"hello"
        ring.csend_detach(a.fileno())
    finally:
        ring.close()
        a.close()
        b.close()


def test_copied_sends_decline_what_they_must_not_take() -> None:
    ring = Ring(16)
    a, b = socket.socketpair()
    try:
        fd = a.fileno()
        assert ring.csend(fd, b"x" * (CSEND_MAX + 1), 1) == errno.EMSGSIZE
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        # The peer never reads: the first send stays in flight, the rest is buffered up to the
        # bound, then the ring declines (the caller queues it itself, with backpressure).
        results = [ring.csend(fd, b"y" * CSEND_MAX, 1) for _ in range(200)]
        list(ring.enter(0, 0))
        assert errno.EAGAIN in results
        accepted = results.index(errno.EAGAIN)
        assert accepted * CSEND_MAX <= CSEND_MAX + CSEND_PENDING_MAX
        with pytest.raises(OSError, match="send"):
            ring.csend(-1, b"z", 1)
        # Detaching cancels the blocked send; its record is freed at the final completion,
        # which Python never sees.
        ring.csend_detach(fd)
        events = drain(ring, lambda _: ring.csend_inflight() == 0)
        assert all(ud == 0 for ud, _, _ in events)  # only the cancel's own completion
    finally:
        ring.close()
        a.close()
        b.close()


def test_the_direct_copied_send_call_checks_what_it_is_given() -> None:
    # csend_raw calls the C function straight (no cffi conversion): it must refuse what cffi
    # refused, and never read past the bytes it was given.
    ring = Ring(16)
    a, b = socket.socketpair()
    try:
        fd = a.fileno()
        for not_bytes in (bytearray(b"abc"), memoryview(b"abc"), "abc"):
            with pytest.raises(TypeError, match="data must be bytes"):
                ring.csend_raw(fd, not_bytes, 3, 1)  # type: ignore[arg-type]
        for bad_n in (4, -1):
            with pytest.raises(ValueError, match="n not within data"):
                ring.csend_raw(fd, b"abc", bad_n, 1)
        with pytest.raises(TypeError, match="4 positional arguments"):
            ring.csend_raw(fd, b"abc", 3)  # type: ignore[call-arg]
        assert ring.csend_raw(-1, b"abc", 3, 1) == errno.EBADF
        assert ring.csend_raw(fd, b"abc", 0, 1) == errno.EINVAL
        assert ring.csend_raw(fd, b"hello world", 5, 1) == 0  # n, not len(data), is sent
        list(ring.enter(0, 0))
        assert recv_exactly(b, 5) == b"hello"
    finally:
        ring.close()
        a.close()
        b.close()
    assert ring.csend_raw(fd, b"abc", 3, 1) == errno.EBADF  # closed: nothing reaches C


def test_copied_send_failure_reaches_python_once() -> None:
    ring = Ring(16)
    a, b = socket.socketpair()
    try:
        b.close()
        assert ring.csend(a.fileno(), b"lost", 21) == 0
        events = drain(ring, lambda ev: ev)
        assert events == [(21, -errno.EPIPE, 0)]
        assert ring.csend(a.fileno(), b"again", 21) == errno.EPIPE
        assert ring.csend_busy(a.fileno(), 21) == -errno.EPIPE
        ring.csend_detach(a.fileno())
        assert ring.csend(a.fileno(), b"fresh record", 21) == 0  # a new socket, a new record
        drain(ring, lambda ev: ev)
    finally:
        ring.close()
        a.close()


def test_registered_ring_fd_only_for_single_issuer() -> None:
    shared = Ring(8)
    bound = Ring(8, single_issuer=True)
    try:
        shared.prep_nop(1)
        bound.prep_nop(2)
        assert list(shared.enter(1, 1_000_000_000)) == [(1, 0, 0)]
        assert list(bound.enter(1, 1_000_000_000)) == [(2, 0, 0)]
        assert shared.registered_index == -1  # any thread may enter: no per-thread registration
        assert bound.registered_index >= 0
        for ud in range(3, 40):  # keeps working through the registered index
            bound.prep_nop(ud)
        got = drain(bound, lambda ev: len(ev) == 37)
        assert sorted(ud for ud, _, _ in got) == list(range(3, 40))
    finally:
        shared.close()
        bound.close()


class SmallReplies:
    """Answers every read with small bytes (copied by the ring), then a pooled buffer (queued):
    the two paths must keep the order of the writes."""

    def connection_made(self, conn: Any) -> None:
        self.conn = conn
        self.n = 0

    def buffer_received(self, lease: Any, n: int) -> bool:
        for _ in range(n):
            self.n += 1
            self.conn.write(b"<%d>" % self.n)
            if self.n % 7 == 0:
                self.conn.write(memoryview(b"[view%d]" % self.n))
        return False  # not kept: the buffer is recycled into the ring

    def eof_received(self) -> bool:
        self.conn.write(b"<bye>")
        self.conn.close()
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        pass


def expected_replies(count: int) -> bytes:
    out = []
    for i in range(1, count + 1):
        out.append(b"<%d>" % i)
        if i % 7 == 0:
            out.append(b"[view%d]" % i)
    return b"".join(out) + b"<bye>"


def test_copied_and_queued_writes_keep_their_order_and_close_waits(run_with_client: Any) -> None:
    # whole buffers: the recycling of unkept ones is what this test watches
    p = Proactor(ring_buffers=64, initial_buffers=8, single_issuer=True, incremental=False)
    pool = BufferPool(4096, capacity=64)
    srv = UringTcpServer(p, SmallReplies, buffer_pool=pool)
    srv.start()
    count = 3000

    def client(out: dict[str, Any]) -> None:
        with socket.create_connection(srv.address, timeout=10) as c:
            for i in range(0, count, 100):
                c.sendall(b"." * 100)
                time.sleep(0.001 * (i % 3))
            c.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := c.recv(65536):
                chunks.append(chunk)
            out["data"] = b"".join(chunks)

    out = run_with_client(p, client)
    assert out["data"] == expected_replies(count)  # and EOF came after "<bye>": close waited
    assert p.ring_stats()["bgid1"]["recycled"] > 0
    srv.close()
    p.close()
    assert pool.outstanding() == 0
    pool.close()


class Chatty:
    """Writes 8 KiB of small bytes for every read: a client that never reads must pause it
    with bounded memory, copied sends or not."""

    made: ClassVar[list[Any]] = []
    paused = threading.Event()

    def connection_made(self, conn: Any) -> None:
        self.conn = conn
        Chatty.made.append(conn)

    def buffer_received(self, lease: Any, n: int) -> bool:
        for _ in range(8):
            self.conn.write(b"z" * 1024)
        if self.conn.paused:
            Chatty.paused.set()
        return False

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        pass


def test_small_writes_to_a_client_that_never_reads_are_bounded(run_with_client: Any) -> None:
    p = Proactor(ring_buffers=64, initial_buffers=8)
    pool = BufferPool(4096, capacity=64)
    srv = UringTcpServer(p, Chatty, buffer_pool=pool)
    srv.start()
    seen: list[tuple[bool, int, int]] = []
    Chatty.made.clear()
    Chatty.paused.clear()

    def client(out: dict[str, Any]) -> None:
        c = socket.create_connection(srv.address, timeout=10)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.setblocking(False)
        deadline = time.monotonic() + 15
        more = 0.3  # once paused, keep pushing a while: the queue must stay bounded
        while time.monotonic() < deadline and more > 0:
            try:
                c.send(b"." * 512)
            except BlockingIOError:
                time.sleep(0.01)
                if Chatty.paused.is_set():
                    more -= 0.01
        out["paused"] = Chatty.paused.is_set()
        got = threading.Event()

        def look() -> None:
            seen.extend((conn.paused, conn.queued, conn.high_water) for conn in Chatty.made)
            got.set()

        p.call_soon_threadsafe(look)
        got.wait(10)
        c.close()

    out = run_with_client(p, client, timeout=30)
    assert out["paused"], "the server never paused: the test did not fill the queue"
    assert len(seen) == 1
    paused, queued, high_water = seen[0]
    assert paused
    assert queued <= high_water + 8192  # at most one read's writes past the mark
    srv.close()
    p.close()
    assert pool.outstanding() == 0
    pool.close()


def test_closing_a_proactor_with_copied_sends_in_flight_frees_them() -> None:
    p = Proactor(ring_buffers=16, initial_buffers=4)
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    try:
        ring = p.ring
        for _ in range(8):
            ring.csend(a.fileno(), b"q" * CSEND_MAX, 3)
        list(ring.enter(0, 0))
        assert ring.csend_inflight() == 1
        ring.csend_detach(a.fileno())
        started = time.monotonic()
        p.close()  # drains the ring: the cancelled send's last completion frees it
        assert time.monotonic() - started < 2.0
    finally:
        a.close()
        b.close()


def test_threads_do_not_share_the_registered_index() -> None:
    ring = Ring(8, single_issuer=True)
    try:
        ring.prep_nop(1)
        assert list(ring.enter(1, 1_000_000_000)) == [(1, 0, 0)]
        errors: list[BaseException] = []

        def other() -> None:
            try:
                ring.prep_nop(2)
                list(ring.enter(1, 1_000_000))
            except OSError as exc:
                errors.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join(5)
        assert errors
        assert getattr(errors[0], "errno", None) == errno.EEXIST
    finally:
        ring.close()


def test_a_closed_ring_declines_copied_sends_and_forgets_nothing() -> None:
    ring = Ring(8)
    a, b = socket.socketpair()
    try:
        ring.close()
        assert ring.csend_raw(a.fileno(), b"late", 4, 1) == errno.EBADF  # no dangling pointer
        ring.csend_detach(a.fileno())  # nothing left to forget: no error
    finally:
        a.close()
        b.close()


class LeaseEcho:
    """Writes every read back as its own lease (kept until sent), as a relay does."""

    def connection_made(self, conn: Any) -> None:
        self.conn = conn

    def buffer_received(self, lease: Any, n: int) -> bool:
        self.conn.write(lease.view[:n], lease)
        return True

    def eof_received(self) -> bool:
        self.conn.close()
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        pass


@pytest.mark.parametrize("slow_reader", [False, True])
def test_gathered_lease_writes_keep_order_and_return_every_lease(
    run_with_client: Any, monkeypatch: pytest.MonkeyPatch, slow_reader: bool
) -> None:
    """Many reads per pass are written on as leases and gathered into one sendmsg, whether a
    send takes all that is queued (the owners' sweep) or a part (the queue's partial
    bookkeeping), and whether the client reads fast or slowly: the bytes keep their order and
    every lease goes back."""
    gathered: list[int] = []
    prep_sendv = Ring.prep_sendv

    def counting(self: Ring, fd: int, views: list[Any], *args: Any) -> list[Any]:
        gathered.append(len(views))
        return prep_sendv(self, fd, views, *args)

    monkeypatch.setattr(Ring, "prep_sendv", counting)
    p = Proactor(ring_buffers=64, initial_buffers=32)
    pool = BufferPool(4096, capacity=128)
    srv = UringTcpServer(p, LeaseEcho, buffer_pool=pool)
    srv.start()
    payload = bytes(range(256)) * (1024 if slow_reader else 4096)  # 256 KiB or 1 MiB

    def client(out: dict[str, Any]) -> None:
        with socket.create_connection(srv.address, timeout=10) as c:
            if slow_reader:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            got: list[bytes] = []

            def read() -> None:
                while chunk := c.recv(8192):
                    got.append(chunk)
                    if slow_reader and len(got) % 8 == 0:
                        time.sleep(0.001)

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            c.sendall(payload)
            c.shutdown(socket.SHUT_WR)
            reader.join(15)
            out["data"] = b"".join(got)

    out = run_with_client(p, client)
    assert out["data"] == payload
    assert max(gathered, default=0) > 1
    srv.close()
    p.close()
    assert pool.outstanding() == 0
    pool.close()


class _Owner:
    """Stands for a lease: counts its releases."""

    def __init__(self) -> None:
        self.releases = 0

    def release(self) -> None:
        self.releases += 1


class BigWrite(Quiet):
    """Writes one view larger than a single send may move (``SEND_MAX``) on connect; ``made``
    holds the protocols the server made, each with how its connection ended."""

    view: ClassVar[memoryview]
    owner: ClassVar[_Owner]
    made: ClassVar[list[BigWrite]] = []

    def connection_made(self, conn: Any) -> None:
        super().connection_made(conn)
        BigWrite.made.append(self)
        conn.write(BigWrite.view, BigWrite.owner)
        conn.close()


def test_a_single_write_larger_than_one_send_goes_out_whole(run_with_client: Any) -> None:
    """One queued buffer of more than ``SEND_MAX`` bytes (the most one send moves) goes out in
    several sends, in order, and its owner is released once; a send of all of it at once was
    refused (EINVAL). The mapping is private and untouched but for three marks, so sending it
    reads the zero page and costs no memory."""
    size = SEND_MAX + (1 << 20)
    noreserve = getattr(mmap, "MAP_NORESERVE", 0x4000)  # a named constant from 3.13
    big = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | noreserve)
    marks = {0: b"head", SEND_MAX - 2: b"<|>", size - 4: b"tail"}
    for at, mark in marks.items():
        big[at : at + len(mark)] = mark
    BigWrite.view, BigWrite.owner, BigWrite.made = memoryview(big), _Owner(), []
    p = Proactor()
    pool = BufferPool(4096, capacity=64)
    srv = UringTcpServer(p, BigWrite, buffer_pool=pool)
    srv.start()

    def client(out: dict[str, Any]) -> None:
        seen: dict[int, bytes] = {}
        total = 0
        chunk = bytearray(1 << 20)
        with socket.create_connection(srv.address, timeout=20) as c:
            while n := c.recv_into(chunk):
                for at, mark in marks.items():  # a mark may straddle two reads
                    lo, hi = max(at, total), min(at + len(mark), total + n)
                    if lo < hi:
                        seen[at] = seen.get(at, b"") + bytes(chunk[lo - total : hi - total])
                total += n
        out["total"], out["seen"] = total, seen

    try:
        out = run_with_client(p, client, timeout=60)
        assert out["total"] == size
        assert out["seen"] == marks
        # The client can have read everything before the loop handled the last zero-copy
        # send's notification (which releases the owner) and the client's EOF: a few passes.
        run_until(p, lambda: BigWrite.owner.releases >= 1 and any(w.lost for w in BigWrite.made))
        assert BigWrite.owner.releases == 1
        assert [w.lost for w in BigWrite.made] == [[None]]
    finally:
        srv.close()
        p.close()
        BigWrite.view.release()
        big.close()
    assert pool.outstanding() == 0
    pool.close()

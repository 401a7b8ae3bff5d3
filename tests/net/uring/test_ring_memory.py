"""Memory per connection on the Proactor: what a connection keeps after a gathered send, how
many blocks the provided-buffer ring stages, and how incremental buffers are consumed."""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from typing import Any, ClassVar

import pytest
from echo import Echo

from poolalloc.buffers import BufferPool
from poolalloc.net.uring import _buffers
from poolalloc.net.uring.connection import UringConnection
from poolalloc.net.uring.proactor import Proactor
from poolalloc.net.uring.ring import CQE_F_BUF_MORE, Ring
from poolalloc.net.uring.server import UringTcpServer

pytestmark = [pytest.mark.uring, pytest.mark.net]


def incremental_server(protocol: type) -> tuple[UringTcpServer, Proactor, BufferPool]:
    """A started server of ``protocol`` on a Proactor with a small incremental ring (2 blocks
    of 1 KiB staged, at most 8), from a pool of 16."""
    needs_incremental()
    p = Proactor(ring_buffers=8, initial_buffers=2, incremental=True)
    pool = BufferPool(1024, capacity=16)
    srv = UringTcpServer(p, protocol, buffer_pool=pool)
    srv.start()
    return srv, p, pool


def shut_down(srv: UringTcpServer, proactor: Proactor, pool: BufferPool) -> None:
    """Close the server, then the proactor: every block is back in the pool, which closes."""
    srv.close()
    proactor.close()
    assert pool.outstanding() == 0
    pool.close()


class TwoWrites(Echo):
    """Writes each read back in two pieces, so that two buffers queue and go out gathered."""

    #: what the connection held at each read: the echo of the one before is out by then
    seen: ClassVar[list[tuple[Any, Any]]] = []

    def buffer_received(self, lease: Any, n: int) -> bool:
        TwoWrites.seen.append((self.conn._x, self.conn._sending))
        half = n // 2 or n
        self.conn.write(bytearray(lease.view[:half]))
        if half < n:
            self.conn.write(bytearray(lease.view[half:n]))
        return False


def test_a_gathered_send_leaves_no_iovec_array_on_the_connection(
    proactor: Proactor, run_with_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each connection that once gathered two writes used to keep a 16 KiB iovec array (zeroed,
    every page touched) for the rest of its life: 16 MiB at 10,000 connections."""
    TwoWrites.seen = []
    gathers: list[int] = []
    real = UringConnection._gather_send

    def counted(self: UringConnection, views: list[Any]) -> None:
        gathers.append(len(views))
        real(self, views)

    monkeypatch.setattr(UringConnection, "_gather_send", counted)
    pool = BufferPool(4096, capacity=64)
    srv = UringTcpServer(proactor, TwoWrites, buffer_pool=pool)
    srv.start()

    def client(out: dict[str, Any]) -> None:
        with socket.create_connection(srv.address, timeout=5) as c:
            for i in range(5):
                msg = bytes([65 + i]) * 100
                c.sendall(msg)
                got = b""
                while len(got) < len(msg):
                    got += c.recv(4096)
                assert got == msg

    out = run_with_client(proactor, client)
    assert gathers, "the test must really gather"
    assert set(gathers) == {2}
    assert "error" not in out
    assert TwoWrites.seen == [(None, None)] * 5
    shut_down(srv, proactor, pool)


def needs_incremental() -> None:
    from poolalloc.net.uring.proactor import probe_result

    if not probe_result().has_pbuf_inc:
        pytest.skip("the kernel lacks IOU_PBUF_RING_INC (Linux 6.12)")


def echo_rounds(addr: tuple[str, int], messages: list[bytes]) -> list[bytes]:
    got_all = []
    with socket.create_connection(addr, timeout=10) as c:
        for msg in messages:
            c.sendall(msg)
            got = b""
            while len(got) < len(msg):
                got += c.recv(1 << 16)
            got_all.append(got)
    return got_all


def test_incremental_buffers_deliver_bytes_in_order_across_block_boundaries(
    run_with_client: Any,
) -> None:
    """Small receives share 1 KiB blocks: each gets its own slice, in order, across block
    boundaries, and far fewer blocks are taken than receives completed."""
    needs_incremental()
    p = Proactor(ring_buffers=16, initial_buffers=2, incremental=True)
    pool = BufferPool(1024, capacity=32)
    srv = UringTcpServer(p, Echo, buffer_pool=pool)
    srv.start()
    messages = [os.urandom(1 + (i * 37) % 300) for i in range(200)]  # ~30 KiB, 30 blocks' worth

    def client(out: dict[str, Any]) -> None:
        out["echo"] = echo_rounds(srv.address, messages)
        out["stats"] = p.ring_stats()["bgid1"]

    out = run_with_client(p, client)
    assert out["echo"] == messages
    stats = out["stats"]
    assert stats["incremental"] == 1
    acquires = pool.stats().acquires
    assert acquires < len(messages) // 4, f"{acquires} blocks for {len(messages)} receives"
    shut_down(srv, p, pool)


class Keeper(Echo):
    """Keeps every slice it is given (and echoes nothing) until told to let go."""

    kept: ClassVar[list[Any]] = []

    def buffer_received(self, lease: Any, n: int) -> bool:
        Keeper.kept.append((lease, bytes(lease.view[:n])))
        return True


def test_a_slice_held_past_the_ring_close_returns_its_block_with_its_release(
    run_with_client: Any,
) -> None:
    Keeper.kept = []
    srv, p, pool = incremental_server(Keeper)

    def client(out: dict[str, Any]) -> None:
        with socket.create_connection(srv.address, timeout=10) as c:
            for i in range(5):
                c.sendall(bytes([i]) * 100)
                time.sleep(0.02)  # separate receives
        deadline = time.monotonic() + 5
        while sum(len(data) for _, data in Keeper.kept) < 500 and time.monotonic() < deadline:
            time.sleep(0.01)
        out["held"] = p.ring_stats()["bgid1"]["slices_held"]

    out = run_with_client(p, client)
    assert b"".join(data for _, data in Keeper.kept) == b"".join(bytes([i]) * 100 for i in range(5))
    assert out["held"] == len(Keeper.kept)
    srv.close()
    p.close()
    assert pool.outstanding() >= 1  # the held slices keep their block
    for lease, data in Keeper.kept:
        assert bytes(lease.view) == data  # still intact after the ring is gone
        lease.release()
        lease.release()  # idempotent
    assert pool.outstanding() == 0
    pool.close()


def test_the_ring_grows_within_its_bound_under_a_burst_and_shrinks_back(
    run_with_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_buffers, "SHRINK_AFTER", 0.05)
    p = Proactor(ring_buffers=16, initial_buffers=2, incremental=False)
    pool = BufferPool(1024, capacity=64)
    srv = UringTcpServer(p, Echo, buffer_pool=pool)
    srv.start()
    payload = os.urandom(512 * 1024)

    def client(out: dict[str, Any]) -> None:
        out["echo"] = echo_rounds(srv.address, [payload])[0]
        out["burst"] = p.ring_stats()["bgid1"]
        time.sleep(0.5)  # idle: the target halves every SHRINK_AFTER
        # one block per receive: the blocks staged over the target go back to the pool
        out["echo2"] = b"".join(echo_rounds(srv.address, [b"y" * 100] * 20))
        out["after"] = p.ring_stats()["bgid1"]

    out = run_with_client(p, client)
    assert out["echo"] == payload
    assert out["echo2"] == b"y" * 2000
    burst, after = out["burst"], out["after"]
    assert burst["grown"] > 0, "the burst must make the ring grow"
    assert burst["peak_target"] <= burst["limit"] <= 16
    assert burst["in_ring"] <= burst["limit"]
    assert after["target"] == 2
    assert after["shrunk"] > 0
    assert after["in_ring"] <= after["target"]
    shut_down(srv, p, pool)


def test_starving_receives_grow_the_target_once_per_pass_and_an_incremental_ring_by_bytes() -> None:
    ring = Ring(8)
    pool = BufferPool(65536, capacity=None)
    pr = _buffers.PoolRing(ring, pool, bgid=1, entries=64, initial=2)
    for _ in range(5):
        pr.starved(now=1.0)  # five receives starving in one pass
    assert pr.target == 4
    pr.starved(now=2.0)
    assert pr.target == 8
    assert not pr.shrink(now=2.5)  # starved too recently
    assert pr.shrink(now=3.5)
    assert pr.target == 4
    pr.starved(now=4.0)
    assert pr.target == 8
    assert pr.shrink(now=6.5)  # two quiet periods: halved twice
    assert pr.target == 2
    pr.close()
    needs_incremental()
    inc = _buffers.PoolRing(ring, pool, bgid=2, entries=64, initial=2, incremental=True)
    assert inc.incremental
    inc.refill()  # learns the block size
    for i in range(10):
        inc.starved(now=10.0 + i)
    assert inc.target == _buffers.INCREMENTAL_BYTES // 65536
    inc.close()
    ring.close()
    assert pool.outstanding() == 0
    pool.close()


class KeepEveryOther(Echo):
    """Keeps every other slice, and remembers the ones it let go to look at them later."""

    kept: ClassVar[list[tuple[Any, bytes]]] = []
    let_go: ClassVar[list[Any]] = []

    def buffer_received(self, lease: Any, n: int) -> bool:
        data = bytes(lease.view[:n])
        if len(KeepEveryOther.kept) <= len(KeepEveryOther.let_go):
            KeepEveryOther.kept.append((lease, data))
            return True
        KeepEveryOther.let_go.append(lease)
        return False


def test_slices_not_kept_are_taken_back_and_kept_ones_stay_intact(run_with_client: Any) -> None:
    """The ring lends one reusable slice object per receive: one not kept reads as released
    once ``buffer_received`` returned (and is lent again), one kept is a slice of its own that
    later receives into the same block never overwrite."""
    KeepEveryOther.kept, KeepEveryOther.let_go = [], []
    srv, p, pool = incremental_server(KeepEveryOther)
    messages = [bytes([i]) * 60 for i in range(12)]  # 12 receives in a few 1 KiB blocks

    def client(out: dict[str, Any]) -> None:
        with socket.create_connection(srv.address, timeout=10) as c:
            for msg in messages:
                c.sendall(msg)
                time.sleep(0.02)  # separate receives
        deadline = time.monotonic() + 5
        while len(KeepEveryOther.kept) + len(KeepEveryOther.let_go) < 12:
            assert time.monotonic() < deadline, "the receives did not all arrive"
            time.sleep(0.01)
        out["held"] = p.ring_stats()["bgid1"]["slices_held"]

    out = run_with_client(p, client)
    kept, let_go = KeepEveryOther.kept, KeepEveryOther.let_go
    assert [data for _, data in kept] == messages[0::2]
    assert len(let_go) == 6
    assert out["held"] == 6
    with pytest.raises(ValueError, match="released memoryview"):
        bytes(let_go[-1].view)  # taken back: its bytes may be received over
    # the object lent and taken back is lent again for the next receive, which was kept
    assert all(let_go[i] is kept[i + 1][0] for i in range(5))
    for lease, data in kept:
        assert bytes(lease.view) == data
        lease.release()
    shut_down(srv, p, pool)


class DropsKept(Echo):
    """Says it keeps every slice, then drops it without releasing it (a protocol bug)."""

    received: ClassVar[int] = 0

    def buffer_received(self, lease: Any, n: int) -> bool:
        DropsKept.received += n
        return True


def test_a_kept_slice_dropped_unreleased_gives_its_block_back(run_with_client: Any) -> None:
    DropsKept.received = 0
    srv, p, pool = incremental_server(DropsKept)

    def client(out: dict[str, Any]) -> None:
        with socket.create_connection(srv.address, timeout=10) as c:
            for i in range(40):  # 4 KiB: more than the ring's two staged blocks
                c.sendall(bytes([i]) * 100)
                time.sleep(0.005)
        deadline = time.monotonic() + 5
        while DropsKept.received < 4000 and time.monotonic() < deadline:
            time.sleep(0.01)
        out["held"] = p.ring_stats()["bgid1"]["slices_held"]

    out = run_with_client(p, client)
    assert DropsKept.received == 4000  # the ring never ran dry: dropped slices came back
    assert out["held"] == 0
    shut_down(srv, p, pool)


class Framer:
    """Keeps a slice while a frame is incomplete; lets it go once the next slice completes it,
    from inside the callback of that next slice (which it keeps as the start of a new frame)."""

    def __init__(self) -> None:
        self.kept: list[Any] = []

    def buffer_received(self, lease: Any, n: int) -> bool:
        for earlier in self.kept:
            earlier.release()
        self.kept = [lease]
        return True


def test_a_slice_released_while_another_of_its_block_is_handed_over_keeps_the_block_out() -> None:
    """The last receive into a block (no ``F_BUF_MORE``) is handed to a protocol that releases
    the block's earlier slice before it returns and keeps the new one: the block must stay out
    of the ring (the kernel would otherwise fill it again under the kept slice) until that one
    is released too."""
    needs_incremental()
    ring = Ring(8)
    pool = BufferPool(1024, capacity=8)
    pr = _buffers.PoolRing(ring, pool, bgid=1, entries=8, initial=2, incremental=True)
    pr.refill()
    bid = next(b for b in range(8) if pr._addresses[b])
    framer = Framer()
    pr.receive(bid, 10, CQE_F_BUF_MORE, framer)  # kept: the block's first slice
    first = framer.kept[0]
    pr.receive(bid, 20, 0, framer)  # the block is full: the kernel is done with it
    second = framer.kept[0]
    assert first is not second
    assert second.nbytes == 20
    assert bid not in pr.recycle_bids, "the block went back under a kept slice"
    assert pr.stats()["slices_held"] == 1
    second.release()
    assert list(pr.recycle_bids) == [bid]  # now it goes back, whole
    assert pr.stats()["slices_held"] == 0
    pr.close()
    ring.close()
    assert pool.outstanding() == 0
    pool.close()


class Raises:
    """Reads the bytes it is lent, then raises what it was given."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.seen = b""
        self.lent: Any = None

    def buffer_received(self, lease: Any, n: int) -> bool:
        self.seen = bytes(lease.view[:n])
        self.lent = lease
        raise self.exc


def test_a_lend_that_raises_gives_the_slice_back_or_leaves_it_with_the_protocol() -> None:
    """``PoolRing.receive`` (the lend the batch walk also makes, in C): an ``Exception`` from the
    protocol propagates with the slice back (shows nothing, counted back; the block goes back
    once the kernel is done with it); a ``KeyboardInterrupt`` leaves the slice the protocol's,
    which releases it later. A bid with no block, or no bytes, is refused before any of it."""
    needs_incremental()
    ring = Ring(8)
    pool = BufferPool(1024, capacity=8)
    pr = _buffers.PoolRing(ring, pool, bgid=1, entries=8, initial=2, incremental=True)
    pr.refill()
    bid, other = (b for b in range(8) if pr._addresses[b])
    bug = Raises(ValueError("protocol bug"))
    with pytest.raises(ValueError, match="protocol bug"):
        pr.receive(bid, 16, 0, bug)  # the block's last receive: the kernel is done with it
    assert len(bug.seen) == 16
    with pytest.raises(ValueError, match="released memoryview"):
        bug.lent.view.tobytes()  # the slice shows nothing any more
    assert pr.stats()["slices_held"] == 0
    assert list(pr.recycle_bids) == [bid]  # nothing holds it: back into the ring, whole
    interrupt = Raises(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        pr.receive(other, 8, CQE_F_BUF_MORE, interrupt)
    assert pr.stats()["slices_held"] == 1  # the protocol may hold it: it is the protocol's
    assert interrupt.lent.nbytes == 8
    assert interrupt.lent is not pr._lent  # the ring lends a fresh slice from now on
    interrupt.lent.release()
    assert pr.stats()["slices_held"] == 0
    free = next(b for b in range(8) if not pr._addresses[b])
    with pytest.raises(LookupError, match=f"buffer id {free} of group 1 is not in the ring"):
        pr.receive(free, 8, CQE_F_BUF_MORE, Framer())
    with pytest.raises(ValueError, match="0 bytes"):
        pr.receive(other, 0, CQE_F_BUF_MORE, Framer())
    assert pr.stats()["slices_held"] == 0
    pr.close()
    ring.close()
    assert pool.outstanding() == 0
    pool.close()


def test_a_slice_released_by_another_thread_is_taken_back_by_the_loop() -> None:
    """The ring's bookkeeping is the loop's alone: a worker thread's release is queued, and the
    loop's thread takes it back (the proactor does so every pass, and at close)."""
    needs_incremental()
    ring = Ring(8)
    pool = BufferPool(1024, capacity=8)
    pr = _buffers.PoolRing(ring, pool, bgid=1, entries=8, initial=2, incremental=True)
    pr.refill()
    pr.loop_thread = threading.get_ident()
    bid = next(b for b in range(8) if pr._addresses[b])
    framer = Framer()
    pr.receive(bid, 30, 0, framer)  # the whole block in one receive, kept
    worker = threading.Thread(target=framer.kept[0].release)
    worker.start()
    worker.join()
    assert list(pr.remote_releases) == [bid]
    assert not pr.recycle_bids, "a worker thread changed the ring's bookkeeping"
    assert pr.stats()["slices_held"] == 1
    pr.take_remote()
    assert list(pr.recycle_bids) == [bid]
    assert pr.stats()["slices_held"] == 0
    pr.receive(next(b for b in range(8) if pr._addresses[b] and b != bid), 5, 0, framer)
    late = threading.Thread(target=framer.kept[0].release)
    late.start()
    late.join()
    pr.close()  # takes back what workers released and returns every block
    ring.close()
    assert pool.outstanding() == 0
    pool.close()


class HandsToWorker(Echo):
    """Echoes each slice from a worker thread, which releases it there."""

    jobs: ClassVar[queue.Queue[Any]] = queue.Queue()

    def buffer_received(self, lease: Any, n: int) -> bool:
        HandsToWorker.jobs.put((self.conn, lease, bytes(lease.view)))
        return True


def test_slices_released_by_a_worker_thread_keep_the_ring_working(run_with_client: Any) -> None:
    HandsToWorker.jobs = queue.Queue()
    srv, p, pool = incremental_server(HandsToWorker)
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            try:
                conn, lease, data = HandsToWorker.jobs.get(timeout=0.05)
            except queue.Empty:
                continue
            lease.release()
            p.call_soon_threadsafe(conn.write, data)

    worker = threading.Thread(target=work)
    worker.start()
    messages = [os.urandom(1 + (i * 53) % 400) for i in range(150)]  # ~30 KiB through 2 KiB

    def client(out: dict[str, Any]) -> None:
        out["echo"] = echo_rounds(srv.address, messages)
        out["held"] = p.ring_stats()["bgid1"]["slices_held"]

    try:
        out = run_with_client(p, client)
    finally:
        stop.set()
        worker.join()
    assert out["echo"] == messages
    shut_down(srv, p, pool)


class ExportEcho(Echo):
    """Echoes each read through the buffer protocol of the lease it is given, not its view."""

    lent: ClassVar[list[Any]] = []

    def buffer_received(self, lease: Any, n: int) -> bool:
        with memoryview(lease) as mv:
            assert mv.nbytes == n
            self.conn.write(bytes(mv))
        ExportEcho.lent.append(lease)
        return False


def test_a_slice_exports_its_bytes_by_the_buffer_protocol(run_with_client: Any) -> None:
    """``memoryview(lease)`` works on a slice as on a pool Buffer, on every Python version (a
    Python-level ``__buffer__`` alone does nothing before 3.12), and stops once it is taken
    back."""
    ExportEcho.lent = []
    srv, p, pool = incremental_server(ExportEcho)
    messages = [bytes([65 + i]) * (40 + i) for i in range(5)]

    def client(out: dict[str, Any]) -> None:
        got = b""
        with socket.create_connection(srv.address, timeout=10) as c:
            for msg in messages:
                c.sendall(msg)
                want = len(got) + len(msg)
                while len(got) < want:
                    got += c.recv(4096)
        out["got"] = got

    out = run_with_client(p, client)
    assert out["got"] == b"".join(messages)
    assert {type(lease) for lease in ExportEcho.lent} == {_buffers._Slice}
    with pytest.raises(ValueError, match="released memoryview"):
        memoryview(ExportEcho.lent[-1])  # taken back: no new export of bytes received over later
    shut_down(srv, p, pool)


class ExportKeeper(Echo):
    """Takes ``memoryview(lease)`` of every read and keeps it past the call (returning False),
    or, with ``keep``, keeps every other slice and releases it at once while exported."""

    exports: ClassVar[list[tuple[memoryview, bytes]]] = []
    keep: ClassVar[bool] = False

    def buffer_received(self, lease: Any, n: int) -> bool:
        m = memoryview(lease)
        ExportKeeper.exports.append((m, m.tobytes()))
        if ExportKeeper.keep and len(ExportKeeper.exports) % 2:
            lease.release()  # a kept slice given back while its export lives
            return True
        return False


@pytest.mark.parametrize("keep", [False, True])
def test_a_slice_exported_past_its_release_keeps_its_block_out(
    run_with_client: Any, keep: bool
) -> None:
    """A buffer-protocol export of a slice that outlives the slice's return (the lent one when
    ``buffer_received`` returns False, a kept one at ``release()``) keeps its block out of the
    ring, as a pool Buffer's export keeps its block: later receives never write over the bytes
    it shows, and the block goes back when the export does."""
    ExportKeeper.exports, ExportKeeper.keep = [], keep
    srv, p, pool = incremental_server(ExportKeeper)
    messages = [bytes([48 + i % 64]) * 60 for i in range(60)]  # 3.5 KiB through 1 KiB blocks

    def client(out: dict[str, Any]) -> None:
        with socket.create_connection(srv.address, timeout=10) as c:
            for msg in messages:
                c.sendall(msg)
                time.sleep(0.005)
        deadline = time.monotonic() + 5
        while sum(len(b) for _, b in ExportKeeper.exports) < 60 * len(messages):
            assert time.monotonic() < deadline, "the receives did not all arrive"
            time.sleep(0.01)
        out["shown"] = [m.tobytes() for m, _ in ExportKeeper.exports]

    out = run_with_client(p, client)
    assert out["shown"] == [b for _, b in ExportKeeper.exports]
    assert b"".join(out["shown"]) == b"".join(messages)
    # every receive's export still holds its block; once they go, nothing does
    assert p.ring_stats()["bgid1"]["slices_held"] == len(ExportKeeper.exports)
    for m, _ in ExportKeeper.exports:
        m.release()
    ExportKeeper.exports.clear()
    assert p.ring_stats()["bgid1"]["slices_held"] == 0
    shut_down(srv, p, pool)


@pytest.mark.parametrize("incremental", [False, True], ids=["whole", "incremental"])
def test_a_view_kept_past_the_call_keeps_its_block_out_of_the_ring(incremental: bool) -> None:
    """A protocol returns False but keeps a slice of ``lease.view``: a whole buffer must not be
    put back into the ring as it is (it goes through the pool, whose release waits for the
    view), and an incremental block not before the last view of its bytes is gone."""
    if incremental:
        needs_incremental()
    kept: list[tuple[memoryview, bytes]] = []

    class Keeps:
        def connection_made(self, conn: Any) -> None:
            pass

        def buffer_received(self, lease: Any, n: int) -> bool:
            kept.append((lease.view[:n], bytes(lease.view[:n])))
            return False

        def eof_received(self) -> bool:
            return False

        def connection_lost(self, exc: BaseException | None) -> None:
            pass

    # ids enough for every block the kept views hold (an incremental block keeps its id until
    # the last view of it is gone)
    p = Proactor(ring_buffers=64, initial_buffers=2, incremental=incremental)
    pool = BufferPool(1024, capacity=128)
    client, server_side = socket.socketpair()
    conn = UringConnection()
    conn.open(p, server_side, pool, Keeps(), 1024)
    try:
        for i in range(24):  # 24 KiB through 2 staged 1 KiB blocks: each is staged again
            client.sendall(bytes([65 + i]) * 1000)
            deadline = time.monotonic() + 5
            while sum(len(d) for _, d in kept) < 1000 * (i + 1):
                assert time.monotonic() < deadline, "the data did not arrive"
                p.call_later(0.002, lambda: None)
                p.run_once()
        for view, data in kept:
            assert bytes(view) == data, "a later receive wrote over bytes a view still shows"
        del view
        kept.clear()
    finally:
        conn.abort()
        client.close()
        p.close()
    assert pool.outstanding() == 0
    pool.close()

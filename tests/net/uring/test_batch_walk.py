"""The walk of a completion batch in C (``poolalloc.net.uring._complete``) against the Python path.

The walk takes the common receive itself (an open connection's bytes in an incremental ring,
the receive still armed) and hands every other completion to ``Proactor._complete_one``. Here
the Proactor is given completions as the kernel would write them (real rings, real pooled
blocks with the bytes written where the kernel would put them, real connections on socket
pairs), so that each case is exact and repeatable: the same events walked in C and through the
Python path must leave the same state, a protocol's exception must end only its connection,
and a KeyboardInterrupt must lose nothing.
"""

from __future__ import annotations

import ctypes
import random
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from loop_passes import run_until

import poolalloc
from poolalloc.net.uring.connection import RECV, UringConnection
from poolalloc.net.uring.proactor import Proactor, available
from poolalloc.net.uring.ring import CQE_BUFFER_SHIFT, CQE_F_BUF_MORE, CQE_F_BUFFER, CQE_F_MORE

pytestmark = [pytest.mark.uring, pytest.mark.net, pytest.mark.timeout(60)]

_CQE = struct.Struct("=QiI")


class Recorder:
    """Records what it is given; ``plan`` says what to do with the next receives (drop them
    by default)."""

    def __init__(self) -> None:
        self.conn: Any = None
        self.got: list[bytes] = []
        self.kept: list[Any] = []
        self.views: list[memoryview] = []
        self.lost: list[BaseException | None] = []
        self.plan: list[str] = []

    def connection_made(self, conn: Any) -> None:
        self.conn = conn

    def buffer_received(self, lease: Any, nbytes: int) -> bool:
        self.got.append(bytes(lease.view[:nbytes]))
        what = self.plan.pop(0) if self.plan else "drop"
        if what == "raise":
            raise ValueError("protocol bug")
        if what == "interrupt":  # holding what it was given
            self.kept.append(lease)
            raise KeyboardInterrupt
        if what == "view":
            self.views.append(lease.view[: nbytes // 2 or 1])  # outlives the call
        if what == "keep":
            self.kept.append(lease)
            return True
        return False

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)


class Setup:
    """A Proactor with ``n`` open connections on one incremental ring."""

    def __init__(self, n: int) -> None:
        self.loop = Proactor(ring_buffers=16, initial_buffers=2)
        self.errors: list[BaseException] = []
        self.loop.exception_handler = lambda exc, where: self.errors.append(exc)
        self.pool = poolalloc.BufferPool(16384, capacity=64)
        self.conns: list[UringConnection] = []
        self.protos: list[Recorder] = []
        self.peers: list[socket.socket] = []
        for _ in range(n):
            mine, peer = socket.socketpair()
            proto, conn = Recorder(), UringConnection()
            conn.open(self.loop, mine, self.pool, proto, 16384)
            self.conns.append(conn)
            self.protos.append(proto)
            self.peers.append(peer)
        self.ring = self.conns[0].pool_ring
        assert self.ring is not None
        if not self.ring.incremental:
            self.close()
            pytest.skip(f"no incremental buffer ring here: {self.ring.why_not_incremental}")
        self.bid = next(b for b in range(self.ring.entries) if self.ring._addresses[b])
        self.filled = self.ring._offsets[self.bid]  # where the kernel would write next

    def cqe(self, i: int, data: bytes, flags: int = CQE_F_MORE | CQE_F_BUF_MORE) -> bytes:
        """A receive completion of connection ``i``, its bytes written where the kernel would."""
        ctypes.memmove(self.ring._addresses[self.bid] + self.filled, data, len(data))
        self.filled += len(data)
        conn = self.conns[i]
        flags |= CQE_F_BUFFER | self.bid << CQE_BUFFER_SHIFT
        return _CQE.pack(conn.token << 8 | RECV, len(data), flags)

    def state(self) -> tuple[Any, ...]:
        return (
            [p.got for p in self.protos],
            [c.bytes_in for c in self.conns],
            [c.closed for c in self.conns],
            [len(p.lost) for p in self.protos],
            self.ring._refs[self.bid],
            self.ring._offsets[self.bid],
            [type(e).__name__ for e in self.errors],
        )

    def close(self) -> None:
        for proto in self.protos:
            for lease in proto.kept:
                lease.release()
            proto.kept.clear()
            proto.views.clear()
        for conn in self.conns:
            if not conn.closed:
                conn.abort()
        for peer in self.peers:
            peer.close()
        self.loop.close()
        assert self.pool.outstanding() == 0
        self.pool.close()


@pytest.fixture
def make() -> Iterator[Any]:
    ok, reason = available()
    if not ok:
        pytest.skip(f"io_uring unavailable: {reason}")
    made: list[Setup] = []

    def factory(n: int) -> Setup:
        made.append(Setup(n))
        return made[-1]

    yield factory
    for s in made:
        s.close()


def test_each_receive_of_a_batch_reaches_its_protocol_with_its_bytes(make: Any) -> None:
    s = make(3)
    batch = b"".join(s.cqe(i % 3, f"request {i}".encode()) for i in range(9))
    s.loop._complete_batch(memoryview(batch))
    assert [p.got for p in s.protos] == [
        [f"request {i}".encode() for i in range(k, 9, 3)] for k in range(3)
    ]
    assert [c.bytes_in for c in s.conns] == [27, 27, 27]
    assert all(c.last_active == s.loop.now for c in s.conns)
    assert s.ring._refs[s.bid] == 0  # every lend came back
    assert s.ring._offsets[s.bid] == 81
    assert s.loop.stats["completions"] == 9


def test_a_protocol_exception_ends_its_connection_and_the_batch_goes_on(make: Any) -> None:
    s = make(3)
    s.protos[1].plan.append("raise")
    batch = s.cqe(0, b"a") + s.cqe(1, b"b") + s.cqe(2, b"c") + s.cqe(0, b"d")
    s.loop._complete_batch(memoryview(batch))
    assert [p.got for p in s.protos] == [[b"a", b"d"], [b"b"], [b"c"]]
    assert [c.closed for c in s.conns] == [False, True, False]
    assert [type(e) for e in s.errors] == [ValueError]  # reported once, to the loop's handler
    assert isinstance(s.protos[1].lost[0], ValueError)
    assert s.ring._refs[s.bid] == 0


def test_a_keyboardinterrupt_leaves_the_rest_of_the_batch_for_the_next_pass(make: Any) -> None:
    s = make(3)
    s.protos[1].plan.append("interrupt")
    batch = s.cqe(0, b"a") + s.cqe(1, b"b") + s.cqe(2, b"c") + s.cqe(0, b"d")
    with pytest.raises(KeyboardInterrupt):
        s.loop._complete_batch(memoryview(batch))
    assert [p.got for p in s.protos] == [[b"a"], [b"b"], []]
    assert len(s.loop._unhandled) == 2
    # the interrupted protocol may hold what it was given: it is its own until released
    assert s.ring._refs[s.bid] == 1
    s.protos[1].kept.pop().release()
    assert s.ring._refs[s.bid] == 0
    run_until(s.loop, lambda: len(s.protos[0].got) == 2)
    assert [p.got for p in s.protos] == [[b"a", b"d"], [b"b"], [b"c"]]
    assert not any(c.closed for c in s.conns)
    assert s.loop.stats["completions"] >= 4


def test_a_kept_slice_and_a_view_past_the_call_keep_their_bytes(make: Any) -> None:
    s = make(2)
    s.protos[0].plan.append("keep")
    s.protos[1].plan.append("view")
    s.loop._complete_batch(memoryview(s.cqe(0, b"kept bytes") + s.cqe(1, b"viewed bytes")))
    assert s.ring._refs[s.bid] == 2  # both still hold the block
    s.loop._complete_batch(memoryview(s.cqe(0, b"x" * 100) + s.cqe(1, b"y" * 100)))
    assert bytes(s.protos[0].kept[0].view) == b"kept bytes"
    assert bytes(s.protos[1].views[0]) == b"viewed"
    s.protos[0].kept.pop().release()
    s.protos[1].views.clear()  # the last view gone: its block is let go
    assert s.ring._refs[s.bid] == 0


def test_a_connection_class_with_its_own_receive_handler_is_not_bypassed(make: Any) -> None:
    seen: list[int] = []

    class Counting(UringConnection):
        def _on_recv_counted(self, res: int, flags: int) -> None:
            seen.append(res)
            UringConnection._on_recv(self, res, flags)

        handlers = (
            UringConnection.handlers[0],
            _on_recv_counted,
            *UringConnection.handlers[2:],
        )

    s = make(1)
    mine, peer = socket.socketpair()
    conn, proto = Counting(), Recorder()
    conn.open(s.loop, mine, s.pool, proto, 16384)
    s.conns.append(conn)
    s.protos.append(proto)
    s.peers.append(peer)
    s.loop._complete_batch(memoryview(s.cqe(1, b"abc") + s.cqe(0, b"de")))
    assert seen == [3]
    assert proto.got == [b"abc"]
    assert s.protos[0].got == [b"de"]


def _walk(s: Setup, cqes: list[bytes], in_c: bool) -> None:
    if in_c:
        s.loop._complete_batch(memoryview(b"".join(cqes)))
    else:
        s.loop._complete(iter([_CQE.unpack(c) for c in cqes]))


@pytest.mark.parametrize("in_c", [True, False], ids=["c", "python"])
def test_a_proactor_closed_by_a_protocol_mid_walk_gets_every_block_back(
    make: Any, in_c: bool
) -> None:
    # A loop driven by run_once may be closed from a callback: the ring closes under the walk,
    # and the block of the receive being handed over must go back to the pool all the same.
    s = make(3)

    def close_the_loop(lease: Any, nbytes: int) -> bool:
        s.loop.close()
        return False

    s.protos[0].buffer_received = close_the_loop  # type: ignore[method-assign]
    _walk(s, [s.cqe(0, b"a"), s.cqe(1, b"bb"), s.cqe(2, b"ccc")], in_c)
    assert s.pool.outstanding() == 0
    assert [p.got for p in s.protos] == [[], [], []]  # closed: the rest is discarded


@pytest.mark.parametrize("in_c", [True, False], ids=["c", "python"])
def test_an_interrupt_while_a_failed_receive_gives_its_slice_back_ends_the_walk(
    make: Any, in_c: bool
) -> None:
    s = make(3)

    def raise_after_view(lease: Any, nbytes: int) -> bool:
        s.protos[1].views.append(lease.view[:1])  # a view outlives the call: the slice goes
        raise ValueError("protocol bug")  # back when it dies...

    def interrupted(window: Any, bid: int) -> None:  # ...and Ctrl-C lands there
        raise KeyboardInterrupt

    s.protos[1].buffer_received = raise_after_view  # type: ignore[method-assign]
    s.ring._lent_outlived = interrupted  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt) as caught:
        _walk(s, [s.cqe(0, b"a"), s.cqe(1, b"bb"), s.cqe(2, b"ccc")], in_c)
    assert isinstance(caught.value.__context__, ValueError)
    assert len(s.loop._unhandled) == 1  # the third, for the next pass
    assert s.errors == []  # not reported: the interrupt took the ValueError's place
    # The interrupt cut the slice's return short, as it would in Python: its count stays
    # (what Ctrl-C leaves behind, here taken back by hand so that the pool can close).
    del s.ring._lent_outlived
    s.protos[1].views.clear()
    s.ring._unref(s.bid)


@pytest.mark.parametrize("in_c", [True, False], ids=["c", "python"])
def test_a_protocol_exception_aborts_its_connection_before_the_loop_reports_it(
    make: Any, in_c: bool
) -> None:
    s = make(2)
    s.protos[0].plan.append("raise")
    seen: list[bool] = []
    s.loop.exception_handler = lambda exc, where: seen.append(s.conns[0].closed)
    _walk(s, [s.cqe(0, b"a"), s.cqe(1, b"b")], in_c)
    assert seen == [True]
    assert s.protos[1].got == [b"b"]


def test_the_walk_in_c_leaves_what_the_python_path_leaves(make: Any) -> None:
    # The same random events, walked in C by one Proactor and one completion at a time through
    # the Python path by another: every protocol call, counter and ring count must agree.
    for seed in range(6):
        rnd = random.Random(seed)
        a, b = make(4), make(4)
        for _ in range(12):
            batch_a, batch_b, events = b"", [], []
            for _ in range(rnd.randrange(1, 8)):
                i = rnd.randrange(4)
                if a.conns[i].closed:
                    continue
                what = rnd.choice(["drop"] * 6 + ["keep", "view", "raise", "pause", "resume"])
                if what == "pause":
                    events.append((i, "pause"))
                    continue
                if what == "resume":
                    events.append((i, "resume"))
                    continue
                data = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 60)))
                a.protos[i].plan.append(what)
                b.protos[i].plan.append(what)
                batch_a += a.cqe(i, data)
                batch_b.append(_CQE.unpack(b.cqe(i, data)))
            for i, what in events:
                for side in (a, b):
                    getattr(side.conns[i], f"{what}_reading")()
            if batch_a:
                a.loop._complete_batch(memoryview(batch_a))
                b.loop._complete(iter(batch_b))
            assert a.state() == b.state(), f"seed {seed}"
            assert a.loop.stats["completions"] == b.loop.stats["completions"]
        for side in (a, b):
            for conn in side.conns:
                if conn.paused and not conn.closed:
                    conn.resume_reading()
        assert a.state() == b.state(), f"seed {seed}"

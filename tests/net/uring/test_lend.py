"""The lend of an incremental ring's receive (``PoolRing.receive``, C ``ring_lend``) against its
rule written in Python.

``PoolRing.receive`` and the batch walk both call one C function. ``reference_receive`` below is
that function's rule as plain Python (what ``PoolRing.receive`` was before it moved to C): the
same random receives into twin rings (same pool block size, same staged blocks, same bytes),
with protocols that drop, keep, hold a view, raise or are interrupted, must leave the same
bookkeeping, hand over the same bytes and raise the same exceptions.
"""

from __future__ import annotations

import ctypes
import random
from collections.abc import Iterator
from typing import Any

import pytest

from poolalloc._lease import window_view
from poolalloc.buffers import BufferPool
from poolalloc.net.uring import _buffers, _fastpath
from poolalloc.net.uring.proactor import available
from poolalloc.net.uring.ring import CQE_F_BUF_MORE, Ring

pytestmark = [pytest.mark.uring, pytest.mark.net, pytest.mark.timeout(120)]

BLOCK = 256


def reference_receive(ring: Any, bid: int, nbytes: int, flags: int, protocol: Any) -> None:
    """The rule of a lend, in Python."""
    address = ring._addresses[bid]
    if not address:
        raise LookupError(f"buffer id {bid} of group {ring.bgid} is not in the ring")
    offset = ring._offsets[bid]
    if flags & CQE_F_BUF_MORE:
        ring._offsets[bid] = offset + nbytes
    else:
        ring._in_kernel[bid] = 0
        ring.in_ring -= 1
    ring._refs[bid] += 1
    lent = ring._lent
    lent.view = window_view(address + offset, nbytes)
    kept = True
    try:
        kept = bool(protocol.buffer_received(lent, nbytes))
    except Exception:
        kept = False
        raise
    finally:
        if kept:
            ring._lent_kept(lent, bid)
        else:
            window = lent._swap_view(_buffers._RELEASED)
            if window is not None:
                ring._lent_outlived(window, bid)
            else:
                ring._refs[bid] -= 1
                if not (ring._refs[bid] or ring._in_kernel[bid]):
                    ring._back(bid)


class Planned:
    """Does with each lend what its plan says; remembers the bytes and what it holds."""

    def __init__(self) -> None:
        self.plan: list[str] = []
        self.got: list[bytes] = []
        self.kept: list[Any] = []
        self.views: list[memoryview] = []

    def buffer_received(self, lease: Any, nbytes: int) -> Any:
        self.got.append(bytes(lease.view[:nbytes]))
        what = self.plan.pop(0)
        if what == "raise":
            raise ValueError("protocol bug")
        if what == "interrupt":
            self.kept.append(lease)
            raise KeyboardInterrupt
        if what == "view":
            self.views.append(lease.view[:1])
        if what == "release-other" and self.kept:
            self.kept.pop(0).release()
        if what in ("keep", "truthy"):
            self.kept.append(lease)
            return True if what == "keep" else 5
        return False


@pytest.fixture
def twin() -> Iterator[Any]:
    ok, reason = available()
    if not ok:
        pytest.skip(f"io_uring unavailable: {reason}")
    made: list[tuple[Ring, BufferPool, Any]] = []

    def make() -> Any:
        ring = Ring(8)
        pool = BufferPool(BLOCK, capacity=16)
        pr = _buffers.PoolRing(ring, pool, bgid=1, entries=8, initial=4, incremental=True)
        if not pr.incremental:
            pytest.skip(f"no incremental buffer ring here: {pr.why_not_incremental}")
        pr.refill()
        made.append((ring, pool, pr))
        return pr

    yield make
    for ring, pool, pr in made:
        pr.close()
        ring.close()
        assert pool.outstanding() == 0
        pool.close()


def state(pr: Any, protocol: Planned) -> tuple[Any, ...]:
    return (
        list(pr._offsets),
        list(pr._refs),
        bytes(pr._in_kernel),
        pr.in_ring,
        list(pr.recycle_bids),
        pr.stats(),
        list(protocol.got),
        len(protocol.kept),
        len(protocol.views),
    )


@pytest.mark.parametrize("seed", range(24))
def test_the_lend_in_c_leaves_what_its_rule_in_python_leaves(twin: Any, seed: int) -> None:
    rnd = random.Random(seed)
    in_c, in_python = twin(), twin()
    p_c, p_python = Planned(), Planned()
    sides = ((in_c, p_c, in_c.receive), (in_python, p_python, None))
    for _ in range(60):
        staged = [b for b in range(8) if in_c._addresses[b] and in_c._in_kernel[b]]
        if not staged:
            for pr, _p, _f in sides:
                pr.publish()
                pr.refill()
            continue
        bid = rnd.choice(staged)
        what = rnd.choice(
            ["drop"] * 4 + ["raise", "interrupt", "view", "keep", "release-other", "truthy"]
        )
        nbytes = rnd.randrange(1, 40)
        room = BLOCK - in_c._offsets[bid]
        flags = CQE_F_BUF_MORE if rnd.random() < 0.85 else 0
        if nbytes >= room:
            nbytes, flags = room, 0  # the block's last receive: the kernel is done with it
        data = rnd.randbytes(nbytes)
        raised = []
        for pr, protocol, lend in sides:
            ctypes.memmove(pr._addresses[bid] + pr._offsets[bid], data, nbytes)
            protocol.plan.append(what)
            try:
                if lend is not None:
                    lend(bid, nbytes, flags, protocol)
                else:
                    reference_receive(pr, bid, nbytes, flags, protocol)
                raised.append(None)
            except BaseException as exc:  # KeyboardInterrupt included: compared, not lost
                raised.append(type(exc))
        assert raised[0] == raised[1]
        if rnd.random() < 0.3:
            for _pr, protocol, _f in sides:
                protocol.views.clear()
        if rnd.random() < 0.2:
            for _pr, protocol, _f in sides:
                if protocol.kept:
                    protocol.kept.pop(0).release()
        if rnd.random() < 0.3:
            for pr, _p, _f in sides:
                pr.publish()
                pr.refill()
        assert state(in_c, p_c) == state(in_python, p_python)
    for _pr, protocol, _f in sides:
        for lease in protocol.kept:
            lease.release()
        protocol.kept.clear()
        protocol.views.clear()


class Failing(_buffers.PoolRing):
    """A ring whose block cannot go back: giving the slice back raises."""

    def _back(self, bid: int) -> None:
        try:
            raise KeyError(bid)
        except KeyError:
            raise RuntimeError("the ring is broken")  # noqa: B904 (chained as Python chains)


def test_an_exception_giving_the_slice_back_is_chained_as_python_chains_it(twin: Any) -> None:
    """The protocol raises, then giving the slice back raises too (in ``_back``, after an
    exception handled there): what propagates is the last one, with the whole chain Python's
    ``finally`` would give it, down to the protocol's."""

    def chain(exc: BaseException | None) -> list[type[BaseException]]:
        out = []
        while exc is not None:
            out.append(type(exc))
            exc = exc.__context__
        return out

    got = []
    for lend in (_fastpath.receive, reference_receive):
        pr = twin()
        pr.__class__ = Failing
        bid = next(b for b in range(8) if pr._addresses[b])
        with pytest.raises(RuntimeError) as info:
            lend(pr, bid, 4, 0, Raises())  # the block's last receive: back at once
        got.append(chain(info.value))
        pr.__class__ = _buffers.PoolRing
        pr._back(bid)  # what the broken one did not do
    assert got[0] == got[1] == [RuntimeError, KeyError, ValueError]


class Raises:
    def buffer_received(self, lease: Any, nbytes: int) -> bool:
        raise ValueError("protocol bug")


def test_a_lend_refuses_what_is_not_one(twin: Any) -> None:
    pr = twin()
    bid = next(b for b in range(8) if pr._addresses[b])
    before = (list(pr._offsets), list(pr._refs), bytes(pr._in_kernel), pr.in_ring)
    with pytest.raises(OverflowError):
        _fastpath.receive(pr, 2**70, 4, CQE_F_BUF_MORE, Raises())
    with pytest.raises(TypeError):
        _fastpath.receive(pr, bid, "4", CQE_F_BUF_MORE, Raises())
    with pytest.raises(TypeError, match="not a PoolRing"):
        _fastpath.receive(object(), bid, 4, CQE_F_BUF_MORE, Raises())
    with pytest.raises(LookupError):
        _fastpath.receive(pr, -1, 4, CQE_F_BUF_MORE, Raises())
    lent, pr._lent = pr._lent, object()
    with pytest.raises(RuntimeError, match="no slice to lend"):
        pr.receive(bid, 4, CQE_F_BUF_MORE, Raises())
    pr._lent = lent
    assert (list(pr._offsets), list(pr._refs), bytes(pr._in_kernel), pr.in_ring) == before

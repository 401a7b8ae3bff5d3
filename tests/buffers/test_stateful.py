"""A hypothesis state machine of leases and views against a plain model.

Invariants: no block is live in two leases, a kept view's bytes are never overwritten by a later
user of the block, the counters balance, and parked blocks come back when their views die.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from poolalloc import (
    Buffer,
    BufferPool,
    DoubleReleaseError,
    LeaseReleasedError,
    PoolClosedError,
    PoolExhausted,
)

SIZE = 64
CAPACITY = 4


@dataclass(eq=False)
class Lease:
    buf: Buffer
    pattern: int
    released: bool = False
    views: list[View] = field(default_factory=list)


@dataclass(eq=False)
class View:
    obj: memoryview | np.ndarray
    lease: Lease
    start: int

    def content(self) -> bytes:
        return bytes(self.obj) if isinstance(self.obj, memoryview) else self.obj.tobytes()


class LeaseMachine(RuleBasedStateMachine):
    leases = Bundle("leases")
    views = Bundle("views")

    def __init__(self) -> None:
        super().__init__()
        self.pool = BufferPool(SIZE, capacity=CAPACITY, name="stateful")
        self.model: list[Lease] = []
        self.patterns = itertools.cycle(range(1, 256))
        self.closed = False

    def holding(self) -> list[Lease]:
        """Leases whose block is not back: live, or released with a view alive."""
        return [m for m in self.model if not m.released or m.views]

    @rule(target=leases)
    def acquire(self) -> Lease:
        if self.closed:
            try:
                self.pool.acquire(timeout=0)
            except PoolClosedError:
                return None  # type: ignore[return-value]
            raise AssertionError("a closed pool handed out a lease")
        if len(self.holding()) >= CAPACITY:
            try:
                self.pool.acquire(timeout=0)
            except PoolExhausted:
                return None  # type: ignore[return-value]
            raise AssertionError("the pool grew past its capacity")
        buf = self.pool.acquire(timeout=0)
        lease = Lease(buf, next(self.patterns))
        buf[0:SIZE] = bytes([lease.pattern]) * SIZE
        self.model.append(lease)
        return lease

    @rule(target=views, lease=leases, start=st.integers(0, SIZE - 1), numpy=st.booleans())
    def take_view(self, lease: Lease | None, start: int, numpy: bool) -> View | None:
        if lease is None:
            return None
        if lease.released:
            try:
                _ = lease.buf.view
            except LeaseReleasedError:
                return None
            raise AssertionError("a released lease exported a view")
        obj = np.frombuffer(lease.buf, np.uint8)[start:] if numpy else lease.buf.view[start:]
        view = View(obj, lease, start)
        lease.views.append(view)
        return view

    @rule(lease=leases)
    def release(self, lease: Lease | None) -> None:
        if lease is None:
            return
        if lease.released:
            try:
                lease.buf.release()
            except DoubleReleaseError:
                return
            raise AssertionError("a double release went unnoticed")
        lease.buf.release()
        lease.released = True

    @rule(view=consumes(views))
    def drop_view(self, view: View | None) -> None:
        if view is None:
            return
        assert view.content() == bytes([view.lease.pattern]) * (SIZE - view.start)
        view.lease.views.remove(view)
        if isinstance(view.obj, memoryview):
            view.obj.release()
        view.obj = memoryview(b"")  # hypothesis may keep the View: drop what it held

    @precondition(lambda self: not self.closed)
    @rule()
    def close(self) -> None:
        self.pool.close()
        self.closed = True

    @invariant()
    def no_block_in_two_leases(self) -> None:
        addresses = [m.buf.address for m in self.model if not m.released]
        assert len(addresses) == len(set(addresses))

    @invariant()
    def kept_views_are_never_overwritten(self) -> None:
        for lease in self.model:
            for view in lease.views:
                assert view.content() == bytes([lease.pattern]) * (SIZE - view.start)

    @invariant()
    def counters_balance(self) -> None:
        s = self.pool.stats()
        live = sum(not m.released for m in self.model)
        parked = sum(m.released and bool(m.views) for m in self.model)
        assert (s.live, s.parked, s.outstanding, s.used) == (
            live,
            parked,
            live + parked,
            live + parked,
        )
        assert s.acquires - s.releases - s.gc_returns == live
        assert s.used + s.stashed <= CAPACITY

    def teardown(self) -> None:
        for lease in self.model:
            for view in lease.views:
                if isinstance(view.obj, memoryview):
                    view.obj.release()
                view.obj = memoryview(b"")  # the bundle keeps View objects: drop the arrays
            lease.views.clear()
            if not lease.released:
                lease.buf.release()
        assert self.pool.outstanding() == 0
        self.pool.close()


LeaseMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_leases_and_views = LeaseMachine.TestCase

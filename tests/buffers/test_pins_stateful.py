"""A hypothesis state machine: everything handed a pointer into a block keeps that block.

Holders are made every way a user can get at a lease's memory from Python: a memoryview, a
slice or cast of one, ``as_array()``, ``np.frombuffer`` over a pin or over the lease, a ctypes
array ``from_buffer`` over the lease or a pin, arrays derived from arrays, and the holders' own
``.base.release()`` / ``.release()`` where Python offers one. Leases are released and blocks
reused (each new user writes its own pattern) in any order. Invariant: every live holder reads
exactly what its own lease last wrote; a block goes back only when nothing holds it.
"""

from __future__ import annotations

import ctypes
import gc
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from poolalloc import Buffer, BufferPool, PoolExhausted

SIZE = 32
CAPACITY = 3
KINDS = ("view", "slice", "cast", "as_array", "pin_array", "lease_array", "ctypes", "ctypes_pin")


@dataclass(eq=False)
class Lease:
    buf: Buffer
    pattern: int
    released: bool = False
    holders: list[Holder] = field(default_factory=list)


@dataclass(eq=False)
class Holder:
    obj: Any
    lease: Lease
    start: int
    kind: str

    def content(self) -> bytes:
        if isinstance(self.obj, np.ndarray):
            return self.obj.tobytes()
        if isinstance(self.obj, ctypes.Array):
            return bytes(self.obj.raw)  # type: ignore[attr-defined]
        return bytes(self.obj)


def make_holder(lease: Lease, kind: str, start: int) -> Any:
    buf = lease.buf
    if kind == "view":
        return buf.view[start:]
    if kind == "slice":
        return memoryview(buf)[start:][0:]
    if kind == "cast":
        return memoryview(buf).cast("c").cast("B")[start:]
    if kind == "as_array":
        return buf.as_array()[start:]
    if kind == "pin_array":
        return np.frombuffer(buf.pin(), np.uint8)[start:]
    if kind == "lease_array":
        return np.frombuffer(buf, np.uint8)[start:]
    if kind == "ctypes":
        return (ctypes.c_char * (SIZE - start)).from_buffer(buf, start)
    return (ctypes.c_char * (SIZE - start)).from_buffer(buf.pin(), start)


class PinMachine(RuleBasedStateMachine):
    leases = Bundle("leases")
    holders = Bundle("holders")

    def __init__(self) -> None:
        super().__init__()
        self.pool = BufferPool(SIZE, capacity=CAPACITY, name="pins")
        self.model: list[Lease] = []
        self.patterns = itertools.cycle(range(1, 256))

    def holding(self) -> list[Lease]:
        return [m for m in self.model if not m.released or m.holders]

    @rule(target=leases)
    def acquire(self) -> Lease | None:
        if len(self.holding()) >= CAPACITY:
            try:
                self.pool.acquire(timeout=0)
            except PoolExhausted:
                return None
            raise AssertionError("a held block was handed out again")
        lease = Lease(self.pool.acquire(timeout=0), next(self.patterns))
        lease.buf[0:SIZE] = bytes([lease.pattern]) * SIZE  # the new user writes over the block
        self.model.append(lease)
        return lease

    @rule(lease=leases)
    def write(self, lease: Lease | None) -> None:
        if lease is None or lease.released:
            return
        lease.pattern = next(self.patterns)
        lease.buf[0:SIZE] = bytes([lease.pattern]) * SIZE

    @rule(target=holders, lease=leases, kind=st.sampled_from(KINDS), start=st.integers(0, 8))
    def hold(self, lease: Lease | None, kind: str, start: int) -> Holder | None:
        if lease is None or lease.released:
            return None
        holder = Holder(make_holder(lease, kind, start), lease, start, kind)
        lease.holders.append(holder)
        return holder

    @rule(target=holders, holder=holders)
    def derive(self, holder: Holder | None) -> Holder | None:
        """A holder made from a holder: a slice of a view, a view of an array, a memoryview of
        a ctypes array. The parent stays as it is."""
        if holder is None or holder.obj is None:
            return None
        obj = holder.obj
        if isinstance(obj, np.ndarray):
            child = obj.view(np.uint8)[1:]
        elif isinstance(obj, ctypes.Array):
            child = memoryview(obj).cast("B")[1:]  # type: ignore[arg-type]
        else:
            child = obj[1:]
        derived = Holder(child, holder.lease, holder.start + 1, holder.kind)
        holder.lease.holders.append(derived)
        return derived

    @rule(holder=holders)
    def release_base(self, holder: Holder | None) -> None:
        """What a user may try: release the array's base. Arrays from as_array() and pins have
        no releasable base, so they keep the block whatever the user does."""
        if holder is None or not isinstance(holder.obj, np.ndarray):
            return
        if holder.kind not in ("as_array", "pin_array"):
            return  # np.frombuffer(lease): numpy's own memoryview base (see docs/design.md)
        base = holder.obj.base
        while isinstance(base, np.ndarray):
            base = base.base
        release = getattr(base, "release", None)
        if release is not None:  # a releasable base: a hostile user releases it
            release()
        assert type(base).__name__ == "BufferPin"

    @rule(lease=leases)
    def release(self, lease: Lease | None) -> None:
        if lease is None or lease.released:
            return
        lease.buf.release()
        lease.released = True

    @rule(lease=leases)
    def forget(self, lease: Lease | None) -> None:
        """Drop a live lease without release(): its block comes back when it is collected."""
        if lease is None or lease.released or lease.holders:
            return
        before = self.pool.stats().gc_returns
        lease.buf = None  # type: ignore[assignment]  # the last reference: collected here
        lease.released = True
        assert self.pool.stats().gc_returns == before + 1

    @rule(holder=consumes(holders))
    def drop(self, holder: Holder | None) -> None:
        if holder is None or holder.obj is None:
            return
        assert holder.content() == bytes([holder.lease.pattern]) * len(holder.content())
        holder.lease.holders.remove(holder)
        if isinstance(holder.obj, memoryview):
            holder.obj.release()  # a memoryview's own release ends that holder, legitimately
        holder.obj = None

    @invariant()
    def no_holder_sees_another_users_bytes(self) -> None:
        for lease in self.model:
            for holder in lease.holders:
                data = holder.content()
                assert data == bytes([lease.pattern]) * len(data), (holder.kind, lease.pattern)

    @invariant()
    def counters_balance(self) -> None:
        s = self.pool.stats()
        live = sum(not m.released for m in self.model)
        parked = sum(m.released and bool(m.holders) for m in self.model)
        assert (s.live, s.parked, s.used) == (live, parked, live + parked)
        assert s.acquires - s.releases - s.gc_returns == s.live
        assert s.outstanding == s.live + s.parked

    def teardown(self) -> None:
        for lease in self.model:
            for holder in lease.holders:
                if isinstance(holder.obj, memoryview):
                    holder.obj.release()
                holder.obj = None
            lease.holders.clear()
            if not lease.released:
                lease.buf.release()
        gc.collect()
        assert self.pool.outstanding() == 0
        self.pool.close()


PinMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_pins_keep_blocks = PinMachine.TestCase


def test_as_array_keeps_the_block_after_its_base_is_released_by_hand() -> None:
    """The reported case: numpy's `.base` memoryview released, lease released, block reused."""
    with BufferPool(64, capacity=1) as pool:
        lease = pool.acquire()
        lease[0:64] = b"\x11" * 64
        a = lease.as_array()
        base = a.base
        if hasattr(base, "release"):  # before: a memoryview that Python code could release
            base.release()
        lease.release()
        assert pool.stats().parked == 1
        try:
            other = pool.acquire(timeout=0)
        except PoolExhausted:
            other = None
        else:
            other[0] = 0x99
        assert other is None, "the block of a live array was handed to another user"
        assert a[0] == 0x11
        del a, base
        assert pool.stats().parked == 0
        pool.acquire(timeout=0).release()

"""A hypothesis model of ObjectPool: random acquire, release, failing reset and validate, timeouts,
trim, cross-thread release and close, checked against a plain set/dict model after every step."""

from __future__ import annotations

import threading

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)
from objpool_helpers import Factory, Thing

from poolalloc import DoubleReleaseError, Lease, ObjectPool, PoolClosedError, PoolExhausted


def _validate(thing: Thing) -> bool:
    return thing.holder != "broken"


def _reset(thing: Thing) -> None:
    if thing.dirty:
        raise ValueError("reset failed (on purpose)")


class ObjectPoolMachine(RuleBasedStateMachine):
    leases = Bundle("leases")
    released = Bundle("released")

    def __init__(self) -> None:
        super().__init__()
        self.factory = Factory()
        self.pool: ObjectPool[Thing] | None = None
        self.out: dict[Lease[Thing], int] = {}  # lease -> object id
        self.idle: set[int] = set()
        self.max_size = 1
        self.min_idle = 0
        self.closed = False
        self.timeouts = 0

    @initialize(max_size=st.integers(1, 4), stash_size=st.integers(0, 3), data=st.data())
    def make(self, max_size: int, stash_size: int, data: st.DataObject) -> None:
        self.max_size = max_size
        self.min_idle = data.draw(st.integers(0, max_size), label="min_idle")
        self.pool = ObjectPool(
            self.factory,
            reset=_reset,
            validate=_validate,
            dispose=self.factory.dispose,
            max_size=max_size,
            min_idle=self.min_idle,
            stash_size=stash_size,
            timeout=0,
        )
        self.idle = {t.id for t in self.factory.made}

    @property
    def p(self) -> ObjectPool[Thing]:
        assert self.pool is not None
        return self.pool

    def _alive(self) -> int:
        return len(self.idle) + len(self.out)

    def _disposed_during(self, before: int) -> set[int]:
        return {t.id for t in self.factory.disposed[before:]}

    @rule(target=leases, timeout=st.sampled_from([0, 0.001]))
    def acquire(self, timeout: float) -> object:
        can = not self.closed and (bool(self.idle) or self._alive() < self.max_size)
        before = len(self.factory.disposed)
        try:
            lease = self.p.acquire(timeout=timeout)
        except PoolClosedError:
            assert self.closed
            return None
        except PoolExhausted:
            assert not can, "exhausted although an object was free"
            self.timeouts += 1
            return None
        assert can, "acquired beyond max_size"
        gone = self._disposed_during(before)
        assert gone <= self.idle, "disposed an object that was not idle"
        assert all(self._by_id(i).holder == "broken" for i in gone)
        self.idle -= gone
        thing = lease.obj
        assert thing.holder != "broken"
        assert not thing.disposed
        assert thing.id not in self.out.values(), "object held twice"
        self.idle.discard(thing.id)
        self.out[lease] = thing.id
        return lease

    def _by_id(self, ident: int) -> Thing:
        return next(t for t in self.factory.made if t.id == ident)

    def _release(self, lease: object, how: str) -> object:
        if lease is None:
            return None
        assert isinstance(lease, Lease)
        thing = lease.obj
        before = len(self.factory.disposed)
        if how == "thread":
            worker = threading.Thread(target=lease.release)
            worker.start()
            worker.join()
        elif how == "pool":
            self.p.release(lease)
        else:
            lease.release()
        del self.out[lease]
        if thing.dirty or self.closed:
            assert thing.disposed
            assert self._disposed_during(before) == {thing.id}
        else:
            assert not thing.disposed
            self.idle.add(thing.id)
        return lease

    @rule(target=released, lease=consumes(leases), how=st.sampled_from(["lease", "pool", "thread"]))
    def release(self, lease: object, how: str) -> object:
        return self._release(lease, how)

    @rule(target=released, lease=consumes(leases))
    def release_with_failing_reset(self, lease: object) -> object:
        if isinstance(lease, Lease):
            lease.obj.dirty = True
        return self._release(lease, "lease")

    @rule(target=released, lease=consumes(leases))
    def release_broken(self, lease: object) -> object:
        if isinstance(lease, Lease):
            lease.obj.holder = "broken"  # fails validate on its next borrow
        return self._release(lease, "lease")

    @rule(lease=released)
    def double_release(self, lease: object) -> None:
        if lease is not None:
            with pytest.raises(DoubleReleaseError):
                lease.release()  # type: ignore[attr-defined]

    @precondition(lambda self: not self.closed)
    @rule()
    def trim(self) -> None:
        before = len(self.factory.disposed)
        dropped = self.p.trim()
        gone = self._disposed_during(before)
        assert len(gone) == dropped == max(len(self.idle) - self.min_idle, 0)
        assert gone <= self.idle
        self.idle -= gone

    @rule()
    def close(self) -> None:
        before = len(self.factory.disposed)
        with pytest.warns(ResourceWarning) if self.out and not self.closed else _nothing():
            report = self.p.close()
        assert report.outstanding == len(self.out)
        assert self._disposed_during(before) == self.idle
        self.idle = set()
        self.closed = True

    @invariant()
    def counters_balance(self) -> None:
        if self.pool is None:
            return
        s = self.p.stats()
        assert s.is_balanced, s
        assert (s.in_use, s.idle, s.alive) == (len(self.out), len(self.idle), self._alive()), s
        assert s.alive == len(self.factory.alive())
        assert s.alive <= self.max_size
        assert s.timeouts == self.timeouts
        assert s.waiting == 0


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


ObjectPoolMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_object_pool_model = ObjectPoolMachine.TestCase

"""The `with` methods of ObjectPool leases (C, in poolalloc._lease.ObjectLeaseBase).

They must behave as the Python methods they replace did, and refuse misuse with an exception,
never a crash: unbound calls, wrong arguments, a lease never filled in, tampered fields.
"""

from __future__ import annotations

import gc
import threading
from typing import Any

import pytest

from poolalloc import ObjectPool
from poolalloc._lease import ObjectLeaseBase
from poolalloc.errors import DoubleReleaseError, LeaseReleasedError
from poolalloc.objects.lease import Lease, TrackedLease


@pytest.mark.parametrize("track", [False, True])
def test_with_gives_the_object_and_returns_it(track: bool) -> None:
    pool = ObjectPool(list, max_size=1, timeout=0, track_leaks=track)
    for _ in range(3):
        with pool.acquire() as items:
            items.append(1)
            assert pool.stats().in_use == 1
    s = pool.stats()
    assert (s.acquires, s.in_use, s.idle, s.is_balanced) == (3, 0, 1, True)
    assert pool.close().is_clean


def test_an_exception_in_the_block_propagates_and_the_object_comes_back() -> None:
    pool = ObjectPool(list, reset=list.clear, max_size=1, timeout=0)

    def fails() -> None:
        with pool.acquire() as items:
            items.append(1)
            raise KeyError("x")

    with pytest.raises(KeyError):
        fails()
    with pool.acquire() as items:
        assert items == []  # reset ran on the way back
    assert pool.stats().in_use == 0


def test_release_inside_the_block_makes_exit_raise_double_release() -> None:
    pool = ObjectPool(list)
    lease = pool.acquire()
    with pytest.raises(DoubleReleaseError), lease:
        lease.release()
    assert lease.is_released
    assert pool.stats().is_balanced


def test_enter_after_release_raises() -> None:
    pool = ObjectPool(list)
    lease = pool.acquire()
    lease.release()
    with pytest.raises(LeaseReleasedError), lease:
        pass  # pragma: no cover


def test_the_exit_method_is_callable_unbound_and_bound() -> None:
    pool = ObjectPool(list)
    lease = pool.acquire()
    assert Lease.__enter__(lease) == []
    bound = lease.__exit__
    assert "Lease.__exit__" in repr(bound)
    assert "__enter__" in repr(Lease.__enter__)
    assert bound(None, None, None) is None
    assert lease.is_released
    with pytest.raises(DoubleReleaseError):
        Lease.__exit__(lease, None, None, None)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda lease: lease.__exit__(None, None), "exactly 3"),
        (lambda lease: lease.__exit__(None, None, None, None), "exactly 3"),
        (lambda lease: lease.__enter__(1), "exactly 0"),
        (lambda lease: lease.__exit__(None, None, tb=None), "keyword"),
        (lambda lease: Lease.__exit__(object(), None, None, None), "ObjectPool lease"),
        (lambda lease: Lease.__exit__(), "ObjectPool lease"),
        (lambda lease: vars(ObjectLeaseBase)["__enter__"].__get__(1, Lease), "ObjectPool lease"),
    ],
)
def test_bad_calls_raise_type_error(call: object, message: str) -> None:
    pool = ObjectPool(list)
    lease = pool.acquire()
    with pytest.raises(TypeError, match=message):
        call(lease)  # type: ignore[operator]
    assert not lease.is_released
    lease.release()


@pytest.mark.parametrize("kind", [Lease, TrackedLease])
def test_a_lease_never_filled_in_is_released_and_harmless(kind: type[Lease[object]]) -> None:
    lease = kind()
    with pytest.raises(LeaseReleasedError), lease:
        pass  # pragma: no cover
    with pytest.raises(DoubleReleaseError):
        lease.__exit__(None, None, None)
    del lease
    gc.collect()


def test_a_lease_without_its_pool_refuses_exit_and_keeps_its_slot() -> None:
    pool = ObjectPool(list, max_size=1, timeout=0)
    lease = pool.acquire()
    pool_ref = lease._pool
    del lease._pool
    with pytest.raises(TypeError, match="no pool"):
        lease.__exit__(None, None, None)
    assert not lease.is_released
    lease._pool = pool_ref
    lease.release()
    assert pool.stats().is_balanced


def test_a_dropped_lease_from_another_thread_comes_back() -> None:
    pool = ObjectPool(list, max_size=2, timeout=0)
    box = [pool.acquire(), pool.acquire()]
    t = threading.Thread(target=box.clear)
    t.start()
    t.join(10)
    gc.collect()
    with pool.acquire(), pool.acquire():
        pass
    s = pool.stats()
    assert (s.gc_returns, s.in_use, s.is_balanced) == (2, 0, True)


def test_leases_and_their_slots_are_collected_in_a_cycle() -> None:
    pool = ObjectPool(dict, max_size=1, timeout=0)
    for _ in range(10):  # freed leases, bound methods and finalizers: nothing accumulates
        lease = pool.acquire()
        lease.obj["self"] = lease
        del lease
        gc.collect()
        with pool.acquire() as d:
            d.clear()  # drops the old lease, brought back to life, released
        del d  # the name outlives the block
    s = pool.stats()
    assert (s.gc_returns, s.in_use, s.is_balanced) == (10, 0, True)


class _CountingPool(ObjectPool[list[int]]):
    puts = 0

    def _put(self, slot: Any, lease: Any) -> None:
        type(self).puts += 1
        super()._put(slot, lease)


def test_exit_calls_the_put_of_the_pools_own_type_even_when_it_changes() -> None:
    # __exit__ caches the lookup of `_put` per type and type version: it must follow both
    plain, counting = ObjectPool(list), _CountingPool(list)
    for _ in range(3):
        with plain.acquire(), counting.acquire():
            pass
    assert _CountingPool.puts == 3
    seen: list[object] = []
    original = _CountingPool._put

    def patched(self: _CountingPool, slot: Any, lease: Any) -> None:
        seen.append(lease)
        original(self, slot, lease)

    _CountingPool._put = patched  # type: ignore[method-assign]
    try:
        with counting.acquire(), plain.acquire():
            pass
    finally:
        del _CountingPool._put  # back to the inherited one, also a type change
        _CountingPool._put = original  # type: ignore[method-assign]
    assert len(seen) == 1
    assert _CountingPool.puts == 4
    with counting.acquire():
        pass
    assert _CountingPool.puts == 5
    assert plain.stats().is_balanced
    assert counting.stats().is_balanced

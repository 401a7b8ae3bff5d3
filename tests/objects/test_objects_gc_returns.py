"""ObjectPool leases collected without release() give their object back, counted in gc_returns."""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import threading
import warnings

import pytest

from poolalloc import ObjectPool, PoolExhausted
from poolalloc.errors import DoubleReleaseError, LeaseReleasedError
from poolalloc.objects.lease import Lease, TrackedLease


def test_a_dropped_lease_comes_back_and_the_stats_balance() -> None:
    pool = ObjectPool(list, max_size=1, timeout=0)
    pool.acquire()  # dropped without release()
    gc.collect()
    with pool.acquire() as items:  # max_size=1 is not exhausted for good
        assert items == []
    s = pool.stats()
    assert (s.gc_returns, s.in_use, s.idle, s.alive, s.is_balanced) == (1, 0, 1, 1, True)
    assert s.in_use == s.acquires - (s.acquires - s.gc_returns - s.in_use) - s.gc_returns
    assert pool.close().is_clean


def test_a_lease_in_a_reference_cycle_comes_back_when_the_cycle_is_collected() -> None:
    pool = ObjectPool(dict, max_size=1, timeout=0)
    holder: dict[str, object] = {}
    holder["lease"] = pool.acquire()
    holder["self"] = holder
    del holder
    with pytest.raises(PoolExhausted):
        pool.acquire()
    gc.collect()
    pool.acquire().release()
    s = pool.stats()
    assert (s.gc_returns, s.timeouts, s.is_balanced) == (1, 1, True)


def test_a_waiting_thread_gets_the_object_of_a_lease_dropped_elsewhere() -> None:
    pool = ObjectPool(list, max_size=1)
    box = [pool.acquire()]
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire(timeout=10)))
    waiter.start()
    while not pool.stats().waiting:
        threading.Event().wait(0.01)
    box.clear()  # the only reference: the lease is collected here
    waiter.join(10)
    assert len(got) == 1
    got.pop().release()  # type: ignore[attr-defined]
    s = pool.stats()
    assert (s.gc_returns, s.in_use, s.is_balanced) == (1, 0, True)


def test_a_collected_lease_is_reset_and_disposed_when_reset_raises() -> None:
    disposed: list[object] = []

    def reset(obj: list[int]) -> None:
        if obj:
            raise ValueError("dirty")

    pool = ObjectPool(list, reset=reset, dispose=disposed.append, max_size=2)
    dirty = pool.acquire()
    dirty.obj.append(1)
    del dirty  # dropped dirty: reset raises, the object is disposed
    clean = pool.acquire()
    del clean  # dropped clean: reset passes, the object is kept
    s = pool.stats()
    assert (s.gc_returns, s.reset_failures, s.disposed, s.idle, s.is_balanced) == (
        2,
        1,
        1,
        1,
        True,
    )
    assert disposed == [[1]]


def test_leak_tracking_logs_where_a_collected_lease_was_acquired(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = ObjectPool(list, track_leaks=True)
    with caplog.at_level(logging.WARNING, logger="poolalloc.objects"):
        pool.acquire()
        gc.collect()
    assert "garbage-collected without release()" in caplog.text
    assert "test_leak_tracking_logs_where" in caplog.text
    assert pool.close().is_clean


def test_a_leak_in_a_loop_logs_once_per_place(caplog: pytest.LogCaptureFixture) -> None:
    # one warning (with its stack) per leak was a flood in a request loop: the place is logged
    # once, and gc_returns still counts every lease
    pool = ObjectPool(list, track_leaks=True)

    def leak() -> None:
        pool.acquire()

    with caplog.at_level(logging.WARNING, logger="poolalloc.objects"):
        for _ in range(50):
            leak()
        gc.collect()
        pool.acquire()  # another place: logged too
        gc.collect()
    lines = [r for r in caplog.records if "garbage-collected" in r.getMessage()]
    assert len(lines) == 2
    assert "in leak" in lines[0].getMessage()
    assert "counted in stats().gc_returns" in lines[0].getMessage()
    assert pool.stats().gc_returns == 51
    assert pool.close().is_clean


def test_leaks_from_more_places_than_are_kept_are_counted_not_logged(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # past the places it keeps, a repeated place was logged with its stack every time, though
    # the line said it would not be: the last place kept says new ones are counted only
    from poolalloc import leaks

    monkeypatch.setattr(leaks, "GC_LEAKS_KEPT", 2)
    pool = ObjectPool(list, track_leaks=True)

    def first() -> None:
        pool.acquire()

    def second() -> None:
        pool.acquire()

    def third() -> None:
        pool.acquire()

    with caplog.at_level(logging.WARNING, logger="poolalloc.objects"):
        for leak in (first, second, third, third, first):
            leak()
            gc.collect()
    lines = [r.getMessage() for r in caplog.records if "garbage-collected" in r.getMessage()]
    assert len(lines) == 2
    assert "in first" in lines[0]
    assert "or from any new place" not in lines[0]
    assert "in second" in lines[1]
    assert "or from any new place" in lines[1]
    assert pool.stats().gc_returns == 5
    assert pool.close().is_clean


def test_an_interrupt_between_acquire_and_with_leaves_the_pool_whole() -> None:
    pool = ObjectPool(list, max_size=1, timeout=0)

    def interrupted() -> None:
        lease = pool.acquire()
        raise KeyboardInterrupt  # lands after acquire returned, before `with lease:` ran
        with lease:  # pragma: no cover
            pass

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    gc.collect()  # the traceback held the frame, and the frame the lease
    pool.acquire().release()
    assert pool.stats().is_balanced


@pytest.mark.parametrize("track", [False, True])
def test_a_task_collected_inside_async_with_gives_its_object_back_once(
    track: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """The collection that finalizes the slot also closes the task's coroutine, whose
    ``__aexit__`` releases the lease: the object must come back once, not twice."""
    pool = ObjectPool(list, max_size=2, timeout=0, track_leaks=track)

    async def main() -> None:
        async def holder() -> None:
            async with pool.acquire_async() as items:
                items.append(1)
                await asyncio.get_running_loop().create_future()  # never resolved

        task = asyncio.ensure_future(holder())
        await asyncio.sleep(0)  # it holds the lease now, and waits for good
        del task  # only the cycle task -> coroutine -> future -> task holds it
        gc.collect()  # asyncio logs "Task was destroyed but it is pending!"

    asyncio.run(main())
    s = pool.stats()
    assert (s.created, s.idle, s.in_use, s.is_balanced) == (1, 1, 0, True), s
    first, second = pool.acquire(), pool.acquire()
    assert first.obj is not second.obj  # one object would have gone to both
    first.release()
    second.release()
    assert pool.close().is_clean


class _Holder:
    """An object that keeps a reference to its own lease (the lease, slot and object cycle)."""

    lease: object = None


@pytest.mark.parametrize("track", [False, True])
def test_a_lease_kept_alive_by_its_own_object_is_released_once_the_cycle_is_collected(
    track: bool,
) -> None:
    pool = ObjectPool(_Holder, max_size=1, timeout=0, track_leaks=track)
    lease = pool.acquire()
    lease.obj.lease = lease  # the object holds the lease: collected only as a cycle
    del lease
    gc.collect()  # the object comes back and takes its old lease back to life with it
    with pool.acquire() as holder:
        stale = holder.lease
        assert isinstance(stale, Lease)
        assert stale.is_released
        with pytest.raises(DoubleReleaseError):
            stale.release()  # must not give back the object the new lease holds
        with pytest.raises(LeaseReleasedError):
            _ = stale.obj
        with pytest.raises(LeaseReleasedError), stale:
            pass
        assert pool.stats().in_use == 1
        holder.lease = None
    s = pool.stats()
    assert (s.gc_returns, s.in_use, s.idle, s.is_balanced) == (1, 0, 1, True)
    assert pool.close().is_clean


def test_only_pools_that_track_leaks_hand_out_leases_with_a_finalizer() -> None:
    # a released lease of an untracked pool is freed without a Python call: its finalizer is
    # the C one of its base, not a Python __del__
    plain = ObjectPool(list, track_leaks=False)
    tracked = ObjectPool(list, track_leaks=True)
    with plain.acquire(), tracked.acquire():
        pass
    lease, other = plain.acquire(), tracked.acquire()
    assert type(lease) is Lease
    assert "__del__" not in vars(Lease)
    assert type(other) is TrackedLease
    assert "__del__" in vars(TrackedLease)
    assert isinstance(other, Lease)
    lease.release()
    other.release()


def test_an_untracked_pool_resets_the_object_of_a_collected_lease() -> None:
    pool = ObjectPool(list, reset=list.clear, track_leaks=False, max_size=1)
    lease = pool.acquire()
    lease.obj.append(1)
    del lease
    with pool.acquire() as items:
        assert items == []
    s = pool.stats()
    assert (s.gc_returns, s.reset_failures, s.is_balanced) == (1, 0, True)


def test_a_waiting_coroutine_collected_while_its_thread_holds_the_lock_does_not_hang() -> None:
    """A collection can run on a thread inside the pool's lock (any allocation there may start
    one) and close a waiting coroutine found garbage; its clean-up must not wait for that lock
    (it is not reentrant): the grant is passed on by the next locked path instead."""
    pool = ObjectPool(list, max_size=1, timeout=0)
    held = pool.acquire()

    async def main() -> None:
        waiting = pool.acquire_async(timeout=math.inf)
        waiting.send(None)  # queued, suspended in its wait
        cycle: list[object] = [waiting]
        cycle.append(cycle)
        del waiting, cycle
        with pool._lock:
            gc.collect()  # closes the coroutine: its clean-up runs here, lock held

    runner = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    runner.start()
    runner.join(10)
    assert not runner.is_alive(), "the collection waited for a lock its own thread held"
    held.release()
    s = pool.stats()
    assert (s.waiting, s.in_use, s.idle, s.is_balanced) == (0, 0, 1, True), s
    pool.acquire(timeout=0).release()


def test_an_object_given_back_after_its_slot_stayed_a_suspect_comes_back_at_once() -> None:
    """A slot that a collection found garbage and user code then put back (the task collected
    inside ``async with``) cannot be finalized again; when a later lease of it is dropped, the
    next acquisition finds it, not only the next collection."""
    pool = ObjectPool(list, max_size=1, timeout=0)

    async def main() -> None:
        async def holder() -> None:
            async with pool.acquire_async():
                await asyncio.get_running_loop().create_future()  # never resolved

        task = asyncio.ensure_future(holder())
        await asyncio.sleep(0)
        del task
        gc.collect()

    asyncio.run(main())
    gc.disable()  # no collection from here on: only the pool can notice
    try:
        pool.acquire()  # dropped unreleased
        pool.acquire(timeout=0).release()
    finally:
        gc.enable()
    s = pool.stats()
    assert (s.gc_returns, s.in_use, s.idle, s.is_balanced) == (1, 0, 1, True), s


def test_a_granted_coroutine_collected_passes_its_object_to_the_next_waiter() -> None:
    """A waiting coroutine driven by hand is granted the object, then found garbage: the
    collection's clean-up passes the grant on at once, not when some later caller comes."""
    pool = ObjectPool(list, max_size=1)
    held = pool.acquire()

    async def main() -> bool:
        first = pool.acquire_async(timeout=math.inf)
        first.send(None)  # queued first, suspended in its wait
        second = asyncio.ensure_future(pool.acquire_async(timeout=2.0))
        await asyncio.sleep(0.01)
        held.release()  # granted to the first
        cycle: list[object] = [first]
        cycle.append(cycle)
        del first, cycle
        gc.collect()  # closes it: its grant goes to the second
        lease = await second
        lease.release()
        return True

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the hand-driven coroutine
        assert asyncio.run(main())
    s = pool.stats()
    assert (s.waiting, s.in_use, s.idle, s.timeouts, s.is_balanced) == (0, 0, 1, 0, True), s

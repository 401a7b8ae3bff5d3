"""ObjectPool under asyncio: cancellation and timeout storms strand nothing (asyncpg #467/#1052)."""

from __future__ import annotations

import asyncio
import gc
import math
import random
import sys
import threading
import time
import warnings
from collections.abc import Callable
from types import FrameType

import pytest
from objpool_helpers import TEST_SECONDS, Thing, interrupt_on_line

from poolalloc import ObjectPool, PoolClosedError, PoolExhausted
from poolalloc.objects._waiting import AsyncWaiter

MakePool = Callable[..., ObjectPool[Thing]]


def _assert_nothing_stranded(pool: ObjectPool[Thing], max_size: int) -> None:
    s = pool.stats()
    assert (s.in_use, s.waiting) == (0, 0), s
    assert s.is_balanced, s
    assert s.alive <= max_size, s
    # All max_size objects can be leased at once, without waiting: none is stuck anywhere.
    leases = [pool.acquire(timeout=0) for _ in range(max_size)]
    for lease in leases:
        lease.release()


def test_cancellation_and_timeout_storm(make_pool: MakePool) -> None:
    max_size = 3
    pool = make_pool(max_size=max_size)
    outcomes = {"ok": 0, "timeout": 0, "cancelled": 0}

    async def user(rng: random.Random) -> None:
        try:
            async with pool.acquire_async(timeout=rng.choice([0, 0.001, 0.005, 0.02])) as thing:
                assert thing.holder is None, "object held twice"
                thing.holder = "task"
                await asyncio.sleep(rng.choice([0, 0, 0.001]))
                thing.holder = None
            outcomes["ok"] += 1
        except PoolExhausted:
            outcomes["timeout"] += 1
        except asyncio.CancelledError:
            outcomes["cancelled"] += 1
            raise

    async def storm() -> None:
        rng = random.Random(1234)
        stop = time.monotonic() + 0.5 * TEST_SECONDS
        while time.monotonic() < stop:
            tasks = [asyncio.create_task(user(rng)) for _ in range(40)]
            for _ in range(rng.randrange(5, 30)):
                await asyncio.sleep(0)
                rng.choice(tasks).cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(storm())
    assert all(outcomes.values()), outcomes  # each kind of ending happened
    assert pool.stats().timeouts == outcomes["timeout"]
    _assert_nothing_stranded(pool, max_size)


def test_cancel_after_the_hand_off_returns_the_object(make_pool: MakePool) -> None:
    pool = make_pool(max_size=1)

    async def scenario() -> None:
        held = pool.acquire()
        waiter = asyncio.create_task(pool.acquire_async(timeout=10).__aenter__())
        while pool.stats().waiting == 0:
            await asyncio.sleep(0)
        held.release()  # the object is granted to the waiter, whose wake-up is only scheduled
        waiter.cancel()  # ... and the waiter is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await waiter

    asyncio.run(scenario())
    s = pool.stats()
    assert (s.in_use, s.idle, s.waiting, s.created) == (0, 1, 0, 1)
    _assert_nothing_stranded(pool, 1)


def test_timeout_racing_the_hand_off_never_loses_the_object(make_pool: MakePool) -> None:
    pool = make_pool(max_size=1)
    results = {"got": 0, "timeout": 0}

    async def scenario() -> None:
        for i in range(200):
            held = pool.acquire()
            delay = 0.0005 * (i % 4)

            async def wait_briefly() -> None:
                try:
                    async with pool.acquire_async(timeout=0.001):
                        results["got"] += 1
                except PoolExhausted:
                    results["timeout"] += 1

            task = asyncio.create_task(wait_briefly())
            await asyncio.sleep(delay)
            held.release()
            await task
            s = pool.stats()
            assert (s.in_use, s.waiting, s.alive) == (0, 0, 1), s

    asyncio.run(scenario())
    assert results["got"] + results["timeout"] == 200
    _assert_nothing_stranded(pool, 1)


def test_waiter_on_a_closed_loop_passes_its_grant_on(make_pool: MakePool) -> None:
    pool = make_pool(max_size=1)
    held = pool.acquire()

    def abandon_a_loop() -> None:
        loop = asyncio.new_event_loop()

        async def wait_forever() -> None:
            async with pool.acquire_async():
                pass

        task = loop.create_task(wait_forever())
        loop.run_until_complete(asyncio.sleep(0.01))
        loop.close()  # the task never finishes: its loop is gone
        assert not task.done()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = threading.Thread(target=abandon_a_loop)
        t.start()
        t.join(10)
    held.release()  # the grant cannot wake the dead loop's task: it goes back to the pool
    s = pool.stats()
    assert (s.in_use, s.idle, s.waiting) == (0, 1, 0), s
    _assert_nothing_stranded(pool, 1)


def test_await_form_gives_a_lease_and_close_wakes_tasks(make_pool: MakePool) -> None:
    pool = make_pool(max_size=1)

    async def scenario() -> None:
        lease = await pool.acquire_async()
        waiter = asyncio.create_task(pool.acquire_async(timeout=10).__aenter__())
        while pool.stats().waiting == 0:
            await asyncio.sleep(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            pool.close()
        with pytest.raises(PoolClosedError):
            await waiter
        lease.release()

    asyncio.run(scenario())
    assert pool.stats().alive == 0


def test_async_timeout_counts_and_raises(make_pool: MakePool) -> None:
    pool = make_pool(max_size=1, timeout=0.01)

    async def scenario() -> None:
        async with pool.acquire_async():
            start = time.monotonic()
            with pytest.raises(PoolExhausted):
                async with pool.acquire_async():
                    pass
            assert time.monotonic() - start >= 0.009

    asyncio.run(scenario())
    assert pool.stats().timeouts == 1


def test_acquire_async_runs_as_a_task_and_a_cancelled_one_strands_nothing(
    make_pool: MakePool,
) -> None:
    """``acquire_async()`` is a coroutine too (as BufferPool's is): ``create_task`` runs it,
    and a task cancelled while it waits leaves the pool whole."""
    pool = make_pool(max_size=1)

    async def scenario() -> None:
        first = await asyncio.create_task(pool.acquire_async())
        waiting = asyncio.create_task(pool.acquire_async(timeout=10))
        while pool.stats().waiting == 0:
            await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        first.release()
        again = await asyncio.wait_for(pool.acquire_async(), 5)
        again.release()

    asyncio.run(scenario())
    _assert_nothing_stranded(pool, 1)


def test_a_task_waiting_for_an_object_is_kept_alive(make_pool: MakePool) -> None:
    """A task nobody keeps a reference to, waiting at max_size, is kept alive by the pool (as
    asyncio's queues keep theirs): a garbage collection while it waits does not destroy it."""
    pool = make_pool(max_size=1)
    held = pool.acquire()
    done: list[Thing] = []

    async def worker() -> None:
        async with pool.acquire_async(timeout=math.inf) as thing:
            done.append(thing)

    async def main() -> None:
        asyncio.get_running_loop().create_task(worker())  # no reference kept
        await asyncio.sleep(0.01)
        gc.collect()
        held.release()
        await asyncio.sleep(0.05)

    asyncio.run(main())
    assert len(done) == 1
    _assert_nothing_stranded(pool, 1)


def test_a_late_wakeup_does_not_pass_on_a_grant_already_used(
    make_pool: MakePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The granting thread is held up between the grant and the wake-up; the task finds the
    grant at its deadline, uses it, and its loop closes; the wake-up then fails (loop closed)
    and gave the grant, already used, to the pool a second time: one object, two users."""
    pool = make_pool(max_size=1)
    loop_closed = threading.Event()
    wake = AsyncWaiter.wake

    def held_up(self: AsyncWaiter) -> bool:
        loop_closed.wait(5)
        return wake(self)

    monkeypatch.setattr(AsyncWaiter, "wake", held_up)
    held = pool.acquire()

    async def main() -> None:
        (await pool.acquire_async(timeout=0.3)).release()  # granted at 0.1 s, never woken

    releaser = threading.Timer(0.1, held.release)
    releaser.start()
    asyncio.run(main())
    loop_closed.set()
    releaser.join()
    monkeypatch.undo()
    s = pool.stats()
    assert (s.idle, s.alive, s.is_balanced) == (1, 1, True), s
    _assert_nothing_stranded(pool, 1)
    with pytest.raises(PoolExhausted), pool.acquire(timeout=0):
        pool.acquire(timeout=0)  # a second object from a max_size=1 pool


def test_a_task_whose_wakeup_an_interrupt_stopped_is_woken_by_the_next_call(
    make_pool: MakePool,
) -> None:
    """An interrupt lands in the releasing thread after the grant, before the wake-up: the
    next slow path of any caller (here ``stats()``) sends the wake-up again."""
    pool = make_pool(max_size=1)
    held = pool.acquire()
    took: list[float] = []

    def waiter() -> None:
        async def main() -> None:
            start = time.monotonic()
            (await pool.acquire_async(timeout=10)).release()
            took.append(time.monotonic() - start)

        asyncio.run(main())

    thread = threading.Thread(target=waiter)
    thread.start()
    end = time.monotonic() + 5
    while pool.stats().waiting == 0 and time.monotonic() < end:
        time.sleep(0.001)

    def land_at_wake(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code.co_name == "_wake":
            sys.setprofile(None)
            raise KeyboardInterrupt

    sys.setprofile(land_at_wake)
    try:
        with pytest.raises(KeyboardInterrupt):
            held.release()
    finally:
        sys.setprofile(None)
    time.sleep(0.1)
    assert not took  # granted, not woken
    pool.stats()
    thread.join(5)
    assert took, "the task was never woken"
    assert took[0] < 2, took
    _assert_nothing_stranded(pool, 1)


def test_a_task_handed_its_grant_by_an_interrupted_thread_is_woken_again(
    make_pool: MakePool,
) -> None:
    """The interrupt lands in the hand-over itself, after the task left the queue and before
    its wake-up was queued: the grant is recorded first, so the next caller's slow path wakes
    the task (before, nothing did and a task without a deadline waited for good)."""
    from poolalloc.objects._store import ObjectStore

    tracer = interrupt_on_line(ObjectStore._hand, lambda lines, i: "wake.append(" in lines[i])
    pool = make_pool(max_size=1)
    held = pool.acquire()

    async def main() -> bool:
        task = asyncio.ensure_future(pool.acquire_async(timeout=math.inf))
        await asyncio.sleep(0.01)
        sys.settrace(tracer)
        try:
            with pytest.raises(KeyboardInterrupt):
                held.release()
        finally:
            sys.settrace(None)
        await asyncio.sleep(0.01)
        pool.stats()  # another caller's slow path
        done, _ = await asyncio.wait([task], timeout=2)
        if not done:
            task.cancel()
            return False
        task.result().release()
        return True

    assert asyncio.run(main()), "the task was never woken"
    _assert_nothing_stranded(pool, 1)

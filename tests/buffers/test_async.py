"""acquire_async: waiting without blocking the loop; cancellation and timeouts strand nothing."""

from __future__ import annotations

import asyncio
import threading
import time

import budget
import pytest

from poolalloc import Allocator, BufferPool, PoolClosedError, PoolExhausted


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_acquire_async_fast_path_and_wait() -> None:
    async def main() -> None:
        with BufferPool(256, capacity=1) as pool:
            buf = await pool.acquire_async()
            asyncio.get_running_loop().call_later(0.05, buf.release)
            got = await pool.acquire_async(timeout=5)
            assert buf.released
            assert not got.released
            got.release()

    run(main())


def test_acquire_async_timeout_raises_and_leaves_no_waiter() -> None:
    async def main() -> None:
        with BufferPool(256, capacity=1) as pool:
            buf = pool.acquire()
            with pytest.raises(PoolExhausted):
                await pool.acquire_async(timeout=0)
            with pytest.raises(PoolExhausted):
                await pool.acquire_async(timeout=0.05)
            assert pool.stats().waiters == 0
            buf.release()
            assert pool.stats().outstanding == 0

    run(main())


def test_cancelled_waiters_never_strand_a_buffer() -> None:
    async def main() -> None:
        with BufferPool(256, capacity=2) as pool:
            held = pool.acquire_many(2)
            waiters = [asyncio.create_task(pool.acquire_async()) for _ in range(10)]
            await asyncio.sleep(0.01)
            # release and cancel in the same loop iteration: the race asyncpg #467 lost
            for buf in held:
                buf.release()
            for task in waiters[:8]:
                task.cancel()
            results = await asyncio.gather(*waiters, return_exceptions=True)
            got = [r for r in results if not isinstance(r, BaseException)]
            cancelled = [r for r in results if isinstance(r, asyncio.CancelledError)]
            assert len(got) + len(cancelled) == 10
            assert len(got) <= 2
            # every lease is either held by a finished waiter or back in the pool
            assert pool.outstanding() == len(got)
            for buf in got:
                buf.release()
            assert pool.stats().waiters == 0
            both = pool.acquire_many(2)
            pool.release_many(both)

    run(main())


def test_wait_for_timeouts_around_acquire_async_strand_nothing() -> None:
    async def main() -> None:
        with BufferPool(64, capacity=1) as pool:
            buf = pool.acquire()
            loop = asyncio.get_running_loop()
            for i in range(20):
                loop.call_later(0.001 * (i % 3), lambda: None)
                with pytest.raises((TimeoutError, asyncio.TimeoutError)):
                    await asyncio.wait_for(pool.acquire_async(), 0.001)
            buf.release()
            assert pool.outstanding() == 0
            assert pool.stats().waiters == 0

    run(main())


def test_release_from_another_thread_wakes_the_task() -> None:
    async def main() -> None:
        with BufferPool(64, capacity=1) as pool:
            buf = pool.acquire()
            threading.Timer(0.05, buf.release).start()
            got = await pool.acquire_async(timeout=10)
            got.release()

    run(main())


def test_close_wakes_async_waiters() -> None:
    async def main() -> None:
        pool = BufferPool(64, capacity=1)
        buf = pool.acquire()
        task = asyncio.create_task(pool.acquire_async())
        await asyncio.sleep(0.01)
        pool.close()
        with pytest.raises(PoolClosedError):
            await task
        buf.release()

    run(main())


def test_allocator_alloc_async() -> None:
    async def main() -> None:
        with Allocator(capacity=8192) as alloc:
            a = await alloc.alloc_async(8000)
            asyncio.get_running_loop().call_later(0.02, a.release)
            b = await alloc.alloc_async(8000, timeout=5)
            b.release()

    run(main())


def test_tasks_and_threads_share_a_small_pool_with_cancellations() -> None:
    seconds = budget.seconds(0.5)

    async def main() -> None:
        with BufferPool(128, capacity=2) as pool:
            stop = time.monotonic() + seconds

            def thread_work() -> None:
                while time.monotonic() < stop:
                    with pool.acquire(timeout=10) as buf:
                        buf[0] = 1

            async def task_work(i: int) -> None:
                while time.monotonic() < stop:
                    try:
                        buf = await asyncio.wait_for(pool.acquire_async(), 0.001 * (1 + i % 3))
                    except TimeoutError:
                        continue
                    await asyncio.sleep(0)
                    buf.release()

            threads = [threading.Thread(target=thread_work) for _ in range(2)]
            for t in threads:
                t.start()
            await asyncio.gather(*(task_work(i) for i in range(5)))
            for t in threads:
                t.join(30)
            s = pool.stats()
            assert s.outstanding == 0
            assert s.waiters == 0
            assert s.acquires == s.releases > 0

    run(main())

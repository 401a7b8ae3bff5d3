"""acquire_async / alloc_async / ObjectPool.acquire_async under asyncio and trio, via anyio."""

from __future__ import annotations

import threading
import time
from typing import Any

import anyio
import pytest

import poolalloc
from poolalloc import _async_backends

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_running_library_names_the_backend(anyio_backend: str) -> None:
    assert _async_backends.running_library() == anyio_backend
    assert _async_backends.not_asyncio() is (anyio_backend == "trio")


def test_outside_any_loop_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="asyncio, trio or anyio"):
        _async_backends.not_asyncio()


async def test_buffer_waiter_is_woken_by_a_task(anyio_backend: str) -> None:
    with poolalloc.BufferPool(64, capacity=1) as pool:
        held = await pool.acquire_async()
        got: list[Any] = []

        async def waiter() -> None:
            got.append(await pool.acquire_async(timeout=10))

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.sleep(0.05)
            assert not got  # really waiting
            held.release()
        assert got[0].nbytes == 64
        got[0].release()


async def test_buffer_waiter_is_woken_from_a_thread(anyio_backend: str) -> None:
    with poolalloc.BufferPool(64, capacity=1) as pool:
        held = pool.acquire()

        def release_later() -> None:
            time.sleep(0.05)
            held.release()

        thread = threading.Thread(target=release_later)
        thread.start()
        started = time.monotonic()
        lease = await pool.acquire_async(timeout=10)
        assert time.monotonic() - started < 5
        lease.release()
        thread.join()


async def test_buffer_timeout_raises_and_holds_nothing(anyio_backend: str) -> None:
    with poolalloc.BufferPool(64, capacity=1) as pool:
        held = await pool.acquire_async()
        started = time.monotonic()
        with pytest.raises(poolalloc.PoolExhausted, match="after waiting"):
            await pool.acquire_async(timeout=0.1)
        assert time.monotonic() - started >= 0.09
        with pytest.raises(poolalloc.PoolExhausted, match="without waiting"):
            await pool.acquire_async(timeout=0)
        held.release()
        assert pool.outstanding() == 0
        assert pool._leases.waiters == 0


async def test_cancelled_waiter_strands_nothing_and_passes_the_wakeup_on(
    anyio_backend: str,
) -> None:
    with poolalloc.BufferPool(64, capacity=1) as pool:
        held = await pool.acquire_async()
        got: list[Any] = []

        async def patient() -> None:
            got.append(await pool.acquire_async(timeout=10))

        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as scope:
                tg.start_soon(patient)
                await anyio.sleep(0.02)
                scope.cancel()  # cancels only this scope's wait below, not the task group
                await anyio.sleep(5)
            # a second waiter that is cancelled while the lease comes back
            with anyio.move_on_after(0.05):
                await pool.acquire_async()
            held.release()
        assert len(got) == 1
        got[0].release()
        assert pool.outstanding() == 0
        assert pool._leases.waiters == 0


async def test_many_waiters_all_served(anyio_backend: str) -> None:
    with poolalloc.BufferPool(32, capacity=2) as pool:
        served = 0

        async def worker() -> None:
            nonlocal served
            for _ in range(20):
                lease = await pool.acquire_async(timeout=10)
                await anyio.sleep(0)
                lease.release()
                served += 1

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(worker)
        assert served == 160
        assert pool.outstanding() == 0


async def test_allocator_alloc_async_waits(anyio_backend: str) -> None:
    with poolalloc.Allocator(capacity=4096) as alloc:
        held = await alloc.alloc_async(4096)
        got: list[Any] = []

        async def waiter() -> None:
            got.append(await alloc.alloc_async(1000, timeout=10))

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.sleep(0.05)
            assert not got
            held.release()
        assert got[0].nbytes == 1000
        got[0].release()
        held = await alloc.alloc_async(4096)
        with pytest.raises(poolalloc.PoolExhausted):
            await alloc.alloc_async(4096, timeout=0.05)
        held.release()


async def test_object_pool_async_under_both(anyio_backend: str) -> None:
    pool = poolalloc.ObjectPool(list, max_size=1)
    first = await pool.acquire_async()
    got: list[Any] = []

    async def waiter() -> None:
        async with pool.acquire_async(timeout=10) as obj:
            got.append(obj)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.sleep(0.05)
        assert not got
        first.release()
    assert got == [[]]
    held = await pool.acquire_async()
    with pytest.raises(poolalloc.PoolExhausted):
        await pool.acquire_async(timeout=0.05)
    with anyio.move_on_after(0.05):
        await pool.acquire_async()  # cancelled while queued
    held.release()
    async with pool.acquire_async(timeout=1) as obj:
        assert obj == []
    stats = pool.stats()
    assert (stats.in_use, stats.waiting) == (0, 0)
    pool.close()

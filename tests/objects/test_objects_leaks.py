"""Memory truth for ObjectPool: 10^5 acquire/release cycles leave nothing behind (memray).

These run in the second pass of `make test` (``pytest --memray -m leaks``); without --memray the
memray markers are inert, so the tests are also deselected from the first pass by ``leaks``."""

from __future__ import annotations

import asyncio

import pytest

from poolalloc import ObjectPool

CYCLES = 100_000


class Scratch:
    """A pooled object that owns memory worth noticing if it were leaked."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray(4096)


@pytest.mark.leaks
@pytest.mark.limit_leaks("64 KB")
def test_sync_cycles_leak_nothing() -> None:
    _sync_cycles()


@pytest.mark.leaks
@pytest.mark.limit_memory("1 MB")
def test_sync_cycles_peak_memory_stays_small() -> None:
    # Leases are made per acquisition: if they (or slots) piled up, 10^5 of them would not fit.
    _sync_cycles()


def _sync_cycles() -> None:
    pool = ObjectPool(Scratch, max_size=4, reset=lambda s: s.buf.__setitem__(0, 0))
    for _ in range(CYCLES // 2):
        with pool.acquire() as scratch:
            scratch.buf[0] = 1
    for _ in range(CYCLES // 2):
        lease = pool.acquire()
        lease.release()
    stats = pool.stats()
    assert (stats.created, stats.acquires, stats.in_use) == (1, CYCLES, 0)
    assert pool.close().is_clean


@pytest.mark.leaks
@pytest.mark.limit_leaks("64 KB")
def test_plain_and_dropped_leases_leak_nothing() -> None:
    # the plain fast path (no reset) and leases dropped unreleased: their C finalizer drops the
    # slot and the slot's finalizer brings the object back in a new slot, 10^4 times
    pool = ObjectPool(Scratch, max_size=2)
    for _ in range(CYCLES // 2):
        with pool.acquire() as scratch:
            scratch.buf[0] = 1
    for _ in range(CYCLES // 10):
        pool.acquire()
    stats = pool.stats()
    assert (stats.created, stats.gc_returns, stats.in_use) == (1, CYCLES // 10, 0)
    assert pool.close().is_clean


@pytest.mark.leaks
@pytest.mark.limit_leaks("64 KB")
def test_async_cycles_leak_nothing() -> None:
    pool = ObjectPool(Scratch, max_size=2)

    async def cycles() -> None:
        for _ in range(CYCLES // 10):
            async with pool.acquire_async(timeout=1):
                pass

    asyncio.run(cycles())
    assert pool.stats().in_use == 0
    assert pool.close().is_clean

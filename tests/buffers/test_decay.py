"""BufferPool(decay_ms=...): an idle pool gives its memory back to the OS within the decay time."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from poolalloc import Allocator, BufferPool
from poolalloc.buffers import STASH_BLOCKS
from poolalloc.errors import PoolValueError

BLOCK = 64 << 10


def _churn(pool: BufferPool, n: int) -> None:
    bufs = pool.acquire_many(n)
    for buf in bufs:
        buf[:] = b"\xff" * BLOCK  # touch every page
    pool.release_many(bufs)


def _wait_for(pred: Callable[[], bool], seconds: float, pool: BufferPool) -> float:
    """Poll, calling pool.decay() each time as a timer would; the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        pool.decay()
        if pred():
            break
        time.sleep(0.01)
    return time.monotonic() - start


def _mapped(pool: BufferPool) -> int:
    return pool.stats().core.mapped_bytes


def test_idle_pool_gives_its_memory_back_within_the_decay_time() -> None:
    decay_ms = 200
    pool = BufferPool(BLOCK, decay_ms=decay_ms)
    _churn(pool, 300)  # ~19 MiB mapped; the ready stash and the core's retention keep some
    assert _mapped(pool) >= 4 << 20
    took = _wait_for(lambda: _mapped(pool) == 0, 5, pool)
    assert _mapped(pool) == 0
    assert pool.stats().stashed == 0
    assert took >= decay_ms / 1000 * 0.9  # not before the decay time
    # the decay time, plus one poll to notice the stash went idle, plus slack for a loaded box
    assert took <= 3 * decay_ms / 1000 + 1.0
    # still a working pool afterwards
    with pool.acquire() as buf:
        buf[0] = 1
    pool.close()


def test_without_decay_ms_an_idle_pool_keeps_its_memory() -> None:
    pool = BufferPool(BLOCK)
    _churn(pool, 300)
    kept = _mapped(pool)
    assert kept > 0
    time.sleep(0.2)
    released = sum(pool.decay(max_age_ms=60_000) for _ in range(3))
    # Nothing is a minute old: what goes is at most the ready buffers drained to the core once
    # the pool was seen idle, where they fall past the retention bound (and decay() says so).
    assert released == kept - _mapped(pool)
    assert released <= STASH_BLOCKS * BLOCK
    assert _mapped(pool) >= 4 << 20  # retention kept (the core bounds it by retain_bytes)
    pool.close()


def test_a_busy_pool_keeps_its_ready_stash() -> None:
    pool = BufferPool(4096, decay_ms=50)
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        with pool.acquire():
            pass
        pool.decay()  # a lease between two calls: the stash is in use, not idle
    assert pool.stats().stashed > 0
    assert pool.stats().drains == 0
    pool.close()


@pytest.mark.parametrize("bad", [-1, -200])
def test_negative_decay_ms_is_refused(bad: int) -> None:
    with pytest.raises(PoolValueError, match="decay_ms must be >= 0"):
        BufferPool(64, decay_ms=bad)


@pytest.mark.parametrize("bad", [0.5, "100", True])
def test_decay_ms_must_be_an_int(bad: object) -> None:
    with pytest.raises(TypeError, match="decay_ms must be an int"):
        BufferPool(64, decay_ms=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("off", [None, 0])
def test_decay_ms_off(off: int | None) -> None:
    with BufferPool(64, decay_ms=off) as pool:
        pool.acquire().release()


def test_decay_max_age_is_checked() -> None:
    with BufferPool(64) as pool, pytest.raises(PoolValueError, match="max_age_ms"):
        pool.decay(max_age_ms=-1)


def test_an_idle_allocator_gives_its_memory_back_within_the_decay_time() -> None:
    decay_ms = 200
    alloc = Allocator(decay_ms=decay_ms)
    bufs = [alloc.alloc(size) for size in (100, 5000, 70_000, 300_000) * 40]
    for buf in bufs:
        buf[:] = b"\xff" * buf.nbytes  # touch every page
        buf.release()
    assert alloc.stats().core.mapped_bytes > 0
    start = time.monotonic()
    while alloc.stats().core.mapped_bytes and time.monotonic() - start < 5:
        alloc.decay()
        time.sleep(0.01)
    took = time.monotonic() - start
    assert alloc.stats().core.mapped_bytes == 0
    assert decay_ms / 1000 * 0.9 <= took <= 3 * decay_ms / 1000 + 1.0
    with alloc.alloc(100) as buf:
        buf[0] = 1
    alloc.close()


def test_allocator_checks_decay_ms() -> None:
    with pytest.raises(PoolValueError, match="decay_ms"):
        Allocator(decay_ms=-1)
    with pytest.raises(TypeError, match="decay_ms"):
        Allocator(decay_ms=0.5)  # type: ignore[arg-type]

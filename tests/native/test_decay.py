"""Retention with a clock: memory idle longer than decay_ms goes back to the OS."""

from __future__ import annotations

import os
import threading
import time

import pytest

from poolalloc import SlabPool
from poolalloc.errors import PoolValueError

from .conftest import UNDER_ASAN


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _churn(pool: SlabPool, n: int, size: int) -> None:
    blocks = [pool.alloc(size) for _ in range(n)]
    for b in blocks:
        b.write(0, b"\xff" * size)  # touch every page
    for b in blocks:
        b.free()


def _wait_for(pred: object, seconds: float, pool: SlabPool | None = None) -> float:
    """Poll (calling pool.decay() each time when given); the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if pool is not None:
            pool.decay()
        if pred():  # type: ignore[operator]
            break
        time.sleep(0.01)
    return time.monotonic() - start


def test_without_decay_an_idle_pool_keeps_its_retention() -> None:
    pool = SlabPool()
    _churn(pool, 200, 64 << 10)
    kept = pool.stats().mapped_bytes
    assert kept > 0
    time.sleep(0.2)
    assert pool.decay(max_age_ms=60_000) == 0  # nothing is a minute old
    assert pool.stats().mapped_bytes == kept
    pool.close()


def test_without_decay_an_explicit_age_counts_from_the_first_decay_call() -> None:
    # a pool without decay_ms reads no clock when memory goes idle: the first decay() with an
    # age starts the clock, a later one past that age releases
    pool = SlabPool()
    _churn(pool, 200, 64 << 10)
    kept = pool.stats().mapped_bytes
    assert kept > 0
    assert pool.decay(max_age_ms=100) == 0
    assert pool.stats().mapped_bytes == kept
    time.sleep(0.3)
    released = pool.decay(max_age_ms=100)
    assert released > 0
    assert pool.stats().mapped_bytes < kept
    pool.close()


def test_idle_pool_falls_to_its_floor_within_the_decay_time() -> None:
    decay_ms = 200
    pool = SlabPool(decay_ms=decay_ms)
    _churn(pool, 300, 64 << 10)  # ~19 MiB mapped, up to retain_bytes kept
    assert pool.stats().mapped_bytes >= 4 << 20
    start = time.monotonic()
    took = _wait_for(lambda: pool.stats().mapped_bytes == 0, 5, pool)
    assert pool.stats().mapped_bytes == 0
    assert took >= decay_ms / 1000 * 0.9  # not before the decay time
    assert time.monotonic() - start <= 3 * decay_ms / 1000 + 1.0
    pool.close()


def test_decay_runs_lazily_on_slow_paths() -> None:
    pool = SlabPool(decay_ms=100)
    _churn(pool, 200, 64 << 10)
    assert pool.stats().mapped_bytes >= 4 << 20
    time.sleep(0.3)
    # classes this thread never used: refills, which look at the clock. The first sees the
    # idle empty slabs and notes which cached classes are quiet; the next, a decay time
    # later, empties those classes and their slabs go too.
    b = pool.alloc(300)
    time.sleep(0.15)
    c = pool.alloc(5000)
    mapped = pool.stats().mapped_bytes
    assert mapped <= 2 << 20  # one chunk for the two new slabs; the 64 KiB ones went back
    b.free()
    c.free()
    pool.close()


def test_an_idle_threads_cache_decays_too() -> None:
    pool = SlabPool(decay_ms=100)
    parked = threading.Event()
    release = threading.Event()

    def holder() -> None:
        _churn(pool, 30, 64 << 10)  # parked in this thread's cache
        parked.set()
        release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    parked.wait(10)
    assert pool.stats().mapped_bytes >= 30 * (64 << 10)
    _wait_for(lambda: pool.stats().mapped_bytes == 0, 5, pool)
    mapped = pool.stats().mapped_bytes
    release.set()
    t.join()
    assert mapped == 0
    pool.close()


def test_busy_pool_keeps_its_hot_slabs() -> None:
    pool = SlabPool(decay_ms=50)
    blocks = [pool.alloc(4096) for _ in range(64)]
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        _churn(pool, 20, 4096)
        pool.decay()
    assert pool.stats().mapped_bytes > 0  # blocks in use keep their slabs
    for b in blocks:
        assert b.read(0, 1) in (b"\x00", b"\xff")
        b.free()
    pool.close()


def test_decay_ms_must_be_a_size() -> None:
    with pytest.raises(PoolValueError):
        SlabPool(decay_ms=-1)


@pytest.mark.skipif(UNDER_ASAN, reason="ASan keeps the shadow of unmapped memory resident")
def test_rss_of_an_idle_pool_falls_within_the_decay_time() -> None:
    decay_ms = 200
    pool = SlabPool(decay_ms=decay_ms)
    base = _rss_bytes()
    _churn(pool, 400, 64 << 10)  # ~25 MiB touched, 8 MiB of it retained
    assert pool.stats().mapped_bytes >= 4 << 20
    _wait_for(lambda: pool.stats().mapped_bytes == 0, 5, pool)
    assert pool.stats().mapped_bytes == 0
    assert _rss_bytes() - base <= 2 << 20
    pool.close()


def test_decay_returns_every_byte_it_unmapped() -> None:
    # The caches decay empties free their blocks first; with no retention the slabs those
    # empty unmap at once, during the call: decay() must count them with the rest.
    with SlabPool(retain_bytes=0) as pool:
        _churn(pool, 10000, 3000)
        for _ in range(100):
            before = pool.stats()
            released = pool.decay(10)
            after = pool.stats()
            assert released == before.mapped_bytes - after.mapped_bytes
            if after.mapped_bytes == 0:
                break
            time.sleep(0.02)
        assert pool.stats().mapped_bytes == 0


def test_buffer_pool_decay_returns_every_byte_it_unmapped() -> None:
    from poolalloc import BufferPool

    # 1 MiB buffers: the ready ones the decay drains to the core are past the retention bound
    with BufferPool(1 << 20, decay_ms=20) as pool:
        pool.release_many(pool.acquire_many(200))
        for _ in range(100):
            before = pool.stats().core
            released = pool.decay()
            after = pool.stats().core
            assert released == before.mapped_bytes - after.mapped_bytes
            if after.mapped_bytes == 0:
                break
            time.sleep(0.02)
        assert pool.stats().core.mapped_bytes == 0

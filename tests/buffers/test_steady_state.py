"""Steady-state acquire/release allocates no Python memory (tracemalloc), and reuses objects."""

from __future__ import annotations

import itertools
import tracemalloc
from collections.abc import Callable

from poolalloc import Buffer, BufferPool


def _cycles(acquire: Callable[[], Buffer], n: int) -> None:
    for _ in itertools.repeat(None, n):  # repeat() yields no new int objects
        buf = acquire()
        buf[0] = 1
        buf.release()


def _peak_of(acquire: Callable[[], Buffer], n: int) -> tuple[int, int]:
    tracemalloc.reset_peak()
    before, _ = tracemalloc.get_traced_memory()
    _cycles(acquire, n)
    after, peak = tracemalloc.get_traced_memory()
    return after - before, peak - before


def test_acquire_write_release_allocates_nothing_per_cycle() -> None:
    with BufferPool(4096, capacity=64) as pool:
        _cycles(pool.acquire, 1000)  # warm the stash and the lease freelist
        tracemalloc.start()
        try:
            _peak_of(pool.acquire, 0)
            empty_loop = _peak_of(pool.acquire, 0)
            many = _peak_of(pool.acquire, 100_000)
        finally:
            tracemalloc.stop()
        # 100,000 cycles peak no higher than a loop that runs none: not even a lease object
        assert many == empty_loop
        assert many[0] == 0


def test_lease_objects_come_from_the_freelist() -> None:
    with BufferPool(64, capacity=4) as pool:
        first = pool.acquire()
        ident = id(first)
        first.release()
        del first
        again = pool.acquire()
        assert id(again) == ident
        again.release()

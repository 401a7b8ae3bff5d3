"""Asynchronous exceptions (KeyboardInterrupt, PyThreadState_SetAsyncExc) landing anywhere in
threads that wait, acquire and release: no lock stays held, every other thread goes on, and the
pool balances once the interrupted threads' leases are collected."""

from __future__ import annotations

import ctypes
import gc
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from poolalloc import Allocator, BufferPool, ObjectPool, PoolExhausted

THREADS = 6
CAPACITY = 2
STORM_S = 1.5
_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)


def interrupt(thread: threading.Thread) -> None:
    if thread.ident is not None and thread.is_alive():
        _set_async_exc(thread.ident, KeyboardInterrupt)


@pytest.fixture
def quiet_thread_deaths(monkeypatch: pytest.MonkeyPatch) -> None:
    """An interrupt may land outside a worker's handler: that thread dies, as in real life."""
    original = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is not KeyboardInterrupt:
            original(args)

    monkeypatch.setattr(threading, "excepthook", hook)


def storm(
    take: Callable[[], Any], give: Callable[[Any], None], touch: Callable[[Any], None]
) -> int:
    """Workers take/touch/give in a loop while the main thread interrupts them at random.

    Returns how many rounds completed after the storm, by threads that were never stuck."""
    stop = threading.Event()
    rounds = [0]

    def worker() -> None:
        while not stop.is_set():
            try:
                try:
                    item = take()
                except PoolExhausted:
                    continue
                touch(item)
                give(item)
                rounds[0] += 1
            except KeyboardInterrupt:
                pass

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(THREADS)]
    for t in threads:
        t.start()
    rng = random.Random(1234)
    end = time.monotonic() + STORM_S
    while time.monotonic() < end:
        interrupt(rng.choice(threads))
        time.sleep(rng.uniform(0, 0.004))
    # no more interrupts: the survivors must keep going, nobody may be stuck on a lock
    before = rounds[0]
    time.sleep(0.5)
    after = rounds[0]
    stop.set()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads), "a thread is stuck (a lock left held?)"
    gc.collect()  # leases held by frames of interrupted threads
    return after - before


@pytest.mark.usefixtures("quiet_thread_deaths")
def test_buffer_pool_survives_interrupts_anywhere() -> None:
    with BufferPool(64, capacity=CAPACITY) as pool:

        def touch(buf: Any) -> None:
            buf[0] = 1

        progressed = storm(lambda: pool.acquire(timeout=5), lambda b: b.release(), touch)
        s = pool.stats()
        assert (s.live, s.parked, s.used, s.waiters) == (0, 0, 0, 0)
        assert s.acquires - s.releases - s.gc_returns == s.live
        assert progressed > 0 or s.acquires > 0
        held = pool.acquire_many(CAPACITY, timeout=5)  # the whole capacity is there again
        pool.release_many(held)


@pytest.mark.usefixtures("quiet_thread_deaths")
def test_allocator_survives_interrupts_anywhere() -> None:
    with Allocator(capacity=2 * 1024) as alloc:
        storm(lambda: alloc.alloc(1000, timeout=5), lambda b: b.release(), lambda b: None)
        s = alloc.stats()
        assert (s.live, s.parked, s.used, s.waiters) == (0, 0, 0, 0)
        assert s.acquires - s.releases - s.gc_returns == s.live
        alloc.alloc(1000, timeout=5).release()


@pytest.mark.usefixtures("quiet_thread_deaths")
def test_object_pool_survives_interrupts_anywhere() -> None:
    pool = ObjectPool(list, max_size=CAPACITY, timeout=5)

    def touch(lease: Any) -> None:
        lease.obj.append(1)
        lease.obj.clear()

    storm(pool.acquire, lambda lease: lease.release(), touch)
    s = pool.stats()
    assert (s.in_use, s.waiting, s.is_balanced) == (0, 0, True)
    assert s.in_use == s.acquires - (s.acquires - s.in_use - s.gc_returns) - s.gc_returns
    leases = [pool.acquire(timeout=5) for _ in range(CAPACITY)]
    for lease in leases:
        lease.release()
    assert pool.close().is_clean

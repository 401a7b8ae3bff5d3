"""Many threads acquiring and releasing, releases on other threads included (bounded in time)."""

from __future__ import annotations

import os
import queue
import threading
import time

import budget
from forking import in_child

from poolalloc import Allocator, BufferPool

SECONDS = budget.seconds(0.5)
THREADS = int(os.environ.get("PA_TEST_THREADS", "4"))


def test_threads_hammer_a_small_pool_and_stats_balance() -> None:
    with BufferPool(1024, capacity=THREADS) as pool:
        stop = time.monotonic() + SECONDS
        owners: dict[int, int] = {}
        errors: list[BaseException] = []
        lock = threading.Lock()

        def work(ident: int) -> None:
            try:
                while time.monotonic() < stop:
                    with pool.acquire(timeout=10) as buf:
                        with lock:  # no block is live in two leases at once
                            assert buf.address not in owners
                            owners[buf.address] = ident
                        buf[0] = ident
                        assert buf[0] == ident
                        with lock:
                            del owners[buf.address]
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS * 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(SECONDS + 30)
        assert not errors
        s = pool.stats()
        assert s.acquires == s.releases
        assert s.outstanding == 0
        assert s.peak <= THREADS


def test_release_on_another_thread_than_the_acquirer() -> None:
    with BufferPool(512, capacity=8) as pool:
        handoff: queue.Queue[object] = queue.Queue(maxsize=4)
        count = 2000

        def consumer() -> None:
            for _ in range(count):
                buf = handoff.get()
                buf.release()  # type: ignore[attr-defined]

        thread = threading.Thread(target=consumer)
        thread.start()
        for i in range(count):
            buf = pool.acquire(timeout=10)
            buf[0] = i % 256
            handoff.put(buf)
        thread.join(30)
        s = pool.stats()
        assert s.acquires == s.releases == count
        assert s.outstanding == 0


def test_a_forked_child_counts_no_waiter_of_a_thread_that_did_not_follow_it() -> None:
    # A thread waiting at capacity at the fork does not exist in the child; its entry stayed in
    # the queue, counted in `waiters`, until a release there popped it.
    with BufferPool(64, capacity=1) as pool, Allocator(capacity=64) as alloc:
        held, held_bytes = pool.acquire(), alloc.alloc(64)
        threads = [
            threading.Thread(target=lambda: pool.acquire(timeout=10).release()),
            threading.Thread(target=lambda: alloc.alloc(64, timeout=10).release()),
        ]
        for t in threads:
            t.start()
        end = time.monotonic() + 5
        while (pool.stats().waiters, alloc.stats().waiters) != (1, 1):
            assert time.monotonic() < end
            time.sleep(0.001)

        def child() -> None:
            assert (pool.stats().waiters, alloc.stats().waiters) == (0, 0)
            held.release()
            held_bytes.release()
            pool.acquire(timeout=1).release()
            alloc.alloc(64, timeout=1).release()

        code = in_child(child)
        held.release()
        held_bytes.release()
        for t in threads:
            t.join(10)
        assert code == 0
        assert (pool.stats().live, pool.stats().waiters, alloc.stats().live) == (0, 0, 0)

"""fork(): the child can use a pool the parent used from several threads."""

from __future__ import annotations

import os
import threading

import pytest

from poolalloc import SlabPool


def _child_work(pool: SlabPool, kept: list, parent_stats_allocs: int) -> int:  # type: ignore[type-arg]
    """Runs in the child; returns the exit code."""
    try:
        blocks = [pool.alloc(size) for size in (64, 100, 4096, 70000, 3 << 20) for _ in range(20)]
        for i, b in enumerate(blocks):
            b.write(0, i.to_bytes(4, "little"))
        for i, b in enumerate(blocks):
            if b.read(0, 4) != i.to_bytes(4, "little"):
                return 3
            b.free()
        for b in kept:  # blocks the parent allocated before the fork
            if b.read(0, 2) != b"pa":
                return 4
            b.free()
        pool.check()
        stats = pool.stats()
        if stats.in_use_blocks != 0 or stats.allocs < parent_stats_allocs:
            os.write(2, f"child stats: {stats}\n".encode())
            return 5
        pool.close()
        if pool.stats().mapped_bytes != 0:
            os.write(2, f"child stats after close: {pool.stats()}\n".encode())
            return 6
        return 0
    except BaseException as exc:
        os.write(2, f"child failed: {exc!r}\n".encode())
        return 2


# forking a threaded process is the point of this test (Python 3.12+ warns about it)
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_child_uses_pool_after_parent_threads() -> None:
    pool = SlabPool()
    kept = []
    for _ in range(10):
        b = pool.alloc(300)
        b.write(0, b"pa")
        kept.append(b)

    def churn() -> None:
        blocks = [pool.alloc(200) for _ in range(100)]
        for b in blocks:
            b.free()  # parked in this (live) thread's cache across the fork

    gate = threading.Event()
    parked = threading.Event()

    def holder() -> None:
        churn()
        parked.set()
        gate.wait(10)

    # three threads that have finished (their caches may still be mid-exit at fork time) and
    # one that is alive with blocks parked in its cache
    threads = [threading.Thread(target=churn) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    threads.append(threading.Thread(target=holder))
    threads[-1].start()
    parked.wait(10)
    allocs = pool.stats().allocs
    pid = os.fork()
    if pid == 0:
        os._exit(_child_work(pool, kept, allocs))
    gate.set()
    threads[-1].join()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status), status
    assert os.WEXITSTATUS(status) == 0, os.WEXITSTATUS(status)
    # the parent's pool is untouched by what the child did
    for b in kept:
        assert b.read(0, 2) == b"pa"
        b.free()
    pool.check()
    pool.close()
